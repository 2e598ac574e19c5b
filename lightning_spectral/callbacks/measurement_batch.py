"""The fixed measurement batch: drawn once at fit start so successive measurements are comparable.

Spectra of a loss Hessian or an NTK depend on the data they are measured on. Measuring every time on the
same batch(es) makes a curve over training steps show the model changing, not the batch. The batch is drawn
from a fresh iterator over the training dataloader, under a fixed seed and with the global random state
restored afterwards, so drawing it changes nothing in the training run and a resumed run draws the same
batch again (same dataset, same seed). Under DDP each rank draws from its own shard, as Lightning shards it.
Each batch then takes the way a training batch takes (:func:`to_module_device`): the precision plugin's input
conversion (``precision="bf16-true"`` / ``"16-true"`` / ``"64-true"`` cast floating tensors to the model's
dtype), ``on_before_batch_transfer``, the transfer to the device and ``on_after_batch_transfer``.
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
    """A batch as the train dataloader yields it, turned into what ``training_step`` receives, in the steps and
    order of Lightning's training loop: ``precision_plugin.convert_input``, the module's (and datamodule's)
    ``on_before_batch_transfer``, then ``strategy.batch_to_device`` (``transfer_batch_to_device`` and
    ``on_after_batch_transfer``). The global random state is left as it was (hooks may augment at random)."""
    with preserved_rng_state():
        batch = trainer.precision_plugin.convert_input(batch)
        before_transfer = getattr(trainer.lightning_module, "_on_before_batch_transfer", None)
        if before_transfer is not None:  # Lightning's dispatcher (module, then datamodule hook)
            batch = before_transfer(batch, dataloader_idx=0)
        return trainer.strategy.batch_to_device(batch, dataloader_idx=0)
