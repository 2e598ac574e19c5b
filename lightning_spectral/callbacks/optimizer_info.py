"""What a monitor needs to know about the run's optimizer and data: learning rate, momentum, batch size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightning_spectral.functional.edge_of_stability import stability_limit


def first_optimizer(trainer: Any) -> Any:
    """The trainer's first optimizer (the one the stability limits are read from), ``None`` without one."""
    optimizers = getattr(trainer, "optimizers", None) or []
    return optimizers[0] if optimizers else None


@dataclass(frozen=True)
class SGDSettings:
    """The settings of ``torch.optim.SGD``'s first param group that its edge-of-stability limit depends on."""

    lr: float
    momentum: float
    nesterov: bool
    dampening: float = 0.0
    weight_decay: float = 0.0

    def stability_limit(self) -> float:
        """The largest stable ``λ_max`` of the loss Hessian (:func:`~lightning_spectral.functional.stability_limit`)."""
        return stability_limit(self.lr, self.momentum, self.nesterov, self.dampening, self.weight_decay)

    def describe(self) -> str:
        """``SGD(lr=…, …)`` with the settings that differ from plain SGD."""
        extra = [f"momentum={self.momentum:g}"] if self.momentum else []
        extra += ["nesterov=True"] if self.nesterov else []
        extra += [f"dampening={self.dampening:g}"] if self.dampening and self.momentum else []
        extra += [f"weight_decay={self.weight_decay:g}"] if self.weight_decay else []
        return f"SGD({', '.join([f'lr={self.lr:g}', *extra])})"


def sgd_settings(trainer: Any) -> SGDSettings | None:
    """The first optimizer's first param group, if it is ``torch.optim.SGD``; ``None`` for other optimizers.

    Adaptive optimizers (Adam, RMSprop, ...) precondition the step, so the stability limit concerns the
    preconditioned sharpness, not λ_max of the raw Hessian: no SGD settings are returned for them. Nor for
    ``maximize=True``, which ascends the loss (its limit concerns the most negative eigenvalue). The first
    group's ``weight_decay`` is taken for all parameters: with groups that decay differently (no decay on
    biases, say) the limit is off by at most the largest difference in ``weight_decay``, tiny against ``2/η``.
    """
    optimizer = first_optimizer(trainer)
    if optimizer is None or "SGD" not in {cls.__name__ for cls in type(optimizer).__mro__}:
        return None
    group = optimizer.param_groups[0]
    if group.get("maximize"):
        return None
    return SGDSettings(
        lr=float(group["lr"]),
        momentum=float(group.get("momentum", 0.0)),
        nesterov=bool(group.get("nesterov")),
        dampening=float(group.get("dampening", 0.0)),
        weight_decay=float(group.get("weight_decay", 0.0)),
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
