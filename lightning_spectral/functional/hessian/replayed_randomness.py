"""The global random state replayed for every evaluation of a batch, so that an operator built from a random loss
(dropout in train mode) is one fixed function of the parameters and consumes no randomness.

Example::

    >>> import torch
    >>> replay = ReplayedRandomness(torch.device("cpu"), num_batches=1)
    >>> with replay.replay(0):
    ...     a = torch.rand(2)
    >>> with replay.replay(0):
    ...     b = torch.rand(2)
    >>> bool(torch.equal(a, b))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from lightning_spectral._internal.rng import RNGState, capture_rng_state

__all__ = ["NoReplay", "ReplayedRandomness"]


class ReplayedRandomness:
    """Every evaluation of batch ``i`` sees the same global RNG state; the caller's RNG state is restored.

    Batch 0 replays the state at construction; batch ``i + 1`` the state that the first evaluation of batch
    ``i`` ended in (the numbers consecutive training steps would draw). Evaluations go through the batches
    in order, so that state is known when it is needed.
    """

    def __init__(self, device: torch.device, num_batches: int) -> None:
        self._device = device
        self._states: list[RNGState | None] = [capture_rng_state(device)] + [None] * (num_batches - 1)

    def prime(self, index: int, evaluate: Callable[[int], object]) -> None:
        """Make batch ``index``'s state known: the batches before it not evaluated yet are, in order, by
        ``evaluate(i)`` under their replayed state (a product through batch ``index`` alone can come first).
        """
        for earlier in range(index):
            if self._states[earlier + 1] is None:
                with self.replay(earlier):
                    evaluate(earlier)

    @contextmanager
    def replay(self, index: int) -> Iterator[None]:
        """Run the body under batch ``index``'s random state; the caller's state is restored afterwards."""
        state = self._states[index]
        if state is None:  # callers evaluate the batches before it first (see prime)
            raise RuntimeError(f"batch {index} evaluated before batch {index - 1}.")
        saved = capture_rng_state(self._device)
        state.restore()
        try:
            yield
            if index + 1 < len(self._states) and self._states[index + 1] is None:
                self._states[index + 1] = capture_rng_state(self._device)
        finally:
            saved.restore()


class NoReplay:
    """Replays nothing: the stand-in inside a CUDA-graph capture, which refuses losses that draw random numbers
    (:mod:`~lightning_spectral.functional.hessian.hvp_graph`).
    """

    def prime(self, index: int, evaluate: Callable[[int], object]) -> None:
        """Nothing to prime."""
        return None

    @contextmanager
    def replay(self, index: int) -> Iterator[None]:
        """Run the body as it is."""
        yield
