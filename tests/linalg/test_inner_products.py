"""The ``shard_sum`` hook of the matrix-free routines: vectors split into uneven shards held by two simulated
processes (threads, an all-reduce by barrier) give the numbers of the same routine on whole vectors, to
rounding (float64, tolerance 1e-10 relative), and exact references (``eigvalsh``, the trace)."""

from __future__ import annotations

import pytest
import torch
from spectral_testing.threaded_shards import run_threads

from lightning_spectral.linalg import hutchinson_trace, hutchpp_trace, lanczos, rademacher, slq_density

DIM, SPLIT = 60, (37, 23)  # uneven shards, as FSDP2 gives for a dimension that does not divide evenly


def symmetric(seed: int = 0, rank: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if rank is not None:
        factor = torch.randn(DIM, rank, dtype=torch.float64, generator=generator)
        return factor @ factor.T
    a = torch.randn(DIM, DIM, dtype=torch.float64, generator=generator)
    return (a + a.T) / 2 + torch.diag(torch.linspace(0, 8, DIM, dtype=torch.float64))


def shard_matvec(A: torch.Tensor, rank: int, shard_sum):
    """The rows of ``A v`` this rank holds, from its shard of ``v`` (an all-reduce of the partial products)."""
    start = sum(SPLIT[:rank])
    rows = slice(start, start + SPLIT[rank])

    def matvec(v_shard: torch.Tensor) -> torch.Tensor:
        partial = A[:, rows] @ v_shard
        return shard_sum(partial)[rows]

    return matvec


def shard_of(vector: torch.Tensor, rank: int) -> torch.Tensor:
    start = sum(SPLIT[:rank])
    return vector[..., start : start + SPLIT[rank]].clone()


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_lanczos_on_shards_equals_lanczos_on_whole_vectors(which):
    A = symmetric()
    v0 = torch.randn(DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    whole = lanczos(lambda v: A @ v, DIM, 3, v0=v0, which=which, tol=1e-10, max_matvecs=DIM)

    def body(rank, shard_sum):
        return lanczos(
            shard_matvec(A, rank, shard_sum),
            SPLIT[rank],
            3,
            v0=shard_of(v0, rank),
            which=which,
            tol=1e-10,
            max_matvecs=DIM,
            shard_sum=shard_sum,
        )

    ranks = run_threads(2, body)
    exact = torch.linalg.eigvalsh(A)
    exact = exact.flip(0)[:3] if which == "LA" else exact[:3]
    for result in ranks:
        assert result.num_matvecs == whole.num_matvecs
        torch.testing.assert_close(result.eigenvalues, whole.eigenvalues, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(result.eigenvalues, exact, rtol=1e-9, atol=1e-9)
    vectors = torch.cat([r.eigenvectors for r in ranks])  # the shards' rows stacked: whole eigenvectors
    residual = A @ vectors - vectors * ranks[0].eigenvalues
    assert float(residual.norm()) < 1e-8
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)


def test_lanczos_on_shards_finds_a_repeated_eigenvalue_through_restarts():
    """A rank-2 operator whose top eigenvalue is double: found through an invariant subspace and a restart, whose
    random vector each rank draws from its own generator."""
    basis = torch.linalg.qr(
        torch.randn(DIM, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    )
    Q = basis.Q
    A = Q @ torch.diag(torch.tensor([5.0, 5.0, 1.0], dtype=torch.float64)) @ Q.T

    def body(rank, shard_sum):
        generator = torch.Generator().manual_seed(10 + rank)
        return lanczos(
            shard_matvec(A, rank, shard_sum),
            SPLIT[rank],
            2,
            dtype=torch.float64,
            generator=generator,
            shard_sum=shard_sum,
        )

    for result in run_threads(2, body):
        torch.testing.assert_close(result.eigenvalues, torch.tensor([5.0, 5.0], dtype=torch.float64))


def test_slq_on_shards_equals_slq_on_whole_probes():
    A = symmetric(seed=2)
    probes = rademacher((2, DIM), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    whole = slq_density(lambda v: A @ v, DIM, num_probes=2, num_steps=12, probes=probes)

    def body(rank, shard_sum):
        return slq_density(
            shard_matvec(A, rank, shard_sum),
            SPLIT[rank],
            num_probes=2,
            num_steps=12,
            probes=shard_of(probes, rank),
            shard_sum=shard_sum,
        )

    for density in run_threads(2, body):
        torch.testing.assert_close(density.nodes, whole.nodes, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(density.weights, whole.weights, rtol=1e-10, atol=1e-10)


def test_hutchinson_on_shards_is_the_estimate_of_the_concatenated_probes():
    """Each rank draws its shard of every probe from its own generator: the estimate is that of the whole probes
    made of those shards (recomputed here on whole vectors)."""
    A = symmetric(seed=5)

    def body(rank, shard_sum):
        return hutchinson_trace(
            shard_matvec(A, rank, shard_sum),
            SPLIT[rank],
            7,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(20 + rank),
            shard_sum=shard_sum,
        )

    generators = [torch.Generator().manual_seed(20 + r) for r in range(2)]
    samples = []
    for _ in range(7):
        z = torch.cat([rademacher(SPLIT[r], dtype=torch.float64, generator=generators[r]) for r in range(2)])
        samples.append(float(z @ A @ z))
    expected = torch.tensor(samples, dtype=torch.float64)
    for estimate in run_threads(2, body):
        assert estimate.estimate == pytest.approx(float(expected.mean()), rel=1e-12)
        assert estimate.std_error == pytest.approx(float(expected.std() / 7**0.5), rel=1e-10)


def test_hutchpp_on_shards_is_exact_for_an_operator_its_sketch_captures():
    """Rank 3, a sketch of 3 columns (9 products): the sketch's exact part is the whole trace, the probes see 0;
    the Gram-Schmidt over the shards must give an orthonormal basis of the range for that."""
    A = symmetric(seed=6, rank=3)

    def body(rank, shard_sum):
        return hutchpp_trace(
            shard_matvec(A, rank, shard_sum),
            SPLIT[rank],
            9,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(30 + rank),
            shard_sum=shard_sum,
        )

    for estimate in run_threads(2, body):
        assert estimate.estimate == pytest.approx(float(A.trace()), rel=1e-10)
        assert estimate.std_error < 1e-8 * float(A.trace())


def test_a_shard_sum_that_is_not_callable_is_refused():
    with pytest.raises(TypeError, match="shard_sum"):
        lanczos(lambda v: v, 4, 1, shard_sum=3)
