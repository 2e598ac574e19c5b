"""The ``lightning-spectral`` command line: ``lightning-spectral demo`` and ``lightning-spectral report``."""

from __future__ import annotations

import argparse
import sys
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
    """The ``lightning-spectral`` argument parser: the ``demo`` and ``report`` commands."""
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
    demo.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default: 0.05)")
    demo.add_argument("--name", default="demo", help="run name: logs go to LOG_DIR/NAME (default: demo)")
    report = commands.add_parser(
        "report",
        help="compare runs offline: an HTML page of spectral figures from TensorBoard event files",
        description="Read the spectral/ metrics of one or more runs from their TensorBoard event files and "
        "write OUT/index.html with one PNG per figure, the runs overlaid; where a run folder holds saved "
        "checkpoints, also the agreement of every weight matrix's singular vectors with the final checkpoint.",
    )
    report.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="a run's folder, with event files anywhere below it (e.g. lightning_logs/version_0)",
    )
    report.add_argument(
        "-o", "--out", required=True, metavar="OUT", help="output folder (created if missing)"
    )
    report.add_argument(
        "--steps",
        type=_steps,
        default=None,
        metavar="S1,S2,...",
        help="steps at which to show Hessian densities and singular-value histograms (the nearest logged "
        "ones; default: the last)",
    )
    report.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="skip the singular-vector agreement with the final checkpoint (read from the *.ckpt files below "
        "each run folder)",
    )
    report.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _steps(text: str) -> list[int]:
    """``"0,100,300"`` → ``[0, 100, 300]``."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not steps or min(steps) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {text!r}")
    return steps


def _report(args: argparse.Namespace) -> int:
    from lightning_spectral.report import ReportError, build_report

    try:
        page = build_report(
            args.run_dirs,
            args.out,
            steps=args.steps,
            progress=not args.quiet,
            checkpoints=not args.no_checkpoints,
        )
    except ReportError as error:
        print(f"lightning-spectral report: error: {error}", file=sys.stderr)
        return 2
    print(f"Report written to {page}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``lightning-spectral`` command line.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0: success).
    """
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return _report(args)
    if args.command == "demo":
        from lightning_spectral.demo import run_demo

        if args.max_steps < 1:
            raise SystemExit("lightning-spectral demo: --max-steps must be a positive integer")
        if not args.lr > 0:
            raise SystemExit("lightning-spectral demo: --lr must be a positive number")
        log_dir, last = run_demo(
            log_dir=args.log_dir, max_steps=args.max_steps, seed=args.seed, lr=args.lr, name=args.name
        )
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
