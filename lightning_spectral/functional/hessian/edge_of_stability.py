"""The edge-of-stability ratio of (heavy-ball / Nesterov) gradient descent.

Example::

    >>> edge_of_stability_ratio(lambda_max=40.0, lr=0.05)
    1.0
    >>> round(edge_of_stability_ratio(lambda_max=40.0, lr=0.05, momentum=0.9), 6)  # limit (2+1.8)/0.05 = 76
    0.526316
"""

from __future__ import annotations

import math


def buffer_step(lr: float, momentum: float, dampening: float) -> float:
    """``η(1 − d)``: the step SGD takes on its momentum buffer (``η`` without momentum: torch ignores ``d``)."""
    return lr * (1.0 - dampening) if momentum > 0 else lr


def stability_limit(
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
) -> float:
    """The largest stable curvature ``λ`` of the loss Hessian for ``torch.optim.SGD`` with these settings (module
    docstring); ``inf`` when nothing is limited (``dampening = 1`` with momentum).
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a positive finite number, got {lr!r}.")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
        raise ValueError(f"`momentum` must be a number in [0, 1), got {momentum!r}.")
    if not (isinstance(dampening, (int, float)) and 0.0 <= dampening <= 1.0):
        raise ValueError(f"`dampening` must be a number in [0, 1], got {dampening!r}.")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"`weight_decay` must be a finite number >= 0, got {weight_decay!r}.")
    if nesterov and dampening != 0.0:
        raise ValueError(
            f"`nesterov` needs `dampening` = 0 (as torch.optim.SGD), got dampening={dampening!r}."
        )
    step = buffer_step(lr, momentum, dampening)
    if step == 0.0:
        return math.inf
    limit = (2.0 + 2.0 * momentum) / step
    if nesterov:
        limit /= 1.0 + 2.0 * momentum
    if weight_decay >= limit:
        raise ValueError(
            f"`weight_decay` = {weight_decay!r} is at least the step's limit {limit:.6g}: the decay alone makes "
            "every direction unstable."
        )
    return limit - weight_decay


def edge_of_stability_ratio(
    lambda_max: float,
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
) -> float:
    """``λ_max`` divided by the stability limit: ``lr·λ_max/2`` for plain SGD, ``≥ 1`` means unstable."""
    return float(lambda_max) / stability_limit(lr, momentum, nesterov, dampening, weight_decay)
