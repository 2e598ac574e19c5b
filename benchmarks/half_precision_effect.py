"""How far half-precision arithmetic moves a measured spectrum, against what storing the model in it does.

Run from the repository root (CPU is enough)::

    python -m benchmarks.half_precision_effect

An MLP 64→128→128→10 (tanh, 26,122 parameters) and a fixed batch of 64 random inputs with random labels. For
bfloat16 and float16: the model and inputs rounded to the half dtype are the *stored* model (what a
``precision="bf16-true"`` / ``"16-true"`` run holds); its top-3 cross-entropy Hessian eigenvalues (Lanczos,
``tol=1e-6``, double backward) and its NTK trace and λ_max are measured (a) in float32 arithmetic, the
reference, (b) in the half dtype's own arithmetic, and (c) through
:func:`~lightning_spectral.callbacks._internal.half_precision_upcast.float32_half_precision_tensors`, as the monitors
measure. It also prints how far the rounding itself moved the float32 model's values. The numbers quoted in
the docs page docs/models.md (*True precisions*) and in the module docstring of ``half_precision_upcast`` come from this script.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lightning_spectral.callbacks._internal.half_precision_upcast import (
    float32_batch,
    float32_half_precision_tensors,
)
from lightning_spectral.functional import hessian_eigenvalues, ntk_lambda_max, ntk_trace

K, TOL, MAX_ITER = 3, 1e-6, 200


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))


def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def spectrum(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """``[λ_1, λ_2, λ_3, tr Θ, λ_max(Θ)]`` in float64, in whatever dtype ``model`` and ``batch`` have."""
    eigen = hessian_eigenvalues(
        model,
        loss_fn,
        batch,
        k=K,
        tol=TOL,
        max_matvecs=MAX_ITER,
        hvp_method="double_backward",
        generator=torch.Generator().manual_seed(0),
    )
    trace = ntk_trace(model, batch[0], method="exact").trace
    kernel_max = ntk_lambda_max(model, batch[0], generator=torch.Generator().manual_seed(0)).eigenvalues[0]
    return torch.cat(
        [eigen.eigenvalues.double(), torch.tensor([trace, float(kernel_max)], dtype=torch.float64)]
    )


def relative(values: Tensor, reference: Tensor) -> str:
    return ", ".join(f"{float(e):.1e}" for e in ((values - reference).abs() / reference.abs()))


def main() -> None:
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(1)
    model = mlp().eval()
    batch = (torch.randn(64, 64, generator=generator), torch.randint(0, 10, (64,), generator=generator))
    unrounded = spectrum(model, batch)
    print("columns: lambda_1, lambda_2, lambda_3 (Hessian), NTK trace, NTK lambda_max; relative differences")
    for dtype in (torch.bfloat16, torch.float16):
        stored = copy.deepcopy(model).to(dtype)
        stored_batch = (batch[0].to(dtype), batch[1])
        reference = spectrum(copy.deepcopy(stored).float(), float32_batch(stored_batch))
        own_arithmetic = spectrum(stored, stored_batch)
        with float32_half_precision_tensors(stored):
            upcast = spectrum(stored, float32_batch(stored_batch))
        print(
            f"{dtype}: rounding the model and inputs moved the float32 values by {relative(reference, unrounded)}"
        )
        print(f"  measured in {dtype} arithmetic: {relative(own_arithmetic, reference)}")
        print(f"  measured through float32 copies: {relative(upcast, reference)}")


if __name__ == "__main__":
    main()
