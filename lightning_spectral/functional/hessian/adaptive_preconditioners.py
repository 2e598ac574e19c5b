"""Adaptive optimizers' diagonal preconditioners and their stability limits: the adaptive edge of stability."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_spectral._internal.validation import check_positive_finite
from lightning_spectral.functional.hessian.edge_of_stability import stability_limit

__all__ = [
    "PreconditionedStep",
    "adam_preconditioner",
    "adam_stability_limit",
    "adaptive_preconditioning",
    "is_adam",
    "is_rmsprop",
    "nadam_stability_limit",
    "rmsprop_preconditioner",
]

#: ``(state, group) -> the diagonal of D for one parameter`` (``None``: not defined yet).
_Diagonal = Callable[[dict[str, Any], dict[str, Any]], Tensor | None]
#: ``(state, group) -> what the stability limit depends on besides η`` (β₁ for Adam, μ for RMSprop); the
#: parameters must agree on it.
_LimitKey = Callable[[dict[str, Any], dict[str, Any]], Any]


def _is_a(optimizer: object, names: tuple[str, ...]) -> bool:
    return any(cls.__name__ in names for cls in type(optimizer).__mro__)


def is_adam(optimizer: object) -> bool:
    """Whether ``optimizer`` is ``torch.optim.Adam`` or ``AdamW`` (or a subclass): the Adam update above."""
    return _is_a(optimizer, ("Adam", "AdamW"))


def is_rmsprop(optimizer: object) -> bool:
    """Whether ``optimizer`` is ``torch.optim.RMSprop`` (or a subclass)."""
    return _is_a(optimizer, ("RMSprop",))


def adam_stability_limit(lr: float, beta1: float) -> float:
    r"""Adam's largest stable eigenvalue of the preconditioned Hessian ``D⁻¹H`` (Cohen et al. 2022).

    .. math::

        \lambda_{\text{crit}} = \frac{2 + 2\beta_1}{(1 - \beta_1)\,\eta}

    Args:
        lr: the step size ``η`` (``> 0``).
        beta1: Adam's ``β₁`` in ``[0, 1)``.

    Returns:
        The limit ``λ_crit``.

    Raises:
        ValueError: ``lr`` or ``beta1`` out of range.

    Example:
        >>> round(adam_stability_limit(lr=0.01, beta1=0.9), 6)  # 38/η
        3800.0
    """
    check_positive_finite("lr", lr)
    if not (isinstance(beta1, (int, float)) and 0.0 <= beta1 < 1.0):
        raise ValueError(f"`beta1` must be a number in [0, 1), got {beta1!r}.")
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def _working_dtype(tensor: Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _adam_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "exp_avg_sq" not in state or float(state["step"]) < 1:
        return None
    step = float(state["step"])
    beta1, beta2 = (float(b) for b in group["betas"])
    second_moment = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
    v_hat = second_moment.detach().to(_working_dtype(second_moment)) / (1.0 - beta2**step)
    return (1.0 - beta1**step) * (v_hat.sqrt() + float(group["eps"]))


def _adamax_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "exp_inf" not in state or float(state["step"]) < 1:
        return None
    step, beta1 = float(state["step"]), float(group["betas"][0])
    return (1.0 - beta1**step) * state["exp_inf"].detach().to(_working_dtype(state["exp_inf"]))


def _radam_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "exp_avg_sq" not in state or float(state["step"]) < 1:
        return None
    step = float(state["step"])
    beta1, beta2 = (float(b) for b in group["betas"])
    second_moment = state["exp_avg_sq"].detach().to(_working_dtype(state["exp_avg_sq"]))
    correction2 = 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho = rho_inf - 2.0 * step * beta2**step / correction2
    if not rho > 5.0:  # torch's RAdam steps with the momentum alone here
        return torch.full_like(second_moment, 1.0 - beta1**step)
    rectification = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    v_hat_sqrt = second_moment.sqrt() / math.sqrt(correction2)
    return (1.0 - beta1**step) / rectification * (v_hat_sqrt + float(group["eps"]) / math.sqrt(correction2))


def _nadam_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "exp_avg_sq" not in state or "mu_product" not in state or float(state["step"]) < 1:
        return None
    step, beta2 = float(state["step"]), float(group["betas"][1])
    second_moment = state["exp_avg_sq"].detach().to(_working_dtype(state["exp_avg_sq"]))
    return (second_moment / (1.0 - beta2**step)).sqrt() + float(group["eps"])


def _nadam_schedule(state: dict[str, Any], group: dict[str, Any]) -> tuple[float, ...]:
    """What NAdam's limit depends on besides ``η``: ``β₁``, ``momentum_decay``, the step and ``Π_t``."""
    return (
        float(group["betas"][0]),
        float(group["momentum_decay"]),
        float(state["step"]),
        float(state["mu_product"]),
    )


def nadam_stability_limit(
    lr: float, beta1: float, momentum_decay: float, step: float, mu_product: float
) -> float:
    r"""NAdam's largest stable eigenvalue of ``D⁻¹H`` after ``step`` steps.

    With NAdam's momentum schedule ``μ_t = β₁(1 − 0.96^{tψ}/2)`` (``ψ`` = ``momentum_decay``),
    ``c₁ = (1 − μ_t)/(1 − Π_t)`` and ``c₂ = μ_{t+1}/(1 − Π_t μ_{t+1})``:

    .. math::

        \lambda_{\text{crit}} = \frac{2(1 + \beta_1)}{\eta\,\big(c_1 (1 + \beta_1) + c_2 (1 - \beta_1)\big)}

    Args:
        lr: the step size ``η`` (``> 0``).
        beta1: ``β₁`` in ``[0, 1)``.
        momentum_decay: NAdam's ``momentum_decay`` ``ψ``.
        step: the step count ``t``.
        mu_product: ``Π_t``, the product of the ``μ`` so far (NAdam's ``mu_product`` state).

    Returns:
        The limit ``λ_crit``.

    Raises:
        ValueError: ``lr`` or ``beta1`` out of range.

    Example:
        >>> round(nadam_stability_limit(0.01, 0.9, 0.004, step=1000.0, mu_product=0.0), 1)
        392.6
    """
    adam_stability_limit(lr, beta1)  # validates lr and β₁
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1.0) * momentum_decay))
    c1 = (1.0 - mu) / (1.0 - mu_product)
    c2 = mu_next / (1.0 - mu_product * mu_next)
    return 2.0 * (1.0 + beta1) / (lr * (c1 * (1.0 + beta1) + c2 * (1.0 - beta1)))


def _adadelta_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "square_avg" not in state or float(state["step"]) < 1:
        return None
    eps = float(group["eps"])
    square_avg = state["square_avg"].detach().to(_working_dtype(state["square_avg"]))
    acc_delta = state["acc_delta"].detach().to(square_avg.dtype)
    return (square_avg + eps).sqrt() / (acc_delta + eps).sqrt()


def _adagrad_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "sum" not in state or float(state["step"]) < 1:
        return None
    decay = 1.0 + float(state["step"]) * float(group.get("lr_decay", 0.0))  # the next step's η_t = η / decay
    accumulated = state["sum"].detach().to(_working_dtype(state["sum"]))
    return decay * (accumulated.sqrt() + float(group["eps"]))


def _rmsprop_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "square_avg" not in state or float(state["step"]) < 1:
        return None
    square_avg = state["square_avg"].detach().to(_working_dtype(state["square_avg"]))
    if group.get("centered"):
        grad_avg = state["grad_avg"].detach().to(square_avg.dtype)
        square_avg = square_avg - grad_avg * grad_avg
    return square_avg.sqrt() + float(group["eps"])


def _adam_momentum(state: dict[str, Any], group: dict[str, Any]) -> float:
    return float(group["betas"][0])


def _no_momentum(state: dict[str, Any], group: dict[str, Any]) -> float:
    return 0.0


def _rmsprop_momentum(state: dict[str, Any], group: dict[str, Any]) -> float:
    return float(group.get("momentum", 0.0))


class _Found(NamedTuple):
    diagonal: Tensor
    limit_key: Any
    weight_decay: Tensor | None


def _preconditioner(
    optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor], diagonal: _Diagonal, limit_key: _LimitKey
) -> _Found | None:
    """``D`` over ``parameters`` (flattened, concatenated in their order) from each parameter's state and group,
    with the groups' step sizes folded in, the ``limit_key`` they share, and each coordinate's coupled
    ``weight_decay`` (``None`` if 0 everywhere; groups with ``decoupled_weight_decay`` count 0, their decay is
    in the limit); ``None`` if a piece is undefined, a group maximizes, or the parameters' ``limit_key``
    (momentum, schedule) differ.
    """
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    reference_lr = float(optimizer.param_groups[0]["lr"])
    pieces, decays, keys = [], [], set()
    for parameter in parameters:
        state, group = optimizer.state.get(parameter), groups.get(id(parameter))
        if not state or group is None or group.get("maximize"):
            return None
        piece = diagonal(state, group)
        if piece is None:
            return None
        keys.add(limit_key(state, group))
        lr = float(group["lr"])
        if lr != reference_lr:
            piece = piece * (reference_lr / lr) if lr > 0 else torch.full_like(piece, math.inf)
        pieces.append(piece.reshape(-1))
        coupled = 0.0 if group.get("decoupled_weight_decay") else float(group.get("weight_decay", 0.0))
        decays.append(torch.full_like(pieces[-1], coupled))
    if not pieces or len(keys) > 1:
        return None
    weight_decay = torch.cat(decays)
    return _Found(torch.cat(pieces), keys.pop(), weight_decay if bool((weight_decay != 0).any()) else None)


def adam_preconditioner(optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]) -> Tensor | None:
    """The diagonal of Adam's ``D_t = (1 − β₁ᵗ)·diag(√v̂_t + ε)`` over ``parameters``, flattened and concatenated
    in their order, as float32 (float64 parameters: float64) on the parameters' device; param groups' step
    sizes folded in (see the docs' implementation notes).

    ``None`` when it is not defined: ``optimizer`` is not Adam/AdamW (see :func:`is_adam`), a parameter has no
    moment estimates yet (no step taken, or not in the optimizer), or the parameters' groups have different
    ``β₁``.

    Args:
        optimizer: the optimizer that trains ``parameters``.
        parameters: the parameters, in the order of the Hessian's flat vector.

    Returns:
        The ``(P,)`` diagonal of ``D_t``, or ``None`` where it is not defined.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> optimizer = torch.optim.Adam([w], lr=0.1)
        >>> adam_preconditioner(optimizer, [w]) is None  # no step taken yet: no moment estimates
        True
        >>> w.grad = torch.tensor([1.0, 2.0, 4.0]); optimizer.step()
        >>> adam_preconditioner(optimizer, [w])  # after one step: (1 − β₁)(|g| + ε)
        tensor([0.1000, 0.2000, 0.4000])
    """
    if not is_adam(optimizer):
        return None
    found = _preconditioner(optimizer, parameters, _adam_diagonal, _adam_momentum)
    return None if found is None else found.diagonal


def rmsprop_preconditioner(optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]) -> Tensor | None:
    """The diagonal of RMSprop's ``D = diag(√v + ε)`` (``centered=True``: ``√(v − ḡ²) + ε``) over
    ``parameters``, like :func:`adam_preconditioner`; ``None`` for other optimizers, before the first step, or
    for groups with different ``momentum``.

    Args:
        optimizer: the optimizer that trains ``parameters``.
        parameters: the parameters, in the order of the Hessian's flat vector.

    Returns:
        The ``(P,)`` diagonal of ``D``, or ``None`` where it is not defined.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> optimizer = torch.optim.RMSprop([w], lr=0.1, alpha=0.0, eps=0.0)
        >>> w.grad = torch.tensor([3.0, 4.0]); optimizer.step()
        >>> rmsprop_preconditioner(optimizer, [w])  # √v = |g| after one step with alpha = 0
        tensor([3., 4.])
    """
    if not is_rmsprop(optimizer):
        return None
    found = _preconditioner(optimizer, parameters, _rmsprop_diagonal, _rmsprop_momentum)
    return None if found is None else found.diagonal


@dataclass(frozen=True)
class PreconditionedStep:
    """An adaptive optimizer's diagonal preconditioner ``D`` (over some parameters), its coupled weight decay
    ``w`` per coordinate (``None`` without; the step sees ``D⁻¹(H + diag(w))``) and the stability limit of that
    matrix's eigenvalues at the current step size (decoupled decay folded in).

    Attributes:
        optimizer: the optimizer's class name.
        diagonal: ``(P,)`` the diagonal of ``D``.
        limit: the largest stable eigenvalue of ``D⁻¹(H + diag(w))`` at the current step size.
        weight_decay: ``(P,)`` coupled weight decay per coordinate, or ``None``.

    Example::

        step = adaptive_preconditioning(optimizer, params)
        step.optimizer, step.limit  # e.g. ('Adam', 3800.0)
    """

    optimizer: str
    diagonal: Tensor
    limit: float
    weight_decay: Tensor | None = None


def _decoupled_factor(group: dict[str, Any]) -> float:
    """``(1 + c)/2 = 1 − ηw/2``: what decoupled decay (``c = 1 − ηw``) does to an Adam-family or NAdam limit
    (1 for groups without it: RMSprop, Adagrad and Adadelta have none).
    """
    if not group.get("decoupled_weight_decay"):
        return 1.0
    return 1.0 - float(group["lr"]) * float(group.get("weight_decay", 0.0)) / 2.0


@dataclass(frozen=True)
class _Rule:
    """How one optimizer is read: the classes it covers, its ``D``, what its limit depends on, and the limit
    ``(η, limit_key) -> λ`` before decoupled decay.
    """

    classes: tuple[str, ...]
    diagonal: _Diagonal
    limit_key: _LimitKey
    limit: Callable[[float, Any], float]


#: Name -> rule, in the order the optimizer's classes are matched (AdamW is an Adam).
_RULES: dict[str, _Rule] = {
    "Adam": _Rule(("Adam", "AdamW"), _adam_diagonal, _adam_momentum, adam_stability_limit),
    "Adamax": _Rule(("Adamax",), _adamax_diagonal, _adam_momentum, adam_stability_limit),
    "RAdam": _Rule(("RAdam",), _radam_diagonal, _adam_momentum, adam_stability_limit),
    "NAdam": _Rule(
        ("NAdam",), _nadam_diagonal, _nadam_schedule, lambda lr, key: nadam_stability_limit(lr, *key)
    ),
    "RMSprop": _Rule(("RMSprop",), _rmsprop_diagonal, _rmsprop_momentum, stability_limit),
    "Adagrad": _Rule(("Adagrad",), _adagrad_diagonal, _no_momentum, stability_limit),
    "Adadelta": _Rule(("Adadelta",), _adadelta_diagonal, _no_momentum, stability_limit),
}


def has_preconditioner_rule(optimizer: object) -> bool:
    """Whether :func:`adaptive_preconditioning` knows ``optimizer``'s class (Adam family, RMSprop, Adagrad, ...)."""
    return any(_is_a(optimizer, rule.classes) for rule in _RULES.values())


def adaptive_preconditioning(
    optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]
) -> PreconditionedStep | None:
    """``D``, the coupled weight decay and the limit of ``λ_1(D⁻¹(H + W))`` for Adam / AdamW / Adamax / RAdam
    (``(2 + 2β₁)/((1 − β₁)η)``), NAdam (its schedule's limit), both times ``1 − ηw/2`` under decoupled decay,
    RMSprop (``(2 + 2μ)/η``), Adagrad and Adadelta (``2/η``), ``η`` from the first param group (module
    docstring); ``None`` for other optimizers or where the preconditioner is not defined (see
    :func:`adam_preconditioner`).

    Args:
        optimizer: the optimizer that trains ``parameters``.
        parameters: the parameters, in the order of the Hessian's flat vector.

    Returns:
        A :class:`PreconditionedStep`, or ``None`` for other optimizers or an undefined preconditioner.

    Example::

        step = adaptive_preconditioning(optimizer, list(model.parameters()))
        result = hessian_eigenvalues(model, loss_fn, batch, preconditioner=step.diagonal)
        ratio = result.eigenvalues[0].item() / step.limit  # >= 1: past the adaptive edge of stability
    """
    name = next((name for name, rule in _RULES.items() if _is_a(optimizer, rule.classes)), None)
    if name is None:
        return None
    rule = _RULES[name]
    found = _preconditioner(optimizer, parameters, rule.diagonal, rule.limit_key)
    group = optimizer.param_groups[0]
    lr = float(group["lr"])
    if found is None or not lr > 0:
        return None
    limit = rule.limit(lr, found.limit_key) * _decoupled_factor(group)
    return PreconditionedStep(name, found.diagonal, limit, found.weight_decay)
