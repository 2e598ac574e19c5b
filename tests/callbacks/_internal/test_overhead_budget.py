"""``max_overhead``: the time budget of a monitor, through a real ``Trainer.fit`` driven by a hand clock.

The clock advances 1 s per training step and ``cost`` seconds per measurement, so which steps the budget lets
through is known exactly: with budget ``f`` the ``n``-th measurement after the first waits until
``n · cost ≤ f · (training seconds)``.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from spectral_testing.clock import CostlyMonitor, HandClock, TickPerStep
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import TinyClassifier, trainer_kwargs

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor
from lightning_spectral.callbacks._internal.overhead_budget import OverheadBudget


def fit(tmp_path, monitor, clock, **overrides):
    pl.seed_everything(0)
    kwargs = trainer_kwargs(tmp_path, **({"max_steps": 100, "max_epochs": -1} | overrides))
    trainer = pl.Trainer(callbacks=[TickPerStep(clock), monitor], **kwargs)
    trainer.fit(TinyClassifier())
    return trainer


def expected_steps(cost: float, budget: float, last_step: int, every: int = 1) -> list[int]:
    """The schedule's steps that ``measure ≤ budget · train`` lets through (train time = the step)."""
    steps, spent = [0], cost
    for step in range(every, last_step + 1, every):
        if spent <= budget * step:
            steps.append(step)
            spent += cost
    return steps


def test_the_budget_drops_scheduled_measurements_exactly_as_specified(tmp_path):
    clock = HandClock()
    monitor = CostlyMonitor(clock, cost=10.0, every_n_steps=1, max_overhead=0.5)
    trainer = fit(tmp_path, monitor, clock, logger=pl.loggers.TensorBoardLogger(tmp_path, name="tb"))
    assert monitor.measured_steps == [0, 20, 40, 60, 80, 100] == expected_steps(10.0, 0.5, 100)
    assert monitor.budget.num_skipped == 100 - 5
    # logged: the ratio after each measurement (none at step 0, where no training time has passed yet)
    scalars = read_tensorboard_scalars(trainer.logger.log_dir)
    overhead = dict(scalars["spectral/costly/overhead"])
    assert sorted(overhead) == [20, 40, 60, 80, 100]
    assert overhead[20] == pytest.approx(20 / 20) and overhead[100] == pytest.approx(60 / 100)
    # the promise: within the budget plus one measurement
    assert monitor.budget.overhead() <= 0.5 + 10.0 / 100


@pytest.mark.parametrize("cost, budget, every", [(3.0, 0.1, 1), (0.5, 0.2, 5), (25.0, 0.9, 2)])
def test_other_costs_and_schedules(tmp_path, cost, budget, every):
    clock = HandClock()
    monitor = CostlyMonitor(clock, cost=cost, every_n_steps=every, max_overhead=budget)
    fit(tmp_path, monitor, clock, max_steps=60)
    assert monitor.measured_steps == expected_steps(cost, budget, 60, every)


def test_without_a_budget_every_scheduled_step_is_measured(tmp_path):
    clock = HandClock()
    monitor = CostlyMonitor(clock, cost=10.0, every_n_steps=7)
    trainer = fit(tmp_path, monitor, clock, max_steps=30)
    assert monitor.measured_steps == [0, 7, 14, 21, 28] and monitor.budget is None
    assert "spectral/costly/overhead" not in trainer.callback_metrics


def test_the_budget_survives_a_resume(tmp_path):
    """Measured and training time go into the checkpoint: a fit resumed at step 50 continues the same
    decisions as an uninterrupted one."""
    clock = HandClock()
    whole = CostlyMonitor(clock, cost=10.0, every_n_steps=1, max_overhead=0.3)
    fit(tmp_path / "whole", whole, clock)

    clock = HandClock()
    first = CostlyMonitor(clock, cost=10.0, every_n_steps=1, max_overhead=0.3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=50)
    pl.seed_everything(0)
    kwargs = trainer_kwargs(tmp_path / "first", max_steps=50, max_epochs=-1, enable_checkpointing=True)
    pl.Trainer(callbacks=[TickPerStep(clock), first, checkpoint], **kwargs).fit(TinyClassifier())

    clock = HandClock()
    clock.now = 1e6  # a new process: its clock has nothing to do with the first one's
    second = CostlyMonitor(clock, cost=10.0, every_n_steps=1, max_overhead=0.3)
    pl.seed_everything(0)
    kwargs = trainer_kwargs(tmp_path / "second", max_steps=100, max_epochs=-1)
    trainer = pl.Trainer(callbacks=[TickPerStep(clock), second], **kwargs)
    trainer.fit(TinyClassifier(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert first.measured_steps + second.measured_steps == whole.measured_steps
    assert second.budget.num_skipped == whole.budget.num_skipped


def test_budget_unit_accounting_across_fits():
    clock = HandClock()
    budget = OverheadBudget(0.25, clock=clock)
    budget.start()
    assert budget.allows(0)
    clock.now += 4.0
    budget.add_measurement(4.0)
    clock.now += 8.0  # 8 s of training
    assert budget.train_seconds() == 8.0 and not budget.allows(8) and budget.num_skipped == 1
    assert not budget.allows(8) and budget.num_skipped == 1  # the same step is counted once
    clock.now += 8.0
    assert budget.allows(16) and budget.overhead() == pytest.approx(4.0 / 16.0)
    state = budget.state_dict()
    resumed = OverheadBudget(0.25, clock=HandClock())
    resumed.load_state_dict(state)
    assert resumed.train_seconds() == 16.0 and resumed.measure_seconds == 4.0 and resumed.num_skipped == 1


@pytest.mark.parametrize("monitor_cls", [HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor])
@pytest.mark.parametrize("bad", [0.0, 1.0, 1, -0.1, "0.05", True])
def test_max_overhead_is_validated_by_every_monitor(monitor_cls, bad):
    with pytest.raises(ValueError, match="`max_overhead` must be a float in \\(0, 1\\)"):
        monitor_cls(max_overhead=bad)


def test_real_monitors_accept_a_budget_and_log_their_overhead(tmp_path):
    """Wall clock, real measurements: a generous budget (0.9) lets every monitor measure again once training
    has caught up with its first measurement, and each later measurement logs the ratio it keeps."""
    monitors = [
        HessianEigenMonitor(every_n_steps=10, max_overhead=0.9),
        NTKTraceMonitor(every_n_steps=10, max_overhead=0.9),
        WeightSpectrumMonitor(every_n_steps=10, max_overhead=0.9),
    ]
    pl.seed_everything(0)
    trainer = pl.Trainer(callbacks=monitors, **trainer_kwargs(tmp_path, max_steps=200, max_epochs=-1))
    trainer.fit(TinyClassifier())
    for monitor in monitors:
        assert 2 <= monitor.num_measurements <= 21, type(monitor).__name__
        logged = float(trainer.callback_metrics[f"{monitor.metric_prefix}overhead"])
        assert 0 < logged <= 0.9 + monitor.budget.measure_seconds / monitor.budget.train_seconds()
