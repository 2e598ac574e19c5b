"""Singular-value spectrum of weight matrices, and how it moves between two measurements.

Researchers follow the singular values and vectors of every weight matrix through training (Yunis et al.
2024, "Approaching Deep Learning through the Spectral Dynamics of Weights"; Martin & Mahoney's heavy-tailed
self-regularisation, the WeightWatcher tool). :func:`weight_spectrum` measures one matrix ``W ∈ R^{m×n}``
with ``r = min(m, n)`` singular values ``σ_1 ≥ … ≥ σ_r``; :func:`weight_spectra` measures many at once.

**Rank.** ``k`` (default :data:`DEFAULT_K` ``= 5``, clipped to ``r``) is the number of leading singular
triplets computed and kept: ``singular_values`` (``k``), ``left_vectors`` (``m×k``), ``right_vectors``
(``n×k``), the condition number of the top-``k`` block and the ``k``-dimensional subspace whose rotation is
measured. Ask for the ``k`` the agreement and rotation should cover; log as few values as you like.

**Methods.**

* ``"exact"``: ``torch.linalg.svd`` of the whole matrix, which yields all ``r`` singular values
  (``all_singular_values``): ``effective_rank`` is exact and the power-law exponent ``alpha`` is fitted.
* ``"randomized"``: :func:`lightning_spectral.linalg.randomized_svd` (Halko, Martinsson & Tropp 2011) with a
  sketch of ``l = k + oversample`` columns and ``n_iter`` power iterations, ``O(mnl·(2·n_iter + 2))`` work.
  Only the top ``k`` values are known, so ``effective_rank`` is an estimate and ``alpha`` is ``None``. When
  ``l ≥ r`` the sketch would not be cheaper than a dense SVD; the exact method is used (and reported).
  **Accuracy check:** the result's relative residual ``max_i ρ_i/σ_i`` (``ρ_i`` the residual of triplet
  ``i``; a true singular value lies within ``ρ_i/√2`` of ``σ_i``, and with a spectral gap the error is of
  order ``ρ_i²/gap``) is computed, and above ``tol`` (default ``1e-2``) the top ``k`` are recomputed by
  Lanczos on the Gram matrix, warm-started from the sketch
  (:mod:`lightning_spectral.functional.weights.singular_refinement`). This matters on flat spectra — a freshly
  initialised layer — where two power iterations leave ``σ_max`` 6–10 % low (residual ~0.2); on decaying
  spectra the check passes (1024², ``σ_i ∝ 1/i``: residual 5e-3, value error 1e-5) at the cost of two products
  with ``k`` vectors. ``relative_residual`` and ``refined`` report it.
* ``"auto"`` (default): exact when ``r ≤ exact_threshold``, randomized otherwise. The default threshold is
  ``3·(k + oversample)`` (45 for the defaults), the measured crossover: on a 2-core x86 CPU
  (torch 2.13, float32, median of 7 runs of ``torch.linalg.svd(W, full_matrices=False)`` against
  ``randomized_svd(W, k, n_iter=2)`` on square Gaussian matrices ``r = 32 … 192``, single and batches of 8,
  ``k ∈ {5, 10, 20}``, with 1 and 2 threads) the randomized method becomes faster at ``r ≈ 1.9–3.7·l``
  (``r = 40–56`` for ``l = 15``, ``r = 56–112`` for ``l = 30``); at ``r = 512`` it is 22× faster for
  ``k = 5``. Raise ``exact_threshold`` (or pass ``method="exact"``) to get exact effective ranks, ``alpha``
  and the rank measures below for larger layers, at the cost of a dense SVD (44 ms at 512², 0.3 s at 1024² on that CPU).

All work happens on a detached copy of the weight in float32 (float64 when the weight is float64), on the
weight's device; bf16/fp16 weights are upcast first. Non-finite weights raise ``ValueError``.

**Metrics** (``σ`` the singular values, ``‖W‖_F`` computed exactly from the weight itself):

* ``stable_rank = ‖W‖_F² / σ_1²`` (between 1 and ``r``; 0 for the zero matrix).
* ``effective_rank = exp(H(p))``, ``p_i = σ_i / Σ_j σ_j``, ``H(p) = −Σ p_i ln p_i`` (Roy & Vetterli 2007;
  0 for the zero matrix). It needs all ``r`` values. With only the top ``k`` known, the unknown tail mass
  ``‖W‖_F² − Σ_{i≤k} σ_i²`` (which *is* known) is spread evenly over the remaining ``r − k`` values,
  ``σ_tail = sqrt(mass / (r − k))``, and ``effective_rank_is_estimate`` is True. The estimate is exact for a
  flat tail; for a tail that decays it over-estimates (measured on 300×200 matrices, ``k = 5``: +12 % for
  ``σ_i ∝ i^{-1/2}``, +90 % for ``σ_i ∝ 1/i``). Use it for trends, or the exact method for the value. The
  monitor logs the estimate under its own key, ``effective_rank_estimate``, never as ``effective_rank``.
* ``condition_number = σ_1 / σ_k`` of the top-``k`` block (``inf`` when ``σ_k = 0``, NaN for the zero matrix;
  for a numerically rank-deficient matrix the computed ``σ_k`` is rounding noise and the ratio ``~1/eps``).
* ``alpha``: the maximum-likelihood power-law exponent of the tail of the eigenvalues ``λ_i = σ_i²`` of
  ``WᵀW`` (:func:`lightning_spectral.functional.weights.power_law.power_law_alpha`, ``x_min`` by KS distance), fitted
  only when all ``r`` values were computed and ``r ≥ min_tail`` (default 10); ``None`` (skipped) otherwise.
* ``stable_rank_ratio = stable_rank / r``; with all ``r`` values (exact method) also
  ``effective_rank_ratio = effective_rank / r``, ``mass90_count`` (the fewest leading values holding 90 % of
  ``Σσ``) and ``gini`` (the Gini coefficient of ``σ``), the rank measures of Yunis et al.
  (:mod:`~lightning_spectral.functional.weights.spectrum_metrics`); ``None`` after a randomized top-``k``.
* ``agreement`` against ``previous`` (an earlier spectrum of the same matrix): the per-index singular-vector
  agreement of Yunis et al., ``|⟨u_i, u_prev,i⟩ ⟨v_i, v_prev,i⟩|`` for ``i ≤ k' = min(k, k_prev)``, left *and*
  right vectors index by index (:func:`~lightning_spectral.functional.weights.singular_dynamics.singular_vector_agreement`;
  its score, the mean of the first 10, is what the monitor logs). It sees a swap of two singular values and a
  turn of the right vectors alone; it depends on how far apart the two measurements are.
* ``rotation`` against ``previous``: a different, coarser quantity, the drift of the top-``k'`` *left
  subspace*::

      rotation = 1 − ‖U_prevᵀ U‖_F² / k'  =  1 − (1/k') Σ_i cos² θ_i

  with ``θ_i`` the principal angles between the two subspaces: 0 when the subspace is unchanged, 1 when it
  was replaced by an orthogonal one. It is blind to the right vectors and to any reordering or rotation of the
  vectors inside the subspace (a swap of ``σ_1`` and ``σ_2``, or a turn of the right vectors alone, gives
  rotation 0 and agreement near 0), so it is not Yunis et al.'s measure; it is robust where ``agreement`` is
  noise, among (nearly) equal singular values. If ``σ_k ≈ σ_{k+1}`` the top-``k`` subspace itself is
  ill-defined and the number is noisy.

**Warm start.** With ``previous`` the randomized method starts its range finder from the previous right
singular vectors (``init=``) instead of a purely Gaussian sketch: while the weights change slowly the
previous top subspace is already almost right, and fewer power iterations (even ``n_iter=0``) reach the
accuracy a cold start needs several for. The exact method ignores it (rotation is still measured).

**Memory.** Each result keeps ``left_vectors`` and ``right_vectors`` (``(m + n)·k`` numbers in the compute
dtype, on the weight's device; 164 KB for a 4096×4096 layer at ``k = 5``) for the next warm start and
rotation, plus ``all_singular_values`` on the CPU for the exact method (``r`` numbers).

Example::

    >>> W = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
    >>> s = weight_spectrum(W, k=2)
    >>> s.singular_values.tolist(), s.method_used, round(s.stable_rank, 4)
    ([4.0, 3.0], 'exact', 1.875)
    >>> later = weight_spectrum(W, k=2, previous=s)
    >>> round(later.rotation, 6), later.agreement.tolist()
    (0.0, [1.0, 1.0])
    >>> swapped = weight_spectrum(torch.diag(torch.tensor([3.0, 4.0, 2.0, 1.0])), k=2, previous=s)
    >>> round(swapped.rotation, 6), swapped.agreement.tolist()  # σ_1 and σ_2 traded directions
    (0.0, [0.0, 0.0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from lightning_spectral._internal.validation import check_int
from lightning_spectral.functional.weights.power_law import DEFAULT_MIN_TAIL, PowerLawFit
from lightning_spectral.functional.weights.singular_dynamics import singular_vector_agreement
from lightning_spectral.functional.weights.singular_refinement import refine_truncated_svd, relative_residuals
from lightning_spectral.functional.weights.spectrum_metrics import summarise_singular_values
from lightning_spectral.linalg import NonFiniteError, randomized_svd
from lightning_spectral.linalg.device_fallback import on_cpu_if_unsupported
from lightning_spectral.linalg.randomized_svd import thin_svd

__all__ = [
    "CROSSOVER_FACTOR",
    "DEFAULT_K",
    "DEFAULT_TOL",
    "METHODS",
    "WeightSpectrum",
    "weight_spectra",
    "weight_spectrum",
]

#: Default number of leading singular triplets.
DEFAULT_K = 5
#: Default relative-residual tolerance of the randomized method's accuracy check.
DEFAULT_TOL = 1e-2
#: ``method="auto"`` uses the exact SVD while ``min(m, n) <= CROSSOVER_FACTOR * (k + oversample)``.
CROSSOVER_FACTOR = 3
#: Allowed values of ``method``.
WeightSpectrumMethod = Literal["auto", "exact", "randomized"]
METHODS: tuple[WeightSpectrumMethod, ...] = get_args(WeightSpectrumMethod)
# Largest number of matrix entries stacked into one batched decomposition (256 MB in float32).
_DEFAULT_MAX_BATCH_NUMEL = 1 << 26


@dataclass(frozen=True, eq=False)  # holds tensors: compared (and hashed) by identity
class WeightSpectrum:
    """Spectrum of one weight matrix (see the module docstring for the definitions).

    Attributes:
        singular_values: ``(k,)`` top singular values, descending, on the CPU, float32 (float64 for float64
            weights).
        left_vectors: ``(m, k)`` top left singular vectors (weight's device, compute dtype).
        right_vectors: ``(n, k)`` top right singular vectors (weight's device, compute dtype).
        all_singular_values: all ``min(m, n)`` singular values on the CPU (exact method), else ``None``.
        shape: ``(m, n)``.
        sigma_max: ``σ_1``, the spectral norm.
        frobenius_norm: ``‖W‖_F``, exact.
        stable_rank: ``‖W‖_F² / σ_1²``.
        effective_rank: ``exp`` of the entropy of ``σ / Σσ``.
        effective_rank_is_estimate: True when the tail of the spectrum was estimated (randomized method).
        condition_number: ``σ_1 / σ_k``.
        alpha: power-law exponent of the ESD tail, ``None`` when not fitted.
        power_law: the full fit behind ``alpha`` (``x_min``, KS distance, tail size), or ``None``.
        rotation: ``1 − ‖U_prevᵀ U‖_F² / k'``, the drift of the top-``k'`` left subspace since ``previous``
            (not Yunis et al.'s agreement, see ``agreement``); ``None`` without ``previous``.
        method_used: ``"exact"`` or ``"randomized"``.
        relative_residual: ``max_i ρ_i / σ_i`` of the top-``k`` triplets (randomized method; 0.0 for the exact
            one): every ``σ_i`` lies within ``ρ_i/√2`` of a true singular value (module docstring).
        refined: whether the randomized result failed the ``tol`` check and was recomputed by Lanczos.
        stable_rank_ratio: ``stable_rank / min(m, n)``.
        effective_rank_ratio: ``effective_rank / min(m, n)`` (exact method; ``None`` when estimated).
        mass90_count: fewest leading singular values holding 90 % of ``Σσ`` (exact method, else ``None``).
        gini: Gini coefficient of all singular values (exact method, else ``None``).
        agreement: ``(k',)`` per-index agreement ``|⟨u_i, u_prev,i⟩ ⟨v_i, v_prev,i⟩|`` with ``previous`` (CPU,
            float64); ``None`` without ``previous``.
    """

    singular_values: Tensor
    left_vectors: Tensor
    right_vectors: Tensor
    all_singular_values: Tensor | None
    shape: tuple[int, int]
    sigma_max: float
    frobenius_norm: float
    stable_rank: float
    effective_rank: float
    effective_rank_is_estimate: bool
    condition_number: float
    alpha: float | None
    power_law: PowerLawFit | None
    rotation: float | None
    method_used: str
    relative_residual: float = 0.0
    refined: bool = False
    # defaults keep the monitor's checkpoints of earlier versions loadable
    stable_rank_ratio: float | None = None
    effective_rank_ratio: float | None = None
    mass90_count: int | None = None
    gini: float | None = None
    agreement: Tensor | None = None


def _compute_dtype(weight: Tensor) -> torch.dtype:
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


def _check_previous(previous: object, shape: tuple[int, int], where: str) -> WeightSpectrum | None:
    if previous is None:
        return None
    if not isinstance(previous, WeightSpectrum):
        raise TypeError(f"`{where}` must be a WeightSpectrum or None, got {type(previous).__name__}.")
    if previous.shape != shape:
        raise ValueError(
            f"`{where}` is the spectrum of a {previous.shape} matrix, but the weight is {shape}."
        )
    return previous


def _check_matrix(weight: object, where: str) -> tuple[int, int]:
    if not isinstance(weight, Tensor):
        raise TypeError(f"`{where}` must be a torch.Tensor, got {type(weight).__name__}.")
    if weight.ndim != 2:
        raise ValueError(f"`{where}` must be a 2-D matrix, got shape {tuple(weight.shape)}.")
    if not weight.is_floating_point():
        raise TypeError(f"`{where}` must have a real floating-point dtype, got {weight.dtype}.")
    if weight.shape[0] == 0 or weight.shape[1] == 0:
        raise ValueError(f"`{where}` must be non-empty, got shape {tuple(weight.shape)}.")
    return int(weight.shape[0]), int(weight.shape[1])


def _decompose_chunk(
    stack: Tensor,
    frobenius: list[float],
    k: int,
    exact: bool,
    previous: list[WeightSpectrum | None],
    oversample: int,
    n_iter: int,
    generator: torch.Generator | None,
    min_tail: int,
    tol: float | None,
    warm_start: bool,
) -> list[WeightSpectrum]:
    """Decompose a batch ``(B, m, n)`` of equal-shape matrices (compute dtype) with Frobenius norms
    ``frobenius`` in one call."""
    batch, m, n = stack.shape
    earlier = [p for p in previous if p is not None]  # all or none within a chunk (see the grouping key)
    has_previous = bool(earlier)
    if exact:
        U, S, Vh = on_cpu_if_unsupported(thin_svd, stack)
        # copy the top-k out so that the full (B, m, r) / (B, r, n) factors can be freed
        U_k, Vh_k = U[..., :k].contiguous(), Vh[..., :k, :].contiguous()
        del U, Vh
    else:
        init = None
        guard = 0
        if has_previous and warm_start:
            init = torch.stack([p.right_vectors for p in earlier]).to(device=stack.device)
            # The previous vectors are nearly exact singular vectors of a slowly changing matrix: they pass the
            # residual check whether or not a direction outside them has grown into the top k, which that
            # check cannot see. So the sketch keeps a cold start's k + oversample Gaussian columns after them.
            guard = init.shape[-1]
        U_k, S, Vh_k = randomized_svd(
            stack, k, oversample=oversample + guard, n_iter=n_iter, init=init, generator=generator
        )
        if tol is not None:
            U_k, S, Vh_k, residuals, refined = refine_truncated_svd(
                stack, U_k, S, Vh_k, tol=tol, generator=generator
            )
        else:
            residuals, refined = relative_residuals(stack, U_k, S, Vh_k), [False] * batch

    rotation = agreement = None
    if has_previous:
        k_common = min(k, earlier[0].left_vectors.shape[1])
        U_prev = torch.stack([p.left_vectors[:, :k_common] for p in earlier]).to(stack.device, stack.dtype)
        V_prev = torch.stack([p.right_vectors[:, :k_common] for p in earlier]).to(stack.device, stack.dtype)
        overlap = torch.linalg.matrix_norm(U_prev.mT @ U_k[..., :k_common]) ** 2
        rotation = (1.0 - overlap / k_common).clamp_(min=0.0).cpu().tolist()
        agreement = singular_vector_agreement(U_k, Vh_k.mT, U_prev, V_prev).to("cpu", torch.float64)

    values = S.to(device="cpu")
    results = []
    for b in range(batch):
        metrics = summarise_singular_values(values[b], k, (m, n), frobenius[b], exact, min_tail)
        results.append(
            WeightSpectrum(
                singular_values=values[b, :k],
                left_vectors=U_k[b],
                right_vectors=Vh_k[b].mT,
                all_singular_values=values[b] if exact else None,
                shape=(m, n),
                rotation=None if rotation is None else rotation[b],
                agreement=None if agreement is None else agreement[b],
                method_used="exact" if exact else "randomized",
                relative_residual=0.0 if exact else float(residuals[b]),
                refined=False if exact else refined[b],
                **metrics,
            )
        )
    return results


def weight_spectra(
    matrices: Sequence[Tensor],
    k: int | None = None,
    *,
    method: WeightSpectrumMethod = "auto",
    previous: Sequence[WeightSpectrum | None] | None = None,
    n_iter: int = 2,
    oversample: int = 10,
    generator: torch.Generator | None = None,
    exact_threshold: int | None = None,
    min_tail: int = DEFAULT_MIN_TAIL,
    max_batch_numel: int = _DEFAULT_MAX_BATCH_NUMEL,
    tol: float | None = DEFAULT_TOL,
    warm_start: bool = True,
) -> list[WeightSpectrum]:
    """:func:`weight_spectrum` of many matrices; matrices of equal shape are decomposed in one batched call.

    Matrices are grouped by (shape, compute dtype, device, method, rank of ``previous``); each group is
    stacked (a copy, in the compute dtype) and decomposed by one batched ``torch.linalg.svd`` or
    :func:`~lightning_spectral.linalg.randomized_svd` call, split into chunks of at most ``max_batch_numel``
    stacked entries to bound the memory of the copy. Results come back in the order of ``matrices``. Groups
    are processed in order of first appearance, so a seeded ``generator`` gives reproducible results (the
    random sketches, hence the last digits of randomized results, depend on how the matrices were batched).

    Args:
        matrices: 2-D weight matrices (e.g. ``[w.matrix for w in weight_matrices(model)]``).
        k: leading singular triplets per matrix, clipped to ``min(m, n)``; default :data:`DEFAULT_K`.
        method: ``"auto"``, ``"exact"`` or ``"randomized"`` (module docstring).
        previous: earlier spectra aligned with ``matrices`` (``None`` entries allowed) for warm start and
            ``agreement`` and ``rotation``.
        n_iter: power iterations of the randomized method (``>= 0``).
        oversample: extra sketch columns of the randomized method (``>= 0``).
        generator: source of the randomized sketches, on the matrices' device; ``None`` uses the global
            torch RNG.
        exact_threshold: ``"auto"`` uses the exact method when ``min(m, n) <= exact_threshold``; default
            ``CROSSOVER_FACTOR·(k + oversample)``.
        min_tail: smallest ESD tail (and spectrum) for the ``alpha`` fit.
        max_batch_numel: cap on ``batch·m·n`` of one stacked call (``>= 1``; a single larger matrix still
            goes alone).
        tol: accuracy check of the randomized method: a result whose relative residual exceeds ``tol`` is
            recomputed by Lanczos (module docstring); ``None`` skips the check (raw randomized SVD).
        warm_start: seed the randomized range finder with ``previous``'s right singular vectors (followed by
            a cold start's Gaussian columns); ``False``: ``previous`` serves ``rotation`` only.

    Returns:
        One :class:`WeightSpectrum` per matrix.

    Raises:
        ValueError: bad ``k``, ``method``, ``n_iter``, ``oversample``, ``exact_threshold``, ``min_tail``,
            ``max_batch_numel``; a matrix that is not 2-D, empty, not finite (or whose norm overflows); ``previous`` of another
            shape or length.
        TypeError: a matrix that is not a real floating-point tensor, a ``previous`` that is not a spectrum.
    """
    if isinstance(matrices, Tensor) or not isinstance(matrices, Sequence):
        raise TypeError("`matrices` must be a sequence (list/tuple) of 2-D tensors.")
    if previous is not None and (not isinstance(previous, Sequence) or len(previous) != len(matrices)):
        raise ValueError(
            f"`previous` must be None or a sequence of the same length as `matrices` ({len(matrices)})."
        )
    return _spectra(
        matrices,
        [f"matrices[{i}]" for i in range(len(matrices))],
        [None] * len(matrices) if previous is None else list(previous),
        [f"previous[{i}]" for i in range(len(matrices))],
        k,
        method=method,
        n_iter=n_iter,
        oversample=oversample,
        generator=generator,
        exact_threshold=exact_threshold,
        min_tail=min_tail,
        max_batch_numel=max_batch_numel,
        tol=tol,
        warm_start=warm_start,
    )


def _spectra(
    matrices: Sequence[Tensor],
    labels: list[str],
    previous: list[WeightSpectrum | None],
    previous_labels: list[str],
    k: int | None,
    *,
    method: WeightSpectrumMethod,
    n_iter: int,
    oversample: int,
    generator: torch.Generator | None,
    exact_threshold: int | None,
    min_tail: int,
    max_batch_numel: int,
    tol: float | None,
    warm_start: bool = True,
) -> list[WeightSpectrum]:
    """Implementation of :func:`weight_spectra`; ``labels`` name the arguments in error messages."""
    if not isinstance(warm_start, bool):
        raise ValueError(f"`warm_start` must be True or False, got {warm_start!r}.")
    if tol is not None and (
        isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (0.0 < tol < 1.0)
    ):
        raise ValueError(f"`tol` must be None or a number strictly between 0 and 1, got {tol!r}.")
    if k is not None:
        k = check_int("k", k, 1)
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    n_iter = check_int("n_iter", n_iter, 0)
    oversample = check_int("oversample", oversample, 0)
    if exact_threshold is not None:
        check_int("exact_threshold", exact_threshold, 0)
    min_tail = check_int("min_tail", min_tail, 2)
    max_batch_numel = check_int("max_batch_numel", max_batch_numel, 1)

    groups: dict[tuple[Any, ...], list[int]] = {}
    plan: list[tuple[int, bool, WeightSpectrum | None]] = []
    for i, weight in enumerate(matrices):
        shape = _check_matrix(weight, labels[i])
        prev = _check_previous(previous[i], shape, previous_labels[i])
        r = min(shape)
        rank = min(DEFAULT_K if k is None else k, r)
        sketch_covers_all = rank + oversample >= r  # a sketch this large is no cheaper than the dense SVD
        if method == "exact" or sketch_covers_all:
            exact = True
        elif method == "randomized":
            exact = False
        else:
            threshold = CROSSOVER_FACTOR * (rank + oversample) if exact_threshold is None else exact_threshold
            exact = r <= threshold
        plan.append((rank, exact, prev))
        prev_rank = 0 if prev is None else prev.left_vectors.shape[1]
        key = (shape, _compute_dtype(weight), weight.device, rank, exact, prev_rank)
        groups.setdefault(key, []).append(i)

    results: list[WeightSpectrum | None] = [None] * len(matrices)
    for (shape, dtype, _device, rank, exact, _prev_rank), indices in groups.items():
        per_chunk = max(1, max_batch_numel // (shape[0] * shape[1]))
        for start in range(0, len(indices), per_chunk):
            chunk = indices[start : start + per_chunk]
            stack = torch.stack([matrices[i].detach() for i in chunk]).to(dtype)
            # ‖W‖_F doubles as the finiteness check: it is NaN/inf iff an entry is (or the norm overflows)
            frobenius = torch.linalg.vector_norm(stack, dim=(-2, -1)).cpu().double().tolist()
            for i, fro in zip(chunk, frobenius):
                if not math.isfinite(fro):
                    if not bool(torch.isfinite(matrices[i]).all()):
                        raise NonFiniteError(f"`{labels[i]}` contains non-finite values (NaN or inf).")
                    raise ValueError(f"`{labels[i]}` is too large: its Frobenius norm overflows {dtype}.")
            spectra = _decompose_chunk(
                stack,
                frobenius,
                rank,
                exact,
                [plan[i][2] for i in chunk],
                oversample,
                n_iter,
                generator,
                min_tail,
                tol,
                warm_start,
            )
            for i, spectrum in zip(chunk, spectra):
                results[i] = spectrum
    return results  # type: ignore[return-value]


def weight_spectrum(
    weight: Tensor,
    k: int | None = None,
    *,
    method: WeightSpectrumMethod = "auto",
    previous: WeightSpectrum | None = None,
    n_iter: int = 2,
    oversample: int = 10,
    generator: torch.Generator | None = None,
    exact_threshold: int | None = None,
    min_tail: int = DEFAULT_MIN_TAIL,
    tol: float | None = DEFAULT_TOL,
    warm_start: bool = True,
) -> WeightSpectrum:
    """Top-``k`` singular values and vectors of one 2-D ``weight`` and the metrics of the module docstring.

    Args:
        weight: ``(m, n)`` real floating-point matrix (any device, any float dtype; not modified).
        k: number of leading singular triplets, clipped to ``min(m, n)``; default :data:`DEFAULT_K`.
        method: ``"auto"`` (exact below the crossover size), ``"exact"`` or ``"randomized"``.
        previous: an earlier :class:`WeightSpectrum` of the same matrix: warm start, ``agreement`` and
            ``rotation``.
        n_iter: power iterations of the randomized method.
        oversample: extra sketch columns of the randomized method.
        generator: source of the randomized sketch (on ``weight``'s device); ``None``: global torch RNG.
        exact_threshold: ``"auto"`` is exact when ``min(m, n) <= exact_threshold`` (default
            ``CROSSOVER_FACTOR·(k + oversample)``, the measured crossover).
        min_tail: smallest ESD tail for the ``alpha`` fit.
        tol: relative-residual check of the randomized method (Lanczos refinement above it); ``None``: off.
        warm_start: seed the range finder with ``previous``'s right vectors; ``False``: ``previous`` serves
            ``rotation`` only.

    Returns:
        A :class:`WeightSpectrum`.

    Raises:
        ValueError / TypeError: as :func:`weight_spectra`, with the argument named ``weight``.
    """
    (spectrum,) = _spectra(
        [weight],
        ["weight"],
        [previous],
        ["previous"],
        k,
        method=method,
        n_iter=n_iter,
        oversample=oversample,
        generator=generator,
        exact_threshold=exact_threshold,
        min_tail=min_tail,
        max_batch_numel=_DEFAULT_MAX_BATCH_NUMEL,
        tol=tol,
        warm_start=warm_start,
    )
    return spectrum
