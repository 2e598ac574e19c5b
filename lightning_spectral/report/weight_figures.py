"""The report's weight figures: per-layer σ_max / stable rank / effective rank curves, singular-value
histograms, and a heatmap of each layer's top singular values over time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lightning_spectral.report.figure_style import (
    DPI,
    EIGEN_STYLES,
    STEP_LABEL,
    WEIGHTS,
    WIDTH_IN,
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

GRID_LAYERS = 9
"""At most this many layers get a panel each (per-layer curves, singular-value histograms)."""
HEATMAP_ROWS = 40
"""At most this many layers (rows) in a per-layer heatmap."""
SINGULAR_VALUE_LAYERS = 4
"""The σ_1..σ_k heatmaps are drawn for this many layers (those of largest σ_max)."""
NAME_WIDTH = 44
"""Layer names longer than this are shortened in the middle (:func:`short_name`)."""

#: The end of a per-layer metric's range the heatmap shows first: largest σ_max, smallest ranks.
_EXTREME = {"sigma_max": "largest", "stable_rank": "smallest", "effective_rank": "smallest"}

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


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """``name`` itself when it fits in ``width`` characters, else its (most telling) last dot-separated parts
    after an ellipsis (the last ``width − 1`` characters when even the last part is longer).

    >>> short_name("model.bert.encoder.layer.11.attention.self.query.weight", 36)
    '…11.attention.self.query.weight'
    """
    if len(name) <= width:
        return name
    tail = name[len(name) - (width - 1) :]
    cut = tail.find(".")
    return "…" + (tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail)


def last_values(runs: Sequence[RunData], layers: Sequence[str], metric: str) -> dict[str, float]:
    """Each layer's ``metric`` at its last measurement, the largest over runs for σ_max, else the smallest."""
    pick = max if _EXTREME.get(metric, "largest") == "largest" else min
    found: dict[str, float] = {}
    for layer in layers:
        ends = [
            float(series.values[-1])
            for run in runs
            if (series := run.scalars.get(f"{WEIGHTS}{layer}/{metric}")) is not None
            and np.isfinite(series.values[-1])
        ]
        found[layer] = pick(ends) if ends else np.nan
    return found


def extreme_layers(runs: Sequence[RunData], layers: Sequence[str], metric: str, count: int) -> list[str]:
    """The ``count`` layers whose last ``metric`` is most extreme (:data:`_EXTREME`), in logging order; all of
    them when they are no more than ``count``.
    """
    if len(layers) <= count:
        return list(layers)
    ends = last_values(runs, layers, metric)
    sign = -1.0 if _EXTREME.get(metric, "largest") == "largest" else 1.0
    ranked = sorted(layers, key=lambda layer: (np.isnan(ends[layer]), sign * np.nan_to_num(ends[layer])))
    chosen = set(ranked[:count])
    return [layer for layer in layers if layer in chosen]


def layer_metric(runs: Sequence[RunData], colors: dict[str, str], metric: str) -> ReportFigure | None:
    """One panel per weight matrix of ``spectral/weights/<name>/<metric>`` against step, runs overlaid; above
    :data:`GRID_LAYERS` layers a heatmap instead (:func:`layer_heatmap`).
    """
    layers = layer_names(runs, metric)
    if not layers:
        return None
    if len(layers) > GRID_LAYERS:
        return layer_heatmap(runs, metric, layers)
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
        ax.set_title(short_name(layer, 36), fontsize=9)
    figure.supxlabel(STEP_LABEL)
    figure.supylabel(ylabel)
    run_legend(figure, [run for run in runs if run.name in shown], colors)
    return titled(figure, f"weights_{metric}", "Weights", title, _CAPTIONS[metric])


def layer_heatmap(runs: Sequence[RunData], metric: str, layers: Sequence[str]) -> ReportFigure:
    """``metric`` of up to :data:`HEATMAP_ROWS` layers (rows, logging order) at each measurement (columns), one
    panel per run on one color scale: the legible form of a per-layer metric for a model with many layers.
    """
    ylabel, title = LAYER_METRICS[metric]
    chosen = extreme_layers(runs, layers, metric, HEATMAP_ROWS)
    tables = []
    for run in runs:
        tags = [f"{WEIGHTS}{layer}/{metric}" for layer in chosen]
        logged = [run.scalars[tag] for tag in tags if tag in run.scalars]
        if not logged:
            continue
        steps = np.unique(np.concatenate([series.steps for series in logged]))
        grid = np.full((len(chosen), len(steps)), np.nan)
        for row, tag in enumerate(tags):
            series = run.scalars.get(tag)
            if series is not None:
                grid[row, np.searchsorted(steps, series.steps)] = series.values
        tables.append((run, steps, grid))
    everything = np.concatenate([g.ravel() for _, _, g in tables])
    finite = everything[np.isfinite(everything)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = LogNorm(low, high) if wants_log(finite, decades=1.0) else Normalize(low, high)
    figure = Figure(figsize=(WIDTH_IN, 1.9 + 0.17 * len(chosen)), dpi=DPI, layout="constrained")
    axes = np.ravel(figure.subplots(1, len(tables), sharey=True, squeeze=False))
    mesh = None
    for ax, (run, steps, grid) in zip(axes, tables):
        mesh = ax.pcolormesh(
            cell_edges(steps), np.arange(len(chosen) + 1) - 0.5, grid, norm=norm, cmap="viridis"
        )
        ax.set_ylim(len(chosen) - 0.5, -0.5)
        ax.set_title(run.name, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_yticks(np.arange(len(chosen)), [short_name(layer) for layer in chosen], fontsize=7)
    assert mesh is not None  # a panel per table, and there is one at least
    figure.colorbar(mesh, ax=list(axes), label=ylabel, shrink=0.9)
    figure.supxlabel(STEP_LABEL)
    which = (
        f"all {len(layers)} weight matrices"
        if len(chosen) == len(layers)
        else f"the {len(chosen)} of {len(layers)} weight matrices with the {_EXTREME[metric]} value at the last "
        "measurement"
    )
    caption = (
        f"{_CAPTIONS[metric]} One row per layer ({which}; long names shortened in the middle), one column "
        "per measurement, one panel per run on one color scale."
    )
    return titled(figure, f"weights_{metric}", "Weights", title, caption)


_CAPTIONS = {
    "sigma_max": "σ_max = ‖W‖₂, the largest singular value of each weight matrix (a convolution kernel is "
    "reshaped to out × in·∏kernel): how much the layer can stretch its input.",
    "stable_rank": "‖W‖_F²/σ_max², between 1 and min(m, n) and insensitive to tiny singular values; it "
    "falls when a few directions come to dominate the layer.",
    "effective_rank": "exp(−Σ p_i ln p_i) with p_i = σ_i/Σσ_j (Roy & Vetterli 2007): the number of "
    "singular values that carry the layer's mass.",
}


def singular_value_heatmap(runs: Sequence[RunData], layer: str) -> ReportFigure | None:
    """``σ_1 .. σ_k`` of one weight matrix over time as a heatmap, one panel per run, one color scale."""
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
    assert mesh is not None  # a panel per table, and there is one at least
    figure.colorbar(mesh, ax=axes, label=r"singular value $\sigma_i$", shrink=0.9)
    figure.supxlabel(STEP_LABEL)
    caption = (
        f"σ_1 ≥ … ≥ σ_k of {layer} (rows, largest on top) at each measurement (columns), one panel per run "
        "on one color scale: which directions of the layer grow, and when."
    )
    return titled(
        figure,
        f"weights_heatmap_{slug(layer)}",
        "Weights",
        f"Top singular values of {short_name(layer)} over training",
        caption,
    )


def singular_value_histograms(
    runs: Sequence[RunData], colors: dict[str, str], steps: Sequence[int] | None = None
) -> ReportFigure | None:
    """The logged singular-value histogram of every matrix at ``steps`` (nearest logged; default: last)."""
    every = layer_names(runs, "singular_values", kind="histograms")
    if not every:
        return None
    layers = extreme_layers(runs, every, "sigma_max", GRID_LAYERS) if len(every) > GRID_LAYERS else every
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
        ax.set_title(short_name(layer, 36), fontsize=9)
        ax.grid(alpha=0.3)
    figure.supxlabel(r"singular value $\sigma$")
    figure.supylabel("count")
    figure.legend(handles=list(handles.values()), loc="outside right upper", frameon=False)
    caption = (
        "The singular values of each weight matrix, as logged in TensorBoard's histograms "
        "(spectral/weights/<name>/singular_values), at the chosen step(s) (the nearest logged one)"
        + (
            f"; the {len(layers)} of {len(every)} matrices with the largest σ_max at the last measurement."
            if len(layers) < len(every)
            else "."
        )
    )
    return titled(
        figure, "weights_singular_values", "Weights", "Singular-value histograms per layer", caption
    )
