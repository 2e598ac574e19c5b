"""A two-process CPU DDP fit in which only rank 1's measurements fire; run by test_spectral_early_stopping.py.

``strategy="ddp"`` relaunches ``sys.argv`` for the other rank, which a pytest process cannot survive, so the
test runs this script as ``python ddp_early_stopping_script.py <out_dir>`` (with ``MASTER_ADDR`` and a free
``MASTER_PORT``). Each rank writes ``rank<r>.json`` with the step it stopped at and the stopper's message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks.base import SpectralMonitor
from lightning_spectral.callbacks.spectral_early_stopping import SpectralEarlyStopping

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for spectral_testing (run as a script)
from spectral_testing.two_process import two_process_trainer  # noqa: E402

FIRST_FIRING_STEP = 3
PATIENCE = 2
THRESHOLD = 5.0
FIRING_VALUE = 10.0


class RankDependentMonitor(SpectralMonitor):
    """``value`` is 10 on rank 1 from step 3 on and 0 everywhere else: only rank 1 ever fires."""

    monitor_name = "fake"
    needs_batch = False

    def measure(self, trainer, pl_module, batches):
        fires = trainer.global_rank == 1 and trainer.global_step >= FIRST_FIRING_STEP
        return {"value": FIRING_VALUE if fires else 0.0}


class LinearRegressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.net(x) - y) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(64, 4, generator=generator)
        return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)  # 8 steps per rank


def main(out_dir: str) -> None:
    stopper = SpectralEarlyStopping("spectral/fake/value", threshold=THRESHOLD, patience=PATIENCE)
    trainer = two_process_trainer(out_dir, [RankDependentMonitor(every_n_steps=1), stopper], max_epochs=3)
    trainer.fit(LinearRegressor())
    result = {
        "global_step": trainer.global_step,
        "stopped_step": stopper.stopped_step,
        "reason": stopper.reason,
    }
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
    if torch.distributed.is_initialized():  # tear gloo down before the interpreter does (an abort under load)
        torch.distributed.destroy_process_group()
