"""Vectorized autograd runs with anomaly detection paused: ``Trainer(detect_anomaly=True)`` breaks ``vmap``.

Anomaly detection (``torch.autograd.set_detect_anomaly(True)``, which ``Trainer(detect_anomaly=True)`` turns on
for the whole fit) checks every gradient of a backward pass for NaN with a Python-level ``.item()``. Under
``torch.func.vmap`` and ``torch.autograd.grad(..., is_grads_batched=True)`` (a ``vmap`` of the backward pass)
that check has no batching rule: ``RuntimeError: Batching rule not implemented for aten::item``. The
measurements' vectorized paths (per-example gradient norms and Jacobians, batched Jacobian-vector products) run
inside :func:`anomaly_detection_paused`: anomaly mode off for the body, the caller's mode (and its
``check_nan`` setting) back on exit. Anomaly mode only adds checks and forward tracebacks, so the numbers are
the same; a non-finite measurement is still reported by the monitors (logged as NaN, ``check_finite``).

Example::

    >>> import torch
    >>> with torch.autograd.detect_anomaly():
    ...     with anomaly_detection_paused():
    ...         paused = torch.is_anomaly_enabled()
    ...     restored = torch.is_anomaly_enabled()
    >>> paused, restored
    (False, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["anomaly_detection_paused"]


@contextlib.contextmanager
def anomaly_detection_paused() -> Iterator[None]:
    """Run the body with autograd anomaly detection off; restore the caller's setting on exit."""
    if not torch.is_anomaly_enabled():
        yield
        return
    with torch.autograd.set_detect_anomaly(False):
        yield
