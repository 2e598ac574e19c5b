"""Full float32 precision for a measurement, whatever the training run chose for speed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

#: The (backend, operator) pairs of PyTorch ≥ 2.9's per-operator ``fp32_precision`` switches.
PRECISION_SWITCHES = (
    ("cuda", "matmul"),
    ("cudnn", "conv"),
    ("cudnn", "rnn"),
    ("mkldnn", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "rnn"),
)
#: The value of those switches that means IEEE float32 arithmetic.
IEEE = "ieee"


def precision_switches() -> list[Any]:
    """The per-operator ``fp32_precision`` switch objects this PyTorch has (empty before 2.9)."""
    switches = []
    for backend, operator in PRECISION_SWITCHES:
        switch = getattr(getattr(torch.backends, backend, None), operator, None)
        if switch is not None and hasattr(switch, "fp32_precision"):
            switches.append(switch)
    return switches


def _matmul_precision() -> str | None:
    """``torch.get_float32_matmul_precision()``, or ``None`` where PyTorch refuses to answer (2.9-2.11 raise
    when the switches were set through both the legacy and the per-operator API).
    """
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


@contextlib.contextmanager
def full_float32_precision() -> Iterator[None]:
    """Run the body with IEEE float32 matrix products and convolutions; restore every switch on exit."""
    switches = precision_switches()
    saved_switches = [switch.fp32_precision for switch in switches]
    saved_matmul = _matmul_precision()
    saved_cudnn = None if switches else torch.backends.cudnn.allow_tf32
    try:
        # The global call first: it keeps PyTorch's legacy matmul setting and the per-operator switches in
        # agreement, so code that asks torch.get_float32_matmul_precision() inside the body gets "highest".
        if saved_matmul is not None:
            torch.set_float32_matmul_precision("highest")
        for switch in switches:
            switch.fp32_precision = IEEE
        if saved_cudnn is not None:
            torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        if saved_matmul is not None:
            torch.set_float32_matmul_precision(saved_matmul)
        for switch, value in zip(switches, saved_switches):
            switch.fp32_precision = value
        if saved_cudnn is not None:
            torch.backends.cudnn.allow_tf32 = saved_cudnn
