"""The public packages of ``lightning_spectral``: those whose ``__all__`` the API reference documents.

One list for the docs site (``docs/conf.py``) and the tests that check every public name has its page and its
docstring sections; the ``_internal`` packages are not public.
"""

PUBLIC_PACKAGES: tuple[str, ...] = (
    "lightning_spectral",
    "lightning_spectral.callbacks",
    "lightning_spectral.functional",
    "lightning_spectral.functional.hessian",
    "lightning_spectral.functional.ntk",
    "lightning_spectral.functional.weights",
    "lightning_spectral.linalg",
    "lightning_spectral.report",
)
