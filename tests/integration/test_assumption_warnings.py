"""Warnings a user needs, once each: what ``edge_of_stability()`` compares under an adaptive optimizer, and that
``sgd_stability`` assumes MSE when the training loss is not MSE (found from the loss functions ``training_step``
calls, not from the label dtype: an MSE-on-one-hot classifier has integer labels and must not be warned)."""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch
from spectral_testing.models import TinyClassifier, trainer_kwargs
from torch import nn

from lightning_spectral.callbacks import NTKTraceMonitor, SpectralEarlyStopping


class AdamWClassifier(TinyClassifier):
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class MSEOnOneHot(TinyClassifier):
    """Integer labels, MSE loss on their one-hot codes: what ``sgd_stability`` assumes."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), nn.functional.one_hot(y, 3).float())


def fit_and_record(tmp_path, module, callbacks, max_steps=4) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, max_steps=max_steps)).fit(module)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("module, warned", [(AdamWClassifier, True), (TinyClassifier, False)])
def test_edge_of_stability_says_what_it_compares_under_an_adaptive_optimizer(tmp_path, module, warned):
    messages = fit_and_record(tmp_path, module(), [SpectralEarlyStopping.edge_of_stability(action="warn")])
    about = [m for m in messages if "relative_to='lr') under" in m]
    assert len(about) == (1 if warned else 0)
    if warned:
        assert "AdamW" in about[0] and "lr·value/2" in about[0] and "eos_ratio" in about[0]


@pytest.mark.parametrize(
    "module, loss_scale, warned",
    [(TinyClassifier, None, True), (MSEOnOneHot, None, False), (TinyClassifier, 1.0, False)],
)
def test_sgd_stability_warns_once_when_the_loss_is_not_mse(tmp_path, module, loss_scale, warned):
    monitor = NTKTraceMonitor(every_n_steps=1, loss_scale=loss_scale, strict=True)
    messages = fit_and_record(tmp_path, module(), [monitor])
    assert monitor.num_measurements == 5  # steps 0..4: the warning is given once, not per measurement
    about = [m for m in messages if "assumes the MSE loss" in m]
    assert len(about) == (1 if warned else 0)
    if warned:
        assert "cross_entropy" in about[0]
