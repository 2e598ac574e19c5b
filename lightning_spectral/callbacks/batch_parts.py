"""Take the inputs and the targets out of a training batch, as the NTK monitor needs them.

The default follows the most common batch layouts: a tensor (inputs only), a tuple/list ``(inputs, targets,
...)``, or a mapping with one of the keys ``"input"``, ``"inputs"``, ``"x"`` (and ``"target"``, ``"targets"``,
``"label"``, ``"labels"``, ``"y"``). Anything else needs the monitor's ``input_fn`` / ``target_fn``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

BatchFn = Callable[[Any], torch.Tensor]

_INPUT_KEYS = ("input", "inputs", "x")
_TARGET_KEYS = ("target", "targets", "label", "labels", "y")


def _from_mapping(batch: Mapping, keys: Sequence[str], what: str, argument: str) -> torch.Tensor:
    for key in keys:
        if key in batch:
            return batch[key]
    raise ValueError(f"Cannot find the {what} in a batch with keys {sorted(batch)}; pass `{argument}=`.")


def default_inputs(batch: Any) -> torch.Tensor:
    """The model inputs of ``batch`` (see the module docstring for the layouts understood)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        return _from_mapping(batch, _INPUT_KEYS, "inputs", "input_fn")
    if isinstance(batch, Sequence) and len(batch) >= 1 and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(f"Cannot find the inputs in a batch of type {type(batch).__name__}; pass `input_fn=`.")


def default_targets(batch: Any) -> torch.Tensor:
    """The targets of ``batch``: the second element of a tuple/list, or a target key of a mapping."""
    if isinstance(batch, Mapping):
        return _from_mapping(batch, _TARGET_KEYS, "targets", "target_fn")
    if isinstance(batch, Sequence) and len(batch) >= 2 and isinstance(batch[1], torch.Tensor):
        return batch[1]
    raise ValueError(f"Cannot find the targets in a batch of type {type(batch).__name__}; pass `target_fn=`.")


def concatenated(batches: list[Any], part: BatchFn) -> torch.Tensor:
    """``part(batch)`` of every batch, concatenated along the example dimension."""
    pieces = [part(batch) for batch in batches]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)
