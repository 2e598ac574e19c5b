"""Extreme eigenpairs of a symmetric operator by the Lanczos iteration with full reorthogonalisation.

Only products ``v ↦ A v`` are needed (a Hessian-vector product, for instance). Starting from
``q_1 = v_0 / ‖v_0‖`` the iteration builds an orthonormal basis ``V_j = [q_1, …, q_j]`` of the Krylov
space ``span{v_0, A v_0, …, A^{j−1} v_0}`` and the tridiagonal ``T_j = V_jᵀ A V_j``::

    w = A q_j;  α_j = q_jᵀ w;  w ← w − α_j q_j − β_j q_{j−1};  w ← w − V_j (V_jᵀ w);
    β_{j+1} = ‖w‖;  q_{j+1} = w / β_{j+1}

so that ``A V_j = V_j T_j + β_{j+1} q_{j+1} e_jᵀ``. Orthogonalising ``w`` against the *whole* basis
(classical Gram–Schmidt) instead of only against ``q_j, q_{j−1}`` costs ``O(j·dim)`` per step but prevents
the loss of orthogonality that makes plain Lanczos return spurious copies of converged eigenvalues
(Paige 1971; Parlett 1998, ch. 13). The three-term recurrence first removes the large components exactly,
so one Gram–Schmidt pass usually suffices; a second pass runs when the first one shrank ``w`` below
``1/√2`` of its norm (the DGKS criterion of Daniel, Gragg, Kaufman & Stewart 1976, as in ARPACK), which
keeps the basis orthonormal to working precision at half the memory traffic of two passes every step.

Rayleigh–Ritz. ``T_j = S diag(θ) Sᵀ`` is solved in float64 on the CPU by :func:`small_eigh` (torch's
``eigh``, which shares torch's thread pool; ``j`` is small).
The Ritz pairs ``(θ_i, V_j s_i)`` approximate eigenpairs of ``A`` and their residual norms are known without
extra products: ``‖A V_j s_i − θ_i V_j s_i‖ = |β_{j+1}| · |s_{j,i}|`` (the last component of ``s_i``). These
*estimates* are what ``residuals`` reports; they equal the explicit residuals up to rounding.

Convergence. A Ritz pair is converged when its residual estimate is ``<= max(tol·|θ_i|, noise)``, where
``noise = min(10·sqrt(dim)·ε, sqrt(ε))·‖T_j‖`` is the rounding level below which residuals cannot be
resolved (``ε`` the machine epsilon of the working dtype). Convergence is checked after every step once
``j >= k``, and beyond 32 steps every ``⌊j/16⌋`` steps (at most ~6% extra products; the small ``eigh``
starts to cost more than a cheap product there).

Invariant subspaces and restarts. A Krylov space holds a single direction of each eigenspace, so the
recurrence itself never produces the second copy of a repeated eigenvalue. When the current Krylov space
becomes invariant -- ``β_{j+1}`` at the rounding level, or so small that every Ritz pair of the current
block has a residual at the rounding level; a ``β_{j+1}`` that collapsed (at most ``√ε·‖A q_j‖``) counts up to
``1000·ε·‖T_j‖``, since an operator's own rounding (a Hessian-vector product's sums over a batch and through
layers) leaves more than a dot product's -- its Ritz pairs are eigenpairs and the rest of the spectrum lives
in the orthogonal complement. The iteration then restarts from a Gaussian vector orthogonalised against the basis (``T``
becomes block diagonal). The dropped coupling is kept in the residual estimates, which become
``Σ_b β_b |s_{e_b,i}|`` over the last rows ``e_b`` of the blocks: still a bound on the true residual in exact
arithmetic. The run stops when all ``k`` wanted pairs are converged and

* the current block is not invariant and its own most wanted Ritz pair has converged (for the first block
  this is the usual Lanczos criterion; after a restart it is the same evidence -- extreme Ritz values find
  the extreme eigenvalues first -- that the complement holds nothing more wanted), unless that pair repeats
  a value of the earlier blocks and is more wanted than the ``k``-th: another copy of a repeated eigenvalue,
  so the block runs on until it is invariant and the next restart looks for a further copy, or
* the current block is invariant, the earlier blocks already supply ``k`` Ritz values and this block's most
  wanted value is not better than the ``k``-th of them.

So exact multiplicities are found (a top eigenvalue of multiplicity 2 with ``k = 2`` on a low-rank operator
costs about 5 products) and an operator of rank ``r`` finishes after about ``r + 2`` products. The price is
paid by a start vector that is, to within ``tol``, an eigenvector: the complement is then checked as
thoroughly as a cold start would check the whole space (a stale warm start at the second eigenvector still
returns the top one). A start vector merely close to an eigenvector converges in a few products. Like every
single-vector Krylov method, copies of a repeated eigenvalue are found only through such invariant
subspaces: if the ``k`` wanted Ritz values converge before the first Krylov space becomes invariant (an
operator with many distinct eigenvalues whose top one is repeated, e.g. the Hessian of ``nn.Linear(20, 4)``
under MSE, every eigenvalue four times among 21 distinct ones), the copies are missed, as with ARPACK; so are
they if it does not become invariant within ``max_iter`` steps. When
``j`` reaches ``dim`` the result is exact.

Cost: ``num_matvecs`` products, ``O(max_iter·dim)`` memory for the basis.

Example::

    >>> import torch
    >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> res = lanczos(lambda v: A @ v, dim=100, k=2, max_iter=100, dtype=torch.float64,
    ...               generator=torch.Generator().manual_seed(0))
    >>> [round(x, 6) for x in res.eigenvalues.tolist()], res.converged
    ([100.0, 99.0], True)
"""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from ._checks import NonFiniteError, check_int, resolve_dtype_device
from ._inner_products import InnerProducts, ShardSum
from ._matvec import Matvec, apply_matvec, check_matvec
from .results import LanczosResult

__all__ = ["WHICH", "Which", "lanczos"]

#: Which end of the spectrum: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude.
Which = Literal["LA", "SA", "LM"]
WHICH: tuple[Which, ...] = get_args(Which)
# Daniel, Gragg, Kaufman & Stewart (1976): reorthogonalise again when a pass leaves less than 1/√2 of the norm.
_DGKS = 1.0 / math.sqrt(2.0)


def _noise_level(dim: int, dtype: torch.dtype) -> float:
    """Relative rounding level of a length-``dim`` computation in ``dtype`` (see module docstring)."""
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
    """Run up to ``max_steps`` Lanczos steps with full reorthogonalisation from ``v0`` (the one implementation
    of the recurrence in this package; used by :func:`lanczos` and :func:`~lightning_spectral.linalg.slq_density`).

    After each step except the last, ``policy(state)`` (default: always ``CONTINUE``) decides whether to stop,
    continue the recurrence or restart. The run restarts -- from a Gaussian vector drawn from ``generator``
    and orthogonalised against the basis, with the coupling to the previous block set to zero -- when the
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
        # whole basis then removes what rounding left, and a second pass runs only if that one cancelled
        # more than 1 - 1/√2 of the norm (the DGKS criterion, as in ARPACK).
        w = torch.addcmul(w, alpha, q, value=-1.0)  # out of place: `w` may be storage the matvec owns
        if j > 0 and (j - 1) not in state.restarts:
            w.add_(basis[j - 1], alpha=-state.betas[-1])
        local_norm = inner.norm(w)
        w = inner.project_out(w, basis[: j + 1].mT, passes=1)
        beta = inner.norm(w)
        alpha_f, beta_f, w_norm_f, local_f = torch.stack([alpha, beta, w_norm, local_norm]).tolist()
        if beta_f < _DGKS * local_f:
            w = inner.project_out(w, basis[: j + 1].mT, passes=1)
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
                raise RuntimeError("Lanczos restart vector vanished after orthogonalisation.")
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
    float64 NumPy arrays)."""
    theta, S = small_eigh(state.tridiagonal() if T is None else T)
    if not state.restarts:  # one block: the classical estimate |β_{j+1}|·|s_{j,i}|
        return theta, S, abs(state.betas[-1]) * np.abs(S[-1])
    ends = state.block_ends
    betas = np.asarray(state.betas, dtype=np.float64)[ends]
    residuals = (betas[:, None] * np.abs(S[ends])).sum(axis=0)
    return theta, S, residuals


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


def lanczos(
    matvec: Matvec,
    dim: int,
    k: int,
    *,
    max_iter: int | None = None,
    tol: float = 1e-6,
    v0: Tensor | None = None,
    which: Which = "LA",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    shard_sum: ShardSum | None = None,
) -> LanczosResult:
    """``k`` extreme eigenpairs of the symmetric operator ``v ↦ matvec(v)`` (see the module docstring).

    Args:
        matvec: maps a 1-D tensor of length ``dim`` to a 1-D tensor of length ``dim`` (same dtype/device).
            It must represent a symmetric matrix. It receives a copy of the basis vector.
        dim: size of the operator (``>= 1``).
        k: number of eigenpairs, ``1 <= k <= dim``.
        max_iter: maximum number of products with the operator (``>= k``); values above ``dim`` are
            clamped to ``dim``. Default ``min(dim, max(2k + 20, 40))``.
        tol: relative residual tolerance ``> 0``: pair ``i`` is converged when its residual estimate is
            ``<= max(tol·|θ_i|, noise)``.
        v0: optional start vector of shape ``(dim,)`` (e.g. the previous top eigenvector, for a warm start);
            its dtype and device are used. Default: a Gaussian vector from ``generator``.
        which: ``"LA"`` largest algebraic (descending), ``"SA"`` smallest algebraic (ascending) or ``"LM"``
            largest magnitude (descending ``|θ|``).
        dtype: working dtype when ``v0`` is not given (default ``torch.get_default_dtype()``).
        device: working device when ``v0`` is not given (default CPU).
        generator: source of the start and restart vectors; ``None`` uses the global torch RNG. Must live
            on the working device.
        shard_sum: for an operator whose vectors are sharded over processes: the all-reduce sum of a tensor of
            partial inner products (:mod:`~lightning_spectral.linalg._inner_products`); ``dim``, ``v0`` and
            ``matvec``'s vectors are then this process's shard, ``k`` and ``max_iter`` refer to the whole
            operator, and the eigenvectors returned are this process's rows. Default ``None``: whole vectors.

    Returns:
        :class:`LanczosResult` with eigenvalues ``(k,)``, orthonormal eigenvectors ``(dim, k)`` and residual
        estimates ``(k,)`` in the working dtype, the number of products and whether all ``k`` converged.
    """
    check_matvec(matvec)
    inner = InnerProducts(shard_sum)
    local_dim = check_int("dim", dim, 0 if inner.sharded else 1)
    start = _resolve_start(local_dim, v0, dtype, device, generator, inner)
    dim = inner.size(local_dim, start.device)
    k = check_int("k", k, 1)
    if k > dim:
        raise ValueError(f"`k` must satisfy 1 <= k <= dim = {dim}, got {k}.")
    if max_iter is None:
        max_iter = min(dim, max(2 * k + 20, 40))
    else:
        max_iter = check_int("max_iter", max_iter, 1)
        if max_iter < k:
            raise ValueError(f"`max_iter` must be >= k = {k}, got {max_iter}.")
        max_iter = min(max_iter, dim)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"`tol` must be a positive finite number, got {tol!r}.")
    if which not in WHICH:
        raise ValueError(f"`which` must be one of {WHICH}, got {which!r}.")
    noise = _noise_level(dim, start.dtype)

    def thresholds(values: np.ndarray, scale: float) -> np.ndarray:
        return np.maximum(tol * np.abs(values), noise * scale)

    def policy(state: _LanczosState) -> _Action:
        j = state.num_steps
        scheduled = j <= 32 or (j - k) % max(1, j // 16) == 0
        if j < k or not (state.breakdown or scheduled):
            return _Action.CONTINUE
        T = state.tridiagonal()
        theta, S, residuals = _ritz(state, T)
        scale = max(float(np.abs(theta).max()), state.anorm)
        wanted = _order(theta, which)[:k]
        wanted_converged = bool((residuals[wanted] <= thresholds(theta[wanted], scale)).all())
        first = state.block_start
        if first == 0:  # one block: its Ritz pairs and residuals are the ones above
            block_theta, block_residuals = theta, residuals
        else:
            block_theta, block_S = small_eigh(T[first:, first:])
            block_residuals = abs(state.betas[-1]) * np.abs(block_S[-1])
        block_converged = block_residuals <= thresholds(block_theta, scale)
        best = int(_order(block_theta, which)[0])
        # Invariant means at the rounding level, not merely within `tol`: a warm start close to the top
        # eigenvector converges in a step or two and must not trigger a search of the complement.
        block_invariant = state.breakdown or bool((block_residuals <= noise * scale).all())
        if not block_invariant:
            # The block's own extreme Ritz pair must have converged too: for the first block it is among the
            # wanted ones; after a restart it is the evidence that the complement holds nothing more wanted.
            if not (wanted_converged and bool(block_converged[best])):
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
        is more wanted than the current ``k``-th: then more copies may displace wanted values."""
        kth = float(theta[wanted[-1]])
        earlier, _ = small_eigh(T_earlier, eigenvectors=False)
        margin = max(tol * abs(value), noise * scale)
        repeats = bool((np.abs(earlier - value) <= margin).any())
        return repeats and _better(value, kth, max(tol * abs(kth), margin), which)

    state = _lanczos_tridiagonal(matvec, start, max_iter, generator=generator, policy=policy, inner=inner)
    theta, S, residuals = _ritz(state)
    scale = max(float(np.abs(theta).max()), state.anorm)
    wanted = _order(theta, which)[:k]
    converged = bool((residuals[wanted] <= thresholds(theta[wanted], scale)).all())
    j = state.num_steps

    def working(values: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(values)).to(dtype=start.dtype, device=start.device)

    eigenvectors = state.basis[:j].mT @ working(S[:, wanted])
    return LanczosResult(
        eigenvalues=working(theta[wanted]),
        eigenvectors=eigenvectors,
        residuals=working(residuals[wanted]),
        num_matvecs=j,
        converged=converged,
    )
