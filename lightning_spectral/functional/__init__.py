"""Spectral estimators on a model, usable without Lightning (the numerics behind the callbacks), by domain:
:mod:`~lightning_spectral.functional.hessian` (curvature), :mod:`~lightning_spectral.functional.ntk`
(the neural tangent kernel) and :mod:`~lightning_spectral.functional.weights` (weight matrices). Every name
is importable from here and from its domain.
"""

from typing import Any

from lightning_spectral._internal.deprecation import renamed_attribute
from lightning_spectral.functional.hessian import (
    BatchSharpness,
    HessianEigenpairs,
    HessianOperator,
    HVPGraph,
    PreconditionedStep,
    adam_preconditioner,
    adam_stability_limit,
    adaptive_preconditioning,
    batch_sharpness,
    edge_of_stability_ratio,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
    nadam_stability_limit,
    rmsprop_preconditioner,
    stability_limit,
)
from lightning_spectral.functional.ntk import (
    LayerwiseChecks,
    NTKTrace,
    SGDStability,
    kernel_alignments,
    kernel_target_alignment,
    ntk_alignment,
    ntk_lambda_max,
    ntk_matrix,
    ntk_operator,
    ntk_trace,
    offdiagonal_alignment,
    sgd_stability,
)
from lightning_spectral.functional.weights import (
    FarmsFit,
    PowerLawFit,
    WeightMatrix,
    WeightSpectrum,
    agreement_score,
    farms_alpha,
    power_law_alpha,
    singular_vector_agreement,
    weight_matrices,
    weight_spectra,
    weight_spectrum,
)

__all__ = [
    "BatchSharpness",
    "FarmsFit",
    "HessianEigenpairs",
    "HessianOperator",
    "HVPGraph",
    "LayerwiseChecks",
    "NTKTrace",
    "PreconditionedStep",
    "PowerLawFit",
    "SGDStability",
    "WeightMatrix",
    "WeightSpectrum",
    "adam_preconditioner",
    "adam_stability_limit",
    "adaptive_preconditioning",
    "agreement_score",
    "batch_sharpness",
    "edge_of_stability_ratio",
    "farms_alpha",
    "nadam_stability_limit",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_trace",
    "kernel_alignments",
    "kernel_target_alignment",
    "ntk_alignment",
    "ntk_lambda_max",
    "ntk_matrix",
    "ntk_operator",
    "ntk_trace",
    "offdiagonal_alignment",
    "power_law_alpha",
    "rmsprop_preconditioner",
    "sgd_stability",
    "singular_vector_agreement",
    "stability_limit",
    "weight_matrices",
    "weight_spectra",
    "weight_spectrum",
]


# renamed classes: the old name still imports, with a DeprecationWarning
_RENAMED = {"HessianEigenResult": "HessianEigenpairs"}


def __getattr__(name: str) -> Any:
    return renamed_attribute(__name__, name, _RENAMED)
