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

import pytest
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from spectral_testing.models import TinyClassifier
from spectral_testing.step_zero import assert_same_metrics, step_zero_metrics


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


def precision_metrics(tmp_path, precision: str) -> dict[str, float]:
    if precision == "16-mixed":
        plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
        overrides = {"plugins": [plugin]}
    else:
        overrides = {"precision": precision}
    _, model, metrics = step_zero_metrics(tmp_path, DtypeRecordingClassifier, **overrides)
    expected = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16, "32-true": torch.float32}[precision]
    assert expected in set(model.step_dtypes)  # the training step did run in the mixed dtype
    return metrics


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_measures_in_float32(tmp_path, precision):
    mixed = precision_metrics(tmp_path / precision, precision)
    full = precision_metrics(tmp_path / "fp32", "32-true")
    assert_same_metrics(mixed, full, rel=1e-5, abs=1e-7)
