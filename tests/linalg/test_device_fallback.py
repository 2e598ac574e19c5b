"""The CPU fallback of dense factorizations, forced: a device that raises ``NotImplementedError`` (as MPS does
for ``torch.linalg.svd``) gets the same numbers, computed on the CPU."""

from __future__ import annotations

import pytest
import torch

import lightning_spectral.linalg.device_fallback as fallback
from lightning_spectral.functional import weight_spectrum
from lightning_spectral.linalg import randomized_svd


@pytest.fixture
def device_without_linalg(monkeypatch):
    """Tensors count as living on an accelerator where torch.linalg.svd / qr raise NotImplementedError (as on
    MPS); only tensors made by ``.cpu()`` (here: a fresh copy) are "on the CPU", where they succeed."""
    monkeypatch.setattr(fallback, "_on_cpu", lambda tensor: False)
    calls = {"refused": 0, "cpu": 0}
    real_svd, real_qr, real_cpu = torch.linalg.svd, torch.linalg.qr, torch.Tensor.cpu
    cpu_copies = []

    def to_cpu(self):
        copy = real_cpu(self).clone()
        cpu_copies.append(copy)
        return copy

    def refusing(real):
        def op(A, *args, **kwargs):
            if not any(A is c for c in cpu_copies):
                calls["refused"] += 1
                raise NotImplementedError(
                    "The operator 'aten::linalg_svd' is not implemented for the MPS device"
                )
            calls["cpu"] += 1
            return real(A, *args, **kwargs)

        return op

    monkeypatch.setattr(torch.linalg, "svd", refusing(real_svd))
    monkeypatch.setattr(torch.linalg, "qr", refusing(real_qr))
    monkeypatch.setattr(torch.Tensor, "cpu", to_cpu)
    return calls


def test_randomized_svd_falls_back_and_gives_the_same_numbers(device_without_linalg):
    g = torch.Generator().manual_seed(0)
    sigma = 0.25 ** torch.arange(40, dtype=torch.float64)  # fast decay: the sketch is exact to rounding
    A = torch.randn(60, 40, generator=g, dtype=torch.float64) * sigma
    reference = torch.linalg.svdvals(A)[:4]  # svdvals is not patched
    result = randomized_svd(A, 4, num_power_iterations=2, generator=torch.Generator().manual_seed(1))
    calls = device_without_linalg
    assert calls["refused"] >= 2 and calls["cpu"] == calls["refused"]  # every factorization fell back
    torch.testing.assert_close(result.S, reference, rtol=1e-8, atol=0)


def test_exact_weight_spectrum_falls_back(device_without_linalg):
    W = torch.randn(30, 20, generator=torch.Generator().manual_seed(2))
    s = weight_spectrum(W, method="exact")
    assert device_without_linalg["refused"] == 1 == device_without_linalg["cpu"]
    torch.testing.assert_close(s.all_singular_values, torch.linalg.svdvals(W), rtol=1e-5, atol=1e-6)


def test_errors_on_the_cpu_itself_are_not_retried():
    def failing(_):
        raise NotImplementedError("no such operator")

    with pytest.raises(NotImplementedError, match="no such operator"):
        fallback.on_cpu_if_unsupported(failing, torch.ones(2))
