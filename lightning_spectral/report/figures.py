"""The report's matplotlib figures: one per metric, every run overlaid in its own colour.

Each builder takes the runs and their colours and returns a :class:`ReportFigure`, or ``None`` when no run
logged the metric. Figures are plain :class:`matplotlib.figure.Figure` objects (no pyplot, no global state),
drawn with the Agg canvas when saved. A y axis is logarithmic where the values span two decades or more.

Example::

    colors = run_colors(runs)
    figure = hessian_eigenvalues(runs, colors)
    figure.figure.savefig("hessian_eigenvalues.png")
    legend_labels(figure.figure)        # ['lr0.05', 'lr0.2', '$\\lambda_1$', ..., 'stability limit $2/\\eta$']
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lightning_spectral.report.reader import Image, RunData, Series, nearest

STEP_LABEL = "optimizer step"
WIDTH_IN = 10.0
DPI = 100
EIGEN_STYLES = ("-", "--", ":", (0, (5, 1, 1, 1)), (0, (1, 3)))
LIMIT_STYLE = dict(linewidth=5, alpha=0.25, solid_capstyle="butt")
HESSIAN = "spectral/hessian/"
NTK = "spectral/ntk/"
WEIGHTS = "spectral/weights/"
LAYER_METRICS = {
    "sigma_max": (
        r"$\sigma_{\max}$ (spectral norm $\|W\|_2$)",
        "Largest singular value (spectral norm) per layer",
    ),
    "stable_rank": (r"stable rank $\|W\|_F^2/\sigma_{\max}^2$", "Stable rank per layer"),
    "effective_rank": (r"effective rank $\exp H(\sigma/\Sigma\sigma)$", "Effective rank per layer"),
}


@dataclass
class ReportFigure:
    """A figure of the report: ``name`` is its file stem, ``section`` the page section it belongs to."""

    name: str
    section: str
    title: str
    caption: str
    figure: Figure


def run_colors(runs: Sequence[RunData]) -> dict[str, str]:
    """A distinct colour per run name (Tableau 10, then Tableau 20), the same in every figure.

    >>> from pathlib import Path
    >>> run_colors([RunData("a", Path("a"), []), RunData("b", Path("b"), [])])
    {'a': '#1f77b4', 'b': '#ff7f0e'}
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = [to_hex(c) for c in colormaps["tab10"].colors + colormaps["tab20"].colors[1::2]]
    return {run.name: palette[i % len(palette)] for i, run in enumerate(runs)}


def wants_log(*arrays, decades: float = 2.0) -> bool:
    """Whether values are all positive and span at least ``decades`` powers of ten.

    >>> wants_log([1.0, 50.0], [2000.0]), wants_log([1.0, 50.0]), wants_log([-1.0, 1000.0])
    (True, False, False)
    """
    values = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays] or [np.empty(0)])
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() <= 0:
        return False
    return math.log10(values.max() / values.min()) >= decades


def legend_labels(figure: Figure) -> list[str]:
    """The texts of every legend of ``figure`` and the titles of its panels, in drawing order."""
    legends = list(figure.legends) + [ax.get_legend() for ax in figure.axes if ax.get_legend()]
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    return [t.get_text() for legend in legends for t in legend.get_texts()] + titles


def stability_limit(run: RunData) -> Series | None:
    """The optimizer's stability limit ``λ_crit = λ_1 / eos_ratio`` (``2/η`` for SGD) at each measurement."""
    lam, ratio = run.scalars.get(HESSIAN + "lambda_1"), run.scalars.get(HESSIAN + "eos_ratio")
    if lam is None or ratio is None:
        return None
    steps, at_lam, at_ratio = np.intersect1d(lam.steps, ratio.steps, return_indices=True)
    keep = ratio.values[at_ratio] != 0
    if not keep.any():
        return None
    return Series(steps[keep], lam.values[at_lam][keep] / ratio.values[at_ratio][keep])


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


def eigen_tags(run: RunData, prefix: str) -> list[tuple[int, str]]:
    """``[(i, tag)]`` of the tags ``<prefix><i>`` of ``run`` (``lambda_1 .. lambda_k``, ``sigma_1 ..``)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = [(int(m.group(1)), tag) for tag in run.scalars if (m := pattern.match(tag))]
    return sorted(found)


def hessian_eigenvalues(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """``λ_1 .. λ_k`` against step (line style per index) with each run's stability limit ``2/η``, and
    ``eos_ratio = λ_1 / limit`` below it with the edge at 1."""
    shown = [run for run in runs if eigen_tags(run, HESSIAN + "lambda_")]
    if not shown:
        return None
    figure, ax, ratio_ax = _curvature_axes(shown, HESSIAN + "eos_ratio")
    values, max_k = [], 0
    for run in shown:
        for i, tag in eigen_tags(run, HESSIAN + "lambda_"):
            series = run.scalars[tag]
            _plot(ax, series, colors[run.name], linestyle=EIGEN_STYLES[(i - 1) % len(EIGEN_STYLES)])
            values.append(series.values)
            max_k = max(max_k, i)
    styles = (
        [(i, EIGEN_STYLES[(i - 1) % len(EIGEN_STYLES)]) for i in range(1, max_k + 1)] if max_k > 1 else []
    )
    extra = _style_entries([(rf"$\lambda_{{{i}}}$", style) for i, style in styles])
    extra += _limits(ax, shown, colors, values)
    _axes(ax, values, r"eigenvalue of $\nabla^2 L$", xlabel=None if ratio_ax else STEP_LABEL)
    extra += _ratio_panel(ratio_ax, shown, colors, HESSIAN + "eos_ratio", r"$\lambda_1/\lambda_{\rm crit}$")
    _legend(figure, shown, colors, extra)
    title = "Top Hessian eigenvalues and the stability limit"
    figure.suptitle(title)
    caption = (
        "The largest eigenvalues λ_1 ≥ … ≥ λ_k of the loss Hessian ∇²L at each measurement (line style: index, "
        "colour: run). The wide faint line is the run's stability limit λ_crit = λ_1/eos_ratio: 2/η for plain "
        "SGD ((2+2β)/η with momentum β). Gradient descent on a quadratic of curvature λ multiplies the error "
        "along that direction by 1 − ηλ each step, so it is stable iff λ < 2/η: λ_1 reaching the line is the "
        "edge of stability (Cohen et al. 2021). Below: eos_ratio = λ_1/λ_crit, which puts runs with different "
        "step sizes on one scale with the edge at 1."
    )
    return ReportFigure("hessian_eigenvalues", "Curvature", title, caption, figure)


def batch_sharpness(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """The batch sharpness against step with each run's stability limit, and its ratio to the limit below."""
    shown = [run for run in runs if HESSIAN + "batch_sharpness" in run.scalars]
    if not shown:
        return None
    figure, ax, ratio_ax = _curvature_axes(shown, HESSIAN + "batch_sharpness_ratio")
    values = []
    for run in shown:
        series = run.scalars[HESSIAN + "batch_sharpness"]
        _plot(ax, series, colors[run.name])
        values.append(series.values)
    extra = _limits(ax, shown, colors, values)
    _axes(ax, values, "batch sharpness", xlabel=None if ratio_ax else STEP_LABEL)
    extra += _ratio_panel(
        ratio_ax, shown, colors, HESSIAN + "batch_sharpness_ratio", r"ratio to $\lambda_{\rm crit}$"
    )
    _legend(figure, shown, colors, extra)
    title = "Batch sharpness"
    figure.suptitle(title)
    caption = (
        "The curvature of each mini-batch loss along its own gradient, E_B[g_Bᵀ H_B g_B / ‖g_B‖²] "
        "(Andreyev & Beneventano 2024). Under mini-batch SGD it, rather than λ_1, rises to the stability "
        "limit 2/η (wide faint line) and hovers there: the edge of stochastic stability. Below: "
        "batch_sharpness_ratio = batch sharpness / λ_crit, with the edge at 1."
    )
    return ReportFigure("batch_sharpness", "Curvature", title, caption, figure)


def ntk_trace(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """The trace of the empirical NTK against step."""
    figure, ax = _single()
    values, shown = [], [run for run in runs if NTK + "trace" in run.scalars]
    for run in shown:
        series = run.scalars[NTK + "trace"]
        _plot(ax, series, colors[run.name])
        values.append(series.values)
    if not values:
        return None
    _axes(ax, values, r"NTK trace $\mathrm{tr}\,\Theta$")
    _legend(figure, shown, colors)
    title = "NTK trace"
    figure.suptitle(title)
    caption = (
        "tr Θ = Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖² of the empirical neural tangent kernel Θ = JJᵀ on the measurement "
        "batch: how fast one gradient step moves the outputs."
    )
    return ReportFigure("ntk_trace", "Kernel", title, caption, figure)


#: The NTK alignments (``spectral/ntk/<form>``) and their line styles in :func:`ntk_alignment`.
ALIGNMENT_STYLES = {"alignment": "-", "alignment_centered": "--", "alignment_offdiagonal": ":"}


def ntk_alignment(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """The NTK-label alignments each run logged against step: one colour per run, one style per form."""
    figure, ax = _single()
    shown, forms = [], []
    for run in runs:
        logged = [form for form in ALIGNMENT_STYLES if NTK + form in run.scalars]
        if logged:
            shown.append(run)
        for form in logged:
            _plot(ax, run.scalars[NTK + form], colors[run.name], linestyle=ALIGNMENT_STYLES[form])
            if form not in forms:
                forms.append(form)
    if not shown:
        return None
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    _axes(ax, [], "NTK-label alignment")  # linear: the off-diagonal alignment can be negative
    _legend(
        figure,
        shown,
        colors,
        _style_entries([(f, ALIGNMENT_STYLES[f]) for f in ALIGNMENT_STYLES if f in forms]),
    )
    title = "NTK alignment with the labels"
    figure.suptitle(title)
    caption = (
        "alignment = ⟨Θ, yyᵀ⟩_F/(‖Θ‖_F‖yyᵀ‖_F) (Cristianini et al. 2002); alignment_centered: both kernels "
        "centred (Cortes et al. 2012); alignment_offdiagonal: the correlation, over pairs of distinct "
        "examples, of the output-traced kernel Σ_k Θ_(i,k),(j,k) with ⟨y_i, y_j⟩ (same label or not). A rise "
        "means the kernel adapts to the labels: the lazy → rich transition (Kumar et al. 2024)."
    )
    return ReportFigure("ntk_alignment", "Kernel", title, caption, figure)


def sgd_stability(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """The noise-kernel norm ``𝒦`` (its bounds where logged) against step, with the edge ``𝒦 = 1``."""
    figure, ax = _single()
    values, any_upper, shown = [np.array([1.0])], False, []
    for run in runs:
        lower = run.scalars.get(NTK + "sgd_stability")
        if lower is None:
            continue
        shown.append(run)
        color = colors[run.name]
        _plot(ax, lower, color)
        values.append(lower.values)
        upper = run.scalars.get(NTK + "sgd_stability_upper")
        if upper is not None:  # on the steps of the lower bound, NaN (a gap) where it was not logged
            aligned = np.full(len(lower.steps), np.nan)
            _, i, j = np.intersect1d(lower.steps, upper.steps, return_indices=True)
            aligned[i] = upper.values[j]
            _plot(ax, Series(lower.steps, aligned), color, linestyle="--", marker=None)
            ax.fill_between(lower.steps, lower.values, aligned, color=color, alpha=0.12, linewidth=0)
            values.append(aligned)
            any_upper = True
    if len(values) == 1:
        return None
    extra = [_edge(ax, r"S-EOS edge $\mathcal{K} = 1$")]
    if any_upper:
        extra.insert(0, Line2D([], [], color="0.3", linestyle="--", label="upper bound"))
    _axes(ax, values, r"noise-kernel norm $\mathcal{K}$")
    _legend(figure, shown, colors, extra)
    title = "Stochastic edge of stability (sgd_stability)"
    figure.suptitle(title)
    caption = (
        "The noise-kernel norm 𝒦 ≈ (1 − B/D)·η·tr(Θ̂)/(2BK) of SGD with step η and batch size B (solid: the "
        "trace-based value, a lower bound; dashed with a shaded band: the upper bound, where logged). The "
        "second moment of SGD's residual grows without bound once 𝒦 > 1, so 𝒦 = 1 (black dashes) is the "
        "stochastic edge of stability (Agarwala & Pennington 2024). Logged for plain SGD only; the upper "
        "bound is undefined (a gap) where η·λ_max of the kernel per example reaches 2."
    )
    return ReportFigure("sgd_stability", "Kernel", title, caption, figure)


def layer_metric(runs: Sequence[RunData], colors: dict[str, str], metric: str) -> ReportFigure | None:
    """One panel per weight matrix of ``spectral/weights/<name>/<metric>`` against step, runs overlaid."""
    layers = layer_names(runs, metric)
    if not layers:
        return None
    ylabel, title = LAYER_METRICS[metric]
    figure, axes = _grid(len(layers))
    shown: dict[str, RunData] = {}
    for ax, layer in zip(axes, layers):
        values = []
        for run in runs:
            series = run.scalars.get(f"{WEIGHTS}{layer}/{metric}")
            if series is not None:
                _plot(ax, series, colors[run.name])
                values.append(series.values)
                shown[run.name] = run
        _axes(ax, values, None, xlabel=None)
        ax.set_title(layer, fontsize=10)
    figure.supxlabel(STEP_LABEL)
    figure.supylabel(ylabel)
    _legend(figure, [run for run in runs if run.name in shown], colors)
    figure.suptitle(title)
    captions = {
        "sigma_max": "σ_max = ‖W‖₂, the largest singular value of each weight matrix (a convolution kernel is "
        "reshaped to out × in·∏kernel): how much the layer can stretch its input.",
        "stable_rank": "‖W‖_F²/σ_max², between 1 and min(m, n) and insensitive to tiny singular values; it "
        "falls when a few directions come to dominate the layer.",
        "effective_rank": "exp(−Σ p_i ln p_i) with p_i = σ_i/Σσ_j (Roy & Vetterli 2007): the number of "
        "singular values that carry the layer's mass.",
    }
    return ReportFigure(f"weights_{metric}", "Weights", title, captions[metric], figure)


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
    figure, axes = _grid(len(tables), panel_height=2.4 + 0.12 * max(g.shape[0] for _, _, g in tables))
    mesh = None
    for ax, (run, steps, grid) in zip(axes, tables):
        mesh = ax.pcolormesh(
            _edges(steps), np.arange(grid.shape[0] + 1) + 0.5, grid, norm=norm, cmap="viridis"
        )
        ax.set_ylim(grid.shape[0] + 0.5, 0.5)
        ticks = np.unique(np.linspace(1, grid.shape[0], min(grid.shape[0], 6)).round().astype(int))
        ax.set_yticks(ticks, [rf"$\sigma_{{{t}}}$" for t in ticks])
        ax.set_title(run.name, fontsize=10)
    figure.colorbar(mesh, ax=axes, label=r"singular value $\sigma_i$", shrink=0.9)
    figure.supxlabel(STEP_LABEL)
    title = f"Top singular values of {layer} over training"
    figure.suptitle(title)
    caption = (
        f"σ_1 ≥ … ≥ σ_k of {layer} (rows, largest on top) at each measurement (columns), one panel per run "
        "on one colour scale: which directions of the layer grow, and when."
    )
    return ReportFigure(f"weights_heatmap_{_slug(layer)}", "Weights", title, caption, figure)


def singular_value_histograms(
    runs: Sequence[RunData], colors: dict[str, str], steps: Sequence[int] | None = None
) -> ReportFigure | None:
    """The logged singular-value histogram of every matrix at ``steps`` (nearest logged; default: last)."""
    layers = layer_names(runs, "singular_values", kind="histograms")
    if not layers:
        return None
    figure, axes = _grid(len(layers), sharex=False)
    handles: dict[str, Line2D] = {}
    for ax, layer in zip(axes, layers):
        edges = []
        for run in runs:
            logged = run.histograms.get(f"{WEIGHTS}{layer}/singular_values")
            if not logged:
                continue
            chosen = _chosen(logged, steps)
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
    title = "Singular-value histograms per layer"
    figure.suptitle(title)
    caption = (
        "The singular values of each weight matrix, as logged in TensorBoard's histograms "
        "(spectral/weights/<name>/singular_values), at the chosen step(s) (the nearest logged one)."
    )
    return ReportFigure("weights_singular_values", "Weights", title, caption, figure)


def density_images(
    runs: Sequence[RunData], steps: Sequence[int] | None = None
) -> list[tuple[RunData, Image]]:
    """The logged Hessian density images (``spectral/hessian/density``) at ``steps`` (default: the last)."""
    return [
        (run, image) for run in runs for image in _chosen(run.images.get(HESSIAN + "density") or [], steps)
    ]


def make_figures(
    runs: Sequence[RunData], colors: dict[str, str], steps: Sequence[int] | None = None
) -> tuple[list[ReportFigure], list[str]]:
    """Every figure the runs have data for, in page order, and a note for each metric no run logged."""
    wanted = [
        ("Hessian λ_1..λ_k (HessianEigenMonitor)", lambda: hessian_eigenvalues(runs, colors)),
        (
            "batch sharpness (HessianEigenMonitor, compute_batch_sharpness=True)",
            lambda: batch_sharpness(runs, colors),
        ),
        ("NTK trace (NTKTraceMonitor)", lambda: ntk_trace(runs, colors)),
        ("NTK alignment (NTKTraceMonitor, compute_alignment=True)", lambda: ntk_alignment(runs, colors)),
        (
            "sgd_stability (NTKTraceMonitor, plain SGD without momentum only)",
            lambda: sgd_stability(runs, colors),
        ),
    ]
    wanted += [
        (f"per-layer {m} (WeightSpectrumMonitor)", lambda m=m: layer_metric(runs, colors, m))
        for m in LAYER_METRICS
    ]
    wanted.append(
        (
            "singular-value histograms (WeightSpectrumMonitor, histogram_every_n > 0)",
            lambda: singular_value_histograms(runs, colors, steps),
        )
    )
    wanted += [
        (f"singular values of {layer}", lambda layer=layer: singular_value_heatmap(runs, layer))
        for layer in layer_names(runs, "sigma_1")
    ]
    figures, notes = [], []
    for what, build in wanted:
        figure = build()
        if figure is None:
            notes.append(f"No figure for {what}: no run logged it.")
        else:
            figures.append(figure)
    return figures, notes


def _chosen(items: Sequence, steps: Sequence[int] | None) -> list:
    """The items nearest to ``steps`` (once each, by step), or the last one."""
    if not items:
        return []
    if not steps:
        return [items[-1]]
    return sorted(
        {id(item): item for item in (nearest(items, s) for s in steps)}.values(), key=lambda i: i.step
    )


def _single() -> tuple[Figure, object]:
    figure = Figure(figsize=(WIDTH_IN, 4.4), dpi=DPI, layout="constrained")
    return figure, figure.subplots()


def _grid(panels: int, panel_height: float = 2.6, sharex: bool = True) -> tuple[Figure, list]:
    """A figure with ``panels`` axes in up to three columns (sharing the x axis); spare axes removed."""
    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(WIDTH_IN, 1.1 + panel_height * rows), dpi=DPI, layout="constrained")
    axes = list(np.ravel(figure.subplots(rows, columns, sharex=sharex, squeeze=False)))
    for spare in axes[panels:]:
        spare.remove()
    return figure, axes[:panels]


def _curvature_axes(runs: Sequence[RunData], ratio_tag: str) -> tuple[Figure, object, object | None]:
    """A value panel, and below it a ratio panel when any run logged ``ratio_tag`` (else ``None``)."""
    if not any(ratio_tag in run.scalars for run in runs):
        return (*_single(), None)
    figure = Figure(figsize=(WIDTH_IN, 6.0), dpi=DPI, layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    return figure, top, bottom


def _limits(ax, runs: Sequence[RunData], colors: dict[str, str], values: list) -> list[Line2D]:
    """Draw each run's stability limit (added to ``values``); the legend entry, if any was drawn."""
    drawn = False
    for run in runs:
        limit = stability_limit(run)
        if limit is not None:
            ax.plot(limit.steps, limit.values, color=colors[run.name], **LIMIT_STYLE)
            values.append(limit.values)
            drawn = True
    return [Line2D([], [], color="0.4", label=r"stability limit $2/\eta$", **LIMIT_STYLE)] if drawn else []


def _edge(ax, label: str) -> Line2D:
    """A black dashed line at 1 on ``ax``; its legend entry."""
    style = dict(color="black", linestyle="--", linewidth=1.2)
    ax.axhline(1.0, **style)
    return Line2D([], [], label=label, **style)


def _ratio_panel(ax, runs: Sequence[RunData], colors: dict[str, str], tag: str, ylabel: str) -> list[Line2D]:
    """Each run's ``tag`` against step on ``ax`` with the edge at 1 (nothing when ``ax`` is ``None``)."""
    if ax is None:
        return []
    values = [np.array([1.0])]
    for run in runs:
        if tag in run.scalars:
            _plot(ax, run.scalars[tag], colors[run.name])
            values.append(run.scalars[tag].values)
    _axes(ax, values, ylabel)
    return [_edge(ax, "edge of stability (ratio 1)")]


def _plot(ax, series: Series, color: str, linestyle="-", marker="auto") -> None:
    """One run's series, with point markers when measurements are sparse."""
    if marker == "auto":
        marker = "o" if len(series.steps) <= 60 else None
    ax.plot(
        series.steps,
        series.values,
        color=color,
        linestyle=linestyle,
        marker=marker,
        markersize=3,
        linewidth=1.6,
    )


def _axes(ax, values: list, ylabel: str | None, xlabel: str | None = STEP_LABEL) -> None:
    """Log y where the values span two decades; grid; labels."""
    if wants_log(*values):
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both" if ax.get_yscale() == "log" else "major")
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)


def _legend(figure: Figure, runs: Sequence[RunData], colors: dict[str, str], extra: Sequence = ()) -> None:
    """A legend right of the axes: one entry per run (its colour), then ``extra`` entries."""
    handles = [Line2D([], [], color=colors[run.name], linewidth=2, label=run.name) for run in runs] + list(
        extra
    )
    figure.legend(handles=handles, loc="outside right upper", frameon=False)


def _style_entries(styles: Sequence[tuple[str, object]]) -> list[Line2D]:
    """Legend entries ``(label, line style)`` in grey: the style stands for a quantity, the colour for a run."""
    return [Line2D([], [], color="0.2", linestyle=style, label=label) for label, style in styles]


def _edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around measurement steps (midpoints; half a gap beyond the ends)."""
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    middle = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - middle[0]], middle, [2 * steps[-1] - middle[-1]]])


def _slug(name: str) -> str:
    """A file-name-safe form of a parameter name.

    >>> _slug("conv.weight[0,1]")
    'conv.weight_0_1_'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
