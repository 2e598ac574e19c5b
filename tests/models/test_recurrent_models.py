"""Models with recurrent layers: oneDNN's RNN kernel (CPU, float32) has no forward-mode derivative, cuDNN's RNN
backward cannot be differentiated again, and ``torch.func.vmap`` cannot batch ``nn.LSTM`` / ``nn.GRU`` over
examples. The estimators run RNNs on PyTorch's native kernels (``lightning_spectral._internal.differentiable_kernels``)
and fall back to one autograd pass per example where vmap fails. Models are float32 (the oneDNN path);
references are float64 copies by reverse mode."""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch
from spectral_testing.invariance import fits_without_and_with
from spectral_testing.problems import cross_entropy
from spectral_testing.recurrent import RECURRENT, TokenClassifier, batch, model_and_reference
from spectral_testing.references import assert_top_hessian_eigenvalues, explicit_jacobian
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral._internal.differentiable_kernels import differentiable_kernels, has_recurrent_layers
from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor
from lightning_spectral.functional import ntk_lambda_max, ntk_matrix, ntk_trace


def test_the_premises():
    """Outside the context: no forward-mode derivative through oneDNN's LSTM, and vmap cannot batch a GRU."""
    model, _ = model_and_reference("lstm")
    tokens, _ = batch()
    params = {n: p.detach() for n, p in model.named_parameters()}
    tangents = {n: torch.ones_like(p) for n, p in params.items()}
    with pytest.raises(RuntimeError, match="forward AD"):
        torch.func.jvp(lambda p: torch.func.functional_call(model, p, (tokens,)), (params,), (tangents,))
    gru, _ = model_and_reference("gru")
    with pytest.raises(RuntimeError):
        torch.func.vmap(lambda t: gru(t.unsqueeze(0)))(tokens)
    assert has_recurrent_layers(model) and not has_recurrent_layers(nn.Linear(2, 2))


@pytest.mark.parametrize("kind", sorted(RECURRENT))
@pytest.mark.parametrize("hvp_method", ["double_backward", "forward_over_reverse"])
def test_hessian_eigenvalues_against_the_dense_float64_hessian(kind, hvp_method):
    model, reference = model_and_reference(kind)
    data = batch()
    assert_top_hessian_eigenvalues(model, reference, cross_entropy, data, data, 2, hvp_method)


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_ntk_trace_and_lambda_max_against_the_explicit_jacobian(kind):
    model, reference = model_and_reference(kind)
    tokens, _ = batch()
    jacobian = explicit_jacobian(reference, tokens)
    kernel = jacobian @ jacobian.T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the vmap fallback's note
        exact = ntk_trace(model, tokens, method="exact").trace
    assert exact == pytest.approx(float(kernel.trace()), rel=1e-5)
    top = ntk_lambda_max(model, tokens, tol=1e-7, generator=torch.Generator().manual_seed(0)).eigenvalues[0]
    assert float(top) == pytest.approx(float(torch.linalg.eigvalsh(kernel)[-1]), rel=1e-5)


@pytest.mark.parametrize("kind", sorted(RECURRENT))
@pytest.mark.parametrize("chunk_size", [None, 1])
def test_ntk_matrix_against_the_explicit_jacobian(kind, chunk_size):
    """vmap cannot batch these layers over examples: the per-example Jacobians are taken one example at a time;
    with chunks, the pushed-forward columns by reverse passes where vmap over tangents fails too."""
    model, reference = model_and_reference(kind)
    tokens, _ = batch()
    jacobian = explicit_jacobian(reference, tokens)
    with pytest.warns(UserWarning, match="per-example Jacobians"):
        kernel = ntk_matrix(model, tokens, chunk_size=chunk_size)
    torch.testing.assert_close(kernel.double(), jacobian @ jacobian.T, rtol=1e-5, atol=1e-6)


def test_the_vmap_fallback_says_so():
    model, _ = model_and_reference("gru")
    with pytest.warns(UserWarning, match="one autograd pass per example"):
        ntk_trace(model, batch()[0], method="exact")


def test_native_kernels_only_for_recurrent_models_and_settings_come_back():
    before = torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled
    with differentiable_kernels(recurrent=True):
        assert not torch.backends.mkldnn.enabled and not torch.backends.cudnn.enabled
    with differentiable_kernels():
        assert (torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled) == before
    assert (torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled) == before


class SequenceModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = TokenClassifier("lstm")

    def forward(self, tokens):
        return self.model(tokens)

    def training_step(self, batch, batch_idx):
        return cross_entropy(self, batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(2)
        tokens = torch.randint(0, 10, (32, 6), generator=g)
        return DataLoader(TensorDataset(tokens, tokens[:, 0] % 3), batch_size=8, shuffle=True)


@pytest.mark.slow
def test_an_lstm_fit_is_measured_by_every_monitor_and_trains_as_without_them(tmp_path):
    monitors = [
        HessianEigenMonitor(k=2, every_n_steps=2, hvp_method="auto", strict=True),
        NTKTraceMonitor(every_n_steps=2, method="exact", compute_lambda_max=True, strict=True),
        WeightSpectrumMonitor(every_n_steps=2, strict=True),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the vmap fallback's note
        (baseline, _), (monitored, _) = fits_without_and_with(tmp_path, SequenceModule, monitors)
    assert all(m.num_measurements == 5 for m in monitors)
    assert torch.equal(baseline, monitored)
