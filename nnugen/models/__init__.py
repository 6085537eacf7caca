"""The modules nnU-Net's predictor calls: each wraps a denoiser network and runs a whole sampler in ``forward``."""
