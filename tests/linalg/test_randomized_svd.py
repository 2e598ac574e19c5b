"""randomized_svd against torch.linalg.svd on matrices with known singular values ``U diag(σ) Vᵀ``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_spectral.linalg import SVDFactors, randomized_svd

# Relative error of the top-k singular values on a decaying spectrum (σ_i = 0.9^i or (i+1)^-2, k = 10, the
# default sketch of 20 columns and two power iterations). Measured worst case over 20 seeds: 2e-4 (0.9^i,
# 80×120), 5e-5 in float32; the spectral-norm reconstruction error was within 1e-6 of the optimum σ_{k+1}.
TOP_K_RTOL = {torch.float64: 1e-3, torch.float32: 1e-3}
RECONSTRUCTION_RTOL = 1e-4
ORTHO_ATOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reconstruct(result: SVDFactors) -> torch.Tensor:
    return (result.U * result.S.unsqueeze(-2)) @ result.Vh


def _assert_orthonormal_columns(X: torch.Tensor, atol: float) -> None:
    eye = torch.eye(X.shape[-1], dtype=X.dtype).expand(*X.shape[:-2], -1, -1)
    torch.testing.assert_close(X.mT @ X, eye, atol=atol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("m, n", [(120, 80), (80, 120)])
@pytest.mark.parametrize("decay", ["geometric", "power"])
def test_top_k_singular_values_and_optimal_reconstruction(matrix_with_singular_values, dtype, m, n, decay):
    r = min(m, n)
    i = torch.arange(r, dtype=torch.float64)
    sigma = 0.9**i if decay == "geometric" else (i + 1) ** -2.0
    A = matrix_with_singular_values(sigma, m, n, seed=3, dtype=dtype)
    k = 10
    result = randomized_svd(A, k, generator=_gen())

    assert result.U.shape == (m, k) and result.S.shape == (k,) and result.Vh.shape == (k, n)
    assert result.U.dtype == result.S.dtype == result.Vh.dtype == dtype
    assert bool((result.S[:-1] >= result.S[1:]).all()), "singular values must be descending"
    torch.testing.assert_close(result.S.double(), sigma[:k], rtol=TOP_K_RTOL[dtype], atol=0)
    _assert_orthonormal_columns(result.U, ORTHO_ATOL[dtype])
    _assert_orthonormal_columns(result.Vh.mT, ORTHO_ATOL[dtype])

    # ‖A − U S Vh‖_2 is at least the optimal σ_{k+1} (Eckart–Young) and, here, within 0.01% of it.
    residual = A.double() - _reconstruct(result).double()
    spectral = torch.linalg.matrix_norm(residual, ord=2)
    optimal = sigma[k]
    assert spectral >= optimal * (1 - 1e-6)
    assert spectral <= optimal * (1 + RECONSTRUCTION_RTOL)
    frobenius = torch.linalg.matrix_norm(residual)
    assert frobenius <= torch.linalg.vector_norm(sigma[k:]) * (1 + RECONSTRUCTION_RTOL)


def test_power_iterations_improve_a_slow_spectrum(matrix_with_singular_values):
    """On a slowly decaying spectrum more power iterations give strictly better singular values."""
    sigma = 1.0 / torch.arange(1, 101, dtype=torch.float64)
    A = matrix_with_singular_values(sigma, 150, 100, seed=4)
    errors = [
        float(
            (randomized_svd(A, 5, num_power_iterations=q, generator=_gen()).S - sigma[:5]).abs().max()
            / sigma[0]
        )
        for q in (0, 1, 3)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_input_matches_per_matrix_calls(matrix_with_singular_values, dtype):
    m, n, k = 60, 40, 4
    sigma = 0.5 ** torch.arange(n, dtype=torch.float64)
    mats = [matrix_with_singular_values(sigma * (b + 1), m, n, seed=10 + b, dtype=dtype) for b in range(6)]
    A = torch.stack(mats).reshape(2, 3, m, n)
    batched = randomized_svd(A, k, generator=_gen())
    assert (
        batched.U.shape == (2, 3, m, k) and batched.S.shape == (2, 3, k) and batched.Vh.shape == (2, 3, k, n)
    )
    tol = {torch.float64: 1e-10, torch.float32: 1e-4}[dtype]
    for b, mat in enumerate(mats):
        single = randomized_svd(mat, k, generator=_gen(b))
        i, j = divmod(b, 3)
        torch.testing.assert_close(batched.S[i, j], single.S, rtol=tol, atol=0)
        scale = float(single.S[0])
        torch.testing.assert_close(
            _reconstruct(SVDFactors(batched.U[i, j], batched.S[i, j], batched.Vh[i, j])),
            _reconstruct(single),
            atol=tol * scale,
            rtol=0,
        )
        torch.testing.assert_close(batched.S[i, j].double(), sigma[:k] * (b + 1), rtol=tol, atol=0)


def test_rank_deficient_matrix(matrix_with_singular_values):
    m, n, rank, k = 70, 50, 3, 6
    A = matrix_with_singular_values([4.0, 2.0, 1.0], m, n, seed=5)
    result = randomized_svd(A, k, num_oversamples=5, generator=_gen())
    assert bool(torch.isfinite(result.U).all() and torch.isfinite(result.Vh).all())
    torch.testing.assert_close(
        result.S[:rank], torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64), rtol=1e-12, atol=0
    )
    assert float(result.S[rank:].abs().max()) <= 1e-12
    _assert_orthonormal_columns(result.U, 1e-12)
    _assert_orthonormal_columns(result.Vh.mT, 1e-12)
    torch.testing.assert_close(_reconstruct(result), A, atol=1e-12, rtol=0)


def test_zero_matrix_gives_zero_singular_values():
    result = randomized_svd(torch.zeros(30, 20, dtype=torch.float64), 2, num_oversamples=3, generator=_gen())
    assert result.S.tolist() == [0.0, 0.0]
    _assert_orthonormal_columns(result.U, 1e-12)


@pytest.mark.parametrize(
    "m, n, k, num_oversamples", [(30, 20, 20, 0), (20, 30, 20, 10), (30, 20, 15, 5), (5, 9, 2, 3)]
)
def test_exact_path_when_sketch_covers_the_smaller_side(m, n, k, num_oversamples):
    A = torch.randn(m, n, generator=_gen(7), dtype=torch.float64)
    result = randomized_svd(A, k, num_oversamples=num_oversamples, num_power_iterations=0, generator=_gen())
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    torch.testing.assert_close(result.S, S[:k], rtol=1e-12, atol=0)
    torch.testing.assert_close(_reconstruct(result), (U[:, :k] * S[:k]) @ Vh[:k], atol=1e-12, rtol=0)
    if k == min(m, n):
        torch.testing.assert_close(_reconstruct(result), A, atol=1e-12, rtol=0)


def test_warm_start_with_exact_subspace_needs_no_power_iteration(matrix_with_singular_values):
    """A slowly decaying spectrum: without power iterations a cold sketch is poor, an exact warm start is exact."""
    n, k = 100, 5
    sigma = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    A = matrix_with_singular_values(sigma, 150, n, seed=6)
    V_true = torch.linalg.svd(A, full_matrices=False).Vh[:k].mT

    cold = randomized_svd(A, k, num_power_iterations=0, generator=_gen())
    warm = randomized_svd(A, k, num_power_iterations=0, init=V_true, generator=_gen())
    cold_error = float((cold.S - sigma[:k]).abs().max() / sigma[0])
    warm_error = float((warm.S - sigma[:k]).abs().max() / sigma[0])
    assert cold_error > 1e-2
    assert warm_error < 1e-12

    # The warm start need not be orthonormal, only span the subspace; extra columns beyond k + num_oversamples
    # are dropped (here the first 15 of a full basis are kept and contain the top 5).
    mixed = randomized_svd(
        A, k, num_power_iterations=0, init=V_true @ torch.randn(k, k, generator=_gen(2), dtype=torch.float64)
    )
    torch.testing.assert_close(mixed.S, sigma[:k], rtol=1e-10, atol=0)
    full_basis = torch.linalg.svd(A, full_matrices=False).Vh.mT  # (n, n), r > k + num_oversamples
    wide = randomized_svd(A, k, num_power_iterations=0, init=full_basis, generator=_gen())
    torch.testing.assert_close(wide.S, sigma[:k], rtol=1e-10, atol=0)


def test_warm_start_broadcasts_over_the_batch(matrix_with_singular_values):
    n, k = 60, 3
    sigma = 1.0 / torch.arange(1, n + 1, dtype=torch.float64)
    A = matrix_with_singular_values(sigma, 80, n, seed=8)
    V_true = torch.linalg.svd(A, full_matrices=False).Vh[:k].mT
    batch = torch.stack([A, 2 * A])
    result = randomized_svd(batch, k, num_power_iterations=0, init=V_true, generator=_gen())
    torch.testing.assert_close(result.S, torch.stack([sigma[:k], 2 * sigma[:k]]), rtol=1e-10, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_is_factorised_in_float32(matrix_with_singular_values, dtype):
    sigma = 0.5 ** torch.arange(20, dtype=torch.float64)
    A = matrix_with_singular_values(sigma, 40, 20, seed=12).to(dtype)
    result = randomized_svd(A, 3, num_oversamples=5, generator=_gen())
    assert result.U.dtype == result.S.dtype == result.Vh.dtype == torch.float32
    reference = torch.linalg.svdvals(A.double())[:3]
    torch.testing.assert_close(result.S.double(), reference, rtol=1e-5, atol=0)


def test_single_matrix_batch_matches_unbatched_call(matrix_with_singular_values):
    A = matrix_with_singular_values(0.8 ** torch.arange(30, dtype=torch.float64), 50, 30, seed=13)
    batched = randomized_svd(A[None], 4, generator=_gen(3))
    single = randomized_svd(A, 4, generator=_gen(3))
    torch.testing.assert_close(batched.S[0], single.S, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        _reconstruct(SVDFactors(*(t[0] for t in batched))), _reconstruct(single), rtol=0, atol=1e-12
    )


def test_generator_makes_results_reproducible():
    A = torch.randn(50, 40, generator=_gen(9), dtype=torch.float64)
    first = randomized_svd(A, 3, num_power_iterations=0, generator=_gen(5))
    second = randomized_svd(A, 3, num_power_iterations=0, generator=_gen(5))
    third = randomized_svd(A, 3, num_power_iterations=0, generator=_gen(6))
    assert torch.equal(first.S, second.S) and torch.equal(first.U, second.U)
    assert not torch.equal(first.S, third.S)
    torch.manual_seed(0)
    global_a = randomized_svd(A, 3, num_power_iterations=0)
    torch.manual_seed(0)
    global_b = randomized_svd(A, 3, num_power_iterations=0)
    assert torch.equal(global_a.S, global_b.S)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"k": 0}, ValueError, r"`k` must be >= 1"),
        ({"k": 21}, ValueError, r"`k` must satisfy 1 <= k <= min\(m, n\) = 20"),
        ({"k": 2.0}, TypeError, r"`k` must be an int"),
        ({"k": True}, TypeError, r"`k` must be an int"),
        ({"k": 2, "num_oversamples": -1}, ValueError, r"`num_oversamples` must be >= 0"),
        ({"k": 2, "num_power_iterations": -1}, ValueError, r"`num_power_iterations` must be >= 0"),
        (
            {"k": 2, "init": torch.zeros(29, 3)},
            ValueError,
            r"`init` must be a tensor of shape \(\.\.\., n=30, r\)",
        ),
        ({"k": 2, "init": torch.zeros(30, 0)}, ValueError, r"`init` must be a tensor of shape"),
        ({"k": 2, "init": torch.zeros(4, 30, 3)}, ValueError, r"`init` batch shape"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    A = torch.zeros(20, 30)
    with pytest.raises(error, match=match):
        randomized_svd(A, **kwargs)


def test_invalid_matrices():
    with pytest.raises(ValueError, match=r"`A` must have at least 2 dimensions"):
        randomized_svd(torch.zeros(5), 1)
    with pytest.raises(TypeError, match=r"`A` must have a real floating-point dtype"):
        randomized_svd(torch.zeros(5, 5, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match=r"non-empty"):
        randomized_svd(torch.zeros(0, 5), 1)
    with pytest.raises(ValueError, match=r"batch shape"):
        randomized_svd(torch.zeros(2, 5, 5), 1, init=torch.zeros(3, 5, 1))


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(2, 40),
    n=st.integers(2, 40),
    k_fraction=st.floats(0.0, 1.0),
    batch=st.sampled_from([(), (2,), (2, 1)]),
    num_oversamples=st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_property_matches_svdvals_on_fast_decaying_spectrum(
    matrix_with_singular_values, m, n, k_fraction, batch, num_oversamples, seed
):
    r = min(m, n)
    k = 1 + int(k_fraction * (r - 1))
    sigma = 0.3 ** torch.arange(r, dtype=torch.float64)
    mats = [
        matrix_with_singular_values(sigma, m, n, seed=seed + i)
        for i in range(max(1, int(torch.tensor(batch).prod())))
    ]
    A = torch.stack(mats).reshape(*batch, m, n)
    result = randomized_svd(
        A, k, num_oversamples=num_oversamples, num_power_iterations=2, generator=_gen(seed)
    )
    assert result.U.shape == (*batch, m, k)
    assert result.S.shape == (*batch, k)
    assert result.Vh.shape == (*batch, k, n)
    expected = torch.linalg.svdvals(A)[..., :k]
    # Absolute error relative to σ_1 = 1: the spectrum decays by 0.3 per index, so the sketch of size
    # k + num_oversamples >= k with 2 power iterations resolves the top k to near machine precision relative
    # to σ_1 (the k-th value can be as small as 0.3^39).
    torch.testing.assert_close(result.S, expected, atol=1e-8, rtol=0)
    assert bool((result.S[..., :-1] >= result.S[..., 1:]).all())
