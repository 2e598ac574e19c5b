"""What a monitor needs to know about the run's optimizer and data: learning rate, momentum, batch size."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_spectral.functional.hessian.edge_of_stability import stability_limit

if TYPE_CHECKING:
    import pytorch_lightning as pl


def first_optimizer(trainer: pl.Trainer) -> torch.optim.Optimizer | None:
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


def _sgd_group_settings(group: dict[str, Any]) -> SGDSettings:
    return SGDSettings(
        lr=float(group["lr"]),  # a float or a 0-dim tensor
        momentum=float(group.get("momentum", 0.0)),
        nesterov=bool(group.get("nesterov")),
        dampening=float(group.get("dampening", 0.0)),
        weight_decay=float(group.get("weight_decay", 0.0)),
    )


def outside_first_optimizer(trainer: pl.Trainer, parameters: Sequence[Tensor]) -> int:
    """How many of ``parameters`` no param group of the first optimizer holds (all of them without one)."""
    optimizer = first_optimizer(trainer)
    if optimizer is None:
        return len(parameters)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return sum(id(p) not in held for p in parameters)


def resolved_sgd_settings(
    trainer: pl.Trainer, parameters: Sequence[Tensor] | None = None
) -> tuple[SGDSettings | None, str]:
    """The settings with which the first optimizer, if it is ``torch.optim.SGD``, steps ``parameters`` (default:
    every parameter it holds), and why there are none when no single setting applies: SGD groups that differ,
    or (any optimizer) measured parameters it does not hold (``""`` otherwise).

    Adaptive optimizers (Adam, RMSprop, ...) precondition the step, so the stability limit concerns the
    preconditioned sharpness, not λ_max of the raw Hessian: no SGD settings are returned for them. Nor for
    ``maximize=True``, which ascends the loss (its limit concerns the most negative eigenvalue). Nor when the
    parameters are stepped with more than one learning rate / momentum / Nesterov flag / dampening (param
    groups that differ in them, or parameters another optimizer steps; without ``parameters``, a second
    optimizer): one limit ``2/η`` then does not exist, and the reason says why. The first such group's
    ``weight_decay`` is taken for all parameters: with groups that decay differently (no decay on biases,
    say) the limit is off by at most the largest difference in ``weight_decay``, tiny against ``2/η``.
    """
    optimizer = first_optimizer(trainer)
    if optimizer is None:
        return None, ""
    outside = 0 if parameters is None else outside_first_optimizer(trainer, parameters)
    if (
        outside and parameters is not None
    ):  # whatever the optimizer: its limits (SGD's or a preconditioned one) are read from the first
        return None, f"{outside} of the {len(parameters)} measured parameters are not in the first optimizer"
    if "SGD" not in {cls.__name__ for cls in type(optimizer).__mro__}:
        return None, ""
    count = len(getattr(trainer, "optimizers", None) or [])
    if parameters is None:
        if count > 1:
            return None, f"the model has {count} optimizers"
        groups = list(optimizer.param_groups)
    else:
        wanted = {id(p) for p in parameters}
        groups = [g for g in optimizer.param_groups if any(id(p) in wanted for p in g["params"])]
    if not groups or any(group.get("maximize") for group in groups):
        return None, ""
    settings = [_sgd_group_settings(group) for group in groups]
    steps = sorted({dataclasses.replace(each, weight_decay=0.0) for each in settings}, key=repr)
    if len(steps) > 1:
        described = "; ".join(each.describe() for each in steps)
        return None, f"the first optimizer's param groups step them with different settings: {described}"
    return settings[0], ""


def learning_rate(trainer: pl.Trainer) -> float | None:
    """The first optimizer's first param group's current learning rate (``None`` without an optimizer)."""
    optimizer = first_optimizer(trainer)
    return float(optimizer.param_groups[0]["lr"]) if optimizer is not None else None


def training_batch_size(trainer: pl.Trainer) -> int | None:
    """The batch size of the training dataloader (``None`` when it cannot be told, e.g. a custom iterable)."""
    dataloader = trainer.train_dataloader
    batch_size = getattr(dataloader, "batch_size", None)
    if batch_size is None:
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        batch_size = getattr(batch_sampler, "batch_size", None)
    return int(batch_size) if batch_size is not None else None
