"""Helpers of the SpectralEarlyStopping tests: Lightning's ``rank_zero_info`` messages, and a short fit of
``TinyClassifier``."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import lightning_utilities.core.rank_zero as lightning_utilities_rank_zero
import pytorch_lightning as pl

from spectral_testing.models import TinyClassifier, trainer_kwargs


@contextmanager
def rank_zero_info_messages():
    """The messages of ``rank_zero_info`` (Lightning's logger does not propagate to pytest's caplog).

    ``rank_zero_info`` writes to ``lightning_utilities.core.rank_zero.log``, which whichever Lightning
    flavour was imported last (``pytorch_lightning`` or ``lightning.pytorch``) replaces with its own
    logger: hook the one in place now, not a name.
    """
    messages: list[str] = []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = lightning_utilities_rank_zero.log
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def fit(tmp_path, callbacks, *, model=None, ckpt_path=None, **overrides):
    """``TinyClassifier`` (4 steps per epoch, SGD lr 0.1 momentum 0.9) for at most 40 steps."""
    pl.seed_everything(7, workers=True)
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **{"max_epochs": 10, **overrides}))
    trainer.fit(model or TinyClassifier(), ckpt_path=ckpt_path)
    return trainer
