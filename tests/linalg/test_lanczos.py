"""lanczos against torch.linalg.eigh on symmetric matrices with known spectra ``Q diag(λ) Qᵀ``.

The small tridiagonal eigenproblems of Lanczos and SLQ are solved in torch's thread pool, never NumPy's (#26).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from spectral_testing.problems import CountingMatvec

from lightning_spectral.linalg import lanczos, slq_density
from lightning_spectral.linalg.lanczos import small_eigh

F64 = torch.float64


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _explicit_residuals(A: torch.Tensor, theta: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(A @ V - V * theta, dim=0)


def _assert_orthonormal(V: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(V.mT @ V, torch.eye(V.shape[1], dtype=V.dtype), atol=atol, rtol=0)


# 96 bulk eigenvalues in [-3, 2] and four outliers of both signs.
OUTLIERS = [8.0, 6.0, -7.0, -5.0]
MIXED_SPECTRUM = torch.cat([torch.tensor(OUTLIERS, dtype=F64), torch.linspace(-3.0, 2.0, 96, dtype=F64)])
EXPECTED = {
    "LA": [8.0, 6.0, 2.0, 2.0 - 5.0 / 95],
    "SA": [-7.0, -5.0, -3.0, -3.0 + 5.0 / 95],
    "LM": [8.0, -7.0, 6.0, -5.0],
}


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_extreme_eigenpairs_float64(symmetric_with_eigenvalues, which):
    A = symmetric_with_eigenvalues(MIXED_SPECTRUM, seed=1)
    matvec = CountingMatvec(A)
    k = 4
    result = lanczos(matvec, 100, k, max_matvecs=90, tol=1e-10, which=which, dtype=F64, generator=_gen())
    assert result.converged
    assert result.num_matvecs == matvec.calls <= 90
    expected = torch.tensor(EXPECTED[which], dtype=F64)
    # Requirement: relative error <= 1e-4; with tol = 1e-10 the Ritz values are accurate to ~1e-12.
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-10, atol=0)
    assert (
        result.eigenvalues.shape == (k,)
        and result.eigenvectors.shape == (100, k)
        and result.residuals.shape == (k,)
    )
    _assert_orthonormal(result.eigenvectors, 1e-12)
    explicit = _explicit_residuals(A, result.eigenvalues, result.eigenvectors)
    assert bool((explicit <= 1e-10 * result.eigenvalues.abs() + 1e-12).all())


def test_near_degenerate_top_eigenvalues(symmetric_with_eigenvalues):
    top = torch.tensor([10.0, 10.0 - 1e-3, 10.0 - 2e-3], dtype=F64)
    spectrum = torch.cat([top, torch.linspace(0.0, 5.0, 117, dtype=F64)])
    A = symmetric_with_eigenvalues(spectrum, seed=2)
    result = lanczos(lambda v: A @ v, 120, 3, max_matvecs=120, tol=1e-10, dtype=F64, generator=_gen())
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, top, rtol=1e-10, atol=0)
    # The eigenvectors of the cluster are resolved individually (gap 1e-3 >> residual 1e-9).
    true_vectors = torch.linalg.eigh(A).eigenvectors[:, -3:].flip(1)
    overlaps = (true_vectors.T @ result.eigenvectors).abs().diagonal()
    torch.testing.assert_close(overlaps, torch.ones(3, dtype=F64), atol=1e-8, rtol=0)


@pytest.mark.parametrize("bulk", [0.0, 1.0])
def test_exactly_repeated_top_eigenvalue_is_found_twice(symmetric_with_eigenvalues, bulk):
    """A Krylov space holds one direction per eigenspace: the second copy of 10 is only found through the
    restart after the Krylov space became invariant (it has dimension 2 here)."""
    dim = 60
    A = symmetric_with_eigenvalues([10.0, 10.0] + [bulk] * (dim - 2), seed=3)
    matvec = CountingMatvec(A)
    result = lanczos(matvec, dim, 2, dtype=F64, generator=_gen())
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, torch.tensor([10.0, 10.0], dtype=F64), rtol=1e-12, atol=0)
    # Both Ritz vectors lie in the 2-D eigenspace and are orthonormal: they span it.
    eigenvectors = torch.linalg.eigh(A).eigenvectors[:, -2:]
    in_space = torch.linalg.vector_norm(eigenvectors.T @ result.eigenvectors, dim=0)
    torch.testing.assert_close(in_space, torch.ones(2, dtype=F64), atol=1e-12, rtol=0)
    _assert_orthonormal(result.eigenvectors, 1e-12)
    assert result.num_matvecs == matvec.calls <= 6


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_every_eigenvalue_repeated_three_times_is_found_twice_for_k_2(dtype, tol):
    """``A = I_3 ⊗ G`` (6 distinct eigenvalues, each three times): the Krylov space is invariant after 6 steps at
    an operator's rounding level, which may lie above a dot product's; the restart finds the second copy. Before
    the invariance level covered that rounding, 3 (float64) and 4 (float32) of these 20 seeds missed it."""
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        X = torch.randn(16, 6, generator=generator, dtype=torch.float64)
        A = torch.kron(torch.eye(3, dtype=torch.float64), X.T @ X / 16).to(dtype)
        reference = torch.linalg.eigvalsh(A.double()).flip(0)[:2]
        result = lanczos(A.__matmul__, 18, 2, tol=tol, dtype=dtype, generator=generator)
        error = float((result.eigenvalues.double() - reference).abs().max() / reference[0])
        assert result.converged and error <= 10 * tol, (seed, result.eigenvalues.tolist(), reference.tolist())


def test_a_restarted_block_that_finds_another_copy_runs_on_to_find_the_next():
    """Triple top eigenvalue, ``k = 3``: the second block finds the second copy and converges before the third
    is in any Krylov space; it runs on to invariance, and the third block finds the third copy."""
    G = torch.diag(torch.tensor([5.0, 3.0, 2.0, 1.5, 1.0, 0.5], dtype=torch.float64))
    Q, _ = torch.linalg.qr(
        torch.randn(18, 18, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    )
    A = Q @ torch.kron(torch.eye(3, dtype=torch.float64), G) @ Q.T
    for seed in range(10):
        result = lanczos(
            lambda v: A @ v,
            18,
            3,
            tol=1e-3,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(seed),
        )
        assert result.converged and result.eigenvalues.tolist() == pytest.approx([5.0, 5.0, 5.0], rel=1e-6), (
            seed
        )


def test_a_slowly_decaying_float32_tail_is_not_taken_for_an_invariant_space():
    """The Gram matrix of ``W = U diag(1/i) Vᵀ`` (300 × 200) in float32: its small eigenvalues lie below 1000ε of
    the largest, and β decays there gradually. Taking such a β for invariance (without its collapse relative to
    ``‖A q_j‖``) restarted at every step: 200 products without converging, where 61 suffice."""
    generator = torch.Generator().manual_seed(15)
    U, _ = torch.linalg.qr(torch.randn(300, 200, generator=generator))
    V, _ = torch.linalg.qr(torch.randn(200, 200, generator=generator))
    s = 1.0 / torch.arange(1, 201, dtype=torch.float32)
    W = (U * s) @ V.T
    result = lanczos(
        lambda v: W.T @ (W @ v), 200, 37, tol=1e-3, max_matvecs=200, dtype=torch.float32, generator=_gen()
    )
    assert result.converged and result.num_matvecs <= 80
    torch.testing.assert_close(result.eigenvalues, s[:37] ** 2, rtol=1e-3, atol=0)


def test_multiple_of_identity():
    dim = 30
    result = lanczos(lambda v: 3.0 * v, dim, 4, dtype=F64, generator=_gen())
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, torch.full((4,), 3.0, dtype=F64), rtol=1e-14, atol=0)
    _assert_orthonormal(result.eigenvectors, 1e-12)
    assert result.num_matvecs <= 5


@pytest.mark.parametrize("which", ["LA", "LM"])
def test_low_rank_operator_stops_after_a_few_products(symmetric_with_eigenvalues, which):
    dim = 200
    A = symmetric_with_eigenvalues([5.0, 3.0, -2.0] + [0.0] * (dim - 3), seed=4)
    matvec = CountingMatvec(A)
    result = lanczos(matvec, dim, 3 if which == "LM" else 2, dtype=F64, generator=_gen(), which=which)
    assert result.converged
    expected = [5.0, 3.0, -2.0] if which == "LM" else [5.0, 3.0]
    torch.testing.assert_close(result.eigenvalues, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=0)
    # The Krylov space of a random vector is 4-dimensional (3 eigen-directions + the null-space component);
    # it breaks down after 4 products and one restart product confirms that nothing is left.
    assert result.num_matvecs == matvec.calls <= 5


def test_k_equal_dim_is_exact(symmetric_with_eigenvalues):
    dim = 30
    spectrum = torch.linspace(-1.0, 4.0, dim, dtype=F64)
    A = symmetric_with_eigenvalues(spectrum, seed=5)
    for which, expected in (("LA", spectrum.flip(0)), ("SA", spectrum)):
        result = lanczos(lambda v: A @ v, dim, dim, which=which, dtype=F64, generator=_gen())
        assert result.converged and result.num_matvecs == dim
        torch.testing.assert_close(result.eigenvalues, expected, atol=1e-12, rtol=0)
        _assert_orthonormal(result.eigenvectors, 1e-12)
        torch.testing.assert_close(
            A @ result.eigenvectors, result.eigenvectors * result.eigenvalues, atol=1e-12, rtol=0
        )


@pytest.mark.parametrize("dim", [1, 2])
def test_tiny_operators(dim):
    A = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=F64)[:dim, :dim]
    result = lanczos(lambda v: A @ v, dim, dim, which="SA", dtype=F64, generator=_gen())
    assert result.converged and result.num_matvecs == dim
    torch.testing.assert_close(result.eigenvalues, torch.linalg.eigvalsh(A), atol=1e-14, rtol=0)


def test_zero_operator():
    result = lanczos(lambda v: torch.zeros_like(v), 20, 2, dtype=F64, generator=_gen())
    assert result.converged and result.eigenvalues.tolist() == [0.0, 0.0]
    assert result.num_matvecs <= 3
    _assert_orthonormal(result.eigenvectors, 1e-12)


def test_residual_estimates_match_explicit_residuals(symmetric_with_eigenvalues):
    """Stop early (unconverged) and compare |β_{j+1} s_{j,i}| with ‖A v_i − θ_i v_i‖."""
    dim = 150
    A = symmetric_with_eigenvalues(torch.linspace(0.0, 1.0, dim, dtype=F64) ** 2, seed=6)
    result = lanczos(lambda v: A @ v, dim, 5, max_matvecs=15, tol=1e-12, dtype=F64, generator=_gen())
    assert not result.converged and result.num_matvecs == 15
    explicit = _explicit_residuals(A, result.eigenvalues, result.eigenvectors)
    assert float(explicit.min()) > 1e-6  # genuinely unconverged, so the comparison is meaningful
    torch.testing.assert_close(result.residuals, explicit, rtol=1e-8, atol=1e-13)
    # Every Ritz value is within its residual of a true eigenvalue (Kahan–Parlett–Jiang / Weyl bound).
    distance = (result.eigenvalues[:, None] - torch.linalg.eigvalsh(A)[None, :]).abs().min(dim=1).values
    assert bool((distance <= result.residuals * (1 + 1e-8)).all())


def test_unconverged_flag_reports_residuals_above_tolerance(symmetric_with_eigenvalues):
    A = symmetric_with_eigenvalues(torch.linspace(1.0, 2.0, 80, dtype=F64), seed=7)
    result = lanczos(lambda v: A @ v, 80, 3, max_matvecs=6, tol=1e-8, dtype=F64, generator=_gen())
    assert not result.converged
    assert bool((result.residuals > 1e-8 * result.eigenvalues.abs()).any())


# Top eigenvalue 10 separated from a bulk in [1, 9].
WARM_SPECTRUM = torch.cat([torch.tensor([10.0], dtype=F64), torch.linspace(1.0, 9.0, 99, dtype=F64)])


def test_warm_start_near_the_top_eigenvector_converges_fast(symmetric_with_eigenvalues):
    dim = 100
    A = symmetric_with_eigenvalues(WARM_SPECTRUM, seed=8)
    top = torch.linalg.eigh(A).eigenvectors[:, -1]
    v0 = top + 1e-5 * torch.randn(dim, generator=_gen(3), dtype=F64)
    cold = lanczos(lambda v: A @ v, dim, 1, dtype=F64, generator=_gen())
    warm = lanczos(lambda v: A @ v, dim, 1, v0=v0, generator=_gen())
    for result in (cold, warm):
        assert result.converged
        torch.testing.assert_close(result.eigenvalues, torch.tensor([10.0], dtype=F64), rtol=1e-10, atol=0)
    assert cold.num_matvecs >= 15
    assert warm.num_matvecs <= 8


@pytest.mark.parametrize("index", [-1, -2])
def test_warm_start_at_an_exact_eigenvector_checks_the_complement(symmetric_with_eigenvalues, index):
    """``v0`` exactly an eigenvector: the Krylov space is invariant after one product and the restart
    explores the complement. From the *second* eigenvector (a stale warm start after two eigenvalues
    crossed) the top one is still found."""
    dim = 100
    A = symmetric_with_eigenvalues(WARM_SPECTRUM, seed=8)
    v0 = torch.linalg.eigh(A).eigenvectors[:, index].clone()
    result = lanczos(lambda v: A @ v, dim, 1, v0=v0, max_matvecs=dim, generator=_gen())
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, torch.tensor([10.0], dtype=F64), rtol=1e-10, atol=0)
    assert result.num_matvecs < dim


def test_hessian_vector_product_with_autograd_graph():
    """A matvec that returns graph-carrying tensors (HVP with ``create_graph=True``): the result matches the
    dense Hessian from torch.autograd.functional.hessian and carries no graph."""
    x = torch.randn(12, 4, generator=_gen(5), dtype=F64)
    y = torch.randn(12, generator=_gen(6), dtype=F64)
    theta0 = torch.randn(4 * 3 + 3, generator=_gen(7), dtype=F64)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(x @ theta[:12].reshape(4, 3))
        return ((hidden @ theta[12:] - y) ** 2).mean()

    theta = theta0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(theta), theta, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        (out,) = torch.autograd.grad(grad, theta, v, retain_graph=True, create_graph=True)
        return out

    hessian = torch.autograd.functional.hessian(loss, theta0)
    result = lanczos(hvp, 15, 2, which="LM", max_matvecs=15, tol=1e-10, dtype=F64, generator=_gen())
    assert not result.eigenvalues.requires_grad and not result.eigenvectors.requires_grad
    expected = _wanted(torch.linalg.eigvalsh(hessian), 2, "LM")
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-10, atol=1e-12)


def test_float32_with_looser_tolerance(symmetric_with_eigenvalues):
    dim = 100
    spectrum = 10.0 * 0.8 ** torch.arange(dim, dtype=F64)
    A = symmetric_with_eigenvalues(spectrum, seed=9, dtype=torch.float32)
    result = lanczos(lambda v: A @ v, dim, 3, generator=_gen(), dtype=torch.float32)
    assert result.converged
    assert result.eigenvalues.dtype == result.eigenvectors.dtype == result.residuals.dtype == torch.float32
    torch.testing.assert_close(result.eigenvalues.double(), spectrum[:3], rtol=1e-5, atol=0)
    _assert_orthonormal(result.eigenvectors, 1e-5)


def test_max_iter_is_clamped_to_dim_and_default_budget(symmetric_with_eigenvalues):
    A = symmetric_with_eigenvalues(torch.arange(1.0, 11.0, dtype=F64), seed=10)
    result = lanczos(lambda v: A @ v, 10, 2, max_matvecs=1000, dtype=F64, generator=_gen())
    assert result.num_matvecs <= 10 and result.converged
    big = symmetric_with_eigenvalues(torch.linspace(0.0, 1.0, 300, dtype=F64), seed=11)
    slow = lanczos(lambda v: big @ v, 300, 2, tol=1e-14, dtype=F64, generator=_gen())
    assert slow.num_matvecs == 40  # default max_matvecs = min(dim, max(2k + 20, 40))


def test_generator_reproducibility_and_copy_protection(symmetric_with_eigenvalues):
    A = symmetric_with_eigenvalues(torch.linspace(0.0, 1.0, 50, dtype=F64), seed=12)
    a = lanczos(lambda v: A @ v, 50, 2, max_matvecs=10, dtype=F64, generator=_gen(4))
    b = lanczos(lambda v: A @ v, 50, 2, max_matvecs=10, dtype=F64, generator=_gen(4))
    assert torch.equal(a.eigenvalues, b.eigenvalues)

    def destructive(v: torch.Tensor) -> torch.Tensor:
        out = A @ v
        v.zero_()  # must not corrupt the Lanczos basis
        return out

    c = lanczos(destructive, 50, 2, max_matvecs=10, dtype=F64, generator=_gen(4))
    assert torch.equal(a.eigenvalues, c.eigenvalues)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"k": 0}, ValueError, r"`k` must be >= 1"),
        ({"k": 11}, ValueError, r"`k` must satisfy 1 <= k <= dim = 10"),
        ({"k": 1.5}, TypeError, r"`k` must be an int"),
        ({"k": 3, "max_matvecs": 2}, ValueError, r"`max_matvecs` must be >= k = 3"),
        ({"k": 1, "max_matvecs": 0}, ValueError, r"`max_matvecs` must be >= 1"),
        ({"k": 1, "tol": 0.0}, ValueError, r"`tol` must be a positive finite number"),
        ({"k": 1, "tol": float("nan")}, ValueError, r"`tol`"),
        ({"k": 1, "which": "BE"}, ValueError, r"`which` must be one of \('LA', 'SA', 'LM'\)"),
        ({"k": 1, "v0": torch.zeros(10)}, ValueError, r"`v0` must be a finite, non-zero vector"),
        ({"k": 1, "v0": torch.ones(9)}, ValueError, r"`v0` must be a tensor of shape \(dim,\) = \(10,\)"),
        (
            {"k": 1, "v0": torch.ones(10, dtype=F64), "dtype": torch.float32},
            ValueError,
            r"conflicts with `v0.dtype`",
        ),
        ({"k": 1, "dtype": torch.int64}, ValueError, r"`dtype` must be a real floating-point torch.dtype"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        lanczos(lambda v: v, 10, **kwargs)


def test_invalid_matvecs():
    with pytest.raises(TypeError, match=r"`matvec` must be callable"):
        lanczos("not callable", 10, 1)
    with pytest.raises(ValueError, match=r"`dim` must be >= 1"):
        lanczos(lambda v: v, 0, 1)
    with pytest.raises(ValueError, match=r"`matvec` must return a tensor of shape \(10,\)"):
        lanczos(lambda v: v[:5], 10, 1)
    with pytest.raises(TypeError, match=r"`matvec` returned dtype torch.float64"):
        lanczos(lambda v: v.double(), 10, 1, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"non-finite"):
        lanczos(lambda v: v * float("nan"), 10, 1)


def _wanted(true: torch.Tensor, k: int, which: str) -> torch.Tensor:
    key = {"LA": -true, "SA": true, "LM": -true.abs()}[which]
    return true[torch.argsort(key, stable=True)[:k]]


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(3, 40),
    k_fraction=st.floats(0.0, 1.0),
    which=st.sampled_from(["LA", "SA", "LM"]),
    seed=st.integers(0, 2**16),
    levels=st.one_of(st.none(), st.integers(1, 6)),
    max_matvecs=st.one_of(st.none(), st.integers(6, 40)),
)
def test_property_ritz_pairs_are_honest(
    symmetric_with_eigenvalues, dim, k_fraction, which, seed, levels, max_matvecs
):
    """Random Gaussian spectra, either with distinct eigenvalues (``levels=None``) or drawn from a few
    ``levels`` (so eigenvalues repeat). Whatever the budget, the returned pairs must be honest: residual
    estimates equal the explicit residuals, each Ritz value lies within its residual of an eigenvalue
    (symmetric Bauer–Fike bound), the vectors are orthonormal and the order is the requested one. When the
    run converged on distinct eigenvalues, the pairs are the wanted ones."""
    k = 1 + int(k_fraction * (min(dim, 6) - 1))
    max_matvecs = None if max_matvecs is None else max(k, max_matvecs)
    gaussian = torch.randn(dim if levels is None else levels, generator=_gen(seed), dtype=F64)
    spectrum = (
        gaussian if levels is None else gaussian[torch.randint(0, levels, (dim,), generator=_gen(seed + 1))]
    )
    A = symmetric_with_eigenvalues(spectrum, seed=seed)
    result = lanczos(
        lambda v: A @ v,
        dim,
        k,
        max_matvecs=max_matvecs,
        tol=1e-10,
        which=which,
        dtype=F64,
        generator=_gen(seed),
    )

    budget = min(dim, max(2 * k + 20, 40) if max_matvecs is None else max_matvecs)
    assert (
        result.eigenvalues.shape == (k,)
        and result.eigenvectors.shape == (dim, k)
        and result.residuals.shape == (k,)
    )
    assert k <= result.num_matvecs <= budget
    assert result.converged or result.num_matvecs == budget
    _assert_orthonormal(result.eigenvectors, 1e-10)
    scale = float(spectrum.abs().max())
    explicit = _explicit_residuals(A, result.eigenvalues, result.eigenvectors)
    torch.testing.assert_close(result.residuals, explicit, atol=1e-10 * scale, rtol=1e-6)
    true = torch.linalg.eigvalsh(A)
    distance = (result.eigenvalues[:, None] - true[None, :]).abs().min(dim=1).values
    assert bool((distance <= explicit + 1e-12 * scale).all())
    key = {"LA": result.eigenvalues, "SA": -result.eigenvalues, "LM": result.eigenvalues.abs()}[which]
    assert bool((key[:-1] >= key[1:] - 1e-12 * scale).all())
    if result.converged and levels is None:
        expected = _wanted(true, k, which)
        got = result.eigenvalues.abs() if which == "LM" else result.eigenvalues
        torch.testing.assert_close(
            got, expected.abs() if which == "LM" else expected, atol=1e-8 * scale, rtol=0
        )


def test_guarded_warm_start_finds_an_eigenvalue_that_crossed_the_old_top():
    """A warm start from the old top eigenvector alone misses a direction that rose above it (Lanczos
    converges to the old pair, a true eigenpair, in a few steps); the guarded start finds the new top."""
    from lightning_spectral.linalg import guarded_start

    dim = 600
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    before = torch.linspace(0, 4, dim, dtype=torch.float64)
    before[-1], before[-2], before[-3] = 10.0, 9.0, 5.0
    after = before.clone()
    after[-3] = 12.0  # crossing: the third direction is now the top one
    A = (Q * after) @ Q.T
    old_top = Q[:, -1] + 1e-2 * torch.randn(dim, generator=g, dtype=torch.float64) / dim**0.5
    unguarded = [
        lanczos(lambda v: A @ v, dim, 1, tol=1e-3, v0=old_top, generator=torch.Generator().manual_seed(s))
        for s in range(5)
    ]
    assert all(abs(r.eigenvalues[0].item() - 10.0) < 1e-3 for r in unguarded)  # the failure being guarded
    for seed in range(5):
        start = guarded_start(old_top, torch.Generator().manual_seed(seed))
        result = lanczos(
            lambda v: A @ v, dim, 1, tol=1e-3, v0=start, generator=torch.Generator().manual_seed(seed)
        )
        assert result.eigenvalues[0].item() == pytest.approx(12.0, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_basis_stays_orthonormal_while_ritz_values_converge(symmetric_with_eigenvalues, dtype):
    """The regime where the three-term recurrence alone loses orthogonality (Paige): a spectrum with
    well-separated outliers whose Ritz values converge in a few steps, run for many more steps. One Gram–Schmidt
    pass plus the DGKS-triggered second one must keep ``VᵀV = I`` to working precision (without them the
    converged directions come back and ``VᵀV`` has O(1) entries off the diagonal)."""
    from lightning_spectral.linalg.lanczos import _lanczos_tridiagonal

    eigenvalues = torch.cat(
        [torch.tensor([100.0, 50.0, 20.0], dtype=F64), torch.logspace(0, -6, 197, dtype=F64)]
    )
    A = symmetric_with_eigenvalues(eigenvalues).to(dtype)
    start = torch.randn(200, dtype=dtype, generator=_gen(3))
    state = _lanczos_tridiagonal(lambda v: A @ v, start, 80)
    V = state.basis[: state.num_steps].mT
    eps = torch.finfo(dtype).eps
    _assert_orthonormal(V, 50 * eps)
    # and T is the projection of A onto the basis (the recurrence and the passes agree)
    T = torch.from_numpy(state.tridiagonal()).to(dtype)
    torch.testing.assert_close(V.mT @ A @ V, T, atol=200 * eps * 100.0, rtol=0)


@pytest.mark.parametrize("scale", [1e6, 1e10])
def test_second_gram_schmidt_pass_runs_when_the_first_cancels_most_of_the_vector(
    symmetric_with_eigenvalues, scale
):
    """A product with a huge component along the start vector (here a non-symmetric rank-one term, the extreme
    form of the asymmetry a float32 HVP has): one pass removes it only to ``ε·‖w‖`` relative to the large
    norm, which after the cancellation is far above ``ε`` relative to what is left. The DGKS test must see the
    cancellation and run the second pass; with one pass the basis loses orthogonality by ~1e-10 (scale 1e6). At
    scale 1e10 the second pass also changes the vector's norm measurably: the next basis vector must be divided
    by the norm after it."""
    from lightning_spectral.linalg.lanczos import _lanczos_tridiagonal

    A = symmetric_with_eigenvalues(torch.linspace(1.0, 2.0, 100, dtype=F64))
    start = torch.randn(100, dtype=F64, generator=_gen(4))
    u = start / torch.linalg.vector_norm(start)
    weights = torch.randn(100, dtype=F64, generator=_gen(5))
    state = _lanczos_tridiagonal(lambda v: A @ v + scale * u * (weights @ v), start, 30)
    V = state.basis[: state.num_steps].mT
    _assert_orthonormal(V, 50 * torch.finfo(F64).eps)


# ----------------------------------------------------------------------------------------------- small_eigh
def _tridiagonal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    alphas, betas = rng.normal(size=n), rng.uniform(0.1, 1.0, size=n - 1)
    return np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_small_eigh_is_an_eigendecomposition(n):
    T = _tridiagonal(n, seed=n)
    theta, S = small_eigh(T)
    assert theta.dtype == S.dtype == np.float64 and theta.shape == (n,) and S.shape == (n, n)
    assert np.all(np.diff(theta) >= 0)  # ascending, like numpy.linalg.eigh
    np.testing.assert_allclose(theta, np.linalg.eigvalsh(T), rtol=0, atol=1e-12)
    np.testing.assert_allclose(S.T @ S, np.eye(n), rtol=0, atol=1e-12)
    np.testing.assert_allclose(T @ S, S * theta, rtol=0, atol=1e-12)
    values, none = small_eigh(T, eigenvectors=False)
    assert none is None
    np.testing.assert_allclose(values, theta, rtol=0, atol=1e-12)


def test_lanczos_and_slq_do_not_call_numpy_lapack(monkeypatch):
    """NumPy's bundled OpenBLAS keeps its own thread pool, which stalls against torch's (issue #26)."""

    def refuse(*args, **kwargs):
        raise AssertionError("numpy.linalg was called inside a Lanczos loop")

    for name in ("eigh", "eigvalsh", "eig", "svd", "qr", "solve"):
        monkeypatch.setattr(np.linalg, name, refuse)
    generator = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(60, 60, dtype=torch.float64, generator=generator))
    eigenvalues = torch.cat([torch.tensor([9.0, 9.0, 7.0]), torch.linspace(-1.0, 1.0, 57)]).double()
    A = Q @ torch.diag(eigenvalues) @ Q.T
    result = lanczos(lambda v: A @ v, 60, 3, max_matvecs=60, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(result.eigenvalues, eigenvalues[:3], rtol=0, atol=1e-8)
    density = slq_density(
        lambda v: A @ v, 60, num_probes=2, num_steps=10, dtype=torch.float64, generator=generator
    )
    assert density.nodes.shape == (2, 10)


# --------------------------------------------------------------------------- eigenvalue_tol (gap-based stopping)
def test_eigenvalue_error_bounds_are_quadratic_where_the_gap_is_clear_and_the_residual_where_it_is_not():
    from lightning_spectral.linalg.lanczos import eigenvalue_error_bounds

    theta = np.array([2.0, 1.0, 0.0])
    residuals = np.array([0.1, 0.2, 0.3])
    # θ_1: nearest other Ritz value moved by its residual: min(2 - 1 - 0.2, 2 - 0 - 0.3) = 0.8
    np.testing.assert_allclose(eigenvalue_error_bounds(theta, residuals)[0], 0.1**2 / 0.8, rtol=1e-15)
    # a neighbour within the residuals: no gap is known, the bound is the residual itself
    np.testing.assert_allclose(
        eigenvalue_error_bounds(np.array([1.0, 0.999]), np.array([1e-3, 1e-3])), [1e-3] * 2
    )
    # a single Ritz value: the residual
    np.testing.assert_allclose(eigenvalue_error_bounds(np.array([3.0]), np.array([0.5])), [0.5])


SEPARATED = torch.cat([torch.tensor([10.0, 9.0], dtype=F64), torch.linspace(0.0, 5.0, 198, dtype=F64)])


def _eigenvalue_tol_run(A: torch.Tensor, k: int, eigenvalue_tol: float):
    """Lanczos with the gap-based rule alone (the residual test at 1e-14 never fires first), float64."""
    dim = A.shape[0]
    return lanczos(
        lambda v: A @ v,
        dim,
        k,
        max_matvecs=dim,
        tol=1e-14,
        eigenvalue_tol=eigenvalue_tol,
        dtype=F64,
        generator=_gen(),
    )


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("eigenvalue_tol", [1e-3, 1e-8])
def test_eigenvalue_tol_keeps_the_eigenvalues_within_it_with_fewer_products(
    symmetric_with_eigenvalues, k, eigenvalue_tol
):
    """Against the exact spectrum: every returned eigenvalue within ``eigenvalue_tol`` (relative), and fewer
    products than the residual test that gives the same guarantee (``|θ − λ| <= r``, so ``tol=eigenvalue_tol``)."""
    A = symmetric_with_eigenvalues(SEPARATED, seed=3)
    exact = SEPARATED[:k]
    quadratic = _eigenvalue_tol_run(A, k, eigenvalue_tol)
    residual = lanczos(
        lambda v: A @ v, 200, k, max_matvecs=200, tol=eigenvalue_tol, dtype=F64, generator=_gen()
    )
    assert quadratic.converged and residual.converged
    assert bool(((quadratic.eigenvalues - exact).abs() <= eigenvalue_tol * exact).all()), (
        quadratic.eigenvalues
    )
    assert quadratic.num_matvecs < residual.num_matvecs


@pytest.mark.parametrize("gap", [1e-3, 1e-6])
def test_eigenvalue_tol_stays_honest_when_the_top_gap_is_nearly_degenerate(symmetric_with_eigenvalues, gap):
    """λ_1 = 1 and λ_2 = 1 − gap over a bulk in [0, 0.95]: while the two are not resolved the Ritz values lie close
    together, no gap is known and the bound is the residual, so the iteration does not stop early. (A bound that
    took the gap from the spread of the Ritz values instead of the nearest one is off by up to 500× here.)"""
    spectrum = torch.cat(
        [torch.tensor([1.0, 1.0 - gap], dtype=F64), torch.linspace(0.0, 0.95, 298, dtype=F64)]
    )
    A = symmetric_with_eigenvalues(spectrum, seed=5)
    for eigenvalue_tol in (1e-4, 1e-7, 1e-10):
        result = _eigenvalue_tol_run(A, 2, eigenvalue_tol)
        assert result.converged
        error = (result.eigenvalues - spectrum[:2]).abs()
        assert bool((error <= eigenvalue_tol * spectrum[:2]).all()), (gap, eigenvalue_tol, error)


@pytest.mark.parametrize(
    "value, error",
    [(0.0, ValueError), (-1e-3, ValueError), (float("inf"), ValueError), (float("nan"), ValueError)]
    + [(True, TypeError), ("1e-3", TypeError)],
)
def test_invalid_eigenvalue_tol(value, error):
    with pytest.raises(error, match=r"`eigenvalue_tol` must be a positive finite number"):
        lanczos(lambda v: v, 10, 1, eigenvalue_tol=value)
