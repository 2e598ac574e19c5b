"""Two-process CPU fits of the Hessian and NTK monitors under Lightning's ``ModelParallelStrategy`` (FSDP2's
``fully_shard``, every parameter a sharded ``DTensor``) and, for reference, under ``strategy="ddp"``. Run by
test_fsdp2_monitors.py as a script: ``python fsdp2_monitors_script.py <mode> <out_dir>``.

- ``ddp`` / ``fsdp2``: learning rate 0 (the weights stay those of the seed), every monitor at steps 0..2 on
  each rank's shard of the measurement batches; each rank writes its ``spectral/`` callback metrics
  (``rank<r>.json``) and its losses. ``fsdp2`` also runs the sharded path's monitors (``*_sharded``: nothing
  gathered, finite-difference Hessian products on the shards, the NTK trace from output-space probes).
- ``losses`` / ``losses-bare``: ``fsdp2`` at learning rate 0.2, with every monitor (both paths) and the stopping
  presets measuring every step / without any: each rank writes its loss curve (``rank<r>.json``).
- ``fail``: the Hessian monitor's loss raises on rank 1 at its third evaluation (inside Lanczos, between two
  all-reduced products), and on the sharded path rank 1 raises right after its third finite-difference product
  (after the strategy's forward/backward passes, before the next all-reduced inner product); ``strict=False``:
  both ranks must leave each measurement, disable both monitors and train to the end.
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

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, SpectralEarlyStopping

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for spectral_testing (run as a script)
from spectral_testing.two_process import FailingLoss, two_process_trainer  # noqa: E402

MAX_STEPS, NUM_EXAMPLES, BATCH_SIZE = 3, 32, 4


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


class Regressor(pl.LightningModule):
    """4 → 6 → 6 → 2 tanh MLP; under ModelParallelStrategy each layer and the whole module are fully_shard-ed."""

    def __init__(self, lr: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))

    def configure_model(self) -> None:
        if self.device_mesh is None:  # strategy="ddp"
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in (self.net[0], self.net[2], self.net[4]):
            fully_shard(layer, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return loss_fn(self, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(NUM_EXAMPLES, 4, generator=generator)
        y = torch.stack([x[:, 0] * x[:, 1], (x[:, 2] + x[:, 3]).sin()], dim=1)
        return DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE)


#: The Hessian monitor's settings on both paths.
HESSIAN = dict(
    k=2, tol=1e-6, max_matvecs=40, num_batches=2, compute_trace=True, compute_density=True, strict=True
)


def sharded_monitors(every: int = 1, suffix: str = "_sharded") -> list:
    """The monitors on the sharded path (no gathering), logging under ``spectral/hessian<suffix>/`` and
    ``spectral/ntk<suffix>/`` (``suffix=""``: the default names, which the stopping presets read)."""
    return [
        HessianEigenMonitor(
            every_n_steps=every,
            trace_num_matvecs=60,
            sharded_products="finite_difference",
            name=f"hessian{suffix}" if suffix else None,
            **HESSIAN,
        ),
        NTKTraceMonitor(
            every_n_steps=every,
            num_probes=64,
            sharded_products="sharded",
            name=f"ntk{suffix}" if suffix else None,
            strict=True,
        ),
    ]


def monitors(every: int = 1, suffix: str = "") -> list:
    """The monitors on the gathered path (``sharded_products="auto"``: this model fits), logging under
    ``spectral/<name><suffix>/``."""
    named = (lambda name: f"{name}{suffix}") if suffix else (lambda name: None)
    return [
        HessianEigenMonitor(every_n_steps=every, trace_num_matvecs=12, name=named("hessian"), **HESSIAN),
        NTKTraceMonitor(
            every_n_steps=every, method="exact", compute_lambda_max=True, name=named("ntk"), strict=True
        ),
        NTKTraceMonitor(every_n_steps=every, method="hutchinson", name=f"ntk_probes{suffix}", strict=True),
        # the exact Hessian trace (trace_num_matvecs >= P = 86: Hutch++ takes the e_i products), the reference of
        # the sharded path's stochastic one
        HessianEigenMonitor(
            every_n_steps=every,
            num_batches=2,
            compute_trace=True,
            trace_num_matvecs=100,
            compute_batch_sharpness=False,
            name=f"hessian_exact_trace{suffix}",
            strict=True,
        ),  # fmt: skip
    ]


class FailingProducts(HessianEigenMonitor):
    """On rank 1 the third finite-difference product raises after it is taken (a failure between the strategy's
    collectives and the next all-reduced inner product)."""

    def _sharded_operator(self, *args):
        operator = super()._sharded_operator(*args)
        product, count = operator.matvec, [0]

        def matvec(v):
            out = product(v)
            count[0] += 1
            if torch.distributed.get_rank() == 1 and count[0] >= 3:
                raise ValueError("injected failure on rank 1")
            return out

        operator.matvec = matvec
        return operator


class Record(pl.Callback):
    """Every rank: its training losses as the loop produced them and, at train end, its ``spectral/`` metrics
    and the parameters' types (the monitors must have met DTensors under fsdp2)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.losses = out_dir, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module):
        outcome = {
            "metrics": {
                k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("spectral/")
            },
            "losses": self.losses,
            "parameter_types": sorted({type(p).__name__ for p in pl_module.parameters()}),
            "global_step": trainer.global_step,
        }
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(outcome))


def fsdp2() -> ModelParallelStrategy:
    return ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)


def main(mode: str, out_dir: str) -> None:
    record = Record(out_dir)
    if mode in ("ddp", "fsdp2"):
        strategy = "ddp" if mode == "ddp" else fsdp2()
        sharded = sharded_monitors() if mode == "fsdp2" else []
        trainer = two_process_trainer(
            out_dir, [*monitors(), *sharded, record], strategy=strategy, max_steps=MAX_STEPS
        )
        trainer.fit(Regressor(lr=0.0))
    elif mode in ("losses", "losses-bare"):
        callbacks = [record]
        if mode == "losses":
            stoppers = [
                SpectralEarlyStopping.edge_of_stability(threshold=1e6),
                SpectralEarlyStopping.stochastic_edge_of_stability(threshold=1e6),
                SpectralEarlyStopping.sharpness_spike(factor=1e6),
            ]
            # the stopping presets read the sharded path's metrics (its monitors under the default names)
            callbacks = [*monitors(suffix="_gathered"), *sharded_monitors(suffix=""), *stoppers, record]
        trainer = two_process_trainer(out_dir, callbacks, strategy=fsdp2(), max_steps=2 * MAX_STEPS)
        trainer.fit(Regressor(lr=0.2))
    elif mode == "fail":
        monitor = HessianEigenMonitor(
            k=1,
            every_n_steps=1,
            loss_fn=FailingLoss(loss_fn),
            hvp_method="forward_over_reverse",  # one loss evaluation per product: the third is inside Lanczos
            compute_batch_sharpness=False,
            strict=False,
        )
        sharded = FailingProducts(k=1, every_n_steps=1, compute_batch_sharpness=False,
                                  sharded_products="finite_difference", name="hessian_sharded")  # fmt: skip
        trainer = two_process_trainer(
            out_dir, [monitor, sharded, record], strategy=fsdp2(), max_steps=MAX_STEPS
        )
        trainer.fit(Regressor(lr=0.2))
        disabled = [monitor._disabled, sharded._disabled]
        Path(out_dir, f"disabled{trainer.global_rank}.json").write_text(json.dumps(disabled))
    else:
        raise ValueError(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    if torch.distributed.is_initialized():  # tear gloo down before the interpreter does (an abort under load)
        torch.distributed.destroy_process_group()
