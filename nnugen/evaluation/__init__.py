"""Generation metrics that work offline: reconstruction fidelity (PSNR, SSIM), diversity among samples (MS-SSIM),
and distances between real and synthetic feature distributions (Fréchet distance, MMD) on features of the dataset's
own nnU-Net encoder. Tensors are ``(B, C, *spatial)``, 2D and 3D alike; nothing is ever downloaded.

For segmentations (``nnugen_evaluate``): nnU-Net's own summary of a prediction folder plus how well the uncertainty
finds the wrong voxels (AUROC / AUPRC) and the calibration error of the probabilities (numpy, no torch)."""
