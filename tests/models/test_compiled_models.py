"""``torch.compile``d models: measured exactly, with no recompilation, and named as without compilation.

The tests compile with the ``aot_eager`` backend: it runs the model through Dynamo and AOTAutograd (the layer
that refuses double backward and whose guards force recompiles) without generating C++ code, so it is fast;
Inductor adds code generation behind the same two layers.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from spectral_testing.models import LossRecorder, TinyClassifier, trainer_kwargs
from spectral_testing.problems import cross_entropy
from spectral_testing.references import dense_hessian, explicit_jacobian
from spectral_testing.step_zero import assert_same_metrics, step_zero_metrics
from torch import nn

from lightning_spectral._internal.eager_execution import compiled_code_runs_eagerly, eager_stance_available
from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor
from lightning_spectral.functional import hessian_eigenvalues, ntk_trace, weight_matrices
from lightning_spectral.functional._common.parameter_selection import (
    select_parameters,
    uncompiled_name,
    unmatched_patterns,
)

pytestmark = pytest.mark.skipif(not eager_stance_available(), reason="torch < 2.6 has no compiler stance")
BACKEND = "aot_eager"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test starts and ends with no compiled graphs and zeroed Dynamo counters."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()
    counters.clear()


def compiled_graphs() -> int:
    """Graphs Dynamo compiled since the last reset."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def tiny_mlp(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def regression_batch(dtype=torch.float64):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 5, generator=generator, dtype=dtype), torch.randint(
        0, 3, (16,), generator=generator
    )


# ---------------------------------------------------------------------------------------------- names
def test_uncompiled_name_drops_the_wrapper_components():
    assert uncompiled_name("net._orig_mod.0.weight") == "net.0.weight"
    assert uncompiled_name("_orig_mod.weight") == "weight"
    assert uncompiled_name("a._orig_mod.b._orig_mod.c") == "a.b.c"
    assert uncompiled_name("net.orig_mod_x.weight") == "net.orig_mod_x.weight"


def test_patterns_and_weight_names_are_those_of_the_uncompiled_model():
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh())
    model.net = torch.compile(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1)), backend=BACKEND)
    assert list(select_parameters(model, "net.0.*")) == ["net._orig_mod.0.weight", "net._orig_mod.0.bias"]
    assert list(select_parameters(model, "net.1")) == ["net._orig_mod.1.weight", "net._orig_mod.1.bias"]
    assert list(select_parameters(model, "net._orig_mod.1.bias")) == ["net._orig_mod.1.bias"]
    assert unmatched_patterns(model, ["net.0.weight", "net.9.*"]) == ["net.9.*"]
    names = [w.name for w in weight_matrices(model)]
    assert names == ["0.weight", "net.0.weight", "net.1.weight"]
    whole = torch.compile(nn.Sequential(nn.Linear(3, 4)), backend=BACKEND)
    assert [w.name for w in weight_matrices(whole, include="0.*")] == ["0.weight"]


# ---------------------------------------------------------------------------------------------- functional
@pytest.mark.parametrize("hvp_method", ["double_backward", "forward_over_reverse"])
def test_hessian_eigenvalues_of_a_compiled_model_are_those_of_the_dense_hessian(hvp_method):
    """Double backward through AOTAutograd raises; the estimators run the compiled model eagerly instead,
    compiling nothing."""
    model, batch = tiny_mlp(), regression_batch()
    reference = torch.linalg.eigvalsh(
        dense_hessian(model, lambda f, b: nn.functional.cross_entropy(f(b[0]), b[1]), batch)
    )
    compiled = torch.compile(model, backend=BACKEND)
    result = hessian_eigenvalues(
        compiled,
        cross_entropy,
        batch,
        k=3,
        tol=1e-10,
        hvp_method=hvp_method,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(result.eigenvalues, reference.flip(0)[:3], rtol=1e-8, atol=1e-10)
    assert compiled_graphs() == 0


def test_ntk_trace_of_a_compiled_model_is_that_of_the_explicit_jacobian():
    model, (x, _) = tiny_mlp(), regression_batch()
    jacobian = explicit_jacobian(model, x)
    compiled = torch.compile(model, backend=BACKEND)
    estimate = ntk_trace(compiled, x, method="exact")
    assert estimate.trace == pytest.approx(float((jacobian**2).sum()), rel=1e-10)
    assert compiled_graphs() == 0


def test_the_users_compiler_stance_comes_back():
    from torch._dynamo import eval_frame

    def stance():
        return eval_frame._stance.stance  # rebound by every set_stance

    with torch.compiler.set_stance("eager_on_recompile"):
        with compiled_code_runs_eagerly():
            assert stance() == "force_eager"
        assert stance() == "eager_on_recompile"
    assert stance() == "default"


# ---------------------------------------------------------------------------------------------- in a fit
class CompiledNet(TinyClassifier):
    """The usual pattern: the network inside the LightningModule is compiled."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.compile(self.net, backend=BACKEND)


class QuietClassifier(TinyClassifier):
    """``TinyClassifier`` without ``self.log`` in ``training_step``: Dynamo (torch 2.13, Lightning 2.6) fails
    to trace Lightning's ``log``, so a compiled ``training_step`` cannot log, monitors or not."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)


def compiled_module() -> pl.LightningModule:
    """The other pattern: ``trainer.fit(torch.compile(lightning_module))`` (Lightning unwraps it and compiles
    its ``forward`` and ``*_step`` methods)."""
    return torch.compile(QuietClassifier(), backend=BACKEND)


def every_monitor():
    return [
        HessianEigenMonitor(
            k=2, every_n_steps=2, compute_batch_sharpness=True, compute_trace=True, strict=True
        ),
        NTKTraceMonitor(every_n_steps=2, compute_lambda_max=True, strict=True),
        WeightSpectrumMonitor(every_n_steps=2, strict=True),
    ]


def losses_and_graphs(tmp_path, make_model, callbacks):
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    recorder = LossRecorder()
    pl.seed_everything(0)
    trainer = pl.Trainer(callbacks=[recorder, *callbacks], **trainer_kwargs(tmp_path, max_epochs=2))
    trainer.fit(make_model())
    return torch.stack(recorder.losses), compiled_graphs(), trainer


@pytest.mark.parametrize(
    "make_model", [CompiledNet, compiled_module], ids=["compiled-net", "compiled-module"]
)
def test_monitors_measure_a_compiled_model_without_recompiling_or_changing_training(tmp_path, make_model):
    baseline, baseline_graphs, _ = losses_and_graphs(tmp_path / "a", make_model, [])
    monitors = every_monitor()
    monitored, monitored_graphs, trainer = losses_and_graphs(tmp_path / "b", make_model, monitors)
    assert baseline_graphs >= 1  # training really ran compiled code
    assert all(m.num_measurements == 5 for m in monitors)  # steps 0, 2, 4, 6, 8; strict: none failed
    assert monitored_graphs == baseline_graphs  # the measurements compiled nothing
    assert torch.equal(baseline, monitored)
    assert "spectral/weights/net.0.weight/sigma_max" in trainer.callback_metrics


@pytest.mark.parametrize(
    "make_model", [CompiledNet, compiled_module], ids=["compiled-net", "compiled-module"]
)
def test_a_compiled_model_logs_what_the_uncompiled_one_logs(tmp_path, make_model):
    _, _, eager = step_zero_metrics(tmp_path / "eager", QuietClassifier)
    _, _, compiled = step_zero_metrics(tmp_path / "compiled", make_model)
    assert_same_metrics(compiled, eager, rel=1e-6, abs=1e-7)
