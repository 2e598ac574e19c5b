"""How far TensorFloat-32 moves a measured Hessian spectrum, and what ``full_float32_precision`` gives back.

Run from the repository root on a machine with a CUDA GPU of the Ampere generation or later::

    python -m benchmarks.tf32_effect

A CNN (conv 1→32→64, 3×3, on 8×8 inputs, then 4096→256→10, tanh; 1,070,218 parameters) and a fixed batch of 512
random images with random labels; the top-3 eigenvalues of the cross-entropy Hessian by Lanczos at
``tol=1e-7``: a float64 reference (double backward), then float32 with every per-operator ``fp32_precision``
switch set to ``"tf32"`` (TF32 matrix products and cuDNN convolutions), once as it is and once inside
:func:`~lightning_spectral._internal.full_precision.full_float32_precision`, for both HVP methods. Prints the relative
errors against the reference. On a CPU the switches change nothing (the rows agree). The numbers quoted in
``benchmarks/RESULTS.md`` (section *CUDA*) and docs/models.md (*TF32*) come from this script on an NVIDIA H200.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch import Tensor, nn

from benchmarks.common import add_device_argument, seeded
from lightning_spectral._internal.full_precision import full_float32_precision, precision_switches
from lightning_spectral.functional import hessian_eigenvalues

BATCH, K, TOL, MAX_ITER = 512, 3, 1e-7, 300


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(64 * 64, 256),
        nn.Tanh(),
        nn.Linear(256, 10),
    )


def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def top_eigenvalues(model: nn.Module, batch: tuple[Tensor, Tensor], hvp_method: str, device: str) -> Tensor:
    result = hessian_eigenvalues(
        model,
        loss_fn,
        batch,
        k=K,
        tol=TOL,
        max_matvecs=MAX_ITER,
        hvp_method=hvp_method,
        generator=seeded(0, device),
    )
    return result.eigenvalues.double().cpu()


@contextlib.contextmanager
def tf32_everywhere():
    """Every per-operator float32 switch set to ``"tf32"``, restored after."""
    saved = [switch.fp32_precision for switch in precision_switches()]
    try:
        for switch in precision_switches():
            switch.fp32_precision = "tf32"
        yield
    finally:
        for switch, value in zip(precision_switches(), saved):
            switch.fp32_precision = value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_argument(parser)
    parser.set_defaults(device="cuda" if torch.cuda.is_available() else "cpu")
    device = parser.parse_args(argv).device
    g = seeded(1)
    batch = (torch.randn(BATCH, 1, 8, 8, generator=g), torch.randint(0, 10, (BATCH,), generator=g))
    model = cnn().to(device)
    reference = top_eigenvalues(
        model.double(), (batch[0].double().to(device), batch[1].to(device)), "double_backward", device
    )
    model.float()
    batch = (batch[0].to(device), batch[1].to(device))
    print(f"float64 reference λ_1..λ_{K}: {reference.tolist()}")
    with tf32_everywhere():
        for label, guard in (
            ("tf32 (no guard)", contextlib.nullcontext),
            ("full_float32_precision", full_float32_precision),
        ):
            for method in ("double_backward", "forward_over_reverse"):
                with guard():
                    values = top_eigenvalues(model, batch, method, device)
                errors = ((values - reference).abs() / reference.abs()).tolist()
                print(f"{label:24s} {method:22s} relative errors {[f'{e:.2e}' for e in errors]}")


if __name__ == "__main__":
    main()
