"""Shared pieces of the benchmarks: repeatable timing, the machine and versions, RESULTS.md sections."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import logging
import platform
import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
#: Where a ``--device cuda`` run writes unless ``--results`` names a file: the CPU tables stay in RESULTS.md.
CUDA_RESULTS = RESULTS.with_name("RESULTS_CUDA.md")
#: The values of every benchmark's ``--device``.
DEVICES = ("cpu", "cuda")


def available_device(text: str) -> str:
    """The type of ``--device``: ``"cuda"`` is refused (an argparse error naming the option) where
    ``torch.cuda.is_available()`` is false; any other value is left to ``choices``."""
    if text == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"'cuda' needs a CUDA GPU, but torch.cuda.is_available() is False (torch {torch.__version__}); "
            f"choose from {', '.join(DEVICES)}"
        )
    return text


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device {cpu,cuda}`` (default ``cpu``), the same in the runner and in every module."""
    parser.add_argument(
        "--device",
        type=available_device,
        choices=DEVICES,
        default="cpu",
        help="where models, batches and the timed work live (default cpu; cuda: the current CUDA GPU, every "
        "timed region ends with torch.cuda.synchronize())",
    )


def use_device_results(device: str) -> None:
    """Send a CUDA run's sections to :data:`CUDA_RESULTS` while :data:`RESULTS` is still the default file, so a
    GPU run never overwrites the CPU tables (an explicit ``--results`` is left alone)."""
    global RESULTS
    if device == "cuda" and RESULTS == Path(__file__).with_name("RESULTS.md"):
        RESULTS = CUDA_RESULTS


def device_option(device: str) -> str:
    """``" --device cuda"`` for a command line; ``""`` for the default ``cpu``."""
    return "" if device == "cpu" else f" --device {device}"


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the kernels queued on a CUDA ``device`` (CUDA runs asynchronously: read the clock after this);
    nothing for the CPU or ``None``."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seeded(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (the library's random draws need one on the tensors'
    device; a CUDA generator's stream differs from the CPU one's)."""
    return torch.Generator(device=device).manual_seed(seed)


def median_time(
    fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, device: torch.device | str | None = None
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs; with a CUDA
    ``device`` every run starts and ends with :func:`synchronize` (the clock counts its kernels, not their
    launches)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_description() -> str:
    """One line naming the machine, the torch build and its thread count."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (
        f"{platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, {device}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    ).replace("  ", " ")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; floats get 4 significant digits."""

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, *, first: bool = False) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in RESULTS.md.

    A section not there yet is appended, or with ``first=True`` put before every other section.
    """
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    elif first and (other := re.search(r"<!-- [\w-]+:start -->", text)):
        text = text[: other.start()] + block + "\n\n" + text[other.start() :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def read_section(name: str) -> str | None:
    """The text of section ``name`` of RESULTS.md (without its markers), ``None`` if it is not there."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    found = re.search(
        re.escape(f"<!-- {name}:start -->") + r"\n?(.*?)\n?" + re.escape(f"<!-- {name}:end -->"), text, re.S
    )
    return found.group(1) if found else None


@dataclass(frozen=True)
class Target:
    """One target of a benchmark module, as its ``run`` returns it to the runner (``python -m benchmarks``).

    ``name`` says what is measured, ``goal`` the threshold (``"≤ 5 %"``), ``measured`` the value found,
    formatted (``"+3.1 %"``), and ``met`` the verdict: ``True`` / ``False``, or ``None`` when nothing was
    judged (a comparison skipped because its reference tool is missing; ``note`` then says why, with the
    install command).
    """

    name: str
    goal: str
    measured: str
    met: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.met is None:
            return self.note or "not judged"
        word = "met" if self.met else "**missed**"
        return f"{word} ({self.note})" if self.note else word

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


#: ``pip`` names of the optional reference tools (the ``bench`` extra of ``pyproject.toml``).
REFERENCE_TOOLS = ("weightwatcher", "pyhessian", "hessian-eigenthings", "curvlinops-for-pytorch", "scipy")
#: How to install them next to the CPU build of torch (curvlinops pulls a torchvision that breaks beside it).
INSTALL_RECIPE = (
    '`pip install torch==2.13.0`, then `pip install -c constraints.txt -e ".[bench]"` with `torch==2.13.0` in '
    "`constraints.txt`, then `pip uninstall -y torchvision`"
)


def skipped(name: str, distribution: str) -> Target:
    """The :class:`Target` row of a comparison skipped because ``distribution`` is not installed."""
    return Target(
        name,
        "reference tool installed",
        "not installed",
        None,
        f"skipped: `pip install {distribution.lower()}`",
    )


def package_versions(names: Iterable[str]) -> str:
    """``"name version, ..."`` for the installed distributions, ``"name not installed"`` for the others."""
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def blas_limits(threads: int) -> tuple[contextlib.AbstractContextManager, str]:
    """A context limiting the BLAS threads of the libraries loaded so far (NumPy/SciPy, via threadpoolctl when
    installed), and a sentence saying so."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return (
            contextlib.nullcontext(),
            "threadpoolctl not installed: NumPy/SciPy BLAS threads were not limited.",
        )
    note = f"NumPy/SciPy BLAS limited to {threads} thread(s) as well (threadpoolctl)."
    return threadpool_limits(limits=threads), note


def log(message: str) -> None:
    """Progress to stdout, flushed (benchmark runs are long)."""
    print(message, flush=True)


@contextlib.contextmanager
def limited_threads(threads: int) -> Iterator[str]:
    """Set torch's threads (restored afterwards) and limit the BLAS threads of the libraries loaded so far;
    yields a sentence saying how the BLAS threads were limited."""
    limits, note = blas_limits(threads)
    previous = torch.get_num_threads()
    with limits:
        torch.set_num_threads(threads)
        try:
            yield note
        finally:
            torch.set_num_threads(previous)


#: Lightning's loggers (both distributions), silenced by :func:`quiet_lightning`.
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info messages and every warning (num_workers, ...) silenced; restored afterwards."""
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def timed_fit(callbacks: list[Any], model: Any, loader: Any, device: str, **length: Any) -> tuple[float, Any]:
    """Wall time of ``trainer.fit(model, loader)`` on a bare ``Trainer`` (no logger, checkpointing, progress bar
    or model summary) with ``callbacks`` on ``device`` (``"cpu"`` or ``"cuda"``); ``length`` gives
    ``max_epochs`` / ``max_steps``. Only the fit is timed, synchronized at both ends on CUDA. Returns the
    seconds and the trainer."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        callbacks=callbacks,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **length,
    )
    synchronize(device)
    start = time.perf_counter()
    trainer.fit(model, loader)
    synchronize(device)
    return time.perf_counter() - start, trainer
