"""Scaling of one measurement of each monitor with the parameter count, relative to one training step.

Run from the repository root::

    python -m benchmarks.bench_scaling [--quick] [--device {cpu,cuda}]

and the ``scaling`` section of ``benchmarks/RESULTS.md`` and the plot ``benchmarks/scaling.png`` are
rewritten.

Models: MLPs ``64 → w → w → 10`` (ReLU, PyTorch default init, float32, CPU) with ``w`` chosen so that the
parameter count ``P`` runs over 1e4 … 1e6 (``--quick``) or 1e4 … 1e7 in half decades; one batch of ``B = 64``
standardized 8×8 digits (scikit-learn, no download) and their labels, mean cross-entropy. Measured on that
model and batch, each through the functional API the monitors call:

- ``step``: one training step, ``zero_grad()``, forward, ``backward()``, ``torch.optim.SGD(lr=0.01).step()``
  (the reference every other row is divided by);
- ``1 HVP``: ``HessianOperator(model, loss_fn, batch, method="double_backward", copy_params=False)`` and one
  ``matvec``: the gradient graph that ``HessianEigenMonitor`` (``hvp_method="double_backward"`` by default, no
  parameter copy) builds once per measurement, and one product through it;
- ``λ_max``: ``hessian_eigenvalues(model, loss_fn, batch, k=1, hvp_method="double_backward")`` at its defaults
  (``tol=1e-3``, ``max_matvecs=50``): Lanczos with full reorthogonalization, the Hessian monitor's measurement
  (without its batch sharpness);
- ``NTK trace``: ``ntk_trace(model, inputs)`` at its defaults (``method="auto"``);
- ``weights``: ``weight_spectra([m.matrix for m in weight_matrices(model)], 5)``, the weight monitor's call
  (``k=5``, ``method="auto"``).

Time: in this process, one warm-up call of each, then 5 rounds (11 below P ≈ 1e6 in the full mode) in which
every measurement runs once (round robin, so that load from other processes hits all alike); medians; ratios
to the step's median.
``torch.set_num_threads(1)``.

Peak memory on the CPU: torch's allocations are invisible to ``tracemalloc``, so the resident set size (RSS)
of a fresh subprocess per (size, measurement) is read from ``/proc/self/status``. The subprocess builds the
model and batch, runs the measurement once on the smallest MLP (lazy imports and one-time set-up stay out),
resets the RSS high-water mark (``echo 5 > /proc/self/clear_refs``; where that is refused it falls back to
``getrusage(RUSAGE_SELF).ru_maxrss``, the high-water mark since the process started), runs the measurement
once and reports ``VmHWM − VmRSS before``: the extra memory the call touched at its peak, inputs, model and
batch excluded. Ratios to the same number for the training step. Target: ``1 HVP`` ≤ 3× a training step's
peak memory (at the largest size, where the allocations dwarf the allocator's granularity).

``--device cuda`` (supported, not CPU-only): model, batch and inputs live on the GPU, the random draws of
the measurements come from a generator there (the HVP's vector is drawn on the CPU and moved), and every
timed call ends with ``torch.cuda.synchronize()``. Peak memory is then measured in this process, after the
timing, with torch's CUDA allocator statistics instead of the RSS: for each (size, measurement) a fresh
model and inputs on the GPU, ``torch.cuda.reset_peak_memory_stats()``, one call, and
``torch.cuda.max_memory_allocated()`` minus ``torch.cuda.memory_allocated()`` just before the call (the
caching allocator's reserve does not count; the timing's warm-up calls already did the one-time set-up).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import common
from benchmarks.common import (
    Target,
    add_device_argument,
    device_option,
    log,
    machine_description,
    markdown_table,
    package_versions,
    seeded,
    synchronize,
    use_device_results,
    write_section,
)
from lightning_spectral.functional import (
    HessianOperator,
    hessian_eigenvalues,
    ntk_trace,
    weight_matrices,
    weight_spectra,
)

TARGET_MEMORY_RATIO = 3.0
BATCH, K, SEED, LR = 64, 10, 0, 0.01
#: Widths ``w`` of ``64 → w → w → 10``: P ≈ 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7.
WIDTHS_FULL = (70, 140, 280, 510, 962, 1700, 3125)
WIDTHS_QUICK = (70, 280, 962)
#: The warm-up call's model: the smallest one, large enough to take the randomized SVD path of ``weights``.
WARMUP_WIDTH = 70
MEASUREMENTS = {
    "step": "training step",
    "hvp": "1 HVP (double backward)",
    "hessian": "λ_max (Lanczos, k=1)",
    "ntk": "NTK trace",
    "weights": "weight spectra (k=5)",
}
MIB = 2**20
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int  # rounds from P ≈ 1e6 on, where one λ_max takes seconds
    small_repeats: int  # rounds below
    widths: tuple[int, ...]

    def rounds(self, params: int) -> int:
        return self.repeats if params >= 900_000 else self.small_repeats


def settings(quick: bool) -> Settings:
    return Settings(True, 5, 5, WIDTHS_QUICK) if quick else Settings(False, 5, 11, WIDTHS_FULL)


def mlp(width: int) -> nn.Sequential:
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, K)
    )


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def digits_batch() -> tuple[Tensor, Tensor]:
    """``B`` standardized 8×8 digit images ``(B, 64)`` and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x[:BATCH].contiguous(), torch.tensor(data.target[:BATCH], dtype=torch.long)


def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def measurement(name: str, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Callable[[], Any]:
    """The zero-argument call that measures ``name`` once on ``model`` and ``batch`` (inputs allocated here, on
    the batch's device)."""
    device = batch[0].device
    if name == "step":
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)

        def step() -> None:
            optimizer.zero_grad()
            loss_fn(model, batch).backward()
            optimizer.step()

        return step
    if name == "hvp":
        v = torch.randn(num_params(model), generator=seeded(SEED)).to(device)
        return lambda: HessianOperator(
            model, loss_fn, batch, method="double_backward", copy_params=False
        ).matvec(v)
    if name == "hessian":
        return lambda: hessian_eigenvalues(
            model, loss_fn, batch, k=1, hvp_method="double_backward", generator=seeded(SEED, device)
        )
    if name == "ntk":
        return lambda: ntk_trace(model, batch[0], generator=seeded(SEED, device))
    if name == "weights":
        return lambda: weight_spectra(
            [m.matrix for m in weight_matrices(model)], 5, generator=seeded(SEED, device)
        )
    raise ValueError(f"unknown measurement {name!r}")


def result_info(name: str, result: Any) -> dict[str, Any]:
    """What the tables show of a measurement's result: λ_max's HVP count, the NTK trace's method."""
    if name == "hessian":
        return {"hvps": result.num_hvps}
    if name == "ntk":
        return {"method": result.method_used}
    return {}


# ------------------------------------------------------------------------------------------ memory (worker)


def status_kib(field_name: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def reset_high_water_mark() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return status_kib("VmHWM") <= status_kib("VmRSS") + 64


def worker(width: int, name: str, batch_file: str) -> dict[str, Any]:
    """In a fresh process: the peak RSS above the resident baseline during one call of ``name`` (the batch
    comes from ``batch_file``, written by the parent: no scikit-learn import here)."""
    torch.set_num_threads(1)
    batch = tuple(torch.load(batch_file))
    warm = mlp(WARMUP_WIDTH)
    measurement(name, warm, batch)()  # one-time costs (lazy imports, autograd set-up) stay out
    model = mlp(width)
    fn = measurement(name, model, batch)
    del warm
    gc.collect()
    before = status_kib("VmRSS")
    if reset_high_water_mark():
        how, start = "VmHWM", before
    else:  # the high-water mark since the process started; the model is the largest thing it held so far
        how, start = "ru_maxrss", max(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    result = fn()
    peak = status_kib("VmHWM") if how == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_mib": max(peak - start, 0) / 1024,
        "baseline_mib": before / 1024,
        "how": how,
    } | result_info(name, result)


def cuda_peak_memory(width: int, name: str, batch: tuple[Tensor, Tensor]) -> dict[str, Any]:
    """On CUDA, in this process: the peak of torch's CUDA allocations during one call of ``name`` above those
    allocated just before it (fresh model and inputs on the batch's device)."""
    device = batch[0].device
    fn = measurement(name, mlp(width).to(device), batch)
    gc.collect()
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {
        "peak_mib": (peak - before) / MIB,
        "baseline_mib": before / MIB,
        "how": "torch.cuda.max_memory_allocated",
    } | result_info(name, result)


def peak_memory(width: int, name: str, batch_file: str) -> dict[str, Any]:
    """:func:`worker` in a fresh subprocess; its last line of output is the JSON result."""
    command = [sys.executable, "-m", "benchmarks.bench_scaling", "--worker", str(width), name, batch_file]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"memory worker {width} {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ time


def median_times(
    width: int, batch: tuple[Tensor, Tensor], repeats: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each measurement on one model (on the batch's device), round robin over ``repeats``
    rounds."""
    device = batch[0].device
    model = mlp(width).to(device)
    calls = {
        name: measurement(name, copy.deepcopy(model) if name == "step" else model, batch)
        for name in MEASUREMENTS
    }
    info = {}
    for name, fn in calls.items():  # warm-up
        result = fn()
        if name == "hessian":
            info["hvps"] = result.num_hvps
        if name == "ntk":
            info["method"] = result.method_used
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}, info


# ------------------------------------------------------------------------------------------ report


@dataclass
class Row:
    width: int
    params: int
    seconds: dict[str, float]
    memory: dict[str, dict[str, Any]]
    info: dict[str, Any]

    def time_ratio(self, name: str) -> float:
        return self.seconds[name] / self.seconds["step"]

    def memory_ratio(self, name: str) -> float:
        """Peak over the step's peak; NaN where the step's peak is below half its gradients' size (freed memory
        reused without a new page: below what RSS can resolve)."""
        step = self.memory["step"]["peak_mib"]
        return self.memory[name]["peak_mib"] / step if step >= 0.5 * self.params * 4 / MIB else math.nan


def measure_width(width: int, batch: tuple[Tensor, Tensor], batch_file: str, repeats: int) -> Row:
    params = num_params(mlp(width))
    start = time.perf_counter()
    seconds, info = median_times(width, batch, repeats)
    if batch[0].device.type == "cuda":
        memory = {name: cuda_peak_memory(width, name, batch) for name in MEASUREMENTS}
    else:
        memory = {name: peak_memory(width, name, batch_file) for name in MEASUREMENTS}
    row = Row(width, params, seconds, memory, info)
    log(
        f"[scaling] w={width} P={params:,}: step {seconds['step'] * 1e3:.1f} ms, "
        + ", ".join(
            f"{n} {row.time_ratio(n):.1f}× / {fmt_ratio(row.memory_ratio(n))} mem"
            for n in MEASUREMENTS
            if n != "step"
        )
        + f" ({time.perf_counter() - start:.0f} s)"
    )
    return row


def time_table(rows: list[Row]) -> str:
    header = ["w", "P", "step [ms]"] + [f"{MEASUREMENTS[n]} / step" for n in MEASUREMENTS if n != "step"]
    header += ["HVPs of λ_max", "NTK method"]
    body = [
        [r.width, f"{r.params:,}", r.seconds["step"] * 1e3]
        + [f"{r.time_ratio(n):.3g}×" for n in MEASUREMENTS if n != "step"]
        + [r.info["hvps"], r.info["method"]]
        for r in rows
    ]
    return markdown_table(header, body)


def fmt_ratio(ratio: float) -> str:
    return "–" if not math.isfinite(ratio) else f"{ratio:.3g}×"


def memory_table(rows: list[Row]) -> str:
    header = ["w", "P", "parameters [MiB]", "step peak [MiB]"]
    header += [f"{MEASUREMENTS[n]} / step (MiB)" for n in MEASUREMENTS if n != "step"]
    body = [
        [r.width, f"{r.params:,}", r.params * 4 / MIB, r.memory["step"]["peak_mib"]]
        + [
            f"{fmt_ratio(r.memory_ratio(n))} ({r.memory[n]['peak_mib']:.3g})"
            for n in MEASUREMENTS
            if n != "step"
        ]
        for r in rows
    ]
    return markdown_table(header, body)


def plot(rows: list[Row], path: Path, device: str) -> None:
    """Log-log time and memory ratios against the parameter count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = [r.params for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, constrained_layout=True)
    for name in MEASUREMENTS:
        if name == "step":
            continue
        axes[0].plot(params, [r.time_ratio(name) for r in rows], marker="o", label=MEASUREMENTS[name])
        memory = [r.memory_ratio(name) for r in rows]
        axes[1].plot(params, [m if m > 0 else math.nan for m in memory], marker="o", label=MEASUREMENTS[name])
    axes[1].axhline(
        TARGET_MEMORY_RATIO, color="gray", linestyle="--", linewidth=1, label="target for 1 HVP (3×)"
    )
    memory_what = "peak memory (CUDA allocated)" if device == "cuda" else "peak memory (RSS)"
    for ax, what in zip(axes, ("time", memory_what)):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.6)
        ax.set_xlabel("parameters P")
        ax.set_ylabel(f"{what} / one training step's")
        ax.set_title(f"{what}, MLP 64→w→w→10, batch {BATCH}, {device.upper()}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes:
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def memory_method(device: str, hows: list[str]) -> str:
    """The section's paragraph on how peak memory was measured."""
    if device == "cuda":
        return """Peak memory: in this process, after the timing, for each (size, measurement) a fresh model and inputs on the
GPU, `torch.cuda.reset_peak_memory_stats()`, one call, and `torch.cuda.max_memory_allocated()` minus
`torch.cuda.memory_allocated()` just before the call: the extra memory torch's CUDA allocations reached at the
peak, model, batch and inputs excluded (exact to the allocation; the caching allocator's reserve does not
count). A ratio is given only where the step's peak is at least half the size of its gradients (P·4 bytes)."""
    return f"""Peak memory: in a fresh subprocess per (size, measurement), the RSS high-water mark during one call above the
RSS just before it (model, batch and inputs already built; a call on the w = {WARMUP_WIDTH} MLP first, so that
one-time set-up stays out; high-water mark from {" / ".join(f"`{h}`" for h in hows)}{", reset just before the call via `/proc/self/clear_refs`" if hows == ["VmHWM"] else ""}).
`tracemalloc` does not see torch's allocations. At the small sizes the numbers are at the allocator's
granularity (freed memory is reused without touching new pages) and say little: a ratio is given only where
the step's peak is at least half the size of its gradients (P·4 bytes); from P ≈ 1e5 on the numbers are the
tensors themselves."""


def main(argv: list[str] | None = None) -> list[Target] | None:
    """Parse ``argv``, run, rewrite the ``scaling`` section and plot; returns the targets for
    ``python -m benchmarks``. ``--worker W NAME`` is the memory subprocess (prints one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="P up to 1e6 instead of 1e7 (about 1 min)")
    parser.add_argument("--worker", nargs=3, metavar=("WIDTH", "NAME", "BATCH_FILE"), help=argparse.SUPPRESS)
    add_device_argument(parser)  # the CPU --worker ignores it: only the CPU memory measurement spawns workers
    args = parser.parse_args(argv)
    use_device_results(args.device)
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1], args.worker[2])), flush=True)
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> list[Target]:
    cfg = settings(args.quick)
    wall = time.perf_counter()
    batch = digits_batch()
    with tempfile.TemporaryDirectory() as folder:
        batch_file = str(Path(folder) / "batch.pt")
        torch.save(batch, batch_file)
        batch = (batch[0].to(args.device), batch[1].to(args.device))
        rows = [
            measure_width(width, batch, batch_file, cfg.rounds(num_params(mlp(width))))
            for width in cfg.widths
        ]
    image = common.RESULTS.with_name("scaling.png" if args.device == "cpu" else f"scaling_{args.device}.png")
    plot(rows, image, args.device)
    total = time.perf_counter() - wall
    largest = rows[-1]
    hvp_ratio, lanczos_ratio = largest.memory_ratio("hvp"), largest.memory_ratio("hessian")
    met = hvp_ratio <= TARGET_MEMORY_RATIO
    word = "**met**" if met else f"**missed** (by a factor {hvp_ratio / TARGET_MEMORY_RATIO:.2f})"
    command = (
        "python -m benchmarks.bench_scaling" + (" --quick" if cfg.quick else "") + device_option(args.device)
    )
    hows = sorted({m["how"] for r in rows for m in r.memory.values()})
    body = f"""## Scaling with the parameter count (`benchmarks/bench_scaling.py`)

Command: `{command}` (interpreter `{sys.executable}`), {total:.0f} s in all{" (quick mode: P up to 1e6)" if cfg.quick else ""}.
Machine: {machine_description()} ({platform.system()}); device: {args.device}; `torch.set_num_threads(1)`. Packages: {package_versions(("torch", "numpy", "scikit-learn", "lightning-spectral"))}.

One measurement of each monitor, through the functional API it calls, against one training step (forward,
backward, SGD step) on the same model and batch: MLPs 64→w→w→10 (ReLU, float32, {args.device.upper()}), one batch of {BATCH}
standardized digits, cross-entropy. `1 HVP`: `HessianOperator(..., method="double_backward", copy_params=False)`
and one `matvec` (the Hessian monitor's default product: it builds the gradient graph once per measurement and
reads the parameters without copying them);
`λ_max`: `hessian_eigenvalues(model, loss_fn, batch, k=1, hvp_method="double_backward")` at its defaults
(tol 1e-3, max_iter 50; without the monitor's batch sharpness); `NTK trace`: `ntk_trace(model, inputs)`;
`weight spectra`: `weight_spectra([m.matrix for m in weight_matrices(model)], 5)`.

Time: one warm-up call each, then {cfg.small_repeats} rounds ({cfg.repeats} from P ≈ 1e6 on), every measurement once per
round (round robin); medians.

{time_table(rows)}

{memory_method(args.device, hows)}

{memory_table(rows)}

![time and peak-memory ratios against P]({image.name})

**Target (1 HVP ≤ {TARGET_MEMORY_RATIO:g}× a training step's peak memory, P = {largest.params:,}):** {word}: {hvp_ratio:.2f}×.
The whole λ_max measurement (Lanczos keeps its basis, one P-vector per product, {largest.info["hvps"]} products
here) peaks at {lanczos_ratio:.2f}× the step's memory.
"""
    write_section("scaling", body)
    log(f"[scaling] done in {total:.0f} s; RESULTS.md section 'scaling' and {image.name} rewritten")
    return [
        Target(
            f"scaling: peak memory of 1 HVP (double backward) / a training step's, P = {largest.params:,}",
            f"≤ {TARGET_MEMORY_RATIO:g}×",
            f"{hvp_ratio:.2f}×",
            met,
            "" if not cfg.quick else "quick mode: P ≤ 1e6",
        )
    ]


if __name__ == "__main__":
    main()
