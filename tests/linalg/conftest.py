"""Fixtures building test matrices with exactly known spectra.

``symmetric_with_eigenvalues(eigenvalues, seed=..., dtype=...)`` returns ``Q diag(λ) Qᵀ`` and
``matrix_with_singular_values(singular_values, m, n, seed=..., dtype=...)`` returns ``U diag(σ) Vᵀ``, with Haar
random orthogonal factors drawn from a seeded generator. Both are assembled in float64 and then cast, so in
float32 the spectrum is known to float32 rounding. The fixtures are session scoped factories (stateless),
which also makes them usable from hypothesis tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor


def _haar_orthogonal(n: int, columns: int, generator: torch.Generator) -> Tensor:
    """``n × columns`` matrix with orthonormal columns, Haar distributed (sign-corrected QR of a Gaussian)."""
    Q, R = torch.linalg.qr(torch.randn(n, columns, generator=generator, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))


def _as_float64(values: Sequence[float] | Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=torch.float64).flatten()


@pytest.fixture(scope="session")
def symmetric_with_eigenvalues():
    def build(
        eigenvalues: Sequence[float] | Tensor, *, seed: int = 0, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        lam = _as_float64(eigenvalues)
        Q = _haar_orthogonal(lam.numel(), lam.numel(), torch.Generator().manual_seed(seed))
        A = (Q * lam) @ Q.T
        return ((A + A.T) / 2).to(dtype)

    return build


@pytest.fixture(scope="session")
def matrix_with_singular_values():
    def build(
        singular_values: Sequence[float] | Tensor,
        m: int,
        n: int,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        sigma = _as_float64(singular_values)
        r = sigma.numel()
        if r > min(m, n):
            raise ValueError("more singular values than min(m, n)")
        generator = torch.Generator().manual_seed(seed)
        U = _haar_orthogonal(m, r, generator)
        V = _haar_orthogonal(n, r, generator)
        return ((U * sigma) @ V.T).to(dtype)

    return build
