"""Hessian eigenvalue benchmarks: our Lanczos against PyHessian, hessian-eigenthings and curvlinops + eigsh.
Run from the repository root::

    python -m benchmarks.bench_hessian [--quick] [--no-write] [--device {cpu,cuda}]

and the ``hessian`` section of ``benchmarks/RESULTS.md`` is rewritten with the tables below (``--no-write``
prints it instead). Everything runs in one process on the same float32 models and the same fixed batch, so
the ratios are comparable even on a noisy machine.

``--device cuda``: the models are pretrained on the CPU as always (the same weights), then model, batch and
data move to the GPU, and every tool runs there: ours, hessian-eigenthings and curvlinops follow the model's
device, PyHessian gets ``cuda=True``; curvlinops' SciPy operator still copies every vector to NumPy and back
(its own cost). The float64 reference runs on the GPU too. Every float32 precision switch is set to IEEE for
the run (``lightning_spectral._internal.full_precision.full_float32_precision``): cuDNN's GPU default would run the CNN's
convolutions in TF32, not float32 as on the CPU. Timed regions end
with ``torch.cuda.synchronize()``. Random start vectors come from a generator on the device (a CUDA generator's
stream differs from the CPU one's); the fixed HVP test vector and the SGD minibatch indices are drawn on the
CPU and moved.

Problems. scikit-learn's ``load_digits`` (1797 images of 8×8 pixels, shipped with the package, no download),
pixels scaled to ``[0, 1]``, mean cross-entropy loss on a fixed batch (the first ``MLP_BATCH`` / ``CNN_BATCH``
images):

- MLP 64→160→128→10 (tanh), 32,298 parameters;
- CNN conv 1→4→8 (3×3, padding 1, tanh) on ``1×8×8`` images, then 512→576→10 (tanh), 301,594 parameters.

Both are first trained for ``PRETRAIN_STEPS`` steps of minibatch SGD (batch 64, learning rate 0.1, fixed seed,
all 1797 images) so that the Hessian has the outliers of a network in training, not those of the
initialization.

1. **Reference.** ``λ_1 ≥ λ_2 ≥ λ_3`` of the Hessian of a float64 copy of model and batch, by our Lanczos at
   ``tol=1e-10`` (residual ``‖Hv − λv‖ ≤ 1e-10·|λ|``), cross-checked by ``scipy.sparse.linalg.eigsh``
   (ARPACK, float64, ``tol=1e-10``) on the same operator. A dense ``eigvalsh`` is out of reach: the MLP
   Hessian alone would be ``32,298²`` float64 entries, 8.3 GB.
2. **Cost of one Hessian-vector product (HVP)** in each tool, timed round-robin (so that load from other
   processes hits every tool alike), and the relative difference of each tool's product with a fixed vector
   from ours: every tool differentiates the same loss.
3. **Time to 1e-3.** Each tool's knob is swept from cheap to expensive (ours and PyHessian: ``tol``;
   hessian-eigenthings: its fixed number of Lanczos steps ``max_iter``; eigsh: ``tol`` for each of a few
   ``ncv``). A setting qualifies when *every* one of ``repeats`` runs, each from its own seeded random start
   vector, has relative error ``max_{i≤k} |λ̂_i − λ_i| / |λ_i| ≤ 1e-3``; a setting is abandoned at its first
   failing run, and a run is stopped (failed) past ``HVP_CAP`` products. The first qualifying setting of each
   tool is then run again for the same seeds, round-robin over the tools, and the table gives the median wall
   time of those runs (operator construction included: every run builds its operator afresh, as a
   re-measurement during training does) and the median HVP count. HVPs are counted by wrapping each tool's
   operator (PyHessian: its ``hessian_vector_product`` function; eigsh: the SciPy operator), not read from the
   tools' own counters. Target: our time ≤ 1/3 of the best reference tool's.
4. **Defaults.** Each tool with its own defaults except ``k`` (and PyHessian's ``cuda`` set by ``--device``).
5. **Warm start.** At the trained state the top-``k`` pairs are measured with our defaults (``tol=1e-3``);
   training goes on for 10 and for 100 SGD steps and the new Hessian is measured cold (random start) and
   warm (``v0=`` the previous eigenvectors). Errors against a float64 reference at the new point, and the
   Krylov floor of each (the fewest products from the same start that a stopping rule knowing the answer
   would spend). Target: ≥ 2× fewer HVPs warm. In ``benchmarks/hessian_warm_start.py``.

The reference tools are imported lazily; without them their rows say "not installed" and the rest runs. The
problems and the float64 reference are in ``benchmarks/hessian_problems.py``, the tools (ours and the reference
tools, each a run, a product and a sweep) in ``benchmarks/hessian_tools.py``; this module measures and reports.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.common import (
    Target,
    add_device_argument,
    device_option,
    log,
    machine_description,
    markdown_table,
    median_time,
    seeded,
    skipped,
    use_device_results,
    write_section,
)
from benchmarks.hessian_problems import (
    PRETRAIN_STEPS,
    REFERENCE_TOL,
    SEED,
    SGD_BATCH,
    SGD_LR,
    Problem,
    build_problem,
    float64_reference,
    fmt_error,
    loss_fn,
    relative_error,
)
from benchmarks.hessian_tools import (
    GRAPH_METHODS,
    HVP_CAP,
    OURS_AUTO,
    PYHESSIAN_MAX_ITER,
    Matvec,
    Run,
    RunFn,
    Setting,
    Tool,
    label,
    make_tools,
    our_matvec,
    our_run,
    tool_versions,
)
from benchmarks.hessian_warm_start import (
    TARGET_WARM_RATIO,
    smallest_ratio,
    warm_start_rows,
    warm_start_section,
)
from lightning_spectral._internal.full_precision import full_float32_precision
from lightning_spectral.functional import HessianOperator, HVPGraph

TARGET_ERROR = 1e-3
TARGET_TIME_RATIO = 1 / 3
HVP_TIMING_CALLS = 3  # products per timing round in the per-HVP table
#: Idle time before every timed run: after ARPACK (curvlinops + eigsh) NumPy's OpenBLAS threads spin for about
#: 0.1 s, and a run started at once took 2–4× its time on 2 cores (measured: 55–118 ms instead of 27 ms for
#: ours, MLP, k = 3); whichever tool followed eigsh in the round robin paid for it.
QUIET_SECONDS = 0.3


# ------------------------------------------------------------------------------------------ measurements


def hvp_costs(problem: Problem, tools: list[Tool], rounds: int) -> str:
    """Time per HVP of every tool (round-robin over tools, median over rounds) and agreement with ours."""
    v = torch.randn(problem.dim, generator=seeded(SEED + 3)).to(problem.device)
    matvecs: dict[str, Matvec] = {}
    for method in ("double_backward", "forward_over_reverse"):
        matvecs[f"ours, hvp_method={method}"] = our_matvec(method)(problem)
    if problem.device.type == "cuda":
        for method in GRAPH_METHODS:
            matvecs[f"ours, hvp_method={method}, CUDA graph"] = our_matvec(method, HVPGraph())(problem)
    auto = HessianOperator(problem.model, loss_fn, problem.batch)
    auto.matvec(v)
    for tool in tools:
        if tool.available and not tool.is_ours:
            matvecs[tool.name] = tool.matvec(problem)
    exact = matvecs["ours, hvp_method=double_backward"](v)
    agreement = {name: float((matvec(v) - exact).norm() / exact.norm()) for name, matvec in matvecs.items()}
    times: dict[str, list[float]] = {name: [] for name in matvecs}
    for _ in range(rounds):
        for name, matvec in matvecs.items():
            time.sleep(QUIET_SECONDS)
            times[name].append(
                median_time(
                    lambda matvec=matvec: matvec(v), repeats=HVP_TIMING_CALLS, warmup=0, device=problem.device
                )
            )
    per_hvp = {name: statistics.median(values) for name, values in times.items()}
    rows = [[name, f"{1e3 * per_hvp[name]:.1f}", f"{agreement[name]:.1e}"] for name in matvecs]
    table = markdown_table(["HVP of", "ms per HVP", "relative difference from ours (double backward)"], rows)
    note = (
        f'`hvp_method="auto"` (`HessianOperator`\'s default; the estimators default to double backward) resolves '
        f"to `{auto.method}` here."
    )
    return f"{table}\n\n{note}"


def capture_costs(problem: Problem, repeats: int) -> list[list[Any]]:
    """CUDA only: λ_max with our defaults computed eagerly, by a first run with a fresh HVPGraph (capture
    included) and by a second run replaying it (medians over seeds, ms)."""
    rows = []
    for method in GRAPH_METHODS:
        times: dict[str, list[float]] = {"eager": [], "first": [], "replayed": []}
        hvps = []
        for seed in range(repeats):
            graph = HVPGraph()
            for name, used in (("eager", None), ("first", graph), ("replayed", graph)):
                run = our_run(method, used)
                box: dict[str, Run] = {}

                def once(run: RunFn = run, box: dict[str, Run] = box, seed: int = seed) -> None:
                    box["run"] = run(problem, 1, {}, seed, None)

                times[name].append(median_time(once, repeats=1, warmup=0, device=problem.device))
                hvps.append(box["run"].hvps)
        medians = {name: 1e3 * statistics.median(values) for name, values in times.items()}
        rows.append(
            [
                problem.name,
                method,
                statistics.median(hvps),
                f"{medians['eager']:.1f}",
                f"{medians['first']:.1f}",
                f"{medians['replayed']:.1f}",
                f"{medians['eager'] / medians['replayed']:.2f}×",
            ]
        )
    return rows


@dataclass
class Timed:
    time: float
    run: Run
    error: float


def timed_run(tool: Tool, problem: Problem, k: int, setting: Setting, seed: int | None) -> Timed:
    time.sleep(QUIET_SECONDS)  # let the previous tool's BLAS / OpenMP threads stop spinning
    box: dict[str, Run] = {}
    seconds = median_time(
        lambda: box.update(run=tool.run(problem, k, setting, seed, HVP_CAP)),
        repeats=1,
        warmup=0,
        device=problem.device,
    )
    run = box["run"]
    return Timed(seconds, run, relative_error(run.values, problem.reference.values, k))


def round_robin(
    jobs: dict[str, tuple[Tool, Setting]], problem: Problem, k: int, repeats: int
) -> dict[str, list[Timed]]:
    """Every job once per seed, the jobs taken in turn (load from other processes hits all of them alike)."""
    results: dict[str, list[Timed]] = {name: [] for name in jobs}
    for seed in range(repeats):
        for name, (tool, setting) in jobs.items():
            results[name].append(timed_run(tool, problem, k, setting, seed))
    return results


@dataclass
class Candidate:
    """A setting all of whose search runs reached ``TARGET_ERROR``."""

    setting: Setting
    hvps: float


def qualifying(
    tool: Tool, problem: Problem, k: int, sweep: list[Setting], repeats: int
) -> tuple[Candidate | None, int]:
    """The first setting of ``sweep`` whose runs for seeds ``0…repeats-1`` all reach ``TARGET_ERROR`` (each
    setting abandoned at its first failing run), and the number of runs spent."""
    spent = 0
    for setting in sweep:
        hvps = []
        for seed in range(repeats):
            run = tool.run(problem, k, setting, seed, HVP_CAP)
            spent += 1
            if not relative_error(run.values, problem.reference.values, k) <= TARGET_ERROR:
                break
            hvps.append(run.hvps)
        if len(hvps) == repeats:
            return Candidate(setting, statistics.median(hvps)), spent
    return None, spent


@dataclass
class Best:
    setting: Setting
    time: float
    hvps: float
    error: float


def time_to_target(
    problem: Problem, tools: list[Tool], k: int, repeats: int, quick: bool
) -> tuple[str, str, dict[str, Best]]:
    """Search each tool's cheapest qualifying setting, then time all of them round-robin over the same seeds."""
    candidates: dict[str, Candidate | None] = {}
    for tool in tools:
        if not tool.available:
            continue
        start, spent, found = time.perf_counter(), 0, []
        for sweep in tool.sweeps(k, quick):
            candidate, runs = qualifying(tool, problem, k, sweep, repeats)
            spent += runs
            if candidate is not None:
                found.append(candidate)
        candidates[tool.name] = min(found, key=lambda c: c.hvps) if found else None
        log(
            f"[hessian] {problem.name} k={k} search {tool.name}: {spent} runs, {time.perf_counter() - start:.0f} s"
        )
    by_name = {tool.name: tool for tool in tools}
    jobs = {name: (by_name[name], c.setting) for name, c in candidates.items() if c is not None}
    start = time.perf_counter()
    results = round_robin(jobs, problem, k, repeats)
    log(f"[hessian] {problem.name} k={k} timing: {time.perf_counter() - start:.0f} s")
    rows, bests = [], {}
    for tool in tools:
        if not tool.available:
            rows.append([tool.name, tool.status, "", "", "", ""])
            continue
        if tool.name not in jobs:
            rows.append([tool.name, f"none in the sweep (runs stopped past {HVP_CAP} HVPs)", "", "", "", ""])
            continue
        runs = results[tool.name]
        best = Best(
            jobs[tool.name][1],
            statistics.median(r.time for r in runs),
            statistics.median(r.run.hvps for r in runs),
            max(r.error for r in runs),
        )
        bests[tool.name] = best
        per_hvp = f"{1e3 * best.time / best.hvps:.1f}"
        rows.append([tool.name, label(best.setting), best.time, best.hvps, fmt_error(best.error), per_hvp])
    header = [
        "tool",
        "cheapest setting reaching 1e-3",
        "median time (s)",
        "median HVPs",
        "worst error",
        "ms / HVP",
    ]
    return markdown_table(header, rows), verdict(bests, tools), bests


def verdict(bests: dict[str, Best], tools: list[Tool]) -> str:
    ours_names = [tool.name for tool in tools if tool.is_ours]
    anchors = {name: best for name, best in bests.items() if name not in ours_names}
    if not anchors:
        return "Target: no reference tool reached 1e-3 (or none is installed): no comparison."
    anchor_name, anchor = min(anchors.items(), key=lambda item: item[1].time)
    lines = [
        f"Target: ours ≤ {TARGET_TIME_RATIO:.2f}× the time of the best reference tool, here {anchor_name} "
        f"({anchor.time:.3g} s, {anchor.hvps:g} HVPs)."
    ]
    for name in ours_names:
        ours = bests.get(name)
        if ours is None:
            lines.append(f"- {name}: **missed**, no tried setting reached 1e-3.")
            continue
        ratio, hvp_ratio = ours.time / anchor.time, ours.hvps / anchor.hvps
        word = (
            "**met**"
            if ratio <= TARGET_TIME_RATIO
            else f"**missed** by a factor {ratio / TARGET_TIME_RATIO:.2f}"
        )
        lines.append(
            f"- {name}: {word}: {ratio:.2f}× its time = {hvp_ratio:.2f}× its HVPs × {ratio / hvp_ratio:.2f}× its "
            "time per HVP (construction and solver overhead included)."
        )
    return "\n".join(lines)


def defaults_table(problem: Problem, tools: list[Tool], k: int, repeats: int) -> str:
    jobs = {tool.name: (tool, {}) for tool in tools if tool.available and tool.name != OURS_AUTO}
    results = round_robin(jobs, problem, k, repeats)
    rows = []
    for tool in tools:
        if tool.name == OURS_AUTO:
            continue  # the same algorithm and defaults as the row above, with another product
        if not tool.available:
            rows.append([tool.name, tool.status, "", "", "", ""])
            continue
        runs = results[tool.name]
        errors = [r.error for r in runs]
        stopped = sum(r.run.stopped for r in runs)
        note = f"; {stopped}/{repeats} runs stopped at {HVP_CAP} HVPs" if stopped else ""
        rows.append(
            [
                tool.name,
                tool.default_label + note,
                statistics.median(r.time for r in runs),
                statistics.median(r.run.hvps for r in runs),
                fmt_error(statistics.median(errors)),
                fmt_error(max(errors)),
            ]
        )
    header = ["tool", "defaults", "median time (s)", "median HVPs", "median error", "worst error"]
    return markdown_table(header, rows)


# ------------------------------------------------------------------------------------------ main


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int
    problems: tuple[str, ...]
    ks: tuple[int, ...]


def settings(quick: bool) -> Settings:
    if quick:
        return Settings(True, 3, ("MLP",), (1,))
    return Settings(False, 5, ("MLP", "CNN"), (1, 3))


@dataclass
class Report:
    problems: list[list[Any]] = field(default_factory=list)
    costs: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    warm: list[list[Any]] = field(default_factory=list)
    capture: list[list[Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def benchmark_problem(
    name: str, tools: list[Tool], cfg: Settings, report: Report, device: torch.device
) -> None:
    start = time.perf_counter()
    problem = build_problem(name, device)
    problem.reference = float64_reference(problem.model, problem.batch, 3, crosscheck=True)
    values = problem.reference.values
    log(
        f"[hessian] {name}: reference {[round(v, 6) for v in values.tolist()]}, {time.perf_counter() - start:.0f} s"
    )
    report.problems.append(
        [
            name,
            problem.description,
            f"{problem.dim:,}",
            ", ".join(f"{v:.5f}" for v in values.tolist()),
            f"{float(values[1] / values[0]):.3f}",
            f"{problem.reference.hvps}; {problem.reference.crosscheck}",
        ]
    )
    for tool in tools:  # one untimed run each: first-call costs (allocations, torch.func set-up) stay out
        if tool.available:
            tool.run(problem, 1, {}, 1000, HVP_CAP)
    costs = hvp_costs(problem, tools, cfg.repeats)
    report.costs.append(f"#### {name}\n\n{costs}")
    log(f"[hessian] {name}: HVP costs done, {time.perf_counter() - start:.0f} s")
    for k in cfg.ks:
        table, text, bests = time_to_target(problem, tools, k, cfg.repeats, cfg.quick)
        report.targets += time_targets(name, k, bests, tools)
        defaults = defaults_table(problem, tools, k, cfg.repeats)
        what = "λ_max" if k == 1 else f"top-{k}"
        report.sections.append(
            f"#### {name}, k = {k} ({what})\n\n{table}\n\n{text}\n\nAt each tool's defaults (k = {k}):\n\n{defaults}"
        )
        log(f"[hessian] {name} k={k}: done, {time.perf_counter() - start:.0f} s")
    if device.type == "cuda":
        report.capture += capture_costs(problem, cfg.repeats)
    for k in cfg.ks:
        report.warm += warm_start_rows(problem, k, cfg.repeats)
    log(f"[hessian] {name}: warm start done, {time.perf_counter() - start:.0f} s")


def capture_section(rows: list[list[Any]]) -> str:
    """The CUDA-graph paragraph (empty off CUDA)."""
    if not rows:
        return ""
    table = markdown_table(
        [
            "model",
            "hvp_method",
            "HVPs",
            "eager (ms)",
            "first run, capture included (ms)",
            "replayed (ms)",
            "eager / replayed",
        ],
        rows,
    )
    return f"""
#### CUDA graphs: what the capture costs

The `CUDA graph` rows above replay products captured by an earlier run on the same model and batch shapes
(`HessianOperator(..., hvp_graph=HVPGraph())`; `HessianEigenMonitor(cuda_graphs=True)` keeps one per fit): the
steady state of a monitor that measures every few hundred steps. The first run pays the capture: two eager
warm-up products, the capture and a check replay. `λ_max` with our defaults (`tol=1e-3`), medians over seeds:

{table}
"""


def time_targets(name: str, k: int, bests: dict[str, Best], tools: list[Tool]) -> list[Target]:
    """The time target of each of our variants against the fastest reference tool that reached 1e-3
    (the numbers of :func:`verdict`)."""
    goal = f"≤ {TARGET_TIME_RATIO:.2f}× the best reference tool's time"
    ours_names = [tool.name for tool in tools if tool.is_ours]
    anchors = {n: best for n, best in bests.items() if n not in ours_names}
    installed = any(tool.available for tool in tools if not tool.is_ours)
    install = "`pip install " + " ".join(t.distribution.lower() for t in tools if not t.is_ours) + " scipy`"
    targets = []
    for ours_name in ours_names:
        what = f"hessian: {name}, k = {k}, time to 1e-3, {ours_name}"
        ours = bests.get(ours_name)
        if not installed:
            targets.append(Target(what, goal, "no reference tool", None, f"skipped: {install}"))
        elif not anchors:
            targets.append(Target(what, goal, "no reference tool reached 1e-3", None, "no comparison"))
        elif ours is None:
            targets.append(Target(what, goal, "no tried setting reached 1e-3", False))
        else:
            anchor_name, anchor = min(anchors.items(), key=lambda item: item[1].time)
            ratio = ours.time / anchor.time
            targets.append(Target(what, goal, f"{ratio:.2f}× ({anchor_name})", ratio <= TARGET_TIME_RATIO))
    return targets


def main(argv: list[str] | None = None) -> list[Target]:
    """Parse ``argv``, run, rewrite the ``hessian`` section; returns the targets for ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MLP only, k=1, 3 repeats, coarser sweeps")
    parser.add_argument(
        "--no-write", action="store_true", help="print the section instead of writing RESULTS.md"
    )
    add_device_argument(parser)
    args = parser.parse_args(argv)
    use_device_results(args.device)
    with full_float32_precision():  # cuDNN's GPU default runs the CNN's convolutions in TF32, not float32
        return run(args)


def run(args: argparse.Namespace) -> list[Target]:
    cfg = settings(args.quick)
    wall = time.perf_counter()
    device = torch.device(args.device)
    tools = make_tools(device)
    for tool in tools:
        if not tool.available:
            log(f"[hessian] {tool.name}: {tool.status}")
    report = Report()
    for name in cfg.problems:
        benchmark_problem(name, tools, cfg, report, device)
    total = time.perf_counter() - wall

    command = (
        "python -m benchmarks.bench_hessian" + (" --quick" if cfg.quick else "") + device_option(args.device)
    )
    quick_note = " (quick mode: MLP only, k = 1, 3 repeats, coarser sweeps)" if cfg.quick else ""
    problems_table = markdown_table(
        ["model", "setup", "parameters", "λ_1, λ_2, λ_3 (float64)", "λ_2/λ_1", "reference HVPs; cross-check"],
        report.problems,
    )
    body = f"""## Hessian eigenvalues (`benchmarks/bench_hessian.py`)

Command: `{command}` (interpreter `{sys.executable}`), {total:.0f} s in all{quick_note}.
Machine: {machine_description()} ({platform.system()}); device: {args.device}; `torch.get_num_threads()` =
{torch.get_num_threads()}, left as it was. Packages: {tool_versions(tools)}.

Models trained {PRETRAIN_STEPS} steps of SGD (batch {SGD_BATCH}, lr {SGD_LR}) on scikit-learn's digits, then
frozen; mean cross-entropy on a fixed batch; float32 in every timed run. Reference: our float64 Lanczos
(`tol={REFERENCE_TOL:g}`) on a float64 copy of model and batch, cross-checked with ARPACK (`eigsh`, float64, same
operator); a dense `eigvalsh` is out of reach (the MLP Hessian alone is 8.3 GB in float64).

{problems_table}

### Cost of one HVP

{HVP_TIMING_CALLS} products per round, tools taken in turn (each after {QUIET_SECONDS} s idle), median over {cfg.repeats} rounds; the last column checks
that every tool differentiates the same loss (float32 rounding is ~1e-7).

{(2 * chr(10)).join(report.costs)}

### Time and HVPs to reach 1e-3 relative error

Error = worst relative error over the top k against the float64 reference. Search: each tool's knob is swept
from cheap to expensive; a setting qualifies when its runs from start-vector seeds 0…{cfg.repeats - 1} are all
within 1e-3 (it is abandoned at its first failing run; runs past {HVP_CAP} HVPs are stopped), and the first
qualifying one is the tool's setting (eigsh: the one with the fewest HVPs over the `ncv` values). Timing: the
chosen settings are then run again round-robin (tool after tool, seed after seed), so that load from other
processes hits every tool alike, each run after {QUIET_SECONDS} s idle (ARPACK's OpenBLAS threads spin on after
a call and slowed whatever ran next 2–4×: runs before 2026-11-30 charged that to the tool after eigsh, our
default row); the table gives the median wall time of those {cfg.repeats} runs (operator
construction included), their median HVP count and their worst error. Ours:
`hessian_eigenvalues(operator=HessianOperator(..., method=…), k, tol=…)` (Lanczos with full reorthogonalization, convergence checked after every product). PyHessian:
`hessian(...).eigenvalues(top_n=k, tol=…, maxIter={PYHESSIAN_MAX_ITER})` (power iteration, deflated restarts for
k > 1, stops when the estimate changes by less than tol). hessian-eigenthings: `lanczos(HessianOperator(...),
k, max_iter=…, which="LA")` (always exactly `max_iter` steps; every HVP re-runs forward and backward).
curvlinops: `eigsh(HessianLinearOperator(..., check_deterministic=False).to_scipy(), k, which="LA", ncv=…,
tol=…)` (forward-over-reverse HVPs; ARPACK in float64 on the float32 operator). Target: ours ≤ 1/3 of the best
reference tool's time.

{(2 * chr(10)).join(report.sections)}
{capture_section(report.capture)}
Reading these tables. Ours, hessian-eigenthings and ARPACK are all Lanczos methods started from a random
vector: they build the same Krylov space, so the HVPs each needs for 1e-3 differ by a step or two, and a
1/3 time ratio against them would need HVPs three times cheaper than theirs. On a GPU that is what the
`CUDA graph` rows have (CUDA only: `HessianOperator(..., hvp_graph=HVPGraph())`, products replayed from a graph
captured by an earlier run): the products of these small models are bound by kernel launches, not arithmetic,
and a replay launches one graph. PyHessian's power iteration needs
more HVPs, the more so for k = 3 (each deflated eigenvalue converges at its own gap), but each of its HVPs is
one backward pass through a kept gradient graph, like ours with `hvp_method="double_backward"`.
hessian-eigenthings rebuilds the graph for every product; curvlinops and our `"auto"` (`HessianOperator`'s
default, which picks forward-over-reverse, `torch.func.jvp` of `torch.func.grad`, whenever `torch.func` can
transform the model; our estimators default to double backward) pay for a forward-mode pass (see "Cost of one HVP"). The sweep also gives each reference tool its best setting
in hindsight; hessian-eigenthings has no stopping test at all, so in use its `max_iter` is a guess (its default,
2k steps, is in the defaults rows), while ours stops on its own residual test.

{warm_start_section(report.warm, cfg.repeats)}"""
    if args.no_write:
        print(body)
    else:
        write_section("hessian", body)
    log(f"[hessian] done in {total:.0f} s")
    ratio = smallest_ratio(report.warm)
    warm = Target(
        "hessian: warm start, cold / warm HVPs (smallest over the rows)",
        f"≥ {TARGET_WARM_RATIO:g}× in every row",
        f"{ratio:.2f}×",
        ratio >= TARGET_WARM_RATIO,
    )
    missing = [
        skipped(f"hessian: comparison with {t.name}", t.distribution)
        for t in tools
        if t.module and not t.available
    ]
    return report.targets + [warm] + missing


if __name__ == "__main__":
    main()
