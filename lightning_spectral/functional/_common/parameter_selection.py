"""Which parameters of a model an estimator differentiates, and how they map to one flat vector.

Example::

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    >>> list(select_parameters(model, ["1.*"]))
    ['1.weight', '1.bias']
    >>> layout = ParameterLayout.from_tensors(select_parameters(model))
    >>> layout.names, layout.dim
    (('0.weight', '0.bias', '1.weight', '1.bias'), 11)
    >>> flat = layout.flatten(dict(model.named_parameters()))
    >>> layout.unflatten(flat)["1.weight"].shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ParamSpec = str | Sequence[str] | None

__all__ = [
    "ParamSpec",
    "ParameterLayout",
    "name_matches",
    "select_parameters",
    "uncompiled_name",
    "unmatched_patterns",
]

#: The attribute under which ``torch.compile``'s wrapper module (``OptimizedModule``) holds the original module.
COMPILED_WRAPPER_ATTRIBUTE = "_orig_mod"


def uncompiled_name(name: str) -> str:
    """``name`` as the model names it without ``torch.compile``: the ``_orig_mod`` components that
    compiled submodules add are removed (``"net._orig_mod.0.weight"`` → ``"net.0.weight"``).
    """
    parts = name.split(".")
    if COMPILED_WRAPPER_ATTRIBUTE not in parts:
        return name
    return ".".join(part for part in parts if part != COMPILED_WRAPPER_ATTRIBUTE)


def name_matches(name: str, pattern: str) -> bool:
    """Whether ``name`` matches ``pattern`` by the one matching rule of every parameter selection.

    ``name`` (or its :func:`uncompiled_name`) matches the :mod:`fnmatch` glob ``pattern`` (case sensitive), or
    lies below the module prefix ``pattern`` (``"net.0"`` → ``net.0.weight``). The rule of the Hessian's and
    the NTK's ``params``/``include``/``exclude``, and of the weight monitor's ``include``/``exclude`` (there
    against a matrix's reported name and its parameter name).

    Args:
        name: a parameter (or weight-matrix) name.
        pattern: a name, glob or module prefix.

    Returns:
        Whether it matches.

    Example:
        >>> name_matches("net.0.weight", "net.0"), name_matches("net.0.weight", "*.bias")
        (True, False)
    """
    prefix = pattern.rstrip(".") + "."
    return any(
        fnmatch.fnmatchcase(candidate, pattern) or candidate.startswith(prefix)
        for candidate in {name, uncompiled_name(name)}
    )


def select_parameters(
    model: nn.Module, params: ParamSpec = None, *, exclude: ParamSpec = None
) -> dict[str, nn.Parameter]:
    """The selected parameters of ``model`` as ``{name: parameter}``, in ``named_parameters()`` order.

    Args:
        model: the network.
        params: ``None`` (default) selects every parameter with ``requires_grad=True``; frozen parameters are
            left out. Otherwise a name or a non-empty list of names / :mod:`fnmatch` globs (``"head.*"``,
            ``"*.weight"``) / module prefixes (``"encoder.0"`` selects ``encoder.0.weight`` and
            ``encoder.0.bias``); naming a frozen parameter selects it. Every pattern must match at least one
            parameter.
        exclude: a name / glob / module prefix or a sequence of them: parameters matching one are dropped from
            the selection (after ``params``); every pattern must match at least one parameter.

    Returns:
        The live parameters (not copies): callers must not modify them. Tied parameters appear once, under
        their first name (as in ``named_parameters()``).

    Raises:
        TypeError: ``params`` or ``exclude`` is not ``None``, a string or a sequence of strings.
        ValueError: a pattern matches no parameter, nothing is selected, or a selected parameter is not
            floating point.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    named = dict(model.named_parameters())
    if params is None:
        selected = [name for name, p in named.items() if p.requires_grad]
        if not selected:
            raise ValueError(
                "`params`: the model has no parameter with requires_grad=True; name the parameters to use."
            )
    else:
        chosen = _matching_names(named, params, "params")
        selected = [name for name in named if name in chosen]
    if exclude is not None:
        dropped = _matching_names(named, exclude, "exclude")
        selected = [name for name in selected if name not in dropped]
        if not selected:
            raise ValueError("`exclude`: every selected parameter is excluded; nothing is left to measure.")
    for name in selected:
        if not named[name].is_floating_point():
            raise ValueError(f"`params`: parameter {name!r} is not floating point ({named[name].dtype}).")
    return {name: named[name] for name in selected}


def _matching_names(named: Mapping[str, Tensor], spec: ParamSpec, argument: str) -> set[str]:
    """The names of ``named`` matched by the pattern(s) ``spec``; ``ValueError`` for a pattern matching none."""
    patterns = [spec] if isinstance(spec, str) else spec
    if (
        not isinstance(patterns, Sequence)
        or len(patterns) == 0
        or not all(isinstance(pattern, str) for pattern in patterns)
    ):
        raise TypeError(
            f"`{argument}` must be None, a string or a non-empty sequence of strings, got {spec!r}."
        )
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [name for name in named if name_matches(name, pattern)]
        if not hits:
            available = ", ".join(list(named)[:12]) + (", ..." if len(named) > 12 else "")
            raise ValueError(
                f"`{argument}`: pattern {pattern!r} matches no parameter name (names, globs such as "
                f"'layer.*' or module prefixes are allowed); parameters: {available}."
            )
        chosen.update(hits)
    return chosen


def unmatched_patterns(model: nn.Module, params: ParamSpec) -> list[str]:
    """The patterns of ``params`` (a name / glob / module prefix or a sequence of them) that match no
    parameter of ``model`` (``[]`` for ``None``). Callbacks use it to warn at setup, naming the patterns.
    """
    if params is None:
        return []
    patterns = [params] if isinstance(params, str) else list(params)
    names = [name for name, _ in model.named_parameters()]
    return [pattern for pattern in patterns if not any(name_matches(name, pattern) for name in names)]


@dataclass(frozen=True)
class ParameterLayout:
    """How named tensors of fixed shapes map to one flat vector of length :attr:`dim`.

    Attributes:
        names: the tensor names, in flattening order.
        shapes: their shapes.
        dtype: their common dtype (also the flat vector's).
        device: their common device (also the flat vector's).
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> ParameterLayout:
        """The layout of ``tensors`` (ordered as given); they must share one dtype and one device."""
        if not tensors:
            raise ValueError("`tensors` must hold at least one tensor.")
        dtypes = {t.dtype for t in tensors.values()}
        devices = {t.device for t in tensors.values()}
        if len(dtypes) > 1 or len(devices) > 1:
            found = sorted(f"{name}: {t.dtype} on {t.device}" for name, t in tensors.items())
            raise ValueError(
                "`params`: the selected parameters must share one dtype and one device to form a flat "
                f"vector; found {', '.join(found[:8])}. Select a subset with `params`."
            )
        first = next(iter(tensors.values()))
        return cls(
            names=tuple(tensors),
            shapes=tuple(t.shape for t in tensors.values()),
            dtype=first.dtype,
            device=first.device,
        )

    @property
    def numels(self) -> tuple[int, ...]:
        """Number of entries of each tensor."""
        return tuple(shape.numel() for shape in self.shapes)

    @property
    def dim(self) -> int:
        """Length ``P`` of the flat vector."""
        return sum(self.numels)

    def flatten(self, tensors: Mapping[str, Tensor] | Sequence[Tensor]) -> Tensor:
        """One 1-D tensor of length :attr:`dim`: the tensors (a mapping holding every name of the layout, or a
        sequence in layout order) flattened row-major and concatenated. A ``None`` entry (an unused
        parameter's gradient) counts as zeros.
        """
        if isinstance(tensors, Mapping):
            missing = [name for name in self.names if name not in tensors]
            if missing:
                raise ValueError(f"`tensors` lacks {missing[:5]} of the layout.")
            pieces = [tensors[name] for name in self.names]
        else:
            pieces = list(tensors)
            if len(pieces) != len(self.names):
                raise ValueError(f"`tensors` must hold {len(self.names)} tensors, got {len(pieces)}.")
        flat = []
        for name, shape, piece in zip(self.names, self.shapes, pieces):
            if piece is None:
                flat.append(torch.zeros(shape.numel(), dtype=self.dtype, device=self.device))
                continue
            if piece.shape != shape:
                raise ValueError(
                    f"`tensors`: {name!r} has shape {tuple(piece.shape)}, expected {tuple(shape)}."
                )
            flat.append(piece.reshape(-1))
        return torch.cat(flat)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``{name: view}``: the inverse of :meth:`flatten` for a 1-D ``flat`` of length :attr:`dim`."""
        if not isinstance(flat, Tensor) or flat.shape != (self.dim,):
            shape = tuple(flat.shape) if isinstance(flat, Tensor) else type(flat).__name__
            raise ValueError(f"`flat` must be a 1-D tensor of length {self.dim}, got {shape}.")
        pieces = torch.split(flat, list(self.numels))
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}
