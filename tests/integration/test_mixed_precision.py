"""Monitors under mixed and true precisions on CPU: the measurement runs in float32 (or float64), outside
autocast, on the batch a training step would see.

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
from spectral_testing.invariance import fits_without_and_with
from spectral_testing.models import TinyClassifier
from spectral_testing.step_zero import assert_same_metrics, step_zero_metrics

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
class RoundedClassifier(TinyClassifier):
    """``TinyClassifier`` in float32 with its weights and inputs rounded to ``dtype``: the model a
    ``precision="16-true"`` / ``"bf16-true"`` run stores and sees, for measuring in float32."""

    dtype = torch.bfloat16

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            for tensor in [*self.parameters(), *self.buffers()]:
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(self.dtype).float())

    def train_dataloader(self):
        loader = super().train_dataloader()
        rounded = [(x.to(self.dtype).float(), y) for x, y in loader.dataset]
        return torch.utils.data.DataLoader(rounded, batch_size=self.hparams.batch_size, shuffle=True)


class Float16RoundedClassifier(RoundedClassifier):
    dtype = torch.float16


def test_64_true_measures_the_batch_converted_like_a_training_batch(tmp_path):
    """Lightning casts the model to float64 and every training batch with ``precision_plugin.convert_input``;
    the measurement batch takes the same way (a float32 batch into the float64 model raised a dtype mismatch),
    and the float64 measurement agrees with the float32 one to float32 rounding."""
    _, model, double = step_zero_metrics(tmp_path / "64", TinyClassifier, precision="64-true")
    assert next(model.parameters()).dtype == torch.float64
    assert_same_metrics(double, precision_metrics(tmp_path / "fp32", "32-true"), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize(
    "precision, rounded", [("16-true", Float16RoundedClassifier), ("bf16-true", RoundedClassifier)]
)
def test_half_true_precisions_are_measured_in_float32(tmp_path, precision, rounded):
    """The model and batches are stored in float16 / bfloat16; the Hessian and NTK are computed on float32
    copies, so they equal a float32 measurement of the same rounded model and inputs to float32 rounding (in
    the half dtype's own arithmetic they miss it by far more than 1e-5); the model stays in its dtype."""
    _, model, half = step_zero_metrics(tmp_path / precision, TinyClassifier, precision=precision)
    assert next(model.parameters()).dtype == rounded.dtype
    _, _, reference = step_zero_metrics(tmp_path / "rounded", rounded)
    assert_same_metrics(half, reference, rel=1e-5, abs=1e-7)


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


def test_half_precision_training_is_bit_identical_with_every_monitor(tmp_path):
    """The float32 copies live only inside a measurement: the bfloat16 parameters, buffers and the loss curve
    of a bf16-true fit are those of the same fit without monitors, and stay bfloat16."""
    monitors = [
        HessianEigenMonitor(every_n_steps=2, compute_trace=True, strict=True),
        NTKTraceMonitor(every_n_steps=2, compute_lambda_max=True, strict=True),
        WeightSpectrumMonitor(every_n_steps=2, strict=True),
    ]
    (baseline_losses, baseline), (losses, monitored) = fits_without_and_with(
        tmp_path, TinyClassifier, monitors, precision="bf16-true"
    )
    assert all(m.num_measurements == 5 for m in monitors)
    assert losses.dtype == torch.bfloat16 and torch.equal(losses, baseline_losses)
    for (name, a), b in zip(baseline.state_dict().items(), monitored.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
