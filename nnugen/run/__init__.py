"""Launching nnU-Net's training run with nnugen's trainers and plans (the layer behind ``nnugen_train``)."""
