"""Inference behind nnugen's CLIs, on nnU-Net's own predictor and readers: ``predict_api.predict``
(``nnugen_predict``: diffusion segmentation with sampler settings, per-case seeds and uncertainty maps) and
``sample_api.sample`` (``nnugen_sample``: generation). Importing this package is cheap (no torch); the modules that
need torch import it themselves."""
