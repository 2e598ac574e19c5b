"""Edge of stability: under full-batch gradient descent the sharpness rises to ``2/η`` and then hovers there.

Gradient descent ``θ ← θ − η ∇L(θ)`` on a quadratic with curvature ``λ`` multiplies the error along that
direction by ``1 − ηλ`` each step, so it diverges once ``λ > 2/η``. Cohen et al. (2021, "Gradient Descent on
Neural Networks Typically Occurs at the Edge of Stability") found that on neural networks the sharpness
``λ_max(∇²L(θ_t))`` nevertheless *rises* during full-batch training (progressive sharpening) until it reaches
``2/η``, and then, instead of diverging, training settles into a regime where ``λ_max`` hovers at or just above
``2/η`` while the loss keeps going down, non-monotonically (the "edge of stability").

This script shows it on scikit-learn's digits (shipped with scikit-learn, no download): a tanh MLP
``64 → h → h → 10`` trained with plain ``torch.optim.SGD`` (no momentum) on the squared error to one-hot
targets, ``L(θ) = 1/(2n) Σ_i ‖f_θ(x_i) − e_{y_i}‖²``, where every step uses the whole training set as its
one batch. :class:`~lightning_spectral.callbacks.HessianEigenMonitor` measures ``λ_max`` of the full-batch
Hessian (Lanczos on Hessian-vector products, warm-started from the previous top eigenvector) every few steps
and logs it to TensorBoard under ``runs/edge_of_stability/lr=<η>``. One run per learning rate; the script
then reads the series back from the event files and plots ``λ_max`` against the step with ``2/η`` dashed.

**The stochastic case** (middle column; ``--sgd-batch-size 0`` skips it). Mini-batch SGD does not settle
at ``λ_max = 2/η``: Andreyev & Beneventano (2024, "Edge of Stochastic Stability: Revisiting the Edge of
Stability for SGD") found that what hovers at ``2/η`` is the *batch sharpness*
``E_B[g_Bᵀ H_B g_B / ‖g_B‖²]``, the curvature of a mini-batch loss along its own gradient, while the
full-batch ``λ_max`` stays below ``2/η`` (the smaller the batch, the further below). The same model is trained
with SGD on shuffled mini-batches of ``--sgd-batch-size`` examples at step ``--sgd-learning-rate``, logged
under ``runs/edge_of_stability/lr=<η>_batch=<B>``; the monitor draws ``n/B`` fixed mini-batches at fit start
(``num_batches``: together the whole training set), so ``λ_max`` is that of the full-batch Hessian and
``batch_sharpness`` the mean Rayleigh quotient over those mini-batches.

Measured with the defaults (seed 0, 2 CPU cores, about 80 s in all, and 8 s more for the Adam run). Full batch: λ_max rises from 2.3 and
ends at 8.1, 5.81 and 4.12 for η = 0.25, 0.35, 0.5 (2/η = 8, 5.71, 4). SGD with batch size 8 at η = 0.65
(2/η = 3.08): both quantities drop in the first few hundred steps (λ_max from 0.75 to 0.46 of 2/η, the batch
sharpness from 1.02 to 0.63), then climb back; over the last quarter of the 6000 steps the batch sharpness
averages 2.72 = 0.88·2/η (0.83-0.92) while λ_max stays at 2.10 = 0.68·2/η. After 2000 steps, over seeds 0-7:
batch sharpness 0.82-0.91 and λ_max 0.54-0.65 of 2/η. A larger step is not sustainable: at η = 0.7 the SGD
run diverged for seeds 1 and 3 of 0-4 (the other three ended with batch sharpness 0.90-0.94 of 2/η). At
batch size 32 the gap closes on this data set (at η = 0.9, λ_max ≈ 0.96 and batch sharpness ≈ 0.91 of 2/η):
it opens as the batch shrinks.

**The adaptive case** (third column; ``--adam-steps 0`` skips it). Adam steps ``θ ← θ − η D⁻¹m`` with the
preconditioner ``D = (1 − β₁ᵗ)·diag(√v̂ + ε)``, so its stability is set by the *preconditioned* sharpness
``λ_1(D⁻¹H)``, with the limit ``(2 + 2β₁)/((1 − β₁)η) = 38/η`` at β₁ = 0.9 (Cohen et al. 2022, "Adaptive
Gradient Methods at the Edge of Stability"). Under ``torch.optim.Adam`` the monitor logs it as
``preconditioned_lambda_1``, and ``eos_ratio`` as its ratio to that limit. Full-batch Adam at η = 0.002 on the
same model: ``eos_ratio`` rises from 0.06-0.10 and reaches 0.9 at step 300-560, then hovers at 0.91-1.04 over
the last quarter of 800 steps (seeds 0-4; with the default 1000 steps, seed 0: 0.94-1.03), while ``λ_max`` of the Hessian itself keeps rising (2.2-2.3 → 10.8-14.4,
5-14 % after the preconditioned sharpness reached the limit): Adam keeps advancing into sharper regions and
adapts its preconditioner to stay at the edge.

Usage::

    python examples/edge_of_stability.py                  # η = 0.25, 0.35, 0.5 + SGD (batch 8, η = 0.65)
    python examples/edge_of_stability.py --learning-rates 0.5 --steps 300 --sgd-batch-size 0 --plot eos.png
    python examples/edge_of_stability.py --sgd-batch-size 16 --sgd-learning-rate 0.9
    python examples/edge_of_stability.py --adam-learning-rate 0.005 --adam-steps 600
    tensorboard --logdir runs/edge_of_stability            # spectral/hessian/lambda_1, batch_sharpness, ...

Requires scikit-learn (``pip install scikit-learn``; it is in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from _common.argument_types import positive_float, positive_int
from _common.cpu_threads import add_threads_argument, torch_threads
from _common.example_fit import logged_fit, whole_set_loader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_spectral._internal.plotting import save_figure
from lightning_spectral.callbacks import HessianEigenMonitor
from lightning_spectral.report.reader import read_scalars as read_event_scalars

#: The default step sizes: their stability limits 2/η = 8, 5.7 and 4 all lie above the initial sharpness (≈ 2.3).
DEFAULT_LEARNING_RATES = (0.25, 0.35, 0.5)
LAMBDA_MAX = "spectral/hessian/lambda_1"
PRECONDITIONED = "spectral/hessian/preconditioned_lambda_1"
EOS_RATIO = "spectral/hessian/eos_ratio"
#: Adam's default β₁: its stability limit is (2 + 2β₁)/((1 − β₁)η) = 38/η.
ADAM_BETA1 = 0.9
BATCH_SHARPNESS = "spectral/hessian/batch_sharpness"
TRAIN_LOSS = "train_loss"
#: The mini-batch loss of an SGD run is plotted as a running mean over this many steps.
LOSS_WINDOW = 100

Series = dict[str, list[tuple[int, float]]]


def digits_data(num_examples: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_examples`` of scikit-learn's 8×8 digits: standardized pixels ``(n, 64)`` and one-hot
    targets ``(n, 10)``, both float32. Pixels that are constant over the subset are centered and left at 0."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    if not 10 <= num_examples <= len(labels):
        raise ValueError(f"num_examples must be between 10 and {len(labels)}, got {num_examples}")
    x = torch.tensor(images[:num_examples], dtype=torch.float32)
    std = x.std(dim=0)
    x = (x - x.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))
    y = nn.functional.one_hot(torch.tensor(labels[:num_examples]), num_classes=10).to(torch.float32)
    return x, y


class DigitsMLP(pl.LightningModule):
    """``64 → hidden → hidden → 10`` tanh MLP on the squared error to one-hot targets, plain SGD (or Adam).

    Args:
        lr: the step size η.
        hidden: width of the two hidden layers.
        num_examples: size of the training set.
        batch_size: ``None`` for full-batch gradient descent (one batch per epoch, the whole training set);
            otherwise mini-batch SGD on shuffled batches of this size (the last, incomplete one dropped).
        optimizer: ``"sgd"`` (plain ``torch.optim.SGD``) or ``"adam"`` (``torch.optim.Adam``, default betas).
    """

    def __init__(
        self,
        lr: float,
        hidden: int = 64,
        num_examples: int = 1000,
        batch_size: int | None = None,
        optimizer: str = "sgd",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 10)
        )
        self.data = digits_data(num_examples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = 0.5 * ((self(x) - y) ** 2).sum(dim=1).mean()
        self.log(TRAIN_LOSS, loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, betas=(ADAM_BETA1, 0.999))
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self) -> DataLoader:
        dataset = TensorDataset(*self.data)
        if self.hparams.batch_size is not None:
            return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True)
        return whole_set_loader(dataset)  # one batch per epoch: the whole training set


def train(
    lr: float,
    *,
    steps: int,
    log_dir: str | Path,
    hidden: int = 64,
    num_examples: int = 1000,
    every_n_steps: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    optimizer: str = "sgd",
) -> Path:
    """``steps`` steps of plain SGD (or Adam) at step size ``lr``, full-batch (``batch_size=None``) or on
    mini-batches, measuring the full-batch λ_max every ``every_n_steps`` steps (and at step 0); mini-batch runs
    also measure the batch sharpness, Adam runs the preconditioned sharpness. Returns the TensorBoard directory
    of this run, ``<log_dir>/lr=<lr>/version_<i>`` (``<log_dir>/lr=<lr>_batch=<batch_size>/version_<i>`` for
    mini-batches; names prefixed ``adam_`` for Adam)."""
    if batch_size is not None and not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch_size must be between 1 and num_examples={num_examples}, got {batch_size}")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    pl.seed_everything(seed, verbose=False)
    model = DigitsMLP(
        lr, hidden=hidden, num_examples=num_examples, batch_size=batch_size, optimizer=optimizer
    )
    prefix = "" if optimizer == "sgd" else f"{optimizer}_"
    if batch_size is None:
        name = f"{prefix}lr={lr:g}"
        monitor = HessianEigenMonitor(
            k=1,
            every_n_steps=every_n_steps,
            batch=model.data,  # the whole training set: λ_max is the full-batch sharpness
            compute_batch_sharpness=False,
        )
    else:
        name = f"{prefix}lr={lr:g}_batch={batch_size}"
        # n/B mini-batches of the training batch size, drawn once at fit start: together they are the
        # whole training set (less the n mod B examples SGD drops too), so λ_max is the full-batch
        # sharpness, and the batch sharpness is the mean of g_BᵀH_Bg_B/‖g_B‖² over them.
        monitor = HessianEigenMonitor(
            k=1,
            every_n_steps=every_n_steps,
            num_batches=num_examples // batch_size,
            compute_batch_sharpness=True,
        )
    return logged_fit(model, callbacks=[monitor], log_dir=log_dir, name=name, max_steps=steps)


def read_scalars(run_dir: str | Path, tags: Sequence[str]) -> Series:
    """``{tag: [(step, value), ...]}`` sorted by step, read back from the TensorBoard event files of a run."""
    logged = read_event_scalars(run_dir)
    return {tag: logged.get(tag, []) for tag in tags}


def last_quarter_mean(values: Sequence[tuple[int, float]]) -> float:
    """The mean value over the last quarter of a ``[(step, value), ...]`` series (at least one point)."""
    tail = values[-max(1, len(values) // 4) :]
    return sum(value for _, value in tail) / len(tail)


def running_mean(values: Sequence[tuple[int, float]], window: int) -> tuple[list[int], list[float]]:
    """Steps and the mean of the last ``window`` values at each step (fewer at the start)."""
    steps, means, total = [], [], 0.0
    for index, (step, value) in enumerate(values):
        total += value - (values[index - window][1] if index >= window else 0.0)
        steps.append(step)
        means.append(total / min(index + 1, window))
    return steps, means


def plot(
    runs: dict[float, Series],
    path: str | Path,
    stochastic: tuple[float, int, Series] | None = None,
    adaptive: tuple[float, Series] | None = None,
) -> Path:
    """Training loss (top) and λ_max with its limit 2/η dashed (bottom) against the step, one color per η.
    With ``stochastic = (η, batch size, series)`` of an SGD run, a column shows its loss (a running
    mean over ``LOSS_WINDOW`` mini-batches), its λ_max and its batch sharpness against the same limit. With
    ``adaptive = (η, series)`` of a full-batch Adam run, a column shows its loss, its preconditioned
    sharpness against Adam's limit 38/η and, on the right axis, λ_max of the Hessian itself."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + (stochastic is not None) + (adaptive is not None)
    figure, axes = plt.subplots(
        2,
        columns,
        figsize=(7 * columns, 6),
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [1, 2]},
    )
    loss_axes, sharpness_axes = axes[0, 0], axes[1, 0]
    for index, (lr, series) in enumerate(sorted(runs.items())):
        color = f"C{index}"
        if series[TRAIN_LOSS]:
            steps, values = zip(*series[TRAIN_LOSS])
            loss_axes.plot(steps, values, color=color, linewidth=1, label=f"η = {lr:g}")
        steps, values = zip(*series[LAMBDA_MAX])
        sharpness_axes.plot(steps, values, color=color, linewidth=1.5, label=f"λ_max, η = {lr:g}")
        sharpness_axes.axhline(2 / lr, color=color, linestyle="--", linewidth=1, label=f"2/η = {2 / lr:.3g}")
    loss_axes.set_title("Full-batch gradient descent: λ_max rises to 2/η and hovers there", fontsize="medium")
    sharpness_axes.set_xlabel("step (full-batch gradient descent)")
    sharpness_axes.set_ylabel("sharpness λ_max(∇²L)")
    column = 1
    if stochastic is not None:
        lr, batch_size, series = stochastic
        sgd_loss_axes, sgd_sharpness_axes = axes[0, column], axes[1, column]
        column += 1
        if series[TRAIN_LOSS]:
            label = f"η = {lr:g}, mean of {LOSS_WINDOW} batches"
            sgd_loss_axes.plot(
                *running_mean(series[TRAIN_LOSS], LOSS_WINDOW), color="C3", linewidth=1, label=label
            )
        steps, values = zip(*series[LAMBDA_MAX])
        sgd_sharpness_axes.plot(steps, values, color="C3", linewidth=1.5, label="λ_max (full batch)")
        steps, values = zip(*series[BATCH_SHARPNESS])
        sgd_sharpness_axes.plot(steps, values, color="C4", linewidth=1.5, label="batch sharpness")
        sgd_sharpness_axes.axhline(
            2 / lr, color="C3", linestyle="--", linewidth=1, label=f"2/η = {2 / lr:.3g}"
        )
        sgd_loss_axes.set_title(
            f"SGD, batch size {batch_size}: batch sharpness near 2/η, λ_max well below it", fontsize="medium"
        )
        sgd_sharpness_axes.set_xlabel(f"step (SGD, batch size {batch_size})")
        sgd_sharpness_axes.set_ylabel("sharpness")
    if adaptive is not None:
        lr, series = adaptive
        adam_loss_axes, adam_sharpness_axes = axes[0, column], axes[1, column]
        if series[TRAIN_LOSS]:
            steps, values = zip(*series[TRAIN_LOSS])
            adam_loss_axes.plot(steps, values, color="C5", linewidth=1, label=f"Adam, η = {lr:g}")
        limit = adam_limit(lr)
        steps, values = zip(*series[PRECONDITIONED])
        adam_sharpness_axes.plot(steps, values, color="C5", linewidth=1.5, label="λ_1(D⁻¹H), preconditioned")
        adam_sharpness_axes.axhline(
            limit, color="C5", linestyle="--", linewidth=1, label=f"38/η = {limit:.3g}"
        )
        raw_axes = adam_sharpness_axes.twinx()
        steps, values = zip(*series[LAMBDA_MAX])
        raw_axes.plot(steps, values, color="C7", linewidth=1.5, label="λ_max(∇²L) (right axis)")
        raw_axes.set_ylim(bottom=0)
        raw_axes.set_ylabel("λ_max(∇²L)")
        raw_axes.legend(loc="center right", fontsize="small")
        adam_loss_axes.set_title(
            "Full-batch Adam: λ_1(D⁻¹H) rises to 38/η and hovers; λ_max keeps rising", fontsize="medium"
        )
        adam_sharpness_axes.set_xlabel("step (full-batch Adam)")
        adam_sharpness_axes.set_ylabel("preconditioned sharpness λ_1(D⁻¹H)")
    for axes_ in axes[0]:
        axes_.set_yscale("log")
        axes_.set_ylabel("training loss")
        axes_.legend(loc="upper right", fontsize="small")
    for axes_ in axes[1]:
        axes_.set_ylim(bottom=0)
        axes_.legend(loc="lower right", fontsize="small", ncol=2)
    return save_figure(figure, path, dpi=120)


def adam_limit(lr: float) -> float:
    """Adam's stability limit ``(2 + 2β₁)/((1 − β₁)η)`` (38/η at the default β₁ = 0.9)."""
    return (2 + 2 * ADAM_BETA1) / ((1 - ADAM_BETA1) * lr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--learning-rates", type=positive_float, nargs="+", default=list(DEFAULT_LEARNING_RATES)
    )
    parser.add_argument("--steps", type=positive_int, default=1000, help="gradient-descent steps per run")
    parser.add_argument("--every-n-steps", type=positive_int, default=10, help="measure λ_max this often")
    parser.add_argument(
        "--sgd-batch-size",
        type=int,
        default=8,
        help="mini-batch size of the stochastic (SGD) run; 0 skips it",
    )
    parser.add_argument(
        "--sgd-learning-rate", type=positive_float, default=0.65, help="step size of the SGD run"
    )
    parser.add_argument("--sgd-steps", type=positive_int, default=6000, help="steps of the SGD run")
    parser.add_argument(
        "--sgd-every-n-steps",
        type=positive_int,
        default=100,
        help="measure λ_max and the batch sharpness of the SGD run this often",
    )
    parser.add_argument(
        "--adam-learning-rate",
        type=positive_float,
        default=0.002,
        help="step size of the full-batch Adam run",
    )
    parser.add_argument(
        "--adam-steps", type=int, default=1000, help="steps of the full-batch Adam run; 0 skips it"
    )
    parser.add_argument("--hidden", type=positive_int, default=64, help="width of the hidden layers")
    parser.add_argument("--num-examples", type=positive_int, default=1000, help="size of the training set")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    parser.add_argument("--log-dir", default="runs/edge_of_stability")
    parser.add_argument("--plot", default="edge_of_stability.png", help="where to save the figure (PNG)")
    args = parser.parse_args(argv)
    if not 0 <= args.sgd_batch_size <= args.num_examples:
        parser.error(f"--sgd-batch-size must be between 0 and --num-examples, got {args.sgd_batch_size}")
    if args.adam_steps < 0:
        parser.error(f"--adam-steps must be 0 (skip) or positive, got {args.adam_steps}")

    common = {
        "log_dir": args.log_dir,
        "hidden": args.hidden,
        "num_examples": args.num_examples,
        "seed": args.seed,
    }
    runs, stochastic, adaptive = {}, None, None
    with torch_threads(args.threads):
        for lr in args.learning_rates:
            run_dir = train(lr, steps=args.steps, every_n_steps=args.every_n_steps, **common)
            runs[lr] = read_scalars(run_dir, [LAMBDA_MAX, TRAIN_LOSS])
            (_, first), (last_step, last) = runs[lr][LAMBDA_MAX][0], runs[lr][LAMBDA_MAX][-1]
            print(
                f"η = {lr:g}: λ_max {first:.3g} at step 0 → {last:.3g} at step {last_step} (2/η = {2 / lr:.3g})"
            )
        if args.sgd_batch_size:
            lr, batch_size = args.sgd_learning_rate, args.sgd_batch_size
            run_dir = train(
                lr,
                steps=args.sgd_steps,
                every_n_steps=args.sgd_every_n_steps,
                batch_size=batch_size,
                **common,
            )
            series = read_scalars(run_dir, [LAMBDA_MAX, BATCH_SHARPNESS, TRAIN_LOSS])
            stochastic = (lr, batch_size, series)
            limit = 2 / lr
            sharpness = last_quarter_mean(series[LAMBDA_MAX])
            batch_sharpness = last_quarter_mean(series[BATCH_SHARPNESS])
            print(
                f"SGD, batch size {batch_size}, η = {lr:g} (2/η = {limit:.3g}), mean over the last quarter: "
                f"batch sharpness {batch_sharpness:.3g} = {batch_sharpness / limit:.2f}·2/η, "
                f"λ_max {sharpness:.3g} = {sharpness / limit:.2f}·2/η"
            )
        if args.adam_steps:
            lr = args.adam_learning_rate
            run_dir = train(
                lr, steps=args.adam_steps, every_n_steps=args.every_n_steps, optimizer="adam", **common
            )
            series = read_scalars(run_dir, [LAMBDA_MAX, PRECONDITIONED, EOS_RATIO, TRAIN_LOSS])
            adaptive = (lr, series)
            ratios = [value for _, value in series[EOS_RATIO]]
            reached = next((step for step, value in series[EOS_RATIO] if value >= 0.9), None)
            tail = ratios[-max(1, len(ratios) // 4) :]
            (_, first), (last_step, last) = series[LAMBDA_MAX][0], series[LAMBDA_MAX][-1]
            print(
                f"Adam, η = {lr:g} (38/η = {adam_limit(lr):.3g}): eos_ratio = λ_1(D⁻¹H)/(38/η) from "
                f"{ratios[0]:.2f}, reached 0.9 at step {reached}, {min(tail):.2f}-{max(tail):.2f} over the last "
                f"quarter; λ_max(∇²L) {first:.3g} → {last:.3g} at step {last_step}"
            )
    print(f"plot: {plot(runs, args.plot, stochastic, adaptive)}; logs: tensorboard --logdir {args.log_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
