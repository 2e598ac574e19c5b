"""The estimators and the monitors on a CUDA device (skipped without one; CI has none).

Run where a GPU is: ``pytest tests/gpu/test_cuda.py``. Each test checks the CUDA numbers against an exact CPU
reference: float64 dense Hessians and explicit Jacobians, or the same measurement of the same model on the
CPU. TensorFloat-32 is switched on for every test the way a speed-minded training script does it
(``torch.set_float32_matmul_precision("high")``; cuDNN convolutions use TF32 by default on Ampere and later),
so the measurements run under the guard that turns it off (``full_float32_precision``; that the switches
are set and restored is tested in tests/_internal/test_full_precision.py, which also ran on the GPU machine under
torch 2.11). Passed on an NVIDIA H200 with torch 2.11.0+cu130 (benchmarks/RESULTS.md, section *CUDA*).
"""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from spectral_testing.consolidated_weights import assert_spectra_of_consolidated_weights
from spectral_testing.ddp import DISTRIBUTED, run_ddp_script
from spectral_testing.gpu import image_batch, image_classifier, to
from spectral_testing.models import TinyClassifier
from spectral_testing.precision import tf32_training_precision
from spectral_testing.problems import cross_entropy, seeded
from spectral_testing.references import dense_hessian, explicit_jacobian
from spectral_testing.step_zero import assert_same_metrics, step_zero_metrics
from torch import nn

from lightning_spectral._internal.full_precision import full_float32_precision
from lightning_spectral.functional import (
    hessian_eigenvalues,
    hessian_trace,
    ntk_lambda_max,
    ntk_trace,
    weight_spectrum,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def tf32_everywhere():
    """TF32 matrix products and convolutions, as a speed-minded training script sets them, for every test."""
    with tf32_training_precision():
        yield


# --------------------------------------------------------------------------------------------- functional
@pytest.mark.parametrize("hvp_method", ["double_backward", "forward_over_reverse"])
def test_hessian_eigenvalues_on_cuda_equal_the_dense_float64_spectrum(hvp_method):
    model, batch = image_classifier(), image_batch()
    reference = torch.linalg.eigvalsh(
        dense_hessian(model.double(), lambda f, b: nn.functional.cross_entropy(f(b[0].double()), b[1]), batch)
    ).flip(0)[:3]
    model = model.float().to(CUDA)
    with full_float32_precision():
        result = hessian_eigenvalues(
            model,
            cross_entropy,
            to(batch, CUDA),
            k=3,
            tol=1e-6,
            max_matvecs=200,
            hvp_method=hvp_method,
            generator=seeded(0, CUDA),
        )
    assert result.eigenvalues.device.type == "cuda"
    relative = (result.eigenvalues.cpu().double() - reference).abs() / reference.abs()
    assert relative.max() < 1e-4, (result.eigenvalues, reference)


def test_hessian_trace_on_cuda_equals_the_dense_trace():
    """Hutch++ with as many products as the dimension is exact up to rounding (its sketch spans everything)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))  # P = 53
    g = seeded(1)
    batch = (torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
    dense = dense_hessian(
        model.double(), lambda f, b: nn.functional.cross_entropy(f(b[0].double()), b[1]), batch
    )
    model = model.float().to(CUDA)
    with full_float32_precision():
        estimate = hessian_trace(
            model, cross_entropy, to(batch, CUDA), num_matvecs=3 * 53, generator=seeded(0, CUDA)
        )
    assert estimate.estimate == pytest.approx(float(dense.trace()), rel=1e-4)


def test_ntk_trace_and_lambda_max_on_cuda_equal_the_explicit_jacobian():
    model, (x, _) = image_classifier(), image_batch(16)
    jacobian = explicit_jacobian(model.double(), x.double())  # (B·K, P)
    kernel = jacobian @ jacobian.T
    model = model.float().to(CUDA)
    with full_float32_precision():
        trace = ntk_trace(model, x.to(CUDA), method="exact")
        lambda_max = ntk_lambda_max(model, x.to(CUDA), k=1, generator=seeded(0, CUDA))
    assert trace.trace == pytest.approx(float(kernel.trace()), rel=1e-5)
    top = float(torch.linalg.eigvalsh(kernel)[-1])
    assert float(lambda_max.eigenvalues[0]) == pytest.approx(top, rel=1e-3)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_recurrent_models_on_cuda_equal_the_dense_and_explicit_references(kind):
    """cuDNN's RNN backward has no double backward: the measurement turns cuDNN off (differentiable_kernels).
    Hessian by double backward and by "auto"; NTK trace and λ_max against the explicit Jacobian."""
    import warnings

    from spectral_testing.recurrent import batch, model_and_reference

    model, reference = model_and_reference(kind)
    data = batch()
    exact = torch.linalg.eigvalsh(dense_hessian(reference, cross_entropy, data)).flip(0)[:2]
    jacobian = explicit_jacobian(reference, data[0])
    kernel = jacobian @ jacobian.T
    model = model.to(CUDA)
    cuda_batch = to(data, CUDA)
    with full_float32_precision():
        for method in ("double_backward", "auto"):
            result = hessian_eigenvalues(
                model, cross_entropy, cuda_batch, k=2, tol=1e-7, hvp_method=method, generator=seeded(0, CUDA)
            )
            torch.testing.assert_close(result.eigenvalues.cpu().double(), exact, rtol=1e-4, atol=1e-6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the per-example loop's note
            trace = ntk_trace(model, cuda_batch[0], method="exact")
        lambda_max = ntk_lambda_max(model, cuda_batch[0], tol=1e-7, generator=seeded(0, CUDA))
    assert trace.trace == pytest.approx(float(kernel.trace()), rel=1e-5)
    assert float(lambda_max.eigenvalues[0]) == pytest.approx(
        float(torch.linalg.eigvalsh(kernel)[-1]), rel=1e-5
    )


def test_weight_spectrum_on_cuda_equals_svdvals():
    g = seeded(0)
    u, _ = torch.linalg.qr(torch.randn(2048, 64, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(1024, 64, generator=g, dtype=torch.float64))
    s = 1.0 / torch.arange(1, 65, dtype=torch.float64)
    weight = (u * s) @ v.T + 1e-4 * torch.randn(2048, 1024, generator=g, dtype=torch.float64)
    exact = torch.linalg.svdvals(weight)[:16]
    with full_float32_precision():
        spectrum = weight_spectrum(weight.float().to(CUDA), k=16, generator=seeded(0, CUDA))
    relative = (spectrum.singular_values.cpu().double() - exact).abs() / exact
    assert relative.max() < 1e-3
    assert spectrum.sigma_max == pytest.approx(float(exact[0]), rel=1e-4)


# ---------------------------------------------------------------------------------------------- monitors
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_every_monitor_on_the_gpu_logs_what_the_cpu_logs(tmp_path, precision):
    """Step 0, before any training step (after it, dropout masks from the CPU and CUDA RNGs would differ)."""
    model = partial(TinyClassifier, shuffle=False)
    trainer, _, gpu = step_zero_metrics(tmp_path / "gpu", model, accelerator="gpu", precision=precision)
    assert trainer.strategy.root_device.type == "cuda"  # (Lightning moves the module back at the end of fit)
    _, _, cpu = step_zero_metrics(tmp_path / "cpu", model)
    assert_same_metrics(gpu, cpu, rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------------------------- sharded strategies
@pytest.mark.ddp
def test_weight_monitor_gathers_fsdp2_dtensors_on_one_gpu(tmp_path):
    process = run_ddp_script(DISTRIBUTED / "fsdp2_weights_script.py", "measure-gpu", str(tmp_path))
    assert process.returncode == 0, process.stdout[-3000:]
    outcome = json.loads((tmp_path / "rank0.json").read_text())
    assert outcome["parameter_types"] == ["DTensor"]
    assert_spectra_of_consolidated_weights(tmp_path, outcome["metrics"])


@pytest.mark.ddp
def test_weight_monitor_refuses_fsdp1_naming_model_parallel_strategy(tmp_path):
    process = run_ddp_script(DISTRIBUTED / "fsdp2_weights_script.py", "fsdp1-gpu", str(tmp_path))
    assert process.returncode == 0, process.stdout[-3000:]
    refusal = json.loads((tmp_path / "refusal.json").read_text())
    assert refusal["type"] == "NotImplementedError", refusal
    assert "FSDPStrategy" in refusal["message"] and "ModelParallelStrategy" in refusal["message"]
