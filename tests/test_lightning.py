"""The monitors under ``lightning.pytorch`` (the unified package) as well as ``pytorch_lightning``."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import pytorch_lightning as pl
import torch
from spectral_testing.log_readers import read_tensorboard_scalars
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral import callbacks
from lightning_spectral import lightning as unified


class UnifiedRegressor(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self(x) - y) ** 2).mean()
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 3, generator=g)
        return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)


@pytest.mark.parametrize(
    "name", ["WeightSpectrumMonitor", "HessianEigenMonitor", "NTKTraceMonitor", "SpectralEarlyStopping"]
)
def test_classes_derive_from_both_callback_bases(name):
    cls = getattr(unified, name)
    assert issubclass(cls, L.Callback) and issubclass(cls, pl.Callback)
    assert issubclass(cls, getattr(callbacks, name)) and cls.__module__ == "lightning_spectral.lightning"


def test_unified_trainer_runs_every_monitor_and_logs(tmp_path):
    monitors = [
        unified.WeightSpectrumMonitor(every_n_steps=2, strict=True),
        unified.HessianEigenMonitor(every_n_steps=2, strict=True),
        unified.NTKTraceMonitor(every_n_steps=2, strict=True),
    ]
    logger = L.loggers.TensorBoardLogger(str(tmp_path), name="tb")
    trainer = L.Trainer(
        callbacks=monitors,
        max_epochs=1,
        logger=logger,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=str(tmp_path),
    )
    trainer.fit(UnifiedRegressor())
    scalars = read_tensorboard_scalars(logger.log_dir)
    for key in ("spectral/weights/net.0.weight/sigma_max", "spectral/hessian/lambda_1", "spectral/ntk/trace"):
        assert [s for s, _ in scalars[key]] == [0, 2, 4], key
    assert "spectral/hessian/eos_ratio" in trainer.callback_metrics
