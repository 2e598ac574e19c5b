"""WeightSpectrumMonitor in a real Trainer.fit, read back from TensorBoard and W&B offline files.

WeightSpectrumMonitor's singular-vector dynamics in a real Trainer.fit, read back from TensorBoard: the
agreement with the previous measurement and the inter-layer alignment against direct implementations of Yunis
et al.'s definitions on the very weights measured; the rank measures; split_fused; one key per meaning.

WeightSpectrumMonitor(alpha=...): the FARMS and WeightWatcher exponents of every layer in a real fit.
"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from spectral_testing.log_readers import (
    read_tensorboard_histogram_tags,
    read_tensorboard_scalars,
    read_wandb_history,
)
from spectral_testing.models import classification_data, trainer_kwargs
from spectral_testing.zoo import LayerZoo
from torch import nn
from torch.utils.data import DataLoader

from lightning_spectral.callbacks import WeightSpectrumMonitor
from lightning_spectral.functional import farms_alpha, power_law_alpha
from lightning_spectral.functional.weights.matrices import weight_matrices

EXPECTED_LAYERS = [
    "embedding.weight",
    "lstm.weight_ih_l0.i",
    "lstm.weight_hh_l0.o",
    "gru.weight_ih_l0.r",
    "gru.weight_hh_l0.n",
    "attention.in_proj_weight.q",
    "attention.in_proj_weight.k",
    "attention.in_proj_weight.v",
    "attention.out_proj.weight",
    "conv.weight",
    "head.weight",
]


def _fit(tmp_path, monitor, logger, max_epochs=2, **kwargs):
    pl.seed_everything(0)
    model = LayerZoo()
    trainer = pl.Trainer(
        callbacks=[monitor], **trainer_kwargs(tmp_path, logger=logger, max_epochs=max_epochs, **kwargs)
    )
    trainer.fit(model)
    return trainer, model


def test_every_layer_kind_is_logged_with_exact_values(tmp_path):
    monitor = WeightSpectrumMonitor(every_n_steps=4, k=3, compute_condition_number=True)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer, model = _fit(tmp_path, monitor, logger)
    scalars = read_tensorboard_scalars(logger.log_dir)
    assert trainer.global_step == 8
    for layer in EXPECTED_LAYERS:
        for metric in (
            "sigma_max",
            "sigma_1",
            "sigma_2",
            "sigma_3",
            "frobenius_norm",
            "stable_rank",
            "effective_rank",
            "condition_number",
        ):
            assert [s for s, _ in scalars[f"spectral/weights/{layer}/{metric}"]] == [0, 4, 8], (layer, metric)
        # rotation needs a previous measurement: from the second one on
        assert [s for s, _ in scalars[f"spectral/weights/{layer}/rotation"]] == [4, 8]
    # The last logged values are those of the final weights: check against dense references.
    matrices = {m.name: m.matrix for m in weight_matrices(model)}
    assert set(EXPECTED_LAYERS) <= set(matrices)
    for layer in EXPECTED_LAYERS:
        exact = torch.linalg.svdvals(matrices[layer].double())
        logged = {
            metric: scalars[f"spectral/weights/{layer}/{metric}"][-1][1]
            for metric in ("sigma_1", "sigma_2", "sigma_3", "frobenius_norm", "stable_rank", "effective_rank")
        }
        assert logged["sigma_1"] == pytest.approx(exact[0].item(), rel=1e-3)
        assert logged["sigma_3"] == pytest.approx(exact[2].item(), rel=1e-3)
        assert logged["frobenius_norm"] == pytest.approx(exact.norm().item(), rel=1e-4)
        assert logged["stable_rank"] == pytest.approx((exact.norm() ** 2 / exact[0] ** 2).item(), rel=1e-3)
        p = exact / exact.sum()
        assert logged["effective_rank"] == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-3)
    # the Q/K/V blocks are the three row blocks of in_proj_weight
    q = model.attention.in_proj_weight.detach()[:12]
    q_sigma = scalars["spectral/weights/attention.in_proj_weight.q/sigma_max"][-1][1]
    assert q_sigma == pytest.approx(torch.linalg.svdvals(q)[0].item(), rel=1e-4)
    # aggregates
    last_stable = [scalars[f"spectral/weights/{name}/stable_rank"][-1][1] for name in matrices]
    assert scalars["spectral/weights/mean_stable_rank"][-1][1] == pytest.approx(
        sum(last_stable) / len(last_stable), rel=1e-5
    )
    last_sigma = [scalars[f"spectral/weights/{name}/sigma_max"][-1][1] for name in matrices]
    assert scalars["spectral/weights/max_sigma_max"][-1][1] == pytest.approx(max(last_sigma), rel=1e-6)
    histograms = read_tensorboard_histogram_tags(logger.log_dir)
    assert {f"spectral/weights/{layer}/singular_values" for layer in EXPECTED_LAYERS} <= histograms


@pytest.mark.parametrize("warm_start", [True, False])
def test_rotation_reflects_training_movement(tmp_path, warm_start):
    """``warm_start`` seeds the range finder only: the rotation is logged either way (it was not without)."""
    monitor = WeightSpectrumMonitor(every_n_steps=1, k=2, include=["head.*"], warm_start=warm_start)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    _fit(tmp_path, monitor, logger, max_epochs=1)
    scalars = read_tensorboard_scalars(logger.log_dir)
    assert set(scalars) >= {"spectral/weights/head.weight/rotation"}
    assert not any("lstm" in tag for tag in scalars)
    rotations = [v for _, v in scalars["spectral/weights/head.weight/rotation"]]
    assert all(0.0 <= r <= 1.0 for r in rotations) and max(rotations) > 1e-6  # SGD at lr 0.5 moves the head


def test_wandb_offline_run_contains_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), project="spectral-test")
    monitor = WeightSpectrumMonitor(every_n_steps=4, include=["head.weight", "conv.weight"])
    _fit(tmp_path, monitor, logger)
    logger.experiment.finish()
    rows = read_wandb_history(tmp_path)
    steps = [row["trainer/global_step"] for row in rows if "spectral/weights/head.weight/sigma_max" in row]
    assert steps == [0, 4, 8]
    final = [row for row in rows if "spectral/weights/conv.weight/stable_rank" in row][-1]
    assert final["spectral/weights/conv.weight/stable_rank"] >= 1.0
    assert any(row.get("spectral/weights/head.weight/singular_values/_type") == "histogram" for row in rows)
    table = [row for row in rows if row.get("spectral/weights/per_layer/_type") == "table-file"]
    assert len(table) == 1 and table[0]["spectral/weights/per_layer/nrows"] == 6  # 2 layers × 3 measurements


def test_warm_start_state_survives_resume(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    first = WeightSpectrumMonitor(
        every_n_steps=4, method="randomized", k=2, num_oversamples=2, include=["head.weight"]
    )
    pl.seed_everything(0)
    trainer = pl.Trainer(
        callbacks=[first, checkpoint],
        **trainer_kwargs(tmp_path / "a", max_epochs=1, enable_checkpointing=True),
    )
    trainer.fit(LayerZoo())
    state = torch.load(tmp_path / "ckpt" / "epoch=0-step=4.ckpt", weights_only=False)["callbacks"][
        first.state_key
    ]
    assert state["num_measurements"] == 2
    saved = state["extra"]["head.weight"]
    resumed = WeightSpectrumMonitor(
        every_n_steps=4, method="randomized", k=2, num_oversamples=2, include=["head.weight"]
    )
    resumed.load_state_dict(state)
    assert torch.equal(resumed._previous["head.weight"].right_vectors, saved["right_vectors"])
    logger = TensorBoardLogger(str(tmp_path), name="resumed")
    trainer = pl.Trainer(callbacks=[resumed], **trainer_kwargs(tmp_path / "b", max_epochs=2, logger=logger))
    trainer.fit(LayerZoo(), ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=4.ckpt"))
    scalars = read_tensorboard_scalars(logger.log_dir)
    # the first measurement after resume already has a previous spectrum to rotate against
    assert [s for s, _ in scalars["spectral/weights/head.weight/rotation"]] == [8]


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"k": 0}, "k"),
        ({"method": "svd"}, "method"),
        ({"num_power_iterations": -1}, "num_power_iterations"),
        ({"conv_mode": "patches"}, "conv_mode"),
        ({"histogram_every_n": -1}, "histogram_every_n"),
        ({"warm_start": "yes"}, "warm_start"),
    ],
)
def test_constructor_validation(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        WeightSpectrumMonitor(**kwargs)


@pytest.mark.parametrize("limit", [1, 2, None])
def test_per_layer_limit_keeps_the_aggregates_and_the_watched_keys(tmp_path, limit):
    """Two matrices: with ``per_layer_limit=1`` only the aggregates and the key a stopper watches are logged (no
    per-layer histograms); at or above the count, every layer's scalars and histograms."""
    from spectral_testing.models import TinyClassifier

    from lightning_spectral.callbacks import SpectralEarlyStopping

    monitor = WeightSpectrumMonitor(every_n_steps=2, per_layer_limit=limit, strict=True)
    stopper = SpectralEarlyStopping.rank_collapse("net.4.weight", min_stable_rank=1e-9)
    logger = TensorBoardLogger(str(tmp_path), name="run")
    trainer = pl.Trainer(callbacks=[monitor, stopper], **trainer_kwargs(tmp_path, logger=logger, max_steps=2))
    trainer.fit(TinyClassifier())
    logged = set(read_tensorboard_scalars(logger.log_dir))
    weights = {key for key in logged if key.startswith("spectral/weights/")}
    assert {"spectral/weights/mean_stable_rank", "spectral/weights/max_sigma_max"} <= weights
    assert "spectral/weights/net.4.weight/stable_rank" in weights  # watched by the stopper
    histograms = read_tensorboard_histogram_tags(logger.log_dir)
    if limit == 1:
        assert weights == {
            "spectral/weights/mean_stable_rank",
            "spectral/weights/max_sigma_max",
            "spectral/weights/net.4.weight/stable_rank",
        }
        assert not histograms
    else:
        assert {"spectral/weights/net.0.weight/sigma_max", "spectral/weights/net.4.weight/sigma_1"} <= weights
        assert "spectral/weights/net.0.weight/singular_values" in histograms


def test_per_layer_limit_is_validated():
    with pytest.raises(ValueError, match="per_layer_limit"):
        WeightSpectrumMonitor(per_layer_limit=-1)


def test_include_or_exclude_matching_nothing_raises_at_setup_naming_the_closest(tmp_path):
    from spectral_testing.models import TinyClassifier

    for kwargs, pattern in (
        ({"include": ["net.0.*", "net.5.weight"]}, "net.5.weight"),
        ({"exclude": "head*"}, "head"),
    ):
        trainer = pl.Trainer(
            callbacks=[WeightSpectrumMonitor(**kwargs)], **trainer_kwargs(tmp_path, max_steps=1)
        )
        with pytest.raises(
            ValueError,
            match=rf"`(include|exclude)` pattern '{pattern}.*matches no weight matrix.*closest names: 'net",
        ):
            trainer.fit(TinyClassifier())


# --------------------------------------------------------------------------------- singular-vector dynamics
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


# ---------------------------------------------------------------------------------------------------- FARMS
def _fit_zoo(tmp_path, callbacks):
    pl.seed_everything(0)
    model = LayerZoo()
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, logger=logger, max_epochs=2))
    trainer.fit(model)
    return model, logger


def test_alpha_farms_is_logged_for_every_fittable_layer(tmp_path):
    monitor = WeightSpectrumMonitor(every_n_steps=4, alpha=("farms", "weightwatcher"), method="exact")
    model, logger = _fit_zoo(tmp_path / "on", [monitor])
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
    plain, _ = _fit_zoo(tmp_path / "off", [])
    for (name, a), (_, b) in zip(model.named_parameters(), plain.named_parameters()):
        assert torch.equal(a, b), name


def test_plain_alpha_logs_no_other_alpha_key(tmp_path):
    _, logger = _fit_zoo(tmp_path, [WeightSpectrumMonitor(every_n_steps=4)])
    tags = read_tensorboard_scalars(logger.log_dir)
    assert [tag for tag in tags if tag.endswith("/alpha")]
    assert not [tag for tag in tags if tag.endswith(("alpha_farms", "alpha_weightwatcher"))]


@pytest.mark.parametrize("alpha", ["FARMS", (), ("farms", "ww")])
def test_bad_alpha_mode_raises(alpha):
    with pytest.raises(ValueError, match="`alpha`"):
        WeightSpectrumMonitor(alpha=alpha)
    with pytest.raises(TypeError, match="`alpha`"):
        WeightSpectrumMonitor(alpha=3)
