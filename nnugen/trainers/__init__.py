"""nnU-Net trainers of nnugen. Each is a small nnUNetTrainer subclass that overrides hooks; nnU-Net finds them
through ``nnugen/nnunet_ext`` (on ``nnUNet_extTrainer`` after installation)."""
