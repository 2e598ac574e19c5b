"""Which values of the watched ``callback_metrics`` keys are new since the last look.

Example::

    >>> import torch
    >>> seen = NewMeasurements("spectral/hessian/lambda_*", owned_prefixes=("spectral/hessian/",))
    >>> metrics = {"spectral/hessian/lambda_1": torch.tensor(2.0), "train_loss": torch.tensor(0.5)}
    >>> seen.collect(metrics, step=0)
    [('spectral/hessian/lambda_1', 2.0, None)]
    >>> seen.collect(metrics, step=1)  # the same tensor: nothing new
    []
    >>> metrics["spectral/hessian/lambda_1"] = torch.tensor(2.0)  # a new measurement with an equal value
    >>> seen.collect(metrics, step=2)
    [('spectral/hessian/lambda_1', 2.0, 2.0)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

import torch

__all__ = ["NewMeasurements", "as_float", "same_value"]


def as_float(key: str, value: Any) -> float:
    """``trainer.callback_metrics[key]`` as a float (a one-element tensor or a number), else ``ValueError``."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"SpectralEarlyStopping needs a scalar in trainer.callback_metrics[{key!r}], got a tensor of "
                f"shape {tuple(value.shape)}."
            )
        return float(value.detach().reshape(()))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(
        f"SpectralEarlyStopping needs a number in trainer.callback_metrics[{key!r}], got {type(value).__name__}."
    )


def same_value(a: float, b: float) -> bool:
    """Equal, counting NaN as equal to NaN (an unchanged NaN is not a new measurement)."""
    return a == b or (math.isnan(a) and math.isnan(b))


class NewMeasurements:
    """The new values of the keys matching ``pattern`` (a key or an ``fnmatch`` pattern) at each look.

    Attributes:
        pattern: the watched key or pattern.
        owned_prefixes: metric prefixes of the trainer's monitors (new = a new object, see the docs' implementation notes).
        last: ``key -> (global_step, value)`` of the last new value of each key (checkpointed).
        matched_any: whether any key of ``callback_metrics`` has matched ``pattern`` so far.
    """

    def __init__(self, pattern: str, owned_prefixes: tuple[str, ...] = ()) -> None:
        self.pattern = pattern
        self.owned_prefixes = owned_prefixes
        self.last: dict[str, tuple[int, float]] = {}
        self.matched_any = False
        self._objects: dict[str, Any] = {}  # key -> the object looked at last (identity; not saved)

    def collect(self, metrics: Mapping[str, Any], step: int) -> list[tuple[str, float, float | None]]:
        """``(key, value, previous value or None)`` of every watched key with a new value, in key order."""
        new = []
        for key in sorted(metrics):
            if not (key == self.pattern or fnmatchcase(key, self.pattern)):
                continue
            self.matched_any = True
            obj = metrics[key]
            if self._objects.get(key) is obj:
                continue
            value = as_float(key, obj)
            last = self.last.get(key)
            if last is not None:
                if key.startswith(self.owned_prefixes):
                    # After a resume there is no object to compare with: only the measurement looked at
                    # last (same step, same value) is not new.
                    if key not in self._objects and last[0] == step and same_value(value, last[1]):
                        self._objects[key] = obj
                        continue
                elif same_value(value, last[1]):
                    self._objects[key] = obj
                    continue
            new.append((key, value, None if last is None else last[1]))
            self.last[key] = (step, value)
            self._objects[key] = obj
        return new

    def state_dict(self) -> dict[str, list[Any]]:
        """``{key: [step, value]}`` of the last new values."""
        return {key: [step, value] for key, (step, value) in self.last.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last = {key: (int(step), float(value)) for key, (step, value) in state.items()}
        self._objects = {}
        self.matched_any = self.matched_any or bool(self.last)  # it matched before the checkpoint
