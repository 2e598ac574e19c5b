"""The report tests' runs: a short real fit of a plain-SGD ``TinyClassifier`` with every monitor, logged to
TensorBoard (two learning rates, built once per session by ``tests/report/conftest.py``), and the figures a
report of them holds."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor
from spectral_testing.models import TinyClassifier, trainer_kwargs

LEARNING_RATES = {"lr_small": 0.05, "lr_large": 0.5}
LAST_STEP = 16  # 64 examples, batch 16, 4 epochs
LAYERS = ("net.0.weight", "net.4.weight")


class PlainSGDClassifier(TinyClassifier):
    """``TinyClassifier`` with plain SGD: an optimizer ``sgd_stability`` is defined for."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def fit(root: Path, name: str, callbacks: list | None = None, lr: float = 0.1) -> Path:
    """A real short fit logging to ``root/name/version_0``; returns that folder."""
    pl.seed_everything(0)
    logger = TensorBoardLogger(str(root), name=name)
    trainer = pl.Trainer(**trainer_kwargs(root, logger=logger, callbacks=callbacks or [], max_epochs=4))
    trainer.fit(PlainSGDClassifier(lr=lr))
    return Path(logger.log_dir)


def monitors() -> list[pl.Callback]:
    return [
        WeightSpectrumMonitor(every_n_steps=4, strict=True),
        HessianEigenMonitor(k=2, every_n_steps=8, compute_density=True, density_num_steps=10, strict=True),
        NTKTraceMonitor(every_n_steps=4, compute_lambda_max=True, compute_alignment=True, strict=True),
    ]


def expected_images() -> list[str]:
    figures = ["hessian_eigenvalues", "batch_sharpness", "ntk_trace", "ntk_alignment", "sgd_stability"]
    figures += [
        "weights_sigma_max",
        "weights_stable_rank",
        "weights_effective_rank",
        "weights_singular_values",
    ]
    figures += [f"weights_heatmap_{layer}" for layer in LAYERS]
    figures += [f"hessian_density_run{i}_step{LAST_STEP}" for i in (1, 2)]
    return [f"{name}.png" for name in figures]
