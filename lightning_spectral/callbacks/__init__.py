"""Lightning callbacks: the spectral monitors and their shared base class."""

from lightning_spectral.callbacks._internal.collectives import MeasurementCollectives, PeerMeasurementFailed
from lightning_spectral.callbacks.base import SpectralMonitor
from lightning_spectral.callbacks.hessian_eigen_monitor import HessianEigenMonitor
from lightning_spectral.callbacks.ntk_trace_monitor import NTKTraceMonitor
from lightning_spectral.callbacks.schedule import Schedule
from lightning_spectral.callbacks.spectral_early_stopping import SpectralEarlyStopping
from lightning_spectral.callbacks.weight_spectrum_monitor import WeightSpectrumMonitor

__all__ = [
    "HessianEigenMonitor",
    "MeasurementCollectives",
    "NTKTraceMonitor",
    "PeerMeasurementFailed",
    "Schedule",
    "SpectralEarlyStopping",
    "SpectralMonitor",
    "WeightSpectrumMonitor",
]
