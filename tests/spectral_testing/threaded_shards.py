"""Processes simulated by threads for the routines that take ``shard_sum``: each thread holds one shard of every
vector and the all-reduce sum is a barrier (the same summation order on every thread, so every thread gets the
same bits, as from a real all-reduce)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch


class ThreadAllReduce:
    """``shard_sum(rank)``: the all-reduce sum of the ``size`` threads, for the thread of rank ``rank``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.barrier = threading.Barrier(size, timeout=60)
        self.slots: list[torch.Tensor | None] = [None] * size
        self.calls = 0

    def shard_sum(self, rank: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def reduce(tensor: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = tensor.detach().clone()
            self.barrier.wait()
            total = self.slots[0].clone()
            for other in self.slots[1:]:
                total += other
            if rank == 0:
                self.calls += 1
            self.barrier.wait()
            return total

        return reduce


def run_threads(size: int, body: Callable[[int, Callable[[torch.Tensor], torch.Tensor]], Any]) -> list[Any]:
    """``[body(rank, shard_sum) for rank in range(size)]``, run concurrently; re-raises a thread's error."""
    reduce = ThreadAllReduce(size)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def target(rank: int) -> None:
        try:
            results[rank] = body(rank, reduce.shard_sum(rank))
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            errors.append(error)
            reduce.barrier.abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
