"""Kernel: the empirical neural tangent kernel (trace, top eigenvalue, the matrix, alignments) and the
stochastic edge-of-stability indicator built from it.
"""

from lightning_spectral.functional.ntk.alignment import (
    kernel_alignments,
    kernel_target_alignment,
    ntk_alignment,
    offdiagonal_alignment,
)
from lightning_spectral.functional.ntk.eigenvalues import ntk_lambda_max, ntk_operator
from lightning_spectral.functional.ntk.kernel_matrix import ntk_matrix
from lightning_spectral.functional.ntk.output_probes import output_probe_trace
from lightning_spectral.functional.ntk.per_example_gradient_norms import LayerwiseChecks
from lightning_spectral.functional.ntk.sgd_stability import SGDStability, sgd_stability
from lightning_spectral.functional.ntk.trace import NTKTrace, ntk_trace

__all__ = [
    "LayerwiseChecks",
    "NTKTrace",
    "SGDStability",
    "kernel_alignments",
    "kernel_target_alignment",
    "ntk_alignment",
    "ntk_lambda_max",
    "ntk_matrix",
    "ntk_operator",
    "ntk_trace",
    "offdiagonal_alignment",
    "output_probe_trace",
    "sgd_stability",
]
