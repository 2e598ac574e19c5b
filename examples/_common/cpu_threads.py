"""``--threads`` for the command-line scripts and examples: torch's CPU thread count for a block, restored after.

Small models gain nothing from more threads, and several threads on busy cores can slow them down many times
over, so the examples default to one thread.

Example::

    >>> import argparse, torch
    >>> parser = argparse.ArgumentParser()
    >>> add_threads_argument(parser)
    >>> args = parser.parse_args(["--threads", "1"])
    >>> before = torch.get_num_threads()
    >>> with torch_threads(args.threads):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from _common.argument_types import non_negative_int

__all__ = ["add_threads_argument", "torch_threads"]


def add_threads_argument(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """Add ``--threads N`` (``0`` keeps torch's setting) to ``parser``."""
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=default,
        help="torch CPU threads (a model this small gains nothing from more); 0 keeps torch's setting",
    )


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)`` (``0``: unchanged); the previous count is restored."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
