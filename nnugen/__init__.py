"""nnugen: diffusion segmentation, generation and counterfactual anomaly segmentation inside nnU-Net v2.

Importing this package is cheap on purpose (no torch, no nnunetv2): the planner and the CLIs' ``--help`` use it.
"""

__version__ = "0.1.0"

PLANS_IDENTIFIER = "nnugenPlans"
"""Name of the plans file nnugen writes next to nnU-Net's ``nnUNetPlans.json`` (``-p nnugenPlans``)."""
