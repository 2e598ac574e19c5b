"""The report's kernel figures: the NTK trace, the NTK-label alignments and the stochastic edge of stability."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.lines import Line2D

from lightning_spectral.report.figure_style import (
    NTK,
    ReportFigure,
    edge_line,
    plot_series,
    run_legend,
    single_axes,
    style_axes,
    style_entries,
    titled,
)
from lightning_spectral.report.reader import RunData, Series

if TYPE_CHECKING:
    from matplotlib.typing import LineStyleType

#: The NTK alignments (``spectral/ntk/<form>``) and their line styles in :func:`ntk_alignment`.
ALIGNMENT_STYLES: dict[str, LineStyleType] = {
    "alignment": "-",
    "alignment_centered": "--",
    "alignment_offdiagonal": ":",
}


def ntk_trace(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """The trace of the empirical NTK against step."""
    figure, ax = single_axes()
    values, shown = [], [run for run in runs if NTK + "trace" in run.scalars]
    for run in shown:
        series = run.scalars[NTK + "trace"]
        plot_series(ax, series, colors[run.name])
        values.append(series.values)
    if not values:
        return None
    style_axes(ax, values, r"NTK trace $\mathrm{tr}\,\Theta$")
    run_legend(figure, shown, colors)
    caption = (
        "tr Θ = Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖² of the empirical neural tangent kernel Θ = JJᵀ on the measurement "
        "batch: how fast one gradient step moves the outputs."
    )
    return titled(figure, "ntk_trace", "Kernel", "NTK trace", caption)


def ntk_alignment(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """The NTK-label alignments each run logged against step: one color per run, one style per form."""
    figure, ax = single_axes()
    shown, forms = [], []
    for run in runs:
        logged = [form for form in ALIGNMENT_STYLES if NTK + form in run.scalars]
        if logged:
            shown.append(run)
        for form in logged:
            plot_series(ax, run.scalars[NTK + form], colors[run.name], linestyle=ALIGNMENT_STYLES[form])
            if form not in forms:
                forms.append(form)
    if not shown:
        return None
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    style_axes(ax, [], "NTK-label alignment")  # linear: the off-diagonal alignment can be negative
    run_legend(
        figure,
        shown,
        colors,
        style_entries([(f, ALIGNMENT_STYLES[f]) for f in ALIGNMENT_STYLES if f in forms]),
    )
    caption = (
        "alignment = ⟨Θ, yyᵀ⟩_F/(‖Θ‖_F‖yyᵀ‖_F) (Cristianini et al. 2002); alignment_centered: both kernels "
        "centered (Cortes et al. 2012); alignment_offdiagonal: the correlation, over pairs of distinct "
        "examples, of the output-traced kernel Σ_k Θ_(i,k),(j,k) with ⟨y_i, y_j⟩ (same label or not). A rise "
        "means the kernel adapts to the labels: the lazy → rich transition (Kumar et al. 2024)."
    )
    return titled(figure, "ntk_alignment", "Kernel", "NTK alignment with the labels", caption)


def sgd_stability(runs: Sequence[RunData], colors: dict[str, str]) -> ReportFigure | None:
    """The noise-kernel norm ``𝒦`` (its bounds where logged) against step, with the edge ``𝒦 = 1``."""
    figure, ax = single_axes()
    values, any_upper, any_exact, shown = [np.array([1.0])], False, False, []
    for run in runs:
        lower = run.scalars.get(NTK + "sgd_stability")
        if lower is None:
            continue
        shown.append(run)
        color = colors[run.name]
        plot_series(ax, lower, color)
        values.append(lower.values)
        upper = run.scalars.get(NTK + "sgd_stability_upper")
        if upper is not None:  # on the steps of the lower bound, NaN (a gap) where it was not logged
            aligned = np.full(len(lower.steps), np.nan)
            _, i, j = np.intersect1d(lower.steps, upper.steps, return_indices=True)
            aligned[i] = upper.values[j]
            plot_series(ax, Series(lower.steps, aligned), color, linestyle="--", marker=None)
            ax.fill_between(lower.steps, lower.values, aligned, color=color, alpha=0.12, linewidth=0)
            values.append(aligned)
            any_upper = True
        exact = run.scalars.get(NTK + "sgd_stability_exact")
        if exact is not None:  # compute_spectrum=True: 𝒦 from the whole kernel spectrum, inside the band
            plot_series(ax, exact, color, linestyle=":", marker=None)
            values.append(exact.values)
            any_exact = True
    if len(values) == 1:
        return None
    extra = [edge_line(ax, r"S-EOS edge $\mathcal{K} = 1$")]
    if any_exact:
        extra.insert(0, Line2D([], [], color="0.3", linestyle=":", label="exact (spectrum)"))
    if any_upper:
        extra.insert(0, Line2D([], [], color="0.3", linestyle="--", label="upper bound"))
    style_axes(ax, values, r"noise-kernel norm $\mathcal{K}$")
    run_legend(figure, shown, colors, extra)
    caption = (
        "The noise-kernel norm 𝒦 ≈ (1 − B/D)·η·tr(Θ̂)/(2BK) of SGD with step η and batch size B (η/(1 − μ) "
        "with momentum μ; solid: the "
        "trace-based value, a lower bound; dashed with a shaded band: the upper bound, where logged; dotted: "
        "the exact 𝒦 from the kernel's spectrum, with compute_spectrum=True). The "
        "second moment of SGD's residual grows without bound once 𝒦 > 1, so 𝒦 = 1 (black dashes) is the "
        "stochastic edge of stability (Agarwala & Pennington 2024). Logged for torch.optim.SGD only; the upper "
        "bound is undefined (a gap) where λ_max of the kernel per example reaches the optimizer's limit (2/η "
        "without momentum)."
    )
    return titled(figure, "sgd_stability", "Kernel", "Stochastic edge of stability (sgd_stability)", caption)
