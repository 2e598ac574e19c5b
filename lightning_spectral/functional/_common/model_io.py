"""How the NTK estimators call a model the way users write it: keyword inputs, wrapped models, logits.

Example::

    >>> import torch
    >>> batch = {"input_ids": torch.tensor([[1, 2], [3, 4]]), "attention_mask": torch.ones(2, 2, dtype=torch.long)}
    >>> packed = PackedInputs.from_mapping(batch)
    >>> x = packed.pack(batch)
    >>> x.shape, packed.unpack(x)["input_ids"].dtype
    (torch.Size([2, 4]), torch.int64)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LABEL_KEYS",
    "PackedInputs",
    "forward_owner",
    "keyword_inputs",
    "measured_module",
    "model_logits",
]

LABEL_KEYS = (
    "label",
    "labels",
    "target",
    "targets",
    "y",
    "start_positions",
    "end_positions",
    "next_sentence_label",
)
"""Batch entries that are targets, never passed to the model (Hugging Face computes a loss from them)."""


def forward_owner(module: nn.Module) -> type:
    """The class in ``type(module).__mro__`` that defines the ``forward`` the module runs."""
    return next(cls for cls in type(module).__mro__ if "forward" in vars(cls))


def _has_own_forward(module: nn.Module) -> bool:
    """Whether ``forward`` is more than a placeholder: ``nn.Module``'s (which raises "missing the required
    forward function") or ``LightningModule``'s (which calls it), recognized by class name for either
    Lightning distribution.
    """
    owner = forward_owner(module)
    return owner is not nn.Module and owner.__name__ != "LightningModule"


def measured_module(module: nn.Module) -> tuple[str, nn.Module]:
    """``("", module)`` if its class defines ``forward``, else ``(name, child)`` for its only child module
    holding parameters (see the docs' implementation notes).

    Raises:
        ValueError: no ``forward`` and not exactly one child with parameters (names ``output_fn``).
    """
    if _has_own_forward(module):
        return "", module
    children = [
        (name, child) for name, child in module.named_children() if any(True for _ in child.parameters())
    ]
    if len(children) == 1:
        return children[0]
    found = ", ".join(f"{name} ({type(child).__name__})" for name, child in children) or "none"
    raise ValueError(
        f"{type(module).__name__} defines no `forward`, and the model to call cannot be told from its child "
        f"modules with parameters ({found}; exactly one is needed): pass `output_fn=lambda module, inputs: "
        "module.<model>(inputs)` to the monitor."
    )


def model_logits(output: object, batch_size: int) -> Tensor:
    """The outputs the NTK is taken of, from what a model returns (rule in the docs' implementation notes).

    Raises:
        ValueError: no such tensor; the message names ``output_fn`` and the key looked for.
    """
    if isinstance(output, Tensor):
        return output

    def usable(value: object) -> bool:
        return (
            isinstance(value, Tensor)
            and value.is_floating_point()
            and value.dim() >= 1
            and value.shape[0] == batch_size
        )

    if isinstance(output, Mapping):
        if "logits" in output and isinstance(output["logits"], Tensor):
            return output["logits"]
        for key, value in output.items():
            if key != "loss" and usable(value):
                return value
        raise ValueError(
            f"The model returned a {type(output).__name__} without a 'logits' entry and without another "
            f"floating-point tensor of batch size {batch_size} (keys {list(output)}): pass "
            "`output_fn=lambda model, inputs: ...` returning the outputs to measure."
        )
    if isinstance(output, Sequence) and not isinstance(output, str):
        for value in output:
            if usable(value):
                return value
    raise ValueError(
        f"The model returned a {type(output).__name__}, not a tensor, a mapping with 'logits' or a tuple holding "
        f"a floating-point tensor of batch size {batch_size}: pass `output_fn=lambda model, inputs: ...`."
    )


def keyword_inputs(batch: Mapping[str, Any], module: nn.Module) -> dict[str, Tensor]:
    """The entries of ``batch`` that ``module``'s ``forward`` takes as keyword arguments (every tensor entry
    when it takes ``**kwargs``), label entries (:data:`LABEL_KEYS`) and non-tensors left out.

    Raises:
        ValueError: none found; the message names the keys looked for and ``input_fn``.
    """
    parameters = inspect.signature(module.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = [
        name
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    chosen = {
        key: value
        for key, value in batch.items()
        if isinstance(key, str)
        and isinstance(value, Tensor)
        and key not in LABEL_KEYS
        and (takes_any or key in accepted)
    }
    if not chosen:
        looked_for = [name for name in accepted if name not in LABEL_KEYS][:8]
        raise ValueError(
            f"Cannot find the model inputs in a batch with keys {sorted(map(str, batch))}: looked for the keyword "
            f"arguments of {type(module).__name__}.forward ({', '.join(looked_for) or 'none'}) and the keys "
            "'input', 'inputs', 'x'; pass `input_fn=` (and `output_fn=` if the model is not called as "
            "model(**inputs))."
        )
    return chosen


@dataclass(frozen=True)
class PackedInputs:
    """The layout of a mapping of per-example tensors packed into one float64 ``(B, D)`` tensor."""

    keys: tuple[str, ...]
    shapes: tuple[torch.Size, ...]  # per example (without the batch dimension)
    dtypes: tuple[torch.dtype, ...]

    @classmethod
    def from_mapping(cls, inputs: Mapping[str, Tensor]) -> PackedInputs:
        """The layout of ``inputs``, whose tensors must share their first (batch) dimension."""
        sizes = {key: value.shape[0] if value.dim() else None for key, value in inputs.items()}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(
                f"The model inputs must share their first (batch) dimension, got {sizes}: pass `input_fn=`."
            )
        for key, value in inputs.items():
            if value.is_complex():
                raise ValueError(f"Model input {key!r} is complex; pass `input_fn=` and `output_fn=`.")
        return cls(
            keys=tuple(inputs),
            shapes=tuple(value.shape[1:] for value in inputs.values()),
            dtypes=tuple(value.dtype for value in inputs.values()),
        )

    def pack(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """One ``(B, D)`` float64 tensor holding every entry (each flattened per example)."""
        if tuple(inputs) != self.keys:
            raise ValueError(f"Model inputs with keys {list(inputs)}, expected {list(self.keys)}.")
        return torch.cat(
            [inputs[key].reshape(inputs[key].shape[0], -1).to(torch.float64) for key in self.keys], 1
        )

    def unpack(self, packed: Tensor) -> dict[str, Tensor]:
        """The entries back, with their shapes and dtypes, for the examples ``packed`` holds."""
        rows = packed.shape[0]
        out: dict[str, Tensor] = {}
        start = 0
        for key, shape, dtype in zip(self.keys, self.shapes, self.dtypes):
            size = shape.numel()
            piece = packed[:, start : start + size].reshape(rows, *shape)
            out[key] = piece.to(dtype) if dtype != torch.bool else piece != 0
            start += size
        return out
