"""The edge-of-stability ratio of (heavy-ball / Nesterov) gradient descent.

Gradient descent with step size η on a quadratic with curvature λ is stable iff ``η·λ < 2``: the iterate
along the top Hessian eigenvector is multiplied by ``1 − ηλ`` each step. Cohen et al. (2021, "Gradient
Descent on Neural Networks Typically Occurs at the Edge of Stability") observed that full-batch GD drives
the top eigenvalue λ_max up to this limit ``2/η`` and then hovers there. With momentum β the limits are
(Cohen et al., Appendix; the stability region of the heavy-ball / Nesterov recurrences):

- heavy ball:  ``λ_max < (2 + 2β) / η``
- Nesterov:    ``λ_max < (2 + 2β) / (η (1 + 2β))``

The ratio returned here is ``λ_max / limit``, so it equals ``η·λ_max/2`` for plain SGD and is ``≥ 1``
beyond the stability limit, for every one of these optimizers.

Example::

    >>> edge_of_stability_ratio(lambda_max=40.0, lr=0.05)
    1.0
    >>> round(edge_of_stability_ratio(lambda_max=40.0, lr=0.05, momentum=0.9), 6)  # limit (2+1.8)/0.05 = 76
    0.526316
"""

from __future__ import annotations

import math


def stability_limit(lr: float, momentum: float = 0.0, nesterov: bool = False) -> float:
    """The largest stable curvature ``λ`` for step size ``lr`` and momentum ``momentum`` (see module doc)."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a positive finite number, got {lr!r}.")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
        raise ValueError(f"`momentum` must be a number in [0, 1), got {momentum!r}.")
    limit = (2.0 + 2.0 * momentum) / lr
    return limit / (1.0 + 2.0 * momentum) if nesterov else limit


def edge_of_stability_ratio(
    lambda_max: float, lr: float, momentum: float = 0.0, nesterov: bool = False
) -> float:
    """``λ_max`` divided by the stability limit: ``lr·λ_max/2`` for plain SGD, ``≥ 1`` means unstable."""
    return float(lambda_max) / stability_limit(lr, momentum, nesterov)
