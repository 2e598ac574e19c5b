"""Monitors under ``precision="bf16-mixed"`` on CPU: the measurement runs in float32, outside autocast.

At step 0 the model of a bf16-mixed run and of a float32 run are the same, so every metric must agree to
float32 rounding (rel. 1e-5); a measurement that ran under bf16 autocast would be off by ~1e-2 (bf16 keeps 8
bits of mantissa).
"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
from spectral_testing.models import TinyClassifier, trainer_kwargs

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor


def step_zero_metrics(tmp_path, precision: str) -> dict[str, float]:
    monitors = [
        HessianEigenMonitor(k=2, every_n_steps=1000, tol=1e-4, strict=True),
        NTKTraceMonitor(every_n_steps=1000, method="exact", compute_lambda_max=True, strict=True),
        WeightSpectrumMonitor(every_n_steps=1000, strict=True),
    ]
    pl.seed_everything(3)
    trainer = pl.Trainer(callbacks=monitors, **trainer_kwargs(tmp_path, max_steps=1, precision=precision))
    trainer.fit(TinyClassifier())
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("spectral/")}


def test_bf16_mixed_measures_in_float32(tmp_path):
    mixed = step_zero_metrics(tmp_path / "bf16", "bf16-mixed")
    full = step_zero_metrics(tmp_path / "fp32", "32-true")
    assert mixed.keys() == full.keys()
    assert {"spectral/hessian/lambda_2", "spectral/ntk/lambda_max", "spectral/weights/max_sigma_max"} <= set(
        full
    )
    for key, value in full.items():
        assert math.isfinite(mixed[key]), key
        if key.endswith("num_hvps"):
            continue
        assert mixed[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
