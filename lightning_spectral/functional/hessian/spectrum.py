"""Extreme eigenvalues, trace and spectral density of a loss Hessian, from exact Hessian-vector products.

- :func:`hessian_eigenvalues`: the ``k`` extreme eigenpairs by Lanczos
  (:func:`lightning_spectral.linalg.lanczos`) on a
  :class:`~lightning_spectral.functional.hessian.operator.HessianOperator`. With ``which="LA"`` they are
  ``λ_1 ≥ λ_2 ≥ … ≥ λ_k``, the top of the spectrum; ``λ_1 = λ_max`` is the *sharpness*, which under
  full-batch gradient descent with step ``η`` rises (progressive sharpening) until it hovers at ``2/η``
  (the edge of stability, Cohen et al. 2021). ``which="SA"`` gives the most negative eigenvalues (saddle
  directions), ``"LM"`` the largest in magnitude. Each pair comes with its residual ``‖Hv − λv‖``.
- :func:`hessian_trace`: ``tr H = Σ_i λ_i`` by Hutch++ (default) or Hutchinson, with a standard error.
- :func:`hessian_density`: the eigenvalue density ``φ(t) = (1/P) Σ_i δ(t − λ_i)`` by stochastic Lanczos
  quadrature, as nodes ``θ`` and weights ``w`` (all weights sum to one) with
  ``E[Σ w f(θ)] = (1/P) Σ_i f(λ_i)`` for every polynomial ``f`` of degree ``< 2·num_steps``.

Each takes ``(model, loss_fn, batch)`` (one batch; see ``HessianOperator`` for ``params`` and ``hvp_method``,
whose default here is double backward: these estimators take many products, each cheapest through one kept
gradient graph)
or a ready ``operator=`` instead, to average several batches (:meth:`HessianOperator.from_batches`), to use a
distributed ``reduce_fn``, or to share one operator (and its cached gradient graphs) between estimators.
Randomness (start vector, probes) comes only from ``generator``; ``None`` uses the global torch RNG. A
generator must live on the parameters' device.

Example::

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> batch = (torch.randn(32, 4), torch.randn(32, 1))
    >>> loss_fn = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
    >>> result = hessian_eigenvalues(model, loss_fn, batch, k=2, generator=torch.Generator().manual_seed(0))
    >>> result.eigenvalues.shape, bool(result.eigenvalues[0] >= result.eigenvalues[1])
    (torch.Size([2]), True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_spectral.functional._common.parameter_selection import ParamSpec
from lightning_spectral.functional.hessian.finite_difference import FiniteDifferenceHessian
from lightning_spectral.functional.hessian.operator import (
    HVP_METHODS,
    SOLVER_HVP_METHOD,
    HessianOperator,
    LossFn,
)
from lightning_spectral.linalg import (
    WHICH,
    SpectralDensity,
    TraceEstimate,
    Which,
    guarded_start,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    slq_density,
)

TRACE_METHODS = ("hutchpp", "hutchinson")

__all__ = [
    "TRACE_METHODS",
    "WHICH",
    "HessianEigenResult",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_trace",
    "warm_start_vector",
]


class HessianEigenResult(NamedTuple):
    """The result of :func:`hessian_eigenvalues`.

    Attributes:
        eigenvalues: ``(k,)``, ordered as ``which`` asks (``"LA"``: descending; ``"SA"``: ascending;
            ``"LM"``: descending magnitude).
        eigenvectors: ``(P, k)`` orthonormal, column ``i`` belonging to ``eigenvalues[i]``; flattened like
            the operator's ``layout``.
        residuals: ``(k,)`` residual norms ``‖H v_i − λ_i v_i‖`` (Lanczos estimates).
        num_hvps: operator products spent (each is one Hessian-vector product per batch of the operator).
        converged: whether every residual met ``tol``.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    num_hvps: int
    converged: bool


Operator = HessianOperator | FiniteDifferenceHessian


def _resolve_operator(
    operator: Operator | None,
    model: nn.Module | None,
    loss_fn: LossFn | None,
    batch: Any,
    params: ParamSpec,
    hvp_method: str | None,
) -> Operator:
    """``operator`` if given (then ``model``, ``loss_fn``, ``batch``, ``params`` and ``hvp_method`` must be
    left out), else a new operator on the one ``batch`` (``hvp_method=None``: :data:`SOLVER_HVP_METHOD`)."""
    if hvp_method is not None and hvp_method not in HVP_METHODS:
        raise ValueError(f"`hvp_method` must be one of {HVP_METHODS}, got {hvp_method!r}.")
    if operator is not None:
        if not isinstance(operator, (HessianOperator, FiniteDifferenceHessian)):
            raise TypeError(
                f"`operator` must be a HessianOperator or a FiniteDifferenceHessian, got {type(operator).__name__}."
            )
        given = [
            name
            for name, value in (("model", model), ("loss_fn", loss_fn), ("batch", batch))
            if value is not None
        ]
        if params is not None:
            given.append("params")
        if hvp_method is not None:
            given.append("hvp_method")
        if given:
            raise ValueError(f"`operator` was given together with {given}: pass one or the other.")
        return operator
    if model is None or loss_fn is None or batch is None:
        raise ValueError("Pass `model`, `loss_fn` and `batch`, or a ready `operator`.")
    # Used and dropped inside the call: no parameter copy needed (the model cannot change meanwhile).
    method = SOLVER_HVP_METHOD if hvp_method is None else hvp_method
    return HessianOperator(model, loss_fn, batch, params=params, method=method, copy_params=False)


def warm_start_vector(v0: Tensor, operator: Operator, generator: torch.Generator | None = None) -> Tensor:
    """The single Lanczos start vector made from a warm start ``v0``, in the operator's dtype and device.

    ``v0`` is a flat vector ``(P,)`` (e.g. the previous top eigenvector) or a block ``(P, j)`` of previous
    eigenvectors, which is reduced to the sum of its columns: that vector has a component along each of them,
    so the Krylov space recovers all ``j`` in a few steps while the spectrum moves slowly between calls (a
    single-vector Lanczos cannot start from a block). An equal share of a Gaussian vector from ``generator``
    is added (:func:`lightning_spectral.linalg.guarded_start`): without it, an eigenvalue that rose past the
    old top (a crossing) would go unseen.
    """
    if not isinstance(v0, Tensor) or v0.ndim not in (1, 2) or v0.shape[0] != operator.dim:
        shape = tuple(v0.shape) if isinstance(v0, Tensor) else type(v0).__name__
        raise ValueError(f"`v0` must have shape ({operator.dim},) or ({operator.dim}, j), got {shape}.")
    v0 = v0.detach().to(dtype=operator.dtype, device=operator.device)
    warm = v0.sum(dim=1) if v0.ndim == 2 else v0
    # over every shard for a sharded operator: each rank decides the same
    checks = torch.stack([(~torch.isfinite(warm)).sum().double(), warm.double().square().sum()])
    nonfinite, squared = (checks if operator.shard_sum is None else operator.shard_sum(checks)).tolist()
    if nonfinite > 0 or not squared > 0:
        raise ValueError("`v0` must be a finite warm start whose columns do not sum to zero.")
    return guarded_start(warm, generator, shard_sum=operator.shard_sum)


def hessian_eigenvalues(
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    batch: Any = None,
    k: int = 1,
    *,
    which: Which = "LA",
    tol: float = 1e-3,
    max_iter: int = 50,
    v0: Tensor | None = None,
    params: ParamSpec = None,
    hvp_method: str | None = None,
    generator: torch.Generator | None = None,
    operator: Operator | None = None,
    preconditioner: Tensor | None = None,
    weight_decay: float | Tensor | None = None,
) -> HessianEigenResult:
    """The ``k`` extreme eigenpairs of the loss Hessian by Lanczos with full reorthogonalisation.

    Args:
        model, loss_fn, batch: the loss ``loss_fn(model, batch)`` (or pass ``operator``).
        k: number of eigenpairs, ``1 <= k <= P``.
        which: ``"LA"`` largest algebraic (default), ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude.
        tol: stop when every residual ``‖Hv − λv‖ <= tol·|λ|`` (or at the rounding level).
        max_iter: at most this many Hessian-vector products (``>= k``; clamped to ``P``).
        v0: warm start, ``(P,)`` or ``(P, j)`` previous eigenvectors (see :func:`warm_start_vector`);
            default a Gaussian vector from ``generator``.
        params: parameter selection of the operator built here (see :class:`HessianOperator`).
        hvp_method: its HVP method, ``"double_backward"`` (default: the gradient graph is built once and every
            product is one more backward pass through it, 2–3× faster than forward-over-reverse on CPU and on
            an eager GPU in ``benchmarks/RESULTS.md``), ``"forward_over_reverse"`` (keeps no graph between
            products) or ``"auto"`` (the operator's default: forward-over-reverse where :mod:`torch.func` can
            transform the loss).
        generator: source of the start (and restart) vectors; ``None`` uses the global torch RNG.
        operator: a ready :class:`HessianOperator` instead of ``model``/``loss_fn``/``batch``/``params``, or a
            :class:`~lightning_spectral.functional.hessian.finite_difference.FiniteDifferenceHessian` (products by
            central differences on sharded vectors; ``v0`` and the eigenvectors are then this rank's shards).
        preconditioner: a positive vector ``d`` of length ``P`` (``+inf`` entries allowed: coordinates that do
            not move), the diagonal of an optimizer's preconditioner ``D`` (the step is ``−η D⁻¹ m``; Adam's:
            :func:`~lightning_spectral.functional.adaptive_preconditioning`). The eigenvalues are then those of the
            *preconditioned Hessian* ``D⁻¹H``, computed as those of the symmetric ``D^{-1/2} H D^{-1/2}``
            (similar to ``D⁻¹H``), which Lanczos needs; the eigenvectors and residuals are that operator's
            (``D^{-1/2} w`` is an eigenvector of ``D⁻¹H``), and a warm start ``v0`` is in its coordinates too
            (a previous preconditioned result's eigenvectors). Default ``None``: the Hessian itself.
        weight_decay: coupled L2 weight decay ``w`` (a number, or a ``(P,)`` tensor of non-negative values, one
            per coordinate): the eigenvalues are those of ``H + diag(w)`` (with a preconditioner, of
            ``D⁻¹(H + diag(w))``), the curvature an optimizer with that ``weight_decay`` steps along
            (:attr:`~lightning_spectral.functional.PreconditionedStep.weight_decay`). Default ``None``: none.

    Returns:
        :class:`HessianEigenResult`.
    """
    if which not in WHICH:
        raise ValueError(f"`which` must be one of {WHICH}, got {which!r}.")
    op = _resolve_operator(operator, model, loss_fn, batch, params, hvp_method)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= op.size:
        raise ValueError(
            f"`k` must be an integer with 1 <= k <= dim = {op.size} (the parameter count), got {k!r}."
        )
    if isinstance(max_iter, int) and not isinstance(max_iter, bool) and max_iter < k:
        raise ValueError(
            f"`max_iter` must be >= k = {k} (Lanczos takes at least k products), got {max_iter}; its default is "
            "50, so pass a larger `max_iter` for k > 50."
        )
    start = None if v0 is None else warm_start_vector(v0, op, generator)
    matvec = _shifted(op, preconditioner, weight_decay)
    before = op.num_matvecs
    result = lanczos(
        matvec,
        op.dim,
        k,
        max_iter=max_iter,
        tol=tol,
        v0=start,
        which=which,
        dtype=op.dtype,
        device=op.device,
        generator=generator,
        shard_sum=op.shard_sum,
    )
    return HessianEigenResult(
        result.eigenvalues, result.eigenvectors, result.residuals, op.num_matvecs - before, result.converged
    )


def _shifted(
    op: HessianOperator, preconditioner: Tensor | None, weight_decay: float | Tensor | None
) -> Callable[[Tensor], Tensor]:
    """``v ↦ D^{-1/2} (H + W) D^{-1/2} v`` (``D = I`` without a preconditioner, ``W = diag(weight_decay)``), similar
    to ``D⁻¹(H + W)``; an entry ``D = +inf`` zeroes its row and column (a coordinate the optimizer does not move)."""
    d = None if preconditioner is None else _checked_preconditioner(op, preconditioner)
    w = None if weight_decay is None else _checked_weight_decay(op, weight_decay)
    if d is None and w is None:
        return op.matvec
    scale = None if d is None else d.rsqrt()  # 0 where d = +inf
    shift = None if w is None else (w if d is None else w / d)  # W D⁻¹: 0 where d = +inf

    def matvec(v: Tensor) -> Tensor:
        out = op.matvec(v) if scale is None else scale * op.matvec(scale * v)
        return out if shift is None else out + shift * v

    return matvec


def _checked_preconditioner(op: HessianOperator, preconditioner: object) -> Tensor:
    """``preconditioner`` as a positive ``(P,)`` tensor in the operator's dtype and device (``+inf`` allowed)."""
    if not isinstance(preconditioner, Tensor) or preconditioner.shape != (op.dim,):
        shape = (
            tuple(preconditioner.shape)
            if isinstance(preconditioner, Tensor)
            else type(preconditioner).__name__
        )
        raise ValueError(f"`preconditioner` must be a tensor of shape ({op.dim},), got {shape}.")
    d = preconditioner.detach().to(dtype=op.dtype, device=op.device)
    if not bool((d > 0).all()):  # NaN fails this too
        raise ValueError(
            "`preconditioner` must be positive everywhere (a diagonal D whose inverse is used; +inf marks a "
            "coordinate the optimizer does not move)."
        )
    return d


def _checked_weight_decay(op: HessianOperator, weight_decay: object) -> Tensor:
    """``weight_decay`` (a number or a ``(P,)`` tensor) as a finite, non-negative ``(P,)`` tensor."""
    if isinstance(weight_decay, Tensor):
        if weight_decay.shape != (op.dim,):
            raise ValueError(
                f"`weight_decay` must be a number or a tensor of shape ({op.dim},), got {tuple(weight_decay.shape)}."
            )
        w = weight_decay.detach().to(dtype=op.dtype, device=op.device)
    elif isinstance(weight_decay, (int, float)) and not isinstance(weight_decay, bool):
        w = torch.full((op.dim,), float(weight_decay), dtype=op.dtype, device=op.device)
    else:
        raise ValueError(f"`weight_decay` must be a number or a tensor, got {type(weight_decay).__name__}.")
    if not bool((w >= 0).all()) or not bool(torch.isfinite(w).all()):
        raise ValueError("`weight_decay` must be finite and non-negative.")
    return w


def hessian_trace(
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    batch: Any = None,
    *,
    num_matvecs: int = 30,
    method: str = "hutchpp",
    params: ParamSpec = None,
    hvp_method: str | None = None,
    generator: torch.Generator | None = None,
    operator: Operator | None = None,
) -> TraceEstimate:
    """``tr H`` from ``num_matvecs`` Hessian-vector products.

    ``method="hutchpp"`` (default, ``num_matvecs >= 3``): Hutch++, exact once ``num_matvecs >= P``;
    ``"hutchinson"``: the plain Rademacher estimator ``(1/n) Σ zᵀHz``. Both are unbiased and return a
    :class:`~lightning_spectral.linalg.TraceEstimate` ``(estimate, std_error, num_matvecs)``. The other
    arguments are as in :func:`hessian_eigenvalues`.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"`method` must be one of {TRACE_METHODS}, got {method!r}.")
    op = _resolve_operator(operator, model, loss_fn, batch, params, hvp_method)
    estimator = hutchpp_trace if method == "hutchpp" else hutchinson_trace
    return estimator(
        op.matvec,
        op.dim,
        num_matvecs,
        dtype=op.dtype,
        device=op.device,
        generator=generator,
        shard_sum=op.shard_sum,
    )


def hessian_density(
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    batch: Any = None,
    *,
    num_probes: int = 4,
    num_steps: int = 30,
    params: ParamSpec = None,
    hvp_method: str | None = None,
    generator: torch.Generator | None = None,
    operator: Operator | None = None,
) -> SpectralDensity:
    """The Hessian eigenvalue density by stochastic Lanczos quadrature.

    ``num_probes`` Rademacher probes ``z`` (drawn first from ``generator``), ``m = min(num_steps, P)`` Lanczos
    steps (and products) each. Returns a :class:`~lightning_spectral.linalg.SpectralDensity` with nodes and
    weights of shape ``(num_probes, m)``, all weights summing to one. The quadrature reproduces the moments
    of each probe exactly: ``Σ w θ^p = mean_z zᵀ H^p z / P`` for ``p < 2m``, so the first moment is
    Hutchinson's estimate of ``tr(H)/P``. Other arguments as in :func:`hessian_eigenvalues`."""
    op = _resolve_operator(operator, model, loss_fn, batch, params, hvp_method)
    return slq_density(
        op.matvec,
        op.dim,
        num_probes=num_probes,
        num_steps=num_steps,
        dtype=op.dtype,
        device=op.device,
        generator=generator,
        shard_sum=op.shard_sum,
    )
