"""``DiffusionSegmenter``: a diffusion segmentation model as nnU-Net's predictor sees it.

nnU-Net's sliding-window predictor calls ``network(tile)`` with a tile (1, C_in, *patch) and expects one logits
tensor (1, C_out, *patch). In eval mode ``forward`` therefore runs the whole sampler, conditioned on the image, for
every ensemble member (seed), and returns the log of the mean class probability over the ensemble (Wolleb et al. 2022
implicit ensembles; Fu et al. 2023). The S members go through the sampler and the denoiser as one batch of S*B (the
image repeated), member k's noise from its own generator seeded ``seed + k`` (noise.randn_like with one generator per
member), so the ensemble is the same as sampling the members one by one, at one network call per step. The
sampler, its steps, the ensemble size and eta come from the plans in the model folder; a caller that wants others
(validation inside training, ``nnugen_predict``) says them for the duration of its call with
``with segmenter.sampling(settings, seed):`` (sampling.py).

Shared steps: with DDIM at eta = 0 and DPM-Solver++ the members differ only by their initial noise, a deterministic
map of which is the whole trajectory, so a shared trunk would make them identical. With DDPM or DDIM at eta > 0,
members sharing x_t down to some step s are draws from p(x_0 | x_s), not from the model's p(x_0 | image): correlated,
with a variance that understates the model's. Only the first step is cheap to share: its input is noise at the last
training timestep, which keeps sqrt(alpha-bar_T) of the mask (0.006 for the planned schedule), so p(x_0 | x_T) is
p(x_0 | image) up to that much signal. ``sampler.shared_first_step`` (where ``shares_first_step``) therefore starts
every member from member 0's noise and computes the first call once, on B rows, repeated S times: 1 + S (steps - 1)
passes instead of S steps. Each member still draws its own start (and discards it), so member k's later noise is the
same with and without sharing, and member 0 is the same member.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nnugen.config import DiffusionSettings, SamplerSettings
from nnugen.diffusion import (
    alphas_cumprod,
    deep_supervision_loss,
    diffusion_space_to_probs,
    make_betas,
    mask_to_diffusion_space,
    noisy_training_input,
    recycled_training_input,
    sampling_timesteps,
    segmentation_logits,
    segmentation_x0_denoiser,
    target_mse_loss,
)
from nnugen.diffusion.broadcast import schedule_at, working_dtype
from nnugen.diffusion.noise import rand, randn_like
from nnugen.diffusion.parameterisation import Denoiser
from nnugen.diffusion.self_conditioning import self_conditioned_denoiser, self_conditioning_input
from nnugen.models.precision import planned_autocast
from nnugen.models.sampling import SampledModel
from nnugen.samplers import Sampler, get_sampler
from nnugen.samplers.options import sampler_options


class DiffusionSegmenter(SampledModel, nn.Module):
    def __init__(self, denoiser: nn.Module, num_classes: int, diffusion: DiffusionSettings, sampler: SamplerSettings,
                 amp: str = "fp32"):
        super().__init__()
        self.denoiser = denoiser
        self.amp = amp
        """The planned precision (``memory.amp``) of sampling, whatever autocast the caller opened (precision.py)."""
        self.num_classes = num_classes
        self.diffusion = diffusion
        self.init_sampling(sampler)
        self.last_loss_parts: dict[str, Tensor] = {}
        """The weighted parts of the last training loss (detached), for logging: ``dice_ce`` and / or ``mse``."""
        betas = make_betas(diffusion.schedule, diffusion.timesteps, diffusion.beta_start, diffusion.beta_end)
        # not persistent: the schedule follows the plans, not the checkpoint
        self.register_buffer("alphas_cumprod", alphas_cumprod(betas), persistent=False)
        # the samplers read alpha-bar on the host once per run: a CPU float64 copy (a plain attribute, which .to()
        # leaves in place) spares them a device-to-host sync; the buffer serves the lookups on the device
        self.host_alphas_cumprod = self.alphas_cumprod.clone()

    def compiled_parts(self) -> list[nn.Module]:
        """What ``torch.compile`` may compile (compile_policy.py): the denoiser; the sampler loop stays eager."""
        return [self.denoiser]

    def model_output(self, image: Tensor, x_t: Tensor, t: Tensor, x0_condition: Tensor | None = None) -> Tensor:
        """The network's raw output (x0 logits, eps or v) for the image (B, C_in, ...) and noisy mask x_t."""
        return self.denoiser(_network_input(image, x_t, x0_condition), t.to(image.dtype))

    def x0_denoiser(self, image: Tensor, shared_rows: int | None = None) -> Denoiser:
        """``denoise(x_t, t) -> x0_hat`` in diffusion space, conditioned on the image (fresh per sampling run). With
        ``shared_rows`` B, the first call's input is S copies of its first B rows (members sharing their start): the
        network sees those B rows once and its output is repeated."""
        kind, schedule = self.diffusion.model_output, self.alphas_cumprod
        model_output = self.model_output if shared_rows is None else _first_call_once(self.model_output, shared_rows)
        if not self.diffusion.self_conditioning:
            return segmentation_x0_denoiser(lambda x_t, t: model_output(image, x_t, t), schedule, kind)

        def conditioned(x_t: Tensor, t: Tensor, x0_condition: Tensor) -> Tensor:
            model = lambda x, s: model_output(image, x, s, x0_condition)  # noqa: E731
            return segmentation_x0_denoiser(model, schedule, kind)(x_t, t)

        return self_conditioned_denoiser(conditioned)

    def sample_probabilities(self, image: Tensor, members_per_batch: int | None = None) -> Tensor:
        """Class probabilities of every ensemble member: (S, B, C_out, *spatial) for S = sampler.seeds, sampled in
        the planned precision (nnU-Net's validation and predictor open an fp16 autocast on a GPU whatever the plan).

        The members run as one batch of S*B, or ``members_per_batch`` members at a time; when a chunk does not fit
        in GPU memory (CUDA out of memory) it is halved and sampled again. Member k's noise comes from its own
        generator seeded ``seed + k`` however the members are chunked, so the result equals the one-by-one loop
        up to the round-off of a batched network call."""
        if members_per_batch is not None and members_per_batch < 1:
            raise ValueError(f"members_per_batch must be at least 1 (None: all members at once), got "
                             f"{members_per_batch}")
        with planned_autocast(image.device, self.amp):
            return self._sample_probabilities(image, members_per_batch)

    def _sample_probabilities(self, image: Tensor, members_per_batch: int | None = None) -> Tensor:
        request = self.sampling_request
        settings = request.sampler
        sampler = get_sampler(settings.name)
        timesteps = sampling_timesteps(self.diffusion.timesteps, min(settings.steps, self.diffusion.timesteps),
                                       spacing=settings.spacing, alphas_cumprod=self.host_alphas_cumprod)
        sampler = partial(sampler, **sampler_options(settings.name, eta=settings.eta))
        chunk = settings.seeds if members_per_batch is None else members_per_batch
        parts, first = [], 0
        while first < settings.seeds:
            members = range(first, min(first + chunk, settings.seeds))
            try:
                parts.append(self._sample_members(image, members, sampler, timesteps))
            except torch.cuda.OutOfMemoryError:
                if len(members) == 1:
                    raise
                chunk = (len(members) + 1) // 2
                torch.cuda.empty_cache()
                continue
            first = members.stop
        return torch.cat(parts)

    def _sample_members(self, image: Tensor, members: range, sampler: Sampler, timesteps: Tensor) -> Tensor:
        """Members ``members`` as one batch: the image (B, C_in, *spatial) repeated member-major (rows j*B to
        (j+1)*B - 1 are member members[j]), one generator per member -> (len(members), B, C_out, *spatial)."""
        request, batch = self.sampling_request, image.shape[0]
        first = request.first_member
        generators = [torch.Generator(device=image.device).manual_seed(request.seed + first + k) for k in members]
        images = image.repeat(len(members), *([1] * (image.ndim - 1)))
        shape = (images.shape[0], self.num_classes, *image.shape[2:])
        # the sampler state is float32 (float64 for a float64 image) whatever precision the network runs in
        noise = randn_like(torch.empty(shape, device=image.device, dtype=working_dtype(image)), generators)
        shared = request.sampler.shares_first_step
        if shared:  # every member starts from member 0's noise (its first draw), wherever member 0 is sampled
            start = torch.Generator(device=image.device).manual_seed(request.seed)
            noise = randn_like(noise[:batch], start).repeat(len(members), *([1] * (noise.ndim - 1)))
        denoiser = self.x0_denoiser(images, shared_rows=batch if shared else None)
        x0 = sampler(denoiser, noise, self.host_alphas_cumprod, timesteps, generator=generators)
        return diffusion_space_to_probs(x0.float()).unflatten(0, (len(members), batch))

    def training_loss(self, image: Tensor, target_onehot: Tensor) -> Tensor:
        """Fu et al. 2023: noise the mask (recycled if set), predict it, Dice + CE on the predicted mask (x0), plus
        MSE on the eps / v target for those parameterisations. image (B, C_in, ...), target_onehot (B, C_out, ...)."""
        settings, schedule = self.diffusion, self.alphas_cumprod
        x0 = mask_to_diffusion_space(target_onehot).to(image.dtype)
        if settings.recycling and settings.timesteps > 1:
            noisy = recycled_training_input(self.x0_denoiser(image), x0, schedule)
        else:
            noisy = noisy_training_input(x0, schedule)
        condition = None
        if settings.self_conditioning:
            denoise = self.x0_denoiser(image)
            condition = self_conditioning_input(lambda x, t, c: denoise(x, t), noisy.x_t, noisy.t,
                                                coin=_rank_zero_coin(image.device))
        # with diffusion.deep_supervision, auxiliary holds coarser x0 logits at the denoiser's auxiliary_levels
        output, auxiliary = self.denoiser.forward_with_auxiliary(_network_input(image, noisy.x_t, condition),
                                                                 noisy.t.to(image.dtype))
        abar_t = schedule_at(schedule, noisy.t, output).flatten()
        parts = {}
        if settings.dice_weight + settings.ce_weight > 0:
            logits = segmentation_logits(output, noisy.x_t, abar_t, settings.model_output)
            # under DDP the Dice of the global batch, as nnU-Net's: the objective is the same on any number of GPUs
            parts["dice_ce"] = deep_supervision_loss(logits, auxiliary, self.denoiser.auxiliary_levels, target_onehot,
                                                     settings.dice_weight, settings.ce_weight,
                                                     over_ranks=_distributed())
        if settings.model_output != "x0" and settings.mse_weight > 0:
            parts["mse"] = settings.mse_weight * target_mse_loss(output, settings.model_output, noisy.noised_x0,
                                                                 noisy.noise, abar_t)
        self.last_loss_parts = {name: part.detach() for name, part in parts.items()}
        return sum(parts.values(), output.new_zeros(()))

    def forward(self, image: Tensor, target_onehot: Tensor | None = None) -> Tensor:
        """With a target: the training loss (a scalar; through forward so DDP sees the pass). Without: log of the
        ensemble's mean probability (B, C_out, *spatial), the logits nnU-Net's predictor wants."""
        if target_onehot is not None:
            return self.training_loss(image, target_onehot)
        probabilities = self.sample_probabilities(image).mean(dim=0)
        return probabilities.clamp_min(1e-8).log()


def _first_call_once(model_output, rows: int):
    """``model_output(image, x_t, t, x0_condition=None)`` whose first call computes its first ``rows`` rows only and
    repeats them (the caller guarantees that the other rows are copies); later calls pass through."""
    called = []

    def output(image: Tensor, x_t: Tensor, t: Tensor, x0_condition: Tensor | None = None) -> Tensor:
        if called:
            return model_output(image, x_t, t, x0_condition)
        called.append(True)
        head = model_output(image[:rows], x_t[:rows], t[:rows],
                            None if x0_condition is None else x0_condition[:rows])
        return head.repeat(x_t.shape[0] // rows, *([1] * (head.ndim - 1)))

    return output


def _distributed() -> bool:
    """True in a process group of several ranks (DDP training), where every rank runs the same collectives."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank_zero_coin(device: torch.device) -> Tensor:
    """The self-conditioning coin (1,), drawn on the CPU as always; under DDP rank 0's draw on every rank, so all
    ranks run the extra pass or none does (SyncBatchNorm would wait forever for a rank that skips it)."""
    coin = rand(1)
    if _distributed():
        shared = coin.to(device)  # NCCL sends CUDA tensors, gloo CPU ones: the image's device is the rank's device
        dist.broadcast(shared, src=0)
        coin = shared.cpu()
    return coin


def _network_input(image: Tensor, x_t: Tensor, x0_condition: Tensor | None) -> Tensor:
    """The denoiser's input: image channels, then the noisy mask, then the self-conditioning estimate if any."""
    return torch.cat([image, x_t] if x0_condition is None else [image, x_t, x0_condition], dim=1)
