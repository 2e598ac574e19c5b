"""WeightSpectrumMonitor(alpha="farms"): the FARMS exponent of every layer in a real Trainer.fit."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import trainer_kwargs
from spectral_testing.zoo import LayerZoo

from lightning_spectral.callbacks import WeightSpectrumMonitor
from lightning_spectral.functional import farms_alpha
from lightning_spectral.functional.weight_matrices import weight_matrices


def _fit(tmp_path, callbacks):
    pl.seed_everything(0)
    model = LayerZoo()
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, logger=logger, max_epochs=2))
    trainer.fit(model)
    return model, logger


def test_alpha_farms_is_logged_for_every_fittable_layer(tmp_path):
    model, logger = _fit(tmp_path / "on", [WeightSpectrumMonitor(every_n_steps=4, alpha="farms")])
    scalars = read_tensorboard_scalars(logger.log_dir)
    expected = {}
    for matrix in weight_matrices(model):
        result = farms_alpha(matrix.matrix)
        if result is not None:
            expected[matrix.name] = result.alpha
    assert len(expected) >= 3  # the zoo's layers of at least 10 singular values
    logged = {
        tag.removeprefix("spectral/weights/").removesuffix("/alpha_farms"): values
        for tag, values in scalars.items()
        if tag.endswith("/alpha_farms")
    }
    assert set(logged) == set(expected)
    for name, values in logged.items():
        assert [step for step, _ in values] == [0, 4, 8], name
        assert values[-1][1] == pytest.approx(expected[name], rel=1e-5), name  # the final weights' value
    # the monitor only reads the weights: training is bit-identical without it
    plain, _ = _fit(tmp_path / "off", [])
    for (name, a), (_, b) in zip(model.named_parameters(), plain.named_parameters()):
        assert torch.equal(a, b), name


def test_plain_alpha_logs_no_farms_key(tmp_path):
    _, logger = _fit(tmp_path, [WeightSpectrumMonitor(every_n_steps=4)])
    assert not [tag for tag in read_tensorboard_scalars(logger.log_dir) if tag.endswith("alpha_farms")]


def test_bad_alpha_mode_raises():
    with pytest.raises(ValueError, match="`alpha`"):
        WeightSpectrumMonitor(alpha="FARMS")
