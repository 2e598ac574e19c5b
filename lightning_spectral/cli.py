"""The ``lightning-spectral`` command line: ``lightning-spectral demo`` (and more subcommands over time)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

DEMO_SUMMARY_KEYS = (
    "spectral/hessian/lambda_1",
    "spectral/hessian/eos_ratio",
    "spectral/hessian/batch_sharpness_ratio",
    "spectral/ntk/trace",
    "spectral/ntk/sgd_stability",
    "spectral/weights/mean_stable_rank",
    "spectral/weights/max_sigma_max",
    "train/loss",
    "train/accuracy",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-spectral",
        description="Spectral monitors for PyTorch Lightning: weight SVDs, Hessian eigenvalues, NTK trace.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train a small model with every monitor on, logging to TensorBoard",
        description="Train a small classifier on generated data with every monitor, logging to TensorBoard.",
    )
    demo.add_argument("--log-dir", default="runs", help="TensorBoard root directory (default: ./runs)")
    demo.add_argument("--max-steps", type=int, default=300, help="optimizer steps to train (default: 300)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from lightning_spectral.demo import run_demo

        if args.max_steps < 1:
            raise SystemExit("lightning-spectral demo: --max-steps must be a positive integer")
        log_dir, last = run_demo(log_dir=args.log_dir, max_steps=args.max_steps, seed=args.seed)
        print("\nLast values:")
        for key in DEMO_SUMMARY_KEYS:
            if key in last:
                print(f"  {key:<42} {last[key]:.4g}")
        print(
            f"\nSpectral metrics written to {log_dir}\nLook at them with:  tensorboard --logdir {args.log_dir}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
