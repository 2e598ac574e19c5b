"""The fixed measurement batch: drawn once at fit start so successive measurements are comparable."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from lightning_spectral._internal.rng import preserved_rng_state

if TYPE_CHECKING:
    import pytorch_lightning as pl


def _loaders(dataloader: Any) -> list[Any]:
    """The loaders of the train dataloader(s): one, or each of a mapping / sequence of them."""
    if isinstance(dataloader, Mapping):
        return list(dataloader.values())
    if isinstance(dataloader, Sequence):
        return list(dataloader)
    return [dataloader]


def _generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a ``DataLoader`` draws from when iterated (its own and its samplers'), each once."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    owners = (
        loader,
        getattr(loader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    )
    found: list[torch.Generator] = []
    for owner in owners:
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


@contextlib.contextmanager
def _preserved_generators(generators: list[torch.Generator]) -> Iterator[None]:
    states = [generator.get_state() for generator in generators]
    try:
        yield
    finally:
        for generator, state in zip(generators, states):
            generator.set_state(state)


def _without_persistent_workers(loader: Any) -> Any:
    """``loader`` itself, or, for a ``DataLoader`` with ``persistent_workers=True``, a twin in the main process
    over the same dataset, sampler(s) and ``collate_fn`` (the original's kept iterator is never touched).
    """
    if not (isinstance(loader, DataLoader) and loader.persistent_workers):
        return loader
    common = {"collate_fn": loader.collate_fn, "generator": loader.generator}
    if isinstance(loader.dataset, IterableDataset):
        return DataLoader(loader.dataset, batch_size=loader.batch_size, drop_last=loader.drop_last, **common)
    if loader.batch_sampler is not None:
        return DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, **common)
    return DataLoader(loader.dataset, batch_size=None, sampler=loader.sampler, **common)


def _iterable_train_data(trainer: pl.Trainer) -> tuple[Any, bool, list[torch.Generator]]:
    """The training data to iterate, whether it is a ``CombinedLoader`` (which yields index triples), and the
    generators iterating it draws from.
    """
    dataloader = trainer.train_dataloader
    if dataloader is None:
        raise RuntimeError(
            "The trainer has no train dataloader to draw the measurement batch from; pass `batch=` to the monitor."
        )
    generators = [g for loader in _loaders(dataloader) for g in _generators(loader)]
    if isinstance(dataloader, Mapping):
        dataloader = {key: _without_persistent_workers(loader) for key, loader in dataloader.items()}
    elif isinstance(dataloader, Sequence):
        dataloader = [_without_persistent_workers(loader) for loader in dataloader]
    else:
        return _without_persistent_workers(dataloader), False, generators
    # Several train dataloaders: combine them the way the fit loop does by default.
    from pytorch_lightning.utilities import CombinedLoader

    return CombinedLoader(dataloader, mode="max_size_cycle"), True, generators


def draw_measurement_batches(trainer: pl.Trainer, num_batches: int, seed: int) -> list[Any]:
    """Draw ``num_batches`` batches from the training data under ``seed``; the global RNG is left unchanged."""
    data, yields_index_triples, generators = _iterable_train_data(trainer)
    batches: list[Any] = []
    with preserved_rng_state(), _preserved_generators(generators):
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


def to_module_device(trainer: pl.Trainer, batch: Any) -> Any:
    """A batch as the train dataloader yields it, turned into what ``training_step`` receives, in the steps and
    order of Lightning's training loop: ``precision_plugin.convert_input``, the module's (and datamodule's)
    ``on_before_batch_transfer``, then ``strategy.batch_to_device`` (``transfer_batch_to_device`` and
    ``on_after_batch_transfer``). The global random state is left as it was (hooks may augment at random).
    """
    with preserved_rng_state():
        batch = trainer.precision_plugin.convert_input(batch)
        before_transfer = getattr(trainer.lightning_module, "_on_before_batch_transfer", None)
        if before_transfer is not None:  # Lightning's dispatcher (module, then datamodule hook)
            batch = before_transfer(batch, dataloader_idx=0)
        return trainer.strategy.batch_to_device(batch, dataloader_idx=0)
