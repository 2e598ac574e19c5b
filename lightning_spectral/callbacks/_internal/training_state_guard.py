"""A guard that makes a measurement invisible to the training run.

Example::

    with preserved_training_state(model):
        model.eval()
        value = some_measurement(model)
    # model.training, grads, buffers and RNG are as before
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lightning_spectral._internal.full_precision import full_float32_precision
from lightning_spectral._internal.rng import preserved_rng_state

if TYPE_CHECKING:
    from torchmetrics import Metric


#: ``torchmetrics.Metric`` attributes besides its ``add_state`` states that an ``update`` or ``forward`` changes.
_METRIC_BOOKKEEPING = ("_update_count", "_computed", "_forward_cache")


def _torchmetrics_metrics(module: nn.Module) -> list[Metric]:
    try:
        from torchmetrics import Metric
    except ImportError:  # pragma: no cover - torchmetrics is a dependency; a module without it has no metrics
        return []
    return [m for m in module.modules() if isinstance(m, Metric)]


@contextlib.contextmanager
def preserved_metric_states(module: nn.Module) -> Iterator[None]:
    """Restore every ``torchmetrics.Metric`` submodule of ``module`` on exit: each ``add_state`` state in place
    (tensor values copied back into the original tensor, list states refilled, so states that a
    ``MetricCollection``'s compute group shares stay shared) and rebound to it, and the update count, forward
    cache and computed value.
    """
    saved = []
    for metric in _torchmetrics_metrics(module):
        # {state name: (the state, its snapshot)}
        states: dict[str, tuple[Tensor, Tensor] | tuple[list[Any], list[Any]]] = {}
        for name in metric._defaults:
            value = getattr(metric, name)
            states[name] = (
                (value, value.detach().clone()) if isinstance(value, Tensor) else (value, list(value))
            )
        bookkeeping = {attr: getattr(metric, attr) for attr in _METRIC_BOOKKEEPING if hasattr(metric, attr)}
        saved.append((metric, states, bookkeeping))
    try:
        yield
    finally:
        with torch.no_grad():
            for metric, states, bookkeeping in saved:
                for name, state in states.items():
                    if isinstance(state[0], Tensor):
                        state[0].copy_(state[1])
                    else:
                        state[0][:] = state[1]
                    setattr(metric, name, state[0])
                for attr, value in bookkeeping.items():
                    setattr(metric, attr, value)


def _noop_log(*args: Any, **kwargs: Any) -> None:
    return None


@contextlib.contextmanager
def silenced_module_logging(module: nn.Module) -> Iterator[None]:
    """Make ``module.log`` and ``module.log_dict`` no-ops (for LightningModules) until exit."""
    names = [name for name in ("log", "log_dict") if callable(getattr(module, name, None))]
    shadowed = {name: module.__dict__[name] for name in names if name in module.__dict__}
    for name in names:
        object.__setattr__(module, name, _noop_log)
    try:
        yield
    finally:
        for name in names:
            if name in shadowed:
                object.__setattr__(module, name, shadowed[name])
            else:
                object.__delattr__(module, name)


@contextlib.contextmanager
def preserved_training_state(module: nn.Module) -> Iterator[None]:
    """Run the body with the module's training state set aside and restored exactly on exit."""
    parameters = list(module.parameters())
    grads = [p.grad for p in parameters]
    requires_grad = [p.requires_grad for p in parameters]
    modes = [(m, m.training) for m in module.modules()]
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    device_type = parameters[0].device.type if parameters else "cpu"
    for p in parameters:
        p.grad = None
    try:
        with (
            preserved_rng_state(),
            silenced_module_logging(module),
            preserved_metric_states(module),
            torch.autocast(device_type=device_type, enabled=False),
            full_float32_precision(),
            torch.enable_grad(),
        ):
            yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for m, was_training in modes:
            m.training = was_training
        for p, grad, flag in zip(parameters, grads, requires_grad):
            p.requires_grad_(flag)
            p.grad = grad
