"""The loss a curvature measurement differentiates: the module's own ``training_step``, or the user's."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from typing_extensions import override

if TYPE_CHECKING:
    import pytorch_lightning as pl

LossFn = Callable[[Any, Any], torch.Tensor]


def training_step_loss(pl_module: pl.LightningModule, batch: Any) -> torch.Tensor:
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


def resolve_loss_fn(pl_module: pl.LightningModule, loss_fn: LossFn | None) -> LossFn:
    """The user's ``loss_fn``, or :func:`training_step_loss` when the module uses automatic optimization."""
    if loss_fn is not None:
        return loss_fn
    if not getattr(pl_module, "automatic_optimization", True):
        raise ValueError(
            "The module uses manual optimization, so its `training_step` steps the optimizer and cannot be "
            "called for a measurement: pass `loss_fn=lambda module, batch: ...` to the monitor."
        )
    return training_step_loss


#: The loss functions of ``torch.nn.functional`` (every ``nn.*Loss`` module calls one) other than ``mse_loss``.
NON_MSE_LOSSES = (
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "soft_margin_loss",
    "multilabel_soft_margin_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "margin_ranking_loss",
    "hinge_embedding_loss",
    "cosine_embedding_loss",
    "triplet_margin_loss",
    "ctc_loss",
)


class _LossCalls(torch.overrides.TorchFunctionMode):
    """Records the names of the ``torch.nn.functional`` loss functions called while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    @override
    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Collection[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = getattr(func, "__name__", "")
        if name == "mse_loss" or name in NON_MSE_LOSSES:
            self.names.append(name)
        return func(*args, **(kwargs or {}))


def loss_functions_called(pl_module: pl.LightningModule, batch: Any) -> list[str]:
    """The ``torch.nn.functional`` loss functions (``mse_loss`` and :data:`NON_MSE_LOSSES`) that
    ``pl_module.training_step(batch, 0)`` calls, in order, once each; with gradients off. Call it inside the
    monitors' guard (logging silenced, random state restored). A loss written out by hand (``((f - y) ** 2)
    .mean()``) calls none of them.
    """
    from lightning_spectral._internal.eager_execution import compiled_code_runs_eagerly

    recorder = _LossCalls()
    with compiled_code_runs_eagerly(), torch.no_grad(), recorder:  # a compiled module is not recompiled
        pl_module.training_step(batch, 0)
    return list(dict.fromkeys(recorder.names))
