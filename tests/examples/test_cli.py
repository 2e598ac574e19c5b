"""Every monitor configured from YAML through LightningCLI (jsonargparse), for both Lightning distributions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from spectral_testing.log_readers import read_tensorboard_scalars

pytestmark = pytest.mark.slow  # each test runs LightningCLI fits in a fresh interpreter

REPO = Path(__file__).resolve().parents[2]
UNIFIED_SCRIPT = """
import torch
import lightning.pytorch as L
from lightning.pytorch.cli import LightningCLI
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        return ((self.layer(batch[0]) - batch[1]) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


LightningCLI(Model)
"""


def run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_yaml_config_enables_every_monitor(tmp_path):
    result = run(
        [
            str(REPO / "examples/cli/train.py"),
            "fit",
            "--config",
            str(REPO / "examples/cli/config.yaml"),
            "--trainer.max_steps=8",
            "--trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scalars = read_tensorboard_scalars(tmp_path / "runs" / "cli")
    assert [s for s, _ in scalars["spectral/hessian/lambda_2"]] == [0, 1, 2, 4, 8]
    assert [s for s, _ in scalars["spectral/ntk/lambda_max"]] == [0, 1, 2, 4, 8]
    assert [s for s, _ in scalars["spectral/weights/net.3.weight/sigma_5"]] == [0, 1, 2, 4, 8]
    assert not any(key.startswith("spectral/weights/net.5.") for key in scalars)  # `exclude` from the YAML
    assert "spectral/hessian/trace" in scalars


def test_help_text_comes_from_the_docstrings(tmp_path):
    result = run(
        [
            str(REPO / "examples/cli/train.py"),
            "fit",
            "--trainer.callbacks.help",
            "lightning_spectral.callbacks.HessianEigenMonitor",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--trainer.callbacks.tol" in result.stdout
    assert "Lanczos stops when every residual" in result.stdout


def test_unified_lightning_cli_needs_the_unified_classes(tmp_path):
    script = tmp_path / "unified_cli.py"
    script.write_text(UNIFIED_SCRIPT)
    common = [
        str(script),
        "fit",
        "--trainer.max_steps=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
    ]
    accepted = run(
        [
            *common,
            "--trainer.callbacks+=lightning_spectral.lightning.HessianEigenMonitor",
            "--trainer.callbacks.every_n_steps=1",
        ],
        cwd=tmp_path,
    )
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    rejected = run(
        [
            *common,
            "--trainer.callbacks+=lightning_spectral.callbacks.HessianEigenMonitor",
            "--trainer.callbacks.every_n_steps=1",
        ],
        cwd=tmp_path,
    )
    assert rejected.returncode != 0 and "trainer.callbacks" in rejected.stderr
