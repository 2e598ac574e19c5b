"""``NewMeasurements``: each measurement is reported once, whatever stays in ``callback_metrics``."""

from __future__ import annotations

import torch

from lightning_spectral.callbacks._internal.new_measurements import NewMeasurements

OWNED = ("spectral/hessian/",)


def test_monitor_keys_are_new_per_written_tensor_other_keys_per_changed_value():
    seen = NewMeasurements("*sharp*", owned_prefixes=OWNED)
    assert not seen.matched_any
    metrics = {"spectral/hessian/batch_sharpness": torch.tensor(3.0), "my_sharpness": torch.tensor(1.0)}
    assert seen.collect(metrics, step=0) == [
        ("my_sharpness", 1.0, None),
        ("spectral/hessian/batch_sharpness", 3.0, None),
    ]
    assert seen.matched_any
    # self.log re-wraps an unchanged value: not new; a monitor's fresh tensor with an equal value: new.
    metrics = {"spectral/hessian/batch_sharpness": torch.tensor(3.0), "my_sharpness": torch.tensor(1.0)}
    assert seen.collect(metrics, step=1) == [("spectral/hessian/batch_sharpness", 3.0, 3.0)]
    metrics["my_sharpness"] = torch.tensor(1.5)
    assert seen.collect(metrics, step=2) == [("my_sharpness", 1.5, 1.0)]
    assert seen.collect(metrics, step=3) == []  # nothing written since
    assert seen.last == {"my_sharpness": (2, 1.5), "spectral/hessian/batch_sharpness": (1, 3.0)}


def test_unmatched_keys_are_ignored():
    seen = NewMeasurements("spectral/hessian/lambda_1", owned_prefixes=OWNED)
    assert seen.collect({"spectral/hessian/lambda_10": torch.tensor(1.0)}, step=0) == []
    assert not seen.matched_any


def test_resume_skips_only_the_measurement_looked_at_last():
    before = NewMeasurements("spectral/hessian/lambda_1", owned_prefixes=OWNED)
    before.collect({"spectral/hessian/lambda_1": torch.tensor(2.0)}, step=8)
    state = before.state_dict()
    assert state == {"spectral/hessian/lambda_1": [8, 2.0]}

    resumed = NewMeasurements("spectral/hessian/lambda_1", owned_prefixes=OWNED)
    resumed.load_state_dict(state)
    # The restored callback_metrics still hold the step-8 value: already judged before the interruption.
    assert resumed.collect({"spectral/hessian/lambda_1": torch.tensor(2.0)}, step=8) == []
    # An equal value measured at a later step is a new measurement.
    assert resumed.collect({"spectral/hessian/lambda_1": torch.tensor(2.0)}, step=12) == [
        ("spectral/hessian/lambda_1", 2.0, 2.0)
    ]
