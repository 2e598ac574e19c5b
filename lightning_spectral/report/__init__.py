"""Offline reports: compare runs from their TensorBoard event files in one static HTML page of figures."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning_spectral.report.checkpoints import checkpoint_dynamics
from lightning_spectral.report.dynamics_figures import agreement_heatmaps, agreement_map
from lightning_spectral.report.figure_style import ReportFigure
from lightning_spectral.report.figures import DPI, density_images, make_figures, run_colors
from lightning_spectral.report.page import Panel, render_page
from lightning_spectral.report.reader import ReportError, RunData, read_runs

__all__ = ["ReportError", "RunData", "build_report", "read_runs"]


def build_report(
    run_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    steps: Sequence[int] | None = None,
    progress: bool = True,
    checkpoints: bool = True,
) -> Path:
    """Write ``out_dir/index.html`` and its PNGs for the runs below ``run_dirs``; return the page's path.

    Args:
        run_dirs: one folder per run, each with TensorBoard event files anywhere below it; the run is named
            after the folder (made unique with parent folders where names collide).
        out_dir: the output folder, created if missing; existing files of the same names are replaced.
        steps: the steps at which to show the Hessian density images and the singular-value histograms (the
            nearest logged step of each run); default: the last logged one.
        progress: one line per event file on stderr while reading.
        checkpoints: also read the Lightning checkpoints (``*.ckpt``) below each run folder and draw the
            agreement of every weight matrix with the final checkpoint by index and step
            (:mod:`~lightning_spectral.report.checkpoints`; runs with fewer than two saved steps are skipped).

    Raises:
        ReportError: a folder is missing, has no event files, or its event files hold no ``spectral/`` tag; a
            checkpoint cannot be read.

    Returns:
        The path of ``index.html``.

    Example::

        from lightning_spectral.report import build_report

        page = build_report(["lightning_logs/version_0", "lightning_logs/version_1"], "report", steps=[0, 300])
        print(page)  # report/index.html, next to one PNG per figure
    """
    runs = read_runs(list(run_dirs), progress=sys.stderr if progress else None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colors = run_colors(runs)
    figures, notes = make_figures(runs, colors, steps)
    if checkpoints:
        figures += _checkpoint_figures(runs, notes, progress)
    panels = []
    for figure in figures:
        figure.figure.savefig(out / f"{figure.name}.png", dpi=DPI, facecolor="white")
        width, height = (int(round(v)) for v in figure.figure.get_size_inches() * DPI)
        panels.append(
            Panel(
                figure.name,
                figure.section,
                figure.title,
                figure.caption,
                [(f"{figure.name}.png", "")],
                (width, height),
            )
        )
    density = density_images(runs, steps)
    if density:
        images = []
        for run, image in density:
            filename = f"hessian_density_run{runs.index(run) + 1}_step{image.step}.png"
            (out / filename).write_bytes(image.png)
            images.append((filename, f"{run.name}, step {image.step}"))
        caption = (
            "The eigenvalue density of the loss Hessian by stochastic Lanczos quadrature, as logged by "
            "HessianEigenMonitor(compute_density=True) (images from the event files), at the chosen step(s)."
        )
        panels.append(Panel("hessian_density", "Curvature", "Hessian eigenvalue density", caption, images))
    else:
        notes.append(
            "No Hessian eigenvalue density: no run logged spectral/hessian/density (compute_density=True)."
        )
    page = out / "index.html"
    page.write_text(render_page(runs, colors, panels, notes), encoding="utf-8")
    return page


def _checkpoint_figures(runs: Sequence[RunData], notes: list[str], progress: bool) -> list[ReportFigure]:
    """The agreement heatmaps of every run with saved checkpoints, then their layer × step map."""
    named = []
    for number, run in enumerate(runs, 1):
        if progress and any(run.path.rglob("*.ckpt")):
            print(f"{run.name}: agreement with the final checkpoint ...", file=sys.stderr, flush=True)
        dynamics = checkpoint_dynamics(run.path)
        if dynamics is None:
            notes.append(
                f"No checkpoint figures for {run.name}: fewer than two saved steps (*.ckpt) below its folder "
                "(ModelCheckpoint(every_n_train_steps=..., save_top_k=-1) keeps them)."
            )
        else:
            named.append((run.name, number, dynamics))
    figures = [agreement_heatmaps(name, number, dynamics) for name, number, dynamics in named]
    if named:
        figures.append(agreement_map([(name, dynamics) for name, _, dynamics in named]))
    return figures
