"""Pure-tensor diffusion math: schedules, forward process, parameterisation, losses, training inputs."""

from nnugen.diffusion.broadcast import append_dims, batch_timesteps, schedule_at, working_dtype
from nnugen.diffusion.deep_supervision import deep_supervision_loss, deep_supervision_weights
from nnugen.diffusion.forward_process import q_sample
from nnugen.diffusion.noise import rand, randint, randn_like
from nnugen.diffusion.parameterisation import (
    PARAMETERISATIONS,
    Denoiser,
    check_parameterisation,
    predict_eps,
    predict_x0,
    training_target,
    x0_denoiser,
)
from nnugen.diffusion.schedules import SCHEDULES, alphas_cumprod, make_betas
from nnugen.diffusion.segmentation_loss import dice_ce_loss, soft_dice_loss
from nnugen.diffusion.segmentation_space import (
    diffusion_space_to_probs,
    logits_to_diffusion_space,
    mask_to_diffusion_space,
    one_hot,
    segmentation_logits,
    segmentation_x0_denoiser,
)
from nnugen.diffusion.self_conditioning import (
    ConditionedDenoiser,
    self_conditioned_denoiser,
    self_conditioning_input,
)
from nnugen.diffusion.target_loss import target_mse_loss
from nnugen.diffusion.timesteps import check_timesteps, partial_start, sampling_timesteps, step_alphas
from nnugen.diffusion.training_input import (
    RECYCLING_PREVIOUS,
    TrainingInput,
    noisy_training_input,
    recycled_training_input,
    sample_training_timesteps,
)

__all__ = [
    "PARAMETERISATIONS",
    "RECYCLING_PREVIOUS",
    "SCHEDULES",
    "ConditionedDenoiser",
    "Denoiser",
    "TrainingInput",
    "alphas_cumprod",
    "append_dims",
    "batch_timesteps",
    "check_parameterisation",
    "check_timesteps",
    "deep_supervision_loss",
    "deep_supervision_weights",
    "dice_ce_loss",
    "diffusion_space_to_probs",
    "logits_to_diffusion_space",
    "make_betas",
    "mask_to_diffusion_space",
    "noisy_training_input",
    "one_hot",
    "partial_start",
    "predict_eps",
    "predict_x0",
    "q_sample",
    "rand",
    "randint",
    "randn_like",
    "recycled_training_input",
    "sample_training_timesteps",
    "sampling_timesteps",
    "schedule_at",
    "segmentation_logits",
    "segmentation_x0_denoiser",
    "self_conditioned_denoiser",
    "self_conditioning_input",
    "soft_dice_loss",
    "step_alphas",
    "target_mse_loss",
    "training_target",
    "working_dtype",
    "x0_denoiser",
]
