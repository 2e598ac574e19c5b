"""Tests of weight_spectrum / weight_spectra against dense float64 references (torch.linalg.svdvals)."""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Iterator

import pytest
import torch

from lightning_spectral.functional.weights.spectrum import (
    CROSSOVER_FACTOR,
    DEFAULT_K,
    WeightSpectrum,
    weight_spectra,
    weight_spectrum,
)

ws_module = importlib.import_module(
    "lightning_spectral.functional.weights.spectrum"
)  # the module, not the function


def _orthonormal(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64)).Q


def _with_spectrum(
    m: int, n: int, sigma: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``W = U diag(sigma) Vᵀ`` (float64) with random orthonormal ``U (m, r)``, ``V (n, r)``."""
    g = torch.Generator().manual_seed(seed)
    r = sigma.numel()
    U, V = _orthonormal(m, r, g), _orthonormal(n, r, g)
    return (U * sigma.double()) @ V.T, U, V


def _entropy_rank(sigma: torch.Tensor) -> float:
    p = sigma.double() / sigma.double().sum()
    return math.exp(-float(torch.special.xlogy(p, p).sum()))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()).abs() / b.double().abs()).max())


DECAYING = 10.0 * 0.9 ** torch.arange(150, dtype=torch.float64)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """These matrices are small: intra-op threads gain nothing, and on a shared 2-core machine their
    oversubscription made LAPACK calls ~6x slower. Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("shape", [(80, 60), (60, 80), (30, 30)])
def test_exact_matches_svdvals(shape: tuple[int, int]) -> None:
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    reference = torch.linalg.svdvals(W.double())
    s = weight_spectrum(W, k=7, method="exact")
    assert s.method_used == "exact" and s.singular_values.dtype == torch.float32
    assert s.singular_values.device.type == "cpu" and s.singular_values.shape == (7,)
    assert _rel_err(s.singular_values, reference[:7]) <= 1e-3
    assert _rel_err(s.all_singular_values, reference) <= 1e-3
    # the vectors are singular vectors: W v_i = sigma_i u_i
    torch.testing.assert_close(W @ s.right_vectors, s.left_vectors * s.singular_values, rtol=0, atol=1e-4)
    assert s.left_vectors.shape == (shape[0], 7) and s.right_vectors.shape == (shape[1], 7)


@pytest.mark.parametrize("shape", [(300, 150), (150, 300)])
def test_randomized_matches_svdvals_on_decaying_spectrum(shape: tuple[int, int]) -> None:
    W, _, _ = _with_spectrum(*shape, DECAYING, seed=1)
    reference = torch.linalg.svdvals(W)
    s = weight_spectrum(W.float(), k=5, method="randomized", generator=torch.Generator().manual_seed(0))
    assert s.method_used == "randomized" and s.all_singular_values is None
    assert _rel_err(s.singular_values, reference[:5]) <= 1e-3
    torch.testing.assert_close(
        W.float() @ s.right_vectors,
        s.left_vectors * s.singular_values,
        rtol=0,
        atol=1e-3 * float(reference[0]),
    )


def test_float64_weight_is_computed_in_float64() -> None:
    W, _, _ = _with_spectrum(120, 100, DECAYING[:100], seed=2)
    reference = torch.linalg.svdvals(W)
    for method in ("exact", "randomized"):
        s = weight_spectrum(
            W, k=4, method=method, num_power_iterations=4, generator=torch.Generator().manual_seed(0)
        )
        assert s.singular_values.dtype == torch.float64 and s.left_vectors.dtype == torch.float64
        assert _rel_err(s.singular_values, reference[:4]) <= 1e-10


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weight_computed_in_float32(dtype: torch.dtype) -> None:
    W = torch.randn(64, 48, generator=torch.Generator().manual_seed(3)).to(dtype)
    s = weight_spectrum(W, k=3, method="exact")
    assert s.singular_values.dtype == torch.float32 and s.left_vectors.dtype == torch.float32
    upcast = W.float()
    torch.testing.assert_close(s.singular_values, torch.linalg.svdvals(upcast)[:3], rtol=1e-5, atol=0)
    assert s.frobenius_norm == pytest.approx(float(torch.linalg.matrix_norm(upcast.double())), rel=1e-6)
    assert W.dtype == dtype  # input untouched


def test_weight_is_not_modified_and_no_graph_is_built() -> None:
    W = torch.nn.Parameter(torch.randn(20, 30, generator=torch.Generator().manual_seed(4)))
    before = W.detach().clone()
    s = weight_spectrum(W)
    assert torch.equal(W.detach(), before)
    assert not s.left_vectors.requires_grad and not s.singular_values.requires_grad


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_equal_their_definitions_on_exact_path() -> None:
    sigma = torch.tensor([5.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.0], dtype=torch.float64)
    W, _, _ = _with_spectrum(20, 12, sigma, seed=5)
    reference = torch.linalg.svdvals(W)
    s = weight_spectrum(W.float(), k=3, method="exact")
    fro = float(torch.linalg.matrix_norm(W))
    assert s.sigma_max == pytest.approx(5.0, rel=1e-6)
    assert s.frobenius_norm == pytest.approx(fro, rel=1e-6)
    assert s.stable_rank == pytest.approx(fro**2 / float(reference[0]) ** 2, rel=1e-5)
    assert s.effective_rank == pytest.approx(_entropy_rank(reference), rel=1e-5)
    assert not s.effective_rank_is_estimate
    assert s.condition_number == pytest.approx(5.0 / 2.0, rel=1e-5)
    assert s.rotation is None


def test_effective_rank_estimate_exact_for_flat_tail() -> None:
    sigma = torch.cat([torch.tensor([10.0, 8.0, 6.0, 4.0, 3.0]), torch.ones(195)]).double()
    W, _, _ = _with_spectrum(300, 200, sigma, seed=6)
    s = weight_spectrum(W.float(), k=5, method="randomized", generator=torch.Generator().manual_seed(0))
    assert s.effective_rank_is_estimate
    assert s.effective_rank == pytest.approx(_entropy_rank(sigma), rel=1e-3)


def test_effective_rank_estimate_over_estimates_decaying_tail_within_band() -> None:
    """For σ_i ∝ i^{-1/2} the flat-tail estimate is 12 % high (band: 0–20 %)."""
    sigma = 10.0 * torch.arange(1, 201, dtype=torch.float64) ** -0.5
    W, _, _ = _with_spectrum(300, 200, sigma, seed=7)
    s = weight_spectrum(W.float(), k=5, method="randomized", generator=torch.Generator().manual_seed(0))
    ratio = s.effective_rank / _entropy_rank(sigma)
    assert 1.0 < ratio < 1.2


def test_zero_and_rank_deficient_matrices() -> None:
    z = weight_spectrum(torch.zeros(12, 8), k=2)
    assert z.sigma_max == 0.0 and z.stable_rank == 0.0 and z.effective_rank == 0.0
    assert math.isnan(z.condition_number)
    rank_one = torch.outer(torch.arange(1.0, 13.0), torch.ones(8))
    s = weight_spectrum(rank_one, k=3)
    assert s.stable_rank == pytest.approx(1.0, rel=1e-5)
    assert s.effective_rank == pytest.approx(1.0, rel=1e-4)
    assert s.condition_number > 1e5  # sigma_2, sigma_3 are float32 rounding noise of order eps * sigma_1
    assert weight_spectrum(torch.diag(torch.tensor([3.0, 2.0, 0.0])), k=3).condition_number == math.inf


def test_alpha_recovers_power_law_of_eigenvalues() -> None:
    """Eigenvalues of WᵀW drawn from a Pareto law with exponent 2.5: the exact path fits alpha ≈ 2.5."""
    g = torch.Generator().manual_seed(8)
    eigenvalues = (1.0 - torch.rand(400, generator=g, dtype=torch.float64)) ** (-1.0 / 1.5)
    W, _, _ = _with_spectrum(600, 400, eigenvalues.sqrt(), seed=9)
    s = weight_spectrum(W.float(), method="exact")
    assert s.power_law is not None and s.alpha == s.power_law.alpha
    assert abs(s.alpha - 2.5) < 0.3
    # the fit is the documented one on the exact eigenvalues
    from lightning_spectral.functional.weights.power_law import power_law_alpha

    assert s.alpha == pytest.approx(power_law_alpha(torch.linalg.svdvals(W) ** 2).alpha, abs=0.02)


def test_alpha_of_heavy_tailed_matrix() -> None:
    """i.i.d. entries with P(|w| > x) ~ x^{-1}: the ESD tail exponent is 1 + 1/2 (Martin & Mahoney)."""
    g = torch.Generator().manual_seed(10)
    signs = torch.where(torch.rand(300, 600, generator=g) < 0.5, -1.0, 1.0)
    W = signs * (1.0 - torch.rand(300, 600, generator=g)) ** -1.0
    s = weight_spectrum(W, method="exact")
    assert abs(s.alpha - 1.5) < 0.3


def test_alpha_skipped_when_not_fitted() -> None:
    assert weight_spectrum(torch.randn(9, 40), method="exact").alpha is None  # 9 < min_tail eigenvalues
    big = torch.randn(200, 100, generator=torch.Generator().manual_seed(0))
    assert weight_spectrum(big, method="randomized").alpha is None  # no full spectrum
    assert weight_spectrum(big, method="exact").alpha is not None


# ---------------------------------------------------------------------------------------------- rotation


def _rotated(
    seed: int, angle: float, k: int = 3, orthogonal: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A matrix and a copy whose top-k left subspace is rotated by ``angle`` towards an unused direction
    (in one plane), or replaced by ``k`` orthogonal directions."""
    g = torch.Generator().manual_seed(seed)
    m, n, r = 60, 50, 40
    U, V = _orthonormal(m, r + k, g), _orthonormal(n, r, g)
    # a gap after the top k so that the top-k subspace is well defined (and found by the randomized method)
    sigma = torch.cat([torch.linspace(10.0, 8.0, k), torch.linspace(3.0, 0.1, r - k)]).double()
    before = (U[:, :r] * sigma) @ V.T
    U_new = U[:, :r].clone()
    if orthogonal:
        U_new[:, :k] = U[:, r : r + k]
    else:
        U_new[:, 0] = math.cos(angle) * U[:, 0] + math.sin(angle) * U[:, r]
    return before, (U_new * sigma) @ V.T


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_rotation_zero_for_unchanged_matrix(method: str) -> None:
    W, _ = _rotated(0, 0.0)
    g = torch.Generator().manual_seed(0)
    first = weight_spectrum(W.float(), k=3, method=method, num_power_iterations=4, generator=g)
    second = weight_spectrum(
        W.float(), k=3, method=method, num_power_iterations=4, previous=first, generator=g
    )
    assert 0.0 <= second.rotation <= 1e-5


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_rotation_one_for_orthogonal_replacement(method: str) -> None:
    before, after = _rotated(1, 0.0, orthogonal=True)
    g = torch.Generator().manual_seed(0)
    first = weight_spectrum(before.float(), k=3, method=method, num_power_iterations=4, generator=g)
    second = weight_spectrum(
        after.float(), k=3, method=method, num_power_iterations=4, previous=first, generator=g
    )
    assert second.rotation >= 0.99


@pytest.mark.parametrize("method", ["exact", "randomized"])
@pytest.mark.parametrize("angle", [math.pi / 6, math.pi / 3])
def test_partial_rotation_has_expected_value(method: str, angle: float) -> None:
    """Rotating one of k=3 top directions by θ out of the subspace: rotation = sin²θ / 3."""
    before, after = _rotated(2, angle)
    g = torch.Generator().manual_seed(0)
    first = weight_spectrum(before.float(), k=3, method=method, num_power_iterations=4, generator=g)
    second = weight_spectrum(
        after.float(), k=3, method=method, num_power_iterations=4, previous=first, generator=g
    )
    assert second.rotation == pytest.approx(math.sin(angle) ** 2 / 3, abs=1e-4)


def test_rotation_invariant_to_sign_flips() -> None:
    before, after = _rotated(3, math.pi / 5)
    first = weight_spectrum(before.float(), k=3, method="exact")
    flipped = dataclasses.replace(first, left_vectors=first.left_vectors * torch.tensor([-1.0, 1.0, -1.0]))
    a = weight_spectrum(after.float(), k=3, method="exact", previous=first).rotation
    b = weight_spectrum(after.float(), k=3, method="exact", previous=flipped).rotation
    assert a == pytest.approx(b, abs=1e-6)
    assert a == pytest.approx(math.sin(math.pi / 5) ** 2 / 3, abs=1e-4)


def test_rotation_uses_common_rank_of_previous() -> None:
    before, after = _rotated(4, math.pi / 4)
    first = weight_spectrum(before.float(), k=1, method="exact")  # k'=1: the rotated direction alone
    second = weight_spectrum(after.float(), k=3, method="exact", previous=first)
    assert second.rotation == pytest.approx(math.sin(math.pi / 4) ** 2, abs=1e-4)


# ---------------------------------------------------------------------------------------------- warm start


def test_warm_start_needs_no_power_iteration() -> None:
    sigma = torch.cat([torch.tensor([10.0, 9.0, 8.0, 7.0, 6.0]), torch.linspace(5.5, 0.1, 195)]).double()
    W, _, _ = _with_spectrum(400, 300, sigma, seed=11)
    g = torch.Generator().manual_seed(0)
    earlier = weight_spectrum(W.float(), k=5, method="exact")
    W_next = (W + 1e-3 * torch.randn(400, 300, generator=g, dtype=torch.float64)).float()
    reference = torch.linalg.svdvals(W_next.double())[:5]
    raw = dict(
        k=5, method="randomized", num_power_iterations=0, generator=g, tol=None
    )  # the sketch alone, unchecked
    cold = weight_spectrum(W_next, **raw)
    warm = weight_spectrum(W_next, previous=earlier, **raw)
    assert _rel_err(warm.singular_values, reference) <= 1e-4
    assert _rel_err(cold.singular_values, reference) >= 1e-2  # the flat spectrum defeats a cold single pass
    assert warm.rotation <= 1e-4
    # with the default check the cold result is caught by its residual and refined; the warm one passes
    checked_cold = weight_spectrum(W_next, k=5, method="randomized", num_power_iterations=0, generator=g)
    checked_warm = weight_spectrum(
        W_next, k=5, method="randomized", num_power_iterations=0, previous=earlier, generator=g
    )
    assert checked_cold.refined and not checked_warm.refined
    assert cold.relative_residual > ws_module.DEFAULT_TOL >= checked_cold.relative_residual
    assert _rel_err(checked_cold.singular_values, reference) <= 1e-4


def test_a_direction_that_grew_into_the_top_k_is_found_from_a_warm_start() -> None:
    """``σ_i = 10·0.99^i`` (400 × 300); the weakest direction grows to 1.05·σ_5 before the next measurement. The
    previous vectors alone pass the residual check (they are still singular vectors); the cold start's Gaussian
    columns after them find the newcomer (before: missed in 3 of these 5 seeds, rotation 0 instead of 1/5)."""
    base = 10 * 0.99 ** torch.arange(300, dtype=torch.float64)
    grown = base.clone()
    grown[-1] = 1.05 * base[4]
    W1, U, V = _with_spectrum(400, 300, base, seed=19)
    W2 = (U * grown) @ V.T
    reference = torch.linalg.svdvals(W2)[:5]
    for seed in range(5):
        earlier = weight_spectrum(W1.float(), k=5, generator=torch.Generator().manual_seed(seed))
        later = weight_spectrum(
            W2.float(), k=5, previous=earlier, generator=torch.Generator().manual_seed(100 + seed)
        )
        assert _rel_err(later.singular_values, reference) <= 1e-4, seed
        assert later.rotation == pytest.approx(0.2, abs=1e-3), seed  # one of five directions is new


def test_warm_start_passes_previous_right_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = ws_module.randomized_svd

    def spy(A, k, **kwargs):  # noqa: ANN001, ANN202
        seen.append(kwargs["init"])
        return original(A, k, **kwargs)

    monkeypatch.setattr(ws_module, "randomized_svd", spy)
    W = torch.randn(100, 90, generator=torch.Generator().manual_seed(0))
    first = weight_spectrum(W, method="randomized")
    weight_spectrum(W, method="randomized", previous=first)
    assert seen[0] is None
    assert torch.equal(seen[1], first.right_vectors.unsqueeze(0))


# ---------------------------------------------------------------------------------------------- batching


def test_batched_equals_individual_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(12)
    shapes = [(120, 100), (60, 30), (120, 100), (100, 120), (120, 100), (60, 30)]
    mats = [
        _with_spectrum(m, n, DECAYING[: min(m, n)], seed=20 + i)[0].float() for i, (m, n) in enumerate(shapes)
    ]
    calls = []
    original = ws_module.randomized_svd

    def counting(A, k, **kwargs):  # noqa: ANN001, ANN202
        calls.append(tuple(A.shape))
        return original(A, k, **kwargs)

    monkeypatch.setattr(ws_module, "randomized_svd", counting)
    batched = weight_spectra(mats, k=4, generator=g, num_power_iterations=3)
    # one call per distinct large shape; (60, 30) is below the crossover and goes exact
    assert calls == [(3, 120, 100), (1, 100, 120)]
    for W, b in zip(mats, batched):
        single = weight_spectrum(W, k=4, generator=g, num_power_iterations=3)
        assert b.method_used == single.method_used and b.shape == tuple(W.shape)
        torch.testing.assert_close(b.singular_values, single.singular_values, rtol=1e-4, atol=0)
        for field in ("frobenius_norm", "stable_rank", "effective_rank", "condition_number"):
            assert getattr(b, field) == pytest.approx(getattr(single, field), rel=1e-4)
        assert _rel_err(b.singular_values, torch.linalg.svdvals(W.double())[:4]) <= 1e-3


def test_batched_previous_and_chunking() -> None:
    g = torch.Generator().manual_seed(13)
    mats = [torch.randn(90, 80, generator=g) for _ in range(5)]
    exact = weight_spectra(mats, k=3, method="exact")
    chunked = weight_spectra(mats, k=3, method="exact", max_batch_numel=2 * 90 * 80)
    for a, b in zip(exact, chunked):
        torch.testing.assert_close(a.singular_values, b.singular_values, rtol=1e-5, atol=0)
    # previous for some of them only: rotation where given, None elsewhere
    again = weight_spectra(mats, k=3, method="exact", previous=[exact[0], None, exact[2], None, None])
    assert [s.rotation is None for s in again] == [False, True, False, True, True]
    assert again[0].rotation <= 1e-5 and again[2].rotation <= 1e-5


# ---------------------------------------------------------------------------------------------- method choice


def test_auto_method_and_threshold() -> None:
    crossover = CROSSOVER_FACTOR * (DEFAULT_K + 10)
    small = torch.randn(crossover, 200)
    large = torch.randn(crossover + 1, 200)
    assert weight_spectrum(small).method_used == "exact"
    assert weight_spectrum(large).method_used == "randomized"
    assert weight_spectrum(large, exact_threshold=crossover + 1).method_used == "exact"
    assert weight_spectrum(small, exact_threshold=0).method_used == "randomized"
    assert weight_spectrum(small, k=20).method_used == "exact"  # crossover grows with k
    # a randomized sketch as large as the matrix is the dense SVD
    assert weight_spectrum(torch.randn(14, 200), method="randomized").method_used == "exact"


def test_k_default_and_clipping() -> None:
    assert weight_spectrum(torch.randn(50, 40)).singular_values.numel() == DEFAULT_K
    s = weight_spectrum(torch.randn(3, 40), k=10)
    assert s.singular_values.numel() == 3 and s.left_vectors.shape == (3, 3)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"k": 0}, "k"),
        ({"k": 2.0}, "k"),
        ({"method": "svd"}, "method"),
        ({"num_power_iterations": -1}, "num_power_iterations"),
        ({"num_oversamples": -2}, "num_oversamples"),
        ({"exact_threshold": -1}, "exact_threshold"),
        ({"min_tail": 1}, "min_tail"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        weight_spectrum(torch.randn(10, 10), **kwargs)


def test_bad_weights_and_previous() -> None:
    with pytest.raises(ValueError, match="`weight`.*2-D"):
        weight_spectrum(torch.randn(2, 3, 4))
    with pytest.raises(TypeError, match="`weight`"):
        weight_spectrum(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="`weight`.*non-finite"):
        weight_spectrum(torch.tensor([[1.0, math.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="`weight`.*overflows"):
        weight_spectrum(torch.full((3, 3), 1e30))  # finite, but ‖W‖_F² overflows float32
    with pytest.raises(ValueError, match="`matrices\\[1\\]`.*non-finite"):
        weight_spectra([torch.eye(3), torch.full((3, 3), math.inf)])
    earlier = weight_spectrum(torch.randn(6, 5))
    with pytest.raises(ValueError, match="`previous`"):
        weight_spectrum(torch.randn(5, 6), previous=earlier)
    with pytest.raises(TypeError, match="`previous`"):
        weight_spectrum(torch.randn(6, 5), previous=earlier.singular_values)
    with pytest.raises(ValueError, match="`previous`.*same length"):
        weight_spectra([torch.randn(6, 5)], previous=[])
    with pytest.raises(TypeError, match="`matrices`"):
        weight_spectra(torch.randn(6, 5))
    assert isinstance(weight_spectra([torch.randn(6, 5)])[0], WeightSpectrum)
