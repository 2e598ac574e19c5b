"""Peak memory of a Hessian measurement under FSDP2 (``ModelParallelStrategy``, ``fully_shard``) against a
training step's, per rank, on 2 CPU processes (gloo); ``strategy="ddp"`` alongside for reference.

Run from the repository root (a few minutes on 2 cores; writes the ``fsdp2-memory`` section of RESULTS.md)::

    python -m benchmarks.bench_fsdp2_memory

Each strategy runs in its own two-process fit (``--worker <strategy> <json>``, relaunched by Lightning for
rank 1): an MLP 256→W→W→W→10 (W = 2048, float32, each Linear and the module ``fully_shard``-ed under FSDP2),
SGD, batches of 64 random examples, 3 steps; ``HessianEigenMonitor(k=1, max_matvecs=20, tol=1e-12,
compute_batch_sharpness=False)`` (at most 20 products; the number run is in the table) at steps 1 and 2: under
FSDP2 once with ``sharded_products="gather"`` (double-backward products on the gathered parameters, the default
``hvp_method``) and once with ``sharded_products="finite_difference"`` (central differences of two gradients
through FSDP2's sharded forward/backward, Lanczos vectors sharded), under DDP with double-backward products.
Peak: the RSS high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` just before) above the RSS
just before, around each training step (``on_train_batch_start`` → ``on_train_batch_end``: forward, backward,
optimizer step) and around each measurement; the largest over steps 2–3 and over the two measurements.
Before each phase glibc's ``malloc_trim(0)`` returns freed memory to the OS (else a phase reuses the previous
one's pages and shows no growth). ``tracemalloc`` does not see torch's allocations.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.bench_scaling import reset_high_water_mark, status_kib
from benchmarks.common import machine_description, markdown_table, write_section
from lightning_spectral.callbacks import HessianEigenMonitor

WIDTH, BATCH, STEPS = 2048, 64, 3
COMMAND = "python -m benchmarks.bench_fsdp2_memory"
LABELS = {
    "fsdp2": "FSDP2, sharded_products='gather'",
    "fsdp2-sharded": "FSDP2, sharded_products='finite_difference'",
    "ddp": "ddp",
}


class MLP(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(256, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
            nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10),
        )  # fmt: skip

    def configure_model(self) -> None:
        if self.device_mesh is None:  # ddp
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(2 * BATCH * STEPS, 256, generator=generator)
        return DataLoader(
            TensorDataset(x, torch.randint(0, 10, (len(x),), generator=generator)), batch_size=BATCH
        )


def _start() -> int:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(
        0
    )  # freed pages back to the OS: the next peak counts new allocations
    before = status_kib("VmRSS")
    if not reset_high_water_mark():
        raise RuntimeError("/proc/self/clear_refs refused: no per-phase peak on this machine")
    return before


def _peak_mib(before: int) -> float:
    return (status_kib("VmHWM") - before) / 1024


class StepPeaks(pl.Callback):
    """Listed first: its ``on_train_batch_end`` runs before the monitor's measurement."""

    def __init__(self) -> None:
        self.peaks: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = _start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.peaks.append(_peak_mib(self.before))


class MeasuredHessian(HessianEigenMonitor):
    def __init__(self, sharded_products: str = "gather") -> None:
        super().__init__(
            k=1, max_matvecs=20, tol=1e-12, every_n_steps=1, at_train_start=False, compute_batch_sharpness=False,
            compute_preconditioned=False, strict=True, sharded_products=sharded_products,
        )  # fmt: skip
        self.peaks: list[float] = []

    def _measure_and_log(self, trainer, pl_module):
        count, before = self.num_measurements, _start()
        super()._measure_and_log(trainer, pl_module)
        if self.num_measurements > count:
            self.peaks.append(_peak_mib(before))


class Save(pl.Callback):
    def __init__(self, path: str, steps: StepPeaks, monitor: MeasuredHessian) -> None:
        self.path, self.steps, self.monitor = path, steps, monitor

    def on_train_end(self, trainer, pl_module):
        local = sum(
            (p.to_local() if hasattr(p, "to_local") else p).numel() * p.element_size()
            for p in pl_module.parameters()
        )
        whole = sum(p.numel() * p.element_size() for p in pl_module.parameters())
        outcome = {
            "rank": trainer.global_rank,
            "parameters_local_mib": local / 2**20,
            "parameters_whole_mib": whole / 2**20,
            "num_parameters": sum(p.numel() for p in pl_module.parameters()),
            "step_peak_mib": max(self.steps.peaks[1:]),
            "measurement_peak_mib": max(self.monitor.peaks),
            "num_hvps": float(trainer.callback_metrics["spectral/hessian/num_hvps"]),
        }
        Path(f"{self.path}.rank{trainer.global_rank}").write_text(json.dumps(outcome))


def worker(strategy_name: str, path: str) -> None:
    torch.set_num_threads(1)
    from pytorch_lightning.strategies import ModelParallelStrategy

    strategy = (
        ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
        if strategy_name.startswith("fsdp2")
        else "ddp"
    )
    sharded_products = "finite_difference" if strategy_name == "fsdp2-sharded" else "gather"
    steps, monitor = StepPeaks(), MeasuredHessian(sharded_products)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_steps=STEPS, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, callbacks=[steps, monitor, Save(path, steps, monitor)],
    )  # fmt: skip
    trainer.fit(MLP())
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    import socket
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for strategy in ("fsdp2", "fsdp2-sharded", "ddp"):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            path = str(Path(folder, strategy))
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_fsdp2_memory", "--worker", strategy, path],
                env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"{strategy} worker failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
            for rank in (0, 1):
                r = json.loads(Path(f"{path}.rank{rank}").read_text())
                rows.append(
                    [
                        LABELS[strategy],
                        rank,
                        f"{r['num_parameters']:,}",
                        r["parameters_local_mib"],
                        r["parameters_whole_mib"],
                        r["step_peak_mib"],
                        r["measurement_peak_mib"],
                        f"{r['measurement_peak_mib'] / max(r['step_peak_mib'], 1e-9):.2f}×",
                        int(r["num_hvps"]),
                    ]
                )
    header = [
        "strategy (FSDP2: ModelParallelStrategy)", "rank", "P", "parameters held [MiB]", "whole parameters [MiB]",
        "step peak [MiB]", "Hessian measurement peak [MiB]", "measurement / step", "HVPs",
    ]  # fmt: skip
    body = f"""## FSDP2: peak memory of a sharded Hessian measurement (`benchmarks/bench_fsdp2_memory.py`)

Command: `{COMMAND}` (interpreter `{sys.executable}`). Machine: {machine_description()}; 1 torch thread per rank,
2 CPU processes (gloo). Setting: see the module docstring (MLP 256→{WIDTH}→{WIDTH}→{WIDTH}→10, batch {BATCH} per rank,
λ_1 by at most 20 products: gathered double backward, or finite differences on the shards). Peaks are RSS
high-water marks above the RSS before the phase (freed memory returned to the OS first; step: forward, backward,
SGD step).

{markdown_table(header, rows)}

Reading: `gather` gathers the whole parameters on every rank (one unsharded copy on top of the shards) and then
costs what the measurement costs under DDP (the gradient graph of double backward, Lanczos' basis of
whole-parameter vectors): its peak is set by the whole model, not by the shard. `finite_difference` gathers
nothing: each product is two of FSDP2's own forward/backward passes, and what it allocates beyond them is
shard-sized (a copy of the local shards, Lanczos' basis of `max_iter` shard-sized vectors, the two gradients).
**Measured, its peak is not below `gather`'s on this model** (5.0–5.3× a step against 5.6–6.2×): the gathered
copy is only 34 MiB here, and both peaks are dominated by something of several hundred MiB that this benchmark
does not break down (the Lanczos basis alone is 20 × 17 MiB shard-sized vectors on the sharded path; it took
twice the products, 14, at `tol=1e-12`, below the finite differences' accuracy). Not investigated further:
where a model's whole parameters do not fit, only the sharded path runs at all. (The FSDP2 step's peak is
above DDP's here: its all-gather and reduce-scatter buffers, on a model small for sharding.)
"""
    write_section("fsdp2-memory", body)
    print(body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1:])
