"""The same seeded fit with and without monitors, for the "a monitor never changes training" checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch

from spectral_testing.models import LossRecorder, trainer_kwargs


def fits_without_and_with(
    tmp_path, make_module: Callable[[], pl.LightningModule], monitors: Sequence[pl.Callback], **overrides
) -> tuple[tuple[torch.Tensor, pl.LightningModule], tuple[torch.Tensor, pl.LightningModule]]:
    """``(losses, module)`` of a fit without ``monitors``, then of the same fit (seed 0, ``max_epochs=2`` unless
    overridden) with them; ``losses`` are every step's training loss as the loop produced it."""

    def fit(name: str, callbacks: list[pl.Callback]) -> tuple[torch.Tensor, pl.LightningModule]:
        recorder = LossRecorder()
        pl.seed_everything(0)
        module = make_module()
        kwargs = trainer_kwargs(tmp_path / name, **{"max_epochs": 2, **overrides})
        pl.Trainer(callbacks=[recorder, *callbacks], **kwargs).fit(module)
        return torch.stack(recorder.losses), module

    return fit("without", []), fit("with", list(monitors))
