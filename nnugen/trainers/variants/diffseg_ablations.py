"""The ablations of ImgX-DiffSeg (Fu et al. 2023, Table 2), each one setting changed on NnugenDiffSegTrainer."""

from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer


class NnugenDiffSegTrainer_eps(NnugenDiffSegTrainer):
    """Predict the noise instead of the mask; Dice + CE on the derived mask plus MSE on the noise."""

    settings_changes = {"diffusion": {"model_output": "eps", "mse_weight": 1.0}}


class NnugenDiffSegTrainer_noDice(NnugenDiffSegTrainer):
    settings_changes = {"diffusion": {"dice_weight": 0.0}}


class NnugenDiffSegTrainer_noRecycling(NnugenDiffSegTrainer):
    settings_changes = {"diffusion": {"recycling": False}}


class NnugenDiffSegTrainer_residual(NnugenDiffSegTrainer):
    """Residual shortcuts around every stage of the denoiser (Dhariwal & Nichol 2021), instead of plain stages."""

    settings_changes = {"denoiser": {"residual_stages": True}}


class NnugenDiffSegTrainer_T1000(NnugenDiffSegTrainer):
    """1000 training timesteps (sampled with 5 DDIM steps unless the plans say otherwise)."""

    settings_changes = {"diffusion": {"timesteps": 1000}, "sampler": {"name": "ddim"}}


class NnugenDiffSegTrainer_deepSupervision(NnugenDiffSegTrainer):
    """Dice + CE also on the denoiser's coarser decoder outputs, weighted as nnU-Net's deep supervision."""

    settings_changes = {"diffusion": {"deep_supervision": True}}


class NnugenDiffSegTrainer_noZeroInit(NnugenDiffSegTrainer):
    """The noisy-mask input and the time scale-shift start random, like the rest, not at zero (the earlier default)."""

    settings_changes = {"denoiser": {"zero_init_conditioning": False}}
