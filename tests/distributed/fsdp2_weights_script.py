"""Two-process CPU fits under Lightning's ``ModelParallelStrategy`` with FSDP2 (``fully_shard``): every weight
is a ``DTensor`` sharded across the ranks. Run by test_fsdp2_weights.py as a script (the strategy relaunches
``sys.argv`` for rank 1): ``python fsdp2_weights_script.py <mode> <out_dir>``.

- ``measure``: the weight monitor at steps 0, 2, 4. At train end every rank writes its ``spectral/``
  callback metrics (``rank<r>.json``) and rank 0 the consolidated weights (``weights.pt``, gathered by every
  rank), so the test can compare the logged spectra with single-process ones of the same matrices.
- ``fail``: the weight monitor's decomposition raises on rank 0 at the second matrix of its first measurement
  (between two gathers), ``strict=False``: both ranks must leave the measurement, disable the monitor and
  finish training (no rank left waiting in the next gather). Each rank writes ``rank<r>.json``.
- ``measure-gpu``: ``measure`` in one process on one CUDA device (NCCL, a mesh of one): the DTensor gather on
  CUDA (run by tests/gpu/test_cuda.py when a GPU is there).
- ``fsdp1-gpu``: ``strategy="fsdp"`` (FSDP1, CUDA only) on one device: the weight monitor refuses it at setup;
  ``refusal.json`` holds the exception's type and message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import ModelParallelStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks import WeightSpectrumMonitor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for spectral_testing (run as a script)
from spectral_testing.models import trainer_kwargs  # noqa: E402
from spectral_testing.two_process import two_process_trainer  # noqa: E402

MAX_STEPS, EVERY = 4, 2


def make_net() -> nn.Sequential:
    """Conv 1→6 (3×3) on 6×6 inputs → 96 → 24 → 5 (tanh): three sharded weight matrices."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Unflatten(1, (1, 6, 6)),
        nn.Conv2d(1, 6, 3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(96, 24),
        nn.Tanh(),
        nn.Linear(24, 5),
    )


class ShardedClassifier(pl.LightningModule):
    """``make_net`` and an embedding the loss uses (a fourth matrix), each layer and the whole sharded."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_net()
        self.embed = nn.Embedding(5, 24)

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in (self.net[1], self.net[4], self.net[6], self.embed):
            fully_shard(layer, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        return nn.functional.cross_entropy(logits, y) + 1e-3 * self.embed(y).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(32, 36, generator=generator)
        y = torch.randint(0, 5, (32,), generator=generator)
        return DataLoader(TensorDataset(x, y), batch_size=4)


class SaveOutcome(pl.Callback):
    """At train end: every rank's ``spectral/`` callback metrics; the whole weights (a gather on every rank)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        weights = {name: p.full_tensor().detach().clone() for name, p in pl_module.named_parameters()}
        if trainer.global_rank == 0:
            torch.save(weights, Path(self.out_dir, "weights.pt"))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("spectral/")}
        types = sorted({type(p).__name__ for p in pl_module.parameters()})
        outcome = {"metrics": metrics, "parameter_types": types, "global_step": trainer.global_step}
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(outcome))


class FailOnRank0(WeightSpectrumMonitor):
    """Raises on rank 0 when decomposing the second matrix of its first measurement."""

    calls = 0

    def _spectra(self, matrices, generator=None):
        type(self).calls += 1
        if torch.distributed.get_rank() == 0 and self.calls == 2:
            raise ValueError("injected failure on rank 0")
        return super()._spectra(matrices, generator)


def fit(out_dir: str, monitor: WeightSpectrumMonitor) -> pl.Trainer:
    trainer = two_process_trainer(
        out_dir,
        [monitor, SaveOutcome(out_dir)],
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        max_steps=MAX_STEPS,
    )
    trainer.fit(ShardedClassifier())
    return trainer


def gpu_trainer(out_dir: str, callbacks: list, strategy) -> pl.Trainer:
    """One CUDA device, the tests' quiet settings."""
    return pl.Trainer(
        **trainer_kwargs(
            out_dir,
            accelerator="gpu",
            devices=1,
            strategy=strategy,
            callbacks=callbacks,
            max_steps=MAX_STEPS,
            max_epochs=-1,
        )
    )


def fit_one_gpu(out_dir: str) -> None:
    monitor = WeightSpectrumMonitor(every_n_steps=EVERY, k=3, strict=True)
    strategy = ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1)
    gpu_trainer(out_dir, [monitor, SaveOutcome(out_dir)], strategy).fit(ShardedClassifier())


class UnshardedClassifier(ShardedClassifier):
    """``ShardedClassifier`` for strategies that wrap the model themselves (FSDP1)."""

    def configure_model(self) -> None:
        return None


def fsdp1_refusal(out_dir: str) -> None:
    trainer = gpu_trainer(out_dir, [WeightSpectrumMonitor(every_n_steps=EVERY, strict=True)], "fsdp")
    try:
        trainer.fit(UnshardedClassifier())
        outcome = {"type": None, "message": "no exception"}
    except Exception as error:  # recorded for the test to check
        outcome = {"type": type(error).__name__, "message": str(error)}
    Path(out_dir, "refusal.json").write_text(json.dumps(outcome))


if __name__ == "__main__":
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == "measure":
        fit(directory, WeightSpectrumMonitor(every_n_steps=EVERY, k=3, strict=True))
    elif mode == "fail":
        monitor = FailOnRank0(every_n_steps=EVERY, k=3, strict=False)
        trainer = fit(directory, monitor)
        Path(directory, f"disabled{trainer.global_rank}.json").write_text(json.dumps(monitor._disabled))
    elif mode == "measure-gpu":
        fit_one_gpu(directory)
    elif mode == "fsdp1-gpu":
        fsdp1_refusal(directory)
    if (
        torch.distributed.is_initialized()
    ):  # tear the process group down before the interpreter does (an abort under load)
        torch.distributed.destroy_process_group()
