"""SpectralEarlyStopping.stochastic_edge_of_stability on a real NTK monitor: it stops an SGD run whose noise-kernel
norm 𝒦 (the logged trace-based lower bound) is past 1, and leaves one well below it alone."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from spectral_testing.early_stopping import fit
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks import NTKTraceMonitor, SpectralEarlyStopping
from lightning_spectral.functional import ntk_trace, sgd_stability

NUM_EXAMPLES, MEASURED = 64, 16


class SmallBatchRegressor(pl.LightningModule):
    """tanh MLP with ``nn.MSELoss`` (K = 2) on generated data; plain SGD at batch size ``batch_size``."""

    def __init__(self, lr: float, batch_size: int) -> None:
        super().__init__()
        self.lr, self.batch_size = lr, batch_size
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 2))

    @staticmethod
    def data():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(NUM_EXAMPLES, 5, generator=generator)
        return x, torch.stack([x[:, 0] * x[:, 1], x[:, 2].sin()], dim=1)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return DataLoader(TensorDataset(*self.data()), batch_size=self.batch_size, shuffle=False)


def model_at(kappa: float, batch_size: int) -> SmallBatchRegressor:
    """A model whose SGD step puts the trace-based 𝒦 at initialisation, on the monitor's batch, at ``kappa``."""
    model = SmallBatchRegressor(lr=1.0, batch_size=batch_size)
    x = model.data()[0][:MEASURED]
    trace = ntk_trace(model.eval(), x, method="exact").trace
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
    model.lr = kappa / at_unit_lr  # 𝒦_lower is linear in the step size
    return model


def monitor() -> NTKTraceMonitor:
    x, y = SmallBatchRegressor.data()
    return NTKTraceMonitor(every_n_steps=1, method="exact", batch=(x[:MEASURED], y[:MEASURED]), strict=True)


def test_stops_a_run_past_the_stochastic_edge(tmp_path):
    stopper = SpectralEarlyStopping.stochastic_edge_of_stability(patience=2)
    assert (stopper.monitor, stopper.threshold, stopper.mode, stopper.relative_to) == (
        "spectral/ntk/sgd_stability",
        1.0,
        "above",
        None,
    )
    trainer = fit(tmp_path, [monitor(), stopper], model=model_at(3.0, batch_size=1), max_epochs=1)
    assert trainer.global_step == stopper.stopped_step == 1  # fired at steps 0 and 1
    assert "[stochastic_edge_of_stability]" in stopper.reason
    assert "`spectral/ntk/sgd_stability` = " in stopper.reason and "> 1" in stopper.reason  # finite, past 1


def test_leaves_a_run_well_below_the_edge_alone(tmp_path):
    stopper = SpectralEarlyStopping.stochastic_edge_of_stability(patience=1)
    trainer = fit(tmp_path, [monitor(), stopper], model=model_at(0.2, batch_size=16), max_epochs=2)
    assert trainer.global_step == 8 and stopper.stopped_step is None and stopper.reason is None
    assert float(trainer.callback_metrics["spectral/ntk/sgd_stability"]) < 1.0
