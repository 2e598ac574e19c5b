"""NTKTraceMonitor in a real Trainer.fit: logged values against an explicit Jacobian of the trained model."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import Regressor, trainer_kwargs
from spectral_testing.references import explicit_jacobian
from torch import nn

from lightning_spectral.callbacks import NTKTraceMonitor
from lightning_spectral.functional import sgd_stability


def exact_monitor(batch, **options) -> NTKTraceMonitor:
    """Every metric, exact trace, tight λ_max, on a fixed batch: the configuration checked against references."""
    return NTKTraceMonitor(
        method="exact",
        batch=batch,
        compute_alignment=True,
        compute_lambda_max=True,
        lambda_max_tol=1e-6,
        strict=True,
        **options,
    )


@pytest.mark.parametrize("use_bn", [False, True])
def test_logged_values_equal_explicit_jacobian_references(tmp_path, use_bn):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=g)
    y = torch.randn(6, 2, generator=g)
    monitor = exact_monitor((x, y), every_n_steps=4)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    pl.seed_everything(0)
    model = Regressor(use_bn=use_bn)
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=logger, max_epochs=1))
    trainer.fit(model)
    assert trainer.global_step == 8
    scalars = read_tensorboard_scalars(logger.log_dir)
    for key in (
        "trace",
        "trace_per_example",
        "lambda_max",
        "alignment",
        "alignment_centered",
        "alignment_offdiagonal",
        "sgd_stability",
        "sgd_stability_upper",
    ):
        assert [s for s, _ in scalars[f"spectral/ntk/{key}"]] == [0, 4, 8], key
    assert "spectral/ntk/trace_std_error" not in scalars  # exact method
    assert model.training  # the eval-mode measurement at the last step restored train mode
    model.eval()
    J = explicit_jacobian(model, x).double()
    kernel = J @ J.T
    last = {key: values[-1][1] for key, values in scalars.items()}
    trace = torch.trace(kernel).item()
    assert last["spectral/ntk/trace"] == pytest.approx(trace, rel=1e-5)
    assert last["spectral/ntk/trace_per_example"] == pytest.approx(trace / 6, rel=1e-5)
    lambda_max = torch.linalg.eigvalsh(kernel)[-1].item()
    assert last["spectral/ntk/lambda_max"] == pytest.approx(lambda_max, rel=1e-4)
    yy = torch.outer(y.flatten(), y.flatten()).double()
    alignment = ((kernel * yy).sum() / (kernel.norm() * yy.norm())).item()
    assert last["spectral/ntk/alignment"] == pytest.approx(alignment, rel=1e-4)
    H = torch.eye(12, dtype=torch.float64) - 1.0 / 12  # centring of the 12 × 12 kernels (Cortes et al.)
    centered_kernel, centered_yy = H @ kernel @ H, H @ yy @ H
    centered = ((centered_kernel * centered_yy).sum() / (centered_kernel.norm() * centered_yy.norm())).item()
    assert last["spectral/ntk/alignment_centered"] == pytest.approx(centered, rel=1e-4)
    assert abs(centered - alignment) > 1e-3  # two different numbers
    # Between examples: Pearson correlation over the 15 pairs i < j of Σ_k ⟨J_(i,k), J_(j,k)⟩ and ⟨y_i, y_j⟩.
    rows = J.reshape(6, 2, -1)
    traced = rows[:, 0] @ rows[:, 0].T + rows[:, 1] @ rows[:, 1].T
    gram = y.double() @ y.double().T
    i, j = torch.triu_indices(6, 6, offset=1)
    offdiagonal = torch.corrcoef(torch.stack([traced[i, j], gram[i, j]]))[0, 1].item()
    assert last["spectral/ntk/alignment_offdiagonal"] == pytest.approx(offdiagonal, rel=1e-4, abs=1e-6)
    # 𝒦_lower = (1 − B/D)·η·(tr Θ / n)/(2BK) with η = lr·2/K for nn.MSELoss, B = 8, D = 64, K = 2, n = 6
    eta = 0.05 * 2 / 2
    expected = (1 - 8 / 64) * eta * (trace / 6) / (2 * 8 * 2)
    assert last["spectral/ntk/sgd_stability"] == pytest.approx(expected, rel=1e-5)
    assert last["spectral/ntk/sgd_stability_upper"] == pytest.approx(
        expected * 2 / (2 - eta * lambda_max / 6), rel=1e-4
    )


def test_sgd_weight_decay_enters_the_stochastic_edge(tmp_path):
    """Under SGD(weight_decay=w) the logged bounds are those of the decayed model (``sgd_stability`` module
    docstring): with ``ŵ = w/loss_scale`` and the ``m = n·K`` eigenvalues of Θ̂ = Θ/n,
    lower = (1 − B/D)/(BK) · g(ŵ) · tr(Θ̂)²/(tr(Θ̂) + mŵ) and upper = (1 − B/D)/(BK) · g(λ̂_max + ŵ) · tr(Θ̂) ·
    λ̂_max/(λ̂_max + ŵ), with plain SGD's ``g(x) = η/(2 − ηx)``, from the explicit Jacobian's kernel."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, 2, generator=g)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    pl.seed_everything(0)
    model = Regressor(weight_decay=2.0)
    trainer = pl.Trainer(
        callbacks=[exact_monitor((x, y), every_n_steps=4)],
        **trainer_kwargs(tmp_path, logger=logger, max_epochs=1),
    )
    trainer.fit(model)
    last = {key: values[-1][1] for key, values in read_tensorboard_scalars(logger.log_dir).items()}
    model.eval()
    J = explicit_jacobian(model, x).double()
    eigenvalues = torch.linalg.eigvalsh(J @ J.T) / 6  # Θ̂
    eta, decay, m = 0.05 * 2 / 2, 2.0 / (2 / 2), 12  # loss_scale = 2/K = 1
    trace_hat, top = eigenvalues.sum().item(), eigenvalues.max().item()

    def gain(curvature):
        return eta / (2 - eta * curvature)

    factor = (1 - 8 / 64) / (8 * 2)
    lower = factor * gain(decay) * trace_hat**2 / (trace_hat + m * decay)
    upper = factor * gain(top + decay) * trace_hat * top / (top + decay)
    assert last["spectral/ntk/sgd_stability"] == pytest.approx(lower, rel=1e-4)
    assert last["spectral/ntk/sgd_stability_upper"] == pytest.approx(upper, rel=1e-4)
    undecayed = factor * gain(0.0) * trace_hat
    assert last["spectral/ntk/sgd_stability"] < 0.95 * undecayed  # the decay is not left out


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_compute_spectrum_logs_the_exact_top_eigenvalue_and_noise_kernel_norm(
    tmp_path, monkeypatch, momentum
):
    """``compute_spectrum=True``: ``lambda_max`` is the kernel's top eigenvalue from ``eigvalsh`` (no Lanczos:
    ``ntk_lambda_max`` is never called) and ``sgd_stability_exact`` is 𝒦 of the explicit Jacobian's kernel
    spectrum, between the logged bounds."""
    import lightning_spectral.callbacks.ntk_trace_monitor as module

    def no_lanczos(*args, **kwargs):
        raise AssertionError("the spectrum gives λ_max: no Lanczos")

    monkeypatch.setattr(module, "ntk_lambda_max", no_lanczos)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, 2, generator=g)
    monitor = exact_monitor((x, y), every_n_steps=4, compute_spectrum=True)
    model = Regressor(momentum=momentum)
    scalars = fit_logging(tmp_path, monitor, model)
    for key in ("lambda_max", "sgd_stability_exact", "sgd_stability", "sgd_stability_upper", "alignment"):
        assert [s for s, _ in scalars[f"spectral/ntk/{key}"]] == [0, 4, 8], key
    last = {key: values[-1][1] for key, values in scalars.items()}
    model.eval()
    J = explicit_jacobian(model, x).double()
    eigenvalues = torch.linalg.eigvalsh(J @ J.T)
    assert last["spectral/ntk/lambda_max"] == pytest.approx(eigenvalues[-1].item(), rel=1e-5)
    exact = sgd_stability(
        lr=0.05,
        batch_size=8,
        ntk_num_examples=6,
        num_outputs=2,
        ntk_eigenvalues=eigenvalues.clamp_min(0.0),
        dataset_size=64,
        momentum=momentum,
    ).noise_kernel_norm
    assert last["spectral/ntk/sgd_stability_exact"] == pytest.approx(exact, rel=1e-4)
    lower, upper = last["spectral/ntk/sgd_stability"], last["spectral/ntk/sgd_stability_upper"]
    assert lower <= last["spectral/ntk/sgd_stability_exact"] <= upper
    assert lower < upper


def test_layer_wise_norms_are_checked_on_the_first_measurement_only(tmp_path, monkeypatch):
    """The per-example check of the layer-wise norms (first and last example) runs at the first of the three
    measurements; the others reuse it (same model, same fixed batch), and a second fit checks again."""
    import lightning_spectral.functional.ntk.per_example_gradient_norms as module

    calls = []
    original = module._single_example_norms

    def recording(fm, example, cotangents):
        calls.append(example.shape[0])
        return original(fm, example, cotangents)

    monkeypatch.setattr(module, "_single_example_norms", recording)
    g = torch.Generator().manual_seed(1)
    monitor = exact_monitor((torch.randn(6, 5, generator=g), torch.randn(6, 2, generator=g)), every_n_steps=4)
    scalars = fit_logging(tmp_path, monitor, Regressor())
    assert [s for s, _ in scalars["spectral/ntk/trace"]] == [0, 4, 8]
    assert len(calls) == 2
    fit_logging(tmp_path / "again", monitor, Regressor())
    assert len(calls) == 4


def fit_logging(tmp_path, monitor, model):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    pl.seed_everything(0)
    pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=logger, max_epochs=1)).fit(model)
    return read_tensorboard_scalars(logger.log_dir)


@pytest.mark.parametrize("nesterov", [False, True])
def test_stochastic_trace_logs_its_standard_error_and_the_momentum_stability(tmp_path, nesterov):
    """Under SGD with momentum 0.9 ``sgd_stability`` is 𝒦's lower bound from the logged trace: the effective step
    ``η/(1 − μ)`` for heavy ball (module docstring of ``sgd_stability``); under Nesterov the bound follows the
    dip of its gain, so it is lower than that."""
    monitor = NTKTraceMonitor(every_n_steps=8, method="hutchinson", num_probes=16, strict=True)
    scalars = fit_logging(tmp_path, monitor, Regressor(momentum=0.9, nesterov=nesterov))
    assert [s for s, _ in scalars["spectral/ntk/trace_std_error"]] == [0, 8]
    assert all(v > 0 for _, v in scalars["spectral/ntk/trace_std_error"])
    eta_effective = 0.05 * 2 / 2 / (1 - 0.9)
    for (step, per_example), (_, value) in zip(
        scalars["spectral/ntk/trace_per_example"], scalars["spectral/ntk/sgd_stability"], strict=True
    ):
        heavy_ball = (1 - 8 / 64) * eta_effective * per_example / (2 * 8 * 2)
        if nesterov:
            assert 0.3 * heavy_ball < value < heavy_ball, step
        else:
            assert value == pytest.approx(heavy_ball, rel=1e-6), step


def test_no_stability_for_optimizers_other_than_sgd(tmp_path):
    monitor = NTKTraceMonitor(every_n_steps=8, strict=True)
    with pytest.warns(UserWarning, match="torch.optim.SGD"):
        scalars = fit_logging(tmp_path, monitor, Regressor(adam=True))
    assert "spectral/ntk/trace" in scalars and "spectral/ntk/sgd_stability" not in scalars


class TwoStepSizes(Regressor):
    def configure_optimizers(self):
        return torch.optim.SGD(
            [{"params": self.net[0].parameters()}, {"params": self.net[-1].parameters(), "lr": 0.005}],
            lr=0.05,
        )


def test_no_stability_when_the_measured_parameters_have_two_step_sizes(tmp_path):
    monitor = NTKTraceMonitor(every_n_steps=8, strict=True)
    with pytest.warns(UserWarning, match="with one learning rate.*different settings: SGD\\(lr=0.005\\)"):
        scalars = fit_logging(tmp_path / "all", monitor, TwoStepSizes())
    assert "spectral/ntk/trace" in scalars and "spectral/ntk/sgd_stability" not in scalars
    first = NTKTraceMonitor(every_n_steps=8, strict=True, params="net.0.*")  # stepped with lr = 0.05 alone
    scalars = fit_logging(tmp_path / "first", first, TwoStepSizes())
    assert "spectral/ntk/sgd_stability" in scalars


def test_params_restrict_the_kernel_to_a_parameter_subset(tmp_path):
    """``params="net.2.*"`` (the read-out layer): trace, λ_max and alignment of ``J_S J_Sᵀ`` with ``J_S`` the
    Jacobian columns of those parameters only; an unmatched pattern is warned about and dropped."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, 2, generator=g)
    monitor = exact_monitor((x, y), every_n_steps=100, params=["net.2.*"])
    pl.seed_everything(0)
    model = Regressor()
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=1, max_epochs=1))
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer.fit(model)
    model.load_state_dict(initial)  # step 0 was measured: compare at the initial weights
    model.eval()
    J = explicit_jacobian(model, x, names=["net.2.weight", "net.2.bias"]).double()
    kernel = J @ J.T
    full = explicit_jacobian(model, x).double()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["spectral/ntk/trace"] == pytest.approx(torch.trace(kernel).item(), rel=1e-5)
    assert torch.trace(kernel).item() < 0.9 * torch.trace(full @ full.T).item()  # the subset is not the whole
    assert metrics["spectral/ntk/lambda_max"] == pytest.approx(
        torch.linalg.eigvalsh(kernel)[-1].item(), rel=1e-4
    )
    yy = torch.outer(y.flatten(), y.flatten()).double()
    alignment = ((kernel * yy).sum() / (kernel.norm() * yy.norm())).item()
    assert metrics["spectral/ntk/alignment"] == pytest.approx(alignment, rel=1e-4)
    with pytest.raises(
        ValueError, match=r"`params` pattern 'net.2.wieght' matches no parameter.*'net.2.weight'"
    ):
        pl.Trainer(
            callbacks=[NTKTraceMonitor(params=["net.0.*", "net.2.wieght"], batch=(x, y))],
            **trainer_kwargs(tmp_path, max_steps=1),
        ).fit(Regressor())


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"params": 3}, "params"),
        ({"params": []}, "params"),
        ({"params": ["net.*", ""]}, "params"),
        ({"method": "svd"}, "method"),
        ({"num_probes": 0}, "num_probes"),
        ({"method": "hutchpp", "num_probes": 2}, "num_probes"),
        ({"compute_alignment": 1}, "compute_alignment"),
        ({"lambda_max_tol": 0.0}, "lambda_max_tol"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"loss_scale": -1.0}, "loss_scale"),
        ({"input_fn": 3}, "input_fn"),
    ],
)
def test_constructor_validation(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        NTKTraceMonitor(**kwargs)


@pytest.mark.parametrize(
    "selection", [{"include": "net.2"}, {"exclude": ["net.0.*"]}, {"include": "net.*", "exclude": "net.0"}]
)
def test_include_and_exclude_select_like_params(tmp_path, selection):
    """``include=`` (the newer name of ``params=``) and ``exclude=`` follow the one matching rule (globs or module
    prefixes): every selection of the read-out layer gives the exact trace of its kernel ``J_S J_Sᵀ``."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, 2, generator=g)
    pl.seed_everything(0)
    model = Regressor()
    J = explicit_jacobian(model, x, names=["net.2.weight", "net.2.bias"]).double()
    trainer = pl.Trainer(
        callbacks=[exact_monitor((x, y), every_n_steps=100, **selection)],
        **trainer_kwargs(tmp_path, max_steps=1, max_epochs=1),
    )
    trainer.fit(model)
    assert float(trainer.callback_metrics["spectral/ntk/trace"]) == pytest.approx(
        torch.trace(J @ J.T).item(), rel=1e-5
    )


def test_selection_arguments_are_checked():
    with pytest.raises(ValueError, match="Pass `include` or its older name `params`, not both"):
        NTKTraceMonitor(params="net.2.*", include="net.2.*")
    with pytest.raises(ValueError, match="`exclude` must be None"):
        NTKTraceMonitor(exclude=[])
    with pytest.raises(ValueError, match=r"`exclude` pattern 'net.9' matches no parameter"):
        pl.Trainer(
            callbacks=[NTKTraceMonitor(exclude="net.9", batch=(torch.randn(4, 5), torch.randn(4, 2)))],
            max_steps=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(Regressor())


def test_input_fn_must_keep_to_one_kind_of_inputs():
    """``input_fn`` returns a tensor for every batch or a mapping for every batch: a batch that breaks the kind
    of the first one is a TypeError naming ``input_fn`` (not a shape error deep in the kernel)."""
    from lightning_spectral.callbacks._internal.batch_parts import model_call

    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    as_tensor, _ = model_call(model, x, lambda b: b if isinstance(b, torch.Tensor) else [b], None)
    assert torch.equal(as_tensor(x), x)
    with pytest.raises(TypeError, match="input_fn.*list"):
        as_tensor("not a tensor")
    as_mapping, _ = model_call(model, x, lambda b: {"input": b} if isinstance(b, torch.Tensor) else b, None)
    assert as_mapping(x).shape == (4, 3)
    with pytest.raises(TypeError, match="input_fn.*str"):
        as_mapping("not a mapping")
