"""Grokking: the training pairs are fitted within 30 steps, the held-out pairs only thousands of steps later.

Power et al. (2022, "Grokking: Generalization Beyond Overfitting on Small Algorithmic Datasets") trained small
networks on modular arithmetic and saw validation accuracy jump from chance to 100 % long after training
accuracy had reached 100 %; weight decay hastens the jump most. Its spectral signature: Yunis et al. (2024,
"Approaching Deep Learning through the Spectral Dynamics of Weights") found that weight decay pulls the weight
matrices towards low rank while the network moves from the memorizing to the generalizing solution, and that
their top singular vectors stop rotating; Kumar et al. (2024, "Grokking as the Transition from Lazy to Rich
Training Dynamics") describe the jump as the network leaving the kernel (lazy) regime for feature learning,
which shows as a change of its neural tangent kernel (NTK) and of the kernel's alignment with the labels.

The task is ``(a, b) ↦ (a + b) mod p`` over all ``p²`` pairs, of which a random ``--train-fraction`` is the
training set and the rest the validation set. The model embeds both operands with one shared table,
concatenates the two embeddings, and applies one ReLU hidden layer and a linear read-out to ``p`` logits
(``embed`` ``p × d``, ``hidden`` ``h × 2d``, ``readout`` ``p × h``); cross-entropy, full-batch AdamW with
weight decay 1.0. Monitors, logged to TensorBoard under ``runs/grokking``:

- :class:`~lightning_spectral.callbacks.WeightSpectrumMonitor` every ``--weights-every`` steps:
  ``spectral/weights/<layer>/stable_rank``, ``effective_rank_estimate`` (the layers are decomposed by the
  randomized top-``k``), ``rotation`` (of the top-``k`` left singular
  subspace since the previous measurement) and ``spectral/weights/mean_stable_rank``;
- :class:`~lightning_spectral.callbacks.NTKTraceMonitor` every ``--ntk-every`` steps, on a fixed batch of
  held-out pairs, ``--ntk-per-label`` for each of ``--ntk-labels`` labels: ``spectral/ntk/trace``, and the
  kernel-target alignments of the NTK of all ``p`` logits with the one-hot labels, ``alignment``,
  ``alignment_centered`` and ``alignment_offdiagonal`` (between examples: the correlation, over pairs of
  distinct examples, of the output-traced kernel with "same label"; a batch of many labels with a few pairs
  each gives it label-sharing pairs to compare);
- the module itself logs ``train_acc`` / ``train_loss`` every step and ``val_acc`` / ``val_loss`` every
  ``--val-every`` steps.

The script reads the series back from the event files and plots them against the step (``docs/grokking.png``).

Measured with the defaults (p = 59, 30 % of the pairs = 1044 for training, d = 64, h = 128, AdamW lr 1e-2,
weight decay 1.0, 6000 steps, seed 0; about 2 minutes on 2 CPU cores):

- train accuracy is 100 % from step 28 on; validation accuracy is 0.000 at the first validation (step 50),
  0.001 at step 1000, passes 5 % near step 1650, 50 % at step 2700 and 99 % at step 3550 (1.000 at the end);
- the mean stable rank goes from 24.3 at initialization up to 25.7 while the network memorizes (step 1050),
  then down to 18.7 at the 50 % point and 14.9 after the jump (step 5050); the embedding and the read-out
  fall from 22.3 and 25.6 at their peaks to 13.0 and 12.9, the hidden layer from 32.7 to 17-21. (The
  estimated effective ranks move by only 5-9 %: the change is in the few top singular values.)
- the rotation of the top-8 left singular subspace between measurements 50 steps apart (median over a
  stretch) is 0.03-0.06 while the network memorizes (steps 50-500), 5e-4 to 2e-3 just before the jump
  (steps 2200-2600), 2e-3 to 4e-3 while validation accuracy climbs (steps 2700-3700), and below 1e-4 for the
  embedding and the read-out once it has grokked (steps 5000-6000; the hidden layer keeps turning at 2e-3);
- the NTK is not lazy here: its trace grows 13-fold within the first 250 steps (7.8e4 → 1.0e6) and
  19-fold by step 1000. Its alignment between examples starts slightly negative (−0.008 at steps 0 and 250:
  held-out pairs that share a label have no more similar gradients than others after memorization), then
  rises steadily while validation accuracy is still near chance (+0.040 at step 1000, val. 0.001; +0.067 at
  step 1500, val. 0.03), keeps rising through the jump (+0.08 to +0.09 around the 50 % point, steps 2500-2750; +0.135 at step 3500) and
  levels off at +0.175 once the network has grokked (step 4000 on): the kernel comes to relate the
  held-out pairs by their sum, the lazy → rich change of Kumar et al. With ``--seed 1`` / ``--seed 2`` it goes
  from −0.040 / −0.074 to +0.051 / +0.204, and with ``--train-fraction 0.4 --steps 1500`` (the shortened run
  of the tests) and seeds 0-4 from −0.035…−0.055 to +0.079…+0.171, always in step with validation accuracy.
- The plain and centered alignments (all (example, logit) pairs, diagonal included) stay flat at 0.021-0.024
  through it all: with 59 one-hot classes the label kernel ``yyᵀ`` is almost diagonal, so they mostly
  measure how diagonal-dominant the kernel is. In earlier trials neither they nor the alignment of the
  logit-summed kernel including its diagonal rose at the jump (training or held-out pairs, B = 32 or 64), and
  a 1-layer transformer (p = 59, 30 % of the pairs; groks in about a minute too) showed its plain alignment
  dipping by about half at the jump.

Usage::

    python examples/grokking.py                                   # the figure, about 2 minutes
    python examples/grokking.py --train-fraction 0.4 --steps 1500  # groks sooner (val. 50 % near step 800)
    tensorboard --logdir runs/grokking
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from _common.argument_types import fraction, positive_float, positive_int
from _common.cpu_threads import add_threads_argument, torch_threads
from _common.example_fit import logged_fit, whole_set_loader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral._internal.plotting import save_figure
from lightning_spectral.callbacks import NTKTraceMonitor, WeightSpectrumMonitor
from lightning_spectral.functional.ntk.kernel_matrix import NTK_MATRIX_MAX_ROWS
from lightning_spectral.report.reader import read_scalars

LAYERS = ("embed.weight", "hidden.weight", "readout.weight")
TRAIN_ACC, VAL_ACC = "train_acc", "val_acc"
MEAN_STABLE_RANK = "spectral/weights/mean_stable_rank"
NTK_ALIGNMENT, NTK_TRACE = "spectral/ntk/alignment_offdiagonal", "spectral/ntk/trace"
#: Rotations below this are drawn at it, on the logarithmic axis (a subspace at rest gives 0 up to rounding).
ROTATION_FLOOR = 1e-4

Series = dict[str, list[tuple[int, float]]]


def modular_addition(p: int, train_fraction: float, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """All pairs ``(a, b)`` with ``0 ≤ a, b < p`` and their labels ``(a + b) mod p``, split at random (under
    ``seed``) into a training set of ``round(train_fraction · p²)`` pairs and a validation set of the rest."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    pairs = torch.cartesian_prod(torch.arange(p), torch.arange(p))
    labels = (pairs[:, 0] + pairs[:, 1]) % p
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    num_train = round(train_fraction * p * p)
    if not 0 < num_train < p * p:
        raise ValueError(
            f"train_fraction={train_fraction} leaves an empty training or validation set for p={p}"
        )
    train, val = order[:num_train], order[num_train:]
    return TensorDataset(pairs[train], labels[train]), TensorDataset(pairs[val], labels[val])


def label_balanced(
    dataset: TensorDataset, num_labels: int, per_label: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_label`` pairs of each of the labels ``0 … num_labels − 1`` in ``dataset``: a batch in
    which many pairs of examples share a label, as ``spectral/ntk/alignment_offdiagonal`` needs (a random
    batch of 32 out of 59 labels has about 8 label-sharing pairs out of 496)."""
    pairs, labels = dataset.tensors
    chosen = []
    for label in range(num_labels):
        index = torch.nonzero(labels == label).flatten()[:per_label]
        if index.numel() < per_label:
            raise ValueError(f"label {label} has {index.numel()} examples, fewer than per_label={per_label}")
        chosen.append(index)
    index = torch.cat(chosen)
    return pairs[index], labels[index]


class ModularAdditionMLP(pl.LightningModule):
    """Shared embedding of both operands, concatenated; one ReLU hidden layer; linear read-out to p logits.

    Args:
        p: the modulus (and the number of classes).
        train_fraction: the fraction of all ``p²`` pairs used for training; the rest is validation.
        embedding_dim: ``d``, the width of the embedding of each operand.
        hidden: ``h``, the width of the hidden layer.
        lr: AdamW's learning rate.
        weight_decay: AdamW's (decoupled) weight decay.
        data_seed: seeds the train / validation split.
    """

    def __init__(
        self,
        p: int = 59,
        train_fraction: float = 0.3,
        embedding_dim: int = 64,
        hidden: int = 128,
        lr: float = 1e-2,
        weight_decay: float = 1.0,
        data_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(p, embedding_dim)
        self.hidden = nn.Linear(2 * embedding_dim, hidden)
        self.readout = nn.Linear(hidden, p)
        self.train_set, self.val_set = modular_addition(p, train_fraction, data_seed)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.relu(self.hidden(self.embed(pairs).flatten(start_dim=1))))

    def _loss_and_accuracy(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pairs, labels = batch
        logits = self(pairs)
        return nn.functional.cross_entropy(logits, labels), (logits.argmax(dim=1) == labels).float().mean()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, accuracy = self._loss_and_accuracy(batch)
        self.log("train_loss", loss)
        self.log(TRAIN_ACC, accuracy)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, accuracy = self._loss_and_accuracy(batch)
        self.log("val_loss", loss)
        self.log(VAL_ACC, accuracy)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, betas=(0.9, 0.98)
        )

    def train_dataloader(self) -> DataLoader:
        return whole_set_loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        return whole_set_loader(self.val_set)


def train(
    model: ModularAdditionMLP,
    *,
    steps: int,
    log_dir: str | Path,
    val_every: int = 50,
    weights_every: int = 50,
    ntk_every: int = 250,
    ntk_labels: int = 8,
    ntk_per_label: int = 4,
    top_k: int = 8,
) -> Path:
    """Full-batch training for ``steps`` steps with the weight and NTK monitors; returns the run's TensorBoard
    directory ``<log_dir>/p=<p>_train=<fraction>/version_<i>``."""
    monitors = [
        WeightSpectrumMonitor(every_n_steps=weights_every, k=top_k, histogram_every_n=10),
        # The alignments form the (n·p) × (n·p) kernel of all p logits: a small fixed batch of held-out
        # pairs, `ntk_per_label` for each of `ntk_labels` labels.
        NTKTraceMonitor(
            every_n_steps=ntk_every,
            compute_alignment=True,
            batch=label_balanced(model.val_set, ntk_labels, ntk_per_label),
        ),
    ]
    return logged_fit(
        model,
        callbacks=monitors,
        log_dir=log_dir,
        name=f"p={model.hparams.p}_train={model.hparams.train_fraction:g}",
        max_steps=steps,
        # The NTK monitor's SGD stability indicator is defined for torch.optim.SGD only; this is AdamW.
        ignore_warnings=(".*sgd_stability.*",),
        check_val_every_n_epoch=val_every,  # one step per epoch: validate every `val_every` steps
        num_sanity_val_steps=0,
    )


def first_step(values: Sequence[tuple[int, float]], threshold: float) -> int | None:
    """The first step at which the value reaches ``threshold`` (``None`` if it never does)."""
    return next((step for step, value in values if value >= threshold), None)


def value_at(values: Sequence[tuple[int, float]], step: int) -> float:
    """The last value logged at or before ``step`` (the first value if none was)."""
    earlier = [value for s, value in values if s <= step]
    return earlier[-1] if earlier else values[0][1]


def plot(series: Series, path: str | Path, title: str) -> Path:
    """Accuracy, stable rank, singular-vector rotation (drawn at ``ROTATION_FLOOR`` where smaller) and NTK
    alignment (with the NTK trace) against the step, one panel each; dotted lines mark the steps where train
    accuracy reaches 100 % and validation accuracy 50 %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    accuracy_axes, rank_axes, rotation_axes, ntk_axes = axes
    for tag, label, color in ((TRAIN_ACC, "train", "C0"), (VAL_ACC, "validation", "C1")):
        accuracy_axes.plot(*zip(*series[tag]), color=color, linewidth=1.5, label=label)
    accuracy_axes.set_ylabel("accuracy")
    accuracy_axes.set_ylim(-0.02, 1.02)
    for index, layer in enumerate(LAYERS):
        color = f"C{index + 2}"
        rank_axes.plot(*zip(*series[f"spectral/weights/{layer}/stable_rank"]), color=color, label=layer)
        steps, rotation = zip(*series[f"spectral/weights/{layer}/rotation"])
        rotation_axes.plot(
            steps, [max(value, ROTATION_FLOOR) for value in rotation], color=color, linewidth=1, label=layer
        )
    rank_axes.plot(*zip(*series[MEAN_STABLE_RANK]), color="k", linewidth=2, label="mean")
    rank_axes.set_ylabel("stable rank\n(‖W‖_F / ‖W‖_2)²")
    rotation_axes.set_yscale("log")
    rotation_axes.set_ylabel("rotation of the top\nsingular vectors")
    (alignment_line,) = ntk_axes.plot(
        *zip(*series[NTK_ALIGNMENT]),
        color="C5",
        marker=".",
        linewidth=1.5,
        label="alignment between examples",
    )
    ntk_axes.axhline(0.0, color="0.7", linewidth=0.8)
    ntk_axes.set_ylabel("NTK-label alignment\n(off-diagonal)")
    trace_axes = ntk_axes.twinx()
    (trace_line,) = trace_axes.plot(
        *zip(*series[NTK_TRACE]), color="0.5", linestyle="--", linewidth=1, label="trace (right)"
    )
    trace_axes.set_yscale("log")
    trace_axes.set_ylabel("NTK trace")
    ntk_axes.legend(handles=[alignment_line, trace_line], loc="lower right", fontsize="small", ncol=2)
    ntk_axes.set_xlabel("step (full-batch AdamW)")
    fitted, grokked = first_step(series[TRAIN_ACC], 1.0), first_step(series[VAL_ACC], 0.5)
    for step, label, color in ((fitted, "train acc. 100 %", "C0"), (grokked, "val. acc. 50 %", "C1")):
        if step is not None:
            for axes_ in axes:
                axes_.axvline(
                    step,
                    color=color,
                    linestyle=":",
                    linewidth=1,
                    label=label if axes_ is accuracy_axes else None,
                )
    for axes_ in axes[:3]:
        axes_.legend(loc="best", fontsize="small", ncol=2)
    accuracy_axes.set_title(title, fontsize="medium")
    return save_figure(figure, path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p", type=positive_int, default=59, help="the modulus")
    parser.add_argument(
        "--train-fraction", type=fraction, default=0.3, help="fraction of the p² pairs trained on"
    )
    parser.add_argument("--embedding-dim", type=positive_int, default=64)
    parser.add_argument("--hidden", type=positive_int, default=128)
    parser.add_argument("--lr", type=positive_float, default=1e-2, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=1.0, help="AdamW weight decay")
    parser.add_argument("--steps", type=positive_int, default=6000, help="full-batch steps")
    parser.add_argument("--val-every", type=positive_int, default=50, help="validate this often (steps)")
    parser.add_argument("--weights-every", type=positive_int, default=50, help="weight spectra this often")
    parser.add_argument(
        "--ntk-every", type=positive_int, default=250, help="NTK trace and alignment this often"
    )
    parser.add_argument(
        "--ntk-labels", type=positive_int, default=8, help="labels in the NTK batch of held-out pairs"
    )
    parser.add_argument(
        "--ntk-per-label", type=positive_int, default=4, help="held-out pairs per label in the NTK batch"
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=8, help="singular vectors whose rotation is logged"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the split and the initialization")
    add_threads_argument(parser)
    parser.add_argument("--log-dir", default="runs/grokking")
    parser.add_argument("--plot", default="grokking.png", help="where to save the figure (PNG)")
    args = parser.parse_args(argv)
    if args.ntk_labels > args.p:
        parser.error(f"--ntk-labels must be at most --p = {args.p}, got {args.ntk_labels}")
    rows = args.ntk_labels * args.ntk_per_label * args.p
    if rows > NTK_MATRIX_MAX_ROWS:
        parser.error(
            f"--ntk-labels × --ntk-per-label × --p = {rows} kernel rows, more than the alignment's "
            f"limit of {NTK_MATRIX_MAX_ROWS}"
        )

    with torch_threads(args.threads):
        pl.seed_everything(args.seed, verbose=False)
        model = ModularAdditionMLP(
            p=args.p,
            train_fraction=args.train_fraction,
            embedding_dim=args.embedding_dim,
            hidden=args.hidden,
            lr=args.lr,
            weight_decay=args.weight_decay,
            data_seed=args.seed,
        )
        run_dir = train(
            model,
            steps=args.steps,
            log_dir=args.log_dir,
            val_every=args.val_every,
            weights_every=args.weights_every,
            ntk_every=args.ntk_every,
            ntk_labels=args.ntk_labels,
            ntk_per_label=args.ntk_per_label,
            top_k=args.top_k,
        )
    series = read_scalars(run_dir)
    fitted, grokked = first_step(series[TRAIN_ACC], 1.0), first_step(series[VAL_ACC], 0.5)
    val_then = value_at(series[VAL_ACC], fitted or 0)
    (last_val_step, last_val) = series[VAL_ACC][-1]
    print(f"train accuracy 100 % at step {fitted}; validation accuracy then {val_then:.3f}")
    print(f"validation accuracy 50 % at step {grokked}, {last_val:.3f} at step {last_val_step}")
    (_, first_rank), (last_step, last_rank) = series[MEAN_STABLE_RANK][0], series[MEAN_STABLE_RANK][-1]
    print(f"mean stable rank {first_rank:.3g} at step 0 → {last_rank:.3g} at step {last_step}")
    alignment = series[NTK_ALIGNMENT]
    print(
        f"NTK alignment between examples {alignment[0][1]:+.3f} at step 0, "
        f"{value_at(alignment, fitted or 0):+.3f} when the training set is fitted, "
        f"{value_at(alignment, grokked or 0):+.3f} at 50 % validation accuracy, "
        f"{alignment[-1][1]:+.3f} at step {alignment[-1][0]}"
    )
    title = (
        f"(a + b) mod {args.p}, trained on {args.train_fraction:.0%} of the pairs: train accuracy 100 % at "
        f"step {fitted},\nvalidation accuracy 50 % at step {grokked}"
    )
    print(f"plot: {plot(series, args.plot, title)}; logs: tensorboard --logdir {args.log_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
