"""Result types returned by the numerical routines of :mod:`lightning_spectral.linalg`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_spectral._internal.deprecation import renamed_attribute
from lightning_spectral._internal.validation import check_positive_finite

__all__ = ["Eigenpairs", "SVDFactors", "SpectralDensity", "TraceEstimate"]


class SVDFactors(NamedTuple):
    """A (truncated) singular value decomposition ``A ≈ U diag(S) Vh``.

    Attributes:
        U: ``(..., m, k)`` left singular vectors, orthonormal columns.
        S: ``(..., k)`` singular values, descending.
        Vh: ``(..., k, n)`` right singular vectors (transposed), orthonormal rows.

    Example:
        >>> import torch
        >>> from lightning_spectral.linalg import randomized_svd
        >>> U, S, Vh = randomized_svd(torch.eye(4, dtype=torch.float64), k=2)
        >>> S.tolist()
        [1.0, 1.0]
    """

    U: Tensor
    S: Tensor
    Vh: Tensor


class Eigenpairs(NamedTuple):
    """Ritz pairs returned by :func:`~lightning_spectral.linalg.lanczos`.

    Attributes:
        eigenvalues: ``(k,)`` Ritz values, ordered as requested by ``which``.
        eigenvectors: ``(dim, k)`` orthonormal Ritz vectors, column ``i`` belongs to ``eigenvalues[i]``.
        residuals: ``(k,)`` residual-norm estimates ``‖A v_i − θ_i v_i‖`` (see ``lanczos``).
        num_matvecs: number of calls to ``matvec``.
        converged: whether all ``k`` residuals met the tolerance.

    Example:
        >>> import torch
        >>> from lightning_spectral.linalg import lanczos
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> pairs = lanczos(lambda v: A @ v, dim=3, k=1, dtype=torch.float64)
        >>> round(pairs.eigenvalues.item(), 9), pairs.converged
        (3.0, True)
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    num_matvecs: int
    converged: bool


class TraceEstimate(NamedTuple):
    """A stochastic trace estimate.

    Attributes:
        estimate: the estimate of ``tr(A)``.
        std_error: its standard error (``0.0`` when the estimate is exact, ``nan`` when it cannot be
            estimated from a single sample).
        num_matvecs: number of calls to ``matvec`` actually made.

    Example:
        >>> import torch
        >>> from lightning_spectral.linalg import hutchpp_trace
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> estimate, std_error, num_matvecs = hutchpp_trace(lambda v: A @ v, dim=3, num_matvecs=3, dtype=torch.float64)
        >>> round(estimate, 9), std_error, num_matvecs
        (6.0, 0.0, 3)
    """

    estimate: float
    std_error: float
    num_matvecs: int


@dataclass(frozen=True)
class SpectralDensity:
    """A spectral density as a sum of weighted point masses (the output of stochastic Lanczos quadrature).

    The density is ``φ(t) = Σ_{p,i} weights[p, i] · δ(t − nodes[p, i])``; row ``p`` holds the Gauss
    quadrature rule of probe ``p``. In the output of ``slq_density`` all weights are non-negative and sum to
    one over both axes (each probe's row sums to ``1/num_probes``).

    Attributes:
        nodes: ``(num_probes, m)`` quadrature nodes (Ritz values).
        weights: ``(num_probes, m)`` quadrature weights.

    Example:
        >>> import torch
        >>> density = SpectralDensity(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.5]]))
        >>> density.smoothed(torch.tensor([1.0, 2.0]), sigma=0.1).shape
        torch.Size([2])
    """

    nodes: Tensor
    weights: Tensor

    def __post_init__(self) -> None:
        if self.nodes.shape != self.weights.shape or self.nodes.ndim != 2:
            raise ValueError(
                "`nodes` and `weights` must both have shape (num_probes, m), got "
                f"{tuple(self.nodes.shape)} and {tuple(self.weights.shape)}."
            )

    def smoothed(self, grid: Tensor, sigma: float) -> Tensor:
        """The density convolved with a Gaussian of standard deviation ``sigma``, evaluated on ``grid``.

        ``φ_σ(t) = Σ_{p,i} w_{p,i} · exp(−(t − θ_{p,i})² / (2σ²)) / (σ √(2π))``. It integrates to one
        over the real line (approximately so over a grid that extends a few ``sigma`` past the nodes).

        Args:
            grid: 1-D tensor of evaluation points.
            sigma: positive kernel width.

        Returns:
            1-D tensor of the same length (and dtype/device) as ``grid``.
        """
        if not isinstance(grid, Tensor) or grid.ndim != 1 or not grid.is_floating_point():
            raise ValueError("`grid` must be a 1-D floating-point tensor.")
        check_positive_finite("sigma", sigma)
        nodes = self.nodes.reshape(-1).to(dtype=grid.dtype, device=grid.device)
        weights = self.weights.reshape(-1).to(dtype=grid.dtype, device=grid.device)
        z = (grid[:, None] - nodes[None, :]) / sigma
        kernel = torch.exp(-0.5 * z**2) / (sigma * math.sqrt(2.0 * math.pi))
        return kernel @ weights


# renamed classes: the old name still imports, with a DeprecationWarning
_RENAMED = {"LanczosResult": "Eigenpairs", "SVDResult": "SVDFactors"}


def __getattr__(name: str) -> Any:
    return renamed_attribute(__name__, name, _RENAMED)
