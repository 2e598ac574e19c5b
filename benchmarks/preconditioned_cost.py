"""What the preconditioned sharpness adds to a Hessian measurement under Adam.

Run from the repository root::

    python -m benchmarks.preconditioned_cost

The overhead benchmark's CNN and data (``benchmarks/bench_overhead.py``: 38k parameters, digits, batch 8, one
epoch = 225 steps, one torch thread) trained with ``torch.optim.Adam(lr=1e-3)`` and
``HessianEigenMonitor(every_n_steps=25)``, with ``compute_preconditioned`` off and on, alternately for 5 rounds.
Prints the median time per measurement spent in the monitor's hooks (the step-0 measurement, which has no Adam
moments yet and so no preconditioned run, included). The numbers in ``benchmarks/RESULTS.md``
(*Preconditioned sharpness*, linked from docs/hessian-eigen-monitor.md) come from this script.
"""

from __future__ import annotations

import statistics
import warnings

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from benchmarks.bench_overhead import BATCH_SIZE, SEED, DigitsCNN, HookClock, digits
from lightning_spectral.callbacks import HessianEigenMonitor

ROUNDS, EVERY_N_STEPS = 5, 25


class AdamCNN(DigitsCNN):
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def milliseconds_per_measurement(data, preconditioned: bool) -> float:
    torch.manual_seed(SEED)
    model = AdamCNN()
    loader = DataLoader(
        data, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(SEED)
    )
    monitor = HessianEigenMonitor(every_n_steps=EVERY_N_STEPS, compute_preconditioned=preconditioned)
    clock = HookClock(monitor)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        callbacks=[monitor],
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    return clock.seconds / monitor.num_measurements * 1e3


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    data = digits()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ROUNDS):
        for preconditioned in (False, True):
            times[preconditioned].append(milliseconds_per_measurement(data, preconditioned))
    for preconditioned, label in (
        (False, "compute_preconditioned=False"),
        (True, "compute_preconditioned=True"),
    ):
        print(
            f"{label}: {statistics.median(times[preconditioned]):.1f} ms per measurement (median of {ROUNDS})"
        )


if __name__ == "__main__":
    main()
