"""Singular-value spectrum of weight matrices, and how it moves between two measurements."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from lightning_spectral._internal.deprecation import renamed_keywords
from lightning_spectral._internal.validation import (
    check_bool,
    check_choice,
    check_int,
    check_open_unit_interval,
)
from lightning_spectral.functional.weights.power_law import DEFAULT_MIN_TAIL, PowerLawFit
from lightning_spectral.functional.weights.singular_dynamics import singular_vector_agreement
from lightning_spectral.functional.weights.singular_refinement import refine_truncated_svd, relative_residuals
from lightning_spectral.functional.weights.spectrum_metrics import summarize_singular_values
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
#: ``method="auto"`` uses the exact SVD while ``min(m, n) <= CROSSOVER_FACTOR * (k + num_oversamples)``.
CROSSOVER_FACTOR = 3
#: Allowed values of ``method``.
WeightSpectrumMethod = Literal["auto", "exact", "randomized"]
METHODS: tuple[WeightSpectrumMethod, ...] = get_args(WeightSpectrumMethod)
# Largest number of matrix entries stacked into one batched decomposition (256 MB in float32).
_DEFAULT_MAX_BATCH_NUMEL = 1 << 26


@dataclass(frozen=True, eq=False)  # holds tensors: compared (and hashed) by identity
class WeightSpectrum:
    """Spectrum of one weight matrix (the metrics are defined in :func:`weight_spectrum`).

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
            one): every ``σ_i`` lies within ``ρ_i/√2`` of a true singular value.
        refined: whether the randomized result failed the ``tol`` check and was recomputed by Lanczos.
        stable_rank_ratio: ``stable_rank / min(m, n)``.
        effective_rank_ratio: ``effective_rank / min(m, n)`` (exact method; ``None`` when estimated).
        mass90_count: fewest leading singular values holding 90 % of ``Σσ`` (exact method, else ``None``).
        gini: Gini coefficient of all singular values (exact method, else ``None``).
        agreement: ``(k',)`` per-index agreement ``|⟨u_i, u_prev,i⟩ ⟨v_i, v_prev,i⟩|`` with ``previous`` (CPU,
            float64); ``None`` without ``previous``.

    Example:
        >>> import torch
        >>> s = weight_spectrum(torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0])), k=2)
        >>> s.shape, s.sigma_max, s.method_used
        ((4, 4), 4.0, 'exact')
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
    num_oversamples: int,
    num_power_iterations: int,
    generator: torch.Generator | None,
    min_tail: int,
    tol: float | None,
    warm_start: bool,
) -> list[WeightSpectrum]:
    """Decompose a batch ``(B, m, n)`` of equal-shape matrices (compute dtype) with Frobenius norms
    ``frobenius`` in one call.
    """
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
            # check cannot see. So the sketch keeps a cold start's k + num_oversamples Gaussian columns after them.
            guard = init.shape[-1]
        U_k, S, Vh_k = randomized_svd(
            stack,
            k,
            num_oversamples=num_oversamples + guard,
            num_power_iterations=num_power_iterations,
            init=init,
            generator=generator,
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
        metrics = summarize_singular_values(values[b], k, (m, n), frobenius[b], exact, min_tail)
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


@renamed_keywords(n_iter="num_power_iterations", oversample="num_oversamples")
def weight_spectra(
    matrices: Sequence[Tensor],
    k: int | None = None,
    *,
    method: WeightSpectrumMethod = "auto",
    previous: Sequence[WeightSpectrum | None] | None = None,
    num_power_iterations: int = 2,
    num_oversamples: int = 10,
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
        method: ``"auto"``, ``"exact"`` or ``"randomized"`` (as in :func:`weight_spectrum`).
        previous: earlier spectra aligned with ``matrices`` (``None`` entries allowed) for warm start and
            ``agreement`` and ``rotation``.
        num_power_iterations: power iterations of the randomized method (``>= 0``).
        num_oversamples: extra sketch columns of the randomized method (``>= 0``).
        generator: source of the randomized sketches, on the matrices' device; ``None`` uses the global
            torch RNG.
        exact_threshold: ``"auto"`` uses the exact method when ``min(m, n) <= exact_threshold``; default
            ``CROSSOVER_FACTOR·(k + num_oversamples)``.
        min_tail: smallest ESD tail (and spectrum) for the ``alpha`` fit.
        max_batch_numel: cap on ``batch·m·n`` of one stacked call (``>= 1``; a single larger matrix still
            goes alone).
        tol: accuracy check of the randomized method: a result whose relative residual exceeds ``tol`` is
            recomputed by Lanczos; ``None`` skips the check (raw randomized SVD).
        warm_start: seed the randomized range finder with ``previous``'s right singular vectors (followed by
            a cold start's Gaussian columns); ``False``: ``previous`` serves ``rotation`` only.

    Returns:
        One :class:`WeightSpectrum` per matrix.

    Raises:
        ValueError: bad ``k``, ``method``, ``num_power_iterations``, ``num_oversamples``, ``exact_threshold``, ``min_tail``,
            ``max_batch_numel``; a matrix that is not 2-D, empty, not finite (or whose norm overflows); ``previous`` of another
            shape or length.
        TypeError: a matrix that is not a real floating-point tensor, a ``previous`` that is not a spectrum.

    Example:
        >>> import torch
        >>> spectra = weight_spectra([torch.eye(3), 2 * torch.eye(3), torch.ones(2, 5)], k=1)
        >>> [round(s.sigma_max, 4) for s in spectra]
        [1.0, 2.0, 3.1623]
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
        num_power_iterations=num_power_iterations,
        num_oversamples=num_oversamples,
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
    num_power_iterations: int,
    num_oversamples: int,
    generator: torch.Generator | None,
    exact_threshold: int | None,
    min_tail: int,
    max_batch_numel: int,
    tol: float | None,
    warm_start: bool = True,
) -> list[WeightSpectrum]:
    """Implementation of :func:`weight_spectra`; ``labels`` name the arguments in error messages."""
    check_bool("warm_start", warm_start)
    if tol is not None:
        check_open_unit_interval("tol", tol)
    if k is not None:
        k = check_int("k", k, 1)
    check_choice("method", method, METHODS)
    num_power_iterations = check_int("num_power_iterations", num_power_iterations, 0)
    num_oversamples = check_int("num_oversamples", num_oversamples, 0)
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
        sketch_covers_all = (
            rank + num_oversamples >= r
        )  # a sketch this large is no cheaper than the dense SVD
        if method == "exact" or sketch_covers_all:
            exact = True
        elif method == "randomized":
            exact = False
        else:
            threshold = (
                CROSSOVER_FACTOR * (rank + num_oversamples) if exact_threshold is None else exact_threshold
            )
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
                num_oversamples,
                num_power_iterations,
                generator,
                min_tail,
                tol,
                warm_start,
            )
            for i, spectrum in zip(chunk, spectra):
                results[i] = spectrum
    return results  # type: ignore[return-value]


@renamed_keywords(n_iter="num_power_iterations", oversample="num_oversamples")
def weight_spectrum(
    weight: Tensor,
    k: int | None = None,
    *,
    method: WeightSpectrumMethod = "auto",
    previous: WeightSpectrum | None = None,
    num_power_iterations: int = 2,
    num_oversamples: int = 10,
    generator: torch.Generator | None = None,
    exact_threshold: int | None = None,
    min_tail: int = DEFAULT_MIN_TAIL,
    tol: float | None = DEFAULT_TOL,
    warm_start: bool = True,
) -> WeightSpectrum:
    r"""Top-``k`` singular values and vectors of one 2-D ``weight``, and the metrics of its spectrum.

    With singular values ``σ_1 ≥ σ_2 ≥ …`` and ``p_i = σ_i / Σ_j σ_j``:

    .. math::

        \text{stable rank} = \frac{\|W\|_F^2}{\sigma_1^2}, \qquad
        \text{effective rank} = \exp\Big(-\sum_i p_i \ln p_i\Big), \qquad
        \text{condition number} = \frac{\sigma_1}{\sigma_k},

    and the power-law exponent ``alpha`` of the eigenvalues ``σ_i²`` of ``WᵀW`` (:func:`power_law_alpha`).
    ``method="exact"`` uses ``torch.linalg.svd``; ``"randomized"``
    :func:`~lightning_spectral.linalg.randomized_svd`, checked by its residuals (``tol``) and refined by
    Lanczos where the check fails.

    Args:
        weight: ``(m, n)`` real floating-point matrix (any device, any float dtype; not modified).
        k: number of leading singular triplets, clipped to ``min(m, n)``; default :data:`DEFAULT_K`.
        method: ``"auto"`` (exact below the crossover size), ``"exact"`` or ``"randomized"``.
        previous: an earlier :class:`WeightSpectrum` of the same matrix: warm start, ``agreement`` and
            ``rotation``.
        num_power_iterations: power iterations of the randomized method.
        num_oversamples: extra sketch columns of the randomized method.
        generator: source of the randomized sketch (on ``weight``'s device); ``None``: global torch RNG.
        exact_threshold: ``"auto"`` is exact when ``min(m, n) <= exact_threshold`` (default
            ``CROSSOVER_FACTOR·(k + num_oversamples)``).
        min_tail: smallest ESD tail for the ``alpha`` fit.
        tol: relative-residual check of the randomized method (Lanczos refinement above it); ``None``: off.
        warm_start: seed the range finder with ``previous``'s right vectors; ``False``: ``previous`` serves
            ``rotation`` only.

    Returns:
        A :class:`WeightSpectrum`.

    Raises:
        ValueError: as :func:`weight_spectra`, with the argument named ``weight``.
        TypeError: as :func:`weight_spectra`, with the argument named ``weight``.

    Example:
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
    (spectrum,) = _spectra(
        [weight],
        ["weight"],
        [previous],
        ["previous"],
        k,
        method=method,
        num_power_iterations=num_power_iterations,
        num_oversamples=num_oversamples,
        generator=generator,
        exact_threshold=exact_threshold,
        min_tail=min_tail,
        max_batch_numel=_DEFAULT_MAX_BATCH_NUMEL,
        tol=tol,
        warm_start=warm_start,
    )
    return spectrum
