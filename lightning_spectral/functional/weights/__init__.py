"""Weights: the singular-value spectra of a model's weight matrices, their heavy-tail exponents, and how the
singular vectors move during training.
"""

from lightning_spectral.functional.weights.farms import FarmsFit, farms_alpha
from lightning_spectral.functional.weights.matrices import WeightMatrix, weight_matrices
from lightning_spectral.functional.weights.power_law import PowerLawFit, power_law_alpha
from lightning_spectral.functional.weights.singular_dynamics import agreement_score, singular_vector_agreement
from lightning_spectral.functional.weights.spectrum import WeightSpectrum, weight_spectra, weight_spectrum

__all__ = [
    "FarmsFit",
    "PowerLawFit",
    "WeightMatrix",
    "WeightSpectrum",
    "agreement_score",
    "farms_alpha",
    "power_law_alpha",
    "singular_vector_agreement",
    "weight_matrices",
    "weight_spectra",
    "weight_spectrum",
]
