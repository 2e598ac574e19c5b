"""One measurement of each monitor inside a real ``Trainer.fit``, at torch's and NumPy's default thread settings.

Run from the repository root::

    python -m benchmarks.bench_threads [--quick] [--device {cpu,cuda}]

and the ``threads`` section of ``benchmarks/RESULTS.md`` is rewritten.

The other modules pin every run to one thread (``torch.set_num_threads(1)``), which hides what users meet:
torch and NumPy each keep a thread pool of their own, and code that calls one between the other's threaded
products can make the two pools wait on each other (issue #26: NumPy's ``eigh`` inside every Lanczos loop).
This module therefore runs the same fits twice in one process:

* **default**: nothing touched (torch's default thread count, NumPy's bundled BLAS at its default);
* **pinned**: ``torch.set_num_threads(1)`` and NumPy/SciPy BLAS limited to one thread (threadpoolctl).

The run: an MLP 64→512→512→10 (ReLU) on scikit-learn's 8×8 digits (flattened, pixels / 16), cross-entropy,
plain SGD (lr 0.05), batch 64, shuffled; ``Trainer(max_steps=...)`` without logger, checkpointing or progress
bar. For each setting: a fit without monitors (the training step's wall time = fit time / steps), then one
fit per monitor at its defaults except the schedule (``every_n_steps=10``, explicit so that every fit has the
same measurements), each measurement timed (the monitor's measure-and-log step: the measurement itself, its
collectives and its logging). Reported: the median measurement (the first, with its first-call costs, left
out) in milliseconds and in training steps; for the weight monitor also the exact ``torch.linalg.svdvals`` of
the same three matrices (its reference; target: one measurement ≤ 2× that).

Last, the Lanczos loop's own cost per step beyond its product: ``lanczos`` on a diagonal operator (a product
that costs almost nothing), minus the products' own time, per step, at the MLP's parameter count and at a
small size (where only the per-step Python work and the small eigenproblems remain).

``--device cuda``: the fits train on the GPU (the monitors measure there; the small eigenproblems stay on the
CPU) and every timed region ends with ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import (
    Target,
    add_device_argument,
    device_option,
    limited_threads,
    log,
    machine_description,
    markdown_table,
    median_time,
    package_versions,
    quiet_lightning,
    synchronize,
    timed_fit,
    use_device_results,
    write_section,
)
from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor
from lightning_spectral.callbacks.base import SpectralMonitor
from lightning_spectral.linalg import lanczos

BATCH_SIZE, LR, SEED, EVERY = 64, 0.05, 0, 10
#: One weight measurement may cost at most this many times the exact singular values of the same matrices.
TARGET_SVDVALS_RATIO = 2.0
MONITORS: dict[str, Callable[[], SpectralMonitor]] = {
    "WeightSpectrumMonitor()": lambda: WeightSpectrumMonitor(every_n_steps=EVERY),
    "HessianEigenMonitor()": lambda: HessianEigenMonitor(every_n_steps=EVERY),
    "NTKTraceMonitor()": lambda: NTKTraceMonitor(every_n_steps=EVERY),
}


class DigitsMLP(pl.LightningModule):
    """64 → 512 → 512 → 10 with ReLU, cross-entropy, plain SGD."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=LR)


def digits() -> TensorDataset:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    return TensorDataset(x, torch.tensor(data.target, dtype=torch.long))


class MeasurementClock:
    """Times each of a monitor's measurements (its measure-and-log step, shadowed on the instance)."""

    def __init__(self, monitor: SpectralMonitor, device: str) -> None:
        self.seconds: list[float] = []
        inner = monitor._measure_and_log

        def timed(*args, **kwargs):
            synchronize(device)
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                synchronize(device)
                self.seconds.append(time.perf_counter() - start)

        monitor._measure_and_log = timed


def fit(
    data: TensorDataset, steps: int, monitor: SpectralMonitor | None, device: str
) -> tuple[float, DigitsMLP]:
    """One ``trainer.fit`` of a fresh model from the same seeds; its wall time and the trained model."""
    torch.manual_seed(SEED)
    model = DigitsMLP()
    loader = DataLoader(
        data, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(SEED)
    )
    seconds, _ = timed_fit([] if monitor is None else [monitor], model, loader, device, max_steps=steps)
    if monitor is not None and (monitor._disabled or monitor.num_measurements < 3):
        raise RuntimeError(
            f"{type(monitor).__name__} made {monitor.num_measurements} measurements (disabled: "
            f"{monitor._disabled}): the timing would not be that of the monitor at work."
        )
    return seconds, model


def lanczos_step_overhead(dim: int, steps: int, device: str) -> float:
    """Seconds per Lanczos step beyond the product, with a diagonal operator of size ``dim`` (float32)."""
    diagonal = torch.linspace(1.0, 2.0, dim, device=device)
    product_seconds = 0.0

    def matvec(v: Tensor) -> Tensor:
        nonlocal product_seconds
        synchronize(device)
        start = time.perf_counter()
        out = diagonal * v
        synchronize(device)
        product_seconds += time.perf_counter() - start
        return out

    generator = torch.Generator(device).manual_seed(SEED)
    lanczos(matvec, dim, 1, max_matvecs=steps, tol=1e-12, device=device, generator=generator)  # warm-up
    totals = []
    for _ in range(5):
        product_seconds = 0.0
        synchronize(device)
        start = time.perf_counter()
        result = lanczos(matvec, dim, 1, max_matvecs=steps, tol=1e-12, device=device, generator=generator)
        synchronize(device)
        totals.append((time.perf_counter() - start - product_seconds) / result.num_matvecs)
    return statistics.median(totals)


def one_setting(data: TensorDataset, steps: int, device: str) -> dict[str, float]:
    """Step time, per-monitor median measurement time, svdvals time and Lanczos overheads (seconds)."""
    fit(data, 5, None, device)  # first-call costs of Lightning and torch
    baseline, model = fit(data, steps, None, device)
    out = {"step": baseline / steps}
    for name, factory in MONITORS.items():
        monitor = factory()
        clock = MeasurementClock(monitor, device)
        fit(data, steps, monitor, device)
        out[name] = statistics.median(clock.seconds[1:])
    weights = [m.weight.detach().to(device) for m in model.net if isinstance(m, nn.Linear)]
    out["svdvals"] = median_time(
        lambda: [torch.linalg.svdvals(w) for w in weights], repeats=15, device=device
    )
    parameters = sum(p.numel() for p in model.parameters())
    out["lanczos_small"] = lanczos_step_overhead(1000, 40, device)
    out["lanczos_model"] = lanczos_step_overhead(parameters, 40, device)
    return out


def main(argv: list[str] | None = None) -> list[Target]:
    """Parse ``argv``, run, rewrite the ``threads`` section; returns the targets for ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 steps a fit instead of 80")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    use_device_results(args.device)
    with quiet_lightning():
        return run(args)


def run(args: argparse.Namespace) -> list[Target]:
    wall = time.perf_counter()
    steps = 40 if args.quick else 80
    data = digits()
    default_threads = torch.get_num_threads()
    log(f"[threads] default settings (torch {default_threads} threads)")
    results = {"default": one_setting(data, steps, args.device)}
    with limited_threads(1) as note:
        log("[threads] pinned to one thread")
        results["pinned"] = one_setting(data, steps, args.device)
    parameters = sum(p.numel() for p in DigitsMLP().parameters())
    rows = []
    for name in MONITORS:
        row = [f"`{name}`"]
        for setting in ("default", "pinned"):
            r = results[setting]
            row += [f"{r[name] * 1e3:.1f} ms", f"{r[name] / r['step']:.1f}"]
        rows.append(row)
    rows.append(
        ["exact `svdvals` of the 3 weights (reference)"]
        + [
            cell
            for setting in ("default", "pinned")
            for cell in (
                f"{results[setting]['svdvals'] * 1e3:.1f} ms",
                f"{results[setting]['svdvals'] / results[setting]['step']:.1f}",
            )
        ]
    )
    rows.append(
        ["training step (no monitor)"]
        + [
            cell
            for setting in ("default", "pinned")
            for cell in (f"{results[setting]['step'] * 1e3:.2f} ms", "1")
        ]
    )
    table = markdown_table(["", "default: time", "default: steps", "pinned: time", "pinned: steps"], rows)
    lanczos_rows = [
        [f"dim = {dim:,}"] + [f"{results[s][key] * 1e6:.0f} µs" for s in ("default", "pinned")]
        for dim, key in ((1000, "lanczos_small"), (parameters, "lanczos_model"))
    ]
    lanczos_table = markdown_table(["Lanczos step beyond its product", "default", "pinned"], lanczos_rows)
    ratio = results["default"]["WeightSpectrumMonitor()"] / results["default"]["svdvals"]
    met = ratio <= TARGET_SVDVALS_RATIO
    total = time.perf_counter() - wall
    command = (
        "python -m benchmarks.bench_threads" + (" --quick" if args.quick else "") + device_option(args.device)
    )
    body = f"""## Default thread settings (`benchmarks/bench_threads.py`)

Command: `{command}` (interpreter `{sys.executable}`), {total:.0f} s in all. Machine: {machine_description()}
({platform.system()}); device: {args.device}; torch's default {default_threads} threads. Packages: {package_versions(("torch", "numpy", "pytorch-lightning", "lightning-spectral"))}.

One measurement of each monitor inside `Trainer.fit` of an MLP 64→512→512→10 ({parameters:,} parameters) on the
digits, batch {BATCH_SIZE}, plain SGD, {steps} steps, `every_n_steps={EVERY}` (otherwise defaults): the median
measurement after the first, in milliseconds and in training steps of the same setting. *default*: torch and
NumPy untouched, as users run; *pinned*: `torch.set_num_threads(1)`, {note}

{table}

**Target (one `WeightSpectrumMonitor()` measurement ≤ {TARGET_SVDVALS_RATIO:g}× the exact `svdvals` of the same
matrices, default settings):** {"**met**" if met else "**missed**"}: {ratio:.2f}×.

The Lanczos loop's own work per step beyond the operator's product (a diagonal operator; 40 steps, k = 1):
reorthogonalization against the basis, the step's scalars, and the small tridiagonal eigenproblems of the
convergence checks (solved by torch in torch's thread pool, `linalg.lanczos.small_eigh`).

{lanczos_table}
"""
    write_section("threads", body)
    log(f"[threads] done in {total:.0f} s; RESULTS.md section 'threads' rewritten")
    return [
        Target(
            "threads: one WeightSpectrumMonitor() measurement / exact svdvals, MLP fit at default threads",
            f"≤ {TARGET_SVDVALS_RATIO:g}×",
            f"{ratio:.2f}×",
            met,
        )
    ]


if __name__ == "__main__":
    main()
