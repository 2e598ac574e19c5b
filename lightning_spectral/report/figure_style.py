"""Drawing pieces shared by the report's figures: the figure record, run colors, axes and legends."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.typing import LineStyleType
    from numpy.typing import ArrayLike

from lightning_spectral.report.reader import RunData, Series, _Stepped, nearest

STEP_LABEL = "optimizer step"
WIDTH_IN = 10.0
DPI = 100
EIGEN_STYLES: tuple[LineStyleType, ...] = ("-", "--", ":", (0, (5, 1, 1, 1)), (0, (1, 3)))
HESSIAN = "spectral/hessian/"
NTK = "spectral/ntk/"
WEIGHTS = "spectral/weights/"


@dataclass
class ReportFigure:
    """A figure of the report: ``name`` is its file stem, ``section`` the page section it belongs to."""

    name: str
    section: str
    title: str
    caption: str
    figure: Figure


def titled(figure: Figure, name: str, section: str, title: str, caption: str) -> ReportFigure:
    """``figure`` with ``title`` as its heading, as the report's figure ``name`` in ``section``."""
    figure.suptitle(title)
    return ReportFigure(name, section, title, caption, figure)


def run_colors(runs: Sequence[RunData]) -> dict[str, str]:
    """A distinct color per run name (Tableau 10, then Tableau 20), the same in every figure.

    >>> from pathlib import Path
    >>> run_colors([RunData("a", Path("a"), []), RunData("b", Path("b"), [])])
    {'a': '#1f77b4', 'b': '#ff7f0e'}
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    # (matplotlib types the registry's entries as Colormap: tab10 and tab20 are ListedColormaps, with `colors`)
    palette = [to_hex(c) for c in colormaps["tab10"].colors + colormaps["tab20"].colors[1::2]]  # type: ignore[attr-defined]
    return {run.name: palette[i % len(palette)] for i, run in enumerate(runs)}


def wants_log(*arrays: ArrayLike, decades: float = 2.0) -> bool:
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
    legends = list(figure.legends) + [legend for ax in figure.axes if (legend := ax.get_legend()) is not None]
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    return [t.get_text() for legend in legends for t in legend.get_texts()] + titles


def eigen_tags(run: RunData, prefix: str) -> list[tuple[int, str]]:
    """``[(i, tag)]`` of the tags ``<prefix><i>`` of ``run`` (``lambda_1 .. lambda_k``, ``sigma_1 ..``)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    found = [(int(m.group(1)), tag) for tag in run.scalars if (m := pattern.match(tag))]
    return sorted(found)


def chosen_at_steps(items: Sequence[_Stepped], steps: Sequence[int] | None) -> list[_Stepped]:
    """The items nearest to ``steps`` (once each, by step), or the last one."""
    if not items:
        return []
    if not steps:
        return [items[-1]]
    return sorted(
        {id(item): item for item in (nearest(items, s) for s in steps)}.values(), key=lambda i: i.step
    )


def single_axes() -> tuple[Figure, Axes]:
    """A report-wide figure with one axes."""
    figure = Figure(figsize=(WIDTH_IN, 4.4), dpi=DPI, layout="constrained")
    return figure, figure.subplots()


def grid_axes(panels: int, panel_height: float = 2.6, sharex: bool = True) -> tuple[Figure, list[Axes]]:
    """A figure with ``panels`` axes in up to three columns (sharing the x axis); spare axes removed."""
    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(WIDTH_IN, 1.1 + panel_height * rows), dpi=DPI, layout="constrained")
    axes = list(np.ravel(figure.subplots(rows, columns, sharex=sharex, squeeze=False)))
    for spare in axes[panels:]:
        spare.remove()
    return figure, axes[:panels]


def plot_series(
    ax: Axes, series: Series, color: str, linestyle: LineStyleType = "-", marker: str | None = "auto"
) -> None:
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


def style_axes(
    ax: Axes, values: Sequence[ArrayLike], ylabel: str | None, xlabel: str | None = STEP_LABEL
) -> None:
    """Log y where the values span two decades; grid; labels."""
    if wants_log(*values):
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both" if ax.get_yscale() == "log" else "major")
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)


def run_legend(
    figure: Figure, runs: Sequence[RunData], colors: dict[str, str], extra: Sequence[Line2D] = ()
) -> None:
    """A legend right of the axes: one entry per run (its color), then ``extra`` entries."""
    handles = [Line2D([], [], color=colors[run.name], linewidth=2, label=run.name) for run in runs] + list(
        extra
    )
    figure.legend(handles=handles, loc="outside right upper", frameon=False)


def style_entries(styles: Sequence[tuple[str, LineStyleType]]) -> list[Line2D]:
    """Legend entries ``(label, line style)`` in gray: the style stands for a quantity, the color for a run."""
    return [Line2D([], [], color="0.2", linestyle=style, label=label) for label, style in styles]


def edge_line(ax: Axes, label: str) -> Line2D:
    """A black dashed line at 1 on ``ax``; its legend entry."""
    style: dict[str, Any] = dict(color="black", linestyle="--", linewidth=1.2)
    ax.axhline(1.0, **style)
    return Line2D([], [], label=label, **style)


def cell_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around measurement steps (midpoints; half a gap beyond the ends)."""
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    middle = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - middle[0]], middle, [2 * steps[-1] - middle[-1]]])


def slug(name: str) -> str:
    """A file-name-safe form of a parameter name.

    >>> slug("conv.weight[0,1]")
    'conv.weight_0_1_'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
