"""lightning_spectral: spectral monitors for PyTorch Lightning."""

__version__ = "0.1.0"
