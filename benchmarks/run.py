"""The whole benchmark suite in one command, and its summary.

Run from the repository root::

    python -m benchmarks [--quick] [--only overhead,scaling] [--results PATH] [--device {cpu,cuda}]

Every selected module (in the order of :data:`MODULES`) runs in this process through its ``main(argv)``,
with ``--quick`` and ``--device cuda`` passed through (``--device cuda`` is refused at parsing where
``torch.cuda.is_available()`` is false; the default ``cpu`` passes nothing); each rewrites its own section
of ``benchmarks/RESULTS.md`` and returns its targets as a list of :class:`~benchmarks.common.Target` (name,
goal, measured value, met). The runner then rewrites the ``summary`` section at the top of RESULTS.md: the
command, the machine, the device, the package versions, and one table of every target with its measured
value and verdict.

The summary keeps the targets of the modules not run this time (``--only``) from the previous summary,
with the command and date that produced them: the table always covers the whole suite. It stores them in
an HTML comment inside the section (JSON), which is what it reads back.

A module that raises is reported (traceback on stderr, a "crashed" row in the table) and the others still
run; the exit status is then 1. A missing reference tool (weightwatcher, pyhessian, hessian-eigenthings,
curvlinops) is no crash: the modules skip that comparison and return a skipped target naming the install
command.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import (
    INSTALL_RECIPE,
    REFERENCE_TOOLS,
    Target,
    add_device_argument,
    device_option,
    machine_description,
    markdown_table,
    package_versions,
    write_section,
)

#: Short name → module, in the order they run.
MODULES = {
    "weights": "benchmarks.bench_weights",
    "hessian": "benchmarks.bench_hessian",
    "ntk": "benchmarks.bench_ntk",
    "overhead": "benchmarks.bench_overhead",
    "scaling": "benchmarks.bench_scaling",
    "threads": "benchmarks.bench_threads",
}
PACKAGES = ("torch", "numpy", "scikit-learn", "pytorch-lightning", "matplotlib", "lightning-spectral")
STORE = re.compile(r"<!-- targets-json: (.*?) -->", re.S)


@dataclass
class ModuleRun:
    """What one module's run left for the summary: its targets, where they came from, how long it took."""

    name: str
    command: str
    quick: bool
    date: str
    seconds: float
    targets: list[Target] = field(default_factory=list)
    crashed: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in ("name", "command", "quick", "date", "seconds", "crashed")}
        return data | {"targets": [t.to_dict() for t in self.targets]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModuleRun:
        targets = [Target.from_dict(t) for t in data.get("targets", [])]
        fields = {key: data[key] for key in ("name", "command", "quick", "date", "seconds")}
        return cls(**fields, targets=targets, crashed=data.get("crashed", ""))


def parse_only(text: str) -> list[str]:
    """``"overhead, scaling"`` → ``["overhead", "scaling"]`` in the order of :data:`MODULES`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODULES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(MODULES)}"
        )
    return [name for name in MODULES if name in names]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every module's quick mode (≤ 5 min in all)")
    parser.add_argument(
        "--only",
        type=parse_only,
        default=list(MODULES),
        metavar="NAMES",
        help=f"comma-separated subset of {','.join(MODULES)} (default: all)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the sections to this file instead of benchmarks/RESULTS.md (RESULTS_CUDA.md with --device "
        "cuda; scaling.png goes beside it)",
    )
    add_device_argument(parser)
    return parser.parse_args(argv)


def command_line(args: argparse.Namespace) -> str:
    parts = ["python -m benchmarks"]
    if args.quick:
        parts.append("--quick")
    if args.only != list(MODULES):
        parts.append("--only " + ",".join(args.only))
    if args.results is not None:
        parts.append(f"--results {args.results}")
    return " ".join(parts) + device_option(args.device)


def module_argv(quick: bool, device: str) -> list[str]:
    """The ``argv`` of every module's ``main``: ``--quick`` and ``--device cuda`` when given."""
    return (["--quick"] if quick else []) + device_option(device).split()


def run_module(name: str, quick: bool, command: str, device: str) -> ModuleRun:
    """Import and run one module; a crash becomes a row, not an exception."""
    date = datetime.date.today().isoformat()
    start = time.perf_counter()
    argv = module_argv(quick, device)
    print(f"[benchmarks] {name} ({MODULES[name]}) {' '.join(argv)}".rstrip(), flush=True)
    try:
        module = importlib.import_module(MODULES[name])
        targets = list(module.main(argv) or [])
        crashed = ""
    except Exception as error:  # keep going: the other modules' numbers are still worth having
        traceback.print_exc()
        targets, crashed = [], f"{type(error).__name__}: {error}".splitlines()[0]
    seconds = time.perf_counter() - start
    print(f"[benchmarks] {name}: {seconds:.0f} s", flush=True)
    return ModuleRun(name, command, quick, date, seconds, targets, crashed)


def previous_runs(section: str | None) -> dict[str, ModuleRun]:
    """The module runs stored in an earlier summary section (empty when there is none or it is unreadable)."""
    found = STORE.search(section or "")
    if not found:
        return {}
    try:
        data = json.loads(found.group(1))
        return {item["name"]: ModuleRun.from_dict(item) for item in data if item.get("name") in MODULES}
    except (ValueError, KeyError, TypeError):
        return {}


def summary_rows(runs: dict[str, ModuleRun]) -> list[list[Any]]:
    rows = []
    for name in MODULES:
        run = runs.get(name)
        if run is None:
            rows.append([name, "(not run through `python -m benchmarks` yet)", "", "", "", ""])
            continue
        origin = f"`{run.command}`, {run.date}"
        if run.crashed:
            rows.append(
                [name, "the module ran to the end", "", f"crashed: {run.crashed}", "**missed**", origin]
            )
        for target in run.targets:
            mode = " (quick)" if run.quick else ""
            rows.append([name, target.name, target.goal, target.measured + mode, target.verdict, origin])
    return rows


def summary_body(
    command: str, ran: list[ModuleRun], runs: dict[str, ModuleRun], total: float, device: str
) -> str:
    """The ``summary`` section: command, machine, versions, the table of targets, the stored runs."""
    rows = summary_rows(runs)
    counts = {word: sum(r[4].startswith(word) for r in rows) for word in ("met", "**missed**", "skipped")}
    durations = ", ".join(f"{r.name} {r.seconds:.0f} s" for r in ran)
    stored = json.dumps([r.to_dict() for r in runs.values()], ensure_ascii=False).replace("--", "-\\u002d")
    return f"""## Summary (`python -m benchmarks`)

Command: `{command}` (interpreter `{sys.executable}`), {total:.0f} s in all ({durations}).
Machine: {machine_description()} ({platform.system()}); device: {device}; each module sets its own torch threads (see
its section).
Packages: {package_versions(PACKAGES)}. Reference tools: {package_versions(REFERENCE_TOOLS)}.
Reference tools install recipe (the `bench` extra): {INSTALL_RECIPE}. Without them the comparisons that need
them are skipped (rows below name the install command) and everything else runs.

Every target of every benchmark, as its module measured it (the sections below have the tables and the
reading). "(quick)": measured by `--quick`, on smaller problems than the target's. The last column names the
run each row comes from: `--only` reruns some modules and keeps the others' rows. {counts["met"]} met,
{counts["**missed**"]} missed, {counts["skipped"]} skipped.

{markdown_table(["benchmark", "target", "goal", "measured", "verdict", "from"], rows)}

<!-- targets-json: {stored} -->
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.results is not None:
        common.RESULTS = args.results  # write_section and the scaling plot read it at call time
    common.use_device_results(args.device)
    command = command_line(args)
    wall = time.perf_counter()
    ran = [run_module(name, args.quick, command, args.device) for name in args.only]
    runs = previous_runs(common.read_section("summary"))
    runs.update({run.name: run for run in ran})
    body = summary_body(command, ran, runs, time.perf_counter() - wall, args.device)
    write_section("summary", body, first=True)
    print(f"[benchmarks] done in {time.perf_counter() - wall:.0f} s; RESULTS.md section 'summary' rewritten")
    for run in ran:
        for target in run.targets:
            print(
                f"[benchmarks] {run.name}: {target.name}: {target.measured} ({target.goal}): {target.verdict}"
            )
    return 1 if any(run.crashed for run in ran) else 0
