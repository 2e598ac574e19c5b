"""The callbacks for the unified ``lightning`` package (``import lightning.pytorch as L``).

Lightning ships under two names: ``pytorch_lightning`` (this package's dependency, used by
:mod:`lightning_spectral.callbacks`) and ``lightning.pytorch`` (inside the unified ``lightning`` package).
A callback is meant to derive from the ``Callback`` class of the distribution whose ``Trainer`` runs it:
``LightningCLI`` (jsonargparse) rejects a ``trainer.callbacks`` entry of the other distribution, and so do
``isinstance`` checks in user and library code and static type checkers. The classes here are the same
monitors, derived from both bases, so they are genuine ``lightning.pytorch`` callbacks; all logic stays in
:mod:`lightning_spectral.callbacks` (nothing is duplicated: each class here only adds the second base).

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
    """``cls`` with ``lightning.pytorch.Callback`` as a second base (same name, docs and behaviour)."""
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
