"""The stochastic edge of stability of SGD (Agarwala & Pennington 2024, arXiv:2404.19261).

Full-batch gradient descent on a quadratic is stable iff ``η λ_max < 2`` (the edge of stability, Cohen et al.
2021). Agarwala & Pennington show that mini-batch SGD has a second, *stochastic* edge of stability (S-EOS),
set by the norm ``𝒦`` of the "noise kernel" of the second-moment dynamics; at small batch sizes it is
governed by the trace of the NTK rather than by its top eigenvalue. The criterion below is re-derived in
their setting, with every normalisation stated, and checked in the tests against the second-moment
recursion it comes from and against simulated SGD on both sides of the edge.

Setting (assumptions). A linearised model ``f(θ) = f(θ₀) + J (θ − θ₀)`` (the NTK regime) on ``D`` training
examples with ``K`` outputs each; residuals ``z = f − y ∈ R^N``, ``N = D·K``; the MSE mini-batch loss
``L_S = (1/(2B)) Σ_{i∈S} ‖f(x_i) − y_i‖²``; plain SGD with learning rate ``η``; each example in the batch
independently with probability ``β = B/D``. With ``Θ = J Jᵀ`` (``N × N``) and ``Θ̂ = Θ / D`` (the
Gauss–Newton matrix ``JᵀJ/D`` of the full-batch loss has the same non-zero eigenvalues):

    z_{t+1} = (I − (η/β) Θ̂ P_t) z_t,        P_t = diag of the Bernoulli(β) inclusion of each example,
    E z_{t+1} = (I − η Θ̂) E z_t                                  → stable iff η λ_max(Θ̂) < 2,
    M_{t+1} = (I − ηΘ̂) M_t (I − ηΘ̂) + η² (1/β − 1) Θ̂ bdiag(M_t) Θ̂,     M_t = E[z_t z_tᵀ].

In high dimension, with eigenvectors of Θ̂ delocalised over the examples (the random-rotation model),
``bdiag(M) ≈ (tr M / N) I``, and the diagonal ``m_α`` of ``M`` in the eigenbasis of Θ̂ (eigenvalues ``λ_α``)
follows a diagonal-plus-rank-one non-negative linear map

    m_α ← (1 − ηλ_α)² m_α + (η² (1/β − 1) / N) λ_α² Σ_γ m_γ.

When every ``|1 − ηλ_α| < 1`` its spectral radius is below 1 iff the noise-kernel norm

    𝒦 = ((1 − β)/(β N)) Σ_α ηλ_α / (2 − ηλ_α) = ((1 − B/D)/(B·K)) Σ_α ηλ_α / (2 − ηλ_α)

is below 1. **The S-EOS is 𝒦 = 1**; SGD (in this model) is stable iff ``ηλ_max(Θ̂) < 2`` and ``𝒦 < 1``.
For ``ηλ_max ≪ 2`` every term is ``≈ ηλ_α/2``, so ``𝒦 ≈ (1 − B/D) η tr(Θ̂) / (2BK)`` with
``tr(Θ̂) = tr(Θ)/D`` the mean per-example NTK trace: the trace, divided by the batch size, sets the edge.
Because ``x/2 ≤ x/(2 − x) ≤ x/(2 − ηλ_max)`` on ``[0, ηλ_max]``, the trace and ``λ_max`` alone bound it:

    𝒦_lower = (1 − B/D) η tr(Θ̂) / (2BK)  ≤  𝒦  ≤  𝒦_lower · 2 / (2 − ηλ_max(Θ̂)) = 𝒦_upper.

In practice Θ̂ is estimated on a measurement batch of ``n`` examples: ``Θ̂ ≈ Θ_n / n`` (``ntk_num_examples
= n``). ``tr(Θ_n)/n`` is an unbiased estimate of the mean per-example trace, so ``𝒦_lower`` is unbiased. The
eigenvalues of ``Θ_n / n`` are not: when ``n·K`` is below the rank of the training-set NTK, its spectrum
is compressed into ``n·K`` eigenvalues (one example with ``K = 1`` gives the single eigenvalue ``‖J_1‖²``),
so ``λ_max`` and the exact 𝒦 are biased upwards for small ``n``, like any mini-batch sharpness. Measure
them on a batch large enough for ``λ_max(Θ_n/n)`` to have settled. ``dataset_size=None`` means ``D ≫ B``
(``1 − B/D = 1``).

Loss normalisation: ``lr`` is the step size on ``(1/(2B)) Σ_i ‖f(x_i) − y_i‖²``. For a loss ``c`` times that,
pass ``loss_scale=c``: ``torch.nn.MSELoss()`` (mean over the ``B·K`` entries, no ½) is ``loss_scale = 2/K``.
The effective step ``η = lr · loss_scale`` enters every formula.

Example::

    >>> s = sgd_stability(lr=0.5, batch_size=1, ntk_num_examples=2, num_outputs=2,
    ...                   ntk_eigenvalues=torch.tensor([4.0, 2.0, 1.0, 0.0]))
    >>> round(s.noise_kernel_norm, 6), s.noise_kernel_norm_lower, s.noise_kernel_norm_upper  # 𝒦 = 31/42
    (0.738095, 0.4375, 0.875)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SGDStability", "sgd_stability"]


@dataclass(frozen=True)
class SGDStability:
    """The S-EOS indicator and the full-batch edge-of-stability ratio (see the module docstring).

    ``noise_kernel_norm`` is 𝒦 (``None`` when only the trace and ``λ_max`` were given); the bounds always
    hold (``noise_kernel_norm_upper`` is ``inf`` when ``ηλ_max ≥ 2``). ``edge_of_stability_ratio`` is
    ``ηλ_max(Θ̂)/2``. ``stable`` is True when ``ratio < 1`` and 𝒦 (or, without the spectrum, its upper bound)
    ``< 1``; False when ``ratio ≥ 1`` or 𝒦 (or its lower bound) ``≥ 1``; ``None`` when the bounds straddle 1.
    """

    noise_kernel_norm: float | None
    noise_kernel_norm_lower: float
    noise_kernel_norm_upper: float
    edge_of_stability_ratio: float
    stable: bool | None


def _positive(value: object, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
    return float(value)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def _non_negative(value: object, name: str) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{name}` must be a non-negative finite number, got {value!r}.")
    return float(value)


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
) -> SGDStability:
    """The S-EOS noise-kernel norm 𝒦 of SGD with step ``lr`` and batch size ``batch_size``.

    Give either ``ntk_eigenvalues`` (eigenvalues of the raw NTK ``Θ = J Jᵀ`` of ``ntk_num_examples``
    examples; zeros may be left out; exact 𝒦) or both ``ntk_trace`` and ``ntk_lambda_max`` of that same raw
    NTK (bounds on 𝒦 only), as returned by ``ntk_trace(...).trace`` and ``ntk_lambda_max``. ``num_outputs``
    is ``K``, ``dataset_size`` the training-set size ``D`` (``None``: ``D ≫ B``), ``loss_scale`` the factor
    between the loss and ``(1/(2B)) Σ‖f − y‖²`` (``2/K`` for ``torch.nn.MSELoss()``). See the module docstring
    for the formula and its assumptions.
    """
    eta = _positive(lr, "lr") * _positive(loss_scale, "loss_scale")
    batch = _positive_int(batch_size, "batch_size")
    n = _positive_int(ntk_num_examples, "ntk_num_examples")
    k = _positive_int(num_outputs, "num_outputs")
    if dataset_size is not None and (_positive_int(dataset_size, "dataset_size") < batch):
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
        if eta * lambda_max_hat < 2.0:
            x = eta * normalized
            exact = keep / (batch * k) * float((x / (2.0 - x)).sum())
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

    ratio = eta * lambda_max_hat / 2.0
    lower = keep * eta * trace_hat / (2.0 * batch * k)
    if math.isnan(ratio):
        upper = math.inf
    else:
        upper = lower * 2.0 / (2.0 - eta * lambda_max_hat) if ratio < 1.0 else math.inf
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
