"""The report's curvature figures: the top Hessian eigenvalues and the batch sharpness against the step with
each run's stability limit, and the Hessian density images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lightning_spectral.report.figure_style import (
    DPI,
    EIGEN_STYLES,
    HESSIAN,
    STEP_LABEL,
    WIDTH_IN,
    ReportFigure,
    chosen_at_steps,
    edge_line,
    eigen_tags,
    plot_series,
    run_legend,
    single_axes,
    style_axes,
    style_entries,
    titled,
)
from lightning_spectral.report.reader import Image, RunData, Series

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.typing import LineStyleType

LIMIT_STYLE: dict[str, Any] = dict(linewidth=5, alpha=0.25, solid_capstyle="butt")
#: Adaptive-optimizer runs (Adam family, NAdam, RMSprop, Adagrad, Adadelta) log the preconditioned sharpness λ_1(D⁻¹H); their ``eos_ratio`` divides it, not λ_1 of H.
PRECONDITIONED = HESSIAN + "preconditioned_lambda_1"
PRECONDITIONED_STYLE: LineStyleType = (0, (1, 1))


def stability_limit(run: RunData) -> Series | None:
    """The optimizer's stability limit ``λ_crit`` at each measurement, as ``s / eos_ratio`` for the sharpness
    ``s`` that ``eos_ratio`` divides: ``λ_1`` under SGD (``λ_crit = 2/η``, ``(2+2β)/η`` with momentum), the
    preconditioned ``λ_1(D⁻¹H)`` under the Adam family (``λ_crit = (2+2β₁)/((1−β₁)η)``), NAdam (its schedule's
    limit), RMSprop (``(2+2μ)/η``), Adagrad and Adadelta (``2/η``).
    """
    sharpness_tag = PRECONDITIONED if PRECONDITIONED in run.scalars else HESSIAN + "lambda_1"
    lam, ratio = run.scalars.get(sharpness_tag), run.scalars.get(HESSIAN + "eos_ratio")
    if lam is None or ratio is None:
        return None
    steps, at_lam, at_ratio = np.intersect1d(lam.steps, ratio.steps, return_indices=True)
    keep = ratio.values[at_ratio] != 0
    if not keep.any():
        return None
    return Series(steps[keep], lam.values[at_lam][keep] / ratio.values[at_ratio][keep])


def hessian_eigenvalues(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """``λ_1 .. λ_k`` against step (line style per index) with each run's stability limit ``λ_crit``, and
    ``eos_ratio = λ_1 / limit`` below it with the edge at 1.
    """
    shown = [run for run in runs if eigen_tags(run, HESSIAN + "lambda_")]
    if not shown:
        return None
    figure, ax, ratio_ax = _curvature_axes(shown, HESSIAN + "eos_ratio")
    values, max_k = [], 0
    for run in shown:
        for i, tag in eigen_tags(run, HESSIAN + "lambda_"):
            series = run.scalars[tag]
            plot_series(ax, series, colors[run.name], linestyle=EIGEN_STYLES[(i - 1) % len(EIGEN_STYLES)])
            values.append(series.values)
            max_k = max(max_k, i)
    styles = (
        [(i, EIGEN_STYLES[(i - 1) % len(EIGEN_STYLES)]) for i in range(1, max_k + 1)] if max_k > 1 else []
    )
    extra = style_entries([(rf"$\lambda_{{{i}}}$", style) for i, style in styles])
    adam = [run for run in shown if PRECONDITIONED in run.scalars]
    for run in adam:
        plot_series(ax, run.scalars[PRECONDITIONED], colors[run.name], linestyle=PRECONDITIONED_STYLE)
        values.append(run.scalars[PRECONDITIONED].values)
    if adam:
        extra += style_entries([(r"$\lambda_1(D^{-1}H)$, preconditioned", PRECONDITIONED_STYLE)])
    extra += _limits(ax, shown, colors, values)
    style_axes(ax, values, r"eigenvalue of $\nabla^2 L$", xlabel=None if ratio_ax else STEP_LABEL)
    extra += _ratio_panel(ratio_ax, shown, colors, HESSIAN + "eos_ratio", r"$\lambda_1/\lambda_{\rm crit}$")
    run_legend(figure, shown, colors, extra)
    caption = (
        "The largest eigenvalues λ_1 ≥ … ≥ λ_k of the loss Hessian ∇²L at each measurement (line style: index, "
        "color: run). The wide faint line is the run's stability limit λ_crit = λ_1/eos_ratio: 2/η for plain "
        "SGD ((2+2β)/η with momentum β). Gradient descent on a quadratic of curvature λ multiplies the error "
        "along that direction by 1 − ηλ each step, so it is stable iff λ < 2/η: λ_1 reaching the line is the "
        "edge of stability (Cohen et al. 2021). Under adaptive optimizers the dotted line is the preconditioned "
        "sharpness λ_1(D⁻¹H) and the limit is the optimizer's ((2+2β₁)/((1−β₁)η) for Adam, AdamW, Adamax and "
        "RAdam, the limit of its momentum schedule for NAdam, (2+2μ)/η for RMSprop, 2/η for Adagrad and "
        "Adadelta), which it is compared with (Cohen et al. 2022). "
        "Below: eos_ratio = sharpness/λ_crit, which puts runs with different step sizes and optimizers on one "
        "scale with the edge at 1."
    )
    return titled(
        figure, "hessian_eigenvalues", "Curvature", "Top Hessian eigenvalues and the stability limit", caption
    )


def batch_sharpness(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """The batch sharpness against step with each run's stability limit, and its ratio to the limit below."""
    shown = [run for run in runs if HESSIAN + "batch_sharpness" in run.scalars]
    if not shown:
        return None
    figure, ax, ratio_ax = _curvature_axes(shown, HESSIAN + "batch_sharpness_ratio")
    values = []
    for run in shown:
        series = run.scalars[HESSIAN + "batch_sharpness"]
        plot_series(ax, series, colors[run.name])
        values.append(series.values)
        std_error = run.scalars.get(HESSIAN + "batch_sharpness_std_error")
        if std_error is not None:  # ± one standard error over the measurement batches, where it was logged
            _, i, j = np.intersect1d(series.steps, std_error.steps, return_indices=True)
            low, high = series.values[i] - std_error.values[j], series.values[i] + std_error.values[j]
            ax.fill_between(series.steps[i], low, high, color=colors[run.name], alpha=0.15, linewidth=0)
            values += [low, high]
    # the limit of the raw curvature only: under Adam / RMSprop the limit is the preconditioned sharpness's
    extra = _limits(ax, [run for run in shown if PRECONDITIONED not in run.scalars], colors, values)
    style_axes(ax, values, "batch sharpness", xlabel=None if ratio_ax else STEP_LABEL)
    extra += _ratio_panel(
        ratio_ax, shown, colors, HESSIAN + "batch_sharpness_ratio", r"ratio to $\lambda_{\rm crit}$"
    )
    run_legend(figure, shown, colors, extra)
    caption = (
        "The curvature of each mini-batch loss along its own gradient, E_B[g_Bᵀ H_B g_B / ‖g_B‖²] "
        "(Andreyev & Beneventano 2024). Under mini-batch SGD it, rather than λ_1, rises to the stability "
        "limit λ_crit (wide faint line: 2/η for plain SGD, (2+2β)/η with momentum β) and hovers there: the "
        "edge of stochastic stability. Shaded, with several "
        "measurement batches: ± one standard error of their mean. Below: "
        "batch_sharpness_ratio = batch sharpness / λ_crit, with the edge at 1."
    )
    return titled(figure, "batch_sharpness", "Curvature", "Batch sharpness", caption)


def density_images(
    runs: Sequence[RunData], steps: Sequence[int] | None = None
) -> list[tuple[RunData, Image]]:
    """The logged Hessian density images (``spectral/hessian/density``) at ``steps`` (default: the last)."""
    return [
        (run, image)
        for run in runs
        for image in chosen_at_steps(run.images.get(HESSIAN + "density") or [], steps)
    ]


def _curvature_axes(runs: Sequence[RunData], ratio_tag: str) -> tuple[Figure, Axes, Axes | None]:
    """A value panel, and below it a ratio panel when any run logged ``ratio_tag`` (else ``None``)."""
    if not any(ratio_tag in run.scalars for run in runs):
        return (*single_axes(), None)
    figure = Figure(figsize=(WIDTH_IN, 6.0), dpi=DPI, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    return figure, top, bottom


def _limits(
    ax: Axes, runs: Sequence[RunData], colors: dict[str, str], values: list[np.ndarray]
) -> list[Line2D]:
    """Draw each run's stability limit (added to ``values``); the legend entry, if any was drawn."""
    drawn = False
    for run in runs:
        limit = stability_limit(run)
        if limit is not None:
            ax.plot(limit.steps, limit.values, color=colors[run.name], **LIMIT_STYLE)
            values.append(limit.values)
            drawn = True
    # one label for every optimizer: 2/η for plain SGD, (2+2β)/η with momentum, the optimizer's own (captions)
    label = r"stability limit $\lambda_{\rm crit}$"
    return [Line2D([], [], color="0.4", label=label, **LIMIT_STYLE)] if drawn else []


def _ratio_panel(
    ax: Axes | None, runs: Sequence[RunData], colors: dict[str, str], tag: str, ylabel: str
) -> list[Line2D]:
    """Each run's ``tag`` against step on ``ax`` with the edge at 1 (nothing when ``ax`` is ``None``)."""
    if ax is None:
        return []
    values = [np.array([1.0])]
    for run in runs:
        if tag in run.scalars:
            plot_series(ax, run.scalars[tag], colors[run.name])
            values.append(run.scalars[tag].values)
    style_axes(ax, values, ylabel)
    return [edge_line(ax, "edge of stability (ratio 1)")]
