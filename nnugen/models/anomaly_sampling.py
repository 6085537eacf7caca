"""Sampling of an anomaly model as an argument of the call (sampling.py), with the noise strengths of the
counterfactuals as a third setting::

    with segmenter.sampling(replace(segmenter.planned_sampler, steps=10, seeds=2), seed=7, strengths=(0.25, 0.5)):
        ...

The counterfactuals are always denoised with deterministic DDIM (eta 0), so a sampler name or eta other than the
plans' is refused; the DDIM steps, the seeds per strength, the base seed and the strengths are what a call chooses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from nnugen.anomaly import check_strength
from nnugen.config import SamplerSettings
from nnugen.models.sampling import SampledModel, SamplingRequest

DDIM_ONLY = "anomaly models denoise with deterministic DDIM (eta 0); leave out --sampler and --eta"


@dataclass(frozen=True)
class AnomalySamplingRequest(SamplingRequest):
    """A ``SamplingRequest`` with the counterfactuals' noise strengths (None: the plans' ``anomaly.strengths``)."""

    strengths: tuple[float, ...] | None = None


def checked_strengths(strengths: Sequence[float]) -> tuple[float, ...]:
    """``strengths`` as a tuple of floats; ValueError unless it holds one or more numbers in (0, 1]."""
    if isinstance(strengths, (int, float)) or len(strengths) == 0:
        raise ValueError(f"the strengths must be one or more numbers in (0, 1], e.g. (0.25, 0.5); got {strengths!r}")
    return tuple(check_strength(s) for s in strengths)


class AnomalySampledModel(SampledModel):
    """``SampledModel`` for a model with ``anomaly`` settings (``AnomalySettings``); call ``init_sampling(planned)``."""

    def init_sampling(self, planned: SamplerSettings) -> None:
        super().init_sampling(planned)
        self.sampling_request = AnomalySamplingRequest(planned)

    def check_sampler(self, sampler: SamplerSettings) -> None:
        """ValueError (``DDIM_ONLY``) for a sampler name or eta other than the plans'."""
        if (sampler.name, sampler.eta) != (self.planned_sampler.name, self.planned_sampler.eta):
            raise ValueError(DDIM_ONLY)

    @contextmanager
    def sampling(self, sampler: SamplerSettings | None = None, seed: int | None = None,
                 strengths: Sequence[float] | None = None) -> Iterator[AnomalySamplingRequest]:
        """``SampledModel.sampling``, and the noise strengths in (0, 1] (default: those in force); all three are back
        as they were when the block is left, whatever happens inside."""
        previous = self.sampling_request
        chosen = previous.strengths if strengths is None else checked_strengths(strengths)
        with super().sampling(sampler, seed) as request:
            self.sampling_request = AnomalySamplingRequest(request.sampler, request.seed, strengths=chosen)
            yield self.sampling_request

    @property
    def strengths(self) -> tuple[float, ...]:
        """The noise strengths in force (the innermost ``sampling`` block's, else the plans')."""
        return self.sampling_request.strengths or self.anomaly.strengths
