"""``lightning-spectral demo``: a small classifier trained with every monitor on, logged to TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override


def teacher_dataset(
    num_examples: int = 2048, length: int = 32, num_classes: int = 4, seed: int = 0
) -> TensorDataset:
    """1-D signals of ``length`` samples labeled by a random frozen teacher network."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_examples, 1, length, generator=generator)
    teacher = nn.Sequential(
        nn.Conv1d(1, 8, 5), nn.Tanh(), nn.Flatten(), nn.Linear(8 * (length - 4), num_classes)
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for parameter in teacher.parameters():
            nn.init.normal_(parameter, std=0.5)
        with torch.no_grad():
            y = teacher(x).argmax(dim=1)
    return TensorDataset(x, y)


class DemoClassifier(pl.LightningModule):
    """Conv1d → ReLU → Linear → ReLU → Linear, MSE on one-hot labels, plain SGD.

    MSE and plain SGD are the setting in which the edge-of-stability indicators are derived (Cohen et al.
    2021 train classifiers with MSE on one-hot targets too), so every logged indicator applies as documented.
    """

    def __init__(
        self, length: int = 32, num_classes: int = 4, lr: float = 0.05, batch_size: int = 64
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv1d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * length, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` of signals ``(batch, 1, length)``."""
        return self.net(x)

    @override
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Mean squared error to the one-hot labels; logs ``train/loss`` and ``train/accuracy``."""
        x, y = batch
        logits = self(x)
        loss = nn.functional.mse_loss(
            logits, nn.functional.one_hot(y, self.hparams["num_classes"]).to(logits.dtype)
        )
        self.log("train/loss", loss)
        self.log("train/accuracy", (logits.argmax(dim=1) == y).float().mean())
        return loss

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD at ``lr``."""
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])

    @override
    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, ...]]:
        """The teacher dataset, shuffled, in batches of ``batch_size``."""
        data = teacher_dataset(length=self.hparams["length"], num_classes=self.hparams["num_classes"])
        return DataLoader(data, batch_size=self.hparams["batch_size"], shuffle=True)


def demo_monitors() -> list[pl.Callback]:
    """Every monitor of the package, on schedules that suit a few hundred steps."""
    from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor

    return [
        WeightSpectrumMonitor(every_n_steps=25, log_spacing=True),
        HessianEigenMonitor(
            k=3, every_n_steps=50, log_spacing=True, compute_trace=True, compute_density=True
        ),
        NTKTraceMonitor(every_n_steps=50, log_spacing=True, compute_alignment=True, compute_lambda_max=True),
    ]


def run_demo(
    log_dir: str | Path = "runs", max_steps: int = 300, seed: int = 0, lr: float = 0.05, name: str = "demo"
) -> tuple[str, dict[str, float]]:
    """Train :class:`DemoClassifier` (SGD at ``lr``) with every monitor, logging to ``log_dir/name``; return the
    run directory and the last values.
    """
    from pytorch_lightning.loggers import TensorBoardLogger

    pl.seed_everything(seed, workers=True)
    logger = TensorBoardLogger(str(log_dir), name=name)
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="auto",
        devices=1,
        logger=logger,
        callbacks=demo_monitors(),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(DemoClassifier(lr=lr))
    last = {key: float(value) for key, value in trainer.callback_metrics.items()}
    return logger.log_dir, last
