"""``sharded_products`` (how a sharded FSDP2 model is measured): validated arguments, the NTK monitor's precise
refusals of what the sharded path cannot measure, and the "auto" rule (gather when the parameters fit) on its
exact boundary. The sharded measurements themselves run in the two-process FSDP2 tests
(``test_fsdp2_monitors.py``)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from spectral_testing.models import TinyClassifier, trainer_kwargs
from torch import nn

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor
from lightning_spectral.callbacks._internal.collectives import MeasurementCollectives
from lightning_spectral.callbacks._internal.gathered_parameters import (
    GATHER_MEMORY_FRACTION,
    available_memory,
    fits_gathered,
)


def test_sharded_products_is_validated_naming_the_allowed_values():
    with pytest.raises(ValueError, match="`sharded_products`.*'auto', 'gather', 'finite_difference'"):
        HessianEigenMonitor(sharded_products="sharded")
    with pytest.raises(ValueError, match="`sharded_products`.*'auto', 'gather', 'sharded'"):
        NTKTraceMonitor(sharded_products="finite_difference")
    assert HessianEigenMonitor(sharded_products="finite_difference").sharded_products == "finite_difference"
    assert NTKTraceMonitor(sharded_products="sharded", method="output_probes").method == "output_probes"


@pytest.mark.parametrize("method", ["exact", "hutchinson", "hutchpp"])
def test_an_ntk_method_that_needs_whole_parameters_names_the_one_that_runs_sharded(method):
    with pytest.raises(
        ValueError, match=f"`method`='{method}'.*method='output_probes'.*sharded_products='gather'"
    ):
        NTKTraceMonitor(sharded_products="sharded", method=method)


@pytest.mark.parametrize("option", ["compute_lambda_max", "compute_alignment", "compute_spectrum"])
def test_kernel_quantities_on_the_sharded_path_are_refused_naming_gather(option):
    with pytest.raises(ValueError, match=f"`{option}`.*sharded_products='gather'"):
        NTKTraceMonitor(sharded_products="sharded", **{option: True})


def test_auto_gathers_exactly_when_the_estimate_fits_in_half_the_available_memory(tmp_path):
    """Linear(10, 10) in float32: 440 bytes whole; with 4 whole vectors of the 110 measured parameters the
    estimate is 440 + 4·440 = 2200 bytes, which fits when half the available memory is at least that."""
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path)
    collectives = MeasurementCollectives(trainer)
    model = nn.Linear(10, 10)
    needed = 2200
    assert GATHER_MEMORY_FRACTION == 0.5
    assert fits_gathered(model, 110, 4, collectives, available=lambda device: 2 * needed)
    assert not fits_gathered(model, 110, 4, collectives, available=lambda device: 2 * needed - 1)
    assert fits_gathered(model.double(), 110, 4, collectives, available=lambda device: 4 * needed)
    assert not fits_gathered(model.double(), 110, 4, collectives, available=lambda device: 4 * needed - 1)
    assert available_memory(torch.device("cpu")) > 0


def test_sharded_products_has_no_effect_on_a_model_that_is_not_sharded(tmp_path):
    """One process, plain parameters: the sharded path never runs (the exact products, the per-example NTK),
    whatever ``sharded_products`` says; the NTK's ``output_probes`` runs there too, through the module's backward."""

    def fit(*monitors):
        trainer = pl.Trainer(**trainer_kwargs(tmp_path, max_steps=1, callbacks=list(monitors)))
        torch.manual_seed(0)
        trainer.fit(TinyClassifier(shuffle=False))
        return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("spectral/")}

    settings = dict(every_n_steps=1, strict=True)
    default = fit(HessianEigenMonitor(**settings), NTKTraceMonitor(**settings))
    chosen = fit(
        HessianEigenMonitor(sharded_products="finite_difference", **settings),
        NTKTraceMonitor(sharded_products="sharded", **settings),  # "auto" then resolves as on any plain model
        NTKTraceMonitor(method="output_probes", num_probes=2, name="ntk_probes", **settings),
    )
    for key in ("spectral/hessian/lambda_1", "spectral/hessian/batch_sharpness", "spectral/ntk/trace"):
        assert chosen[key] == default[key], key
    assert "spectral/ntk/trace_std_error" not in chosen  # the exact per-example trace ran, not output probes
    assert chosen["spectral/ntk_probes/trace_std_error"] > 0


def test_the_finite_difference_path_warns_once_on_piecewise_linear_layers(tmp_path):
    """ReLU kinks make central differences of the gradient unreliable (RESULTS.md, fd-hessian-accuracy): the
    sharded path's operator is built with a warning naming the layers, once; a smooth model builds it silently."""
    import warnings

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path)
    batches = [(torch.randn(4, 3), torch.randn(4, 1))]

    def loss_fn(model, batch):
        return ((model(batch[0]) - batch[1]) ** 2).mean()

    monitor = HessianEigenMonitor(sharded_products="finite_difference")
    monitor._collectives = MeasurementCollectives(trainer)  # as inside a measurement
    relu = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.warns(UserWarning, match=r"model with ReLU: finite differences .* sharded_products='gather'"):
        monitor._sharded_operator(relu, loss_fn, batches)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor._sharded_operator(relu, loss_fn, batches)  # once
        smooth = HessianEigenMonitor(sharded_products="finite_difference")
        smooth._collectives = monitor._collectives
        smooth._sharded_operator(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), loss_fn, batches)
