"""lightning_spectral: spectral monitors for PyTorch Lightning."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_spectral._internal import moved_modules as _moved_modules
from lightning_spectral._internal.deprecation import renamed_attribute

__version__ = "0.1.0"

_moved_modules.install()  # old module paths (before the domain folders) stay importable

# name -> the subpackage it is imported from on first access
_EXPORTS: dict[str, str] = {
    # Monitors: Lightning callbacks that log spectra during ``fit``
    "WeightSpectrumMonitor": "lightning_spectral.callbacks",
    "HessianEigenMonitor": "lightning_spectral.callbacks",
    "NTKTraceMonitor": "lightning_spectral.callbacks",
    "SpectralMonitor": "lightning_spectral.callbacks",
    "Schedule": "lightning_spectral.callbacks",
    # Early stopping on logged spectra
    "SpectralEarlyStopping": "lightning_spectral.callbacks",
    # Weight spectra of a model's matrices
    "weight_spectra": "lightning_spectral.functional",
    "weight_spectrum": "lightning_spectral.functional",
    "weight_matrices": "lightning_spectral.functional",
    "power_law_alpha": "lightning_spectral.functional",
    "farms_alpha": "lightning_spectral.functional",
    "WeightSpectrum": "lightning_spectral.functional",
    "WeightMatrix": "lightning_spectral.functional",
    "PowerLawFit": "lightning_spectral.functional",
    "FarmsFit": "lightning_spectral.functional",
    # Curvature: the loss Hessian and the stability of training on it
    "hessian_eigenvalues": "lightning_spectral.functional",
    "hessian_trace": "lightning_spectral.functional",
    "hessian_density": "lightning_spectral.functional",
    "batch_sharpness": "lightning_spectral.functional",
    "stability_limit": "lightning_spectral.functional",
    "edge_of_stability_ratio": "lightning_spectral.functional",
    "sgd_stability": "lightning_spectral.functional",
    "HessianOperator": "lightning_spectral.functional",
    "HessianEigenpairs": "lightning_spectral.functional",
    "BatchSharpness": "lightning_spectral.functional",
    "SGDStability": "lightning_spectral.functional",
    # Kernel: the empirical neural tangent kernel
    "ntk_trace": "lightning_spectral.functional",
    "ntk_lambda_max": "lightning_spectral.functional",
    "ntk_matrix": "lightning_spectral.functional",
    "ntk_alignment": "lightning_spectral.functional",
    "kernel_target_alignment": "lightning_spectral.functional",
    "NTKTrace": "lightning_spectral.functional",
}

__all__ = list(_EXPORTS)

# renamed classes: the old name still imports, with a DeprecationWarning
_RENAMED = {"HessianEigenResult": "HessianEigenpairs"}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first access
    from lightning_spectral.callbacks import (
        HessianEigenMonitor,
        NTKTraceMonitor,
        Schedule,
        SpectralEarlyStopping,
        SpectralMonitor,
        WeightSpectrumMonitor,
    )
    from lightning_spectral.functional import (
        BatchSharpness,
        FarmsFit,
        HessianEigenpairs,
        HessianOperator,
        NTKTrace,
        PowerLawFit,
        SGDStability,
        WeightMatrix,
        WeightSpectrum,
        batch_sharpness,
        edge_of_stability_ratio,
        farms_alpha,
        hessian_density,
        hessian_eigenvalues,
        hessian_trace,
        kernel_target_alignment,
        ntk_alignment,
        ntk_lambda_max,
        ntk_matrix,
        ntk_trace,
        power_law_alpha,
        sgd_stability,
        stability_limit,
        weight_matrices,
        weight_spectra,
        weight_spectrum,
    )


def __getattr__(name: str) -> Any:
    """Import an exported name from its subpackage on first access (PEP 562)."""
    if name in _RENAMED:
        return renamed_attribute(__name__, name, _RENAMED)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
