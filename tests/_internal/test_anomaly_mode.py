"""Every vectorised (``torch.func`` / batched-gradient) measurement runs under anomaly detection, same numbers."""

from __future__ import annotations

import warnings

import pytest
import torch
from spectral_testing.references import explicit_jacobian
from torch import nn

from lightning_spectral._internal.anomaly_mode import anomaly_detection_paused
from lightning_spectral.functional import (
    hessian_eigenvalues,
    ntk_alignment,
    ntk_lambda_max,
    ntk_matrix,
    ntk_trace,
)


class ScaledMLP(nn.Module):
    """Linear layers (layer-wise path) and a 0-dim parameter (vmap over examples of per-example gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 6), nn.Linear(6, 3)
        self.scale = nn.Parameter(torch.tensor(1.3))

    def forward(self, x):
        return self.second(torch.tanh(self.first(x)) * self.scale)


class GRUModel(nn.Module):
    """vmap cannot batch a GRU: the per-example loops (batched-gradient backward passes) run instead."""

    def __init__(self) -> None:
        super().__init__()
        self.recurrent, self.out = nn.GRU(2, 3, batch_first=True), nn.Linear(3, 2)

    def forward(self, x):
        return self.out(self.recurrent(x)[0][:, -1])


def measurements(model, inputs, targets):
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    loss = lambda m, b: (m(b[0]) - b[1]).pow(2).mean()  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the GRU's per-example-loop note
        return {
            "exact": ntk_trace(model, inputs, method="exact").trace,
            "hutchinson": ntk_trace(model, inputs, method="hutchinson", generator=generator()).trace,
            "hutchpp": ntk_trace(model, inputs, method="hutchpp", generator=generator()).trace,
            "matrix": ntk_matrix(model, inputs),
            "matrix_chunked": ntk_matrix(model, inputs, chunk_size=2),
            "lambda_max": ntk_lambda_max(model, inputs, generator=generator()).eigenvalues,
            "alignment": ntk_alignment(model, inputs, targets),
            **{
                f"hessian_{method}": hessian_eigenvalues(
                    model, loss, (inputs, targets), k=2, hvp_method=method, generator=generator()
                ).eigenvalues
                for method in ("forward_over_reverse", "double_backward")
            },
        }


@pytest.mark.parametrize("make_model, shape", [(ScaledMLP, (5, 4)), (GRUModel, (5, 3, 2))])
def test_measurements_under_detect_anomaly_equal_those_without(make_model, shape):
    torch.manual_seed(0)
    model = make_model().double()
    inputs = torch.randn(*shape, dtype=torch.float64)
    targets = torch.randn(shape[0], model(inputs).shape[1], dtype=torch.float64)
    expected = measurements(model, inputs, targets)
    jacobian = explicit_jacobian(model, inputs)
    assert expected["exact"] == pytest.approx(float(jacobian.pow(2).sum()), rel=1e-10)
    with torch.autograd.set_detect_anomaly(True):  # what Trainer(detect_anomaly=True) turns on
        got = measurements(model, inputs, targets)
        assert torch.is_anomaly_enabled() and torch.is_anomaly_check_nan_enabled()
    with torch.autograd.set_detect_anomaly(True, check_nan=False):
        with anomaly_detection_paused():
            assert not torch.is_anomaly_enabled()
        assert torch.is_anomaly_enabled() and not torch.is_anomaly_check_nan_enabled()
    assert not torch.is_anomaly_enabled()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_the_pause_restores_the_callers_mode():
    with anomaly_detection_paused():
        assert not torch.is_anomaly_enabled()
    with torch.autograd.set_detect_anomaly(True):
        with anomaly_detection_paused():
            assert not torch.is_anomaly_enabled()
        assert torch.is_anomaly_enabled() and torch.is_anomaly_check_nan_enabled()
    with torch.autograd.set_detect_anomaly(True, check_nan=False):
        with anomaly_detection_paused():
            assert not torch.is_anomaly_enabled()
        assert torch.is_anomaly_enabled() and not torch.is_anomaly_check_nan_enabled()
