"""A clock the test moves by hand: timing logic tested without wall-time flakiness.

:class:`HandClock` is the clock; :class:`TickPerStep` advances it 1 s per training step; a
:class:`CostlyMonitor` "takes" ``cost`` seconds of it per measurement (it replaces the monitor's ``clock``,
which times measurements for the automatic schedule and for ``max_overhead``).
"""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_spectral.callbacks.base import SpectralMonitor


class HandClock:
    """``clock()`` returns ``clock.now``, which the test (or a fake measurement) advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CostlyMonitor(SpectralMonitor):
    """Every measurement "takes" ``cost`` seconds of the hand clock (``cost`` may be changed during the fit)."""

    monitor_name = "costly"
    needs_batch = False

    def __init__(self, clock: HandClock, cost: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock, self.cost = clock, cost
        self.measured_steps: list[int] = []

    def measure(self, trainer, pl_module, batches):
        self.clock.now += self.cost
        self.measured_steps.append(trainer.global_step)
        return {"value": float(trainer.global_step)}


class TickPerStep(pl.Callback):
    """1 s of the hand clock per training step (placed before the monitors: its hook runs first); with
    ``cost_change=(step, factor)`` the ``monitors``' costs are multiplied by ``factor`` at that step."""

    def __init__(self, clock: HandClock, cost_change: tuple[int, float] | None = None, monitors=()) -> None:
        self.clock, self.cost_change, self.monitors = clock, cost_change, monitors

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.now += 1.0
        if self.cost_change is not None and trainer.global_step == self.cost_change[0]:
            for monitor in self.monitors:
                monitor.cost *= self.cost_change[1]
