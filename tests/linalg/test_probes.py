"""``rademacher`` on the CPU draws in the output dtype: the same values as the int64 draw it replaced."""

from __future__ import annotations

import pytest
import torch

from lightning_spectral.linalg import rademacher


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(5,), (3, 7, 11), (2, 100_003)])
def test_rademacher_values_are_those_of_the_int64_draw(dtype, shape):
    reference = (2 * torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(3)) - 1).to(dtype)
    drawn = rademacher(shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    assert drawn.dtype == dtype and torch.equal(drawn, reference)
    assert set(drawn.unique().tolist()) == {-1.0, 1.0}
