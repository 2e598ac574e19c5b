"""The callbacks for the unified ``lightning`` package (``import lightning.pytorch as L``).

Example::

    import lightning.pytorch as L
    from lightning_spectral.lightning import HessianEigenMonitor

    L.Trainer(callbacks=[HessianEigenMonitor(every_n_steps=100)]).fit(model)
"""

from __future__ import annotations

from typing import TypeVar

try:
    import lightning.pytorch as _lightning_pytorch
except ImportError as error:  # pragma: no cover - exercised only without the `lightning` package
    raise ImportError(
        "lightning_spectral.lightning needs the unified `lightning` package (`pip install lightning`); with "
        "`pytorch_lightning` use lightning_spectral.callbacks instead."
    ) from error

from lightning_spectral import callbacks as _callbacks

_C = TypeVar("_C")


def _for_unified_lightning(cls: type[_C]) -> type[_C]:
    """``cls`` with ``lightning.pytorch.Callback`` as a second base (same name, docs and behavior)."""
    return type(
        cls.__name__, (cls, _lightning_pytorch.Callback), {"__module__": __name__, "__doc__": cls.__doc__}
    )


SpectralMonitor = _for_unified_lightning(_callbacks.SpectralMonitor)
WeightSpectrumMonitor = _for_unified_lightning(_callbacks.WeightSpectrumMonitor)
HessianEigenMonitor = _for_unified_lightning(_callbacks.HessianEigenMonitor)
NTKTraceMonitor = _for_unified_lightning(_callbacks.NTKTraceMonitor)
SpectralEarlyStopping = _for_unified_lightning(_callbacks.SpectralEarlyStopping)

__all__ = [
    "HessianEigenMonitor",
    "NTKTraceMonitor",
    "SpectralEarlyStopping",
    "SpectralMonitor",
    "WeightSpectrumMonitor",
]
