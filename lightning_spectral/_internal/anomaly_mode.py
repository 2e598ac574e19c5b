"""Vectorized autograd runs with anomaly detection paused: ``Trainer(detect_anomaly=True)`` breaks ``vmap``.

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
