"""Evaluation with the statistics of nnU-Net, MONAI and scikit-learn (docs/evaluation.md).

Segmentations (``nnugen_evaluate PRED REF``, validation, demo, benchmarks): nnU-Net's own summary and Dice
(segmentation_evaluation.py, folder_scores.py), HD95 / NSD per label with the spacing (surface_distances.py), how well
the uncertainty finds the wrong voxels (AUROC / AUPRC) and the calibration error of the probabilities
(error_detection.py), after the checks of case_checks.py.

Generated images (``nnugen_evaluate --generated SYN --real REAL``, generation_evaluation.py): reconstruction fidelity
(PSNR, SSIM), diversity among samples (MS-SSIM), and distances between real and synthetic feature distributions
(Fréchet distance, MMD) on features of the dataset's own nnU-Net encoder. Tensors are ``(B, C, *spatial)``, 2D and 3D
alike; nothing is ever downloaded."""
