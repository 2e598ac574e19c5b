"""Figures: the Hessian eigenvalue density for the loggers, and saving a figure to a PNG file (matplotlib,
headless backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_spectral.linalg import SpectralDensity


def density_figure(density: SpectralDensity, *, step: int, num_points: int = 400) -> Any:
    """The Gaussian-smoothed eigenvalue density of ``density`` on a log scale, with the quadrature nodes.

    The smoothing width is 1% of the node range (at least a tiny absolute width), the usual choice for
    stochastic-Lanczos-quadrature plots of Hessian spectra (Ghorbani, Krishnan & Xiao 2019).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    nodes = density.nodes.detach().double().cpu()
    low, high = float(nodes.min()), float(nodes.max())
    span = max(high - low, 1e-12)
    sigma = max(0.01 * span, 1e-12)
    grid = torch.linspace(low - 0.05 * span, high + 0.05 * span, num_points, dtype=torch.float64)
    values = density.smoothed(grid, sigma).double().cpu()
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.semilogy(grid.numpy(), values.clamp_min(1e-12).numpy(), color="tab:blue")
    axes.plot(nodes.flatten().numpy(), [1e-12] * nodes.numel(), "|", color="tab:red", markersize=8)
    axes.set_xlabel("eigenvalue")
    axes.set_ylabel("density")
    axes.set_title(f"Hessian eigenvalue density (SLQ), step {step}")
    figure.tight_layout()
    return figure


def save_figure(figure: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """Lay ``figure`` out tightly, write it to ``path`` (parent folders created), close it; returns the path."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
