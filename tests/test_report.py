"""``lightning-spectral report``: two real TensorBoard runs (different learning rates) → one HTML page.

The runs come from a real ``Trainer.fit`` with every monitor and a ``TensorBoardLogger``; the page is checked
for every figure kind, the figures for their data and legends, the command line for its exit codes, and
headless Chromium for a clean render (no console message, a non-blank screenshot).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from matplotlib.collections import PolyCollection
from pytorch_lightning.loggers import TensorBoardLogger
from spectral_testing.models import TinyClassifier, trainer_kwargs

from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor
from lightning_spectral.cli import main
from lightning_spectral.report import build_report, read_runs
from lightning_spectral.report.figure_style import HESSIAN, NTK
from lightning_spectral.report.figures import legend_labels, make_figures, run_colors, stability_limit
from lightning_spectral.report.reader import RunData, Series

CHROMIUM = Path("/usr/bin/chromium")
LEARNING_RATES = {"lr_small": 0.05, "lr_large": 0.5}
LAST_STEP = 16  # 64 examples, batch 16, 4 epochs
LAYERS = ("net.0.weight", "net.4.weight")


class PlainSGDClassifier(TinyClassifier):
    """``TinyClassifier`` with plain SGD: an optimizer ``sgd_stability`` is defined for."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def fit(root: Path, name: str, callbacks: list | None = None, lr: float = 0.1) -> Path:
    """A real short fit logging to ``root/name/version_0``; returns that folder."""
    pl.seed_everything(0)
    logger = TensorBoardLogger(str(root), name=name)
    trainer = pl.Trainer(**trainer_kwargs(root, logger=logger, callbacks=callbacks or [], max_epochs=4))
    trainer.fit(PlainSGDClassifier(lr=lr))
    return Path(logger.log_dir)


def monitors() -> list[pl.Callback]:
    return [
        WeightSpectrumMonitor(every_n_steps=4, strict=True),
        HessianEigenMonitor(k=2, every_n_steps=8, compute_density=True, density_num_steps=10, strict=True),
        NTKTraceMonitor(every_n_steps=4, compute_lambda_max=True, compute_alignment=True, strict=True),
    ]


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> list[Path]:
    """The first run by its parent folder (event files found below it), the second by its version folder."""
    root = tmp_path_factory.mktemp("runs")
    dirs = [fit(root, name, monitors(), lr) for name, lr in LEARNING_RATES.items()]
    return [dirs[0].parent, dirs[1]]


@pytest.fixture(scope="module")
def report(run_dirs, tmp_path_factory) -> Path:
    return build_report(run_dirs, tmp_path_factory.mktemp("report") / "out", progress=False)


def expected_images() -> list[str]:
    figures = ["hessian_eigenvalues", "batch_sharpness", "ntk_trace", "ntk_alignment", "sgd_stability"]
    figures += [
        "weights_sigma_max",
        "weights_stable_rank",
        "weights_effective_rank",
        "weights_singular_values",
    ]
    figures += [f"weights_heatmap_{layer}" for layer in LAYERS]
    figures += [f"hessian_density_run{i}_step{LAST_STEP}" for i in (1, 2)]
    return [f"{name}.png" for name in figures]


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


def test_figures_overlay_both_runs_with_their_data(run_dirs):
    runs = read_runs(run_dirs)
    assert [run.name for run in runs] == ["lr_small", "version_0"]  # each named after the folder given
    figures, notes = make_figures(runs, run_colors(runs))
    assert notes == []
    by_name = {figure.name: figure for figure in figures}
    assert set(by_name) == {name.removesuffix(".png") for name in expected_images() if "density" not in name}
    for figure in figures:  # every figure names both runs (legend, or panel titles of the heatmaps)
        labels = legend_labels(figure.figure)
        assert all(any(run.name in label for label in labels) for run in runs), (figure.name, labels)
        assert figure.title and figure.caption

    # The stability limit drawn is 2/η of each run (λ_1 / eos_ratio), and it is in the eigenvalue figure.
    eigen_lines = [line.get_ydata() for line in by_name["hessian_eigenvalues"].figure.axes[0].get_lines()]
    for run, lr in zip(runs, LEARNING_RATES.values()):
        limit = stability_limit(run)
        np.testing.assert_allclose(limit.values, 2 / lr, rtol=1e-5)
        assert list(limit.steps) == [0, 8, 16]
        assert any(np.allclose(y, 2 / lr, rtol=1e-5) for y in eigen_lines)
    assert "stability limit $\\lambda_{\\rm crit}$" in legend_labels(by_name["hessian_eigenvalues"].figure)

    # sgd_stability: each run's values, and the edge at 1.
    axes = by_name["sgd_stability"].figure.axes[0]
    ys = [np.asarray(line.get_ydata(), dtype=float) for line in axes.get_lines()]
    assert any(np.all(y == 1.0) for y in ys)
    for run in runs:
        assert any(np.array_equal(y, run.scalars["spectral/ntk/sgd_stability"].values) for y in ys)

    # NTK alignments: every form each run logged, as a line of its own (the batch of 16 has repeated labels).
    lines = by_name["ntk_alignment"].figure.axes[0].get_lines()
    for run in runs:
        for form in ("alignment", "alignment_centered", "alignment_offdiagonal"):
            logged = run.scalars[f"spectral/ntk/{form}"]
            assert list(logged.steps) == [0, 4, 8, 12, 16], form
            assert any(np.array_equal(line.get_ydata(), logged.values) for line in lines), (run.name, form)
    assert {"alignment", "alignment_centered", "alignment_offdiagonal"} <= set(
        legend_labels(by_name["ntk_alignment"].figure)
    )

    # The heatmap holds sigma_1..sigma_k of each run (rows: index, columns: measurement).
    heatmap = by_name["weights_heatmap_net.0.weight"].figure
    for run, ax in zip(runs, heatmap.axes):
        cells = np.asarray(ax.collections[0].get_array()).reshape(5, -1)
        for i in range(5):
            np.testing.assert_allclose(
                cells[i], run.scalars[f"spectral/weights/net.0.weight/sigma_{i + 1}"].values
            )

    # Per-layer curves: one panel per layer, one line per run.
    for metric in ("sigma_max", "stable_rank", "effective_rank"):
        panels = [ax for ax in by_name[f"weights_{metric}"].figure.axes if ax.get_title()]
        assert [ax.get_title() for ax in panels] == list(LAYERS)
        assert all(len(ax.get_lines()) == 2 for ax in panels)


class AdamClassifier(TinyClassifier):
    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def test_an_adam_run_shows_its_preconditioned_sharpness_against_adams_limit(tmp_path):
    """Under Adam ``eos_ratio`` divides λ_1(D⁻¹H): the limit drawn is (2+2β₁)/((1−β₁)η) = 38/η, next to the
    preconditioned series, and the batch-sharpness figure (raw curvature) gets no limit for that run."""
    lr = 0.01
    pl.seed_everything(0)
    logger = TensorBoardLogger(str(tmp_path), name="adam")
    monitor = HessianEigenMonitor(every_n_steps=4, strict=True)
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, logger=logger, callbacks=[monitor], max_epochs=2))
    trainer.fit(AdamClassifier(lr=lr))
    (run,) = read_runs([Path(logger.log_dir)])
    limit = stability_limit(run)
    assert list(limit.steps) == [4, 8]  # no preconditioner before the first step
    np.testing.assert_allclose(limit.values, 38 / lr, rtol=1e-5)
    by_name = {figure.name: figure for figure in make_figures([run], run_colors([run]))[0]}
    eigen = by_name["hessian_eigenvalues"].figure
    lines = [np.asarray(line.get_ydata(), dtype=float) for line in eigen.axes[0].get_lines()]
    preconditioned = run.scalars["spectral/hessian/preconditioned_lambda_1"].values
    assert any(np.array_equal(y, preconditioned) for y in lines)
    assert any(np.allclose(y, 38 / lr, rtol=1e-5) for y in lines)
    assert {"$\\lambda_1(D^{-1}H)$, preconditioned", "stability limit $\\lambda_{\\rm crit}$"} <= set(
        legend_labels(eigen)
    )
    sharpness_lines = by_name["batch_sharpness"].figure.axes[0].get_lines()
    assert not any(np.allclose(line.get_ydata(), 38 / lr, rtol=1e-3) for line in sharpness_lines)


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


def chromium(page: Path, screenshot: Path, profile: Path) -> list[str]:
    """Render ``page`` headless into ``screenshot``; return Chromium's console-message lines."""
    process = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={screenshot}",
            "--window-size=1200,2000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return [line for line in process.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_report_renders_in_headless_chromium(report, tmp_path):
    import matplotlib.image

    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (CI installs it in .ci/run)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")

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


def test_batch_sharpness_band_is_one_standard_error_where_it_was_logged(tmp_path):
    """With several measurement batches the monitor logs ``batch_sharpness_std_error``: the figure shades
    ``value ± std_error`` at the steps that have one, and nothing for a run without it."""
    steps = np.array([0.0, 10.0, 20.0])
    sharpness = Series(steps, np.array([1.0, 2.0, 3.0]))
    std_error = Series(np.array([10.0, 20.0]), np.array([0.1, 0.3]))
    banded = RunData("banded", tmp_path, [], {HESSIAN + "batch_sharpness": sharpness})
    banded.scalars[HESSIAN + "batch_sharpness_std_error"] = std_error
    plain = RunData("plain", tmp_path, [], {HESSIAN + "batch_sharpness": sharpness})
    runs = [banded, plain]
    figure = {f.name: f for f in make_figures(runs, run_colors(runs))[0]}["batch_sharpness"].figure
    bands = [c for c in figure.axes[0].collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    corners = bands[0].get_paths()[0].vertices
    for step, low, high in ((10.0, 1.9, 2.1), (20.0, 2.7, 3.3)):
        at_step = corners[np.isclose(corners[:, 0], step)][:, 1]
        np.testing.assert_allclose([at_step.min(), at_step.max()], [low, high])
    assert not np.isclose(corners[:, 0], 0.0).any()  # no band where no standard error was logged


def test_sgd_stability_figure_draws_the_exact_value_dotted_where_logged(tmp_path):
    """With ``compute_spectrum=True`` the NTK monitor logs ``sgd_stability_exact``: one dotted line of it, with a
    legend entry; a run without it draws none."""
    steps = np.array([0.0, 10.0])
    with_exact = RunData("with", tmp_path, [], {NTK + "sgd_stability": Series(steps, np.array([0.2, 0.3]))})
    with_exact.scalars[NTK + "sgd_stability_exact"] = Series(steps, np.array([0.25, 0.35]))
    without = RunData("without", tmp_path, [], {NTK + "sgd_stability": Series(steps, np.array([0.1, 0.1]))})
    runs = [with_exact, without]
    figure = {f.name: f for f in make_figures(runs, run_colors(runs))[0]}["sgd_stability"].figure
    dotted = [line for line in figure.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1
    np.testing.assert_allclose(dotted[0].get_ydata(), [0.25, 0.35])
    assert "exact (spectrum)" in legend_labels(figure)


def write_scalars(folder: Path, steps: range) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for step in steps:
        writer.add_scalar("spectral/hessian/lambda_1", float(step), step)
    writer.close()


def test_a_folder_of_separate_runs_is_warned_about_and_a_resumed_run_is_not(tmp_path):
    import warnings

    resumed = tmp_path / "resumed"
    write_scalars(resumed / "version_0", range(0, 9, 2))
    write_scalars(resumed / "version_1", range(8, 17, 2))  # resumed from step 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (run,) = read_runs([resumed])
    assert run.scalars["spectral/hessian/lambda_1"].steps.tolist() == list(range(0, 17, 2))

    separate = tmp_path / "separate"
    write_scalars(separate / "version_0", range(0, 17, 2))
    write_scalars(separate / "version_1", range(0, 9, 2))  # another run from step 0
    with pytest.warns(UserWarning, match="version_1 starts again at step 0.*Pass each sub-folder"):
        read_runs([separate])


def test_read_scalars_keeps_a_step_logged_twice_only_when_asked(tmp_path):
    """The reader the examples and the tests share: by default a later file wins at a repeated step;
    ``keep_repeats=True`` (what the tests read with, to see a duplicate) keeps both values."""
    from torch.utils.tensorboard import SummaryWriter

    from lightning_spectral.report.reader import read_scalars

    write_scalars(tmp_path / "version_0", range(0, 9, 2))  # value = step
    writer = SummaryWriter(str(tmp_path / "version_1"))
    writer.add_scalar("spectral/hessian/lambda_1", 100.0, 8)  # step 8 again, in a later file
    writer.close()
    tag = "spectral/hessian/lambda_1"
    assert read_scalars(tmp_path)[tag] == [(0, 0.0), (2, 2.0), (4, 4.0), (6, 6.0), (8, 100.0)]
    assert read_scalars(tmp_path, keep_repeats=True)[tag] == [
        (0, 0.0),
        (2, 2.0),
        (4, 4.0),
        (6, 6.0),
        (8, 8.0),
        (8, 100.0),
    ]
    with pytest.raises(FileNotFoundError, match="no TensorBoard event file"):
        read_scalars(tmp_path / "empty")
