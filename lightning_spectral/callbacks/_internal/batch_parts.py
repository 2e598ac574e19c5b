"""Take the inputs and the targets out of a training batch, as the NTK monitor needs them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_spectral.functional._common.model_io import (
    PackedInputs,
    keyword_inputs,
    measured_module,
    model_logits,
)

BatchFn = Callable[[Any], torch.Tensor]
#: A user's ``input_fn``: ``batch -> inputs``, a tensor (positional) or a mapping of tensors (keyword arguments).
InputFn = Callable[[Any], torch.Tensor | Mapping[str, torch.Tensor]]
OutputFn = Callable[[nn.Module, Any], torch.Tensor]

_INPUT_KEYS = ("input", "inputs", "x")
_TARGET_KEYS = ("target", "targets", "label", "labels", "y")


def _from_mapping(batch: Mapping[str, Any], keys: Sequence[str], what: str, argument: str) -> torch.Tensor:
    for key in keys:
        if key in batch:
            return batch[key]
    raise ValueError(f"Cannot find the {what} in a batch with keys {sorted(batch)}; pass `{argument}=`.")


def default_inputs(batch: Any) -> torch.Tensor:
    """The model inputs of ``batch`` (see the docs' implementation notes for the layouts understood)."""
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


def _raw_inputs(batch: Any, model: nn.Module) -> Any:
    """What the model is called with: a tensor (positional) or a mapping (keyword arguments)."""
    if isinstance(batch, Mapping) and not any(key in batch for key in _INPUT_KEYS):
        return keyword_inputs(batch, model)
    return default_inputs(batch)


def _masked(outputs: torch.Tensor, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sequence outputs ``(B, T, ...)`` with the padding positions (``attention_mask`` 0) zeroed."""
    mask = inputs.get("attention_mask")
    if mask is None or outputs.dim() < 3 or tuple(outputs.shape[:2]) != tuple(mask.shape):
        return outputs
    return outputs * mask.reshape(*mask.shape, *([1] * (outputs.dim() - 2))).to(outputs.dtype)


def model_call(
    pl_module: nn.Module, batch: Any, input_fn: InputFn | None, output_fn: OutputFn | None
) -> tuple[BatchFn, OutputFn]:
    """The ``(input_fn, output_fn)`` pair the NTK estimators take (``batch -> tensor``, ``(module, tensor) ->
    outputs``) for the user's ``input_fn`` / ``output_fn`` (either may be ``None``) and a sample ``batch``.

    Default inputs: as in the docs' implementation notes. Default outputs: the measured module
    (:func:`~lightning_spectral.functional._common.model_io.measured_module`: ``pl_module`` or the one model it wraps)
    called on the inputs, positionally or as keyword arguments, and reduced to its logits
    (:func:`~lightning_spectral.functional._common.model_io.model_logits`); keyword inputs with an ``attention_mask``
    have the padding positions of sequence outputs ``(B, T, ...)`` zeroed, so the NTK sums over real tokens
    only. Inputs given as a mapping (by the default or by ``input_fn``) are packed into one tensor
    (:class:`~lightning_spectral.functional._common.model_io.PackedInputs`) and handed to a user's ``output_fn`` as the
    mapping again.
    """
    name, target = ("", pl_module) if output_fn is not None else measured_module(pl_module)
    raw = input_fn(batch) if input_fn is not None else _raw_inputs(batch, target)
    if not isinstance(raw, Mapping):

        def tensor_inputs(b: Any) -> torch.Tensor:
            if input_fn is None:
                return default_inputs(b)
            inputs = input_fn(b)
            if not isinstance(inputs, torch.Tensor):
                raise TypeError(
                    f"`input_fn` returned a tensor for the first measurement batch and a {type(inputs).__name__} "
                    "for another: it must return a tensor for every batch, or a mapping of tensors for every batch."
                )
            return inputs

        if output_fn is not None:
            return tensor_inputs, lambda m, x: model_logits(output_fn(m, x), x.shape[0])
        return tensor_inputs, lambda m, x: model_logits(m.get_submodule(name)(x), x.shape[0])
    layout = PackedInputs.from_mapping(raw)

    def packed_inputs(b: Any) -> torch.Tensor:
        chosen = input_fn(b) if input_fn is not None else {key: b[key] for key in layout.keys}
        if not isinstance(chosen, Mapping):
            raise TypeError(
                f"`input_fn` returned a mapping for the first measurement batch and a {type(chosen).__name__} for "
                "another: it must return a tensor for every batch, or a mapping of tensors for every batch."
            )
        return layout.pack(chosen)

    if output_fn is not None:
        return packed_inputs, lambda m, x: model_logits(output_fn(m, layout.unpack(x)), x.shape[0])

    def outputs(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        inputs = layout.unpack(x)
        return _masked(model_logits(m.get_submodule(name)(**inputs), x.shape[0]), inputs)

    return packed_inputs, outputs
