"""Curvature: the loss Hessian's spectrum, its trace and density, batch sharpness, and the edge-of-stability
limits of plain and adaptive optimizers.
"""

from typing import Any

from lightning_spectral._internal.deprecation import renamed_attribute
from lightning_spectral.functional.hessian.adaptive_preconditioners import (
    PreconditionedStep,
    adam_preconditioner,
    adam_stability_limit,
    adaptive_preconditioning,
    nadam_stability_limit,
    rmsprop_preconditioner,
)
from lightning_spectral.functional.hessian.batch_sharpness import BatchSharpness, batch_sharpness
from lightning_spectral.functional.hessian.edge_of_stability import edge_of_stability_ratio, stability_limit
from lightning_spectral.functional.hessian.finite_difference import FiniteDifferenceHessian
from lightning_spectral.functional.hessian.hvp_graph import HVPGraph
from lightning_spectral.functional.hessian.operator import HessianOperator
from lightning_spectral.functional.hessian.spectrum import (
    HessianEigenpairs,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
)

__all__ = [
    "BatchSharpness",
    "FiniteDifferenceHessian",
    "HVPGraph",
    "HessianEigenpairs",
    "HessianOperator",
    "PreconditionedStep",
    "adam_preconditioner",
    "adam_stability_limit",
    "adaptive_preconditioning",
    "batch_sharpness",
    "edge_of_stability_ratio",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_trace",
    "nadam_stability_limit",
    "rmsprop_preconditioner",
    "stability_limit",
]


# renamed classes: the old name still imports, with a DeprecationWarning
_RENAMED = {"HessianEigenResult": "HessianEigenpairs"}


def __getattr__(name: str) -> Any:
    return renamed_attribute(__name__, name, _RENAMED)
