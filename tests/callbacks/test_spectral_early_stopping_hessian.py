"""SpectralEarlyStopping on a real Hessian monitor: the edge-of-stability preset stops a run whose step is past
2/λ_max, leaves a stable one alone, and works next to Lightning's own EarlyStopping on the same key."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from spectral_testing.early_stopping import fit, rank_zero_info_messages
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral.callbacks.hessian_eigen_monitor import HessianEigenMonitor
from lightning_spectral.callbacks.spectral_early_stopping import SpectralEarlyStopping
from lightning_spectral.functional.hessian.spectrum import hessian_eigenvalues


class FullBatchRegressor(pl.LightningModule):
    """tanh MLP on generated regression data; plain SGD; one batch per epoch (the whole data set)."""

    def __init__(self, lr: float, batch_size: int = 48) -> None:
        super().__init__()
        self.lr = lr
        self.batch_size = batch_size
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    @staticmethod
    def data():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(48, 3, generator=generator)
        return x, torch.tanh(x @ torch.tensor([[1.0], [-2.0], [0.5]]))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.net(x) - y) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return DataLoader(TensorDataset(*self.data()), batch_size=self.batch_size, shuffle=False)


def model_with_lr_over_lambda_max(factor: float, **kwargs) -> tuple[FullBatchRegressor, float]:
    """A freshly initialised model whose SGD step size is ``factor / λ_max`` of its full-batch loss Hessian."""
    torch.manual_seed(0)
    model = FullBatchRegressor(lr=1.0, **kwargs)
    dim = sum(p.numel() for p in model.parameters())
    lambda_max = hessian_eigenvalues(
        model, lambda m, b: m.training_step(b, 0), model.data(), k=1, tol=1e-6, max_matvecs=dim
    ).eigenvalues[0]
    model.lr = factor / float(lambda_max)
    return model, float(lambda_max)


def test_edge_of_stability_stops_a_run_past_two_over_lr(tmp_path):
    patience = 3
    model, lambda_max = model_with_lr_over_lambda_max(2.5)  # η·λ_max/2 = 1.25 at initialisation
    monitor = HessianEigenMonitor(
        every_n_steps=1, tol=1e-6, max_matvecs=81, compute_batch_sharpness=False, strict=True
    )
    stopper = SpectralEarlyStopping.edge_of_stability(patience=patience)
    with rank_zero_info_messages() as messages:
        trainer = fit(tmp_path, [monitor, stopper], model=model, max_epochs=50)
    assert stopper.stopped_step is not None and trainer.global_step == stopper.stopped_step <= patience
    ours = [m for m in messages if m.startswith("SpectralEarlyStopping[edge_of_stability]")]
    assert ours == [stopper.reason]
    # the message quotes the measured λ_max and its ratio to the limit 2/η of plain SGD
    measured = float(trainer.callback_metrics["spectral/hessian/lambda_1"])
    limit = f"the stability limit {2 / model.lr:.6g} of SGD(lr={model.lr:g})"
    assert (
        f"`spectral/hessian/lambda_1` = {measured:.6g}, ratio to {limit} = {measured * model.lr / 2:.4g} > 1"
        in ours[0]
    )
    assert f"at step {trainer.global_step};" in ours[0]
    assert measured * model.lr / 2 > 1
    assert lambda_max * model.lr / 2 == pytest.approx(1.25)


def test_edge_of_stability_leaves_a_stable_run_alone(tmp_path):
    model, _ = model_with_lr_over_lambda_max(0.5)
    stopper = SpectralEarlyStopping.edge_of_stability(patience=1)
    monitor = HessianEigenMonitor(every_n_steps=1, compute_batch_sharpness=False, strict=True)
    trainer = fit(tmp_path, [monitor, stopper], model=model, max_epochs=8)
    assert trainer.global_step == 8 and stopper.stopped_step is None and stopper.wait_count == 0
    assert stopper._measurements.last["spectral/hessian/lambda_1"][0] == 8  # every measurement was evaluated


def test_works_alongside_stock_early_stopping_on_the_same_key(tmp_path):
    model, _ = model_with_lr_over_lambda_max(0.5, batch_size=12)  # 4 steps per epoch, stable
    stock = EarlyStopping(
        monitor="spectral/hessian/lambda_1", mode="min", stopping_threshold=1e6, check_on_train_epoch_end=True
    )
    ours = SpectralEarlyStopping.edge_of_stability(patience=1)
    monitor = HessianEigenMonitor(every_n_steps=1, compute_batch_sharpness=False, strict=True)
    trainer = fit(tmp_path, [monitor, stock, ours], model=model)
    # the stock callback stops at the first epoch end on its own criterion; ours watched every step quietly
    assert stock.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD and trainer.global_step == 4
    assert ours.stopped_step is None and ours.reason is None
    assert ours._measurements.last["spectral/hessian/lambda_1"][0] == 4
