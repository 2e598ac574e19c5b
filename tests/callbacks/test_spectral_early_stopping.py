"""SpectralEarlyStopping in real Trainer.fit runs: scripted measurements, resume, DDP (the real edge of stability: below,
on a real Hessian monitor).

SpectralEarlyStopping on a real Hessian monitor: the edge-of-stability preset stops a run whose step is past
2/λ_max, leaves a stable one alone, and works next to Lightning's own EarlyStopping on the same key.

SpectralEarlyStopping.stochastic_edge_of_stability on a real NTK monitor: it stops an SGD run whose noise-kernel
norm 𝒦 (the logged trace-based lower bound) is past 1, and leaves one well below it alone.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from pytorch_lightning.strategies import SingleDeviceStrategy
from spectral_testing.ddp import run_ddp_script
from spectral_testing.early_stopping import fit, rank_zero_info_messages
from spectral_testing.models import Regressor, TinyClassifier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks import NTKTraceMonitor, SpectralEarlyStopping
from lightning_spectral.callbacks.base import SpectralMonitor
from lightning_spectral.callbacks.hessian_eigen_monitor import HessianEigenMonitor
from lightning_spectral.functional import ntk_trace, sgd_stability
from lightning_spectral.functional.hessian.spectrum import hessian_eigenvalues

KEY = "spectral/fake/value"


class ScriptedMonitor(SpectralMonitor):
    """Emits ``script[name][global_step]`` (the last entry once the script runs out) for every name; a
    ``None`` entry is not logged at that step."""

    monitor_name = "fake"
    needs_batch = False

    def __init__(self, script, every_n_steps=1, **kwargs):
        super().__init__(every_n_steps=every_n_steps, **kwargs)
        self.script = script
        self.measured_steps: list[int] = []

    def measure(self, trainer, pl_module, batches):
        step = trainer.global_step
        self.measured_steps.append(step)
        values = {name: values[min(step, len(values) - 1)] for name, values in self.script.items()}
        return {name: value for name, value in values.items() if value is not None}


class ScriptedWeightsMonitor(ScriptedMonitor):
    monitor_name = "weights"


# ---------------------------------------------------------------------------------------------- construction
@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: SpectralEarlyStopping(KEY, threshold=1.0, mode="max"), "mode"),
        (lambda: SpectralEarlyStopping(KEY, threshold=1.0, action="halt"), "action"),
        (lambda: SpectralEarlyStopping(KEY, threshold=1.0, relative_to="loss"), "relative_to"),
        (lambda: SpectralEarlyStopping(KEY, threshold=1.0, patience=0), "patience"),
        (lambda: SpectralEarlyStopping(KEY, threshold=1.0, warmup_steps=-1), "warmup_steps"),
        (lambda: SpectralEarlyStopping(KEY, threshold=1.0, check_finite=1), "check_finite"),
        (lambda: SpectralEarlyStopping(KEY), "threshold"),
        (lambda: SpectralEarlyStopping(KEY, relative_to="previous"), "threshold"),
        (lambda: SpectralEarlyStopping(KEY, threshold=math.nan), "threshold"),
        (lambda: SpectralEarlyStopping(KEY, threshold=0.0, relative_to="lr"), "threshold"),
        (lambda: SpectralEarlyStopping("", threshold=1.0), "monitor"),
        (lambda: SpectralEarlyStopping.sharpness_spike(factor=1.0), "factor"),
        (lambda: SpectralEarlyStopping.rank_collapse("*", 0.0), "min_stable_rank"),
        (lambda: SpectralEarlyStopping.rank_collapse("", 2.0), "layer_glob"),
        (lambda: SpectralEarlyStopping.edge_of_stability(patience=0), "patience"),
    ],
)
def test_constructor_validation_names_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_ready_made_criteria():
    eos = SpectralEarlyStopping.edge_of_stability()
    assert (eos.monitor, eos.relative_to, eos.threshold, eos.mode, eos.patience) == (
        "spectral/hessian/lambda_1",
        "lr",
        1.0,
        "above",
        3,
    )
    collapse = SpectralEarlyStopping.rank_collapse("encoder.*", 2.5, patience=2)
    assert (collapse.monitor, collapse.mode, collapse.threshold, collapse.patience) == (
        "spectral/weights/encoder.*/stable_rank",
        "below",
        2.5,
        2,
    )
    spike = SpectralEarlyStopping.sharpness_spike(factor=3.0, action="warn")
    assert (spike.relative_to, spike.threshold, spike.action) == ("previous", 3.0, "warn")
    stochastic = SpectralEarlyStopping.stochastic_edge_of_stability(threshold=0.9)
    assert (stochastic.monitor, stochastic.threshold, stochastic.relative_to) == (
        "spectral/ntk/sgd_stability",
        0.9,
        None,
    )
    keys = {
        eos.state_key,
        spike.state_key,
        stochastic.state_key,
        SpectralEarlyStopping(KEY, threshold=1.0).state_key,
    }
    assert len(keys) == 4


# ---------------------------------------------------------------------------------------------- criteria
@pytest.mark.parametrize(
    "every_n_steps, script, expected_stop",
    [
        # fires at steps 1, 3, 4, 6, 7, 8: the third consecutive firing measurement is at step 8
        (1, [0, 9, 0, 9, 9, 0, 9, 9, 9, 0], 8),
        # measured every other step: stale values in between are not new measurements (else: step 5)
        (2, [0, 0, 9, 9, 9, 9, 0, 0, 9, 9, 9, 9, 9, 9], 12),
    ],
)
def test_patience_counts_consecutive_firing_measurements(tmp_path, every_n_steps, script, expected_stop):
    monitor = ScriptedMonitor({"value": script}, every_n_steps=every_n_steps)
    stopper = SpectralEarlyStopping(KEY, threshold=5.0, patience=3)
    with rank_zero_info_messages() as messages:
        trainer = fit(tmp_path, [monitor, stopper])
    assert trainer.global_step == stopper.stopped_step == expected_stop
    assert stopper.wait_count == 3
    ours = [m for m in messages if m.startswith("SpectralEarlyStopping")]
    assert ours == [stopper.reason]
    assert f"at step {expected_stop}" in ours[0] and f"`{KEY}` = 9 > 5" in ours[0]
    assert "3 consecutive firing measurement(s), patience 3" in ours[0] and "Stopping training" in ours[0]


@pytest.mark.parametrize("warmup_steps, expected_stop", [(0, 1), (5, 6)])
def test_mode_below_and_warmup(tmp_path, warmup_steps, expected_stop):
    monitor = ScriptedMonitor({"value": [0.5]})
    stopper = SpectralEarlyStopping(KEY, threshold=1.0, mode="below", patience=2, warmup_steps=warmup_steps)
    trainer = fit(tmp_path, [monitor, stopper])
    assert trainer.global_step == stopper.stopped_step == expected_stop
    assert "= 0.5 < 1" in stopper.reason


def test_mode_above_ignores_values_below_the_threshold(tmp_path):
    monitor = ScriptedMonitor({"value": [0.5, 4.99, 5.0]})  # 5.0 is not > 5.0
    stopper = SpectralEarlyStopping(KEY, threshold=5.0)
    trainer = fit(tmp_path, [monitor, stopper], max_steps=8)
    assert trainer.global_step == 8 and stopper.stopped_step is None and stopper.reason is None


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_value_acts_at_once(tmp_path, bad):
    stopper = SpectralEarlyStopping(KEY, threshold=100.0, patience=5)
    trainer = fit(tmp_path, [ScriptedMonitor({"value": [1.0, 1.0, bad, 1.0]}), stopper])
    assert trainer.global_step == stopper.stopped_step == 2
    assert f"`{KEY}` = {bad} is not finite" in stopper.reason and "without patience" in stopper.reason


def test_non_finite_values_are_ignored_without_check_finite(tmp_path):
    stopper = SpectralEarlyStopping(KEY, threshold=100.0, check_finite=False)
    trainer = fit(
        tmp_path, [ScriptedMonitor({"value": [1.0, math.nan, math.inf, 1.0]}), stopper], max_steps=6
    )
    assert trainer.global_step == 6 and stopper.stopped_step is None and stopper.reason is None


def test_a_non_finite_value_without_check_finite_leaves_the_patience_alone(tmp_path):
    # fires at 1, 2, (NaN skipped), 4: patience 3 is reached at step 4 (the NaN reset it before)
    script = {"value": [1.0, 9.0, 9.0, math.nan, 9.0, 9.0]}
    stopper = SpectralEarlyStopping(KEY, threshold=5.0, patience=3, check_finite=False)
    trainer = fit(tmp_path, [ScriptedMonitor(script), stopper], max_steps=8)
    assert trainer.global_step == stopper.stopped_step == 4


class ConstantLogging(TinyClassifier):
    """Logs a constant and a NaN from the first step, and a value in its own ``on_train_epoch_end``."""

    def training_step(self, batch, batch_idx):
        self.log("constant", 9.0)
        self.log("broken", math.nan)
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self):
        self.log("epoch_value", 9.0 + self.current_epoch)


def test_a_value_first_seen_during_warmup_is_judged_after_it(tmp_path):
    """Values seen during warmup are not recorded: a constant key (or a NaN loss) logged from the start is new
    at the first look after warmup (it was the same value ever after, so never judged)."""
    constant = SpectralEarlyStopping("constant", threshold=5.0, warmup_steps=3)
    trainer = fit(tmp_path / "constant", [constant], model=ConstantLogging())
    assert trainer.global_step == constant.stopped_step == 3
    broken = SpectralEarlyStopping("broken", threshold=5.0, warmup_steps=3)  # check_finite: at once
    trainer = fit(tmp_path / "nan", [broken], model=ConstantLogging())
    assert trainer.global_step == broken.stopped_step == 3 and "not finite" in broken.reason


def test_a_key_logged_in_the_modules_epoch_end_is_judged_before_the_next_epoch(tmp_path):
    """The module's ``on_train_epoch_end`` runs after the callbacks'; the next epoch's start judges its value at
    the step it was logged at, as the stock EarlyStopping would (before: one training step later)."""
    stopper = SpectralEarlyStopping("epoch_value", threshold=9.5)
    trainer = fit(tmp_path, [stopper], model=ConstantLogging())
    assert trainer.global_step == stopper.stopped_step == 8  # epoch 1 logs 10 > 9.5 at its end, step 8


def test_relative_to_lr_does_not_fire_without_a_single_sgd_limit(tmp_path):
    class TwoStepSizes(TinyClassifier):
        def configure_optimizers(self):
            return torch.optim.SGD(
                [{"params": self.net[0].parameters()}, {"params": self.net[4].parameters(), "lr": 0.01}],
                lr=0.1,
                momentum=0.9,
            )

    stopper = SpectralEarlyStopping(KEY, threshold=1.0, relative_to="lr", patience=1)
    with pytest.warns(UserWarning, match="no single SGD stability limit.*different settings"):
        trainer = fit(
            tmp_path, [ScriptedMonitor({"value": [1e6]}), stopper], model=TwoStepSizes(), max_steps=4
        )
    assert trainer.global_step == 4 and stopper.stopped_step is None  # λ = 1e6 judged against no limit


def test_sharpness_spike(tmp_path):
    # ratios to the previous value: 1.5, 1.67, (previous -1: cannot fire), 5 / -1 (cannot fire), 1.2, 2.17
    script = [1.0, 1.5, 2.5, -1.0, 5.0, 6.0, 13.0, 13.0]
    stopper = SpectralEarlyStopping.sharpness_spike(factor=2.0, monitor=KEY, patience=1)
    trainer = fit(tmp_path, [ScriptedMonitor({"value": script}), stopper])
    assert trainer.global_step == stopper.stopped_step == 6
    assert "[sharpness_spike]" in stopper.reason
    assert f"`{KEY}` = 13, ratio to its previous measurement 6 = 2.167 > 2" in stopper.reason


def test_rank_collapse_matches_a_glob_of_layers(tmp_path):
    script = {
        "net.0/stable_rank": [5.0],
        "net.4/stable_rank": [5.0, 5.0, 1.5],  # collapses at step 2
        "mean_stable_rank": [1.0],  # below 2 from the start, but not a layer key: never matched
        "net.0/sigma_max": [0.1],
    }
    stopper = SpectralEarlyStopping.rank_collapse("net.*", 2.0, patience=2)
    trainer = fit(tmp_path, [ScriptedWeightsMonitor(script), stopper])
    assert trainer.global_step == stopper.stopped_step == 3
    assert "`spectral/weights/net.4/stable_rank` = 1.5 < 2" in stopper.reason
    assert "[rank_collapse]" in stopper.reason


def test_a_pattern_that_never_matches_warns_once(tmp_path):
    stopper = SpectralEarlyStopping.rank_collapse("encoder*", 2.0)
    with pytest.warns(
        UserWarning, match="matched monitor='spectral/weights/encoder\\*/stable_rank'"
    ) as caught:
        trainer = fit(tmp_path, [ScriptedWeightsMonitor({"net.0/stable_rank": [1.0]}), stopper], max_steps=4)
    assert trainer.global_step == 4
    assert sum("SpectralEarlyStopping" in str(w.message) for w in caught) == 1


def test_a_key_its_monitor_does_not_log_warns_at_the_second_measurement(tmp_path):
    # the owner measures every 2 steps: 0, 2, 4, ...; the pattern lies under its prefix but names a key it
    # never logs (like `spectral/hessian/trace` without compute_trace=True)
    stopper = SpectralEarlyStopping("spectral/weights/trace", threshold=1.0)
    monitor = ScriptedWeightsMonitor({"net.0/stable_rank": [1.0]}, every_n_steps=2)
    with pytest.warns(
        UserWarning, match="by step 2 no key that ScriptedWeightsMonitor logged matched"
    ) as caught:
        trainer = fit(tmp_path, [monitor, stopper], max_steps=8)
    assert trainer.global_step == 8
    messages = [str(w.message) for w in caught if "SpectralEarlyStopping" in str(w.message)]
    assert len(messages) == 1  # not again at the end of fit
    assert "spectral/weights/net.0/stable_rank" in messages[0] and "compute_trace=True" in messages[0]


def test_a_key_that_first_appears_at_a_later_measurement_does_not_warn(tmp_path):
    # like `rotation` (needs a previous measurement) or Adam's `eos_ratio` (needs an optimizer step)
    stopper = SpectralEarlyStopping("spectral/weights/net.0/rotation", threshold=10.0)
    monitor = ScriptedWeightsMonitor({"net.0/rotation": [None, 0.1]}, at_train_start=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*SpectralEarlyStopping.*")
        trainer = fit(tmp_path, [monitor, stopper], max_steps=6)
    assert trainer.global_step == 6 and monitor.measured_steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "optimizer, limit",
    [
        (lambda p: torch.optim.SGD(p, lr=0.1), 2 / 0.1),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), (2 + 2 * 0.9) / 0.1),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True), (2 + 1.8) / (0.1 * (1 + 1.8))),
        (
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.2),
            3.8 / 0.05 - 0.2,
        ),
        (lambda p: torch.optim.Adam(p, lr=0.1), 2 / 0.1),  # not SGD: the plain lr·λ/2
    ],
)
def test_relative_to_lr_uses_the_optimizers_stability_limit(tmp_path, optimizer, limit):
    class Model(TinyClassifier):
        def configure_optimizers(self):
            return optimizer(self.parameters())

    script = [0.99 * limit, 0.995 * limit, 1.01 * limit]  # ratios 0.99, 0.995, 1.01
    stopper = SpectralEarlyStopping(KEY, relative_to="lr")
    trainer = fit(tmp_path, [ScriptedMonitor({"value": script}), stopper], model=Model())
    assert trainer.global_step == stopper.stopped_step == 2
    assert f"= {script[2]:.6g}, " in stopper.reason and " = 1.01 > 1 at step 2;" in stopper.reason


def test_warn_action_warns_once_per_episode_and_does_not_stop(tmp_path):
    monitor = ScriptedMonitor({"value": [9, 9, 9, 1, 9, 9, 1]})
    stopper = SpectralEarlyStopping(KEY, threshold=5.0, patience=2, action="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(tmp_path, [monitor, stopper], max_steps=10)
    ours = [str(w.message) for w in caught if str(w.message).startswith("SpectralEarlyStopping")]
    assert len(ours) == 2  # episodes: steps 0-2 (acts at step 1) and 4-5 (acts at step 5)
    assert "at step 1;" in ours[0] and "at step 5;" in ours[1] and "Training continues" in ours[1]
    assert trainer.global_step == 10 and stopper.stopped_step is None and not trainer.should_stop


@pytest.mark.parametrize("with_model_checkpoint", [False, True])
def test_checkpoint_and_stop_writes_the_checkpoint(tmp_path, with_model_checkpoint):
    callbacks = [
        ScriptedMonitor({"value": [1, 1, 9]}),
        SpectralEarlyStopping(KEY, threshold=5.0, action="checkpoint_and_stop"),
    ]
    overrides = {}
    directory = tmp_path
    if with_model_checkpoint:
        directory = tmp_path / "checkpoints"
        callbacks.append(ModelCheckpoint(dirpath=directory, save_top_k=0))
        overrides["enable_checkpointing"] = True
    trainer = fit(tmp_path, callbacks, **overrides)
    assert trainer.global_step == 2
    path = directory / "spectral-early-stop-step=2.ckpt"
    assert path.is_file() and str(path) in callbacks[1].reason
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["global_step"] == 2
    assert checkpoint["callbacks"][callbacks[1].state_key]["wait_count"] == 1
    assert sorted(p.name for p in directory.glob("*.ckpt")) == [path.name]


# ---------------------------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("script, expected_stop", [([9.0], 0), ([0.0, 9.0], 1)])
def test_stop_step_does_not_depend_on_the_callback_order(tmp_path, script, expected_stop):
    # placed before its monitor: it moves itself after it and judges each measurement in the same hook
    # (the initial one from on_train_start included); the other order is what every other test uses
    monitor = ScriptedMonitor({"value": script})
    stopper = SpectralEarlyStopping(KEY, threshold=5.0)
    trainer = fit(tmp_path, [stopper, monitor])
    assert trainer.global_step == stopper.stopped_step == expected_stop
    assert trainer.callbacks.index(stopper) == trainer.callbacks.index(monitor) + 1


@pytest.fixture
def reduction_steps(monkeypatch):
    """The ``global_step`` of every ``reduce_boolean_decision`` call (the collectives in DDP)."""
    steps: list[int] = []
    original = SingleDeviceStrategy.reduce_boolean_decision

    def spy(self, decision, all=True):
        steps.append(self.lightning_module.trainer.global_step)
        return original(self, decision, all=all)

    monkeypatch.setattr(SingleDeviceStrategy, "reduce_boolean_decision", spy)
    return steps


def test_a_monitor_key_is_evaluated_only_where_the_monitor_measures(tmp_path, reduction_steps):
    stopper = SpectralEarlyStopping(KEY, threshold=5.0)
    fit(tmp_path, [ScriptedMonitor({"value": [0.0]}, every_n_steps=3), stopper], max_steps=8)
    # "any new measurement?" and "any firing?" at the measurements 0, 3 and 6 only
    assert reduction_steps == [0, 0, 3, 3, 6, 6]


def test_any_other_key_is_evaluated_after_every_batch_and_epoch(tmp_path, reduction_steps):
    stopper = SpectralEarlyStopping("train_loss", threshold=100.0)
    fit(tmp_path, [stopper], max_steps=8)
    # train start and epoch starts (no key yet / nothing new); each batch end: a new loss, two decisions; each
    # epoch end: nothing new
    expected = [0, 0] + [s for step in range(1, 9) for s in [step] * (2 if step % 4 else 3)]
    expected.insert(expected.index(5), 4)  # the second epoch's start
    assert reduction_steps == expected


def test_a_sporadically_logged_key_counts_once_per_logged_value(tmp_path):
    class SometimesLogging(TinyClassifier):
        def training_step(self, batch, batch_idx):
            if self.global_step % 4 == 0:  # Lightning keeps (and re-wraps) the value until it is logged again
                self.log("sometimes", 9.0 + self.global_step)
            return super().training_step(batch, batch_idx)

    stopper = SpectralEarlyStopping("sometimes", threshold=5.0, patience=2)
    trainer = fit(tmp_path, [stopper], model=SometimesLogging())
    # logged in the batches that start at steps 0 and 4, seen after them at steps 1 and 5
    assert trainer.global_step == stopper.stopped_step == 5
    assert "`sometimes` = 13 > 5" in stopper.reason


def test_resume_keeps_the_counters_and_stops_at_the_same_step(tmp_path):
    # "value": fires at 2, 3, 5, 6, 7, ...  -> patience 3 is reached at step 7 (2 of 3 consumed at step 6)
    # "jump": triples at step 7 -> the spike warns at step 7 only if step 6's value survives the resume
    script = {"value": [1, 1, 9, 9, 1, 9, 9, 9, 9, 9], "jump": [1, 1, 1, 1, 1, 1, 1, 3, 3]}

    def callbacks():
        return [
            ScriptedMonitor(script),
            SpectralEarlyStopping(KEY, threshold=5.0, patience=3),
            SpectralEarlyStopping.sharpness_spike(monitor="spectral/fake/jump", action="warn"),
        ]

    checkpointing = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1)
    full = callbacks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(tmp_path / "full", [*full, checkpointing], enable_checkpointing=True)
    assert trainer.global_step == full[1].stopped_step == 7 and full[1].wait_count == 3
    assert [str(w.message).count("at step 7;") for w in caught if "[sharpness_spike]" in str(w.message)] == [
        1
    ]

    checkpoint = tmp_path / "ckpt" / "epoch=1-step=6.ckpt"
    states = torch.load(checkpoint, weights_only=False)["callbacks"]
    assert states[full[1].state_key]["wait_count"] == 2  # patience partially consumed
    assert states[full[2].state_key]["last"]["spectral/fake/jump"] == [6, 1.0]

    resumed = callbacks()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(tmp_path / "resumed", resumed, ckpt_path=str(checkpoint))
    assert resumed[0].measured_steps == [7]
    assert trainer.global_step == resumed[1].stopped_step == 7 and resumed[1].wait_count == 3
    assert not [w for w in caught if "checks nothing" in str(w.message)]  # counts restored, metrics not yet
    assert [str(w.message).count("at step 7;") for w in caught if "[sharpness_spike]" in str(w.message)] == [
        1
    ]


# ---------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_all_ranks_stop_at_the_same_step(tmp_path):
    process = run_ddp_script(Path(__file__).with_name("ddp_early_stopping_script.py"), str(tmp_path))
    output = process.stdout
    assert process.returncode == 0, output[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # only rank 1 fires (from step 3, patience 2): both ranks stop at step 4
    assert [r["global_step"] for r in ranks] == [4, 4]
    assert [r["stopped_step"] for r in ranks] == [4, 4]
    assert ranks[0]["reason"] == ranks[1]["reason"]
    assert "`spectral/fake/value` = 10 > 5 at step 4 on rank 1" in ranks[0]["reason"]
    assert output.count("SpectralEarlyStopping (") == 1  # one line, from rank zero


# -------------------------------------------------------------------------------- on a real Hessian monitor
class FullBatchRegressor(pl.LightningModule):
    """tanh MLP on generated regression data; plain SGD; one batch per epoch (the whole data set)."""

    def __init__(self, lr: float, batch_size: int = 48) -> None:
        super().__init__()
        self.lr = lr
        self.batch_size = batch_size
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    @staticmethod
    def data():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(48, 3, generator=generator)
        return x, torch.tanh(x @ torch.tensor([[1.0], [-2.0], [0.5]]))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.net(x) - y) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return DataLoader(TensorDataset(*self.data()), batch_size=self.batch_size, shuffle=False)


def model_with_lr_over_lambda_max(factor: float, **kwargs) -> tuple[FullBatchRegressor, float]:
    """A freshly initialised model whose SGD step size is ``factor / λ_max`` of its full-batch loss Hessian."""
    torch.manual_seed(0)
    model = FullBatchRegressor(lr=1.0, **kwargs)
    dim = sum(p.numel() for p in model.parameters())
    lambda_max = hessian_eigenvalues(
        model, lambda m, b: m.training_step(b, 0), model.data(), k=1, tol=1e-6, max_matvecs=dim
    ).eigenvalues[0]
    model.lr = factor / float(lambda_max)
    return model, float(lambda_max)


def test_edge_of_stability_stops_a_run_past_two_over_lr(tmp_path):
    patience = 3
    model, lambda_max = model_with_lr_over_lambda_max(2.5)  # η·λ_max/2 = 1.25 at initialisation
    monitor = HessianEigenMonitor(
        every_n_steps=1, tol=1e-6, max_matvecs=81, compute_batch_sharpness=False, strict=True
    )
    stopper = SpectralEarlyStopping.edge_of_stability(patience=patience)
    with rank_zero_info_messages() as messages:
        trainer = fit(tmp_path, [monitor, stopper], model=model, max_epochs=50)
    assert stopper.stopped_step is not None and trainer.global_step == stopper.stopped_step <= patience
    ours = [m for m in messages if m.startswith("SpectralEarlyStopping[edge_of_stability]")]
    assert ours == [stopper.reason]
    # the message quotes the measured λ_max and its ratio to the limit 2/η of plain SGD
    measured = float(trainer.callback_metrics["spectral/hessian/lambda_1"])
    limit = f"the stability limit {2 / model.lr:.6g} of SGD(lr={model.lr:g})"
    assert (
        f"`spectral/hessian/lambda_1` = {measured:.6g}, ratio to {limit} = {measured * model.lr / 2:.4g} > 1"
        in ours[0]
    )
    assert f"at step {trainer.global_step};" in ours[0]
    assert measured * model.lr / 2 > 1
    assert lambda_max * model.lr / 2 == pytest.approx(1.25)


def test_edge_of_stability_leaves_a_stable_run_alone(tmp_path):
    model, _ = model_with_lr_over_lambda_max(0.5)
    stopper = SpectralEarlyStopping.edge_of_stability(patience=1)
    monitor = HessianEigenMonitor(every_n_steps=1, compute_batch_sharpness=False, strict=True)
    trainer = fit(tmp_path, [monitor, stopper], model=model, max_epochs=8)
    assert trainer.global_step == 8 and stopper.stopped_step is None and stopper.wait_count == 0
    assert stopper._measurements.last["spectral/hessian/lambda_1"][0] == 8  # every measurement was evaluated


def test_works_alongside_stock_early_stopping_on_the_same_key(tmp_path):
    model, _ = model_with_lr_over_lambda_max(0.5, batch_size=12)  # 4 steps per epoch, stable
    stock = EarlyStopping(
        monitor="spectral/hessian/lambda_1", mode="min", stopping_threshold=1e6, check_on_train_epoch_end=True
    )
    ours = SpectralEarlyStopping.edge_of_stability(patience=1)
    monitor = HessianEigenMonitor(every_n_steps=1, compute_batch_sharpness=False, strict=True)
    trainer = fit(tmp_path, [monitor, stock, ours], model=model)
    # the stock callback stops at the first epoch end on its own criterion; ours watched every step quietly
    assert stock.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD and trainer.global_step == 4
    assert ours.stopped_step is None and ours.reason is None
    assert ours._measurements.last["spectral/hessian/lambda_1"][0] == 4


# ------------------------------------------------------------------------------------ on a real NTK monitor
NUM_EXAMPLES, MEASURED = 64, 16


def model_at(kappa: float, batch_size: int) -> tuple[Regressor, NTKTraceMonitor]:
    """``Regressor`` (``nn.MSELoss``, K = 2, plain SGD) with the step that puts the trace-based 𝒦 at
    initialisation, on the monitor's fixed batch of 16 examples, at ``kappa``; and that monitor."""
    torch.manual_seed(0)
    model = Regressor(lr=1.0, batch_size=batch_size, num_examples=NUM_EXAMPLES)
    x, y = model.train_dataloader().dataset.tensors
    trace = ntk_trace(model.eval(), x[:MEASURED], method="exact").trace
    model.train()
    at_unit_lr = sgd_stability(
        lr=1.0,
        batch_size=batch_size,
        ntk_num_examples=MEASURED,
        num_outputs=2,
        ntk_trace=trace,
        dataset_size=NUM_EXAMPLES,
        loss_scale=1.0,  # nn.MSELoss with K = 2: 2/K
    ).noise_kernel_norm_lower
    model.hparams.lr = kappa / at_unit_lr  # 𝒦_lower is linear in the step size
    monitor = NTKTraceMonitor(
        every_n_steps=1, method="exact", batch=(x[:MEASURED], y[:MEASURED]), strict=True
    )
    return model, monitor


def test_stops_a_run_past_the_stochastic_edge(tmp_path):
    stopper = SpectralEarlyStopping.stochastic_edge_of_stability(patience=2)
    model, monitor = model_at(3.0, batch_size=1)
    trainer = fit(tmp_path, [monitor, stopper], model=model, max_epochs=1)
    assert trainer.global_step == stopper.stopped_step == 1  # fired at steps 0 and 1
    assert "[stochastic_edge_of_stability]" in stopper.reason
    assert "`spectral/ntk/sgd_stability` = " in stopper.reason and "> 1" in stopper.reason  # finite, past 1


def test_leaves_a_run_well_below_the_edge_alone(tmp_path):
    stopper = SpectralEarlyStopping.stochastic_edge_of_stability(patience=1)
    model, monitor = model_at(0.05, batch_size=16)
    trainer = fit(tmp_path, [monitor, stopper], model=model, max_epochs=2)
    assert trainer.global_step == 8 and stopper.stopped_step is None and stopper.reason is None
    assert float(trainer.callback_metrics["spectral/ntk/sgd_stability"]) < 1.0
