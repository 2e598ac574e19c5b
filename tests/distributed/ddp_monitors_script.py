"""Two-process CPU DDP fits with every monitor; run by test_ddp_monitors.py as a script.

``strategy="ddp"`` relaunches ``sys.argv`` for rank 1, which a pytest process cannot survive, so the test runs
``python ddp_monitors_script.py <mode> <out_dir>`` (with ``MASTER_ADDR`` and a free ``MASTER_PORT``). Modes:

- ``measure`` (``strategy="ddp"``) / ``measure-spawn`` (``"ddp_spawn"``): the Hessian, NTK and weight
  monitors measure the initial model (step 0) on each rank's shard (the Hessian monitor on two batches). The launching process saves the initial
  weights; each rank saves its measurement batch and its ``callback_metrics``, so the test can compare them
  with a single-process measurement on the union of the shards. TensorBoard logs go to ``<out_dir>/tb``.
- ``fail-strict`` / ``fail-lenient``: the Hessian monitor's loss raises on rank 1 at its third evaluation, in
  the middle of Lanczos (forward-over-reverse products evaluate the loss once per product), with
  ``strict=True`` / ``False``. Each rank that finishes writes ``rank<r>.json``.
- ``adam``: ``Regressor`` under Adam; the Hessian monitor measures after the last step (the preconditioned
  sharpness needs Adam's moments). Each rank saves its measurement batch and ``callback_metrics``; rank 0 also
  the final weights and the optimizer's state dict.
- ``budget``: the Hessian monitor (all-reduced products) with ``max_overhead`` and a hand-driven clock per rank
  that disagrees: on rank 1 a measurement "takes" 100× longer. Rank 0's budget decides for both, so both
  measure the same steps (a rank that skipped alone would leave the other waiting in a collective). Each rank
  writes ``rank<r>.json`` with its measured steps and skip count.
- ``auto``: the Hessian monitor with no schedule (the automatic one) and clocks that disagree likewise; each rank
  writes its measured steps and the chosen period.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for spectral_testing (run as a script)
from spectral_testing.two_process import FailingLoss, two_process_trainer  # noqa: E402

NUM_EXAMPLES, BATCH_SIZE, MAX_STEPS = 32, 4, 3
HESSIAN_K, HESSIAN_TOL, HESSIAN_BATCHES = 2, 1e-6, 2


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


class Regressor(pl.LightningModule):
    """3 → 5 → 2 tanh MLP (32 parameters) on a fixed regression problem; plain SGD."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return loss_fn(self, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(NUM_EXAMPLES, 3, generator=generator)
        y = torch.stack([x[:, 0] * x[:, 1], x[:, 2].sin()], dim=1)
        return DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE)


class SaveOutcome(pl.Callback):
    """At train end, on every rank (also in ``ddp_spawn``'s workers): the measurement batches of a monitor (it
    drops them at fit end) and the ``spectral/`` callback metrics."""

    def __init__(self, monitor, out_dir: str) -> None:
        self.monitor, self.out_dir = monitor, out_dir

    def on_train_end(self, trainer, pl_module):
        rank = trainer.global_rank
        torch.save(self.monitor._batches, Path(self.out_dir, f"rank{rank}_batches.pt"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("spectral/")}
        Path(self.out_dir, f"rank{rank}.json").write_text(json.dumps(metrics))


def measure(out_dir: str, strategy: str) -> None:
    monitors = [
        HessianEigenMonitor(
            k=HESSIAN_K,
            tol=HESSIAN_TOL,
            max_matvecs=32,
            every_n_steps=100,
            num_batches=HESSIAN_BATCHES,
            compute_batch_sharpness=True,
            strict=True,
        ),
        NTKTraceMonitor(
            every_n_steps=100, method="exact", compute_lambda_max=True, compute_alignment=True, strict=True
        ),
        WeightSpectrumMonitor(every_n_steps=100, strict=True),
    ]
    model = Regressor()
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:  # the launching process (before ddp_spawn's workers)
        torch.save(model.state_dict(), Path(out_dir, "initial.pt"))
    callbacks = [*monitors, SaveOutcome(monitors[0], out_dir)]
    logger = TensorBoardLogger(out_dir, name="tb", version=0)
    two_process_trainer(out_dir, callbacks, strategy=strategy, logger=logger, max_steps=MAX_STEPS).fit(model)


class AdamRegressor(Regressor):
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


class SaveFinalState(pl.Callback):
    """On rank 0 at train end: the weights and the optimizer state the last measurement saw."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            torch.save(pl_module.state_dict(), Path(self.out_dir, "final.pt"))
            torch.save(trainer.optimizers[0].state_dict(), Path(self.out_dir, "optimizer.pt"))


def adam(out_dir: str) -> None:
    monitor = HessianEigenMonitor(
        k=1, tol=HESSIAN_TOL, every_n_steps=MAX_STEPS, at_train_start=False, strict=True
    )
    callbacks = [monitor, SaveOutcome(monitor, out_dir), SaveFinalState(out_dir)]
    two_process_trainer(out_dir, callbacks, max_steps=MAX_STEPS).fit(AdamRegressor())


def fail(out_dir: str, strict: bool) -> None:
    monitor = HessianEigenMonitor(
        k=1,
        every_n_steps=1,
        loss_fn=FailingLoss(loss_fn),
        hvp_method="forward_over_reverse",
        compute_batch_sharpness=False,
        strict=strict,
    )
    fit = two_process_trainer(out_dir, [monitor], max_steps=MAX_STEPS)
    fit.fit(Regressor())
    result = {"global_step": fit.global_step, "disabled": monitor._disabled}
    Path(out_dir, f"rank{fit.global_rank}.json").write_text(json.dumps(result))


class HandClock:
    """A clock that advances only when told: 1 s per training step, ``measurement_cost`` per measurement."""

    def __init__(self, measurement_cost: float) -> None:
        self.now, self.measurement_cost = 0.0, measurement_cost

    def __call__(self) -> float:
        return self.now


class AdvanceClock(pl.Callback):
    def __init__(self, clock: HandClock, monitor) -> None:
        self.clock, self.monitor, self.measured = clock, monitor, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.now += 1.0  # runs before the monitor's hook: the step's training time
        self.measured = self.monitor.num_measurements


class RecordMeasuredSteps(pl.Callback):
    """After the monitor's hook: notes the steps it measured and charges their cost to the clock."""

    def __init__(self, clock: HandClock, monitor) -> None:
        self.clock, self.monitor, self.count, self.steps = clock, monitor, 0, []

    def _after(self, trainer) -> None:
        if self.monitor.num_measurements > self.count:
            self.count = self.monitor.num_measurements
            self.steps.append(trainer.global_step)

    def on_train_start(self, trainer, pl_module):
        self._after(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._after(trainer)


class CostlyLoss:
    """``loss_fn`` that charges a measurement's cost to the clock on its first call of each measurement."""

    def __init__(self, clock: HandClock, monitor_ref: list) -> None:
        self.clock, self.monitor_ref, self.charged = clock, monitor_ref, -1

    def __call__(self, model, batch):
        monitor = self.monitor_ref[0]
        if self.charged != monitor.num_measurements:
            self.charged = monitor.num_measurements
            self.clock.now += self.clock.measurement_cost
        return loss_fn(model, batch)


def budget(out_dir: str) -> None:
    rank = int(os.environ.get("LOCAL_RANK", 0))
    clock = HandClock(measurement_cost=2.0 if rank == 0 else 200.0)
    monitor_ref: list = []
    monitor = HessianEigenMonitor(
        k=1, every_n_steps=1, loss_fn=CostlyLoss(clock, monitor_ref), max_overhead=0.5, strict=True
    )
    monitor_ref.append(monitor)
    monitor.clock = clock  # times its measurements and, through it, the budget
    record = RecordMeasuredSteps(clock, monitor)
    fit = two_process_trainer(out_dir, [AdvanceClock(clock, monitor), monitor, record], max_steps=12)
    fit.fit(Regressor())
    result = {"steps": record.steps, "skipped": monitor.budget.num_skipped, "global_step": fit.global_step}
    Path(out_dir, f"rank{fit.global_rank}.json").write_text(json.dumps(result))


def auto(out_dir: str) -> None:
    """The automatic schedule (no schedule given) with clocks that disagree: rank 0 decides for both."""
    rank = int(os.environ.get("LOCAL_RANK", 0))
    clock = HandClock(measurement_cost=0.25 if rank == 0 else 25.0)
    monitor_ref: list = []
    monitor = HessianEigenMonitor(k=1, loss_fn=CostlyLoss(clock, monitor_ref), strict=True)
    monitor_ref.append(monitor)
    monitor.clock = clock
    record = RecordMeasuredSteps(clock, monitor)
    fit = two_process_trainer(out_dir, [AdvanceClock(clock, monitor), monitor, record], max_steps=40)
    fit.fit(Regressor())
    result = {"steps": record.steps, "period": monitor.auto_schedule.period, "global_step": fit.global_step}
    Path(out_dir, f"rank{fit.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == "budget":
        budget(directory)
    elif mode == "auto":
        auto(directory)
    elif mode == "adam":
        adam(directory)
    elif mode.startswith("measure"):
        measure(directory, strategy="ddp_spawn" if mode == "measure-spawn" else "ddp")
    else:
        fail(directory, strict=mode == "fail-strict")
    if torch.distributed.is_initialized():  # tear gloo down before the interpreter does (an abort under load)
        torch.distributed.destroy_process_group()
