"""The one place that captures and restores random number generator states (CPU and every accelerator).

A measurement must not change what training draws next (dropout masks, data shuffling), and a Hessian built
from a random loss must replay the same draws at every product. Both go through :func:`capture_rng_state` /
:meth:`RNGState.restore`, built on torch's per-device generator API (``torch.get_rng_state`` and
``torch.get_device_module(device_type).get_rng_state``), which covers CUDA, ROCm, XPU, MPS and any accelerator
that registers a device module, as ``torch.random.fork_rng`` does. Unlike ``fork_rng`` the state is a value
that can be kept, compared and restored later (the replay needs it), and it can include Python's and NumPy's
global generators (what Lightning's ``seed_everything`` seeds). An accelerator that was never initialised is
left alone: reading its state would initialise it.

Example::

    >>> import torch
    >>> with preserved_rng_state():
    ...     _ = torch.rand(3)  # draws inside leave the caller's stream untouched
    >>> state = capture_rng_state()
    >>> a = torch.rand(2)
    >>> state.restore()
    >>> bool(torch.equal(a, torch.rand(2)))
    True
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

try:  # NumPy is optional for the package; its global RNG is covered when it is there.
    import numpy as _np
except ImportError:  # pragma: no cover - numpy ships with torch's usual installs
    _np = None  # type: ignore[assignment]  # the module's stand-in when NumPy is absent

__all__ = ["RNGState", "capture_rng_state", "preserved_rng_state"]


def _accelerator_module(device_type: str) -> Any | None:
    """Torch's module for ``device_type`` when it has per-device generator states, else ``None``."""
    if device_type in ("cpu", "meta"):
        return None
    try:
        module = torch.get_device_module(device_type)
    except (RuntimeError, AttributeError):
        return None
    return module if hasattr(module, "get_rng_state") and hasattr(module, "set_rng_state") else None


def _initialised(module: Any) -> bool:
    is_initialized = getattr(module, "is_initialized", None)
    return bool(is_initialized()) if callable(is_initialized) else True


@dataclass(frozen=True)
class RNGState:
    """The generator states captured by :func:`capture_rng_state`; :meth:`restore` puts them back.

    Attributes:
        cpu: torch's CPU generator state.
        accelerator: ``(device type, {device index: state})`` for the accelerator devices captured, or ``None``.
        python: Python's ``random`` state, or ``None`` when not captured.
        numpy: NumPy's global state, or ``None`` when not captured (or NumPy is missing).
    """

    cpu: Tensor
    accelerator: tuple[str, dict[int, Tensor]] | None = None
    python: Any = None
    numpy: Any = None

    def restore(self) -> None:
        """Set every captured generator back to its captured state."""
        torch.set_rng_state(self.cpu)
        if self.accelerator is not None:
            device_type, states = self.accelerator
            module = _accelerator_module(device_type)
            assert module is not None  # captured from this device type, so it has generator states
            for index, state in states.items():
                module.set_rng_state(state, torch.device(device_type, index))
        if self.python is not None:
            random.setstate(self.python)
        if self.numpy is not None and _np is not None:
            _np.random.set_state(self.numpy)

    def same_torch_state(self, other: RNGState) -> bool:
        """Whether torch's generators (CPU and the accelerator devices) are in the same state in both."""
        if not torch.equal(self.cpu, other.cpu):
            return False
        if (self.accelerator is None) != (other.accelerator is None):
            return False
        if self.accelerator is None or other.accelerator is None:
            return True
        (type_a, states_a), (type_b, states_b) = self.accelerator, other.accelerator
        return (
            type_a == type_b
            and states_a.keys() == states_b.keys()
            and all(torch.equal(states_a[i], states_b[i]) for i in states_a)
        )


def capture_rng_state(device: torch.device | str | None = None, *, host: bool = False) -> RNGState:
    """The current generator states: torch's CPU generator and the accelerator's.

    Args:
        device: ``None`` captures every device of the current accelerator (``torch.accelerator``) when it is
            initialised; a device captures that device only (a CPU device: no accelerator state).
        host: also capture Python's ``random`` and NumPy's global generator.

    Returns:
        An :class:`RNGState`; its :meth:`~RNGState.restore` puts the generators back.
    """
    accelerator = None
    if device is None:
        current = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        module = _accelerator_module(current.type) if current is not None else None
        if current is not None and module is not None and _initialised(module):
            states = {
                i: module.get_rng_state(torch.device(current.type, i)) for i in range(module.device_count())
            }
            accelerator = (current.type, states)
    else:
        device = torch.device(device)
        module = _accelerator_module(device.type)
        if module is not None:
            index = (
                device.index if device.index is not None else getattr(module, "current_device", lambda: 0)()
            )
            accelerator = (device.type, {index: module.get_rng_state(torch.device(device.type, index))})
    return RNGState(
        cpu=torch.get_rng_state(),
        accelerator=accelerator,
        python=random.getstate() if host else None,
        numpy=_np.random.get_state() if host and _np is not None else None,
    )


@contextlib.contextmanager
def preserved_rng_state(device: torch.device | str | None = None, *, host: bool = True) -> Iterator[RNGState]:
    """Restore the generator states of :func:`capture_rng_state` on exit (also on an exception).

    Args:
        device: as in :func:`capture_rng_state` (default: every initialised device of the accelerator).
        host: also restore Python's and NumPy's global generators (default ``True``).

    Yields:
        The captured state.
    """
    state = capture_rng_state(device, host=host)
    try:
        yield state
    finally:
        state.restore()
