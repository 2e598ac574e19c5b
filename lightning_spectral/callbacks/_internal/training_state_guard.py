"""A guard that makes a measurement invisible to the training run.

A monitor runs between optimizer steps of someone else's training job. Whatever it does inside
:func:`preserved_training_state`, training continues exactly as if it had not run:

- every parameter's ``.grad`` is set aside (the measurement sees ``None``) and put back by identity, so
  gradients accumulated mid-way through gradient accumulation survive untouched;
- every module's ``training`` flag and every parameter's ``requires_grad`` flag are restored;
- every buffer (BatchNorm running statistics, ``num_batches_tracked``, ...) is restored in place, so the
  tensors the optimizer, DDP or user code hold keep their identity;
- the random number generators (Python, NumPy when installed, torch CPU and every initialised CUDA device)
  are restored, so dropout masks and data shuffling after the measurement are the ones the run would have
  drawn anyway;
- autocast is disabled inside and float32 runs in full IEEE precision (TF32 and bfloat16 shortcuts off, see
  :mod:`lightning_spectral._internal.full_precision`; every switch restored on exit), and gradients are enabled;
- ``LightningModule.log``/``log_dict`` are silenced, and the accumulated state of every ``torchmetrics.Metric``
  submodule (its ``add_state`` states, update count, forward cache and computed value) is restored, so a
  ``training_step`` called for a measurement never writes into the user's logged metrics, step- or
  epoch-level. Other Python-side effects of a ``training_step`` (a counter, a list, a direct write to
  ``self.logger.experiment``) cannot be undone from outside: such modules should give the monitor a
  ``loss_fn``.

Example::

    with preserved_training_state(model):
        model.eval()
        value = some_measurement(model)
    # model.training, grads, buffers and RNG are as before
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lightning_spectral._internal.full_precision import full_float32_precision

if TYPE_CHECKING:
    from torchmetrics import Metric

try:  # NumPy is optional for the package; restore its global RNG when it is there.
    import numpy as _np
except ImportError:  # pragma: no cover - numpy ships with torch's usual installs
    _np = None  # type: ignore[assignment]  # the module's stand-in when NumPy is absent


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Restore the Python, NumPy, torch CPU and CUDA random states on exit."""
    python_state = random.getstate()
    numpy_state = _np.random.get_state() if _np is not None else None
    torch_state = torch.get_rng_state()
    cuda_states = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    try:
        yield
    finally:
        random.setstate(python_state)
        if numpy_state is not None:
            _np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


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
    cache and computed value."""
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
