"""FARMS (Hu et al., ICML 2025): the exponent of the average ESD of fixed-aspect-ratio submatrices."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from lightning_spectral.functional import farms_alpha, power_law_alpha


def _gaussian(m: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(n)


def _median_alpha(eigenvalues: torch.Tensor) -> float:
    """The plain exponent with the same x_min rule (median eigenvalue) as FARMS' default."""
    ordered = torch.sort(eigenvalues).values
    return power_law_alpha(ordered, xmin=float(ordered[ordered.numel() // 2])).alpha


def test_pooled_exponent_matches_explicit_blocks() -> None:
    # reference: slice every block by hand, pool svdvals², MLE above the median
    weight = _gaussian(60, 150, seed=0)
    result = farms_alpha(weight, submatrix_size=40, num_windows=3)
    rows, cols = [0, 10, 20], [0, 55, 110]
    pooled = torch.cat(
        [torch.linalg.svdvals(weight[r : r + 40, c : c + 40]) ** 2 for r in rows for c in cols]
    )
    pooled = torch.sort(pooled).values
    xmin = float(pooled[pooled.numel() // 2])
    tail = pooled[pooled >= xmin]
    expected = 1.0 + tail.numel() / float(torch.log(tail / xmin).sum())
    assert result.submatrix_shape == (40, 40) and result.num_submatrices == 9
    assert result.alpha == pytest.approx(expected, rel=1e-12)
    assert result.power_law.num_tail == tail.numel()


def test_jackknife_matches_explicit_leave_one_out() -> None:
    weight = _gaussian(80, 80, seed=1)
    result = farms_alpha(weight, submatrix_size=40, num_windows=2)
    blocks = [torch.linalg.svdvals(weight[r : r + 40, c : c + 40]) ** 2 for r in (0, 40) for c in (0, 40)]
    xmin = result.power_law.xmin
    leave_one_out = []
    for k in range(4):
        tail = torch.cat([b for j, b in enumerate(blocks) if j != k])
        tail = tail[tail >= xmin]
        leave_one_out.append(1.0 + tail.numel() / float(torch.log(tail / xmin).sum()))
    mean = sum(leave_one_out) / 4
    expected = math.sqrt(3 / 4 * sum((a - mean) ** 2 for a in leave_one_out))
    assert result.alpha_std_error == pytest.approx(expected, rel=1e-10)


def test_farms_removes_the_aspect_ratio_bias_of_gaussian_matrices() -> None:
    # i.i.d. Gaussian 100 x n, aspect ratios 1..8: no heavy tail at all, so the exponent should not move
    plain_ks, plain_median, farms = [], [], []
    for n in (100, 200, 400, 800):
        seeds = range(3)
        plain_ks.append(
            statistics.mean(
                power_law_alpha(torch.linalg.svdvals(_gaussian(100, n, s)) ** 2).alpha for s in seeds
            )
        )
        plain_median.append(
            statistics.mean(_median_alpha(torch.linalg.svdvals(_gaussian(100, n, s)) ** 2) for s in seeds)
        )
        farms.append(
            statistics.mean(
                farms_alpha(_gaussian(100, n, s), submatrix_size=50, num_windows=5).alpha for s in seeds
            )
        )
    farms_spread = max(farms) - min(farms)
    assert max(plain_median) - min(plain_median) > 10 * farms_spread  # same x_min rule, bias removed
    assert plain_median[-1] > 1.5 * plain_median[0]  # the bias: the plain exponent grows with the ratio
    assert farms_spread < 0.05 * statistics.mean(farms)
    assert max(plain_ks) / min(plain_ks) > 1.3  # the KS-selected plain alpha drifts as well


@pytest.mark.parametrize(("mu", "n"), [(1.0, 200), (1.0, 800), (1.5, 200), (1.5, 800)])
def test_recovers_a_planted_power_law_exponent(mu: float, n: int) -> None:
    """Entries with P(|w| > x) ~ x^{-mu}: every block of such a matrix has the ESD tail alpha = 1 + mu/2
    (Martin & Mahoney 2021; the plain fit's test in test_power_law.py), at aspect ratio 1 and 4."""
    g = torch.Generator().manual_seed(0)
    signs = torch.where(torch.rand(200, n, generator=g) < 0.5, -1.0, 1.0).double()
    weight = signs * (1.0 - torch.rand(200, n, generator=g, dtype=torch.float64)) ** (-1.0 / mu)
    for fit in ("default", "weightwatcher"):
        result = farms_alpha(weight, submatrix_size=100, num_windows=4, xmin="ks", fit=fit)
        assert abs(result.alpha - (1.0 + mu / 2.0)) < 0.2, fit
        assert result.submatrix_shape == (100, 100) and result.num_submatrices == 16


def test_jackknife_error_tracks_the_spread_over_seeds() -> None:
    # disjoint blocks (4 x 4 tiling of 200 x 200 by 50 x 50): the jackknife is within a small factor of the
    # actual seed-to-seed spread of the estimate
    for sample in (
        lambda g: torch.randn(200, 200, generator=g, dtype=torch.float64),
        lambda g: torch.distributions.StudentT(2.0).sample((200, 200)).double(),
    ):
        alphas, errors = [], []
        for seed in range(25):
            g = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed)
            result = farms_alpha(sample(g), submatrix_size=50, num_windows=4)
            alphas.append(result.alpha)
            errors.append(result.alpha_std_error)
        ratio = statistics.mean(errors) / statistics.stdev(alphas)
        assert 0.4 < ratio < 2.0, ratio


def test_small_matrix_single_block_and_shapes() -> None:
    weight = _gaussian(30, 30, seed=4)
    result = farms_alpha(weight)  # smaller than one 100 x 100 block: one block, the whole matrix
    assert result.num_submatrices == 1 and result.submatrix_shape == (30, 30)
    assert result.alpha == pytest.approx(_median_alpha(torch.linalg.svdvals(weight) ** 2), rel=1e-12)
    assert result.alpha_std_error == result.power_law.alpha_std_error
    tall = farms_alpha(_gaussian(300, 40, seed=5), aspect_ratio=2.0, num_windows=3)
    assert tall.submatrix_shape == (80, 40) and tall.num_submatrices == 3  # long side along the long side
    assert farms_alpha(torch.eye(4)) is None


def test_float32_and_chunking_agree() -> None:
    weight = _gaussian(120, 240, seed=6)
    whole = farms_alpha(weight.float(), submatrix_size=60, num_windows=4)
    chunked = farms_alpha(weight.float(), submatrix_size=60, num_windows=4, max_batch_numel=60 * 60 * 3)
    exact = farms_alpha(weight, submatrix_size=60, num_windows=4)
    assert chunked.alpha == whole.alpha
    assert whole.alpha == pytest.approx(exact.alpha, rel=1e-4)


def test_weight_not_modified_and_no_grad() -> None:
    weight = _gaussian(50, 80, seed=8).requires_grad_()
    before = weight.detach().clone()
    farms_alpha(weight, submatrix_size=20)
    assert torch.equal(weight.detach(), before) and weight.grad is None


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"submatrix_size": 1}, "submatrix_size"),
        ({"aspect_ratio": 0.5}, "aspect_ratio"),
        ({"aspect_ratio": True}, "aspect_ratio"),
        ({"num_windows": 0}, "num_windows"),
        ({"xmin": "mid"}, "xmin"),
        ({"fit": "ww"}, "fit"),
        ({"min_tail": 1}, "min_tail"),
        ({"max_batch_numel": 0}, "max_batch_numel"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        farms_alpha(_gaussian(20, 20, seed=0), **kwargs)


def test_bad_weights_raise() -> None:
    with pytest.raises(TypeError, match="`weight`"):
        farms_alpha(torch.ones(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="`weight`"):
        farms_alpha(torch.ones(4))
    with pytest.raises(ValueError, match="`weight`"):
        farms_alpha(torch.full((20, 20), math.nan))


def test_half_precision_weight_is_upcast() -> None:
    weight = _gaussian(120, 240, seed=9)
    half = farms_alpha(weight.to(torch.bfloat16), submatrix_size=60, num_windows=3)
    reference = farms_alpha(weight.to(torch.bfloat16).float(), submatrix_size=60, num_windows=3)
    assert half.alpha == reference.alpha


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_matches_cpu() -> None:
    weight = _gaussian(300, 700, seed=10).float()
    on_device = farms_alpha(weight.cuda())
    on_cpu = farms_alpha(weight)
    assert on_device.num_submatrices == on_cpu.num_submatrices == 81
    assert on_device.alpha == pytest.approx(on_cpu.alpha, rel=1e-4)
    assert on_device.alpha_std_error == pytest.approx(on_cpu.alpha_std_error, rel=1e-2, abs=1e-6)
