"""The float32 precision shortcuts a speed-minded training script switches on, for the tests to start from."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from lightning_spectral._internal.full_precision import precision_switches


def switch_values() -> list[str]:
    """The per-operator ``fp32_precision`` switches, in :data:`~lightning_spectral._internal.full_precision.PRECISION_SWITCHES` order."""
    return [switch.fp32_precision for switch in precision_switches()]


@contextlib.contextmanager
def tf32_training_precision() -> Iterator[list[str]]:
    """``torch.set_float32_matmul_precision("high")`` (what Lightning suggests on GPUs with tensor cores) and
    TF32 cuDNN convolutions (the GPU default); yields the switch values it set and restores every switch.

    Only the calls a user makes: setting every switch by hand puts PyTorch 2.11 in a state whose
    ``torch.get_float32_matmul_precision()`` (which Lightning calls at setup) raises for mixing the APIs."""
    saved = switch_values()
    try:
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        yield switch_values()
    finally:
        for switch, value in zip(precision_switches(), saved):
            switch.fp32_precision = value
