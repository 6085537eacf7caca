"""Sampling as an argument of a call, not state left on a model.

nnU-Net's predictor calls ``network(tile)`` and nothing else, so the sampler settings and the seed of one prediction
cannot be passed to ``forward``. Every model the predictor calls (``DiffusionSegmenter``, ``AnomalySegmenter``)
therefore says them for the duration of a ``with`` block::

    with segmenter.sampling(replace(segmenter.planned_sampler, steps=10), seed=7):
        logits = predictor.predict_logits_from_preprocessed_data(data)

Outside any block the model samples as its plans say, with seed 0. Blocks nest, and leaving one (normally or by an
exception) restores exactly what was in force before it, so no case, validation epoch or failed call leaves settings
behind for the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from nnugen.config import SamplerSettings


@dataclass(frozen=True)
class SamplingRequest:
    """How one call samples: ``sampler``'s settings, and ``seed``, which fixes the noise of ensemble member k as
    ``seed + k`` (so a case is repeatable whatever else is predicted). The call samples members ``first_member`` to
    ``first_member + sampler.seeds - 1`` of that ensemble (one member at a time: ``seeds=1, first_member=k``)."""

    sampler: SamplerSettings
    seed: int = 0
    first_member: int = field(default=0, kw_only=True)
    """Keyword only, so that subclasses' positional fields (``AnomalySamplingRequest.strengths``) keep their place."""


class SampledModel:
    """The mixin behind ``model.sampling(...)``; the model calls ``init_sampling(planned)`` in its ``__init__`` and
    reads ``sampling_request`` where it samples."""

    def init_sampling(self, planned: SamplerSettings) -> None:
        self.planned_sampler = planned
        """The plans' sampler settings (read only: say others with ``sampling``)."""
        self.sampling_request = SamplingRequest(planned)
        """What the current call samples with (the innermost ``sampling`` block, else the plans with seed 0)."""

    def check_sampler(self, sampler: SamplerSettings) -> None:
        """ValueError when this model cannot sample with ``sampler``; every setting is allowed by default."""

    @contextmanager
    def sampling(self, sampler: SamplerSettings | None = None, seed: int | None = None,
                 first_member: int = 0) -> Iterator[SamplingRequest]:
        """Sample with ``sampler`` (default: the settings in force), ``seed`` (default: the seed in force) and the
        members from ``first_member`` on inside the block; the previous request is back when the block is left,
        whatever happens inside."""
        if first_member < 0:
            raise ValueError(f"first_member must be at least 0, got {first_member}")
        previous = self.sampling_request
        request = SamplingRequest(previous.sampler if sampler is None else sampler,
                                  previous.seed if seed is None else int(seed), first_member=int(first_member))
        self.check_sampler(request.sampler)
        self.sampling_request = request
        try:
            yield request
        finally:
            self.sampling_request = previous
