"""The automatic schedule: the monitors of one ``Trainer`` that were given no schedule share one time budget."""

from __future__ import annotations

import functools
import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from lightning_spectral.callbacks.base import SpectralMonitor

__all__ = ["DEFAULT_BUDGET", "DRIFT", "AutoSchedule", "plan_period", "round_up_125"]

DEFAULT_BUDGET = 0.05
"""The default ``auto_schedule_budget``: all automatically scheduled monitors together, 5 % of the training time."""
DRIFT = 2.0
"""The period is re-chosen when the cost ratio (a round over a training step) moved by this factor."""
EARLY_SHARE = 0.5
"""When the early powers of two do not all fit, the regular rounds get this share of the budget left first."""


def round_up_125(x: float) -> int:
    """The smallest number of the 1-2-5 sequence (1, 2, 5, 10, 20, 50, ...) that is ``≥ x`` (at least 1)."""
    if not x > 1:
        return 1
    decade = 10 ** math.floor(math.log10(x))
    for mantissa in (1, 2, 5, 10):
        if mantissa * decade >= x * (1 - 1e-12):
            return mantissa * decade
    return 10 * decade  # pragma: no cover (the loop ends at 10)


def _periods(limit: int) -> Iterator[int]:
    """The 1-2-5 sequence up to and including its first number above ``limit``."""
    period = 1
    while True:
        yield period
        if period > limit:
            return
        period = round_up_125(period * 1.5)


def plan_period(
    *,
    budget: float,
    total_steps: float,
    step: int,
    spent: float,
    round_cost: float,
    early: bool = True,
) -> tuple[int, tuple[int, ...]]:
    """The period and the early steps that spend what is left of the budget.

    Args:
        budget: the fraction of the training time the members may spend measuring.
        total_steps: the fit's last step ``N`` (``inf``: unknown).
        step: the decision step ``t``: rounds are counted from it on (it is measured if it is one of them).
        spent: measuring time spent so far, in training steps.
        round_cost: one round of measurements, in training steps.
        early: whether the early powers of two may still be planned (``False`` once the period was chosen).

    Returns:
        ``(period, early_steps)``: the 1-2-5 period, and the powers of two in ``[step, period)`` to measure
        as well. A period above ``N`` means no further measurement in this fit.

    Example:
        >>> plan_period(budget=0.05, total_steps=2000, step=2, spent=8.0, round_cost=8.0)
        (1000, (2, 4, 8, 16, 32, 64, 128, 256, 512))
        >>> plan_period(budget=0.05, total_steps=2000, step=2, spent=20.0, round_cost=12.0)
        (1000, (64, 128, 256, 512))
        >>> plan_period(budget=0.05, total_steps=10_000, step=2, spent=0.2, round_cost=0.2)
        (5, (2, 4))
    """
    if math.isinf(total_steps):
        return round_up_125(round_cost / budget), ()
    last = int(total_steps)
    left = budget * last - spent

    def regular(period: int) -> int:  # multiples of the period in [step, N]
        return max(last // period - (step - 1) // period, 0)

    def powers(period: int) -> list[int]:  # powers of two in [step, min(period, N + 1))
        return [2**j for j in range(max(last, 1).bit_length() + 1) if step <= 2**j < min(period, last + 1)]

    periods = list(_periods(last))
    if early:
        for period in periods:  # at least two regular rounds: the early steps are not the whole schedule
            if regular(period) >= 2 and round_cost * (regular(period) + len(powers(period))) <= left:
                return period, tuple(powers(period))
        share = (1 - EARLY_SHARE) * left
    else:
        share = left
    for period in periods:
        if round_cost * regular(period) <= share:
            if not early:
                return period, ()
            rounds = math.floor((left - round_cost * regular(period)) / round_cost) if round_cost > 0 else 0
            chosen = powers(period)[-rounds:] if rounds > 0 else []
            return period, tuple(chosen)
    return periods[-1], ()


_GROUPS: weakref.WeakKeyDictionary[pl.Trainer, AutoSchedule] = weakref.WeakKeyDictionary()


class AutoSchedule:
    """One ``Trainer``'s automatic schedule, shared by its members (see the docs' implementation notes).

    Args:
        budget: the fraction of the training time all members together may spend measuring, in (0, 1).
        clock: seconds as a float (default :func:`time.perf_counter`), read on rank 0 only to decide.
    """

    def __init__(self, budget: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget = budget
        self.clock = clock
        self.members: list[SpectralMonitor] = []
        # the schedule (checkpointed)
        self.period: int | None = None
        self.early = True  # still in the early phase (the period not yet chosen)
        self.early_steps: list[int] = []  # the early steps measured
        self.planned_early: list[int] = []  # the early phase's plan: the powers of two to measure
        self.chosen_at: list[int] = []  # the steps at which the period was chosen or re-chosen
        self.ratio_at_choice: float | None = None  # round cost over step time when the period was chosen
        self.measure_seconds = 0.0  # all fits
        self.costs: dict[
            str, list[list[Any]]
        ] = {}  # per member: [seconds, first of its fit] of recent measurements
        self._earlier_train_seconds = 0.0
        self._earlier_steps = 0
        self._earlier_timed = (
            0.0,
            0,
        )  # training seconds and steps of earlier fits, each fit's first step left out
        self._timing_origin: tuple[float, int] | None = (
            None  # (training seconds, step) at this fit's first batch end
        )
        # this fit
        self.total_steps: float = math.inf
        self._started_at: float | None = None
        self._start_step = 0
        self._measure_at_start = 0.0
        self._other_seconds = 0.0
        self._checked_step = 0
        self._measure_now = False
        self._announced = False

    # ------------------------------------------------------------------ membership
    @classmethod
    def join(cls, trainer: pl.Trainer, member: SpectralMonitor, budget: float) -> AutoSchedule:
        """The trainer's schedule (created by its first member); the smallest budget of its members wins."""
        group = _GROUPS.get(trainer)
        if group is None:
            group = _GROUPS[trainer] = cls(budget, clock=member.clock)
        if member not in group.members:
            group.members.append(member)
        if budget != group.budget:
            smaller = min(budget, group.budget)
            rank_zero_warn(
                f"spectral monitors: their auto_schedule_budget values differ ({group.budget} and {budget}); the "
                f"shared automatic schedule keeps the smaller, {smaller}."
            )
            group.budget = smaller
        return group

    # ------------------------------------------------------------------ the clock
    def start(self, trainer: pl.Trainer) -> None:
        """Called by every member at train start; the first call of a fit starts the clock."""
        if self._started_at is not None and self._checked_step == trainer.global_step:
            return
        for member in self.members:  # a resumed fit: adopt the checkpointed schedule
            state = getattr(member, "_loaded_auto_schedule", None)
            if state:
                self.load_state_dict(state)
                break
        for member in self.members:
            member._loaded_auto_schedule = None
        self._started_at = self.clock()
        self._other_seconds = 0.0
        self._start_step = self._checked_step = trainer.global_step
        self._timing_origin = None
        self._measure_at_start = self.measure_seconds
        try:  # the fit's length in optimizer steps; unknown (an iterable without a length, no limit): inf
            total = float(trainer.estimated_stepping_batches)
        except (TypeError, ValueError, RuntimeError):
            total = math.inf
        self.total_steps = total if total > 0 else math.inf
        if not self._announced:
            self._announced = True
            names = ", ".join(m.name or type(m).__name__ for m in self.members)
            period = f"every {self.period} steps (chosen earlier)" if self.period and not self.early else ""
            rank_zero_info(
                f"spectral monitors: {names} share an automatic schedule within {self.budget:.1%} of the training "
                f"time (auto_schedule_budget); "
                + (period or "the period is chosen from the measured costs in the first steps")
                + "."
            )

    def train_seconds(self) -> float:
        """Training wall time so far (all fits): this fit's time since train start less the measurements (the
        members' and those of the trainer's monitors on an explicit schedule).
        """
        if self._started_at is None:
            return self._earlier_train_seconds
        measured = self.measure_seconds - self._measure_at_start + self._other_seconds
        this_fit = self.clock() - self._started_at - measured
        return self._earlier_train_seconds + max(this_fit, 0.0)

    @staticmethod
    def add_other_measurement(trainer: pl.Trainer, seconds: float) -> None:
        """A measurement of a monitor on an explicit schedule: not training time for the trainer's schedule."""
        group = _GROUPS.get(trainer)
        if group is not None and group._started_at is not None:
            group._other_seconds += seconds

    def add_measurement(self, member: SpectralMonitor, seconds: float, first_of_fit: bool) -> None:
        """Account one member's measurement of ``seconds`` (``first_of_fit``: it carried one-off costs)."""
        self.measure_seconds += seconds
        costs = self.costs.setdefault(member.state_key, [])
        costs.append([seconds, first_of_fit])
        del costs[:-8]

    def round_seconds(self) -> float | None:
        """The estimated cost of one round: the sum over the active members of the median of their last three
        measurements, a fit's first left out where later ones exist (its one-off costs: a cold start, the
        first call of a kernel); ``None`` while a member has not measured yet.
        """
        total = 0.0
        for member in self.members:
            if member._disabled:
                continue
            costs = self.costs.get(member.state_key)
            if not costs:
                return None
            later = [seconds for seconds, first in costs if not first] or [seconds for seconds, _ in costs]
            total += statistics.median(later[-3:])
        return total

    def _timed(self, step: int) -> tuple[float, int]:
        """Training seconds and steps that time a step: every fit's first step is left out (it also starts the
        data loader and the optimizer's state).
        """
        seconds, steps = self._earlier_timed
        if self._timing_origin is not None:
            seconds += self.train_seconds() - self._timing_origin[0]
            steps += step - self._timing_origin[1]
        return seconds, steps

    def step_seconds(self, step: int) -> float | None:
        """The mean wall time of a training step so far (all fits; each fit's first step left out)."""
        seconds, steps = self._timed(step)
        return seconds / steps if steps > 0 else None

    # ------------------------------------------------------------------ the decisions
    def due(self, trainer: pl.Trainer, step: int) -> bool:
        """Whether the members measure at ``step`` (the global step at a batch end); decided once per step, by
        rank 0 at a decision point (broadcast), without any communication between decision points.
        """
        if step <= self._checked_step:
            return self._measure_now and step == self._checked_step
        previous, self._checked_step = self._checked_step, step
        if self._timing_origin is None:
            self._timing_origin = (self.train_seconds(), step)
        self._measure_now = False
        point = self._decision_point(previous, step)
        if point is None:
            return False
        decision = self._decide(step, trainer) if trainer.global_rank == 0 else None
        if trainer.world_size > 1:
            decision = trainer.strategy.broadcast(decision, src=0)
        assert decision is not None  # rank 0 decided, and every other rank received its decision
        measure, state = decision
        was_chosen = not self.early and self.period is not None
        self.period, self.early, self.ratio_at_choice = state["period"], state["early"], state["ratio"]
        self.planned_early = state["planned"]
        if measure and (self.period is None or step % self.period != 0):
            self.early_steps.append(step)
        if state["chosen"]:
            self.chosen_at.append(step)
            self._announce_choice(trainer, state, was_chosen)
        self._measure_now = measure
        return measure

    def _decision_point(self, previous: int, step: int) -> int | None:
        """A decision step in ``(previous, step]``: a power of two in the early phase, a multiple of the period
        after it (the global step moves by more than one per batch under manual optimization).
        """
        if self.early:
            return next((2**j for j in range(step.bit_length() + 1) if previous < 2**j <= step), None)
        if self.period is None or step // self.period <= previous // self.period:
            return None
        return step

    def _decide(self, step: int, trainer: pl.Trainer) -> tuple[bool, dict[str, Any]]:
        """Rank 0: whether to measure at ``step``, and the schedule from here on. The plan of the early phase
        (made at its first decision) holds unless the cost ratio drifted or a round would overrun the budget.
        """
        state: dict[str, Any] = {
            "period": self.period,
            "planned": list(self.planned_early),
            "early": self.early,
            "ratio": self.ratio_at_choice,
            "chosen": False,
        }
        round_seconds, step_seconds = self.round_seconds(), self.step_seconds(step)
        if round_seconds is None:
            return True, state  # no cost known yet: measure to learn it
        if not step_seconds:
            return False, state  # no training step timed yet (a fit's first is not): wait for one
        ratio = round_seconds / step_seconds
        spent = self.measure_seconds / step_seconds
        plan = functools.partial(
            plan_period,
            budget=self.budget,
            total_steps=self.total_steps,
            step=step,
            spent=spent,
            round_cost=ratio,
        )
        planned_ratio = self.ratio_at_choice
        drifted = planned_ratio is not None and max(ratio / planned_ratio, planned_ratio / ratio) >= DRIFT
        overrun = spent + ratio > self.budget * self.total_steps
        if self.early:
            if self.period is None or drifted or overrun:
                period, early = plan()
                state.update(period=period, planned=list(early), ratio=ratio)
            period, early = state["period"], state["planned"]
            measure = step in early or step % period == 0
            if not any(s > step for s in early):  # the early phase ends: the period is chosen
                state.update(early=False, chosen=True)
                rest = [s for s in early if s >= step]
                state["projected"] = self._projected(spent, ratio, period, rest, step)
            return measure, state
        if drifted or overrun:
            period, _ = plan(early=False)
            state.update(period=period, ratio=ratio, chosen=True)
            state["projected"] = self._projected(spent, ratio, period, (), step)
        return step % state["period"] == 0, state

    def _projected(
        self, spent: float, ratio: float, period: int, early: Sequence[int], step: int
    ) -> dict[str, float]:
        """The overhead the plan makes (measuring over training time at the fit's end), for the log line."""
        state = {"ratio": ratio}
        if math.isinf(self.total_steps):
            state["overhead"] = ratio / period
        else:
            last = int(self.total_steps)
            rounds = max(last // period - (step - 1) // period, 0) + len(early)
            state["overhead"] = (spent + ratio * rounds) / max(last, 1)
        return state

    def _announce_choice(self, trainer: pl.Trainer, state: dict[str, Any], again: bool) -> None:
        from lightning_spectral.callbacks._internal.metric_logging import log_config

        period = state["period"]
        early = ",".join(map(str, self.early_steps)) or "none"
        for member in self.members:
            log_config(
                trainer,
                {f"{member.metric_prefix}every_n_steps": period, f"{member.metric_prefix}early_steps": early},
            )
        projected = state.get("projected") or {}
        beyond = period > self.total_steps
        rank_zero_info(
            f"spectral monitors: {'re-chosen: ' if again else ''}"
            + (
                "no further measurement in this fit"
                if beyond
                else f"every {period} steps{f' (early steps: {early})' if self.early_steps else ''}"
            )
            + f", about {projected.get('overhead', math.nan):.1%} of training time (one round of measurements ≈ "
            f"{projected.get('ratio', math.nan):.1f} training steps); repeat this schedule with "
            f"every_n_steps={period}."
        )

    # ------------------------------------------------------------------ state
    def end_fit(self, step: int) -> None:
        """Called at fit end by the members: the fit's training time is banked (once) and its cost said."""
        if self._started_at is None:
            return
        train = self.train_seconds() - self._earlier_train_seconds
        measured = self.measure_seconds - self._measure_at_start
        if train > 0:
            rank_zero_info(
                f"spectral monitors: {measured:.1f} s measuring in this fit, {measured / train:.1%} of its "
                f"{train:.1f} s of training (auto_schedule_budget {self.budget:.1%})."
            )
        self._earlier_train_seconds = self.train_seconds()
        self._earlier_timed = self._timed(step)
        self._timing_origin = None
        self._earlier_steps += step - self._start_step
        self._started_at = None
        self._announced = False

    def state_dict(self) -> dict[str, Any]:
        steps = self._earlier_steps + (
            self._checked_step - self._start_step if self._started_at is not None else 0
        )
        return {
            "budget": self.budget,
            "period": self.period,
            "early": self.early,
            "early_steps": list(self.early_steps),
            "planned_early": list(self.planned_early),
            "chosen_at": list(self.chosen_at),
            "ratio_at_choice": self.ratio_at_choice,
            "measure_seconds": self.measure_seconds,
            "train_seconds": self.train_seconds(),
            "train_steps": steps,
            "timed_seconds": self._timed(self._checked_step)[0],
            "timed_steps": self._timed(self._checked_step)[1],
            "costs": {key: list(values) for key, values in self.costs.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.period = state["period"]
        self.early = state["early"]
        self.early_steps = list(state["early_steps"])
        self.planned_early = list(state["planned_early"])
        self.chosen_at = list(state["chosen_at"])
        self.ratio_at_choice = state["ratio_at_choice"]
        self.measure_seconds = float(state["measure_seconds"])
        self._earlier_train_seconds = float(state["train_seconds"])
        self._earlier_steps = int(state["train_steps"])
        self._earlier_timed = (float(state["timed_seconds"]), int(state["timed_steps"]))
        self.costs = {key: list(values) for key, values in state["costs"].items()}
