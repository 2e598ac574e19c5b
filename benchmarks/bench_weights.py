"""Weight-spectrum benchmarks: randomized vs exact SVD, warm vs cold start, batched vs looped, WeightWatcher.

Run from the repository root::

    python -m benchmarks.bench_weights [--quick] [--device {cpu,cuda}]

and the ``weights`` section of ``benchmarks/RESULTS.md`` is rewritten with the tables below.

1. **Randomized vs exact.** ``W = U diag(s) Vᵀ`` with ``s_i = 1/i`` and random orthonormal ``U``, ``V`` (QR of
   Gaussian matrices, built once per shape), so the true singular values are known exactly. The top
   ``K = 32`` values from :func:`weight_spectrum` (``method="randomized"``, several ``oversample`` /
   ``n_iter`` settings) are compared with ``s`` (worst relative error ``max_i |σ̂_i − s_i| / s_i`` over
   the top 32, worst over 3 sketch seeds) and timed against ``torch.linalg.svdvals(W)``. Target: ≤ 1e-3
   relative error at ≥ 10× the speed of the exact SVD on the largest shape.
2. **Warm vs cold start.** The same matrix is changed slightly, ``W' = W + ε‖W‖_F G/‖G‖_F`` (``G``
   Gaussian), and measured again with ``n_iter = 0, 1, …``: from a fresh Gaussian sketch (cold) and from the
   previous right singular vectors (warm, ``previous=``). The reference is ``torch.linalg.svdvals(W')``.
3. **Batched vs looped.** 12 equal-shape 512² layers: one :func:`weight_spectra` call against a Python loop of
   :func:`weight_spectrum`, for ``method="auto"`` (randomized at this size) and ``"exact"``.
4. **WeightWatcher.** On one MLP (random-init and heavy-tailed layers), per layer our exact ``alpha`` and
   ``σ_max`` against WeightWatcher's ``alpha`` and ``spectral_norm`` (which is ``λ_max = σ_max²``, the largest
   eigenvalue of ``WᵀW``), and the time per model (:mod:`benchmarks.weights_watcher`). WeightWatcher is
   imported lazily; without it the section says so.

``--device cuda``: the test matrices are drawn and factored on the GPU (from a generator there: other random
matrices than on the CPU, with the same known spectra), the sketches come from a generator on the GPU, the
MLP of section 4 is built on the CPU and moved, and every timed call ends with ``torch.cuda.synchronize()``.
WeightWatcher chooses its device itself, whatever ``--device`` says: wherever ``torch.cuda.is_available()``
(when it is imported) it copies the weights to NumPy in float16 and runs its SVDs with torch on the GPU,
elsewhere in float64 with SciPy; the section's sentence on the spectral-norm tolerance says which.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

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
    seeded,
    skipped,
    use_device_results,
    write_section,
)
from benchmarks.weights_watcher import weightwatcher_comparison
from lightning_spectral.functional import weight_spectra, weight_spectrum
from lightning_spectral.functional.weights.spectrum import DEFAULT_TOL

K = 32
TARGET_ERROR = 1e-3
TARGET_SPEEDUP = 10.0
#: ``(oversample, n_iter)`` settings of the randomized SVD that are timed.
CONFIGS = ((10, 2), (10, 4), (10, 5), (32, 2), (32, 3))
WARM_ITERATIONS = (0, 1, 2, 3, 4, 5, 6, 8)
BATCH_LAYERS, BATCH_SIZE = 12, 512
THREADS_NOTE = (
    "One torch thread by default (`--threads`), chosen on the 2-core development machines, whose cores are shared with other jobs: with 2 threads "
    "OpenMP's barrier waits under that contention made the same SVD 5–15× slower and erratic (2048² "
    "`svdvals`: 29–72 s with 2 threads vs 7.1–8.6 s with 1, measured side by side), which would make the "
    "ratios meaningless."
)


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int
    shapes: tuple[tuple[int, int], ...]
    warm_shapes: tuple[tuple[int, int], ...]
    perturbations: tuple[float, ...]


def settings(quick: bool) -> Settings:
    if quick:
        return Settings(True, 3, ((1024, 1024), (1024, 2752)), ((1024, 1024),), (1e-3,))
    return Settings(
        False, 5, ((1024, 1024), (4096, 4096), (4096, 11008)), ((1024, 1024), (2048, 2048)), (1e-3, 1e-2)
    )


def decaying_matrix(m: int, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(W, s)``: float32 ``W = U diag(s) Vᵀ`` with ``s_i = 1/i`` (float64) and random orthonormal factors,
    on ``generator``'s device."""
    r, device = min(m, n), generator.device
    s = 1.0 / torch.arange(1, r + 1, dtype=torch.float64, device=device)
    U = torch.linalg.qr(torch.randn(m, r, generator=generator, device=device)).Q
    V = torch.linalg.qr(torch.randn(n, r, generator=generator, device=device)).Q
    W = (U * s.float()) @ V.T
    return W, s


def top_error(values: Tensor, reference: Tensor, k: int = K) -> float:
    """``max_i |values_i − reference_i| / reference_i`` over the top ``k``."""
    values, reference = values[:k].double().cpu(), reference[:k].double().cpu()
    return float(((values - reference).abs() / reference).max())


def randomized(W: Tensor, oversample: int, n_iter: int, seed: int = 0, previous=None, tol=None):
    """The randomized ``weight_spectrum``: the raw sketch (``tol=None``), or with the residual check and
    Lanczos refinement of the default (``tol=DEFAULT_TOL``)."""
    return weight_spectrum(
        W,
        k=K,
        method="randomized",
        num_oversamples=oversample,
        num_power_iterations=n_iter,
        generator=seeded(seed, W.device),
        previous=previous,
        tol=tol,
    )


# ---------------------------------------------------------------------------------------------- section 1


class SeededRuns:
    """``fn()`` for :func:`median_time`: one randomized ``weight_spectrum`` per call, with a new sketch seed
    each call; keeps the worst top-``K`` relative error against ``reference`` over all calls."""

    def __init__(
        self, W: Tensor, reference: Tensor, oversample: int, n_iter: int, previous=None, tol=None
    ) -> None:
        self.W, self.reference, self.previous, self.tol = W, reference, previous, tol
        self.oversample, self.n_iter = oversample, n_iter
        self.calls, self.worst, self.refined = 0, 0.0, 0

    def __call__(self) -> None:
        result = randomized(self.W, self.oversample, self.n_iter, self.calls, self.previous, self.tol)
        self.calls += 1
        self.refined += int(result.refined)
        self.worst = max(self.worst, top_error(result.singular_values, self.reference))


def exact_runs(shape: tuple[int, int], cfg: Settings) -> tuple[int, int]:
    """``(warmup, repeats)`` of the exact SVD: fewer for the matrices whose SVD takes minutes here."""
    if cfg.quick or shape[0] * shape[1] < 4096 * 4096:
        return 1, cfg.repeats
    return 0, (1 if shape == cfg.shapes[-1] else 3)


def randomized_vs_exact(cfg: Settings, device: torch.device) -> tuple[str, dict]:
    rows, verdicts, matrices = [], [], {}
    best, exact_time = None, math.nan
    for m, n in cfg.shapes:
        start = time.perf_counter()
        W, s = decaying_matrix(m, n, seeded(m * 7 + n, device))
        log(f"[weights] built {m}x{n} in {time.perf_counter() - start:.1f} s")
        matrices[(m, n)] = (W, s)
        warmup, repeats = exact_runs((m, n), cfg)
        values: list[Tensor] = []
        exact_time = median_time(
            lambda W=W, values=values: values.append(torch.linalg.svdvals(W)),
            repeats=repeats,
            warmup=warmup,
            device=device,
        )
        exact_err = top_error(values[-1], s)
        del values
        rows.append(
            [f"{m}×{n}", "exact `torch.linalg.svdvals`", "–", exact_time, f"{exact_err:.1e}", 1.0, repeats]
        )
        log(f"[weights] {m}x{n} exact {exact_time:.2f} s ({repeats} runs), err {exact_err:.1e}")
        best = None
        for oversample, n_iter in CONFIGS:
            runs = SeededRuns(W, s, oversample, n_iter)
            t = median_time(runs, repeats=cfg.repeats, device=device)
            speedup = exact_time / t
            rows.append(
                [
                    f"{m}×{n}",
                    f"randomized, oversample={oversample}, n_iter={n_iter}",
                    f"{(K + oversample)}",
                    t,
                    f"{runs.worst:.1e}",
                    speedup,
                    cfg.repeats,
                ]
            )
            log(
                f"[weights] {m}x{n} randomized o={oversample} q={n_iter}: {t:.3f} s, "
                f"err {runs.worst:.1e}, {speedup:.1f}x"
            )
            if runs.worst <= TARGET_ERROR and (best is None or t < best[2]):
                best = (oversample, n_iter, t, runs.worst, speedup)
        # the default call: oversample=10, n_iter=2 with the residual check (Lanczos refinement above tol)
        runs = SeededRuns(W, s, 10, 2, tol=DEFAULT_TOL)
        t = median_time(runs, repeats=cfg.repeats, device=device)
        rows.append(
            [
                f"{m}×{n}",
                f"**default**: oversample=10, n_iter=2, checked (tol={DEFAULT_TOL:g}; refined in "
                f"{runs.refined}/{runs.calls} calls)",
                f"{K + 10}",
                t,
                f"{runs.worst:.1e}",
                exact_time / t,
                cfg.repeats,
            ]
        )
        log(f"[weights] {m}x{n} default checked: {t:.3f} s, err {runs.worst:.1e}, refined {runs.refined}")
        if runs.worst <= TARGET_ERROR and (best is None or t < best[2]):
            best = ("10 (default, checked)", 2, t, runs.worst, exact_time / t)
        if best is None:
            verdicts.append(f"- {m}×{n}: no tried setting reached ≤ {TARGET_ERROR:g} relative error.")
        else:
            o, q, t, err, speedup = best
            verdicts.append(
                f"- {m}×{n}: fastest setting with top-{K} error ≤ {TARGET_ERROR:g}: oversample={o}, n_iter={q}, "
                f"{t:.3g} s vs {exact_time:.3g} s exact, **{speedup:.1f}×** (error {err:.1e})."
            )
    table = markdown_table(
        ["shape", "method", "sketch l", "time [s]", f"max rel. error top-{K}", "speed-up", "repeats"], rows
    )
    return table + "\n\n" + "\n".join(verdicts), {
        "matrices": matrices,
        "best": best,
        "exact_time": exact_time,
    }


# ---------------------------------------------------------------------------------------------- section 2


def warm_vs_cold(cfg: Settings, matrices: dict, device: torch.device) -> str:
    rows, summary = [], []
    oversample = 10
    for m, n in cfg.warm_shapes:
        if (m, n) not in matrices:
            matrices[(m, n)] = decaying_matrix(m, n, seeded(m * 7 + n, device))
        W, _ = matrices[(m, n)]
        # the previous measurement, accurate to ~1e-4 on this spectrum (cold, n_iter=8)
        previous = randomized(W, oversample, 8, seed=100)
        for eps in cfg.perturbations:
            G = torch.randn(m, n, generator=seeded(1234, device), device=device)
            W2 = W + (eps * torch.linalg.matrix_norm(W) / torch.linalg.matrix_norm(G)) * G
            reference = torch.linalg.svdvals(W2)
            needed = {}
            for start in ("cold", "warm"):
                errors = []
                for q in WARM_ITERATIONS:
                    prev = previous if start == "warm" else None
                    err = max(
                        top_error(randomized(W2, oversample, q, seed, prev).singular_values, reference)
                        for seed in range(cfg.repeats + 1)  # the seeds of the timed runs below
                    )
                    errors.append(err)
                needed[start] = next((q for q, e in zip(WARM_ITERATIONS, errors) if e <= TARGET_ERROR), None)
                rows.append(
                    [f"{m}×{n}", f"{eps:g}", start]
                    + [f"{e:.1e}" for e in errors]
                    + [str(needed[start]) if needed[start] is not None else f"> {WARM_ITERATIONS[-1]}"]
                )
            log(f"[weights] warm/cold {m}x{n} eps={eps:g}: needed {needed}")
            if needed["cold"] is not None and needed["warm"] is not None:
                cold = SeededRuns(W2, reference, oversample, needed["cold"])
                warm = SeededRuns(W2, reference, oversample, needed["warm"], previous)
                t_cold = median_time(cold, repeats=cfg.repeats, device=device)
                t_warm = median_time(warm, repeats=cfg.repeats, device=device)
                summary.append(
                    f"- {m}×{n}, ε = {eps:g}: cold needs n_iter = {needed['cold']} ({t_cold * 1e3:.3g} ms per call, "
                    f"worst error over its {cold.calls} timed runs {cold.worst:.1e}), warm n_iter = {needed['warm']} "
                    f"({t_warm * 1e3:.3g} ms, {warm.worst:.1e}): warm takes {t_cold / t_warm:.2f}× less time."
                )
            else:
                cold_q, warm_q = (
                    f"> {WARM_ITERATIONS[-1]}" if needed[s] is None else str(needed[s])
                    for s in ("cold", "warm")
                )
                summary.append(f"- {m}×{n}, ε = {eps:g}: cold needs n_iter {cold_q}, warm n_iter {warm_q}.")
    header = (
        ["shape", "ε", "start"]
        + [f"err n_iter={q}" for q in WARM_ITERATIONS]
        + [f"n_iter for ≤ {TARGET_ERROR:g}"]
    )
    return markdown_table(header, rows) + "\n\n" + "\n".join(summary)


# ---------------------------------------------------------------------------------------------- section 3


def batched_vs_looped(cfg: Settings, device: torch.device) -> str:
    generator = seeded(5, device)
    mats = [decaying_matrix(BATCH_SIZE, BATCH_SIZE, generator)[0] for _ in range(BATCH_LAYERS)]
    exact = [torch.linalg.svdvals(w) for w in mats]
    rows = []
    for method in ("auto", "exact"):

        def looped(method=method):
            return [weight_spectrum(w, method=method, generator=generator) for w in mats]

        def batched(method=method):
            return weight_spectra(mats, method=method, generator=generator)

        t_loop = median_time(looped, repeats=cfg.repeats, device=device)
        t_batch = median_time(batched, repeats=cfg.repeats, device=device)
        results_loop, results_batch = looped(), batched()
        k = results_loop[0].singular_values.numel()
        err_loop = max(top_error(r.singular_values, e, k) for r, e in zip(results_loop, exact))
        err_batch = max(top_error(r.singular_values, e, k) for r, e in zip(results_batch, exact))
        used = results_batch[0].method_used
        rows.append(
            [
                method,
                used,
                k,
                t_loop * 1e3,
                t_batch * 1e3,
                t_loop / t_batch,
                f"{err_loop:.1e}",
                f"{err_batch:.1e}",
            ]
        )
        log(f"[weights] batched vs looped {method}: {t_loop * 1e3:.1f} ms vs {t_batch * 1e3:.1f} ms")
    speedups = ", ".join(f"{row[0]}: {row[5]:.2f}×" for row in rows)
    note = (
        f"Speed-up of one batched call over the loop: {speedups}. One call saves only the loop's per-call "
        "overhead: on one thread the batched decompositions do the same arithmetic one matrix after the other, "
        f"and at {BATCH_SIZE}² that overhead is small next to the decompositions."
    )
    return (
        markdown_table(
            [
                "method",
                "ran",
                "k",
                "loop of weight_spectrum [ms]",
                "one weight_spectra [ms]",
                "speed-up",
                "max rel. err loop",
                "max rel. err batched",
            ],
            rows,
        )
        + f"\n\n{note}"
    )


# ---------------------------------------------------------------------------------------------- main


PACKAGES = ("torch", "numpy", "scipy", "lightning-spectral", "weightwatcher")


def timed(title: str, fn: Callable[[], str]) -> str:
    start = time.perf_counter()
    body = fn()
    log(f"[weights] {title}: {time.perf_counter() - start:.0f} s")
    return body


def main(argv: list[str] | None = None) -> list[Target]:
    """Parse ``argv``, run, rewrite the ``weights`` section; returns the targets for ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller shapes (≤ 2 min)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see RESULTS.md)")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    use_device_results(args.device)
    with limited_threads(args.threads) as blas_note:
        return run(args, blas_note)


def run(args: argparse.Namespace, blas_note: str) -> list[Target]:
    cfg = settings(args.quick)
    wall = time.perf_counter()
    command = "python -m benchmarks.bench_weights" + (" --quick" if cfg.quick else "")
    command += ("" if args.threads == 1 else f" --threads {args.threads}") + device_option(args.device)
    device = torch.device(args.device)

    start = time.perf_counter()
    section1, extra = randomized_vs_exact(cfg, device)
    log(f"[weights] randomized vs exact: {time.perf_counter() - start:.0f} s")
    section2 = timed("warm vs cold", lambda: warm_vs_cold(cfg, extra["matrices"], device))
    section3 = timed("batched vs looped", lambda: batched_vs_looped(cfg, device))
    section4 = timed("weightwatcher", lambda: weightwatcher_comparison(cfg.repeats, device))
    total = time.perf_counter() - wall

    largest = cfg.shapes[-1]
    body = f"""## Weight spectra (`benchmarks/bench_weights.py`)

Command: `{command}` (interpreter `{sys.executable}`), {total:.0f} s in all{" (quick mode: smaller shapes, 3 repeats)" if cfg.quick else ""}.
Machine: {machine_description()} ({platform.system()}); device: {args.device}. Packages: {package_versions(PACKAGES)}.
Times are medians of {cfg.repeats} runs after one warm-up run{"" if cfg.quick else f", except the exact SVDs of the 4096-row matrices (minutes each here): 3 runs for 4096×4096 and a single run for the largest, {largest[0]}×{largest[1]}, without warm-up (column `repeats`)"}.
{THREADS_NOTE} {blas_note}

### Randomized vs exact SVD, top {K} singular values

`W = U diag(s) Vᵀ`, `s_i = 1/i`, `U`, `V` random orthonormal; error = `max_i |σ̂_i − s_i| / s_i` over
`i ≤ {K}` against the known `s`, worst over all the timed runs (warm-up included), each with its own
sketch seed (the exact row shows the float32 rounding floor). Randomized = `weight_spectrum(W, k={K}, method="randomized", oversample=…, n_iter=…, tol=None)`
(the raw sketch), and the **default** row the same call with the residual check of the default
(`tol={DEFAULT_TOL:g}`: results whose relative residual exceeds it are recomputed by Lanczos)
(the public call, including its Frobenius norm, copy and metrics); exact = `torch.linalg.svdvals(W)`,
float32 both. Target: ≤ {TARGET_ERROR:g} relative error at ≥ {TARGET_SPEEDUP:g}× on the largest shape.

{section1}

**Target ({largest[0]}×{largest[1]}):** {target_verdict(extra, cfg)}

### Warm vs cold start

`W' = W + ε‖W‖_F·G/‖G‖_F` (`G` Gaussian) after measuring `W` (cold, oversample 10, n_iter 8). Error of
the top {K} against `torch.linalg.svdvals(W')`, worst of {cfg.repeats + 1} sketch seeds (those of the timed
runs), oversample 10; warm =
`previous=` the spectrum of `W` (the sketch starts from its {K} right singular vectors plus 10 Gaussian
columns).

{section2}

### Batched vs looped: {BATCH_LAYERS} layers of {BATCH_SIZE}×{BATCH_SIZE}

Same decaying spectrum; default `k` (5); errors of the top-5 σ against `torch.linalg.svdvals`; the error
columns come from one more call each.

{section3}

### Against WeightWatcher

MLP 784→1024→1024→768→512→512→10 (PyTorch default init; layers `2` and `8` with Student-t entries, df 3
and 2; layer `4` with a planted power-law ESD, `λ_i` Pareto with density ∝ `λ^-3`, i.e. alpha = 3).
WeightWatcher's `spectral_norm` is `λ_max = σ_max²` of `WᵀW` (no normalization for PyTorch layers),
compared with our `sigma_max**2`; WeightWatcher's `num_pl_spikes` is its tail size.

{section4}
"""
    write_section("weights", body)
    log(f"[weights] done in {total:.0f} s; RESULTS.md section 'weights' rewritten")
    return targets(extra, cfg, watcher_ran="**not installed**" not in section4)


def targets(extra: dict, cfg: Settings, watcher_ran: bool) -> list[Target]:
    """The speed-up target on the largest shape, and whether the WeightWatcher comparison ran."""
    m, n = cfg.shapes[-1]
    name = f"weights: randomized vs exact SVD, {m}×{n}, top-{K} error ≤ {TARGET_ERROR:g}"
    goal = f"≥ {TARGET_SPEEDUP:g}× faster"
    note = "quick mode: not the target shape" if cfg.quick else ""
    if extra["best"] is None:
        found = Target(name, goal, f"no setting reached {TARGET_ERROR:g}", False, note)
    else:
        oversample, n_iter, _, err, speedup = extra["best"]
        measured = f"{speedup:.1f}× (error {err:.1e}, oversample={oversample}, n_iter={n_iter})"
        found = Target(name, goal, measured, speedup >= TARGET_SPEEDUP, note)
    watcher = "weights: per-layer alpha and σ_max² against WeightWatcher"
    if not watcher_ran:
        return [found, skipped(watcher, "weightwatcher")]
    return [
        found,
        Target(watcher, "tolerances in the section", "compared", None, "ran: see the weights section"),
    ]


def target_verdict(extra: dict, cfg: Settings) -> str:
    """Met / missed for the largest shape, from its fastest setting within the error target."""
    quick = " (quick mode: not the target shape)" if cfg.quick else ""
    if extra["best"] is None:
        return f"**missed**{quick}: no tried setting reached ≤ {TARGET_ERROR:g} relative error."
    oversample, n_iter, t, err, speedup = extra["best"]
    word = (
        "**met**" if speedup >= TARGET_SPEEDUP else f"**missed** (by a factor {TARGET_SPEEDUP / speedup:.2f})"
    )
    return (
        f"{word}{quick}: {speedup:.1f}× faster than the exact SVD ({t:.3g} s vs {extra['exact_time']:.3g} s) "
        f"at top-{K} error {err:.1e} with oversample={oversample}, n_iter={n_iter}."
    )


if __name__ == "__main__":
    main()
