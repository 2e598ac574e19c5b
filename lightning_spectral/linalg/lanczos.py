"""Extreme eigenpairs of a symmetric operator by the Lanczos iteration with full reorthogonalization."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args, overload

import numpy as np
import torch
from torch import Tensor

from lightning_spectral._internal.deprecation import renamed_keywords
from lightning_spectral._internal.validation import (
    ArgumentTypeError,
    NonFiniteError,
    check_choice,
    check_int,
    check_positive_finite,
    resolve_dtype_device,
)

from ._inner_products import InnerProducts, ShardSum
from ._matvec import Matvec, apply_matvec
from .operator import LinearOperator, resolve_operator
from .results import Eigenpairs

__all__ = ["WHICH", "Which", "lanczos"]

#: Which end of the spectrum: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude.
Which = Literal["LA", "SA", "LM"]
WHICH: tuple[Which, ...] = get_args(Which)
# Daniel, Gragg, Kaufman & Stewart (1976): reorthogonalize again when a pass leaves less than 1/√2 of the norm.
_DGKS = 1.0 / math.sqrt(2.0)


def _noise_level(dim: int, dtype: torch.dtype) -> float:
    """Relative rounding level of a length-``dim`` computation in ``dtype`` (see the docs' implementation notes)."""
    eps = torch.finfo(dtype).eps
    return min(10.0 * math.sqrt(dim) * eps, math.sqrt(eps))


#: A ``β`` that *collapsed* -- at most ``√ε`` times ``‖A q_j‖`` -- marks an invariant Krylov space up to this
#: many ε of ``‖T‖``: an operator's own rounding (a Hessian-vector product sums over a batch and through layers)
#: leaves more than the ``noise`` of a plain dot product once the space is invariant (measured: β ≈ 120ε·‖A‖
#: for the Hessian of ``nn.Linear(5, 3)``, whose every eigenvalue is triple, against ``noise`` = 42ε there).
#: Without the collapse a small ``β`` is only the slow decay of a spectrum's tail (a Gram matrix ``WᵀW``
#: whose small eigenvalues lie below 1000ε in float32): restarting there would restart at every step.
_INVARIANCE_EPS = 1e3


def _invariance_level(dim: int, dtype: torch.dtype) -> float:
    """Relative size of a collapsed ``β`` at which the Krylov space is taken as invariant (see above)."""
    return max(_noise_level(dim, dtype), _INVARIANCE_EPS * torch.finfo(dtype).eps)


@overload
def small_eigh(T: np.ndarray, *, eigenvectors: Literal[True] = True) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def small_eigh(T: np.ndarray, *, eigenvectors: Literal[False]) -> tuple[np.ndarray, None]: ...
@overload
def small_eigh(T: np.ndarray, *, eigenvectors: bool) -> tuple[np.ndarray, np.ndarray | None]: ...
def small_eigh(T: np.ndarray, *, eigenvectors: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Eigen-decomposition of a small symmetric float64 matrix (a Lanczos tridiagonal) on the CPU.

    Solved by ``torch.linalg.eigh`` rather than ``numpy.linalg.eigh``: NumPy's bundled OpenBLAS keeps a
    thread pool of its own, and interleaving its calls with torch's threaded products makes the two pools
    wait on each other: a small ``numpy.linalg.eigh`` between torch's matrix products then costs many times
    the same solve through torch. ``torch.linalg.eigh`` runs in torch's pool and gives the same results to
    rounding.

    Args:
        T: a symmetric ``(j, j)`` float64 array.
        eigenvectors: also return the eigenvectors (``False``: values only, second entry ``None``).

    Returns:
        ``(theta, S)``: ascending eigenvalues ``(j,)`` and orthonormal eigenvectors ``(j, j)`` as columns
        (float64 NumPy arrays).
    """
    matrix = torch.from_numpy(np.ascontiguousarray(T, dtype=np.float64))
    if not eigenvectors:
        return torch.linalg.eigvalsh(matrix).numpy(), None
    theta, S = torch.linalg.eigh(matrix)
    return theta.numpy(), S.numpy()


class _Action(enum.Enum):
    """What the Lanczos core does after a step."""

    CONTINUE = "continue"
    RESTART = "restart"
    STOP = "stop"


@dataclass
class _LanczosState:
    """The state of a (possibly restarted) Lanczos run after ``num_steps`` steps.

    ``basis[:num_steps]`` holds the orthonormal Lanczos vectors as rows. ``alphas[i]`` is the diagonal of
    ``T``; ``betas[i]`` is the norm of the residual after step ``i`` (``β_{i+1}``). ``restarts`` lists the steps
    after which the run broke down and continued with a fresh random vector: the coupling between steps
    ``i`` and ``i+1`` is zero there, so ``T`` is block diagonal.
    """

    basis: Tensor
    alphas: list[float] = field(default_factory=list)
    betas: list[float] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)
    breakdown: bool = False
    anorm: float = 0.0

    @property
    def num_steps(self) -> int:
        return len(self.alphas)

    @property
    def block_start(self) -> int:
        """First step of the current block (the one started by the most recent restart)."""
        return self.restarts[-1] + 1 if self.restarts else 0

    @property
    def block_ends(self) -> list[int]:
        """Last step of every block; the residual of the Ritz pairs is carried by these rows."""
        return [*self.restarts, self.num_steps - 1]

    def tridiagonal(self) -> np.ndarray:
        """``T`` as a dense float64 NumPy matrix (small: NumPy's per-call cost is a fraction of torch's)."""
        j = self.num_steps
        T = np.diag(np.asarray(self.alphas, dtype=np.float64))
        if j > 1:
            coupling = np.asarray(self.betas[: j - 1], dtype=np.float64)
            coupling[self.restarts] = 0.0
            rows = np.arange(j - 1)
            T[rows, rows + 1] = coupling
            T[rows + 1, rows] = coupling
        return T


def _lanczos_tridiagonal(
    matvec: Matvec,
    v0: Tensor,
    max_steps: int,
    *,
    generator: torch.Generator | None = None,
    policy: Callable[[_LanczosState], _Action] | None = None,
    inner: InnerProducts | None = None,
) -> _LanczosState:
    """Run up to ``max_steps`` Lanczos steps with full reorthogonalization from ``v0`` (the one implementation
    of the recurrence in this package; used by :func:`lanczos` and :func:`~lightning_spectral.linalg.slq_density`).

    After each step except the last, ``policy(state)`` (default: always ``CONTINUE``) decides whether to stop,
    continue the recurrence or restart. The run restarts -- from a Gaussian vector drawn from ``generator``
    and orthogonalized against the basis, with the coupling to the previous block set to zero -- when the
    policy asks for it or when ``β`` is at the rounding level (``state.breakdown``), where ``w/β`` would be
    noise. ``max_steps`` is clamped to ``dim``. ``inner``: the inner products of sharded vectors
    (:mod:`~lightning_spectral.linalg._inner_products`; ``v0`` is then this process's shard).
    """
    inner = InnerProducts() if inner is None else inner
    local_dim = v0.shape[0]
    dim = inner.size(local_dim, v0.device)
    max_steps = min(max_steps, dim)
    basis = torch.empty(max_steps, local_dim, dtype=v0.dtype, device=v0.device)
    basis[0] = v0 / inner.norm(v0)
    state = _LanczosState(basis=basis)
    noise = _noise_level(dim, v0.dtype)
    invariance = _invariance_level(dim, v0.dtype)
    collapse = math.sqrt(torch.finfo(v0.dtype).eps)
    for j in range(max_steps):
        q = basis[j]
        w = apply_matvec(matvec, q)
        alpha = inner.dot(q, w)
        w_norm = inner.norm(w)
        # The three-term recurrence removes the large components exactly; one Gram-Schmidt pass against the
        # whole basis then removes what rounding left, and a second pass runs only if that one canceled
        # more than 1 - 1/√2 of the norm (the DGKS criterion, as in ARPACK).
        w = torch.addcmul(w, alpha, q, value=-1.0)  # out of place: `w` may be storage the matvec owns
        if j > 0 and (j - 1) not in state.restarts:
            w.add_(basis[j - 1], alpha=-state.betas[-1])
        local_norm = inner.norm(w)
        w = inner.project_out(w, basis[: j + 1].mT, num_passes=1)
        beta = inner.norm(w)
        alpha_f, beta_f, w_norm_f, local_f = torch.stack([alpha, beta, w_norm, local_norm]).tolist()
        if beta_f < _DGKS * local_f:
            w = inner.project_out(w, basis[: j + 1].mT, num_passes=1)
            beta_f = float(inner.norm(w))
        if not (math.isfinite(alpha_f) and math.isfinite(beta_f) and math.isfinite(w_norm_f)):
            raise NonFiniteError(f"`matvec` returned non-finite values at Lanczos step {j + 1}.")
        state.anorm = max(state.anorm, w_norm_f, abs(alpha_f))
        state.alphas.append(alpha_f)
        state.betas.append(beta_f)
        collapsed = beta_f <= collapse * w_norm_f and beta_f <= invariance * state.anorm
        state.breakdown = beta_f <= noise * state.anorm or collapsed
        if j + 1 == max_steps:
            break
        action = _Action.CONTINUE if policy is None else policy(state)
        if action is _Action.STOP:
            break
        if action is _Action.RESTART or state.breakdown:
            fresh = torch.randn(local_dim, dtype=v0.dtype, device=v0.device, generator=generator)
            fresh = inner.project_out(fresh, basis[: j + 1].mT)
            fresh_norm = inner.norm(fresh)
            if not float(fresh_norm) > 0.0:  # pragma: no cover - j + 1 < dim leaves a non-trivial complement
                raise RuntimeError("Lanczos restart vector vanished after orthogonalization.")
            basis[j + 1] = fresh / fresh_norm
            state.restarts.append(j)
        else:
            basis[j + 1] = w / beta_f  # the norm after the second pass, when there was one
    return state


def _order(theta: np.ndarray, which: Which) -> np.ndarray:
    """Indices sorting Ritz values from most to least wanted (stable: ties keep their order)."""
    if which == "LA":
        return np.argsort(-theta, kind="stable")
    if which == "SA":
        return np.argsort(theta, kind="stable")
    return np.argsort(-np.abs(theta), kind="stable")


def _better(a: float, b: float, margin: float, which: Which) -> bool:
    """Whether Ritz value ``a`` is more wanted than ``b`` by more than ``margin``."""
    if which == "LA":
        return a > b + margin
    if which == "SA":
        return a < b - margin
    return abs(a) > abs(b) + margin


def _ritz(state: _LanczosState, T: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ritz values, eigenvectors of ``T`` (``state.tridiagonal()`` unless given) and residual estimates (all
    float64 NumPy arrays).
    """
    theta, S = small_eigh(state.tridiagonal() if T is None else T)
    if not state.restarts:  # one block: the classical estimate |β_{j+1}|·|s_{j,i}|
        return theta, S, abs(state.betas[-1]) * np.abs(S[-1])
    ends = state.block_ends
    betas = np.asarray(state.betas, dtype=np.float64)[ends]
    residuals = (betas[:, None] * np.abs(S[ends])).sum(axis=0)
    return theta, S, residuals


def eigenvalue_error_bounds(theta: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Gap-based bounds ``min(r_i, r_i²/δ_i)`` on the eigenvalue errors of Ritz pairs (see :func:`lanczos`,
    *Eigenvalue tolerance*): ``δ_i = min_{j≠i} (|θ_i − θ_j| − r_j)``; where ``δ_i <= r_i`` (or no other Ritz
    value exists) the bound is ``r_i`` alone.

    Args:
        theta: Ritz values ``(j,)``.
        residuals: their residual norms ``(j,)``.

    Returns:
        ``(j,)`` float64 bounds.
    """
    theta = np.asarray(theta, dtype=np.float64)
    residuals = np.asarray(residuals, dtype=np.float64)
    if theta.size < 2:
        return residuals.copy()
    distances = np.abs(theta[:, None] - theta[None, :]) - residuals[None, :]
    np.fill_diagonal(distances, np.inf)
    gaps = distances.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        quadratic = np.where(gaps > residuals, residuals**2 / gaps, np.inf)
    return np.minimum(residuals, quadratic)


def _resolve_start(
    dim: int,
    v0: Tensor | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
    generator: torch.Generator | None,
    inner: InnerProducts,
) -> Tensor:
    """The starting vector: ``v0`` (validated) or a Gaussian vector in ``dtype`` on ``device``."""
    if v0 is None:
        dtype, device = resolve_dtype_device(dtype, device)
        return torch.randn(dim, dtype=dtype, device=device, generator=generator)
    if not isinstance(v0, Tensor) or v0.shape != (dim,):
        shape = tuple(v0.shape) if isinstance(v0, Tensor) else type(v0).__name__
        raise ValueError(f"`v0` must be a tensor of shape (dim,) = ({dim},), got {shape}.")
    if not v0.is_floating_point():
        raise ValueError(f"`v0` must have a floating-point dtype, got {v0.dtype}.")
    if dtype is not None and dtype != v0.dtype:
        raise ValueError(f"`dtype` ({dtype}) conflicts with `v0.dtype` ({v0.dtype}); pass one of them.")
    if device is not None and torch.device(device) != v0.device:
        raise ValueError(f"`device` ({device}) conflicts with `v0.device` ({v0.device}); pass one of them.")
    norm = float(inner.norm(v0))
    if not (math.isfinite(norm) and norm > 0.0):
        raise ValueError("`v0` must be a finite, non-zero vector.")
    return v0.detach()


@renamed_keywords(max_iter="max_matvecs")
def lanczos(
    matvec: Matvec | LinearOperator | Tensor,
    dim: int | None = None,
    k: int | None = None,
    *,
    max_matvecs: int | None = None,
    tol: float = 1e-6,
    v0: Tensor | None = None,
    which: Which = "LA",
    eigenvalue_tol: float | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    shard_sum: ShardSum | None = None,
) -> Eigenpairs:
    r"""``k`` extreme eigenpairs of the symmetric operator ``v ↦ matvec(v)``.

    Lanczos with full reorthogonalization: from ``q_1 = v_0/‖v_0‖`` it builds an orthonormal basis ``V_j``
    of the Krylov space and the tridiagonal ``T_j = V_jᵀ A V_j``, whose eigenpairs (Ritz pairs) approximate
    those of ``A``. Pair ``i`` is converged when its residual estimate

    .. math::

        \|A V_j s_i - \theta_i V_j s_i\| = |\beta_{j+1}| \, |s_{j,i}|

    is at most ``max(tol·|θ_i|, noise)``. An invariant Krylov space restarts the iteration from a vector
    orthogonal to the basis, so repeated eigenvalues are found (see the docs' implementation notes for the rules).

    With ``eigenvalue_tol`` a pair is also converged when an a-posteriori bound on its *eigenvalue* error is
    small enough. For a Rayleigh quotient ``θ`` with residual ``r`` and an eigenvalue ``λ`` that is the only one
    within ``δ`` of ``θ`` (Kato 1949, Temple 1929; Parlett 1998, ch. 11; Bai et al. 2000, §4.8),

    .. math::

        |\theta - \lambda| \le \min\big(r, \; r^2/\delta\big),

    quadratic in the residual. The gap is estimated from the neighbouring Ritz values, each moved towards
    ``θ_i`` by its own residual, ``δ_i = min_{j≠i} (|θ_i − θ_j| − r_j)``, and the quadratic bound is used only
    when ``δ_i > r_i``. It is the usual gap estimate of Lanczos codes, not a certificate: it assumes the Ritz
    values already separate the wanted eigenvalue from its neighbours (a nearly repeated eigenvalue gives a
    close Ritz value, a small ``δ``, and keeps the iteration going).

    Args:
        matvec: the symmetric operator: a function mapping a 1-D tensor of length ``dim`` to a 1-D tensor of
            length ``dim`` (same dtype/device; it receives a copy of the basis vector), a
            :class:`~lightning_spectral.linalg.LinearOperator` (e.g. a ``HessianOperator``) or a dense matrix.
        dim: size of the operator (``>= 1``); required for a function, read from an operator or matrix.
        k: number of eigenpairs, ``1 <= k <= dim`` (required).
        max_matvecs: maximum number of products with the operator (``>= k``); values above ``dim`` are
            clamped to ``dim``. Default ``min(dim, max(2k + 20, 40))``.
        tol: relative residual tolerance ``> 0``: pair ``i`` is converged when its residual estimate is
            ``<= max(tol·|θ_i|, noise)``.
        v0: optional start vector of shape ``(dim,)`` (e.g. the previous top eigenvector, for a warm start);
            its dtype and device are used. Default: a Gaussian vector from ``generator``.
        which: ``"LA"`` largest algebraic (descending), ``"SA"`` smallest algebraic (ascending) or ``"LM"``
            largest magnitude (descending ``|θ|``).
        eigenvalue_tol: optional relative tolerance ``> 0`` on the eigenvalues alone: pair ``i`` is also
            converged when its gap-based error bound ``min(r_i, r_i²/δ_i) <= eigenvalue_tol·|θ_i|`` (above). Far fewer products when eigenvectors need not be accurate to
            ``tol``. Default ``None``: the residual test alone.
        dtype: working dtype when ``v0`` is not given (default ``torch.get_default_dtype()``).
        device: working device when ``v0`` is not given (default CPU).
        generator: source of the start and restart vectors; ``None`` uses the global torch RNG. Must live
            on the working device.
        shard_sum: for an operator whose vectors are sharded over processes: the all-reduce sum of a tensor of
            partial inner products (:mod:`~lightning_spectral.linalg._inner_products`); ``dim``, ``v0`` and
            ``matvec``'s vectors are then this process's shard, ``k`` and ``max_matvecs`` refer to the whole
            operator, and the eigenvectors returned are this process's rows. Default ``None``: whole vectors.

    Returns:
        :class:`Eigenpairs` with eigenvalues ``(k,)``, orthonormal eigenvectors ``(dim, k)`` and residual
        estimates ``(k,)`` in the working dtype, the number of products and whether all ``k`` converged.

    Raises:
        ValueError: ``dim``, ``k``, ``max_matvecs``, ``tol``, ``which`` or ``v0`` out of range.
        NonFiniteError: a product is NaN or infinite.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
        >>> res = lanczos(lambda v: A @ v, dim=100, k=2, max_matvecs=100, dtype=torch.float64,
        ...               generator=torch.Generator().manual_seed(0))
        >>> [round(x, 6) for x in res.eigenvalues.tolist()], res.converged
        ([100.0, 99.0], True)
    """
    matvec, dim, dtype, device = resolve_operator(
        matvec, dim, dtype, device, allow_empty=shard_sum is not None
    )
    if k is None:
        raise ArgumentTypeError("lanczos() missing the argument `k` (the number of eigenpairs).")
    inner = InnerProducts(shard_sum)
    local_dim = dim
    start = _resolve_start(local_dim, v0, dtype, device, generator, inner)
    dim = inner.size(local_dim, start.device)
    k = check_int("k", k, 1)
    if k > dim:
        raise ValueError(f"`k` must satisfy 1 <= k <= dim = {dim}, got {k}.")
    if max_matvecs is None:
        max_matvecs = min(dim, max(2 * k + 20, 40))
    else:
        max_matvecs = check_int("max_matvecs", max_matvecs, 1)
        if max_matvecs < k:
            raise ValueError(f"`max_matvecs` must be >= k = {k}, got {max_matvecs}.")
        max_matvecs = min(max_matvecs, dim)
    check_positive_finite("tol", tol)
    check_choice("which", which, WHICH)
    if eigenvalue_tol is not None:
        check_positive_finite("eigenvalue_tol", eigenvalue_tol)
    noise = _noise_level(dim, start.dtype)

    def thresholds(values: np.ndarray, scale: float) -> np.ndarray:
        return np.maximum(tol * np.abs(values), noise * scale)

    def converged_pairs(
        theta: np.ndarray, residuals: np.ndarray, index: np.ndarray, scale: float
    ) -> np.ndarray:
        """Whether the pairs ``index`` passed the residual test or, with ``eigenvalue_tol``, the gap bound."""
        done = residuals[index] <= thresholds(theta[index], scale)
        if eigenvalue_tol is None:
            return done
        bounds = eigenvalue_error_bounds(theta, residuals)[index]
        return done | (bounds <= eigenvalue_tol * np.abs(theta[index]))

    def policy(state: _LanczosState) -> _Action:
        j = state.num_steps
        scheduled = j <= 32 or (j - k) % max(1, j // 16) == 0
        if j < k or not (state.breakdown or scheduled):
            return _Action.CONTINUE
        T = state.tridiagonal()
        theta, S, residuals = _ritz(state, T)
        scale = max(float(np.abs(theta).max()), state.anorm)
        wanted = _order(theta, which)[:k]
        wanted_converged = bool(converged_pairs(theta, residuals, wanted, scale).all())
        first = state.block_start
        if first == 0:  # one block: its Ritz pairs and residuals are the ones above
            block_theta, block_residuals = theta, residuals
        else:
            block_theta, block_S = small_eigh(T[first:, first:])
            block_residuals = abs(state.betas[-1]) * np.abs(block_S[-1])
        best = int(_order(block_theta, which)[0])
        block_converged = converged_pairs(block_theta, block_residuals, np.array([best]), scale)[0]
        # Invariant means at the rounding level, not merely within `tol`: a warm start close to the top
        # eigenvector converges in a step or two and must not trigger a search of the complement.
        block_invariant = state.breakdown or bool((block_residuals <= noise * scale).all())
        if not block_invariant:
            # The block's own extreme Ritz pair must have converged too: for the first block it is among the
            # wanted ones; after a restart it is the evidence that the complement holds nothing more wanted.
            if not (wanted_converged and bool(block_converged)):
                return _Action.CONTINUE
            if first > 0 and _another_copy(theta, wanted, T[:first, :first], float(block_theta[best]), scale):
                # a repeated eigenvalue: further copies lie beyond this block, found once it is invariant
                return _Action.CONTINUE
            return _Action.STOP
        # The current block is invariant: explore the complement unless the earlier blocks already hold k
        # Ritz values and this block added nothing better than the k-th of them.
        if not wanted_converged or first < k:
            return _Action.RESTART
        earlier, _ = small_eigh(T[:first, :first], eigenvectors=False)
        kth_earlier = float(earlier[_order(earlier, which)[k - 1]])
        margin = max(tol * abs(kth_earlier), noise * scale)
        if _better(float(block_theta[best]), kth_earlier, margin, which):
            return _Action.RESTART
        return _Action.STOP

    def _another_copy(
        theta: np.ndarray, wanted: np.ndarray, T_earlier: np.ndarray, value: float, scale: float
    ) -> bool:
        """Whether ``value`` (a restarted block's converged best) repeats a Ritz value of the earlier blocks and
        is more wanted than the current ``k``-th: then more copies may displace wanted values.
        """
        kth = float(theta[wanted[-1]])
        earlier, _ = small_eigh(T_earlier, eigenvectors=False)
        margin = max(tol * abs(value), noise * scale)
        repeats = bool((np.abs(earlier - value) <= margin).any())
        return repeats and _better(value, kth, max(tol * abs(kth), margin), which)

    state = _lanczos_tridiagonal(matvec, start, max_matvecs, generator=generator, policy=policy, inner=inner)
    theta, S, residuals = _ritz(state)
    scale = max(float(np.abs(theta).max()), state.anorm)
    wanted = _order(theta, which)[:k]
    converged = bool(converged_pairs(theta, residuals, wanted, scale).all())
    j = state.num_steps

    def working(values: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(values)).to(dtype=start.dtype, device=start.device)

    eigenvectors = state.basis[:j].mT @ working(S[:, wanted])
    return Eigenpairs(
        eigenvalues=working(theta[wanted]),
        eigenvectors=eigenvectors,
        residuals=working(residuals[wanted]),
        num_matvecs=j,
        converged=converged,
    )
