"""The ``Trainer`` of the two-process CPU scripts (``tests/distributed/*_script.py`` and
``tests/callbacks/ddp_early_stopping_script.py``): the tests' quiet CPU settings
(:func:`spectral_testing.models.trainer_kwargs`) on 2 processes.

The scripts run as their own programs (a distributed strategy relaunches ``sys.argv``), so they put ``tests/``
on ``sys.path`` themselves before importing this module (pytest has it there through ``pythonpath``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch

from spectral_testing.models import trainer_kwargs


def two_process_trainer(
    out_dir: str, callbacks: list, *, strategy: Any = "ddp", **options: Any
) -> pl.Trainer:
    """``pl.Trainer`` on 2 CPU processes under ``strategy`` writing to ``out_dir``, no logger unless given;
    ``options`` (``max_steps``, ``max_epochs``, ``logger``, ...) go to the ``Trainer``. Unlike the
    single-process tests, no epoch limit by default and torch's default (non-)determinism."""
    settings: dict[str, Any] = {"max_epochs": -1, "deterministic": None, **options}
    return pl.Trainer(
        **trainer_kwargs(out_dir, devices=2, strategy=strategy, callbacks=callbacks, **settings)
    )


class FailingLoss:
    """A ``loss_fn`` that raises on rank 1 from its third call on, else calls ``loss_fn``: a failure inside a
    measurement on one rank."""

    def __init__(self, loss_fn: Callable[..., torch.Tensor]) -> None:
        self.loss_fn = loss_fn
        self.calls = 0

    def __call__(self, model, batch):
        self.calls += 1
        if torch.distributed.get_rank() == 1 and self.calls >= 3:
            raise ValueError("injected failure on rank 1")
        return self.loss_fn(model, batch)
