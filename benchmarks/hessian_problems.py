"""The Hessian benchmark's problems (see ``benchmarks/bench_hessian.py``): scikit-learn's digits, the MLP and
the CNN pretrained by minibatch SGD, the fixed batch, and the float64 reference eigenvalues."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.common import seeded
from lightning_spectral.functional import HessianOperator, hessian_eigenvalues

SEED = 0
PRETRAIN_STEPS = 300
SGD_BATCH, SGD_LR = 64, 0.1
MLP_BATCH, CNN_BATCH = 512, 256
REFERENCE_TOL = 1e-10
REFERENCE_MAX_ITER = 400


def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8×8 digits: ``x (1797, 64)`` in ``[0, 1]`` (float32) and labels ``y (1797,)``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target, dtype=torch.long)


def make_mlp() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(64, 160), nn.Tanh(), nn.Linear(160, 128), nn.Tanh(), nn.Linear(128, 10))


def make_cnn() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(512, 576),
        nn.Tanh(),
        nn.Linear(576, 10),
    )


def sgd_steps(model: nn.Module, x: Tensor, y: Tensor, steps: int, generator: torch.Generator) -> None:
    """``steps`` steps of minibatch SGD (batch ``SGD_BATCH``, learning rate ``SGD_LR``) on ``(x, y)``; the
    indices are drawn from ``generator`` (CPU) and moved to ``x``'s device."""
    optimizer = torch.optim.SGD(model.parameters(), lr=SGD_LR)
    for _ in range(steps):
        index = torch.randint(0, x.shape[0], (SGD_BATCH,), generator=generator).to(x.device)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, (x[index], y[index])).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class Reference:
    """Float64 top eigenvalues (descending) and eigenvectors ``(P, k)``, the HVPs they took, the cross-check."""

    values: Tensor
    vectors: Tensor
    hvps: int
    crosscheck: str


@dataclass
class Problem:
    name: str
    description: str
    model: nn.Module
    batch: tuple[Tensor, Tensor]
    data: tuple[Tensor, Tensor]
    reference: Reference | None = None

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def build_problem(name: str, device: torch.device) -> Problem:
    """The model pretrained on the CPU (the same weights for every device), then moved with its data."""
    x, y = digits()
    if name == "MLP":
        model, size = make_mlp(), MLP_BATCH
        description = f"MLP 64→160→128→10 (tanh); batch: first {size} digits"
    else:
        model, size = make_cnn(), CNN_BATCH
        description = f"CNN conv 1→4→8 (3×3) → 512→576→10 (tanh); batch: first {size} digits as 1×8×8"
    sgd_steps(model, x, y, PRETRAIN_STEPS, seeded(SEED))
    x, y = x.to(device), y.to(device)
    return Problem(name, description, model.to(device), (x[:size], y[:size]), (x, y))


def float64_reference(model: nn.Module, batch: tuple[Tensor, Tensor], k: int, crosscheck: bool) -> Reference:
    """Top-``k`` eigenvalues of the float64 Hessian by our Lanczos at ``REFERENCE_TOL`` (+ an eigsh check),
    computed on the model's device; the returned values and vectors are on the CPU."""
    model64 = copy.deepcopy(model).double()
    op = HessianOperator(model64, loss_fn, (batch[0].double(), batch[1]), method="double_backward")
    result = hessian_eigenvalues(
        operator=op,
        k=k,
        tol=REFERENCE_TOL,
        max_matvecs=REFERENCE_MAX_ITER,
        generator=seeded(SEED + 7, op.device),
    )
    if not result.converged:
        raise RuntimeError(f"the float64 reference did not converge in {REFERENCE_MAX_ITER} HVPs")
    values = result.eigenvalues.double().cpu()
    note = "not cross-checked"
    if crosscheck:
        try:
            from scipy.sparse.linalg import LinearOperator, eigsh
        except ImportError:
            note = "scipy not installed: not cross-checked"
        else:
            scipy_op = LinearOperator(
                (op.dim, op.dim),
                matvec=lambda v: op.matvec(torch.from_numpy(v).reshape(-1).to(op.device)).cpu().numpy(),
                dtype=np.float64,
            )
            v0 = np.random.default_rng(SEED + 11).standard_normal(op.dim)
            before = op.num_matvecs
            other = eigsh(scipy_op, k=k, which="LA", tol=REFERENCE_TOL, v0=v0, return_eigenvectors=False)
            other = torch.from_numpy(np.sort(other)[::-1].copy())
            difference = float(((values - other).abs() / values.abs()).max())
            note = f"eigsh (float64) agrees to {difference:.1e} ({op.num_matvecs - before} HVPs)"
    return Reference(values, result.eigenvectors.double().cpu(), result.num_hvps, note)


def relative_error(values: list[float] | None, reference: Tensor, k: int) -> float:
    """``max_{i<k} |values_i − reference_i| / |reference_i|`` (descending order); ``inf`` if missing."""
    if values is None or len(values) < k or not all(math.isfinite(v) for v in values[:k]):
        return math.inf
    mine = torch.tensor(sorted(values, reverse=True)[:k], dtype=torch.float64)
    return float(((mine - reference[:k]).abs() / reference[:k].abs()).max())


def fmt_error(error: float) -> str:
    """A relative error for a table: ``"—"`` when missing (``inf``)."""
    return "—" if not math.isfinite(error) else f"{error:.1e}"
