"""nnugen's planner: turns nnU-Net's ``nnUNetPlans.json`` (+ ``dataset.json`` and the fingerprint) into
``nnugenPlans.json``, the same configurations plus an ``nnugen`` section each. Imports neither torch nor nnunetv2."""
