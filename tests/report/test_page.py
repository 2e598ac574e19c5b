"""``build_report`` and ``lightning-spectral report``: two real TensorBoard runs (different learning rates) → one
HTML page.

The runs (``tests/report/conftest.py``) come from a real ``Trainer.fit`` with every monitor and a
``TensorBoardLogger``; the page is checked for every figure kind and no external resource, the command line for
its exit codes, and headless Chromium for a clean render (no console message, a non-blank screenshot).
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from spectral_testing.chromium import chromium, require_chromium
from spectral_testing.report_runs import expected_images, fit

from lightning_spectral.cli import main
from lightning_spectral.report import read_runs


@pytest.mark.slow
def test_report_page_has_every_figure_and_no_external_resource(report):
    import matplotlib.image

    text = report.read_text(encoding="utf-8")
    sources = re.findall(r'<img src="([^"]+)"', text)
    for name in expected_images():
        assert name in sources, name
    for source in sources:
        assert "/" not in source and (report.parent / source).is_file(), source
        assert matplotlib.image.imread(report.parent / source).shape[0] > 100, source
    for forbidden in ("<script", "http://", "https://", "url(", "@import", "@font-face", "<link", "<iframe"):
        assert forbidden not in text.lower(), forbidden
    assert ">lr_small</td>" in text and ">version_0</td>" in text  # the runs table


@pytest.mark.slow
def test_cli_report_steps_and_errors(run_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", *map(str, run_dirs), "-o", str(out), "--steps", "0,9"]) == 0
    captured = capsys.readouterr()
    assert f"Report written to {out / 'index.html'}" in captured.out
    assert captured.err.count("reading ") == 2  # one progress line per event file
    for step in (0, 8):  # the nearest logged steps (the Hessian is measured every 8 steps)
        for i in (1, 2):
            assert (out / f"hessian_density_run{i}_step{step}.png").is_file()

    # The same folder twice: names made unique.
    assert [run.name for run in read_runs([run_dirs[1], run_dirs[1]])] == ["version_0", "version_0 (2)"]

    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert main(["report", str(run_dirs[1]), str(empty), "-o", str(tmp_path / "bad")]) == 2
    assert f"error: {empty}: no TensorBoard event files" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    no_spectral = fit(tmp_path / "plain", "plain").parent  # a real run without monitors
    process = subprocess.run(
        [sys.executable, "-m", "lightning_spectral", "report", str(no_spectral), "-o", str(tmp_path / "bad")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2, process.stderr
    assert f"error: {no_spectral}: its 1 event file(s) hold no `spectral/` metrics" in process.stderr


def test_report_renders_in_headless_chromium(report, tmp_path):
    import matplotlib.image

    require_chromium()

    # The console check sees errors: a page with a script error is caught.
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><p>x</p><script>undefinedFunction();</script>", encoding="utf-8")
    assert any("Uncaught" in line for line in chromium(broken, tmp_path / "broken.png", tmp_path / "profile"))

    screenshot = tmp_path / "report.png"
    assert chromium(report, screenshot, tmp_path / "profile") == []
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (2000, 1200)
    colours = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text and plots, not a blank page
