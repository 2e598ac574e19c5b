"""Monitors under mixed precision on CPU: the measurement runs in float32, outside autocast.

At step 0 the model of a mixed-precision run and of a float32 run are the same, so every metric must agree
to float32 rounding (rel. 1e-5); a measurement that ran under autocast would be off by ~1e-2 in bf16 (8 bits
of mantissa) or ~1e-3 in float16 (11 bits).

``precision="bf16-mixed"`` is Lightning's own CPU flag. ``precision="16-mixed"`` on CPU is silently turned
into bf16-mixed by Lightning, so the float16 run passes the precision plugin itself:
``MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))`` -- float16 autocast and a gradient
scaler, as a GPU 16-mixed run has (the test checks that training steps really ran in float16).
"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from spectral_testing.models import TinyClassifier, trainer_kwargs

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor


class DtypeRecordingClassifier(TinyClassifier):
    """Records the dtype of the logits of every forward pass during fit (float16 / bfloat16 in the training
    steps under autocast; the monitors' own passes are float32, which the metric comparison checks)."""

    def __init__(self) -> None:
        super().__init__()
        self.step_dtypes: list[torch.dtype] = []

    def forward(self, x):
        logits = super().forward(x)
        if self.trainer.training and not self.trainer.sanity_checking:
            self.step_dtypes.append(logits.dtype)
        return logits


def step_zero_metrics(tmp_path, precision: str) -> dict[str, float]:
    monitors = [
        HessianEigenMonitor(k=2, every_n_steps=1000, tol=1e-4, strict=True),
        NTKTraceMonitor(every_n_steps=1000, method="exact", compute_lambda_max=True, strict=True),
        WeightSpectrumMonitor(every_n_steps=1000, strict=True),
    ]
    pl.seed_everything(3)
    if precision == "16-mixed":
        plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
        kwargs = trainer_kwargs(tmp_path, max_steps=1, plugins=[plugin])
    else:
        kwargs = trainer_kwargs(tmp_path, max_steps=1, precision=precision)
    trainer = pl.Trainer(callbacks=monitors, **kwargs)
    model = DtypeRecordingClassifier()
    trainer.fit(model)
    expected = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16, "32-true": torch.float32}[precision]
    assert expected in set(model.step_dtypes)  # the training step did run in the mixed dtype
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("spectral/")}


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_measures_in_float32(tmp_path, precision):
    mixed = step_zero_metrics(tmp_path / precision, precision)
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
