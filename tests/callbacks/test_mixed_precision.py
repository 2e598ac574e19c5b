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


# ---------------------------------------------------------------------------------------------- true precisions
@pytest.mark.parametrize(
    "precision, rel",
    [("64-true", 1e-5), ("16-true", 5e-3), ("bf16-true", 6e-2)],
    ids=["64-true", "16-true", "bf16-true"],
)
def test_true_precisions_measure_the_batch_converted_like_a_training_batch(tmp_path, precision, rel):
    """Lightning casts the model to the precision's dtype and every training batch with
    ``precision_plugin.convert_input``; the measurement batch takes the same way (a float32 batch into a
    float64 / float16 / bfloat16 model raised a dtype mismatch). The measurement then runs in the parameters'
    dtype: float64 agrees with the float32 run to float32 rounding; float16 (11-bit mantissa) and bfloat16
    (8 bits) agree to their own precision (the model itself is rounded to it, too)."""
    _, model, true = step_zero_metrics(tmp_path / precision, TinyClassifier, precision=precision)
    full = precision_metrics(tmp_path / "fp32", "32-true")
    assert next(model.parameters()).dtype == {"64-true": torch.float64, "16-true": torch.float16}.get(
        precision, torch.bfloat16
    )
    assert_same_metrics(true, full, rel=rel, abs=1e-7)


class TransferHookClassifier(TinyClassifier):
    """Its loader yields the inputs scaled by 8; ``on_before_batch_transfer`` undoes that, as user code that
    decodes, augments or tokenises in the hook does: every batch ``training_step`` sees is unscaled."""

    def train_dataloader(self):
        loader = super().train_dataloader()
        scaled = [(x * 8.0, y) for x, y in loader.dataset]
        return torch.utils.data.DataLoader(scaled, batch_size=self.hparams.batch_size, shuffle=True)

    def on_before_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        return x / 8.0, y


def test_the_measurement_batch_goes_through_the_batch_transfer_hooks(tmp_path):
    hooked = step_zero_metrics(tmp_path / "hooked", TransferHookClassifier)[2]
    plain = step_zero_metrics(tmp_path / "plain", TinyClassifier)[2]
    assert_same_metrics(hooked, plain, rel=1e-5, abs=1e-7)
