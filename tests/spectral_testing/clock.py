"""A clock the test moves by hand: timing logic tested without wall-time flakiness."""

from __future__ import annotations


class HandClock:
    """``clock()`` returns ``clock.now``, which the test (or a fake measurement) advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
