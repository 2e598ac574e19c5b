"""Full-batch data loading and a quiet, TensorBoard-logged ``Trainer.fit``, shared by the examples.

Full-batch gradient descent (the edge-of-stability and grokking examples) wants one batch per epoch holding the
whole dataset. :func:`whole_set_loader` gives it without collating the examples one by one: a batch sampler
yields every index at once and ``batch_size=None`` indexes the dataset with that list in one go.
:func:`logged_fit` runs ``Trainer.fit`` for a number of steps with a ``TensorBoardLogger`` and without the
progress bar, checkpoints and model summary, and returns the run's log directory.

Example::

    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> loader = whole_set_loader(TensorDataset(torch.arange(5.0), torch.arange(5)))
    >>> [tuple(t.tolist()) for t in next(iter(loader))]
    [(0.0, 1.0, 2.0, 3.0, 4.0), (0, 1, 2, 3, 4)]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

__all__ = ["logged_fit", "whole_set_loader"]

#: Warnings that a small in-memory example always meets and that say nothing about it.
QUIET_WARNINGS = (".*does not have many workers.*",)


def whole_set_loader(dataset: Dataset) -> DataLoader:
    """One batch per epoch, the whole ``dataset`` (which must support indexing with a list of indices, as
    ``TensorDataset`` does), in order."""
    whole_set = BatchSampler(SequentialSampler(dataset), batch_size=len(dataset), drop_last=False)
    return DataLoader(dataset, sampler=whole_set, batch_size=None)


def logged_fit(
    model: Any,
    *,
    callbacks: Sequence[Any],
    log_dir: str | Path,
    name: str,
    max_steps: int,
    ignore_warnings: Sequence[str] = (),
    **trainer_options: Any,
) -> Path:
    """``Trainer(max_steps=max_steps, max_epochs=-1, ...).fit(model)`` with the ``callbacks``, logging every
    step to ``TensorBoardLogger(log_dir, name=name)``; no progress bar, checkpoints or model summary.
    ``ignore_warnings``: message patterns to silence besides :data:`QUIET_WARNINGS`; ``trainer_options`` go to
    the ``Trainer``. Returns the run's log directory ``<log_dir>/<name>/version_<i>``."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(log_dir), name=name, default_hp_metric=False)
    trainer = pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        callbacks=list(callbacks),
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_options,
    )
    with warnings.catch_warnings():
        for pattern in (*QUIET_WARNINGS, *ignore_warnings):
            warnings.filterwarnings("ignore", message=pattern)
        trainer.fit(model)
    return Path(logger.log_dir)
