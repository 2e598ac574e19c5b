"""A monitor's time budget: measurements are skipped while they cost more than a fraction of training time.

Example::

    >>> clock = iter([0.0, 0.0, 1.0, 10.0]).__next__
    >>> budget = OverheadBudget(0.5, clock=clock)
    >>> budget.start()                      # t = 0: train start
    >>> budget.allows(step=0)               # t = 0: nothing spent yet
    True
    >>> budget.add_measurement(2.0)         # the measurement took 2 s
    >>> budget.allows(step=1)               # t = 1: 2 s measured vs 0.5 · (1 − 2) s of training: wait
    False
    >>> budget.allows(step=9)               # t = 10: 2 s vs 0.5 · 8 s: go
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["OverheadBudget"]


class OverheadBudget:
    """Wall-time accounting of one monitor (see the docs' implementation notes).

    Args:
        max_overhead: the fraction ``f`` of training time the monitor may spend measuring, ``0 < f < 1``.
        clock: seconds as a float (default :func:`time.perf_counter`); the monitor times its measurements
            with it too (replaceable: the tests drive it by hand).
    """

    def __init__(self, max_overhead: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.max_overhead = max_overhead
        self.clock = clock
        self.measure_seconds = 0.0  # all fits, resumed ones included
        self._earlier_fits_seconds = 0.0  # training time of the fits before this one
        self._measure_seconds_at_start = 0.0
        self._started_at: float | None = None
        self.num_skipped = 0
        self._last_skipped_step: int | None = None

    def start(self) -> None:
        """Called at train start: the training clock of this fit starts now."""
        self._started_at = self.clock()
        self._measure_seconds_at_start = self.measure_seconds

    def train_seconds(self) -> float:
        """Training wall time so far: this fit's time since :meth:`start` less its measurements, plus the
        earlier fits' training time.
        """
        if self._started_at is None:
            return self._earlier_fits_seconds
        this_fit = self.clock() - self._started_at - (self.measure_seconds - self._measure_seconds_at_start)
        return self._earlier_fits_seconds + max(this_fit, 0.0)

    def allows(self, step: int) -> bool:
        """Whether the measurement scheduled at ``step`` may start now (``t_measure ≤ f · t_train``); counts
        the refusals (a step refused before, as a resumed fit's first step can be, is not counted again).
        """
        allowed = self.measure_seconds <= self.max_overhead * self.train_seconds()
        if not allowed:
            self.skip(step)
        return allowed

    def skip(self, step: int) -> None:
        """Count ``step`` as skipped (once)."""
        if step != self._last_skipped_step:
            self.num_skipped += 1
            self._last_skipped_step = step

    def add_measurement(self, seconds: float) -> None:
        """Account a measurement that took ``seconds``."""
        self.measure_seconds += seconds

    def overhead(self) -> float:
        """``t_measure / t_train`` so far (``inf`` before any training time)."""
        train = self.train_seconds()
        return self.measure_seconds / train if train > 0 else float("inf")

    def state_dict(self) -> dict[str, Any]:
        return {
            "measure_seconds": self.measure_seconds,
            "train_seconds": self.train_seconds(),
            "num_skipped": self.num_skipped,
            "last_skipped_step": self._last_skipped_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.measure_seconds = float(state.get("measure_seconds", 0.0))
        self._earlier_fits_seconds = float(state.get("train_seconds", 0.0))
        self.num_skipped = int(state.get("num_skipped", 0))
        self._last_skipped_step = state.get("last_skipped_step")
        self._started_at = None
