"""Pure-torch numerical core of ``lightning_spectral`` (no Lightning import).

* :func:`randomized_svd` -- truncated SVD of (batches of) matrices by randomized range finding.
* :func:`lanczos` -- extreme eigenpairs of a symmetric operator given only ``v ↦ A v``.
* :func:`hutchinson_trace`, :func:`hutchpp_trace` -- stochastic trace estimators.
* :func:`slq_density` -- spectral density by stochastic Lanczos quadrature.

Each takes a :class:`LinearOperator` (anything with ``matvec``, ``dim``, ``dtype``, ``device``, such as
``HessianOperator``), a dense square matrix, or a ``matvec`` function with its ``dim``.

Randomness comes only from an optional ``generator: torch.Generator``; ``None`` means the global torch RNG.
"""

from lightning_spectral._internal.validation import NonFiniteError

from .lanczos import WHICH, Which, lanczos
from .operator import LinearOperator
from .orthonormalize import orthonormalize, project_out
from .probes import rademacher
from .randomized_svd import randomized_svd
from .results import LanczosResult, SpectralDensity, SVDResult, TraceEstimate
from .slq import gaussian_smoothed_density, slq_density
from .trace_estimators import hutchinson_trace, hutchpp_trace, mean_and_std_error
from .warm_start import guarded_start

__all__ = [
    "WHICH",
    "Which",
    "LanczosResult",
    "LinearOperator",
    "NonFiniteError",
    "SVDResult",
    "SpectralDensity",
    "TraceEstimate",
    "gaussian_smoothed_density",
    "guarded_start",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos",
    "mean_and_std_error",
    "orthonormalize",
    "project_out",
    "rademacher",
    "randomized_svd",
    "slq_density",
]
