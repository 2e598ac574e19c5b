"""The report's checkpoint figures (:mod:`~lightning_spectral.report.checkpoints`): per run, the agreement of
every weight matrix with the final checkpoint as an index × step heatmap, and the layer × step map of the
agreement score (Yunis et al. 2024).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Normalize

from lightning_spectral.report.checkpoints import CheckpointDynamics
from lightning_spectral.report.figure_style import STEP_LABEL, ReportFigure, cell_edges, grid_axes, titled

SECTION = "Checkpoints"
#: Indices shown in the heatmaps (the agreement of the tail is noise about ``1/√d``).
SHOWN_INDICES = 50


def agreement_heatmaps(run_name: str, number: int, dynamics: CheckpointDynamics) -> ReportFigure:
    """One panel per weight matrix: agreement with the final checkpoint, index (rows) × saved step."""
    layers = list(dynamics.agreement)
    rows = min(SHOWN_INDICES, max(t.shape[1] for t in dynamics.agreement.values()))
    figure, axes = grid_axes(len(layers), panel_height=2.2 + 0.03 * rows)
    norm = Normalize(0.0, 1.0)
    mesh = None
    edges = cell_edges(dynamics.steps)
    for ax, layer in zip(axes, layers):
        table = dynamics.agreement[layer][:, :SHOWN_INDICES].T  # (index, step)
        mesh = ax.pcolormesh(edges, np.arange(table.shape[0] + 1) + 0.5, table, norm=norm, cmap="magma")
        ax.set_ylim(table.shape[0] + 0.5, 0.5)
        ax.set_title(layer, fontsize=10)
    assert mesh is not None  # a panel per layer, and there is one at least
    figure.colorbar(
        mesh, ax=axes, label=r"$|\langle u_i, u_i^{final}\rangle\langle v_i, v_i^{final}\rangle|$", shrink=0.9
    )
    figure.supxlabel(STEP_LABEL)
    figure.supylabel("singular-vector index $i$ (largest on top)")
    caption = (
        f"Run {run_name}: for each weight matrix (panels) and saved checkpoint (columns), the agreement of its "
        "i-th singular pair with the final checkpoint's, |⟨u_i, u_i^final⟩ · ⟨v_i, v_i^final⟩| (left and right "
        f"vectors, index by index; rows: the first {SHOWN_INDICES} indices at most). Top singular vectors that "
        "settle early show as a bright band at the top that reaches far to the left (Yunis et al. 2024)."
    )
    return titled(
        figure,
        f"checkpoint_agreement_run{number}",
        SECTION,
        f"Agreement with the final checkpoint by index: {run_name}",
        caption,
    )


def agreement_map(named: Sequence[tuple[str, CheckpointDynamics]]) -> ReportFigure:
    """One panel per run: the agreement score (mean of the first 10 indices) per layer (rows) × saved step."""
    figure, axes = grid_axes(
        len(named), panel_height=1.4 + 0.28 * max(len(d.score) for _, d in named), sharex=False
    )
    norm = Normalize(0.0, 1.0)
    mesh = None
    for ax, (run_name, dynamics) in zip(axes, named):
        layers = list(dynamics.score)
        table = np.stack([dynamics.score[layer] for layer in layers])
        mesh = ax.pcolormesh(
            cell_edges(dynamics.steps), np.arange(len(layers) + 1) - 0.5, table, norm=norm, cmap="magma"
        )
        ax.set_yticks(range(len(layers)), layers, fontsize=8)
        ax.set_ylim(len(layers) - 0.5, -0.5)
        ax.set_title(run_name, fontsize=10)
    assert mesh is not None  # a panel per run, and there is one at least
    figure.colorbar(mesh, ax=axes, label="agreement score (first 10)", shrink=0.9)
    figure.supxlabel(STEP_LABEL)
    caption = (
        "For each run (panels), layer (rows) and saved checkpoint (columns): the mean agreement of the first 10 "
        "singular pairs with the final checkpoint's, Yunis et al.'s layer score. 1 at the last step by definition."
    )
    return titled(
        figure, "checkpoint_agreement_map", SECTION, "Agreement with the final checkpoint per layer", caption
    )
