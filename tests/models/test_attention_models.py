"""Models with attention: fused scaled-dot-product kernels (FlashAttention on CPU) have no second-order or
forward-mode derivatives, and ``nn.MultiheadAttention``'s eval-mode fast path no forward-mode one. Every
estimator runs attention on its math backend (``lightning_spectral._internal.differentiable_kernels``). The models are
float32, for which PyTorch picks FlashAttention on CPUs; the references are float64 copies (float64 attention
falls back to the math backend by itself) or attention written out by hand.
"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from spectral_testing.invariance import fits_without_and_with
from spectral_testing.problems import cross_entropy
from spectral_testing.references import assert_top_hessian_eigenvalues, explicit_jacobian
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral._internal.differentiable_kernels import differentiable_kernels
from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor
from lightning_spectral.functional import ntk_lambda_max, ntk_trace


class SelfAttention(nn.Module):
    """One head of self-attention over a sequence, mean-pooled, then a linear readout; ``explicit=True``
    writes ``softmax(QKᵀ/√d)V`` out instead of calling ``scaled_dot_product_attention``."""

    def __init__(self, explicit: bool = False, dim: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.explicit = explicit
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.explicit:
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
            attended = weights @ v
        else:
            heads = [t.unsqueeze(1) for t in (q, k, v)]  # (batch, heads = 1, length, dim)
            attended = nn.functional.scaled_dot_product_attention(*heads).squeeze(1)
        return self.out(attended.mean(dim=1))


def twins() -> tuple[nn.Module, nn.Module]:
    """The float32 model and its explicit twin with the same weights in float64 (the reference)."""
    torch.manual_seed(0)
    fused = SelfAttention()
    explicit = SelfAttention(explicit=True).double()
    explicit.load_state_dict(fused.state_dict())
    return fused, explicit


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 5, 4, generator=g), torch.randint(0, 3, (6,), generator=g)


def test_fused_attention_refuses_second_order_derivatives_without_the_context():
    """The premise: outside the context the model's own kernel (PyTorch's default choice) cannot give a
    Hessian-vector product."""
    fused, _ = twins()
    params = list(fused.parameters())
    grads = torch.autograd.grad(cross_entropy(fused, batch()), params, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(sum(g.sum() for g in grads), params)


@pytest.mark.parametrize("hvp_method", ["double_backward", "forward_over_reverse"])
def test_hessian_of_an_attention_model_is_that_of_attention_written_out(hvp_method):
    fused, explicit = twins()
    x, y = batch()
    assert_top_hessian_eigenvalues(fused, explicit, cross_entropy, (x, y), (x.double(), y), 3, hvp_method)


class PooledMultiheadAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.attention(x, x, x, need_weights=False)[0].mean(dim=1))


def test_ntk_of_multi_head_attention_in_eval_mode():
    """``nn.MultiheadAttention`` in eval mode (its fast path) with ``need_weights=False`` (SDPA): the NTK's
    λ_max needs Jacobian-vector products."""
    torch.manual_seed(0)
    model = PooledMultiheadAttention().eval()
    reference = PooledMultiheadAttention().double().eval()
    reference.load_state_dict(model.state_dict())
    x, _ = batch()
    jacobian = explicit_jacobian(reference, x.double())  # reverse mode only
    kernel = jacobian @ jacobian.T
    assert ntk_trace(model, x, method="exact").trace == pytest.approx(float(kernel.trace()), rel=1e-5)
    top = ntk_lambda_max(model, x, tol=1e-7, generator=torch.Generator().manual_seed(0)).eigenvalues[0]
    assert float(top) == pytest.approx(float(torch.linalg.eigvalsh(kernel)[-1]), rel=1e-5)


def test_the_settings_come_back():
    fastpath = torch.backends.mha.get_fastpath_enabled()
    flash = torch.backends.cuda.flash_sdp_enabled()
    with differentiable_kernels():
        assert not torch.backends.mha.get_fastpath_enabled()
        assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    assert torch.backends.cuda.flash_sdp_enabled() == flash


class TinyTransformer(pl.LightningModule):
    """A one-layer ``nn.TransformerEncoder`` classifier on generated sequences; dropout inside."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(2)
        x = torch.randn(32, 6, 8, generator=g)
        y = (x.sum(dim=(1, 2)) > 0).long() + (x[:, 0, 0] > 1).long()
        return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)


def test_a_transformer_fit_is_measured_by_every_monitor_and_trains_as_without_them(tmp_path):
    monitors = [
        HessianEigenMonitor(k=2, every_n_steps=2, compute_trace=True, strict=True),
        NTKTraceMonitor(every_n_steps=2, compute_lambda_max=True, strict=True),
        WeightSpectrumMonitor(every_n_steps=2, strict=True),
    ]
    (baseline, _), (monitored, _) = fits_without_and_with(tmp_path, TinyTransformer, monitors)
    assert all(m.num_measurements == 5 for m in monitors)  # steps 0, 2, 4, 6, 8; strict: none failed
    assert torch.equal(baseline, monitored)
