"""Which parameters of a model are weight matrices, and how each one becomes a 2-D matrix.

:func:`weight_matrices` walks a model and returns one :class:`WeightMatrix` per weight matrix of the layers
below. Each matrix is a *view* of the parameter's storage (``param.detach()`` reshaped or sliced, no copy),
so it follows in-place optimizer updates and costs no memory; ``.clone()`` it to keep a snapshot. Only the
weights of parametrized modules (``torch.nn.utils.parametrize``, e.g. ``weight_norm``/``spectral_norm``)
are computed tensors: the parametrization is evaluated under ``no_grad`` with the parametrization modules
temporarily in eval mode, so a spectral-norm power iteration does not advance.

Layers and orientation (``m × n``: the matrix maps an ``n``-vector to an ``m``-vector):

===========================  ==================================================================================
``nn.Linear`` (and subclass)  ``weight`` ``(out_features, in_features)`` as is (``out_proj`` of attention too).
``nn.Conv1d/2d/3d``           kernel ``(out, in/groups, *k)``. ``conv_mode="flatten"`` (default): one
                              ``(out, in/groups·∏k)`` matrix, the im2col map from a receptive field to the
                              output channels. ``conv_mode="per_position"``: one ``(out, in/groups)`` matrix per
                              kernel position, named ``<name>[i]``, ``<name>[i,j]``, ``<name>[i,j,l]`` (the
                              per-tap channel mixing that WeightWatcher analyses). For ``groups > 1`` the rows of
                              all groups are stacked (each row block is one group's filters).
``nn.ConvTranspose1d/2d/3d``  kernel ``(in, out/groups, *k)`` is reshaped the same way, giving
                              ``(in, out/groups·∏k)`` (or ``(in, out/groups)`` per position): the rows index
                              *input* channels, i.e. this is the transpose of the map input → output. Singular
                              values are the same either way; left and right singular vectors swap roles.
``nn.Embedding(Bag)``         ``(num_embeddings, embedding_dim)``: one row per token.
``nn.MultiheadAttention``     ``in_proj_weight`` ``(3E, E)`` is split into its query, key and value row blocks,
                              named ``<name>.in_proj_weight.q/.k/.v`` (each ``(E, E)``); with ``kdim``/``vdim``
                              different from ``embed_dim`` the separate ``q_proj_weight`` ``(E, E)``,
                              ``k_proj_weight`` ``(E, kdim)``, ``v_proj_weight`` ``(E, vdim)`` are used as they
                              are. ``out_proj`` is an ``nn.Linear`` and reported as such; ``bias_k``/``bias_v``
                              are biases, not matrices, and skipped.
Hugging Face ``Conv1D``       ``weight`` ``(in, out)`` (GPT-2's ``c_attn``, ``c_proj``, ``c_fc``: a linear layer
                              that stores its weight transposed) as its transpose ``(out, in)``, oriented like
                              ``nn.Linear``; recognised by class name (``Conv1D`` with ``nf``), no import of
                              ``transformers``. GPT-2's fused ``c_attn`` (query, key, value) is reported whole.
``nn.LSTM/GRU/RNN`` (+Cell)   ``weight_ih_l*`` ``(G·H, in)`` and ``weight_hh_l*`` ``(G·H, H or proj)`` (also
                              ``_reverse``) are split into their ``G`` gate row blocks, in PyTorch's order:
                              LSTM ``.i .f .g .o`` (input, forget, cell, output), GRU ``.r .z .n`` (reset,
                              update, new); the plain RNN has one block and is not split. The LSTM projection
                              ``weight_hr_l*`` ``(proj, H)`` is not split. Cells: ``weight_ih``, ``weight_hh``.
===========================  ==================================================================================

Splitting fused matrices is what one wants for spectra: the query and key maps, or the forget and input gates,
are different linear maps whose spectra evolve differently; the fused matrix mixes them.
``split_fused=False`` reports ``in_proj_weight`` and the RNN matrices whole.

Everything else (norm-layer scales, biases, ``nn.Bilinear``'s 3-D weight, parameters of custom modules,
uninitialised lazy parameters) is not reported; pass any tensor to
:func:`lightning_spectral.functional.weights.spectrum.weight_spectrum` directly to analyse it anyway.

Selection: ``include``/``exclude`` are ``fnmatch`` globs (case sensitive) matched against both the reported name
(``attn.in_proj_weight.q``, ``conv.weight[0,1]``) and the parameter name (``attn.in_proj_weight``,
``conv.weight``); ``include`` keeps matrices matching any of its patterns, then ``exclude`` drops those
matching any of its patterns. Note that ``[...]`` is a character class in ``fnmatch``: to pick one kernel
position write ``conv.weight[[]0,1]``. A pattern that matches no weight matrix of the model triggers a
``UserWarning`` naming it (usually a typo). Frozen parameters are reported unless ``trainable_only=True``. A
parameter shared by several modules (tied embeddings) is reported once, under the first selected name in
``model.named_modules()`` order. Names are those of the uncompiled model: a submodule wrapped by
``torch.compile`` reports ``net.0.weight``, not PyTorch's ``net._orig_mod.0.weight``
(:func:`~lightning_spectral.functional._common.parameter_selection.uncompiled_name`), so compiled and eager runs log
the same keys.

Example::

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    >>> [(w.name, tuple(w.matrix.shape)) for w in weight_matrices(model)]
    [('0.weight', (8, 27)), ('2.weight', (10, 7200))]
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, cast, get_args

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy
from torch.nn.utils import parametrize

from lightning_spectral.functional._common.parameter_selection import uncompiled_name

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
    return fnmatch.fnmatchcase(matrix.name, pattern) or fnmatch.fnmatchcase(matrix.parameter_name, pattern)


def weight_matrices(
    model: nn.Module,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    trainable_only: bool = False,
    conv_mode: ConvMode = "flatten",
    split_fused: bool = True,
) -> list[WeightMatrix]:
    """The weight matrices of ``model`` (see the module docstring for layers, orientation and naming).

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
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    if conv_mode not in CONV_MODES:
        raise ValueError(f"`conv_mode` must be one of {CONV_MODES}, got {conv_mode!r}.")
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
