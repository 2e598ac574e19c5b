"""Measurements run in IEEE float32 whatever precision shortcuts the training run switched on, and leave them on.

On CPU the switches can be set and read (they only change arithmetic on hardware that has TF32 / bfloat16
units), so these tests check the switches themselves; ``tests/gpu/test_cuda.py`` checks the numbers on a GPU.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from spectral_testing.models import TinyClassifier, trainer_kwargs
from spectral_testing.precision import switch_values, tf32_training_precision

from lightning_spectral._internal import full_precision
from lightning_spectral._internal.full_precision import IEEE, full_float32_precision, precision_switches
from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor

pytestmark = pytest.mark.skipif(not precision_switches(), reason="torch < 2.9 has no per-operator switches")


@pytest.fixture
def fast_training_precision():
    with tf32_training_precision() as values:
        assert "tf32" in values
        yield values


def test_every_switch_is_ieee_inside_and_restored_after(fast_training_precision):
    assert len(precision_switches()) == len(full_precision.PRECISION_SWITCHES)
    with full_float32_precision():
        assert switch_values() == [IEEE] * len(fast_training_precision)
        assert torch.get_float32_matmul_precision() == "highest"
    assert switch_values() == fast_training_precision
    assert torch.get_float32_matmul_precision() == "high"


def test_switches_are_restored_when_the_body_raises(fast_training_precision):
    with pytest.raises(RuntimeError, match="boom"), full_float32_precision():
        raise RuntimeError("boom")
    assert switch_values() == fast_training_precision


def test_a_state_pytorch_refuses_to_summarise_still_gets_every_switch(fast_training_precision, monkeypatch):
    """PyTorch 2.9-2.11 raise from get_float32_matmul_precision() after a mix of the two APIs; the switches
    are still set and restored one by one."""

    def refuse():
        raise RuntimeError("mix of the legacy and new APIs")

    monkeypatch.setattr(torch, "get_float32_matmul_precision", refuse)
    with full_float32_precision():
        assert switch_values() == [IEEE] * len(fast_training_precision)
    assert switch_values() == fast_training_precision


def test_legacy_flags_without_per_operator_switches(monkeypatch):
    """torch < 2.9: the global matmul precision and cuDNN's allow_tf32, restored on exit."""
    monkeypatch.setattr(full_precision, "precision_switches", lambda: [])
    recorded = {}

    def legacy_flags():
        return torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32

    def set_legacy_flags(matmul, cudnn):
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn

    saved_switches = switch_values()
    before = legacy_flags()
    try:
        set_legacy_flags("medium", True)
        with full_float32_precision():
            recorded["inside"] = legacy_flags()
        recorded["after"] = legacy_flags()
    finally:
        set_legacy_flags(*before)
        for switch, value in zip(precision_switches(), saved_switches):
            switch.fp32_precision = value
    assert recorded == {"inside": ("highest", False), "after": ("medium", True)}


class PrecisionRecordingClassifier(TinyClassifier):
    """Records the float32 switches at every forward pass: the monitors' passes and the training steps'."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, list[str]]] = []

    def forward(self, x):
        measuring = not self.training  # the monitors measure in eval mode (their default)
        self.seen.append((measuring, switch_values() + [torch.get_float32_matmul_precision()]))
        return super().forward(x)


def test_monitors_measure_in_ieee_while_training_keeps_its_tf32(tmp_path, fast_training_precision):
    monitors = [
        HessianEigenMonitor(k=2, every_n_steps=2, compute_batch_sharpness=True, strict=True),
        NTKTraceMonitor(every_n_steps=2, method="exact", strict=True),
        WeightSpectrumMonitor(every_n_steps=2, strict=True),
    ]
    pl.seed_everything(0)
    model = PrecisionRecordingClassifier()
    pl.Trainer(callbacks=monitors, **trainer_kwargs(tmp_path, max_steps=4)).fit(model)
    measuring = [values for flag, values in model.seen if flag]
    training = [values for flag, values in model.seen if not flag]
    assert measuring and training
    assert all(values == [IEEE] * (len(values) - 1) + ["highest"] for values in measuring)
    assert all(values == fast_training_precision + ["high"] for values in training)
    assert switch_values() == fast_training_precision
