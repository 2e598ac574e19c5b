"""The monitors inside someone's training job: bad numbers, odd models and batches, no perturbation, no leaks."""

from __future__ import annotations

import csv
import gc
import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
import torchmetrics
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import LossRecorder, TinyClassifier, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_spectral.callbacks import (
    HessianEigenMonitor,
    NTKTraceMonitor,
    SpectralEarlyStopping,
    WeightSpectrumMonitor,
)


def every_monitor(**schedule):
    schedule = schedule or {"every_n_steps": 1}
    return [
        HessianEigenMonitor(k=2, compute_trace=True, compute_batch_sharpness=True, strict=True, **schedule),
        NTKTraceMonitor(
            method="exact", compute_lambda_max=True, compute_alignment=True, strict=True, **schedule
        ),
        WeightSpectrumMonitor(strict=True, histogram_every_n=1, **schedule),
    ]


def fit(tmp_path, callbacks, model=None, **overrides):
    """``model``: a module, or a class or factory to call after seeding (so that two runs start alike)."""
    pl.seed_everything(7, workers=True)
    model = model or TinyClassifier
    model = model if isinstance(model, nn.Module) else model()
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **overrides))
    trainer.fit(model)
    return trainer, model


# ---------------------------------------------------------------------------------------------- bad numbers
class PoisonWeights(pl.Callback):
    """Writes a NaN into the first layer's weight at the end of the batch after which ``global_step == step``
    (before the monitors, listed after it, measure that step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.net[0].weight[0, 0] = float("nan")


def test_non_finite_weights_are_logged_as_nan_with_one_warning_and_training_continues(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    monitors = every_monitor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = fit(tmp_path, [PoisonWeights(step=2), *monitors], logger=logger, max_epochs=2)
    assert trainer.global_step == 8  # training went on (strict=True: NaN is a finding, not a failure)
    assert not any(m._disabled for m in monitors)
    scalars = read_tensorboard_scalars(logger.log_dir)
    for key in ("spectral/hessian/lambda_1", "spectral/ntk/trace", "spectral/weights/net.0.weight/sigma_max"):
        steps = [step for step, _ in scalars[key]]
        values = dict(scalars[key])
        assert steps == list(range(9)), key  # every step logged, none skipped
        assert all(math.isfinite(values[s]) for s in (0, 1)), (key, values)  # before the poison
        assert all(math.isnan(values[s]) for s in range(2, 9)), (key, values)
    # the other layer's metrics stay finite at the poisoned step (only net.0 holds the NaN then)
    assert math.isfinite(dict(scalars["spectral/weights/net.4.weight/sigma_max"])[2])
    for monitor in monitors:
        name = type(monitor).__name__
        ours = [w for w in caught if str(w.message).startswith(f"{name}:") and "NaN" in str(w.message)]
        assert len(ours) == 1, (name, [str(w.message)[:100] for w in ours])


def test_check_finite_stops_the_run_on_the_first_nan_measurement(tmp_path):
    stopper = SpectralEarlyStopping("spectral/hessian/lambda_1", threshold=1e9, check_finite=True)
    trainer, _ = fit(
        tmp_path,
        [PoisonWeights(step=2), HessianEigenMonitor(every_n_steps=1, compute_batch_sharpness=False), stopper],
        max_epochs=5,
    )
    assert stopper.stopped_step == 2 and trainer.global_step == 2  # the poisoned step, without patience


# ---------------------------------------------------------------------------------------------- odd models
class DictData(Dataset):
    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randn(n, 2, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class DictModule(pl.LightningModule):
    """Dict batches, a dict returned by ``training_step``, ``self.log`` inside it."""

    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = ((self(batch["x"]) - batch["y"]) ** 2).mean()
        self.log("train_loss", loss)
        return {"loss": loss, "extra": loss.detach()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        return DataLoader(DictData(), batch_size=self.batch_size)


class NoMatrices(DictModule):
    """Parameters, but no weight matrix: an elementwise affine map."""

    def __init__(self) -> None:
        super().__init__()
        self.net = None
        self.scale = nn.Parameter(torch.ones(4))
        self.shift = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return (x * self.scale + self.shift)[:, :2]


class ReturnsNone(DictModule):
    """``training_step`` returns None (Lightning skips the step): there is no loss to measure."""

    def training_step(self, batch, batch_idx):
        super().training_step(batch, batch_idx)
        return None


@pytest.mark.parametrize(
    "model, expected",
    [
        (
            DictModule(),
            {"spectral/hessian/lambda_1", "spectral/ntk/trace", "spectral/weights/net.0.weight/sigma_max"},
        ),
        (
            DictModule(batch_size=1),
            {"spectral/hessian/lambda_1", "spectral/ntk/trace", "spectral/ntk/alignment"},
        ),
        (NoMatrices(), {"spectral/hessian/lambda_1", "spectral/ntk/trace"}),
    ],
    ids=["dict-batches", "batch-of-one", "no-weight-matrices"],
)
def test_odd_models_and_batches_are_measured(tmp_path, model, expected):
    trainer, _ = fit(tmp_path, every_monitor(every_n_steps=2), model=model, max_epochs=1)
    metrics = trainer.callback_metrics
    assert expected <= set(metrics)
    assert all(math.isfinite(float(v)) for k, v in metrics.items() if k.startswith("spectral/"))
    assert "train_loss" in metrics  # the user's own logging still works
    if isinstance(model, NoMatrices):
        assert not any(k.startswith("spectral/weights/") for k in metrics)


def test_training_step_returning_none_disables_the_hessian_monitor_with_a_clear_warning(tmp_path):
    monitor = HessianEigenMonitor(every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = fit(tmp_path, [monitor], model=ReturnsNone(), max_epochs=1)
    assert monitor._disabled and trainer.global_step == 4  # the epoch ran through; no crash
    ours = [str(w.message) for w in caught if str(w.message).startswith("HessianEigenMonitor:")]
    assert len(ours) == 1 and "must return a scalar loss tensor" in ours[0] and "loss_fn=" in ours[0]


# ---------------------------------------------------------------------------------------------- no perturbation
class ScheduledClassifier(TinyClassifier):
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)]


class AdamClassifier(TinyClassifier):
    """Under Adam the Hessian monitor also builds a train-mode operator (dropout masks, BatchNorm batch
    statistics) for the preconditioned sharpness, inside an eval-mode measurement."""

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


@pytest.mark.parametrize("accumulate_grad_batches", [1, 2])
def test_every_monitor_together_leaves_training_bit_identical(tmp_path, accumulate_grad_batches):
    """Dropout, BatchNorm, gradient accumulation, gradient clipping and a learning-rate scheduler."""
    common = dict(max_epochs=2, accumulate_grad_batches=accumulate_grad_batches, gradient_clip_val=0.5)
    baseline_losses, monitored_losses = LossRecorder(), LossRecorder()
    _, baseline = fit(tmp_path / "a", [baseline_losses], model=ScheduledClassifier, **common)
    monitors = every_monitor()
    stopper = SpectralEarlyStopping("spectral/hessian/lambda_1", threshold=1e9)
    trainer, monitored = fit(
        tmp_path / "b", [monitored_losses, *monitors, stopper], model=ScheduledClassifier, **common
    )
    assert all(m.num_measurements == 8 // accumulate_grad_batches + 1 for m in monitors)  # they really ran
    assert torch.equal(torch.stack(baseline_losses.losses), torch.stack(monitored_losses.losses))
    for (name, a), b in zip(baseline.state_dict().items(), monitored.state_dict().values()):
        assert torch.equal(a, b), name
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr() == [0.05]  # the scheduler did step


def test_adam_training_is_bit_identical_with_every_monitor(tmp_path):
    baseline_losses, monitored_losses = LossRecorder(), LossRecorder()
    _, baseline = fit(tmp_path / "a", [baseline_losses], model=AdamClassifier, max_epochs=2)
    monitors = every_monitor()
    trainer, monitored = fit(
        tmp_path / "b", [monitored_losses, *monitors], model=AdamClassifier, max_epochs=2
    )
    assert "spectral/hessian/preconditioned_lambda_1" in trainer.callback_metrics  # the Adam path ran
    assert torch.equal(torch.stack(baseline_losses.losses), torch.stack(monitored_losses.losses))
    for (name, a), b in zip(baseline.state_dict().items(), monitored.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(trainer.optimizers[0].state.values(), baseline.trainer.optimizers[0].state.values()):
        assert all(torch.equal(a[key], b[key]) for key in ("exp_avg", "exp_avg_sq")), "Adam's moments"


class LoaderClassifier(TinyClassifier):
    """``TinyClassifier`` whose loader is built by ``make_loader(dataset)``; records the order it trains on."""

    def __init__(self, make_loader) -> None:
        super().__init__(num_examples=48, batch_size=8)
        self.make_loader = make_loader
        self.seen: list[float] = []

    def on_train_batch_start(self, batch, batch_idx):  # called by the loop only (monitors call training_step)
        self.seen.append(float(batch[0][0, 0]))

    def train_dataloader(self):
        loader = super().train_dataloader()
        return self.make_loader(loader.dataset)


@pytest.mark.parametrize(
    "make_loader",
    [
        # RandomSampler and the workers' base seed draw from the loader's own generator, not the global RNG
        lambda data: DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5)),
        # the loader keeps its worker iterator for the next iter(): a batch drawn from it is gone from epoch 0
        lambda data: DataLoader(data, batch_size=8, num_workers=1, persistent_workers=True),
        lambda data: DataLoader(
            data,
            batch_size=8,
            shuffle=True,
            generator=torch.Generator().manual_seed(5),
            num_workers=1,
            persistent_workers=True,
        ),
    ],
    ids=["own-generator", "persistent-workers", "persistent-workers-own-generator"],
)
def test_drawing_the_measurement_batch_leaves_the_data_order_alone(tmp_path, make_loader):
    baseline_losses, monitored_losses = LossRecorder(), LossRecorder()
    _, baseline = fit(tmp_path / "a", [baseline_losses], model=lambda: LoaderClassifier(make_loader))
    monitor = HessianEigenMonitor(every_n_steps=100)
    _, monitored = fit(
        tmp_path / "b", [monitored_losses, monitor], model=lambda: LoaderClassifier(make_loader)
    )
    assert monitor.num_measurements == 1 and len(baseline.seen) == 12  # 2 epochs of 6 batches
    assert monitored.seen == baseline.seen
    assert torch.equal(torch.stack(baseline_losses.losses), torch.stack(monitored_losses.losses))


class MetricClassifier(TinyClassifier):
    """Updates a torchmetrics ``Accuracy`` (and a ``MetricCollection``, whose compute group shares states) in
    ``training_step`` and logs it per step and per epoch: the monitors call ``training_step`` too."""

    def __init__(self) -> None:
        super().__init__()
        self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)
        self.train_scores = torchmetrics.MetricCollection(
            [
                torchmetrics.Precision(task="multiclass", num_classes=3, average="macro"),
                torchmetrics.Recall(task="multiclass", num_classes=3, average="macro"),
            ]
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.train_acc(logits, y)
        self.train_scores.update(logits, y)
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        return nn.functional.cross_entropy(logits, y)

    def on_train_epoch_end(self):
        self.log_dict(self.train_scores.compute())
        self.train_scores.reset()


def test_torchmetrics_updated_in_training_step_log_the_same_values(tmp_path):
    def logged(name, callbacks):
        logger = CSVLogger(str(tmp_path), name=name)
        trainer, _ = fit(
            tmp_path / name, callbacks, model=MetricClassifier, logger=logger, log_every_n_steps=1
        )
        with open(f"{logger.log_dir}/metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        keys = ("step", "train_acc_step", "train_acc_epoch", "MulticlassPrecision", "MulticlassRecall")
        return trainer, [{key: row.get(key, "") for key in keys} for row in rows]

    _, baseline = logged("without", [])
    trainer, monitored = logged("with", [HessianEigenMonitor(every_n_steps=1, strict=True)])
    assert trainer.callbacks[0].num_measurements == 9  # train start and each of the 8 steps
    assert sum(bool(row["train_acc_step"]) for row in baseline) == 8
    assert sum(bool(row["MulticlassRecall"]) for row in baseline) == 2
    # the monitored run's CSV has extra rows (the spectral metrics); the user's values must be the same
    user = [row for row in monitored if any(row[key] for key in row if key != "step")]
    assert user == baseline


# ---------------------------------------------------------------------------------------------- memory
class TensorCensus(pl.Callback):
    """Live tensors (after a full garbage collection) at chosen steps, right after the monitors measured."""

    def __init__(self, steps) -> None:
        self.steps, self.counts = set(steps), {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in self.steps:
            gc.collect()
            self.counts[trainer.global_step] = sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.slow
def test_two_hundred_measurements_keep_no_tensors_alive(tmp_path):
    """Every monitor measures at every one of 200 steps: the number of live tensors does not grow (no graphs
    kept by ``create_graph=True``, no per-step state beyond the documented warm-start vectors)."""
    census = TensorCensus(steps=(20, 200))
    monitors = every_monitor()
    monitors[2].histogram_every_n = 0
    fit(tmp_path, [*monitors, census], max_steps=200, max_epochs=-1)  # callbacks run in order: census last
    assert all(m.num_measurements == 201 for m in monitors)
    assert census.counts[200] <= census.counts[20], census.counts


# ---------------------------------------------------------------------------------------------- resume
def test_resume_continues_every_monitor_like_an_uninterrupted_run(tmp_path):
    """A run checkpointed at step 8 (an epoch end: mid-epoch resumes replay the epoch's data differently) and
    resumed to step 12 logs the same series as one run to step 12: no step
    duplicated or missing, and the same values (schedule, warm-start vectors and the measurement count that
    seeds the probes come back from the checkpoint; the data order is fixed, so training is identical)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(name, max_steps, ckpt_path=None, checkpoint=None):
        logger = TensorBoardLogger(str(tmp_path), name=name, version=0)
        pl.seed_everything(7, workers=True)
        callbacks = every_monitor(every_n_steps=2) + ([checkpoint] if checkpoint else [])
        trainer = pl.Trainer(
            callbacks=callbacks,
            **trainer_kwargs(
                tmp_path / name, max_steps=max_steps, max_epochs=-1, logger=logger, enable_checkpointing=True
            ),
        )
        trainer.fit(DictModule(), ckpt_path=ckpt_path)
        return read_tensorboard_scalars(logger.log_dir)

    full = run("full", 12)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=8, save_top_k=-1)
    first = run("first", 8, checkpoint=checkpoint)
    resumed = run("resumed", 12, ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=8.ckpt"))
    keys = [k for k in full if k.startswith("spectral/")]
    assert {
        "spectral/hessian/lambda_2",
        "spectral/ntk/lambda_max",
        "spectral/weights/net.0.weight/rotation",
    } <= set(keys)
    for key in keys:
        combined = first.get(key, []) + resumed.get(key, [])
        assert [s for s, _ in combined] == [s for s, _ in full[key]], key
        for (_, a), (_, b) in zip(combined, full[key]):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-8), key
