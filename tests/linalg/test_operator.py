"""The linear-operator protocol: the matrix-free routines take an operator object (``matvec``, ``dim``, ``dtype``,
``device``), a dense square matrix, or a function with its ``dim``, and give the same numbers for all three."""

import dataclasses

import pytest
import torch

from lightning_spectral.functional import HessianOperator
from lightning_spectral.linalg import LinearOperator, hutchinson_trace, hutchpp_trace, lanczos, slq_density


def _symmetric(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a + a.T


def test_a_dense_matrix_is_an_operator_and_lanczos_matches_eigvalsh():
    a = _symmetric()
    result = lanczos(a, k=3, tol=1e-10)
    torch.testing.assert_close(result.eigenvalues, torch.linalg.eigvalsh(a).flip(0)[:3], rtol=1e-8, atol=1e-8)
    assert result.eigenvectors.dtype == torch.float64  # the matrix's dtype, not the default float32


def test_operator_function_and_matrix_give_identical_results():
    a = _symmetric()

    class Dense:  # satisfies the protocol without deriving from it
        dim, dtype, device = a.shape[0], a.dtype, a.device

        def matvec(self, v):
            return a @ v

    assert isinstance(Dense(), LinearOperator) and not isinstance(lambda v: v, LinearOperator)
    for run in (
        lambda op, **kw: hutchpp_trace(op, num_matvecs=9, generator=torch.Generator().manual_seed(1), **kw),
        lambda op, **kw: hutchinson_trace(
            op, num_matvecs=5, generator=torch.Generator().manual_seed(1), **kw
        ),
        lambda op, **kw: slq_density(
            op, num_probes=2, num_steps=4, generator=torch.Generator().manual_seed(1), **kw
        ),
        lambda op, **kw: lanczos(op, k=2, generator=torch.Generator().manual_seed(1), **kw),
    ):
        from_object, from_matrix = run(Dense()), run(a)
        from_function = run(lambda v: a @ v, dim=12, dtype=torch.float64)
        for other in (from_matrix, from_function):
            names = (
                [f.name for f in dataclasses.fields(from_object)]
                if dataclasses.is_dataclass(from_object)
                else list(from_object._fields)
            )
            for name in names:
                x, y = getattr(from_object, name), getattr(other, name)
                if isinstance(x, torch.Tensor):
                    assert torch.equal(x, y), name
                else:
                    assert x == y or (x != x and y != y), name  # NaN standard errors compare unequal


def test_a_hessian_operator_goes_straight_into_the_routines():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    op = HessianOperator(model, lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]), (x, y))
    dense = op.to_dense()
    result = lanczos(op, k=2, tol=1e-10)
    torch.testing.assert_close(
        result.eigenvalues, torch.linalg.eigvalsh(dense).flip(0)[:2], rtol=1e-7, atol=1e-9
    )
    exact = hutchpp_trace(op, num_matvecs=op.dim)  # a budget >= dim: the exact trace
    assert exact.estimate == pytest.approx(float(torch.trace(dense)), rel=1e-10)


def test_bad_operator_arguments_are_named():
    a = _symmetric()
    with pytest.raises(TypeError, match="`dim` is required when `matvec` is a function"):
        lanczos(lambda v: a @ v, k=1)
    with pytest.raises(ValueError, match=r"`dim` \(5\) disagrees with the operator's size \(12\)"):
        lanczos(a, 5, 1)
    with pytest.raises(ValueError, match="square matrix"):
        hutchpp_trace(torch.ones(3, 4), num_matvecs=3)
    with pytest.raises(TypeError, match="`k`"):
        lanczos(a)
    with pytest.raises(TypeError, match="`num_matvecs`"):
        hutchinson_trace(a)
    with pytest.raises(TypeError, match="`matvec` must be callable"):
        slq_density(3, 4)
