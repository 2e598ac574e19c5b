"""The callbacks' internals: schedule decisions, the measurement batch, logging, collectives, training-state
guards. Not public API: names here may change without notice; the callbacks are in
:mod:`lightning_spectral.callbacks`.
"""
