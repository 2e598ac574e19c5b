"""WeightSpectrumMonitor(alpha=...): the FARMS and WeightWatcher exponents of every layer in a real fit."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import trainer_kwargs
from spectral_testing.zoo import LayerZoo

from lightning_spectral.callbacks import WeightSpectrumMonitor
from lightning_spectral.functional import farms_alpha, power_law_alpha
from lightning_spectral.functional.weights.matrices import weight_matrices


def _fit(tmp_path, callbacks):
    pl.seed_everything(0)
    model = LayerZoo()
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, logger=logger, max_epochs=2))
    trainer.fit(model)
    return model, logger


def test_alpha_farms_is_logged_for_every_fittable_layer(tmp_path):
    monitor = WeightSpectrumMonitor(every_n_steps=4, alpha=("farms", "weightwatcher"), method="exact")
    model, logger = _fit(tmp_path / "on", [monitor])
    scalars = read_tensorboard_scalars(logger.log_dir)
    references = {
        "alpha_farms": lambda w: farms_alpha(w),
        "alpha_weightwatcher": lambda w: power_law_alpha(
            torch.linalg.svdvals(w.float()).double() ** 2, fit="weightwatcher"
        ),
    }
    for key, reference in references.items():
        expected = {}
        for matrix in weight_matrices(model):
            result = reference(matrix.matrix.detach())
            if result is not None:
                expected[matrix.name] = result.alpha
        assert len(expected) >= 3  # the zoo's layers with enough singular values
        logged = {
            tag.removeprefix("spectral/weights/").removesuffix(f"/{key}"): values
            for tag, values in scalars.items()
            if tag.endswith(f"/{key}")
        }
        assert set(logged) == set(expected), key
        for name, values in logged.items():
            assert [step for step, _ in values] == [0, 4, 8], (key, name)
            assert values[-1][1] == pytest.approx(expected[name], rel=1e-4), (key, name)  # final weights
    # the monitor only reads the weights: training is bit-identical without it
    plain, _ = _fit(tmp_path / "off", [])
    for (name, a), (_, b) in zip(model.named_parameters(), plain.named_parameters()):
        assert torch.equal(a, b), name


def test_plain_alpha_logs_no_other_alpha_key(tmp_path):
    _, logger = _fit(tmp_path, [WeightSpectrumMonitor(every_n_steps=4)])
    tags = read_tensorboard_scalars(logger.log_dir)
    assert [tag for tag in tags if tag.endswith("/alpha")]
    assert not [tag for tag in tags if tag.endswith(("alpha_farms", "alpha_weightwatcher"))]


@pytest.mark.parametrize("alpha", ["FARMS", (), ("farms", "ww")])
def test_bad_alpha_mode_raises(alpha):
    with pytest.raises(ValueError, match="`alpha`"):
        WeightSpectrumMonitor(alpha=alpha)
    with pytest.raises(TypeError, match="`alpha`"):
        WeightSpectrumMonitor(alpha=3)
