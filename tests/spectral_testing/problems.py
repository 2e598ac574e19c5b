"""Small float64 problems with exact references, shared by the functional and linalg tests: seeded generators,
losses in the estimators' ``loss_fn(model, batch)`` form (the dense references call them with a forward
function in place of the model), the Hessian tests' models and batches, the NTK tests' models and inputs, and
a counting matrix-vector product."""

from __future__ import annotations

import torch
from torch import nn

DTYPE = torch.float64
EXACT = {"rtol": 1e-10, "atol": 1e-10}


def seeded(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# Losses take the model (or, for the dense reference, a forward function) and a batch.
def squared_error(net, batch):
    return ((net(batch[0]) - batch[1]) ** 2).mean()


def torch_mse(net, batch):
    return nn.functional.mse_loss(net(batch[0]), batch[1])


def cross_entropy(net, batch):
    return nn.functional.cross_entropy(net(batch[0]), batch[1])


# ------------------------------------------------------------------------------------------------- Hessian
def mlp(hidden: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 2)).to(DTYPE)  # P = 44 (hidden 6)


def cnn_with_batchnorm() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3)
    ).to(DTYPE)  # P = 20 + 4 + 57 = 81


def regression_batch(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=DTYPE), torch.randn(n, 2, generator=g, dtype=DTYPE)


def image_batch(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 5, 5, generator=g, dtype=DTYPE), torch.randint(0, 3, (n,), generator=g)


def random_vector(dim: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(dim, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------- NTK
def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(DTYPE)


def tiny_cnn() -> nn.Module:
    """Conv → BatchNorm (eval mode, non-trivial running statistics) → ReLU → Linear."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)
    ).to(DTYPE)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 2, 6, 6, dtype=DTYPE) * 2 + 1)
    return model.eval()


def mlp_inputs(batch: int = 7, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))


def cnn_inputs(batch: int = 5, seed: int = 3) -> torch.Tensor:
    return torch.randn(batch, 2, 6, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(seed))


NTK_CASES = {"mlp": (tiny_mlp, mlp_inputs), "cnn": (tiny_cnn, cnn_inputs)}


class TanhWithoutForwardMode(torch.autograd.Function):
    """tanh with a backward (itself differentiable) but no forward-mode derivative, like the fused LSTM/GRU
    cells on CUDA."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class NoForwardModeMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.second(TanhWithoutForwardMode.apply(self.first(x)))


# -------------------------------------------------------------------------------------------------- linalg
class CountingMatvec:
    """``v ↦ A v`` that counts its calls (to check ``num_matvecs``)."""

    def __init__(self, A: torch.Tensor) -> None:
        self.A = A
        self.calls = 0

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.A @ v
