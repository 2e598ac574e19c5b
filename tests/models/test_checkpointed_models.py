"""Activation checkpointing (``torch.utils.checkpoint``, non-reentrant) under the NTK monitor: torch.func's
reverse-mode transforms refuse its saved-tensor hooks, so the NTK products fall back to plain autograd and the
per-example Jacobians to one example at a time. A fit with every NTK metric on equals the same fit without
checkpointing. (The Hessian through checkpointing: tests/functional/hessian/test_operator.py.)"""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch
from spectral_testing.models import CheckpointedMLP, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks import NTKTraceMonitor


class CheckpointedClassifier(pl.LightningModule):
    def __init__(self, checkpointed: bool) -> None:
        super().__init__()
        self.net = CheckpointedMLP(checkpointed)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g))
        return DataLoader(data, batch_size=16)


class LastMetrics(pl.Callback):
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def on_train_batch_end(self, trainer, *args) -> None:
        self.metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("spectral/ntk/")
        }


def test_every_ntk_metric_of_a_checkpointed_model_equals_the_uncheckpointed_one(tmp_path):
    results = {}
    for checkpointed in (True, False):
        pl.seed_everything(0)
        last = LastMetrics()
        monitor = NTKTraceMonitor(
            every_n_steps=2, strict=True, compute_lambda_max=True, compute_alignment=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the per-example loop's note
            pl.Trainer(
                callbacks=[monitor, last], **trainer_kwargs(tmp_path / str(checkpointed), max_epochs=1)
            ).fit(CheckpointedClassifier(checkpointed))
        results[checkpointed] = last.metrics
    assert {"spectral/ntk/lambda_max", "spectral/ntk/alignment", "spectral/ntk/trace"} <= set(results[True])
    assert results[True].keys() == results[False].keys()
    for key, value in results[False].items():
        assert results[True][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
