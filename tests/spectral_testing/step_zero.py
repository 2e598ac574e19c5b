"""Every monitor's metrics at step 0 of a one-step fit, for comparing runs that differ only in how they run
(precision, device): at step 0 the seeded model is the same in all of them, so the metrics must agree."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import pytorch_lightning as pl

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor
from spectral_testing.models import trainer_kwargs

#: Keys that say how a measurement went rather than what it measured (start-vector dependent).
DIAGNOSTIC_SUFFIXES = ("num_hvps", "residual_max", "overhead")


def step_zero_metrics(
    tmp_path, make_model: Callable[[], pl.LightningModule], **trainer_overrides: Any
) -> tuple[pl.Trainer, pl.LightningModule, dict[str, float]]:
    """Seed, build the model, fit one step with every monitor scheduled only at step 0; returns the trainer,
    the model and the ``spectral/`` callback metrics."""
    monitors = [
        HessianEigenMonitor(k=2, every_n_steps=1000, tol=1e-5, compute_batch_sharpness=True, strict=True),
        NTKTraceMonitor(every_n_steps=1000, method="exact", compute_lambda_max=True, strict=True),
        WeightSpectrumMonitor(every_n_steps=1000, strict=True),
    ]
    pl.seed_everything(3)
    model = make_model()
    trainer = pl.Trainer(callbacks=monitors, **trainer_kwargs(tmp_path, max_steps=1, **trainer_overrides))
    trainer.fit(model)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("spectral/")}
    return trainer, model, metrics


def assert_same_metrics(
    actual: dict[str, float], expected: dict[str, float], *, rel: float, abs: float
) -> None:
    """Same keys (every monitor's headline metric among them), all finite, values within ``rel``/``abs``
    except the diagnostics."""
    assert actual.keys() == expected.keys()
    headline = {"spectral/hessian/lambda_2", "spectral/ntk/lambda_max", "spectral/weights/max_sigma_max"}
    assert headline <= set(expected)
    for key, value in expected.items():
        assert math.isfinite(actual[key]), key
        if not key.endswith(DIAGNOSTIC_SUFFIXES):
            assert actual[key] == pytest.approx(value, rel=rel, abs=abs), key
