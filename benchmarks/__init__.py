"""Benchmarks of lightning_spectral against exact references and the reference tools (not shipped)."""
