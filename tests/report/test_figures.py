"""The report's figures: both real runs overlaid with their data and legends (the stability limit, the
alignments, the heatmap, the per-layer curves), Adam's preconditioned limit, the batch-sharpness band and the
exact SGD stability, checked against the logged series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from matplotlib.collections import PolyCollection
from pytorch_lightning.loggers import TensorBoardLogger
from spectral_testing.models import TinyClassifier, trainer_kwargs
from spectral_testing.report_runs import LAYERS, LEARNING_RATES, expected_images

from lightning_spectral.callbacks import HessianEigenMonitor
from lightning_spectral.report import read_runs
from lightning_spectral.report.figure_style import HESSIAN, NTK
from lightning_spectral.report.figures import legend_labels, make_figures, run_colors, stability_limit
from lightning_spectral.report.reader import RunData, Series


@pytest.mark.slow
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
