"""Spectral dynamics of weights with and without weight decay: rank collapse, top singular vectors that settle
early, and the alignment between consecutive layers (Yunis et al. 2024, "Approaching Deep Learning through
the Spectral Dynamics of Weights", on a small model).

The task: 2048 Gaussian inputs in ``R^24``, labeled by ``argmax(A x)`` over 10 classes with a rank-3 teacher
``A`` (10 × 24). The model: an MLP 24 → 64 → 64 → 10 with ReLUs (``net.0``, ``net.2``, ``net.4``),
cross-entropy, AdamW (lr 3e-3, batches of 128), trained twice from the same initialization: weight decay 0
and ``--weight-decay`` (default 1.0). Per run:

- :class:`~lightning_spectral.callbacks.WeightSpectrumMonitor` every ``--every`` steps, exact SVDs, ``k = 10``,
  ``compute_rank_measures=True`` (``effective_rank_ratio`` = effective rank / ``min(m, n)``, ...) and
  ``interlayer_alignment=True`` (the score of ``diag |V_{l+1}ᵀ U_l|`` for ``net.0 → net.2`` and
  ``net.2 → net.4``), logged to TensorBoard under ``--log-dir``;
- ``ModelCheckpoint(every_n_train_steps=--every, save_top_k=-1)``: the checkpoints from which
  :func:`lightning_spectral.report.checkpoints.checkpoint_dynamics` computes the agreement of every matrix's
  singular vectors with the final checkpoint, index by index (``|⟨u_i, u_i^final⟩⟨v_i, v_i^final⟩|``).
  ``lightning-spectral report <run folder> -o OUT`` draws the same from the same files.

The figure (``--plot``; ``docs/spectral_dynamics.png``): top left, the effective rank ratio of each layer
against the step (rank collapse: weight decay drives it down further); top right, the inter-layer alignment
scores; bottom, the agreement with the final checkpoint of ``net.2`` by index and step, without and with weight
decay.

Measured with the defaults (1500 steps, ``--every 25``, seed 0; about 1 minute on 2 CPU cores): see
``examples/README.md`` and the printed summary.

Usage::

    python examples/spectral_dynamics.py                      # writes spectral_dynamics.png
    python examples/spectral_dynamics.py --steps 300 --every 25 --plot quick.png
    lightning-spectral report runs/spectral_dynamics/wd1 -o report
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from _common.argument_types import positive_float, positive_int
from _common.cpu_threads import add_threads_argument, torch_threads
from _common.example_fit import QUIET_WARNINGS
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral._internal.plotting import save_figure
from lightning_spectral.callbacks import WeightSpectrumMonitor
from lightning_spectral.report.checkpoints import CheckpointDynamics, checkpoint_dynamics
from lightning_spectral.report.reader import read_scalars

LAYERS = ("net.0.weight", "net.2.weight", "net.4.weight")
PAIRS = ("net.0.weight->net.2.weight", "net.2.weight->net.4.weight")
HEATMAP_LAYER = "net.2.weight"
INPUTS, CLASSES, TEACHER_RANK, EXAMPLES = 24, 10, 3, 2048


def teacher_data(seed: int = 0) -> TensorDataset:
    """Gaussian inputs labeled by the arg-max of a rank-3 linear teacher."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(EXAMPLES, INPUTS, generator=generator)
    teacher = torch.randn(CLASSES, TEACHER_RANK, generator=generator) @ torch.randn(
        TEACHER_RANK, INPUTS, generator=generator
    )
    return TensorDataset(x, (x @ teacher.T).argmax(1))


class TeacherMLP(pl.LightningModule):
    """24 → 64 → 64 → 10 ReLU MLP, AdamW with the given weight decay."""

    def __init__(self, weight_decay: float, lr: float = 3e-3, batch_size: int = 128, data_seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(INPUTS, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, CLASSES)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("train_loss", loss)
        self.log("train_acc", (logits.argmax(1) == y).float().mean())
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.hparams.data_seed)
        data = teacher_data(self.hparams.data_seed)
        return DataLoader(data, batch_size=self.hparams.batch_size, shuffle=True, generator=generator)


def train(weight_decay: float, *, steps: int, every: int, log_dir: Path, name: str, seed: int) -> Path:
    """One run; returns its folder (TensorBoard events and ``checkpoints/``)."""
    pl.seed_everything(seed, verbose=False)
    model = TeacherMLP(weight_decay, data_seed=seed)
    logger = TensorBoardLogger(str(log_dir), name=name, default_hp_metric=False)
    monitor = WeightSpectrumMonitor(
        every_n_steps=every,
        k=10,
        method="exact",
        compute_rank_measures=True,
        interlayer_alignment=True,
        histogram_every_n=0,
    )
    checkpoints = ModelCheckpoint(
        dirpath=Path(logger.log_dir) / "checkpoints",
        filename="{step}",
        every_n_train_steps=every,
        save_top_k=-1,
        save_weights_only=True,
    )
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=-1,
        callbacks=[monitor, checkpoints],
        logger=logger,
        log_every_n_steps=every,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    with warnings.catch_warnings():
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        trainer.fit(model)
    return Path(logger.log_dir)


def first_step_at_least(steps: np.ndarray, values: np.ndarray, threshold: float) -> int | None:
    """The first step from which ``values`` stay at or above ``threshold`` to the end."""
    below = np.nonzero(values < threshold)[0]
    if below.size == 0:
        return int(steps[0])
    return int(steps[below[-1] + 1]) if below[-1] + 1 < len(steps) else None


def plot(runs: dict[str, tuple[dict, CheckpointDynamics]], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8.4))
    (rank_axes, alignment_axes), heat_axes = axes
    styles = {label: style for label, style in zip(runs, ("--", "-"))}
    for label, (series, _) in runs.items():
        for color, layer in zip(("C0", "C1", "C2"), LAYERS):
            steps, values = zip(*series[f"spectral/weights/{layer}/effective_rank_ratio"])
            rank_axes.plot(steps, values, styles[label], color=color, label=f"{layer}, {label}")
        for color, pair in zip(("C3", "C4"), PAIRS):
            steps, values = zip(*series[f"spectral/weights/alignment/{pair}"])
            alignment_axes.plot(steps, values, styles[label], color=color, label=f"{pair}, {label}")
    rank_axes.set_ylabel("effective rank / min(m, n)")
    rank_axes.set_title("rank collapse", fontsize="medium")
    alignment_axes.set_ylabel(r"inter-layer alignment (mean of diag $|V_{l+1}^T U_l|_{1..10}$)")
    alignment_axes.set_title("alignment between consecutive layers", fontsize="medium")
    for ax in (rank_axes, alignment_axes):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2)
    mesh = None
    for ax, (label, (_, dynamics)) in zip(heat_axes, runs.items()):
        table = dynamics.agreement[HEATMAP_LAYER].T  # (index, step)
        edges = np.concatenate([[0.0], (dynamics.steps[1:] + dynamics.steps[:-1]) / 2, [dynamics.steps[-1]]])
        mesh = ax.pcolormesh(edges, np.arange(table.shape[0] + 1) + 0.5, table, vmin=0, vmax=1, cmap="magma")
        ax.set_ylim(table.shape[0] + 0.5, 0.5)
        ax.set_xlabel("step")
        ax.set_ylabel("singular-vector index $i$")
        ax.set_title(f"{HEATMAP_LAYER}, {label}: agreement with the final checkpoint", fontsize="medium")
    figure.colorbar(
        mesh, ax=heat_axes[-1], label=r"$|\langle u_i, u_i^{final}\rangle\langle v_i, v_i^{final}\rangle|$"
    )
    figure.suptitle(title)
    return save_figure(figure, path, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive_int, default=1500, help="optimizer steps per run")
    parser.add_argument("--every", type=positive_int, default=25, help="measure and checkpoint this often")
    parser.add_argument(
        "--weight-decay", type=positive_float, default=1.0, help="AdamW weight decay (2nd run)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the data and the initialization")
    add_threads_argument(parser)
    parser.add_argument("--log-dir", default="runs/spectral_dynamics")
    parser.add_argument("--plot", default="spectral_dynamics.png", help="where to save the figure (PNG)")
    args = parser.parse_args(argv)
    if args.every > args.steps:
        parser.error(f"--every ({args.every}) must be at most --steps ({args.steps})")

    runs = {}
    with torch_threads(args.threads):
        for label, weight_decay in (("wd 0", 0.0), (f"wd {args.weight_decay:g}", args.weight_decay)):
            name = "wd" + format(weight_decay, "g")
            folder = train(
                weight_decay,
                steps=args.steps,
                every=args.every,
                log_dir=Path(args.log_dir),
                name=name,
                seed=args.seed,
            )
            runs[label] = (read_scalars(folder), checkpoint_dynamics(folder))
    for label, (series, dynamics) in runs.items():
        ratios = ", ".join(
            f"{layer} {series[f'spectral/weights/{layer}/effective_rank_ratio'][0][1]:.2f} → "
            f"{series[f'spectral/weights/{layer}/effective_rank_ratio'][-1][1]:.2f}"
            for layer in LAYERS
        )
        print(f"{label}: effective rank / min(m, n): {ratios}")
        alignment = ", ".join(
            f"{pair} {series[f'spectral/weights/alignment/{pair}'][-1][1]:.2f}" for pair in PAIRS
        )
        print(f"{label}: inter-layer alignment at the end: {alignment}")
        table = dynamics.agreement[HEATMAP_LAYER]
        settled = [first_step_at_least(dynamics.steps, table[:, i], 0.9) for i in range(3)]
        print(
            f"{label}: {HEATMAP_LAYER} agreement ≥ 0.9 with the final checkpoint from step (i = 1, 2, 3): {settled}"
        )
    title = (
        f"MLP 24-64-64-10 on a rank-{TEACHER_RANK} teacher, AdamW, {args.steps} steps: "
        f"weight decay 0 (dashed) vs {args.weight_decay:g} (solid)"
    )
    print(f"figure written to {plot(runs, args.plot, title)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
