"""Prediction behind nnugen's CLIs: ``predict_api.predict`` (``nnugen_predict``) serves diffusion segmentation models
through nnU-Net's own predictor, with sampler settings, per-case seeds and uncertainty maps. Importing this package
is cheap (no torch); the modules that need torch import it themselves."""
