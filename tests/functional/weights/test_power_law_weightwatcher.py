"""``power_law_alpha(fit="weightwatcher")`` against a plain-Python reading of WeightWatcher 0.7.7's rules, and
against WeightWatcher's own ``WWFit`` where it is installed (the ``bench`` extra)."""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch

from lightning_spectral.functional.weights.power_law import power_law_alpha


def _reference(eigenvalues: torch.Tensor) -> tuple[float, float, int] | None:
    """WeightWatcher's rules, one candidate at a time: absolute 1e-5 cut; every eigenvalue but the largest a
    candidate; MLE exponent (bias-corrected, tails >= 8, for fewer than 20 eigenvalues); one-sided KS
    |F(x_j) - j/t|; D = 1 for an inadmissible candidate; the first smallest D."""
    if eigenvalues.numel() < 8:
        return None
    xs = sorted(float(v) for v in eigenvalues if float(v) > 1e-5)
    n_all = len(xs)
    small = n_all < 20
    best = (math.inf, math.nan, 0, -1)
    for i, xmin in enumerate(xs[:-1]):
        tail = xs[i:]
        t = len(tail)
        log_sum = sum(math.log(v / xmin) for v in tail)
        d = 1.0
        alpha = math.nan
        if small:
            if t >= 8 and log_sum > 1e-12:
                alpha = 1.0 + (t - 1) / log_sum
        elif log_sum > 0:
            alpha = 1.0 + t / log_sum
        if alpha > 1.0:
            d = max(abs(1.0 - (v / xmin) ** (1.0 - alpha) - j / t) for j, v in enumerate(tail))
        if d < best[0]:
            best = (d, alpha, t, i)
    if small and best[3] < 0 or (small and best[0] == 1.0):
        log_sum = sum(math.log(v / xs[0]) for v in xs)
        return 1.0 + (n_all - 1) / log_sum, xs[0], n_all
    return best[1], xs[best[3]], best[2]


def _random_spectra(count: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    shapes = [(50, 30), (12, 15), (40, 18), (9, 30), (64, 64)]
    out = []
    for k in range(count):
        m, n = shapes[k % len(shapes)]
        if k % 2:
            w = torch.distributions.StudentT(2.0).sample((m, n)).double()
        else:
            w = torch.randn(m, n, generator=g, dtype=torch.float64)
        out.append(torch.linalg.svdvals(w / math.sqrt(n)) ** 2)
    return out


@pytest.mark.parametrize("index", range(20))
def test_matches_plain_python_reading_of_weightwatcher(index: int) -> None:
    eigenvalues = _random_spectra(20)[index]
    fit = power_law_alpha(eigenvalues, fit="weightwatcher")
    alpha, xmin, num_tail = _reference(eigenvalues)
    assert fit.alpha == pytest.approx(alpha, rel=1e-10)
    assert fit.xmin == xmin and fit.num_tail == num_tail
    assert fit.alpha_std_error == pytest.approx((alpha - 1) / math.sqrt(num_tail), rel=1e-10)


def test_matches_weightwatcher_itself() -> None:
    ww_powerlaw = pytest.importorskip("weightwatcher.WW_powerlaw")
    spectra = _random_spectra(100)
    for eigenvalues in spectra:
        nonzero = eigenvalues.numpy()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints on its small-sample path
            reference = ww_powerlaw.WWFit(nonzero[nonzero > 1e-5])
        fit = power_law_alpha(eigenvalues, fit="weightwatcher")
        assert fit.alpha == pytest.approx(float(reference.alpha), rel=1e-10)
        assert fit.xmin == float(reference.xmin)
        assert fit.ks_distance == pytest.approx(float(reference.D), rel=1e-9)


def test_differs_from_default_where_documented() -> None:
    # the absolute cut: a matrix scaled so that every eigenvalue is below 1e-5 is not fitted by WeightWatcher
    eigenvalues = _random_spectra(1)[0]
    assert power_law_alpha(eigenvalues * 1e-7, fit="weightwatcher") is None
    default = power_law_alpha(eigenvalues * 1e-7)
    assert default.alpha == pytest.approx(power_law_alpha(eigenvalues).alpha, rel=1e-9)
    # tails shorter than min_tail are WeightWatcher candidates: a spectrum of 12 values with 3 far outliers
    spectrum = torch.cat([torch.linspace(1.0, 1.5, 9, dtype=torch.float64), torch.tensor([50.0, 60.0, 80.0])])
    assert power_law_alpha(spectrum, fit="weightwatcher").num_tail >= 8  # small-sample rule: tails >= 8
    assert power_law_alpha(spectrum, min_tail=10).num_tail >= 10
    # fewer than 8 eigenvalues: not fitted
    assert power_law_alpha(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]), fit="weightwatcher") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"fit": "ww"}, "`fit` must be one of"), ({"fit": "weightwatcher", "xmin": 1.0}, "`xmin` must be 'ks'")],
)
def test_bad_fit_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        power_law_alpha(torch.rand(20, dtype=torch.float64) + 0.1, **kwargs)
