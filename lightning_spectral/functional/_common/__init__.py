"""What the functional domains share: which parameters a measurement covers and how a model's inputs and
outputs are found. Not public API; the estimators are in :mod:`lightning_spectral.functional`.
"""
