"""WeightSpectrumMonitor's singular-vector dynamics in a real Trainer.fit, read back from TensorBoard: the
agreement with the previous measurement and the inter-layer alignment against direct implementations of Yunis
et al.'s definitions on the very weights measured; the rank measures; split_fused; one key per meaning."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import classification_data, trainer_kwargs
from spectral_testing.zoo import LayerZoo
from torch import nn
from torch.utils.data import DataLoader

from lightning_spectral.callbacks import WeightSpectrumMonitor

LAYERS = ("net.0.weight", "net.2.weight", "net.4.weight")


class ThreeLayers(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self):
        return DataLoader(classification_data(64, 8, 3), batch_size=16)


class Snapshots(pl.Callback):
    """The weights at every step (after the monitor has measured: it comes first in the callback list)."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def _take(self, trainer, pl_module):
        self.weights[trainer.global_step] = {
            f"{n}": p.detach().double().clone() for n, p in pl_module.named_parameters() if p.ndim == 2
        }

    def on_train_start(self, trainer, pl_module):
        self._take(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._take(trainer, pl_module)


def _svd(W):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U, S, Vh.T


def test_agreement_alignment_and_rank_measures_are_the_definitions_on_the_measured_weights(tmp_path):
    pl.seed_everything(0)
    monitor = WeightSpectrumMonitor(
        every_n_steps=2, k=10, method="exact", compute_rank_measures=True, interlayer_alignment=True
    )
    snapshots = Snapshots()
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = pl.Trainer(
        callbacks=[monitor, snapshots], **trainer_kwargs(tmp_path, logger=logger, max_steps=6)
    )
    trainer.fit(ThreeLayers())
    scalars = read_tensorboard_scalars(logger.log_dir)
    for layer in LAYERS:
        logged = dict(scalars[f"spectral/weights/{layer}/agreement"])
        assert sorted(logged) == [2, 4, 6]
        for step, value in logged.items():
            U, _, V = _svd(snapshots.weights[step][layer])
            U_prev, _, V_prev = _svd(snapshots.weights[step - 2][layer])
            diagonal = torch.diagonal(((U.T @ U_prev) * (V.T @ V_prev)).abs())
            assert value == pytest.approx(float(diagonal[:10].mean()), abs=1e-5), (layer, step)
        # SGD at lr 0.5 moves the singular vectors: the agreement is below 1 somewhere
        assert min(logged.values()) < 0.999
        # rank measures at the last step, from all singular values
        sigma = torch.linalg.svdvals(snapshots.weights[6][layer])
        r = sigma.numel()
        p = sigma / sigma.sum()
        last = {
            key: dict(scalars[f"spectral/weights/{layer}/{key}"])[6]
            for key in ("effective_rank_ratio", "stable_rank_ratio", "mass90_count", "gini")
        }
        assert last["effective_rank_ratio"] == pytest.approx(
            math.exp(-float((p * p.log()).sum())) / r, rel=1e-5
        )
        assert last["stable_rank_ratio"] == pytest.approx(
            float((sigma**2).sum() / sigma[0] ** 2) / r, rel=1e-5
        )
        cumulative = torch.cumsum(sigma, 0) / sigma.sum()
        assert last["mass90_count"] == int((cumulative < 0.9).sum()) + 1
        gini = float((sigma[:, None] - sigma[None, :]).abs().sum() / (2 * r * sigma.sum()))
        assert last["gini"] == pytest.approx(gini, rel=1e-5)
    # inter-layer alignment of consecutive layers: diag |V_{l+1}ᵀ U_l|, mean of the first 10
    pairs = [k for k in scalars if k.startswith("spectral/weights/alignment/")]
    assert sorted(pairs) == [
        "spectral/weights/alignment/net.0.weight->net.2.weight",
        "spectral/weights/alignment/net.2.weight->net.4.weight",
    ]
    for earlier, later in zip(LAYERS, LAYERS[1:]):
        for step, value in scalars[f"spectral/weights/alignment/{earlier}->{later}"]:
            U, _, _ = _svd(snapshots.weights[step][earlier])
            _, _, V = _svd(snapshots.weights[step][later])
            diagonal = torch.diagonal((V.T @ U).abs())
            assert value == pytest.approx(float(diagonal[:10].mean()), abs=1e-5), (earlier, later, step)


def _zoo_scalars(tmp_path, **options):
    pl.seed_everything(0)
    monitor = WeightSpectrumMonitor(every_n_steps=4, **options)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, logger=logger, max_steps=4))
    trainer.fit(LayerZoo())
    return read_tensorboard_scalars(logger.log_dir)


def test_attention_pairs_and_split_fused(tmp_path):
    scalars = _zoo_scalars(tmp_path / "split", k=3, interlayer_alignment=True)
    for pair in ("attention.qk[0]", "attention.qk[1]", "attention.vo"):
        values = [v for _, v in scalars[f"spectral/weights/alignment/{pair}"]]
        assert len(values) == 2 and all(0.0 <= v <= 1.0 + 1e-6 for v in values), pair
    assert "spectral/weights/attention.in_proj_weight.q/sigma_max" in scalars
    whole = _zoo_scalars(tmp_path / "whole", k=3, split_fused=False)
    names = {key.rsplit("/", 1)[0] for key in whole}
    assert {"spectral/weights/attention.in_proj_weight", "spectral/weights/lstm.weight_ih_l0"} <= names
    assert not any(name.endswith((".q", ".i")) for name in names)
    sigma = dict(whole["spectral/weights/attention.in_proj_weight/sigma_max"])[0]
    pl.seed_everything(0)
    model = LayerZoo()  # same seed, same initial weights
    assert sigma == pytest.approx(
        float(torch.linalg.matrix_norm(model.attention.in_proj_weight, 2)), rel=1e-5
    )


def test_an_estimated_effective_rank_has_its_own_key(tmp_path):
    scalars = _zoo_scalars(tmp_path, k=2, num_oversamples=2, exact_threshold=5, compute_rank_measures=True)
    # the (12 × 36) convolution is above the threshold: randomized, its effective rank an estimate
    assert "spectral/weights/conv.weight/effective_rank_estimate" in scalars
    assert "spectral/weights/conv.weight/effective_rank" not in scalars
    assert "spectral/weights/conv.weight/gini" not in scalars  # needs every singular value
    assert "spectral/weights/conv.weight/stable_rank_ratio" in scalars  # exact from ‖W‖_F and σ_1
    # the 3-row head is below it: exact
    assert "spectral/weights/head.weight/effective_rank" in scalars
    assert "spectral/weights/head.weight/effective_rank_estimate" not in scalars


def test_interlayer_alignment_arguments(tmp_path):
    with pytest.raises(TypeError, match="interlayer_alignment"):
        WeightSpectrumMonitor(interlayer_alignment="net.0.weight")
    with pytest.raises(ValueError, match="pairs"):
        WeightSpectrumMonitor(interlayer_alignment=[("a", "b", "c")])
    with pytest.raises(ValueError, match="split_fused"):
        WeightSpectrumMonitor(split_fused=None)
    pl.seed_everything(0)
    monitor = WeightSpectrumMonitor(
        every_n_steps=2, interlayer_alignment=[("net.0.weight", "nope")], strict=True
    )
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=2))
    with pytest.raises(ValueError, match="'nope', which is not a measured weight matrix"):
        trainer.fit(ThreeLayers())
    monitor = WeightSpectrumMonitor(interlayer_alignment=[("net.0.weight", "net.4.weight")], strict=True)
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="does not feed"):
        trainer.fit(ThreeLayers())
