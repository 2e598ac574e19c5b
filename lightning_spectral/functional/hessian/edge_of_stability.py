"""The edge-of-stability ratio of (heavy-ball / Nesterov) gradient descent."""

from __future__ import annotations

import math

from lightning_spectral._internal.validation import check_positive_finite


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
    r"""The largest stable curvature ``λ`` of the loss Hessian for ``torch.optim.SGD`` with these settings.

    Gradient descent with heavy-ball momentum ``μ``, dampening ``τ`` and coupled weight decay ``w`` is stable
    along an eigenvector of curvature ``λ`` while ``λ`` is below

    .. math::

        \lambda_{\text{crit}} = \frac{2 + 2\mu}{\eta (1 - \tau)} - w
        \quad\text{(Nesterov: } \frac{2 + 2\mu}{\eta (1 - \tau)(1 + 2\mu)} - w\text{)},

    ``2/η`` for plain SGD (Cohen et al. 2021); ``inf`` when nothing is limited (``τ = 1`` with momentum).

    Args:
        lr: the step size ``η`` (``> 0``).
        momentum: ``μ`` in ``[0, 1)``.
        nesterov: Nesterov momentum (needs ``dampening = 0``).
        dampening: ``τ`` in ``[0, 1]``.
        weight_decay: coupled L2 weight decay ``w >= 0``.

    Returns:
        The limit ``λ_crit``.

    Raises:
        ValueError: an argument out of range, Nesterov with dampening, or a weight decay at least the
            step's limit.

    Example:
        >>> stability_limit(lr=0.1)
        20.0
        >>> round(stability_limit(lr=0.1, momentum=0.9), 6)
        38.0
    """
    check_positive_finite("lr", lr)
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
    """``λ_max`` divided by :func:`stability_limit`: ``lr·λ_max/2`` for plain SGD, ``≥ 1`` means unstable.

    Args:
        lambda_max: the top eigenvalue of the loss Hessian.
        lr: the step size ``η`` (``> 0``).
        momentum: ``μ`` in ``[0, 1)``.
        nesterov: Nesterov momentum (needs ``dampening = 0``).
        dampening: ``τ`` in ``[0, 1]``.
        weight_decay: coupled L2 weight decay ``w >= 0``.

    Returns:
        ``λ_max / λ_crit`` (``0.0`` when nothing is limited).

    Raises:
        ValueError: as :func:`stability_limit`.

    Example:
        >>> edge_of_stability_ratio(lambda_max=40.0, lr=0.05)
        1.0
        >>> round(edge_of_stability_ratio(lambda_max=40.0, lr=0.05, momentum=0.9), 6)  # limit (2+1.8)/0.05 = 76
        0.526316
    """
    return float(lambda_max) / stability_limit(lr, momentum, nesterov, dampening, weight_decay)
