"""Tiny LightningModules and data used across the tests."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def classification_data(num_examples: int = 64, num_features: int = 8, num_classes: int = 3, seed: int = 0):
    """A fixed synthetic classification set (generated, no downloads)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_examples, num_features, generator=generator)
    w = torch.randn(num_features, num_classes, generator=generator)
    y = (x @ w).argmax(dim=1)
    return TensorDataset(x, y)


class TinyClassifier(pl.LightningModule):
    """An MLP with BatchNorm and dropout (the two places a careless monitor changes training) and SGD."""

    def __init__(
        self,
        num_features: int = 8,
        hidden: int = 16,
        num_classes: int = 3,
        lr: float = 0.1,
        batch_size: int = 16,
        num_examples: int = 64,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)

    def train_dataloader(self):
        data = classification_data(
            self.hparams.num_examples, self.hparams.num_features, self.hparams.num_classes
        )
        return DataLoader(data, batch_size=self.hparams.batch_size, shuffle=self.hparams.shuffle)


class Regressor(pl.LightningModule):
    """A tanh MLP with MSE loss (nn.MSELoss convention), plain SGD; the S-EOS setting."""

    def __init__(
        self,
        lr=0.05,
        batch_size=8,
        momentum=0.0,
        num_examples=64,
        use_bn=False,
        nesterov=False,
        adam=False,
        weight_decay=0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        layers = [nn.Linear(5, 16)] + ([nn.BatchNorm1d(16)] if use_bn else []) + [nn.Tanh(), nn.Linear(16, 2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        if self.hparams.adam:
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return torch.optim.SGD(
            self.parameters(),
            lr=self.hparams.lr,
            momentum=self.hparams.momentum,
            nesterov=self.hparams.nesterov,
            weight_decay=self.hparams.weight_decay,
        )

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.hparams.num_examples, 5, generator=g)
        y = torch.stack([x[:, 0] * x[:, 1], x[:, 2].sin()], dim=1)
        return DataLoader(TensorDataset(x, y), batch_size=self.hparams.batch_size, shuffle=True)


class LossRecorder(pl.Callback):
    """Records every training loss as the training loop produced it (outside any monitor)."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach().clone())


def trainer_kwargs(tmp_path, **overrides):
    """Quiet, CPU-only, deterministic Trainer arguments."""
    kwargs = dict(
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        deterministic=True,
    )
    kwargs.update(overrides)
    return kwargs


class CheckpointedMLP(nn.Module):
    """4→6 (tanh)→3 with the hidden layer under non-reentrant activation checkpointing (saved-tensor hooks, which
    torch.func's reverse-mode transforms refuse); ``checkpointed=False`` computes the same function without."""

    def __init__(self, checkpointed: bool = True) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 6), nn.Linear(6, 3)
        self.checkpointed = checkpointed

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.first(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        h = checkpoint(self.hidden, x, use_reentrant=False) if self.checkpointed else self.hidden(x)
        return self.second(h)
