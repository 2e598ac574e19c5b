"""The stochastic edge of stability of SGD (Agarwala & Pennington 2024, arXiv:2404.19261)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_spectral._internal.validation import (
    check_int,
    check_non_negative_finite,
    check_positive_finite,
)
from lightning_spectral.functional.hessian.edge_of_stability import buffer_step, stability_limit

__all__ = ["SGDStability", "sgd_stability"]


@dataclass(frozen=True)
class SGDStability:
    """The S-EOS indicator and the full-batch edge-of-stability ratio (see the docs' implementation notes).

    ``noise_kernel_norm`` is 𝒦 (``None`` when only the trace and ``λ_max`` were given); the bounds always
    hold (``noise_kernel_norm_upper`` is ``inf`` once the mean is past its limit, ``ηλ_max ≥ 2`` without
    momentum). ``edge_of_stability_ratio`` is ``λ_max(Θ̂)`` over the optimizer's mean limit (less ``ŵ`` with weight
    decay)
    (:func:`~lightning_spectral.functional.hessian.edge_of_stability.stability_limit`; ``ηλ_max(Θ̂)/2`` without
    momentum). ``stable`` is True when ``ratio < 1`` and 𝒦 (or, without the spectrum, its upper bound)
    ``< 1``; False when ``ratio ≥ 1`` or 𝒦 (or its lower bound) ``≥ 1``; ``None`` when the bounds straddle 1.

    Attributes:
        noise_kernel_norm: 𝒦, or ``None`` without the spectrum.
        noise_kernel_norm_lower: the lower bound on 𝒦 from the trace.
        noise_kernel_norm_upper: the upper bound from the trace and ``λ_max`` (``inf`` past the mean's limit).
        edge_of_stability_ratio: ``λ_max(Θ̂)`` over the optimizer's limit.
        stable: ``True``, ``False``, or ``None`` when the bounds straddle 1.

    Example:
        >>> s = sgd_stability(lr=0.1, batch_size=4, ntk_num_examples=8, ntk_trace=16.0, ntk_lambda_max=4.0)
        >>> s.noise_kernel_norm is None, s.stable
        (True, True)
    """

    noise_kernel_norm: float | None
    noise_kernel_norm_lower: float
    noise_kernel_norm_upper: float
    edge_of_stability_ratio: float
    stable: bool | None


@dataclass(frozen=True)
class _SGDVariant:
    """The optimizer's step: ``η`` (loss scale included), momentum μ, Nesterov, dampening d, coupled weight decay
    ``ŵ`` (in the units of Θ̂).
    """

    eta: float
    momentum: float
    nesterov: bool
    dampening: float
    decay: float = 0.0

    @property
    def step(self) -> float:
        """``η' = η(1 − d)``, the step on the buffer."""
        return buffer_step(self.eta, self.momentum, self.dampening)

    def noise_response(self, lam: Tensor) -> Tensor:
        """``λ² p(λ + ŵ) = λ · (λ/(λ + ŵ)) · g(λ + ŵ)`` (see the docs' implementation notes), float64, for ``λ + ŵ`` below the mean
        limit (``λ g(λ)`` without decay).
        """
        total = lam + self.decay
        share = torch.where(total > 0, lam / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
        return lam * share * self.gain(total)

    @property
    def gain_coefficients(self) -> tuple[float, float, float, float, float, float, float]:
        """``(s, a₀, a₁, b₀, b₁, c₀, c₁)`` with ``g(λ) = s(a₀ + a₁λ) / ((b₀ + b₁λ)(c₀ − c₁λ))``.

        The residual follows an ARMA(2, 1) process ``z' = φ₁z + φ₂z₋ + c(n + ϑn₋)`` whose variance per unit
        noise variance is ``c²((1 + ϑ²)(1 − φ₂) + 2φ₁ϑ) / ((1 + φ₂)(1 − φ₂ − φ₁)(1 − φ₂ + φ₁))``; its factor
        ``1 − φ₂ − φ₁ = η'λ`` cancels against ``λ``, so ``g(0) = η_eff/2`` needs no special case.
        """
        mu, eta = self.momentum, self.step
        if not self.nesterov:  # heavy ball: φ₁ = 1 + μ − η'λ, φ₂ = −μ, c = −η', ϑ = 0
            return eta * (1.0 + mu), 1.0, 0.0, 1.0 - mu, 0.0, 2.0 * (1.0 + mu), eta
        # Nesterov: φ₁ = 1 + μ − η(1 + μ)λ, φ₂ = −μ(1 − ηλ), c = −η(1 + μ), ϑ = −μ/(1 + μ)
        theta = -mu / (1.0 + mu)
        a0 = (1.0 + mu) * (1.0 + theta) ** 2
        a1 = -eta * ((1.0 + theta**2) * mu + 2.0 * theta * (1.0 + mu))
        return eta * (1.0 + mu) ** 2, a0, a1, 1.0 - mu, mu * eta, 2.0 * (1.0 + mu), eta * (1.0 + 2.0 * mu)

    def gain(self, lam: Tensor) -> Tensor:
        """``g(λ) = λ p(λ)`` in closed form (:attr:`gain_coefficients`)."""
        s, a0, a1, b0, b1, c0, c1 = self.gain_coefficients
        return s * (a0 + a1 * lam) / ((b0 + b1 * lam) * (c0 - c1 * lam))

    def gain_range(self, lower: float, upper: float, closed: bool = True) -> tuple[float, float]:
        """Smallest and largest ``g`` on ``[lower, upper]`` (``[lower, upper)`` with ``closed=False``, whose largest
        is ``inf``: ``upper`` is the mean limit, where ``g`` diverges). ``g`` is a linear over a quadratic
        polynomial, so its extrema lie at the ends or where ``a₁q(λ) − (a₀ + a₁λ)q'(λ) = 0``, ``q`` the
        denominator: ``−a₁q₂λ² − 2a₀q₂λ + (a₁q₀ − a₀q₁) = 0`` (for heavy ball ``a₁ = q₂ = 0`` and ``g``
        increases).
        """
        _, a0, a1, b0, b1, c0, c1 = self.gain_coefficients
        q0, q1, q2 = b0 * c0, b1 * c0 - b0 * c1, -b1 * c1
        a, b, c = -a1 * q2, -2.0 * a0 * q2, a1 * q0 - a0 * q1
        if a != 0.0:
            discriminant = b * b - 4.0 * a * c
            roots = (
                []
                if discriminant < 0
                else [(-b + sign * math.sqrt(discriminant)) / (2.0 * a) for sign in (1, -1)]
            )
        else:
            roots = [-c / b] if b != 0.0 else []
        candidates = [lower, *(r for r in roots if lower < r < upper), *([upper] if closed else [])]
        values = self.gain(torch.tensor(candidates, dtype=torch.float64))
        return float(values.min()), float(values.max()) if closed else math.inf


def _non_negative(value: object, name: str) -> float:
    """A non-negative finite number, also given as a one-element tensor (a measured trace)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    return check_non_negative_finite(name, value)


def sgd_stability(
    *,
    lr: float,
    batch_size: int,
    ntk_num_examples: int,
    num_outputs: int = 1,
    ntk_eigenvalues: Tensor | None = None,
    ntk_trace: float | None = None,
    ntk_lambda_max: float | None = None,
    dataset_size: int | None = None,
    loss_scale: float = 1.0,
    momentum: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
) -> SGDStability:
    r"""The S-EOS noise-kernel norm 𝒦 of SGD with step ``lr`` and batch size ``batch_size``.

    Give either ``ntk_eigenvalues`` (eigenvalues of the raw NTK ``Θ = J Jᵀ`` of ``ntk_num_examples``
    examples; zeros may be left out; exact 𝒦) or both ``ntk_trace`` and ``ntk_lambda_max`` of that same raw
    NTK (bounds on 𝒦 only), as returned by ``ntk_trace(...).trace`` and ``ntk_lambda_max``. ``num_outputs``
    is ``K``, ``dataset_size`` the training-set size ``D`` (``None``: ``D ≫ B``), ``loss_scale`` the factor
    between the loss and ``(1/(2B)) Σ‖f − y‖²`` (``2/K`` for ``torch.nn.MSELoss()``). See the docs' implementation notes
    With ``Θ̂ = Θ/n`` (``n`` = ``ntk_num_examples``) of eigenvalues ``λ_α``, batch size ``B``, dataset size
    ``D`` and ``K`` outputs, the noise-kernel norm of plain SGD on ``(1/(2B)) Σ‖f − y‖²`` in the linearized
    (NTK) model is

    .. math::

        \mathcal{K} = \frac{1 - B/D}{B K} \sum_\alpha \frac{\eta\lambda_\alpha}{2 - \eta\lambda_\alpha},
        \qquad
        \frac{(1 - B/D)\,\eta \operatorname{tr}\hat\Theta}{2 B K} \le \mathcal{K}
        \le \frac{(1 - B/D)\,\eta \operatorname{tr}\hat\Theta}{B K (2 - \eta\lambda_{\max})},

    and SGD is stable while ``ηλ_max(Θ̂) < 2`` and ``𝒦 < 1`` (the S-EOS is ``𝒦 = 1``). Momentum, dampening
    and coupled weight decay change the limits as for ``torch.optim.SGD``; the derivation and its
    assumptions are on the science pages.

    Args:
        lr: the step size ``η`` (``> 0``).
        batch_size: ``B``.
        ntk_num_examples: ``n``, the examples of the measured NTK.
        num_outputs: ``K``.
        ntk_eigenvalues: eigenvalues of the raw NTK ``Θ`` (zeros may be left out): the exact 𝒦.
        ntk_trace: ``tr Θ`` (with ``ntk_lambda_max``: the bounds only).
        ntk_lambda_max: ``λ_max(Θ)``.
        dataset_size: ``D`` (``None``: ``D ≫ B``).
        loss_scale: the loss over ``(1/(2B)) Σ‖f − y‖²`` (``2/K`` for ``torch.nn.MSELoss()``).
        momentum: ``torch.optim.SGD``'s ``momentum``.
        nesterov: ``torch.optim.SGD``'s ``nesterov``.
        dampening: ``torch.optim.SGD``'s ``dampening``.
        weight_decay: ``torch.optim.SGD``'s ``weight_decay`` (coupled).

    Returns:
        :class:`SGDStability`.

    Raises:
        ValueError: an argument out of range, neither the eigenvalues nor the trace given, or a
            ``dataset_size`` below ``batch_size``.

    Example:
        >>> s = sgd_stability(lr=0.5, batch_size=1, ntk_num_examples=2, num_outputs=2,
        ...                   ntk_eigenvalues=torch.tensor([4.0, 2.0, 1.0, 0.0]))
        >>> round(s.noise_kernel_norm, 6), s.noise_kernel_norm_lower, s.noise_kernel_norm_upper  # 𝒦 = 31/42
        (0.738095, 0.4375, 0.875)
    """
    scale_of_loss = check_positive_finite("loss_scale", loss_scale)
    eta = check_positive_finite("lr", lr) * scale_of_loss
    decay = _non_negative(weight_decay, "weight_decay") / scale_of_loss  # ŵ, in the units of Θ̂
    curvature_limit = stability_limit(eta, momentum, nesterov, dampening)  # validates the three
    if decay >= curvature_limit:
        raise ValueError(
            f"`weight_decay` = {weight_decay!r} makes every direction unstable: weight_decay / loss_scale must be "
            f"below the step's limit {curvature_limit:.6g}."
        )
    limit = curvature_limit - decay  # the mean's limit on λ̂
    variant = _SGDVariant(eta, float(momentum), bool(nesterov), float(dampening), decay)
    batch = check_int("batch_size", batch_size, 1)
    n = check_int("ntk_num_examples", ntk_num_examples, 1)
    k = check_int("num_outputs", num_outputs, 1)
    if dataset_size is not None and (check_int("dataset_size", dataset_size, 1) < batch):
        raise ValueError(f"`dataset_size` must be at least `batch_size` = {batch}, got {dataset_size!r}.")
    keep = 1.0 - (batch / dataset_size if dataset_size is not None else 0.0)  # 1 − β

    spectrum_given = ntk_eigenvalues is not None
    if spectrum_given == (ntk_trace is not None or ntk_lambda_max is not None):
        raise ValueError(
            "Give either `ntk_eigenvalues`, or `ntk_trace` (and optionally `ntk_lambda_max`), not both kinds."
        )
    exact = None
    if spectrum_given:
        if not isinstance(ntk_eigenvalues, Tensor) or ntk_eigenvalues.dim() != 1:
            got = getattr(ntk_eigenvalues, "shape", type(ntk_eigenvalues))
            raise ValueError(f"`ntk_eigenvalues` must be a 1-D tensor, got {got}.")
        eigenvalues = ntk_eigenvalues.detach().to(torch.float64).cpu()
        if eigenvalues.numel() == 0 or eigenvalues.numel() > n * k or not torch.isfinite(eigenvalues).all():
            raise ValueError(
                f"`ntk_eigenvalues` must hold 1 to ntk_num_examples·num_outputs = {n * k} finite values, "
                f"got {eigenvalues.numel()}."
            )
        scale = float(eigenvalues.abs().max())
        if float(eigenvalues.min()) < -1e-6 * scale:
            raise ValueError(
                f"`ntk_eigenvalues` must be non-negative (an NTK is PSD), min {float(eigenvalues.min())}."
            )
        normalized = eigenvalues.clamp_min(0.0) / n  # eigenvalues of Θ̂, rounding negatives set to 0
        trace_hat, lambda_max_hat = float(normalized.sum()), float(normalized.max())
        if variant.step == 0.0:  # dampening 1: the buffer takes in no gradient, and no noise
            exact = 0.0
        elif lambda_max_hat < limit:
            exact = keep / (batch * k) * float(variant.noise_response(normalized).sum())
        else:
            exact = math.inf
    else:
        if ntk_trace is None:
            raise ValueError("`ntk_trace` is required when `ntk_eigenvalues` is not given.")
        trace_hat = _non_negative(ntk_trace, "ntk_trace") / n
        # Without λ_max only the trace-based lower bound is known: upper bound and ratio are unknown.
        lambda_max_hat = (
            math.nan if ntk_lambda_max is None else _non_negative(ntk_lambda_max, "ntk_lambda_max") / n
        )

    ratio = lambda_max_hat / limit
    scale = keep * trace_hat / (batch * k)  # 𝒦 = scale · (a weighted mean of g over the spectrum), no decay
    # Decay: ψ(λ) = λ²/(λ + ŵ) is convex, so Σψ over the m = n·K eigenvalues is at least m ψ(tr/m) (Jensen),
    # and ψ(λ) ≤ λ · λ̂_max/(λ̂_max + ŵ) below λ̂_max.
    spread = trace_hat / (trace_hat + n * k * decay) if trace_hat > 0 else 0.0
    if variant.step == 0.0:
        lower = upper = 0.0
    elif math.isnan(ratio) or ratio >= 1.0:
        # without λ_max the dip of g may lie anywhere below the limit
        low, _ = variant.gain_range(decay, curvature_limit, closed=False)
        lower, upper = scale * spread * low, math.inf
    else:
        low, high = variant.gain_range(decay, lambda_max_hat + decay)
        top_share = lambda_max_hat / (lambda_max_hat + decay) if lambda_max_hat > 0 else 0.0
        lower, upper = scale * spread * low, scale * top_share * high
    if ratio >= 1.0 or (exact if exact is not None else lower) >= 1.0:
        stable: bool | None = False
    elif (exact if exact is not None else upper) < 1.0:
        stable = True
    else:
        stable = None
    return SGDStability(
        noise_kernel_norm=exact,
        noise_kernel_norm_lower=lower,
        noise_kernel_norm_upper=upper,
        edge_of_stability_ratio=ratio,
        stable=stable,
    )
