"""HessianEigenMonitor in a real Trainer.fit: logged eigenvalues against eigvalsh of the dense Hessian."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import TinyClassifier, trainer_kwargs
from spectral_testing.problems import squared_error
from spectral_testing.references import dense_hessian
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks import HessianEigenMonitor


class TinyRegressor(pl.LightningModule):
    """tanh MLP (optionally with BatchNorm and dropout) on generated regression data, plain SGD."""

    def __init__(self, lr=0.05, optimizer="sgd", use_bn=False, manual=False):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = not manual
        layers = [nn.Linear(3, 8)]
        layers += [nn.BatchNorm1d(8), nn.Dropout(0.2)] if use_bn else []
        layers += [nn.Tanh(), nn.Linear(8, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = squared_error(self, batch)
        self.log("train_loss", loss)
        if self.hparams.manual:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss

    def configure_optimizers(self):
        if self.hparams.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=1e-3)
        if self.hparams.optimizer == "rmsprop":
            return torch.optim.RMSprop(self.parameters(), lr=1e-3, momentum=0.5)
        if self.hparams.optimizer == "adamax":
            return torch.optim.Adamax(self.parameters(), lr=1e-3)
        if self.hparams.optimizer == "adam-l2":  # coupled weight decay
            return torch.optim.Adam(self.parameters(), lr=1e-3, weight_decay=0.5)
        if self.hparams.optimizer == "nadam":
            return torch.optim.NAdam(self.parameters(), lr=1e-3)
        if self.hparams.optimizer == "adadelta":
            return torch.optim.Adadelta(self.parameters(), lr=0.5)
        if self.hparams.optimizer == "sgd-damped-decayed":
            return torch.optim.SGD(
                self.parameters(), lr=self.hparams.lr, momentum=0.9, dampening=0.5, weight_decay=0.1
            )
        if self.hparams.optimizer == "sgd-maximize":  # ascends: the limit is not λ_max's
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, maximize=True)
        if self.hparams.optimizer == "sgd-two-lrs":  # the output layer 10× slower: no single limit 2/η
            return torch.optim.SGD(
                [
                    {"params": self.net[0].parameters()},
                    {"params": self.net[-1].parameters(), "lr": self.hparams.lr / 10},
                ],
                lr=self.hparams.lr,
            )
        if (
            self.hparams.optimizer == "sgd-decay-groups"
        ):  # no decay on biases: one step size, the limit stands
            weights = [p for name, p in self.named_parameters() if name.endswith("weight")]
            biases = [p for name, p in self.named_parameters() if name.endswith("bias")]
            return torch.optim.SGD(
                [{"params": weights, "weight_decay": 0.1}, {"params": biases}], lr=self.hparams.lr
            )
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(48, 3, generator=g)
        y = torch.tanh(x @ torch.tensor([[1.0], [-2.0], [0.5]]))
        return DataLoader(TensorDataset(x, y), batch_size=12, shuffle=True)


def fit(tmp_path, monitor, model, max_epochs=1, **kwargs):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    pl.seed_everything(0)
    trainer = pl.Trainer(
        callbacks=[monitor], **trainer_kwargs(tmp_path, logger=logger, max_epochs=max_epochs, **kwargs)
    )
    trainer.fit(model)
    return trainer, read_tensorboard_scalars(logger.log_dir)


@pytest.mark.parametrize("use_bn", [False, True])
def test_logged_eigenvalues_match_the_dense_hessian(tmp_path, use_bn):
    g = torch.Generator().manual_seed(3)
    batch = (torch.randn(10, 3, generator=g), torch.randn(10, 1, generator=g))
    monitor = HessianEigenMonitor(
        k=3,
        every_n_steps=2,
        tol=1e-6,
        max_matvecs=49,
        batch=batch,
        compute_trace=True,
        trace_num_matvecs=64,
        compute_density=True,
        strict=True,
    )
    model = TinyRegressor(use_bn=use_bn)
    trainer, scalars = fit(tmp_path, monitor, model)
    assert trainer.global_step == 4
    for key in (
        "lambda_1",
        "lambda_2",
        "lambda_3",
        "residual_max",
        "num_hvps",
        "eos_ratio",
        "batch_sharpness",
        "batch_sharpness_ratio",
        "trace",
    ):
        assert [s for s, _ in scalars[f"spectral/hessian/{key}"]] == [0, 2, 4], key
    model.eval()  # the default measurement mode: dropout off, BatchNorm on running statistics
    H = dense_hessian(model, squared_error, batch)
    exact = torch.linalg.eigvalsh(H.double()).flip(0)
    last = {key: values[-1][1] for key, values in scalars.items()}
    for i in range(3):
        assert last[f"spectral/hessian/lambda_{i + 1}"] == pytest.approx(exact[i].item(), rel=1e-3)
    assert last["spectral/hessian/eos_ratio"] == pytest.approx(0.05 * exact[0].item() / 2, rel=1e-3)
    assert last["spectral/hessian/trace"] == pytest.approx(torch.trace(H).item(), rel=1e-4)  # 64 ≥ dim: exact
    params = list(model.parameters())
    grad = torch.cat([t.reshape(-1) for t in torch.autograd.grad(squared_error(model, batch), params)])
    assert last["spectral/hessian/batch_sharpness"] == pytest.approx(
        (grad @ H @ grad / (grad @ grad)).item(), rel=1e-3
    )
    assert last["spectral/hessian/residual_max"] <= 1e-6 * abs(exact[0].item()) * 10


@pytest.mark.parametrize("num_batches", [1, 3])
def test_a_measurement_evaluates_each_batch_loss_once(tmp_path, num_batches):
    """λ_max by double backward and the batch sharpness on the same batches share one gradient graph per batch:
    one loss evaluation per batch per measurement (the sharpness's gradients come with the graphs, each of its
    products is one more backward pass through one batch's graph); the logged batch sharpness is then the mean
    over the measurement batches of g_bᵀH_bg_b/‖g_b‖² with the dense per-batch Hessians."""
    calls = []

    def counting_loss(module, batch):
        calls.append((module.global_step, batch))
        return squared_error(module, batch)

    monitor = HessianEigenMonitor(
        every_n_steps=2, num_batches=num_batches, loss_fn=counting_loss, strict=True
    )
    model = TinyRegressor()
    _, scalars = fit(tmp_path, monitor, model)
    assert [step for step, _ in calls] == [step for step in (0, 2, 4) for _ in range(num_batches)]
    assert [s for s, _ in scalars["spectral/hessian/batch_sharpness"]] == [0, 2, 4]
    model.eval()
    quotients = []
    for _, batch in calls[-num_batches:]:  # the measurement batches, as the last measurement saw them
        g = torch.cat(
            [t.reshape(-1) for t in torch.autograd.grad(squared_error(model, batch), model.parameters())]
        )
        H = dense_hessian(model, squared_error, batch)
        quotients.append((g @ H @ g / (g @ g)).item())
    logged = scalars["spectral/hessian/batch_sharpness"][-1][1]
    assert logged == pytest.approx(sum(quotients) / num_batches, rel=1e-4)
    if num_batches > 1:  # several batches: their mean, and its standard error s/√n
        assert not logged == pytest.approx(quotients[0], rel=1e-2)
        std_error = torch.tensor(quotients).std().item() / math.sqrt(num_batches)
        assert scalars["spectral/hessian/batch_sharpness_std_error"][-1][1] == pytest.approx(
            std_error, rel=1e-3
        )
    else:  # one batch: no standard error
        assert "spectral/hessian/batch_sharpness_std_error" not in scalars


def test_default_measurement_batch_and_warm_start(tmp_path):
    monitor = HessianEigenMonitor(k=1, every_n_steps=1, num_batches=2, strict=True)
    trainer, scalars = fit(tmp_path, monitor, TinyRegressor(), max_epochs=2)
    hvps = [v for _, v in scalars["spectral/hessian/num_hvps"]]
    assert len(hvps) == 9
    # warm starts from the previous eigenvector: later solves need fewer products than the cold first one
    assert max(hvps[1:]) < hvps[0]
    assert monitor._eigenvectors is not None and monitor._eigenvectors.shape == (41, 1)


def adam_preconditioner_diagonal(optimizer, parameters):
    """Adam's ``D = (1 − β₁ᵗ)·diag(√(v/(1 − β₂ᵗ)) + ε)`` recomputed here from the optimizer's raw state."""
    group = optimizer.param_groups[0]
    (beta1, beta2), eps = group["betas"], group["eps"]
    pieces = []
    for p in parameters:
        state = optimizer.state[p]
        t = float(state["step"])
        pieces.append(((1 - beta1**t) * ((state["exp_avg_sq"] / (1 - beta2**t)).sqrt() + eps)).reshape(-1))
    return torch.cat(pieces)


def fit_under(tmp_path, optimizer: str):
    """A fit of TinyRegressor under ``optimizer`` measured every 2 steps on a fixed batch: the model, its
    optimizer, the dense float64 Hessian at the end (eval mode) and the scalars logged."""
    g = torch.Generator().manual_seed(3)
    batch = (torch.randn(10, 3, generator=g), torch.randn(10, 1, generator=g))
    monitor = HessianEigenMonitor(every_n_steps=2, tol=1e-6, batch=batch, strict=True)
    model = TinyRegressor(optimizer=optimizer)
    trainer, scalars = fit(tmp_path, monitor, model)
    model.eval()
    H = dense_hessian(model, squared_error, batch).double()
    return model, trainer.optimizers[0], H, scalars


def top_of_d_inverse_h(d: torch.Tensor, H: torch.Tensor) -> float:
    return torch.linalg.eigvals(torch.diag(1 / d.double()) @ H).real.max().item()


def test_adam_logs_the_preconditioned_sharpness_and_its_edge_of_stability_ratio(tmp_path):
    """Under Adam: ``preconditioned_lambda_1`` = λ_1(D⁻¹H) of the dense Hessian with D from the optimizer's
    state, and ``eos_ratio`` = that over (2 + 2β₁)/((1 − β₁)η); nothing of the two before the first step."""
    model, optimizer, H, scalars = fit_under(tmp_path, "adam")
    assert [s for s, _ in scalars["spectral/hessian/lambda_1"]] == [0, 2, 4]
    for key in ("preconditioned_lambda_1", "eos_ratio"):
        assert [s for s, _ in scalars[f"spectral/hessian/{key}"]] == [2, 4], key
    exact = top_of_d_inverse_h(adam_preconditioner_diagonal(optimizer, list(model.parameters())), H)
    last = {key: values[-1][1] for key, values in scalars.items()}
    assert last["spectral/hessian/preconditioned_lambda_1"] == pytest.approx(exact, rel=1e-4)
    assert last["spectral/hessian/eos_ratio"] == pytest.approx(
        exact * (1 - 0.9) * 1e-3 / (2 + 2 * 0.9), rel=1e-4
    )
    # the raw sharpness is a different number: D⁻¹ rescales the curvature by orders of magnitude
    assert last["spectral/hessian/lambda_1"] < last["spectral/hessian/preconditioned_lambda_1"] / 10


def test_rmsprop_logs_the_preconditioned_sharpness_against_its_momentum_limit(tmp_path):
    """RMSprop: D = diag(√v + ε) from the optimizer's square averages, limit (2 + 2μ)/η."""
    model, optimizer, H, scalars = fit_under(tmp_path, "rmsprop")
    d = torch.cat([(optimizer.state[p]["square_avg"].sqrt() + 1e-8).reshape(-1) for p in model.parameters()])
    exact = top_of_d_inverse_h(d, H)
    last = {key: values[-1][1] for key, values in scalars.items()}
    assert last["spectral/hessian/preconditioned_lambda_1"] == pytest.approx(exact, rel=1e-4)
    assert last["spectral/hessian/eos_ratio"] == pytest.approx(exact * 1e-3 / (2 + 2 * 0.5), rel=1e-4)


def test_adamax_logs_the_preconditioned_sharpness_against_adams_limit(tmp_path):
    """Adamax: D = (1 − β₁ᵗ)·diag(u) from the optimizer's infinity norm, Adam's limit."""
    model, optimizer, H, scalars = fit_under(tmp_path, "adamax")
    d = torch.cat(
        [
            ((1 - 0.9 ** float(optimizer.state[p]["step"])) * optimizer.state[p]["exp_inf"]).reshape(-1)
            for p in model.parameters()
        ]
    )
    exact = top_of_d_inverse_h(d, H)
    last = {key: values[-1][1] for key, values in scalars.items()}
    assert last["spectral/hessian/preconditioned_lambda_1"] == pytest.approx(exact, rel=1e-4)
    assert last["spectral/hessian/eos_ratio"] == pytest.approx(
        exact * (1 - 0.9) * 1e-3 / (2 + 2 * 0.9), rel=1e-4
    )


def test_coupled_weight_decay_is_in_the_preconditioned_sharpness(tmp_path):
    """Adam with ``weight_decay=0.5``: ``preconditioned_lambda_1`` = λ_1(D⁻¹(H + 0.5·I)), the curvature its step
    sees, not λ_1(D⁻¹H)."""
    model, optimizer, H, scalars = fit_under(tmp_path, "adam-l2")
    d = adam_preconditioner_diagonal(optimizer, list(model.parameters()))
    exact = top_of_d_inverse_h(d, H + 0.5 * torch.eye(H.shape[0], dtype=H.dtype))
    logged = scalars["spectral/hessian/preconditioned_lambda_1"][-1][1]
    assert logged == pytest.approx(exact, rel=1e-4)
    assert abs(logged / top_of_d_inverse_h(d, H) - 1) > 0.01  # the decay matters here


def test_nadam_and_adadelta_log_the_preconditioned_sharpness_against_their_limits(tmp_path):
    """NAdam: D = diag(√v̂ + ε), the limit of its momentum schedule after 4 steps (recomputed here from the μ's);
    Adadelta: D = diag(√(v + ε)/√(u + ε)), limit 2/η."""
    model, optimizer, H, scalars = fit_under(tmp_path / "nadam", "nadam")
    states = [optimizer.state[p] for p in model.parameters()]
    d = torch.cat([((s["exp_avg_sq"] / (1 - 0.999**4)).sqrt() + 1e-8).reshape(-1) for s in states])
    mus = [0.9 * (1 - 0.5 * 0.96 ** (t * 4e-3)) for t in range(1, 6)]
    product = math.prod(mus[:4])
    c1, c2 = (1 - mus[3]) / (1 - product), mus[4] / (1 - product * mus[4])
    limit = 2 * 1.9 / (1e-3 * (c1 * 1.9 + c2 * 0.1))
    exact = top_of_d_inverse_h(d, H)
    last = {key: values[-1][1] for key, values in scalars.items()}
    assert last["spectral/hessian/preconditioned_lambda_1"] == pytest.approx(exact, rel=1e-4)
    assert last["spectral/hessian/eos_ratio"] == pytest.approx(exact / limit, rel=1e-4)

    model, optimizer, H, scalars = fit_under(tmp_path / "adadelta", "adadelta")
    states = [optimizer.state[p] for p in model.parameters()]
    d = torch.cat(
        [((s["square_avg"] + 1e-6).sqrt() / (s["acc_delta"] + 1e-6).sqrt()).reshape(-1) for s in states]
    )
    exact = top_of_d_inverse_h(d, H)
    last = {key: values[-1][1] for key, values in scalars.items()}
    assert last["spectral/hessian/preconditioned_lambda_1"] == pytest.approx(exact, rel=1e-4)
    assert last["spectral/hessian/eos_ratio"] == pytest.approx(exact * 0.5 / 2, rel=1e-4)


class BatchNormRegressor(TinyRegressor):
    """Linear (with bias) → BatchNorm → tanh → Linear under Adam: the first bias gets no gradient in
    training (BatchNorm subtracts the batch mean), so Adam's D is ≈ ε there."""

    def __init__(self):
        super().__init__(optimizer="adam")
        self.net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))


def test_the_preconditioned_sharpness_is_that_of_the_training_mode_loss(tmp_path):
    """With the default eval-mode measurement the preconditioned sharpness still uses the training-mode loss,
    whose moments D comes from: against the dense train-mode D⁻¹H; the eval-mode D⁻¹H is off by orders of
    magnitude (its curvature along the pre-BatchNorm bias, inflated by 1/ε). In float64 (``64-true``): in
    float32 the rounding of the training-mode curvature along that bias (analytically 0) is inflated as well,
    which moved the value by 0.5 % here."""
    g = torch.Generator().manual_seed(3)
    batch = (torch.randn(10, 3, generator=g), torch.randn(10, 1, generator=g))
    monitor = HessianEigenMonitor(every_n_steps=2, tol=1e-8, batch=batch, strict=True)
    model = BatchNormRegressor()
    trainer, scalars = fit(tmp_path, monitor, model, precision="64-true")
    batch = tuple(t.double() for t in batch)
    d = adam_preconditioner_diagonal(trainer.optimizers[0], list(model.parameters())).double()

    def top_preconditioned(hessian):
        return torch.linalg.eigvals(torch.diag(1 / d) @ hessian.double()).real.max().item()

    model.train()  # batch statistics; the dense reference copies the buffers, so the model is untouched
    train_mode = top_preconditioned(dense_hessian(model, squared_error, batch))
    model.eval()
    eval_mode = top_preconditioned(dense_hessian(model, squared_error, batch))
    logged = scalars["spectral/hessian/preconditioned_lambda_1"][-1][1]
    assert logged == pytest.approx(train_mode, rel=1e-7)
    assert eval_mode > 100 * train_mode
    # the eigenvalues themselves are still those of the eval-mode Hessian (the default measurement mode)
    exact = torch.linalg.eigvalsh(dense_hessian(model, squared_error, batch).double())[-1].item()
    assert scalars["spectral/hessian/lambda_1"][-1][1] == pytest.approx(exact, rel=1e-4)


def test_sgd_gets_no_preconditioned_sharpness_and_it_can_be_switched_off(tmp_path):
    _, scalars = fit(tmp_path / "sgd", HessianEigenMonitor(every_n_steps=2, strict=True), TinyRegressor())
    assert (
        "spectral/hessian/eos_ratio" in scalars and "spectral/hessian/preconditioned_lambda_1" not in scalars
    )
    off = HessianEigenMonitor(every_n_steps=2, compute_preconditioned=False, strict=True)
    _, scalars = fit(tmp_path / "off", off, TinyRegressor(optimizer="adam"))
    assert "spectral/hessian/lambda_1" in scalars
    assert not {"spectral/hessian/eos_ratio", "spectral/hessian/preconditioned_lambda_1"} & set(scalars)


def test_eos_ratio_follows_sgds_dampening_and_weight_decay_and_is_not_logged_when_maximizing(tmp_path):
    """``λ_max / ((2 + 2β)/(η(1 − d)) − w)`` (the limits themselves are checked against torch's SGD in
    tests/functional/hessian/test_edge_of_stability.py)."""
    model = TinyRegressor(optimizer="sgd-damped-decayed")
    _, scalars = fit(tmp_path / "damped", HessianEigenMonitor(every_n_steps=2, strict=True), model)
    lambda_1, ratio = (scalars[f"spectral/hessian/{key}"][-1][1] for key in ("lambda_1", "eos_ratio"))
    assert ratio == pytest.approx(lambda_1 / (3.8 / (0.05 * 0.5) - 0.1), rel=1e-6)
    _, scalars = fit(
        tmp_path / "maximize",
        HessianEigenMonitor(every_n_steps=2, strict=True),
        TinyRegressor(optimizer="sgd-maximize"),
    )
    assert "spectral/hessian/lambda_1" in scalars and "spectral/hessian/eos_ratio" not in scalars


def test_eos_ratio_needs_one_step_size_for_the_measured_parameters(tmp_path):
    monitor = HessianEigenMonitor(every_n_steps=2, strict=True)
    with pytest.warns(UserWarning, match="no stability limit for the measured parameters") as caught:
        _, scalars = fit(tmp_path / "two", monitor, TinyRegressor(optimizer="sgd-two-lrs"))
    assert "spectral/hessian/lambda_1" in scalars
    assert not {"spectral/hessian/eos_ratio", "spectral/hessian/batch_sharpness_ratio"} & set(scalars)
    messages = [str(w.message) for w in caught if "no stability limit" in str(w.message)]
    assert len(messages) == 1 and "lr=0.05" in messages[0] and "lr=0.005" in messages[0]
    # the first layer alone is stepped with lr = 0.05: its own limit applies
    first = HessianEigenMonitor(every_n_steps=2, strict=True, params="net.0.*")
    _, scalars = fit(tmp_path / "first", first, TinyRegressor(optimizer="sgd-two-lrs"))
    lambda_1, ratio = (scalars[f"spectral/hessian/{key}"][-1][1] for key in ("lambda_1", "eos_ratio"))
    assert ratio == pytest.approx(0.05 * lambda_1 / 2, rel=1e-6)
    # groups that differ in weight decay only keep the limit (the first group's decay, documented)
    _, scalars = fit(
        tmp_path / "decay",
        HessianEigenMonitor(every_n_steps=2, strict=True),
        TinyRegressor(optimizer="sgd-decay-groups"),
    )
    lambda_1, ratio = (scalars[f"spectral/hessian/{key}"][-1][1] for key in ("lambda_1", "eos_ratio"))
    assert ratio == pytest.approx(lambda_1 / (2 / 0.05 - 0.1), rel=1e-6)


def test_resume_restores_both_warm_start_vectors(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    monitor = HessianEigenMonitor(every_n_steps=2, strict=True)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    pl.seed_everything(0)
    trainer = pl.Trainer(
        callbacks=[monitor, checkpoint],
        **trainer_kwargs(tmp_path, logger=logger, max_epochs=1, enable_checkpointing=True),
    )
    trainer.fit(TinyRegressor(optimizer="adam"))
    state = torch.load(tmp_path / "ckpt" / "epoch=0-step=2.ckpt", weights_only=False)["callbacks"][
        monitor.state_key
    ]
    resumed = HessianEigenMonitor(every_n_steps=2)
    resumed.load_state_dict(state)
    assert resumed._eigenvectors.shape == (41, 1) and resumed.num_measurements == 2
    assert resumed._preconditioned_vector.shape == (41, 1)


def test_manual_optimization_needs_a_loss_fn(tmp_path):
    with pytest.raises(ValueError, match="loss_fn"):
        fit(tmp_path, HessianEigenMonitor(every_n_steps=2, strict=True), TinyRegressor(manual=True))
    monitor = HessianEigenMonitor(
        every_n_steps=2, strict=True, loss_fn=lambda module, batch: squared_error(module, batch)
    )
    _, scalars = fit(tmp_path, monitor, TinyRegressor(manual=True))
    assert [s for s, _ in scalars["spectral/hessian/lambda_1"]] == [0, 2, 4]


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"k": 0}, "k"),
        ({"k": 5, "max_matvecs": 3}, "max_matvecs"),
        ({"tol": 0.0}, "tol"),
        ({"which": "BE"}, "which"),
        ({"measurement_mode": "test"}, "measurement_mode"),
        ({"hvp_method": "fd"}, "hvp_method"),
        ({"trace_num_matvecs": 2}, "trace_num_matvecs"),
        ({"compute_trace": "yes"}, "compute_trace"),
        ({"loss_fn": 3}, "loss_fn"),
    ],
)
def test_constructor_validation(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        HessianEigenMonitor(**kwargs)


def test_params_patterns_that_match_nothing_raise_at_setup(tmp_path):
    """Any unmatched pattern, alone or beside matched ones: a ValueError at setup naming it and the closest
    parameter names (a configuration error, before any training; a typo must not measure something else)."""
    monitor = HessianEigenMonitor(every_n_steps=2, params=["net.0.*", "encoder.*"], strict=True)
    with pytest.raises(
        ValueError, match=r"`params` pattern 'encoder.\*' matches no parameter.*closest names: 'net"
    ):
        trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=2, max_epochs=1))
        trainer.fit(TinyClassifier())
    with pytest.raises(ValueError, match=r"'nothing\*' matches no parameter"):
        trainer = pl.Trainer(
            callbacks=[HessianEigenMonitor(params="nothing*")], **trainer_kwargs(tmp_path, max_steps=2)
        )
        trainer.fit(TinyClassifier())


def test_the_default_gap_based_stop_takes_fewer_products_and_keeps_lambda_within_eigenvalue_tol(tmp_path):
    """The default (``tol=1e-3``, ``eigenvalue_tol=1e-4``) against the residual test alone on the same run
    (monitors do not change training: the same models): λ_1 within 1e-4 of the dense Hessian's at every
    measurement, for fewer products in all; a ``tol`` tighter than the default keeps the residual test."""
    g = torch.Generator().manual_seed(3)
    batch = (torch.randn(10, 3, generator=g), torch.randn(10, 1, generator=g))
    models, runs = [], {}
    for name, options in {
        "default": {},
        "residual": {"eigenvalue_tol": None},
        "tight": {"tol": 1e-4},
    }.items():

        class Recorded(TinyRegressor):
            def on_train_batch_end(self, outputs, batch_, batch_idx):  # the model the monitor measures next
                if self.trainer.global_step % 2 == 0:
                    models.append(
                        (self.trainer.global_step, dense_hessian(self.eval(), squared_error, batch))
                    )
                    self.train()

        monitor = HessianEigenMonitor(every_n_steps=2, batch=batch, strict=True, **options)
        torch.manual_seed(0)  # the same initial model in every run (16 products against 13 here)
        _, scalars = fit(tmp_path / name, monitor, Recorded() if name == "default" else TinyRegressor())
        runs[name] = scalars
    exact = {step: torch.linalg.eigvalsh(H.double())[-1].item() for step, H in models}
    assert sorted(exact) == [2, 4]
    for step, value in runs["default"]["spectral/hessian/lambda_1"][1:]:
        assert value == pytest.approx(exact[step], rel=1e-4), step
    hvps = {name: sum(v for _, v in run["spectral/hessian/num_hvps"]) for name, run in runs.items()}
    assert hvps["default"] < hvps["residual"], hvps
    # the tighter tol: the residual test alone (the gap-based stop would leave residuals far above it)
    tight = dict(runs["tight"]["spectral/hessian/lambda_1"])
    for step, residual in runs["tight"]["spectral/hessian/residual_max"]:
        assert residual <= 1e-4 * abs(tight[step]) * 1.01, (step, residual)
