"""The loss a curvature measurement differentiates: the module's own ``training_step``, or the user's.

By default the measured loss is what ``pl_module.training_step(batch, 0)`` returns — a tensor, or a dict
with a ``"loss"`` entry — so the Hessian is that of exactly the objective being trained. It is called inside
the monitors' guard, with ``LightningModule.log`` silenced, so the measurement never pollutes the user's
logged metrics. Modules with manual optimization step their optimizers inside ``training_step``; for them a
``loss_fn(pl_module, batch)`` must be given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

LossFn = Callable[[Any, Any], torch.Tensor]


def training_step_loss(pl_module: Any, batch: Any) -> torch.Tensor:
    """``pl_module.training_step(batch, 0)`` reduced to its scalar loss tensor."""
    output = pl_module.training_step(batch, 0)
    if isinstance(output, Mapping):
        output = output.get("loss")
    if not isinstance(output, torch.Tensor) or output.numel() != 1:
        raise ValueError(
            "The module's `training_step` must return a scalar loss tensor or a dict with a 'loss' tensor to be "
            f"measured, got {type(output).__name__}; pass `loss_fn=` to the monitor instead."
        )
    return output.reshape(())


def resolve_loss_fn(pl_module: Any, loss_fn: LossFn | None) -> LossFn:
    """The user's ``loss_fn``, or :func:`training_step_loss` when the module uses automatic optimization."""
    if loss_fn is not None:
        return loss_fn
    if not getattr(pl_module, "automatic_optimization", True):
        raise ValueError(
            "The module uses manual optimization, so its `training_step` steps the optimizer and cannot be "
            "called for a measurement: pass `loss_fn=lambda module, batch: ...` to the monitor."
        )
    return training_step_loss
