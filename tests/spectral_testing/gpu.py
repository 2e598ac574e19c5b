"""The CUDA tests' image classifier and batches (float32; small enough for a dense float64 Hessian)."""

from __future__ import annotations

import torch
from torch import nn

from spectral_testing.problems import seeded


def image_classifier() -> nn.Module:
    """Conv 1→4→4 (3×3) with BatchNorm on 8×8 images, then 256→5 (small enough for a dense Hessian)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(256, 5),
    ).eval()  # P = 1,481


def image_batch(n: int = 64, seed: int = 0):
    g = seeded(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def to(batch, device):
    return tuple(part.to(device) for part in batch)
