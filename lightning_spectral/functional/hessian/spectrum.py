"""Extreme eigenvalues, trace and spectral density of a loss Hessian, from exact Hessian-vector products."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from lightning_spectral._internal.deprecation import renamed_attribute, renamed_keywords
from lightning_spectral._internal.validation import check_choice, check_int
from lightning_spectral.functional._common.parameter_selection import ParamSpec
from lightning_spectral.functional.hessian.finite_difference import FiniteDifferenceHessian
from lightning_spectral.functional.hessian.operator import (
    HVP_METHODS,
    SOLVER_HVP_METHOD,
    HessianOperator,
    HVPMethod,
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

#: The stochastic trace estimator of :func:`hessian_trace`.
TraceMethod = Literal["hutchpp", "hutchinson"]
TRACE_METHODS: tuple[TraceMethod, ...] = get_args(TraceMethod)

__all__ = [
    "TRACE_METHODS",
    "TraceMethod",
    "WHICH",
    "HessianEigenpairs",
    "hessian_density",
    "hessian_eigenvalues",
    "hessian_trace",
    "warm_start_vector",
]


class HessianEigenpairs(NamedTuple):
    """The result of :func:`hessian_eigenvalues`.

    Attributes:
        eigenvalues: ``(k,)``, ordered as ``which`` asks (``"LA"``: descending; ``"SA"``: ascending;
            ``"LM"``: descending magnitude).
        eigenvectors: ``(P, k)`` orthonormal, column ``i`` belonging to ``eigenvalues[i]``; flattened like
            the operator's ``layout``.
        residuals: ``(k,)`` residual norms ``‖H v_i − λ_i v_i‖`` (Lanczos estimates).
        num_hvps: operator products spent (each is one Hessian-vector product per batch of the operator).
        converged: whether every residual met ``tol``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> batch = (torch.eye(2), torch.zeros(2, 1))
        >>> eigenvalues, eigenvectors, residuals, num_hvps, converged = hessian_eigenvalues(
        ...     model, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), batch, k=1)
        >>> eigenvectors.shape, converged
        (torch.Size([3, 1]), True)
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
    hvp_method: HVPMethod | None,
) -> Operator:
    """``operator`` if given (then ``model``, ``loss_fn``, ``batch``, ``params`` and ``hvp_method`` must be
    left out), else a new operator on the one ``batch`` (``hvp_method=None``: :data:`SOLVER_HVP_METHOD`).
    """
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


@renamed_keywords(max_iter="max_matvecs")
def hessian_eigenvalues(
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    batch: Any = None,
    k: int = 1,
    *,
    which: Which = "LA",
    tol: float = 1e-3,
    max_matvecs: int = 50,
    v0: Tensor | None = None,
    params: ParamSpec = None,
    hvp_method: HVPMethod | None = None,
    generator: torch.Generator | None = None,
    operator: Operator | None = None,
    preconditioner: Tensor | None = None,
    weight_decay: float | Tensor | None = None,
    eigenvalue_tol: float | None = None,
) -> HessianEigenpairs:
    r"""The ``k`` extreme eigenpairs of the loss Hessian by Lanczos with full reorthogonalization.

    The Hessian of ``L(θ) = loss_fn(model, batch)`` over the selected parameters ``θ ∈ R^P`` is never formed:
    Lanczos (:func:`~lightning_spectral.linalg.lanczos`) needs only the products ``v ↦ ∇²L(θ) v``. With a
    preconditioner ``D`` and coupled weight decay ``w`` the operator is

    .. math::

        D^{-1/2} \big(\nabla^2 L(\theta) + \operatorname{diag}(w)\big) D^{-1/2},

    which has the eigenvalues of ``D⁻¹(H + diag(w))``.

    Args:
        model: the network (left untouched; or pass ``operator``).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        batch: one batch, passed to ``loss_fn`` as it is.
        k: number of eigenpairs, ``1 <= k <= P``.
        which: ``"LA"`` largest algebraic (default), ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude.
        tol: stop when every residual ``‖Hv − λv‖ <= tol·|λ|`` (or at the rounding level).
        eigenvalue_tol: also stop when every eigenvalue's gap-based error bound ``min(r, r²/δ)`` is
            ``<= eigenvalue_tol·|λ|`` (``r`` the residual, ``δ`` the gap to the neighbouring Ritz values; see
            :func:`~lightning_spectral.linalg.lanczos`): the eigenvalues to that accuracy with far fewer products
            than the residual test asks, the eigenvectors less accurate. Default ``None``: the residual test alone.
        max_matvecs: at most this many Hessian-vector products (``>= k``; clamped to ``P``).
        v0: warm start, ``(P,)`` or ``(P, j)`` previous eigenvectors (see :func:`warm_start_vector`);
            default a Gaussian vector from ``generator``.
        params: parameter selection of the operator built here (see :class:`HessianOperator`).
        hvp_method: its HVP method, ``"double_backward"`` (default: the gradient graph is built once and every
            product is one more backward pass through it; faster than forward-over-reverse in the benchmarks),
            ``"forward_over_reverse"`` (keeps no graph between
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
        :class:`HessianEigenpairs`.

    Raises:
        ValueError: ``which``, ``k``, ``max_matvecs``, ``tol``, ``v0``, ``preconditioner``, ``weight_decay``
            or ``hvp_method`` out of range; ``operator`` given together with ``model``/``loss_fn``/``batch``.
        TypeError: ``operator`` is not a :class:`HessianOperator`.
        NonFiniteError: a Hessian-vector product is NaN or infinite.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> batch = (torch.randn(32, 4), torch.randn(32, 1))
        >>> loss_fn = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
        >>> result = hessian_eigenvalues(model, loss_fn, batch, k=2, generator=torch.Generator().manual_seed(0))
        >>> result.eigenvalues.shape, bool(result.eigenvalues[0] >= result.eigenvalues[1])
        (torch.Size([2]), True)
    """
    check_choice("which", which, WHICH)
    op = _resolve_operator(operator, model, loss_fn, batch, params, hvp_method)
    check_int("k", k, 1, maximum=op.size)  # at most the parameter count
    if isinstance(max_matvecs, int) and not isinstance(max_matvecs, bool) and max_matvecs < k:
        raise ValueError(
            f"`max_matvecs` must be >= k = {k} (Lanczos takes at least k products), got {max_matvecs}; its default is "
            "50, so pass a larger `max_matvecs` for k > 50."
        )
    start = None if v0 is None else warm_start_vector(v0, op, generator)
    matvec = _shifted(op, preconditioner, weight_decay)
    before = op.num_matvecs
    result = lanczos(
        matvec,
        op.dim,
        k,
        max_matvecs=max_matvecs,
        tol=tol,
        v0=start,
        which=which,
        eigenvalue_tol=eigenvalue_tol,
        dtype=op.dtype,
        device=op.device,
        generator=generator,
        shard_sum=op.shard_sum,
    )
    return HessianEigenpairs(
        result.eigenvalues, result.eigenvectors, result.residuals, op.num_matvecs - before, result.converged
    )


def _shifted(
    op: Operator, preconditioner: Tensor | None, weight_decay: float | Tensor | None
) -> Callable[[Tensor], Tensor]:
    """``v ↦ D^{-1/2} (H + W) D^{-1/2} v`` (``D = I`` without a preconditioner, ``W = diag(weight_decay)``), similar
    to ``D⁻¹(H + W)``; an entry ``D = +inf`` zeroes its row and column (a coordinate the optimizer does not move).
    """
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


def _checked_preconditioner(op: Operator, preconditioner: object) -> Tensor:
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


def _checked_weight_decay(op: Operator, weight_decay: object) -> Tensor:
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
    method: TraceMethod = "hutchpp",
    params: ParamSpec = None,
    hvp_method: HVPMethod | None = None,
    generator: torch.Generator | None = None,
    operator: Operator | None = None,
) -> TraceEstimate:
    """``tr H`` from ``num_matvecs`` Hessian-vector products.

    ``method="hutchpp"`` (default, ``num_matvecs >= 3``): Hutch++
    (:func:`~lightning_spectral.linalg.hutchpp_trace`), exact once ``num_matvecs >= P``; ``"hutchinson"``:
    the plain Rademacher estimator (:func:`~lightning_spectral.linalg.hutchinson_trace`). Both are unbiased.

    Args:
        model: the network (or pass ``operator``).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        batch: one batch, passed to ``loss_fn`` as it is.
        num_matvecs: the product budget.
        method: ``"hutchpp"`` or ``"hutchinson"``.
        params: parameter selection, as in :func:`hessian_eigenvalues`.
        hvp_method: the HVP method, as in :func:`hessian_eigenvalues`.
        generator: source of the probes; ``None`` uses the global torch RNG.
        operator: a ready :class:`HessianOperator` instead of ``model``/``loss_fn``/``batch``/``params``.

    Returns:
        :class:`~lightning_spectral.linalg.TraceEstimate` ``(estimate, std_error, num_matvecs)``.

    Raises:
        ValueError: ``method`` or ``num_matvecs`` out of range (and as :func:`hessian_eigenvalues`).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> batch = (torch.randn(16, 3), torch.randn(16, 1))
        >>> loss_fn = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
        >>> estimate = hessian_trace(model, loss_fn, batch, num_matvecs=4)  # >= P = 4: exact
        >>> dense = HessianOperator(model, loss_fn, batch).to_dense()
        >>> abs(estimate.estimate - dense.trace().item()) < 1e-4, estimate.std_error
        (True, 0.0)
    """
    check_choice("method", method, TRACE_METHODS)
    op = _resolve_operator(operator, model, loss_fn, batch, params, hvp_method)
    estimator = hutchpp_trace if method == "hutchpp" else hutchinson_trace
    return estimator(op, num_matvecs=num_matvecs, generator=generator, shard_sum=op.shard_sum)


def hessian_density(
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    batch: Any = None,
    *,
    num_probes: int = 4,
    num_steps: int = 30,
    params: ParamSpec = None,
    hvp_method: HVPMethod | None = None,
    generator: torch.Generator | None = None,
    operator: Operator | None = None,
) -> SpectralDensity:
    """The Hessian eigenvalue density by stochastic Lanczos quadrature.

    ``num_probes`` Rademacher probes ``z`` (drawn first from ``generator``), ``m = min(num_steps, P)`` Lanczos
    steps (and products) each. Returns a :class:`~lightning_spectral.linalg.SpectralDensity` with nodes and
    weights of shape ``(num_probes, m)``, all weights summing to one. The quadrature reproduces the moments
    of each probe exactly: ``Σ w θ^p = mean_z zᵀ H^p z / P`` for ``p < 2m``, so the first moment is
    Hutchinson's estimate of ``tr(H)/P``.

    Args:
        model: the network (or pass ``operator``).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        batch: one batch, passed to ``loss_fn`` as it is.
        num_probes: number of Rademacher probes (``>= 1``).
        num_steps: Lanczos steps per probe (``>= 1``, clamped to ``P``).
        params: parameter selection, as in :func:`hessian_eigenvalues`.
        hvp_method: the HVP method, as in :func:`hessian_eigenvalues`.
        generator: source of the probes; ``None`` uses the global torch RNG.
        operator: a ready :class:`HessianOperator` instead of ``model``/``loss_fn``/``batch``/``params``.

    Returns:
        :class:`~lightning_spectral.linalg.SpectralDensity`.

    Raises:
        ValueError: ``num_probes`` or ``num_steps`` out of range (and as :func:`hessian_eigenvalues`).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> batch = (torch.randn(16, 3), torch.randn(16, 1))
        >>> loss_fn = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
        >>> density = hessian_density(model, loss_fn, batch, num_probes=2, num_steps=4)
        >>> density.nodes.shape, round(float(density.weights.sum()), 6)
        (torch.Size([2, 4]), 1.0)
    """
    op = _resolve_operator(operator, model, loss_fn, batch, params, hvp_method)
    return slq_density(
        op, num_probes=num_probes, num_steps=num_steps, generator=generator, shard_sum=op.shard_sum
    )


# renamed classes: the old name still imports, with a DeprecationWarning
_RENAMED = {"HessianEigenResult": "HessianEigenpairs"}


def __getattr__(name: str) -> Any:
    return renamed_attribute(__name__, name, _RENAMED)
