"""The rank measures (effective and stable rank ratios, the 90 % mass count, the Gini coefficient) against
direct implementations of Yunis et al.'s (2024) definitions from all singular values (``torch.linalg.svdvals``,
float64). Tolerance: 1e-10 (rounding only).
"""

from __future__ import annotations

import math

import pytest
import torch

from lightning_spectral.functional.weights.spectrum import weight_spectrum
from lightning_spectral.functional.weights.spectrum_metrics import gini_coefficient, mass_count

TOL = 1e-10


def direct_rank_measures(sigma: torch.Tensor, m: int, n: int) -> dict[str, float]:
    r = min(m, n)
    p = sigma / sigma.sum()
    effective = math.exp(-float((p * p.log()).sum()))
    stable = float((sigma**2).sum() / sigma[0] ** 2)
    running, count = 0.0, 0
    for value in sigma.tolist():  # the paper's count: leading values until 90 % of Σσ is held
        running += value
        count += 1
        if running >= 0.9 * float(sigma.sum()) - 1e-12:
            break
    values = sigma.tolist()
    gini = sum(abs(a - b) for a in values for b in values) / (2 * r * sum(values))
    return {
        "effective_rank_ratio": effective / r,
        "stable_rank_ratio": stable / r,
        "mass90_count": count,
        "gini": gini,
    }


@pytest.mark.parametrize("shape", [(30, 20), (7, 40)])
def test_rank_measures_match_their_definitions(shape):
    generator = torch.Generator().manual_seed(3)
    W = torch.randn(*shape, generator=generator, dtype=torch.float64) @ torch.diag(
        torch.linspace(1.0, 0.01, shape[1], dtype=torch.float64)
    )
    spectrum = weight_spectrum(W, k=3, method="exact")
    expected = direct_rank_measures(torch.linalg.svdvals(W), *shape)
    for key, value in expected.items():
        assert getattr(spectrum, key) == pytest.approx(value, abs=TOL), key
    # and they measure something: this spectrum is neither flat nor one value
    assert 0.1 < spectrum.gini < 0.9 and 1 < spectrum.mass90_count < min(shape)


def test_rank_measures_edge_cases_and_randomized():
    assert mass_count(torch.tensor([5.0, 4.0, 1.0])) == 2
    assert mass_count(torch.tensor([1.0, 1.0, 1.0, 1.0])) == 4  # 3 hold only 75 %
    assert mass_count(torch.zeros(3)) == 0
    assert gini_coefficient(torch.ones(5)) == pytest.approx(0.0, abs=TOL)
    assert gini_coefficient(torch.tensor([0.0, 0.0, 0.0, 2.0])) == pytest.approx(0.75, abs=TOL)
    W = torch.randn(300, 200, generator=torch.Generator().manual_seed(4))
    spectrum = weight_spectrum(W, k=5, method="randomized")
    assert spectrum.effective_rank_is_estimate
    assert spectrum.effective_rank_ratio is None and spectrum.mass90_count is None and spectrum.gini is None
    assert spectrum.stable_rank_ratio == pytest.approx(spectrum.stable_rank / 200, rel=1e-12)
