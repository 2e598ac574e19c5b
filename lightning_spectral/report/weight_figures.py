"""The report's weight figures: per-layer σ_max / stable rank / effective rank curves, singular-value
histograms, and a heatmap of each layer's top singular values over time."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.lines import Line2D

from lightning_spectral.report.figure_style import (
    EIGEN_STYLES,
    STEP_LABEL,
    WEIGHTS,
    ReportFigure,
    cell_edges,
    chosen_at_steps,
    eigen_tags,
    grid_axes,
    plot_series,
    run_legend,
    slug,
    style_axes,
    titled,
    wants_log,
)
from lightning_spectral.report.reader import RunData

LAYER_METRICS = {
    "sigma_max": (
        r"$\sigma_{\max}$ (spectral norm $\|W\|_2$)",
        "Largest singular value (spectral norm) per layer",
    ),
    "stable_rank": (r"stable rank $\|W\|_F^2/\sigma_{\max}^2$", "Stable rank per layer"),
    "effective_rank": (r"effective rank $\exp H(\sigma/\Sigma\sigma)$", "Effective rank per layer"),
}


def layer_names(runs: Sequence[RunData], suffix: str, kind: str = "scalars") -> list[str]:
    """The weight matrices with a ``spectral/weights/<name>/<suffix>`` tag in any run, in logging order."""
    pattern = re.compile(re.escape(WEIGHTS) + r"(.+)/" + re.escape(suffix) + "$")
    names: dict[str, None] = {}
    for run in runs:
        for tag in getattr(run, kind):
            match = pattern.match(tag)
            if match:
                names.setdefault(match.group(1))
    return list(names)


def layer_metric(runs: Sequence[RunData], colors: dict[str, str], metric: str) -> ReportFigure | None:
    """One panel per weight matrix of ``spectral/weights/<name>/<metric>`` against step, runs overlaid."""
    layers = layer_names(runs, metric)
    if not layers:
        return None
    ylabel, title = LAYER_METRICS[metric]
    figure, axes = grid_axes(len(layers))
    shown: dict[str, RunData] = {}
    for ax, layer in zip(axes, layers):
        values = []
        for run in runs:
            series = run.scalars.get(f"{WEIGHTS}{layer}/{metric}")
            if series is not None:
                plot_series(ax, series, colors[run.name])
                values.append(series.values)
                shown[run.name] = run
        style_axes(ax, values, None, xlabel=None)
        ax.set_title(layer, fontsize=10)
    figure.supxlabel(STEP_LABEL)
    figure.supylabel(ylabel)
    run_legend(figure, [run for run in runs if run.name in shown], colors)
    captions = {
        "sigma_max": "σ_max = ‖W‖₂, the largest singular value of each weight matrix (a convolution kernel is "
        "reshaped to out × in·∏kernel): how much the layer can stretch its input.",
        "stable_rank": "‖W‖_F²/σ_max², between 1 and min(m, n) and insensitive to tiny singular values; it "
        "falls when a few directions come to dominate the layer.",
        "effective_rank": "exp(−Σ p_i ln p_i) with p_i = σ_i/Σσ_j (Roy & Vetterli 2007): the number of "
        "singular values that carry the layer's mass.",
    }
    return titled(figure, f"weights_{metric}", "Weights", title, captions[metric])


def singular_value_heatmap(runs: Sequence[RunData], layer: str) -> ReportFigure | None:
    """``σ_1 .. σ_k`` of one weight matrix over time as a heatmap, one panel per run, one colour scale."""
    tables = []
    for run in runs:
        tags = eigen_tags(run, f"{WEIGHTS}{layer}/sigma_")
        if not tags:
            continue
        steps = np.unique(np.concatenate([run.scalars[tag].steps for _, tag in tags]))
        grid = np.full((max(i for i, _ in tags), len(steps)), np.nan)
        for i, tag in tags:
            series = run.scalars[tag]
            grid[i - 1, np.searchsorted(steps, series.steps)] = series.values
        tables.append((run, steps, grid))
    if not tables:
        return None
    everything = np.concatenate([g.ravel() for _, _, g in tables])
    finite = everything[np.isfinite(everything)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = LogNorm(low, high) if wants_log(finite, decades=1.0) else Normalize(low, high)
    figure, axes = grid_axes(len(tables), panel_height=2.4 + 0.12 * max(g.shape[0] for _, _, g in tables))
    mesh = None
    for ax, (run, steps, grid) in zip(axes, tables):
        mesh = ax.pcolormesh(
            cell_edges(steps), np.arange(grid.shape[0] + 1) + 0.5, grid, norm=norm, cmap="viridis"
        )
        ax.set_ylim(grid.shape[0] + 0.5, 0.5)
        ticks = np.unique(np.linspace(1, grid.shape[0], min(grid.shape[0], 6)).round().astype(int))
        ax.set_yticks(ticks, [rf"$\sigma_{{{t}}}$" for t in ticks])
        ax.set_title(run.name, fontsize=10)
    figure.colorbar(mesh, ax=axes, label=r"singular value $\sigma_i$", shrink=0.9)
    figure.supxlabel(STEP_LABEL)
    caption = (
        f"σ_1 ≥ … ≥ σ_k of {layer} (rows, largest on top) at each measurement (columns), one panel per run "
        "on one colour scale: which directions of the layer grow, and when."
    )
    return titled(
        figure,
        f"weights_heatmap_{slug(layer)}",
        "Weights",
        f"Top singular values of {layer} over training",
        caption,
    )


def singular_value_histograms(
    runs: Sequence[RunData], colors: dict[str, str], steps: Sequence[int] | None = None
) -> ReportFigure | None:
    """The logged singular-value histogram of every matrix at ``steps`` (nearest logged; default: last)."""
    layers = layer_names(runs, "singular_values", kind="histograms")
    if not layers:
        return None
    figure, axes = grid_axes(len(layers), sharex=False)
    handles: dict[str, Line2D] = {}
    for ax, layer in zip(axes, layers):
        edges = []
        for run in runs:
            logged = run.histograms.get(f"{WEIGHTS}{layer}/singular_values")
            if not logged:
                continue
            chosen = chosen_at_steps(logged, steps)
            for number, histogram in enumerate(chosen):
                style = EIGEN_STYLES[(len(chosen) - 1 - number) % len(EIGEN_STYLES)]
                ax.stairs(
                    histogram.counts, histogram.edges, color=colors[run.name], linestyle=style, linewidth=1.5
                )
                label = f"{run.name}, step {histogram.step}"
                handles.setdefault(
                    label, Line2D([], [], color=colors[run.name], linestyle=style, label=label)
                )
                edges.append(histogram.edges[histogram.edges > 0])
        if wants_log(*edges, decades=1.0):
            ax.set_xscale("log")
        ax.set_title(layer, fontsize=10)
        ax.grid(alpha=0.3)
    figure.supxlabel(r"singular value $\sigma$")
    figure.supylabel("count")
    figure.legend(handles=list(handles.values()), loc="outside right upper", frameon=False)
    caption = (
        "The singular values of each weight matrix, as logged in TensorBoard's histograms "
        "(spectral/weights/<name>/singular_values), at the chosen step(s) (the nearest logged one)."
    )
    return titled(
        figure, "weights_singular_values", "Weights", "Singular-value histograms per layer", caption
    )
