"""Every monitor with ``strict=True`` under the Trainer modes users switch on: each runs and logs."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from spectral_testing.models import trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor


class TinyMLP(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        generator = torch.Generator().manual_seed(0)
        self.data = TensorDataset(
            torch.randn(32, 6, generator=generator), torch.randn(32, 3, generator=generator)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=8)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=16)


MODES = {
    "fast_dev_run": {"fast_dev_run": 2},
    "overfit_batches": {"overfit_batches": 2, "max_epochs": 1},
    "limit_train_batches": {"limit_train_batches": 2, "max_epochs": 2},
    "val_check_interval": {"val_check_interval": 2, "max_epochs": 1},
    "max_time": {"max_time": {"minutes": 5}, "max_epochs": 1},
    "accumulate_grad_batches": {"accumulate_grad_batches": 2, "max_epochs": 1},
    "inference_mode_false": {"inference_mode": False, "max_epochs": 1},
    "detect_anomaly": {"detect_anomaly": True, "max_epochs": 1},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_monitor_runs_and_logs_under_the_trainer_mode(tmp_path, mode):
    pl.seed_everything(0)
    monitors = [
        HessianEigenMonitor(k=2, compute_trace=True, every_n_steps=1, strict=True),
        NTKTraceMonitor(every_n_steps=1, strict=True),
        WeightSpectrumMonitor(every_n_steps=1, strict=True),
    ]
    trainer = pl.Trainer(callbacks=monitors, **trainer_kwargs(tmp_path, **MODES[mode]))
    trainer.fit(TinyMLP())
    assert trainer.global_step >= 1
    for prefix in ("spectral/hessian/lambda_1", "spectral/ntk/trace", "spectral/weights/"):
        keys = [key for key in trainer.callback_metrics if key.startswith(prefix)]
        assert keys, f"{mode}: nothing logged under {prefix}"
        assert all(torch.isfinite(trainer.callback_metrics[key]) for key in keys), (mode, keys)
