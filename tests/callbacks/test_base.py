"""The base class through a real ``Trainer.fit``: schedule, logging, callback metrics, no side effects, resume."""

from __future__ import annotations

import csv
import importlib
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.strategies import SingleDeviceStrategy
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import LossRecorder, TinyClassifier, trainer_kwargs

from lightning_spectral.callbacks.base import SpectralMonitor, check_strategy_supported
from lightning_spectral.callbacks.spectral_early_stopping import SpectralEarlyStopping


class ParameterNormMonitor(SpectralMonitor):
    """A trivial monitor: the parameter norm, and which batch it measured on."""

    monitor_name = "test"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.measured_steps: list[int] = []
        self.seen_batches: list[torch.Tensor] = []

    def measure(self, trainer, pl_module, batches):
        self.measured_steps.append(trainer.global_step)
        self.seen_batches.append(batches[0][0].clone())
        norm = torch.cat([p.detach().flatten() for p in pl_module.parameters()]).norm()
        return {"param_norm": norm.item(), "step_echo": float(trainer.global_step)}


class MeddlingMonitor(SpectralMonitor):
    """Does everything a careless measurement could do to a training run."""

    monitor_name = "meddling"

    def measure(self, trainer, pl_module, batches):
        pl_module.train()  # BatchNorm updates its running statistics, dropout draws from the global RNG
        x, y = batches[0]
        for _ in range(3):
            loss = pl_module.training_step((x, y), 0)  # also calls self.log
            loss.backward()  # writes .grad
        pl_module.eval()
        torch.rand(100)  # consumes the global RNG
        for p in pl_module.parameters():
            p.requires_grad_(False)
        return {"loss": loss.item()}


def fit(tmp_path, callbacks, *, model=None, seed=7, **overrides):
    pl.seed_everything(seed, workers=True)
    model = model or TinyClassifier()
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **overrides))
    trainer.fit(model)
    return trainer, model


def test_logs_to_tensorboard_at_exactly_the_scheduled_steps(tmp_path):
    monitor = ParameterNormMonitor(every_n_steps=3, log_spacing=True)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer, _ = fit(tmp_path, [monitor], logger=logger, max_epochs=3)  # 4 batches/epoch -> 12 steps
    assert trainer.global_step == 12
    expected_steps = [0, 1, 2, 3, 6, 9, 12]
    scalars = read_tensorboard_scalars(logger.log_dir)
    assert [step for step, _ in scalars["spectral/test/step_echo"]] == expected_steps
    assert [value for _, value in scalars["spectral/test/step_echo"]] == [float(s) for s in expected_steps]
    assert [step for step, _ in scalars["spectral/test/param_norm"]] == expected_steps
    assert monitor.measured_steps == expected_steps
    assert torch.equal(trainer.callback_metrics["spectral/test/step_echo"], torch.tensor(12.0))


def test_every_logger_receives_the_metrics(tmp_path):
    monitor = ParameterNormMonitor(every_n_epochs=1, at_train_start=False)
    loggers = [TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path), name="csv")]
    fit(tmp_path, [monitor], logger=loggers, max_epochs=2)
    tb_steps = [s for s, _ in read_tensorboard_scalars(loggers[0].log_dir)["spectral/test/param_norm"]]
    assert tb_steps == [4, 8]
    rows = list(csv.DictReader(open(Path(loggers[1].log_dir) / "metrics.csv")))
    csv_steps = [int(r["step"]) for r in rows if r.get("spectral/test/param_norm")]
    assert csv_steps == [4, 8]


def test_measurement_batch_is_fixed_and_reproducible(tmp_path):
    first = ParameterNormMonitor(every_n_steps=2)
    fit(tmp_path, [first], max_epochs=1)
    assert all(torch.equal(b, first.seen_batches[0]) for b in first.seen_batches)
    second = ParameterNormMonitor(every_n_steps=2)
    fit(tmp_path, [second], max_epochs=1, seed=123)  # another training seed, same monitor seed
    assert torch.equal(first.seen_batches[0], second.seen_batches[0])
    third = ParameterNormMonitor(every_n_steps=2, seed=1)
    fit(tmp_path, [third], max_epochs=1)
    assert not torch.equal(first.seen_batches[0], third.seen_batches[0])


def test_user_batch_is_used(tmp_path):
    x = torch.full((5, 8), 0.5)
    monitor = ParameterNormMonitor(every_n_steps=4, batch=(x, torch.zeros(5, dtype=torch.long)))
    fit(tmp_path, [monitor], max_epochs=1)
    assert all(torch.equal(b, x) for b in monitor.seen_batches)


@pytest.mark.parametrize("accumulate_grad_batches", [1, 2])
def test_training_trajectory_is_bit_identical_with_a_meddling_monitor(tmp_path, accumulate_grad_batches):
    common = dict(max_epochs=3, accumulate_grad_batches=accumulate_grad_batches, gradient_clip_val=0.5)
    baseline_losses, monitored_losses = LossRecorder(), LossRecorder()
    _, baseline = fit(tmp_path, [baseline_losses], **common)
    monitors = [
        MeddlingMonitor(every_n_steps=1, strict=True),
        ParameterNormMonitor(every_n_steps=1, strict=True),
    ]
    trainer, monitored = fit(tmp_path, [monitored_losses, *monitors], **common)
    assert len(monitors[1].measured_steps) == 12 // accumulate_grad_batches + 1  # the monitors really ran
    assert len(baseline_losses.losses) == len(monitored_losses.losses) == 12
    # Bit-identical: every loss, every parameter and every BatchNorm statistic, to the last bit.
    assert torch.equal(torch.stack(baseline_losses.losses), torch.stack(monitored_losses.losses))
    for (name, a), b in zip(baseline.state_dict().items(), monitored.state_dict().values()):
        assert torch.equal(a, b), name
    assert all(p.requires_grad for p in monitored.parameters())
    # pl_module.log was silenced inside the measurement: only the user's own key was logged.
    assert "train_loss" in trainer.callback_metrics


def test_failure_is_reported_once_and_disables_the_monitor(tmp_path):
    class Failing(ParameterNormMonitor):
        def measure(self, trainer, pl_module, batches):
            super().measure(trainer, pl_module, batches)
            raise RuntimeError("boom")

    monitor = Failing(every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = fit(tmp_path, [monitor], max_epochs=1)
    messages = [str(w.message) for w in caught if "Failing" in str(w.message)]
    assert len(messages) == 1 and "boom" in messages[0] and "step 0" in messages[0]
    assert monitor.measured_steps == [0]
    assert trainer.global_step == 4  # training continued

    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, [Failing(every_n_steps=1, strict=True)], max_epochs=1)


def test_stock_early_stopping_can_monitor_a_spectral_key(tmp_path):
    class Constant(ParameterNormMonitor):
        def measure(self, trainer, pl_module, batches):
            return {"value": 1.0}

    stopper = EarlyStopping(
        monitor="spectral/test/value", patience=1, check_on_train_epoch_end=True, mode="min"
    )
    trainer, _ = fit(tmp_path, [Constant(every_n_steps=1), stopper], max_epochs=10)
    assert trainer.current_epoch < 9 and stopper.stopped_epoch > 0


def test_resume_continues_the_schedule_without_duplicates(tmp_path):
    schedule = dict(every_n_steps=3, log_spacing=True)
    full = ParameterNormMonitor(**schedule)
    fit(tmp_path / "full", [full], max_epochs=4)

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1)
    first = ParameterNormMonitor(**schedule)
    fit(tmp_path / "a", [first, checkpoint], max_epochs=2, enable_checkpointing=True)
    resumed = ParameterNormMonitor(**schedule)
    pl.seed_everything(7, workers=True)
    trainer = pl.Trainer(callbacks=[resumed], **trainer_kwargs(tmp_path / "b", max_epochs=4))
    trainer.fit(TinyClassifier(), ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=6.ckpt"))
    assert first.measured_steps[-1] == 6 and first.measured_steps == [0, 1, 2, 3, 6]
    assert resumed.measured_steps == [9, 12, 15]
    assert first.measured_steps + resumed.measured_steps == full.measured_steps
    assert resumed.num_measurements == full.num_measurements


class TwoOptimizers(TinyClassifier):
    """Manual optimization stepping two optimizers per batch: the global step moves by 2 per batch."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        first, second = self.optimizers()
        loss = super().training_step(batch, batch_idx)
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(loss)
        first.step()
        second.step()
        return loss

    def configure_optimizers(self):
        return (
            torch.optim.SGD(self.net[:2].parameters(), lr=0.1),
            torch.optim.SGD(self.net[2:].parameters(), lr=0.1),
        )


def test_a_global_step_that_jumps_is_measured_at_every_scheduled_step_it_passes(tmp_path):
    monitor = ParameterNormMonitor(every_n_steps=3)
    stopper = SpectralEarlyStopping("spectral/test/step_echo", threshold=11.0, patience=1)
    trainer, _ = fit(tmp_path, [monitor, stopper], model=TwoOptimizers(), max_epochs=3)
    # 4 batches per epoch, global step 2, 4, 6, ...: 3 is reached at 4, 9 at 10, ...
    assert monitor.measured_steps == [0, 4, 6, 10, 12]
    assert stopper.stopped_step == 12 and trainer.global_step == 12  # judged at its owner's measurements


def test_named_monitors_of_one_class_log_and_resume_apart(tmp_path):
    def monitors():
        return [
            ParameterNormMonitor(every_n_steps=2, name="norm_a"),
            ParameterNormMonitor(every_n_steps=3, name="norm_b"),
        ]

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    first = monitors()
    logger = CSVLogger(str(tmp_path), name="csv")
    fit(
        tmp_path / "a",
        [*first, checkpoint],
        max_steps=4,
        max_epochs=10,
        logger=logger,
        enable_checkpointing=True,
    )
    assert first[0].state_key != first[1].state_key
    with open(f"{logger.log_dir}/metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    logged = {key: [int(row["step"]) for row in rows if row.get(key)] for key in rows[0]}
    assert logged["spectral/norm_a/step_echo"] == [0, 2, 4] and logged["spectral/norm_b/step_echo"] == [0, 3]
    resumed = monitors()
    pl.seed_everything(7, workers=True)
    trainer = pl.Trainer(callbacks=resumed, **trainer_kwargs(tmp_path / "b", max_steps=8, max_epochs=10))
    trainer.fit(TinyClassifier(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=4.ckpt"))
    assert resumed[0].measured_steps == [6, 8] and resumed[0].num_measurements == 5
    assert resumed[1].measured_steps == [6] and resumed[1].num_measurements == 3


def test_monitors_that_would_log_under_one_prefix_are_refused(tmp_path):
    class OtherNormMonitor(ParameterNormMonitor):
        monitor_name = "other"

    with pytest.raises(ValueError, match="both log under 'spectral/shared/'.*`name=`"):
        fit(
            tmp_path,
            [
                ParameterNormMonitor(every_n_steps=2, name="shared"),
                OtherNormMonitor(every_n_steps=2, name="shared"),
            ],
        )
    # two of one class without names share a checkpoint state key: Lightning refuses them when the Trainer is built
    with pytest.raises(RuntimeError, match="state_key"):
        pl.Trainer(callbacks=[ParameterNormMonitor(every_n_steps=2), ParameterNormMonitor(every_n_steps=3)])
    with pytest.raises(ValueError, match="`name`"):
        ParameterNormMonitor(every_n_steps=2, name="a/b")


def test_a_changed_schedule_on_resume_keeps_the_monitors_state(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    first = ParameterNormMonitor(every_n_steps=4)
    fit(tmp_path / "a", [first, checkpoint], max_steps=4, max_epochs=10, enable_checkpointing=True)
    resumed = ParameterNormMonitor(every_n_steps=2)  # measure more often from now on
    pl.seed_everything(7, workers=True)
    trainer = pl.Trainer(callbacks=[resumed], **trainer_kwargs(tmp_path / "b", max_steps=8, max_epochs=10))
    trainer.fit(TinyClassifier(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=4.ckpt"))
    assert first.measured_steps == [0, 4]
    assert resumed.measured_steps == [6, 8] and resumed.num_measurements == 4  # step 4 not measured again


def test_an_epoch_cut_short_and_resumed_is_measured_once_at_its_end(tmp_path):
    # TinyClassifier: 4 steps per epoch; epochs end at steps 4, 8, 12
    schedule = dict(every_n_epochs=1, at_train_start=False)
    full = ParameterNormMonitor(**schedule)
    fit(tmp_path / "full", [full], max_steps=12, max_epochs=10)
    assert full.measured_steps == [4, 8, 12]

    first = ParameterNormMonitor(**schedule)
    fit(tmp_path / "a", [first], max_steps=6, max_epochs=10, enable_checkpointing=True)  # stops mid-epoch 1
    assert first.measured_steps == [4]  # not at step 6: epoch 1 has not ended
    (checkpoint,) = (tmp_path / "a").rglob("*.ckpt")
    resumed = ParameterNormMonitor(**schedule)
    pl.seed_everything(7, workers=True)
    trainer = pl.Trainer(callbacks=[resumed], **trainer_kwargs(tmp_path / "b", max_steps=12, max_epochs=10))
    trainer.fit(TinyClassifier(), ckpt_path=str(checkpoint))
    assert first.measured_steps + resumed.measured_steps == full.measured_steps
    assert resumed.num_measurements == full.num_measurements


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"every_n_steps": 1, "num_batches": 0}, "num_batches"),
        ({"every_n_steps": 1, "seed": -1}, "seed"),
        ({"every_n_steps": 1, "strict": 1}, "strict"),
    ],
)
def test_constructor_validation(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        ParameterNormMonitor(**kwargs)


def test_num_batches_larger_than_the_dataloader_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="num_batches"):
        fit(tmp_path, [ParameterNormMonitor(every_n_steps=1, num_batches=5, strict=True)], max_epochs=1)


@pytest.mark.parametrize("package", ["pytorch_lightning", "lightning.pytorch"])
@pytest.mark.parametrize("name", ["FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy"])
def test_sharded_strategies_are_refused_with_the_alternatives(package, name):
    """Lightning's FSDP needs CUDA, so no CPU fit reaches the FSDPStrategy refusal: the check runs on the
    strategy classes."""
    strategy_class = getattr(importlib.import_module(f"{package}.strategies"), name)
    strategy = strategy_class.__new__(strategy_class)  # no process group or device needed for the check
    with pytest.raises(NotImplementedError, match=rf"does not support {name}.*strategy='ddp'"):
        check_strategy_supported(strategy, "HessianEigenMonitor")
    check_strategy_supported(SingleDeviceStrategy(device="cpu"), "HessianEigenMonitor")  # fine
    # A monitor that gathers DTensor parameters (the weight monitor) runs under ModelParallelStrategy (FSDP2,
    # tested in test_fsdp2_weights.py) and names it where it cannot run.
    if name == "ModelParallelStrategy":
        check_strategy_supported(strategy, "WeightSpectrumMonitor", supports_dtensor_parameters=True)
    else:
        with pytest.raises(NotImplementedError, match=rf"does not support {name}.*ModelParallelStrategy"):
            check_strategy_supported(strategy, "WeightSpectrumMonitor", supports_dtensor_parameters=True)


def test_every_monitor_runs_on_dtensor_parameters():
    from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor

    assert WeightSpectrumMonitor.supports_dtensor_parameters  # one matrix gathered at a time
    assert not WeightSpectrumMonitor.measures_gathered_parameters
    for monitor in (HessianEigenMonitor, NTKTraceMonitor):  # on the gathered module (test_fsdp2_monitors.py)
        assert monitor.supports_dtensor_parameters and monitor.measures_gathered_parameters


@pytest.mark.parametrize(
    "name, held", [("FSDPStrategy", "FSDP1 holds .*FlatParameter"), ("DeepSpeedStrategy", "ZeRO-3")]
)
def test_fsdp1_and_deepspeed_refusals_say_what_is_unsupported_and_what_to_use(name, held):
    strategy_class = getattr(importlib.import_module("pytorch_lightning.strategies"), name)
    strategy = strategy_class.__new__(strategy_class)
    with pytest.raises(NotImplementedError, match=rf"{held}.*Use ModelParallelStrategy.*strategy='ddp'"):
        check_strategy_supported(strategy, "NTKTraceMonitor", supports_dtensor_parameters=True)


def test_tensor_parallel_meshes_are_refused_by_the_data_parallel_monitors():
    """The mesh is a stand-in (a tensor-parallel mesh of size 2 needs two processes): the check reads only its
    dimension names and sizes."""
    from pytorch_lightning.strategies import ModelParallelStrategy

    from lightning_spectral.callbacks.base import check_data_parallel_mesh

    class Mesh:
        mesh_dim_names = ("data_parallel", "tensor_parallel")

        def __init__(self, sizes):
            self.sizes = dict(zip(self.mesh_dim_names, sizes))

        def __getitem__(self, name):
            return type("Dim", (), {"size": lambda _, n=self.sizes[name]: n})()

    strategy = ModelParallelStrategy.__new__(ModelParallelStrategy)
    strategy._device_mesh = Mesh((1, 2))
    with pytest.raises(NotImplementedError, match=r"tensor_parallel_size=2.*tensor_parallel_size=1"):
        check_data_parallel_mesh(strategy, "HessianEigenMonitor")
    strategy._device_mesh = Mesh((2, 1))
    check_data_parallel_mesh(strategy, "HessianEigenMonitor")  # fine


def test_state_key_is_cached_and_follows_the_name():
    """Lightning reads ``state_key`` around every hook call; it is built once, and again only if ``name`` changes."""
    from lightning_spectral.callbacks import HessianEigenMonitor

    monitor = HessianEigenMonitor()
    assert monitor.state_key == "HessianEigenMonitor{'name': 'hessian'}"
    assert monitor.state_key is monitor.state_key  # the cached string, not a new one per call
    monitor.name = "head"
    assert monitor.state_key == "HessianEigenMonitor{'name': 'head'}"
