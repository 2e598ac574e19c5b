"""Spectral estimators on a model, usable without Lightning (the numerics behind the callbacks), by domain:
:mod:`~lightning_spectral.functional.hessian` (curvature), :mod:`~lightning_spectral.functional.ntk`
(the neural tangent kernel) and :mod:`~lightning_spectral.functional.weights` (weight matrices). Every name
is importable from here and from its domain.
"""

from typing import Any

from lightning_spectral._internal.deprecation import renamed_attribute
from lightning_spectral.functional import hessian, ntk, weights
from lightning_spectral.functional.hessian import *  # noqa: F403 - the domain's __all__ is the list
from lightning_spectral.functional.ntk import *  # noqa: F403
from lightning_spectral.functional.weights import *  # noqa: F403

__all__ = sorted([*hessian.__all__, *ntk.__all__, *weights.__all__])

# renamed classes: the old name still imports, with a DeprecationWarning
_RENAMED = {"HessianEigenResult": "HessianEigenpairs"}


def __getattr__(name: str) -> Any:
    return renamed_attribute(__name__, name, _RENAMED)
