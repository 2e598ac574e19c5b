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

Usage::

    python examples/edge_of_stability.py                  # η = 0.25, 0.35, 0.5; about a minute on 2 CPU cores
    python examples/edge_of_stability.py --learning-rates 0.5 --steps 300 --plot eos.png
    tensorboard --logdir runs/edge_of_stability            # spectral/hessian/lambda_1, eos_ratio, train_loss

Requires scikit-learn (``pip install scikit-learn``; it is in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from lightning_spectral.callbacks import HessianEigenMonitor

#: The default step sizes: their stability limits 2/η = 8, 5.7 and 4 all lie above the initial sharpness (≈ 2.3).
DEFAULT_LEARNING_RATES = (0.25, 0.35, 0.5)
LAMBDA_MAX = "spectral/hessian/lambda_1"
TRAIN_LOSS = "train_loss"


def digits_data(num_examples: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``num_examples`` of scikit-learn's 8×8 digits: standardized pixels ``(n, 64)`` and one-hot
    targets ``(n, 10)``, both float32. Pixels that are constant over the subset are centred and left at 0."""
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
    """``64 → hidden → hidden → 10`` tanh MLP on the squared error to one-hot targets, full-batch plain SGD.

    Args:
        lr: the step size η of gradient descent.
        hidden: width of the two hidden layers.
        num_examples: size of the training set, which is also the batch size (one batch per epoch).
    """

    def __init__(self, lr: float, hidden: int = 64, num_examples: int = 1000) -> None:
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
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self) -> DataLoader:
        # One batch per epoch: every index at once. ``batch_size=None`` with a batch sampler indexes the
        # dataset with the whole index list in one go instead of collating n single examples each step.
        dataset = TensorDataset(*self.data)
        whole_set = BatchSampler(SequentialSampler(dataset), batch_size=len(dataset), drop_last=False)
        return DataLoader(dataset, sampler=whole_set, batch_size=None)


def train(
    lr: float,
    *,
    steps: int,
    log_dir: str | Path,
    hidden: int = 64,
    num_examples: int = 1000,
    every_n_steps: int = 10,
    seed: int = 0,
) -> Path:
    """Full-batch gradient descent for ``steps`` steps at step size ``lr``, measuring the full-batch λ_max
    every ``every_n_steps`` steps (and at step 0). Returns the TensorBoard directory of this run,
    ``<log_dir>/lr=<lr>/version_<i>``."""
    pl.seed_everything(seed, verbose=False)
    model = DigitsMLP(lr, hidden=hidden, num_examples=num_examples)
    monitor = HessianEigenMonitor(
        k=1,
        every_n_steps=every_n_steps,
        batch=model.data,  # the whole training set: λ_max is the full-batch sharpness
        compute_batch_sharpness=False,
    )
    logger = TensorBoardLogger(str(log_dir), name=f"lr={lr:g}", default_hp_metric=False)
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=-1,
        callbacks=[monitor],
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(model)
    return Path(logger.log_dir)


def read_scalars(run_dir: str | Path, tags: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` sorted by step, read back from the TensorBoard event files of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {tag: [] for tag in tags}
    event_files = sorted(Path(run_dir).glob("events.out.tfevents.*"))
    if not event_files:
        raise FileNotFoundError(f"no TensorBoard event file in {run_dir}")
    for event_file in event_files:
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in set(tags) & set(accumulator.Tags()["scalars"]):
            series[tag].extend((event.step, event.value) for event in accumulator.Scalars(tag))
    return {tag: sorted(values) for tag, values in series.items()}


def plot(runs: dict[float, dict[str, list[tuple[int, float]]]], path: str | Path) -> Path:
    """Training loss (top) and λ_max with its limit 2/η dashed (bottom) against the step, one colour per η."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, sharpness_axes) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    for index, (lr, series) in enumerate(sorted(runs.items())):
        colour = f"C{index}"
        if series[TRAIN_LOSS]:
            steps, values = zip(*series[TRAIN_LOSS])
            loss_axes.plot(steps, values, color=colour, linewidth=1, label=f"η = {lr:g}")
        steps, values = zip(*series[LAMBDA_MAX])
        sharpness_axes.plot(steps, values, color=colour, linewidth=1.5, label=f"λ_max, η = {lr:g}")
        sharpness_axes.axhline(2 / lr, color=colour, linestyle="--", linewidth=1, label=f"2/η = {2 / lr:.3g}")
    loss_axes.set_yscale("log")
    loss_axes.set_ylabel("training loss")
    loss_axes.legend(loc="upper right", fontsize="small")
    sharpness_axes.set_xlabel("step (full-batch gradient descent)")
    sharpness_axes.set_ylabel("sharpness λ_max(∇²L)")
    sharpness_axes.set_ylim(bottom=0)
    sharpness_axes.legend(loc="lower right", fontsize="small", ncol=2)
    loss_axes.set_title("Full-batch gradient descent: λ_max rises to 2/η and hovers there", fontsize="medium")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--learning-rates", type=positive_float, nargs="+", default=list(DEFAULT_LEARNING_RATES)
    )
    parser.add_argument("--steps", type=positive_int, default=1000, help="gradient-descent steps per run")
    parser.add_argument("--every-n-steps", type=positive_int, default=10, help="measure λ_max this often")
    parser.add_argument("--hidden", type=positive_int, default=64, help="width of the hidden layers")
    parser.add_argument("--num-examples", type=positive_int, default=1000, help="training set = one batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads during the runs (a model this small gains nothing from more, and several "
        "threads on busy cores slow it down many times over); 0 keeps torch's setting",
    )
    parser.add_argument("--log-dir", default="runs/edge_of_stability")
    parser.add_argument("--plot", default="edge_of_stability.png", help="where to save the figure (PNG)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be 0 (torch's setting) or a positive integer, got {args.threads}")

    runs = {}
    previous_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        for lr in args.learning_rates:
            run_dir = train(
                lr,
                steps=args.steps,
                log_dir=args.log_dir,
                hidden=args.hidden,
                num_examples=args.num_examples,
                every_n_steps=args.every_n_steps,
                seed=args.seed,
            )
            runs[lr] = read_scalars(run_dir, [LAMBDA_MAX, TRAIN_LOSS])
            (_, first), (last_step, last) = runs[lr][LAMBDA_MAX][0], runs[lr][LAMBDA_MAX][-1]
            print(
                f"η = {lr:g}: λ_max {first:.3g} at step 0 → {last:.3g} at step {last_step} (2/η = {2 / lr:.3g})"
            )
    finally:
        torch.set_num_threads(previous_threads)
    print(f"plot: {plot(runs, args.plot)}; logs: tensorboard --logdir {args.log_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
