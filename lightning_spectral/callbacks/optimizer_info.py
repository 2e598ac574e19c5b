"""What a monitor needs to know about the run's optimizer and data: learning rate, momentum, batch size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def first_optimizer(trainer: Any) -> Any:
    """The trainer's first optimizer (the one the stability limits are read from), ``None`` without one."""
    optimizers = getattr(trainer, "optimizers", None) or []
    return optimizers[0] if optimizers else None


@dataclass(frozen=True)
class SGDSettings:
    """Step size and momentum of an SGD-like optimizer (the ones the edge-of-stability limits are for)."""

    lr: float
    momentum: float
    nesterov: bool


def sgd_settings(trainer: Any) -> SGDSettings | None:
    """The first optimizer's first param group, if it is ``torch.optim.SGD``; ``None`` for other optimizers.

    Adaptive optimizers (Adam, RMSprop, ...) precondition the step, so the stability limit concerns the
    preconditioned sharpness, not λ_max of the raw Hessian: no SGD settings are returned for them.
    """
    optimizer = first_optimizer(trainer)
    if optimizer is None or "SGD" not in {cls.__name__ for cls in type(optimizer).__mro__}:
        return None
    group = optimizer.param_groups[0]
    return SGDSettings(
        lr=float(group["lr"]),
        momentum=float(group.get("momentum", 0.0)),
        nesterov=bool(group.get("nesterov")),
    )


def learning_rate(trainer: Any) -> float | None:
    """The first optimizer's first param group's current learning rate (``None`` without an optimizer)."""
    optimizer = first_optimizer(trainer)
    return float(optimizer.param_groups[0]["lr"]) if optimizer is not None else None


def training_batch_size(trainer: Any) -> int | None:
    """The batch size of the training dataloader (``None`` when it cannot be told, e.g. a custom iterable)."""
    dataloader = trainer.train_dataloader
    batch_size = getattr(dataloader, "batch_size", None)
    if batch_size is None:
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        batch_size = getattr(batch_sampler, "batch_size", None)
    return int(batch_size) if batch_size is not None else None
