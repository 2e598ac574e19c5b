"""``python -m benchmarks``'s plumbing with fake modules: ``--only`` parsing, the summary table, the targets kept
from earlier runs, a crashing module, ``--device`` (passed through; ``cuda`` refused at parsing without CUDA,
in the runner and in every module). No benchmark runs here (a few seconds, torch import included)."""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the benchmarks are not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import common, run  # noqa: E402
from benchmarks.common import Target  # noqa: E402

FAKE = {"alpha": "fake_bench_alpha", "beta": "fake_bench_beta", "gamma": "fake_bench_gamma"}


@pytest.fixture
def fake_suite(monkeypatch, tmp_path):
    """Three fake modules (one met and one skipped target, one missed, one crash) writing to a temporary file."""
    calls = []

    def module(name, main):
        fake = types.ModuleType(name)
        fake.main = main
        monkeypatch.setitem(sys.modules, name, fake)

    def alpha(argv):
        calls.append(("alpha", argv))
        common.write_section("alpha", "## Alpha")
        return [
            Target("alpha: speed-up", "≥ 10×", "12.0×", True),
            Target(
                "alpha: against a tool", "tool installed", "not installed", None, "skipped: `pip install x`"
            ),
        ]

    def beta(argv):
        calls.append(("beta", argv))
        return [Target("beta: overhead", "≤ 5 %", "+7.0 %", False)]

    def gamma(argv):
        raise RuntimeError("boom\nsecond line")

    module(FAKE["alpha"], alpha)
    module(FAKE["beta"], beta)
    module(FAKE["gamma"], gamma)
    monkeypatch.setattr(run, "MODULES", dict(FAKE))
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nIntro.\n\n<!-- old:start -->\nold\n<!-- old:end -->\n")
    monkeypatch.setattr(common, "RESULTS", results)
    return results, calls


def test_only_is_parsed_into_suite_order_and_checked():
    assert run.parse_only("scaling, overhead") == ["overhead", "scaling"]
    assert run.parse_args([]).only == list(run.MODULES)
    args = run.parse_args(["--quick", "--only", "ntk,weights"])
    assert args.quick and args.only == ["weights", "ntk"]
    assert run.command_line(args) == "python -m benchmarks --quick --only weights,ntk"
    for bad in ("overheads", "", " , "):
        with pytest.raises(argparse.ArgumentTypeError):
            run.parse_only(bad)
    with pytest.raises(SystemExit):
        run.parse_args(["--only", "nope"])


def test_summary_table_verdicts_and_round_trip():
    targets = [
        Target("t1", "≥ 10×", "12×", True),
        Target("t2", "≤ 5 %", "+7 %", False, "quick mode"),
        Target("t3", "tool installed", "not installed", None, "skipped: `pip install a--b`"),
    ]
    ran = [run.ModuleRun("overhead", "python -m benchmarks", True, "2026-01-01", 3.0, targets)]
    runs = {r.name: r for r in ran}
    body = run.summary_body("python -m benchmarks --quick", ran, runs, 3.0, "cpu")
    assert "| overhead | t1 | ≥ 10× | 12× (quick) | met |" in body
    assert "| overhead | t2 | ≤ 5 % | +7 % (quick) | **missed** (quick mode) |" in body
    assert "skipped: `pip install a--b`" in body
    assert "| weights | (not run through `python -m benchmarks` yet) |" in body
    assert "1 met,\n1 missed, 1 skipped." in body
    stored = body.split("<!-- targets-json:")[1]
    assert "--" not in stored.split(" -->")[0]  # nothing closes the HTML comment early
    back = run.previous_runs(body)
    assert back["overhead"].targets == targets and back["overhead"].quick


def test_runner_writes_summary_first_keeps_earlier_rows_and_reports_crashes(fake_suite, capsys):
    results, calls = fake_suite
    assert run.main(["--quick"]) == 1  # gamma crashed; alpha and beta still ran
    assert calls == [("alpha", ["--quick"]), ("beta", ["--quick"])]
    text = results.read_text()
    assert text.index("<!-- summary:start -->") < text.index("<!-- old:start -->") < text.index("alpha:start")
    summary = common.read_section("summary")
    assert "crashed: RuntimeError: boom |" in summary
    assert "| alpha | alpha: against a tool |" in summary and "skipped: `pip install x`" in summary
    assert "Traceback" in capsys.readouterr().err

    calls.clear()
    assert run.main(["--only", "beta"]) == 0
    assert calls == [("beta", [])]
    summary = common.read_section("summary")
    assert "`python -m benchmarks --only beta`" in summary  # beta's new row
    assert (
        "| alpha | alpha: speed-up | ≥ 10× | 12.0× (quick) | met | `python -m benchmarks --quick`" in summary
    )
    assert (
        "| beta | beta: overhead | ≤ 5 % | +7.0 % | **missed** | `python -m benchmarks --only beta`"
        in summary
    )
    assert "crashed: RuntimeError: boom" in summary  # gamma's earlier crash is kept until it runs again
    assert results.read_text().count("<!-- summary:start -->") == 1


def test_device_defaults_to_cpu_and_passes_nothing():
    args = run.parse_args(["--quick"])
    assert args.device == "cpu" and run.command_line(args) == "python -m benchmarks --quick"
    assert run.module_argv(True, "cpu") == ["--quick"] and run.module_argv(False, "cpu") == []
    assert run.module_argv(True, "cuda") == ["--quick", "--device", "cuda"]


def test_device_cuda_without_cuda_is_an_argparse_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for bad in ("cuda", "gpu"):
        with pytest.raises(SystemExit):
            run.parse_args(["--device", bad])
        err = capsys.readouterr().err
        assert "argument --device" in err and "cpu" in err and "cuda" in err
    for name in run.MODULES:  # every module parses the same option before doing any work
        with pytest.raises(SystemExit):
            importlib.import_module(run.MODULES[name]).main(["--device", "cuda"])
        assert "argument --device: 'cuda' needs a CUDA GPU" in capsys.readouterr().err


def test_device_cuda_is_passed_to_every_module_and_named_in_the_summary(fake_suite, monkeypatch):
    results, calls = fake_suite
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(run, "machine_description", lambda: "a machine")  # no CUDA device to name here
    args = run.parse_args(["--quick", "--device", "cuda"])
    assert args.device == "cuda" and run.command_line(args) == "python -m benchmarks --quick --device cuda"
    assert run.main(["--quick", "--device", "cuda"]) == 1  # gamma still crashes
    assert calls == [("alpha", ["--quick", "--device", "cuda"]), ("beta", ["--quick", "--device", "cuda"])]
    summary = common.read_section("summary")
    assert "Command: `python -m benchmarks --quick --device cuda`" in summary
    assert "; device: cuda;" in summary


def test_a_cuda_run_writes_results_cuda_md_unless_a_file_is_named(monkeypatch, tmp_path):
    """The CPU tables in RESULTS.md are never overwritten by a GPU run's."""
    default = Path(common.__file__).with_name("RESULTS.md")
    monkeypatch.setattr(common, "RESULTS", default)  # restored after the test
    common.use_device_results("cpu")
    assert common.RESULTS == default
    common.use_device_results("cuda")
    assert common.RESULTS == common.CUDA_RESULTS == default.with_name("RESULTS_CUDA.md")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "mine.md")
    common.use_device_results("cuda")
    assert common.RESULTS == tmp_path / "mine.md"
