"""The automatic schedule (monitors given no schedule), through real ``Trainer.fit`` runs driven by a hand clock.

The clock advances 1 s per training step (a callback placed before the monitors) and ``cost`` seconds per
measurement, so the costs the schedule sees are exact and every decision is known: no wall time is involved.
"""

from __future__ import annotations

import json
import logging

import pytest
import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from spectral_testing.clock import CostlyMonitor, HandClock, TickPerStep
from spectral_testing.ddp import DISTRIBUTED, run_ddp_script
from spectral_testing.models import TinyClassifier, trainer_kwargs

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor
from lightning_spectral.callbacks._internal.auto_schedule import DEFAULT_BUDGET, plan_period, round_up_125

STEPS = 200


def fit(tmp_path, monitors, clock, ckpt_path=None, tick=None, extra=(), **overrides):
    pl.seed_everything(0)
    kwargs = trainer_kwargs(tmp_path, **({"max_steps": STEPS, "max_epochs": -1} | overrides))
    callbacks = [tick or TickPerStep(clock), *monitors, *extra]
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    trainer.fit(TinyClassifier(), ckpt_path=ckpt_path)
    return trainer


def costly(clock, *costs, **kwargs):
    return [CostlyMonitor(clock, cost, name=f"costly{i}", **kwargs) for i, cost in enumerate(costs)]


def is_125(n: int) -> bool:
    return round_up_125(n) == n


@pytest.mark.slow
def test_the_chosen_period_keeps_the_measuring_time_within_the_budget(tmp_path, caplog):
    """Costs in binary fractions of a second, so that the hand clock's arithmetic is exact."""
    clock = HandClock()
    (monitor,) = costly(clock, 0.75)
    logger = pl.loggers.CSVLogger(tmp_path, name="csv")
    with caplog.at_level(logging.INFO):
        fit(tmp_path, [monitor], clock, logger=logger)
    schedule = monitor.auto_schedule
    period, early = schedule.period, schedule.early_steps
    # the plan from the exact costs, made at step 2 (the first step is not timed): a round 0.75 steps, 200 steps
    # at 5 %: 10 s; every 50 steps and the powers of two from 2 below 50 (every 20 steps with them would overrun)
    assert (period, tuple(early)) == (50, (2, 4, 8, 16, 32))
    assert (period, tuple(early)) == plan_period(
        budget=DEFAULT_BUDGET, total_steps=STEPS, step=2, spent=0.75, round_cost=0.75
    )
    assert not schedule.early and schedule.chosen_at == [32]
    assert monitor.measured_steps == [0, *early, *range(period, STEPS + 1, period)]
    total = 0.75 * len(monitor.measured_steps)
    assert schedule.measure_seconds == total <= DEFAULT_BUDGET * STEPS
    assert schedule.train_seconds() == STEPS
    # said on rank zero, and written to the run config
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "within 5.0% of the training time" in messages
    assert (
        f"every 50 steps (early steps: 2,4,8,16,32), about {total / STEPS:.1%} of training time" in messages
    )
    assert "every_n_steps=50" in messages
    hparams = yaml.safe_load((tmp_path / "csv" / "version_0" / "hparams.yaml").read_text())
    assert hparams["spectral/costly0/every_n_steps"] == period
    assert hparams["spectral/costly0/early_steps"] == "2,4,8,16,32"
    assert hparams["spectral/costly0/auto_schedule_budget"] == DEFAULT_BUDGET
    # logged: this monitor's share of the training time after each measurement but the first
    assert float(monitor._measure_seconds) == total


@pytest.mark.slow
@pytest.mark.parametrize("cost, budget", [(0.125, 0.05), (2.0, 0.25), (0.0625, 0.015625), (32.0, 0.05)])
def test_other_costs_and_budgets_stay_within_the_budget_plus_one_measurement(tmp_path, cost, budget):
    clock = HandClock()
    (monitor,) = costly(clock, cost, auto_schedule_budget=budget)
    fit(tmp_path, [monitor], clock)
    period, early = monitor.auto_schedule.period, monitor.auto_schedule.early_steps
    assert cost * len(monitor.measured_steps) <= budget * STEPS + cost  # plus one: the initial model's
    assert monitor.measured_steps == [0, *early, *range(period, STEPS + 1, period)]
    assert (period, tuple(early)) == plan_period(
        budget=budget, total_steps=STEPS, step=2, spent=cost, round_cost=cost
    )
    if cost > budget * STEPS:  # the initial model alone overruns: nothing more
        assert monitor.measured_steps == [0] and period > STEPS


def test_the_plan_matches_a_repeated_run_with_the_recorded_period():
    """The planner alone: the full early phase is ``every_n_steps=P, log_spacing=True`` exactly."""
    from lightning_spectral.callbacks.schedule import Schedule

    period, early = plan_period(budget=0.05, total_steps=10_000, step=2, spent=0.5, round_cost=0.5)
    assert period == 20 and early == (2, 4, 8, 16)
    assert Schedule(every_n_steps=period, log_spacing=True).steps_up_to(10_000) == [0, 1, *early] + list(
        range(period, 10_001, period)
    )
    assert plan_period(budget=0.05, total_steps=float("inf"), step=1, spent=1.0, round_cost=3.0) == (100, ())


@pytest.mark.slow
def test_the_budget_is_shared_by_the_monitors_of_a_trainer(tmp_path):
    """Three monitors costing 0.125, 0.25 and 0.5 s measure on the same steps as one monitor costing 0.875 s:
    together they get the one budget (three budgets would let each measure as if alone)."""
    clock = HandClock()
    three = costly(clock, 0.125, 0.25, 0.5)
    fit(tmp_path / "three", three, clock)
    clock = HandClock()
    (one,) = costly(clock, 0.875)
    fit(tmp_path / "one", [one], clock)
    assert three[0].measured_steps == three[1].measured_steps == three[2].measured_steps == one.measured_steps
    clock = HandClock()
    (alone,) = costly(clock, 0.125)
    fit(tmp_path / "alone", [alone], clock)
    assert len(alone.measured_steps) > len(one.measured_steps)  # the cheapest one alone would measure more
    schedule = three[0].auto_schedule
    assert schedule is three[2].auto_schedule and schedule.members == three
    rounds = len(one.measured_steps)
    assert schedule.measure_seconds == 0.875 * rounds <= DEFAULT_BUDGET * STEPS
    # the split: each monitor's share of the budget is its cost's share of a round
    assert [m._measure_seconds for m in three] == [0.125 * rounds, 0.25 * rounds, 0.5 * rounds]


def test_monitors_asking_for_different_budgets_share_the_smallest(tmp_path):
    clock = HandClock()
    loose = CostlyMonitor(clock, 0.375, name="loose", auto_schedule_budget=0.25)
    tight = CostlyMonitor(clock, 0.375, name="tight", auto_schedule_budget=0.05)
    with pytest.warns(UserWarning, match="keeps the smaller, 0.05"):
        fit(tmp_path, [loose, tight], clock)
    assert loose.auto_schedule.budget == 0.05
    assert 0.75 * len(loose.measured_steps) <= 0.05 * STEPS


def test_an_explicit_schedule_keeps_its_exact_steps(tmp_path):
    """A monitor with ``every_n_steps`` is no member of the automatic schedule and measures every step it asked
    for, whatever it costs; the automatic members' budget is theirs alone."""
    clock = HandClock()
    explicit = CostlyMonitor(clock, 0.5, every_n_steps=7, name="explicit")
    logspaced = CostlyMonitor(clock, 0.5, every_n_steps=50, log_spacing=True, name="logspaced")
    (auto,) = costly(clock, 0.75)
    fit(tmp_path, [explicit, logspaced, auto], clock)
    assert explicit.measured_steps == list(range(0, STEPS + 1, 7)) and explicit.auto_schedule is None
    assert logspaced.measured_steps == [0, 1, 2, 4, 8, 16, 32, 50, 100, 150, 200]
    assert auto.auto_schedule.members == [auto]
    assert 0.75 * len(auto.measured_steps) <= DEFAULT_BUDGET * STEPS


def test_a_resumed_run_keeps_its_period(tmp_path):
    """Interrupted at step 100 and resumed to step 200, with measurements 1.5× as costly after the resume (a
    slower machine, below the re-choice's drift factor): the period of the first fit, its accounting continued."""
    clock = HandClock()
    (first,) = costly(clock, 0.375)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=100)
    fit(tmp_path / "first", [first], clock, max_steps=100, extra=[checkpoint], enable_checkpointing=True)
    period = first.auto_schedule.period
    assert first.measured_steps == [0, 2, 4, 8, 16, 20, 40, 60, 80, 100] and period == 20  # planned for 100

    clock = HandClock()
    clock.now = 1e6  # a new process: its clock has nothing to do with the first one's
    (second,) = costly(clock, 0.5625)
    fit(tmp_path / "second", [second], clock, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    schedule = second.auto_schedule
    assert schedule.period == period and schedule.chosen_at == [16] and schedule.early_steps == [2, 4, 8, 16]
    assert second.measured_steps == [120, 140, 160, 180, 200]
    assert second.num_measurements == 15
    assert schedule.train_seconds() == STEPS and schedule.measure_seconds == 10 * 0.375 + 5 * 0.5625
    # a fresh run of 200 steps would have chosen otherwise: the period comes from the checkpoint
    assert (
        plan_period(budget=DEFAULT_BUDGET, total_steps=STEPS, step=2, spent=0.375, round_cost=0.375)[0] == 10
    )


def test_a_large_cost_drift_rechooses_the_period_and_a_small_one_does_not(tmp_path):
    clock = HandClock()
    (steady,) = costly(clock, 0.25)
    fit(tmp_path / "steady", [steady], clock)
    base = steady.auto_schedule
    assert (base.period, base.chosen_at) == (10, [8])
    assert steady.measured_steps == [0, 2, 4, 8, *range(10, STEPS + 1, 10)]

    clock = HandClock()
    (cheaper,) = costly(clock, 0.25)
    fit(tmp_path / "cheaper", [cheaper], clock, tick=TickPerStep(clock, (5, 0.625), [cheaper]))
    assert cheaper.measured_steps == steady.measured_steps and cheaper.auto_schedule.chosen_at == [8]

    clock = HandClock()
    (dearer,) = costly(clock, 0.25)
    fit(tmp_path / "dearer", [dearer], clock, tick=TickPerStep(clock, (5, 4.0), [dearer]))
    schedule = dearer.auto_schedule
    # from step 5 on a measurement costs 1 s: at step 20 the last three say so, and the period is re-chosen
    # from what is left of the budget (10 − 2.75 s: four rounds of 1 s)
    assert schedule.chosen_at == [8, 20] and schedule.period == 50
    assert dearer.measured_steps == [0, 2, 4, 8, 10, 50, 100, 150, 200]
    assert schedule.measure_seconds == 3 * 0.25 + 6 * 1.0 <= DEFAULT_BUDGET * STEPS


@pytest.mark.parametrize("monitor_cls", [HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor])
@pytest.mark.parametrize("bad", [0.0, 1.0, 1, -0.1, "0.05", True])
def test_the_budget_argument_is_validated(monitor_cls, bad):
    with pytest.raises(ValueError, match="`auto_schedule_budget` must be a float in \\(0, 1\\)"):
        monitor_cls(auto_schedule_budget=bad)


def test_the_budget_argument_is_refused_with_an_explicit_schedule():
    with pytest.raises(ValueError, match="`auto_schedule_budget` applies to the automatic schedule only"):
        HessianEigenMonitor(every_n_steps=10, auto_schedule_budget=0.05)
    with pytest.raises(ValueError, match="`log_spacing`=True needs `every_n_steps`"):
        NTKTraceMonitor(log_spacing=True)


def test_the_three_monitors_with_no_arguments_share_one_schedule_in_a_real_fit(tmp_path, caplog):
    """Wall clock, real measurements: what is asserted does not depend on the timings."""
    monitors = [HessianEigenMonitor(), NTKTraceMonitor(), WeightSpectrumMonitor()]
    pl.seed_everything(0)
    with caplog.at_level(logging.INFO):
        trainer = pl.Trainer(callbacks=monitors, **trainer_kwargs(tmp_path, max_steps=64, max_epochs=-1))
        trainer.fit(TinyClassifier())
    schedule = monitors[0].auto_schedule
    assert all(m.auto_schedule is schedule for m in monitors) and schedule.members == monitors
    counts = {m.num_measurements for m in monitors}
    assert len(counts) == 1 and counts.pop() >= 1  # the same steps for all three, the initial model at least
    assert (
        "HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor share an automatic schedule"
        in caplog.text
    )
    assert "s measuring in this fit" in caplog.text
    assert all(not m._disabled for m in monitors)


@pytest.mark.slow
@pytest.mark.ddp
def test_a_two_process_ddp_fit_measures_on_the_same_steps_on_both_ranks(tmp_path):
    """Rank 1's clock says a measurement costs 100× what rank 0's says; rank 0 decides, both measure the
    steps its costs give (1 s steps, 0.25 s measurements, 40 steps: every 10 steps after 2, 4, 8)."""
    process = run_ddp_script(DISTRIBUTED / "ddp_monitors_script.py", "auto", str(tmp_path), timeout=180)
    assert process.returncode == 0, process.stdout[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] == {"steps": [0, 2, 4, 8, 10, 20, 30, 40], "period": 10, "global_step": 40}


def test_tensorboard_hparams_file_gets_the_chosen_period(tmp_path):
    """TensorBoard writes ``hparams.yaml`` once, at fit start (``every_n_steps: auto``); the chosen period must
    reach the file too, so that the run can be repeated from it (``every_n_steps=<period>``)."""
    clock = HandClock()
    (monitor,) = costly(clock, 0.75)
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb")
    fit(tmp_path, [monitor], clock, logger=logger)
    hparams = yaml.safe_load((tmp_path / "tb" / "version_0" / "hparams.yaml").read_text())
    assert monitor.auto_schedule.period == 50
    assert hparams["spectral/costly0/every_n_steps"] == 50
    assert hparams["spectral/costly0/early_steps"] == "2,4,8,16,32"
    assert hparams["spectral/costly0/auto_schedule_budget"] == DEFAULT_BUDGET
