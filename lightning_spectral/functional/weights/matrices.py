"""Which parameters of a model are weight matrices, and how each one becomes a 2-D matrix."""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, cast, get_args

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy
from torch.nn.utils import parametrize

from lightning_spectral._internal.validation import check_choice
from lightning_spectral.functional._common.parameter_selection import name_matches, uncompiled_name

__all__ = ["CONV_MODES", "ConvMode", "WeightMatrix", "weight_matrices"]

#: Allowed values of ``conv_mode``.
ConvMode = Literal["flatten", "per_position"]
CONV_MODES: tuple[ConvMode, ...] = get_args(ConvMode)

_CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE_TYPES: tuple[type[nn.Module], ...] = (
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
# Reported ``module_type``: the first of these classes in the module's MRO (so subclasses group together).
_SUPPORTED_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    *_CONV_TYPES,
    *_CONV_TRANSPOSE_TYPES,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.MultiheadAttention,
    nn.LSTM,
    nn.GRU,
    nn.RNN,
    nn.LSTMCell,
    nn.GRUCell,
    nn.RNNCell,
)
_GATES: dict[type[nn.Module], tuple[str, ...]] = {
    nn.LSTM: ("i", "f", "g", "o"),
    nn.LSTMCell: ("i", "f", "g", "o"),
    nn.GRU: ("r", "z", "n"),
    nn.GRUCell: ("r", "z", "n"),
}
_GATE_MEANING = {
    "i": "input gate",
    "f": "forget gate",
    "g": "cell candidate",
    "o": "output gate",
    "r": "reset gate",
    "z": "update gate",
    "n": "new gate",
}


@dataclass(frozen=True, eq=False)  # holds tensors: compared (and hashed) by identity
class WeightMatrix:
    """One weight matrix of a model.

    Attributes:
        name: reported name: the parameter name, plus ``.q/.k/.v`` or a gate suffix for split fused matrices,
            or ``[i,j]`` for a kernel position.
        matrix: the 2-D matrix, a detached view of the parameter (a computed tensor for parametrized weights).
        module_type: the ``torch.nn`` layer class it belongs to, e.g. ``"Linear"``, ``"Conv2d"``, ``"LSTM"``.
        shape_note: how the parameter was turned into this matrix, in words.
        parameter_name: dotted name of the parameter (of the module attribute for parametrized weights).

    Example:
        >>> from torch import nn
        >>> (w,) = weight_matrices(nn.Linear(3, 2))
        >>> w.name, tuple(w.matrix.shape), w.module_type
        ('weight', (2, 3), 'Linear')
    """

    name: str
    matrix: Tensor
    module_type: str
    shape_note: str
    parameter_name: str


@dataclass(frozen=True)
class _Candidate:
    """A weight matrix before selection; ``key`` identifies the underlying parameter(s) for de-duplication."""

    matrix: WeightMatrix
    key: tuple[int, ...]
    trainable: bool


def _module_type(module: nn.Module) -> type[nn.Module] | None:
    for cls in type(module).__mro__:
        if cls in _SUPPORTED_TYPES:
            return cls
    return None


def _is_transposed_linear(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (``transformers.pytorch_utils``): ``y = x @ weight + bias``, ``weight (in, nf)``."""
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(getattr(module, "nf", None), int)
        and isinstance(weight, Tensor)
        and weight.ndim == 2
        and weight.shape[1] == module.nf
    )


def _weight_attributes(module: nn.Module, kind: type[nn.Module]) -> list[str]:
    """Names of the module attributes holding weight matrices, in registration order."""
    if kind is nn.MultiheadAttention:
        if module.in_proj_weight is not None:
            return ["in_proj_weight"]
        return ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    if kind in (nn.LSTM, nn.GRU, nn.RNN) and isinstance(module, nn.RNNBase):
        suffixes = ["", "_reverse"] if module.bidirectional else [""]
        names = []
        for layer, suffix in itertools.product(range(module.num_layers), suffixes):
            names += [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
            if getattr(module, "proj_size", 0) > 0:
                names.append(f"weight_hr_l{layer}{suffix}")
        return names
    if kind in (nn.LSTMCell, nn.GRUCell, nn.RNNCell):
        return ["weight_ih", "weight_hh"]
    return ["weight"]


@contextlib.contextmanager
def _parametrizations_in_eval_mode(module: nn.Module) -> Iterator[None]:
    """Evaluate parametrizations without their training-mode side effects; restores every mode flag."""
    holder = cast(nn.ModuleDict, module.parametrizations)  # torch types a submodule as `Tensor | Module`
    modes = [(m, m.training) for m in holder.modules()]
    holder.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _resolve(module: nn.Module, attr: str) -> tuple[Tensor, tuple[int, ...], bool] | None:
    """The tensor of ``module.attr``, its de-duplication key and whether it is trainable (None: skip).

    For a parametrized attribute the key is made of the ids of the parametrization's original parameters.
    """
    if parametrize.is_parametrized(module, attr):
        parametrizations = cast(nn.ModuleDict, module.parametrizations)  # torch: `Tensor | Module`
        originals = list(parametrizations[attr].parameters())
        with torch.no_grad(), _parametrizations_in_eval_mode(module):
            tensor = getattr(module, attr)
        return tensor.detach(), tuple(id(p) for p in originals), any(p.requires_grad for p in originals)
    tensor = getattr(module, attr, None)
    if not isinstance(tensor, Tensor) or is_lazy(tensor) or tensor.ndim < 2:
        return None
    return tensor.detach(), (id(tensor),), tensor.requires_grad


def _position_suffix(index: tuple[int, ...]) -> str:
    return "[" + ",".join(str(i) for i in index) + "]"


def _conv_matrices(
    name: str, kernel: Tensor, kind: type[nn.Module], conv_mode: ConvMode
) -> Iterator[tuple[str, Tensor, str]]:
    rows, cols = ("in", "out/groups") if kind in _CONV_TRANSPOSE_TYPES else ("out", "in/groups")
    note_tail = " (rows: input channels, the transpose of input -> output)" if rows == "in" else ""
    spatial = tuple(kernel.shape[2:])
    if conv_mode == "flatten":
        taps = "·".join(f"k{d + 1}" for d in range(len(spatial)))
        note = f"kernel {tuple(kernel.shape)} flattened to ({rows}, {cols}·{taps}){note_tail}"
        yield name, kernel.reshape(kernel.shape[0], -1), note
        return
    for index in itertools.product(*(range(s) for s in spatial)):
        note = (
            f"kernel {tuple(kernel.shape)} at position {_position_suffix(index)}: ({rows}, {cols}){note_tail}"
        )
        position: tuple[slice | int, ...] = (slice(None), slice(None), *index)
        yield name + _position_suffix(index), kernel[position], note


def _split_rows(
    name: str, weight: Tensor, labels: tuple[str, ...], meanings: list[str], whole: str
) -> Iterator[tuple[str, Tensor, str]]:
    size = weight.shape[0] // len(labels)
    for block, (label, meaning) in enumerate(zip(labels, meanings)):
        rows = f"rows {block * size}:{(block + 1) * size}"
        note = f"{rows} of {whole} {tuple(weight.shape)} ({meaning}): {(size, weight.shape[1])}"
        yield f"{name}.{label}", weight[block * size : (block + 1) * size], note


def _module_matrices(
    kind: type[nn.Module], attr: str, name: str, weight: Tensor, conv_mode: ConvMode, split: bool
) -> Iterator[tuple[str, Tensor, str]]:
    """(reported name, matrix, shape note) for one weight attribute of a supported module."""
    if kind in _CONV_TYPES or kind in _CONV_TRANSPOSE_TYPES:
        yield from _conv_matrices(name, weight, kind, conv_mode)
    elif kind is nn.MultiheadAttention and attr == "in_proj_weight" and split:
        meanings = ["query projection", "key projection", "value projection"]
        yield from _split_rows(name, weight, ("q", "k", "v"), meanings, "in_proj_weight")
    elif kind in _GATES and split and not attr.startswith("weight_hr"):
        labels = _GATES[kind]
        yield from _split_rows(name, weight, labels, [_GATE_MEANING[g] for g in labels], attr)
    else:
        yield name, weight, f"{attr} {tuple(weight.shape)} as is"


def _candidates(model: nn.Module, conv_mode: ConvMode, split: bool) -> Iterator[_Candidate]:
    for module_name, module in model.named_modules():
        kind = _module_type(module)
        transposed = kind is None and _is_transposed_linear(module)
        if kind is None and not transposed:
            continue
        for attr in ["weight"] if kind is None else _weight_attributes(module, kind):
            resolved = _resolve(module, attr)
            if resolved is None:
                continue
            weight, key, trainable = resolved
            parameter_name = uncompiled_name(f"{module_name}.{attr}" if module_name else attr)
            computed = parametrize.is_parametrized(module, attr)
            if kind is None:  # transposed
                type_name = type(module).__name__
                note = f"{attr} {tuple(weight.shape)} (in, out) transposed to (out, in)"
                matrices: Iterable[tuple[str, Tensor, str]] = [(parameter_name, weight.mT, note)]
            else:
                type_name = kind.__name__
                matrices = _module_matrices(kind, attr, parameter_name, weight, conv_mode, split)
            for name, matrix, note in matrices:
                if computed:
                    note += " [computed by its parametrization]"
                yield _Candidate(WeightMatrix(name, matrix, type_name, note, parameter_name), key, trainable)


def _patterns(value: str | Iterable[str] | None, argument: str) -> list[str] | None:
    if value is None:
        return None
    patterns = [value] if isinstance(value, str) else list(value) if isinstance(value, Iterable) else None
    if patterns is None or not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            f"`{argument}` must be None, a glob string or an iterable of glob strings, got {value!r}."
        )
    return patterns


def _matches(pattern: str, matrix: WeightMatrix) -> bool:
    return name_matches(matrix.name, pattern) or name_matches(matrix.parameter_name, pattern)


def weight_matrices(
    model: nn.Module,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    trainable_only: bool = False,
    conv_mode: ConvMode = "flatten",
    split_fused: bool = True,
) -> list[WeightMatrix]:
    """The weight matrices of ``model``, each as the 2-D matrix a spectrum is taken of.

    ``nn.Linear`` and Hugging Face's ``Conv1D`` give ``(out, in)``; a convolution's ``(out, in/groups, *k)``
    kernel is flattened to ``(out, in/groups·∏k)`` (``conv_mode="flatten"``) or split into one
    ``(out, in/groups)`` matrix per kernel position; fused attention and recurrent weights are split into
    their blocks (``split_fused``). Embeddings are ``(num_embeddings, dim)``.

    Args:
        model: any ``nn.Module``; the root's own weights are named without a prefix (``"weight"``).
        include: glob pattern(s); when given, only matrices whose name or parameter name matches one are kept.
        exclude: glob pattern(s); matrices whose name or parameter name matches one are dropped.
        trainable_only: drop parameters with ``requires_grad=False`` (default: frozen ones are reported).
        conv_mode: ``"flatten"`` (one matrix per convolution) or ``"per_position"`` (one per kernel tap).
        split_fused: split ``in_proj_weight`` into Q/K/V and recurrent weights into gate blocks.

    Returns:
        The matrices in ``model.named_modules()`` order, each parameter at most once.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or ``include``/``exclude`` are not glob strings.
        ValueError: ``conv_mode`` is not one of :data:`CONV_MODES`.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
        >>> [(w.name, tuple(w.matrix.shape)) for w in weight_matrices(model)]
        [('0.weight', (8, 27)), ('2.weight', (10, 7200))]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    check_choice("conv_mode", conv_mode, CONV_MODES)
    include_patterns = _patterns(include, "include")
    exclude_patterns = _patterns(exclude, "exclude")

    candidates = list(_candidates(model, conv_mode, bool(split_fused)))
    unmatched = [
        (argument, pattern)
        for argument, patterns in (("include", include_patterns), ("exclude", exclude_patterns))
        for pattern in patterns or []
        if not any(_matches(pattern, c.matrix) for c in candidates)
    ]
    if unmatched:
        listed = ", ".join(f"{argument}={pattern!r}" for argument, pattern in unmatched)
        warnings.warn(
            f"weight_matrices: pattern(s) matching no weight matrix of the model: {listed}", stacklevel=2
        )

    selected: list[WeightMatrix] = []
    owner: dict[tuple[int, ...], str] = {}  # de-duplication key -> parameter name it is reported under
    for c in candidates:
        if trainable_only and not c.trainable:
            continue
        if include_patterns is not None and not any(_matches(p, c.matrix) for p in include_patterns):
            continue
        if exclude_patterns is not None and any(_matches(p, c.matrix) for p in exclude_patterns):
            continue
        first = owner.setdefault(c.key, c.matrix.parameter_name)
        if first != c.matrix.parameter_name:
            continue  # a tied parameter already reported under another module's name
        selected.append(c.matrix)
    return selected
