"""Spectral estimators on a model, usable without Lightning (the numerics behind the callbacks)."""

from lightning_spectral.functional.adaptive_preconditioners import (
    PreconditionedStep,
    adam_preconditioner,
    adam_stability_limit,
    adaptive_preconditioning,
    nadam_stability_limit,
    rmsprop_preconditioner,
)
from lightning_spectral.functional.batch_sharpness import BatchSharpness, batch_sharpness
from lightning_spectral.functional.edge_of_stability import edge_of_stability_ratio, stability_limit
from lightning_spectral.functional.farms import FarmsFit, farms_alpha
from lightning_spectral.functional.hessian_operator import HessianOperator
from lightning_spectral.functional.hessian_spectrum import (
    HessianEigenResult,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
)
from lightning_spectral.functional.hvp_graph import HVPGraph
from lightning_spectral.functional.ntk_alignment import (
    kernel_alignments,
    kernel_target_alignment,
    ntk_alignment,
    offdiagonal_alignment,
)
from lightning_spectral.functional.ntk_eigenvalues import ntk_lambda_max, ntk_operator
from lightning_spectral.functional.ntk_matrix import ntk_matrix
from lightning_spectral.functional.ntk_trace import NTKTrace, ntk_trace
from lightning_spectral.functional.per_example_gradient_norms import LayerwiseChecks
from lightning_spectral.functional.power_law import PowerLawFit, power_law_alpha
from lightning_spectral.functional.sgd_stability import SGDStability, sgd_stability
from lightning_spectral.functional.singular_dynamics import agreement_score, singular_vector_agreement
from lightning_spectral.functional.weight_matrices import WeightMatrix, weight_matrices
from lightning_spectral.functional.weight_spectrum import WeightSpectrum, weight_spectra, weight_spectrum

__all__ = [
    "BatchSharpness",
    "FarmsFit",
    "HessianEigenResult",
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
