"""Adam's preconditioner and its stability limit: the adaptive edge of stability.

``torch.optim.Adam`` and ``AdamW`` step ``θ ← θ − η m̂_t / (√v̂_t + ε)`` with the moment estimates
``m_t = β₁ m_{t−1} + (1 − β₁) g_t``, ``v_t = β₂ v_{t−1} + (1 − β₂) g_t²`` and their bias corrections
``m̂ = m / (1 − β₁ᵗ)``, ``v̂ = v / (1 − β₂ᵗ)`` (with ``amsgrad=True`` the running maximum of ``v`` replaces
``v``). Written as momentum on a preconditioned gradient,

    θ ← θ − η D_t⁻¹ m_t,     D_t = (1 − β₁ᵗ) · diag(√v̂_t + ε),

(Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of Stability"). With ``D`` held fixed, on a quadratic
with Hessian ``H`` this is heavy-ball momentum β₁ with step ``η(1 − β₁)`` on the preconditioned curvature
``D⁻¹H``, stable iff every eigenvalue of ``D⁻¹H`` is below

    (2 + 2β₁) / ((1 − β₁) η)        (38/η for β₁ = 0.9).

Cohen et al. observe that under full-batch Adam the *preconditioned sharpness* ``λ_1(D⁻¹H)`` rises to this
limit and hovers there, while the preconditioner keeps adapting (λ_max of ``H`` itself keeps rising): the
adaptive edge of stability, the analogue of ``2/η`` for gradient descent. Weight decay is not part of ``D``:
AdamW's decoupled decay adds ``ηλ_wd`` (small) to the contraction, Adam's L2 term adds ``λ_wd`` to ``H``.

Example::

    >>> round(adam_stability_limit(lr=0.01, beta1=0.9), 6)  # 38/η
    3800.0
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> optimizer = torch.optim.Adam([w], lr=0.1)
    >>> adam_preconditioner(optimizer, [w]) is None  # no step taken yet: no moment estimates
    True
    >>> w.grad = torch.tensor([1.0, 2.0, 4.0]); optimizer.step()
    >>> adam_preconditioner(optimizer, [w])  # after one step: (1 − β₁)(|g| + ε)
    tensor([0.1000, 0.2000, 0.4000])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["adam_preconditioner", "adam_stability_limit", "is_adam"]


def is_adam(optimizer: object) -> bool:
    """Whether ``optimizer`` is ``torch.optim.Adam`` or ``AdamW`` (or a subclass): the update above."""
    return any(cls.__name__ in ("Adam", "AdamW") for cls in type(optimizer).__mro__)


def adam_stability_limit(lr: float, beta1: float) -> float:
    """``(2 + 2β₁) / ((1 − β₁)·lr)``: the largest stable eigenvalue of ``D⁻¹H`` (module docstring)."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a positive finite number, got {lr!r}.")
    if not (isinstance(beta1, (int, float)) and 0.0 <= beta1 < 1.0):
        raise ValueError(f"`beta1` must be a number in [0, 1), got {beta1!r}.")
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def adam_preconditioner(optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]) -> Tensor | None:
    """The diagonal of Adam's ``D_t = (1 − β₁ᵗ)·diag(√v̂_t + ε)`` over ``parameters``, flattened and concatenated
    in their order (each parameter's own param group gives ``β₂, ε``), as float32 (float64 parameters:
    float64) on the parameters' device.

    Param groups with their own step size ``η_g`` are folded in: the step of group ``g`` is
    ``η_g D⁻¹ m = η_0 (η_0/η_g · D)⁻¹ m``, so its entries are scaled by ``η_0/η_g`` (``η_0``: the first group's
    step size, the one :func:`adam_stability_limit` takes), ``+inf`` for a group with ``η_g = 0`` (it does not
    move).

    ``None`` when it is not defined: ``optimizer`` is not Adam/AdamW (see :func:`is_adam`), a parameter has no
    moment estimates yet (no step taken, or not in the optimizer), or the parameters' groups have different
    ``β₁`` (the limit depends on it: there is no single one).
    """
    if not is_adam(optimizer):
        return None
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    reference_lr = float(optimizer.param_groups[0]["lr"])
    pieces, beta1s = [], set()
    for parameter in parameters:
        state = optimizer.state.get(parameter)
        group = groups.get(id(parameter))
        if group is None or not state or "exp_avg_sq" not in state:
            return None
        step = float(state["step"])
        if step < 1:
            return None
        beta1, beta2 = (float(b) for b in group["betas"])
        beta1s.add(beta1)
        second_moment = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
        dtype = torch.float64 if second_moment.dtype == torch.float64 else torch.float32
        v_hat = second_moment.detach().to(dtype) / (1.0 - beta2**step)
        diagonal = (1.0 - beta1**step) * (v_hat.sqrt() + float(group["eps"]))
        lr = float(group["lr"])
        if lr != reference_lr:
            diagonal = diagonal * (reference_lr / lr) if lr > 0 else torch.full_like(diagonal, math.inf)
        pieces.append(diagonal.reshape(-1))
    if not pieces or len(beta1s) > 1:
        return None
    return torch.cat(pieces)
