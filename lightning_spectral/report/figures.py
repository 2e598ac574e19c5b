r"""The report's matplotlib figures, in page order: one per metric, every run overlaid in its own color.

Example::

    colors = run_colors(runs)
    figures, notes = make_figures(runs, colors, steps=[0, 300])
    figures[0].figure.savefig(f"{figures[0].name}.png")
    legend_labels(figures[0].figure)     # ['lr0.05', 'lr0.2', '$\lambda_1$', ..., 'stability limit $2/\eta$']
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from lightning_spectral.report.curvature_figures import (
    batch_sharpness,
    density_images,
    hessian_eigenvalues,
    stability_limit,
)
from lightning_spectral.report.figure_style import DPI, ReportFigure, legend_labels, run_colors, wants_log
from lightning_spectral.report.kernel_figures import ntk_alignment, ntk_trace, sgd_stability
from lightning_spectral.report.reader import RunData
from lightning_spectral.report.weight_figures import (
    LAYER_METRICS,
    SINGULAR_VALUE_LAYERS,
    extreme_layers,
    layer_metric,
    layer_names,
    singular_value_heatmap,
    singular_value_histograms,
)

__all__ = [
    "DPI",
    "ReportFigure",
    "density_images",
    "legend_labels",
    "make_figures",
    "run_colors",
    "stability_limit",
    "wants_log",
]


def make_figures(
    runs: Sequence[RunData], colors: dict[str, str], steps: Sequence[int] | None = None
) -> tuple[list[ReportFigure], list[str]]:
    """Every figure the runs have data for, in page order, and a note for each metric no run logged."""
    wanted: list[tuple[str, Callable[[], ReportFigure | None]]] = [
        ("Hessian λ_1..λ_k (HessianEigenMonitor)", lambda: hessian_eigenvalues(runs, colors)),
        (
            "batch sharpness (HessianEigenMonitor, compute_batch_sharpness=True)",
            lambda: batch_sharpness(runs, colors),
        ),
        ("NTK trace (NTKTraceMonitor)", lambda: ntk_trace(runs, colors)),
        ("NTK alignment (NTKTraceMonitor, compute_alignment=True)", lambda: ntk_alignment(runs, colors)),
        (
            "sgd_stability (NTKTraceMonitor, torch.optim.SGD only)",
            lambda: sgd_stability(runs, colors),
        ),
    ]
    wanted += [
        (f"per-layer {m} (WeightSpectrumMonitor)", functools.partial(layer_metric, runs, colors, m))
        for m in LAYER_METRICS
    ]
    wanted.append(
        (
            "singular-value histograms (WeightSpectrumMonitor, histogram_every_n > 0)",
            lambda: singular_value_histograms(runs, colors, steps),
        )
    )
    wanted += [
        (f"singular values of {layer}", functools.partial(singular_value_heatmap, runs, layer))
        for layer in extreme_layers(runs, layer_names(runs, "sigma_1"), "sigma_max", SINGULAR_VALUE_LAYERS)
    ]
    figures, notes = [], []
    for what, build in wanted:
        figure = build()
        if figure is None:
            notes.append(f"No figure for {what}: no run logged it.")
        else:
            figures.append(figure)
    return figures, notes
