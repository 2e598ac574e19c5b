"""SpectralEarlyStopping.stochastic_edge_of_stability on a real NTK monitor: it stops an SGD run whose noise-kernel
norm 𝒦 (the logged trace-based lower bound) is past 1, and leaves one well below it alone."""

from __future__ import annotations

import torch
from spectral_testing.early_stopping import fit
from test_ntk_trace_monitor import Regressor

from lightning_spectral.callbacks import NTKTraceMonitor, SpectralEarlyStopping
from lightning_spectral.functional import ntk_trace, sgd_stability

NUM_EXAMPLES, MEASURED = 64, 16


def model_at(kappa: float, batch_size: int) -> tuple[Regressor, NTKTraceMonitor]:
    """``Regressor`` (``nn.MSELoss``, K = 2, plain SGD) with the step that puts the trace-based 𝒦 at
    initialisation, on the monitor's fixed batch of 16 examples, at ``kappa``; and that monitor."""
    torch.manual_seed(0)
    model = Regressor(lr=1.0, batch_size=batch_size, num_examples=NUM_EXAMPLES)
    x, y = model.train_dataloader().dataset.tensors
    trace = ntk_trace(model.eval(), x[:MEASURED], method="exact").trace
    model.train()
    at_unit_lr = sgd_stability(
        lr=1.0,
        batch_size=batch_size,
        ntk_num_examples=MEASURED,
        num_outputs=2,
        ntk_trace=trace,
        dataset_size=NUM_EXAMPLES,
        loss_scale=1.0,  # nn.MSELoss with K = 2: 2/K
    ).noise_kernel_norm_lower
    model.hparams.lr = kappa / at_unit_lr  # 𝒦_lower is linear in the step size
    monitor = NTKTraceMonitor(
        every_n_steps=1, method="exact", batch=(x[:MEASURED], y[:MEASURED]), strict=True
    )
    return model, monitor


def test_stops_a_run_past_the_stochastic_edge(tmp_path):
    stopper = SpectralEarlyStopping.stochastic_edge_of_stability(patience=2)
    model, monitor = model_at(3.0, batch_size=1)
    trainer = fit(tmp_path, [monitor, stopper], model=model, max_epochs=1)
    assert trainer.global_step == stopper.stopped_step == 1  # fired at steps 0 and 1
    assert "[stochastic_edge_of_stability]" in stopper.reason
    assert "`spectral/ntk/sgd_stability` = " in stopper.reason and "> 1" in stopper.reason  # finite, past 1


def test_leaves_a_run_well_below_the_edge_alone(tmp_path):
    stopper = SpectralEarlyStopping.stochastic_edge_of_stability(patience=1)
    model, monitor = model_at(0.05, batch_size=16)
    trainer = fit(tmp_path, [monitor, stopper], model=model, max_epochs=2)
    assert trainer.global_step == 8 and stopper.stopped_step is None and stopper.reason is None
    assert float(trainer.callback_metrics["spectral/ntk/sgd_stability"]) < 1.0
