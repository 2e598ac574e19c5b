"""Pure-torch numerical core of ``lightning_spectral`` (no Lightning import).

Each routine takes a :class:`LinearOperator` (anything with ``matvec``, ``dim``, ``dtype`` and ``device``, such
as ``HessianOperator``), a dense square matrix, or a ``matvec`` function with its ``dim``.
"""

from typing import Any

from lightning_spectral._internal.deprecation import renamed_attribute
from lightning_spectral._internal.validation import NonFiniteError

from .lanczos import WHICH, Which, lanczos
from .operator import LinearOperator
from .orthonormalize import orthonormalize, project_out
from .probes import rademacher
from .randomized_svd import randomized_svd
from .results import Eigenpairs, SpectralDensity, SVDFactors, TraceEstimate
from .slq import gaussian_smoothed_density, slq_density
from .trace_estimators import hutchinson_trace, hutchpp_trace, mean_and_std_error
from .warm_start import guarded_start

__all__ = [
    "WHICH",
    "Which",
    "Eigenpairs",
    "LinearOperator",
    "NonFiniteError",
    "SVDFactors",
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


# renamed classes: the old name still imports, with a DeprecationWarning
_RENAMED = {"LanczosResult": "Eigenpairs", "SVDResult": "SVDFactors"}


def __getattr__(name: str) -> Any:
    return renamed_attribute(__name__, name, _RENAMED)
