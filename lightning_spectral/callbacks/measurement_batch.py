"""The fixed measurement batch: drawn once at fit start so successive measurements are comparable.

Spectra of a loss Hessian or an NTK depend on the data they are measured on. Measuring every time on the
same batch(es) makes a curve over training steps show the model changing, not the batch. The batch is drawn
from a fresh iterator over the training dataloader, under a fixed seed and with the global random state
restored afterwards, so drawing it changes nothing in the training run and a resumed run draws the same
batch again (same dataset, same seed). Under DDP each rank draws from its own shard, as Lightning shards it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lightning_spectral.callbacks.training_state_guard import preserved_rng_state


def _iterable_train_data(trainer: Any) -> tuple[Any, bool]:
    """The training data to iterate, and whether it is a ``CombinedLoader`` (which yields index triples)."""
    dataloader = trainer.train_dataloader
    if dataloader is None:
        raise RuntimeError(
            "The trainer has no train dataloader to draw the measurement batch from; pass `batch=` to the monitor."
        )
    if isinstance(dataloader, (Mapping, Sequence)):
        # Several train dataloaders: combine them the way the fit loop does by default.
        from pytorch_lightning.utilities import CombinedLoader

        return CombinedLoader(dataloader, mode="max_size_cycle"), True
    return dataloader, False


def draw_measurement_batches(trainer: Any, num_batches: int, seed: int) -> list[Any]:
    """Draw ``num_batches`` batches from the training data under ``seed``; the global RNG is left unchanged."""
    data, yields_index_triples = _iterable_train_data(trainer)
    batches = []
    with preserved_rng_state():
        torch.manual_seed(seed)
        iterator = iter(data)
        for _ in range(num_batches):
            try:
                batch = next(iterator)
            except StopIteration:
                raise ValueError(
                    f"`num_batches={num_batches}` but the training dataloader yields only {len(batches)} batch(es)."
                ) from None
            batches.append(batch[0] if yields_index_triples else batch)
        del iterator
    return [to_module_device(trainer, batch) for batch in batches]


def to_module_device(trainer: Any, batch: Any) -> Any:
    """Move a batch to the module's device through the strategy, as Lightning moves training batches."""
    with preserved_rng_state():
        return trainer.strategy.batch_to_device(batch)
