"""The ``params=`` argument of a monitor, checked against the model at setup.

Example::

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    >>> checked_param_patterns(model, ["1.*"], "NTKTraceMonitor")
    ['1.*']
    >>> checked_param_patterns(model, ["1.wieght"], "NTKTraceMonitor")
    Traceback (most recent call last):
    ...
    ValueError: NTKTraceMonitor: `params` pattern '1.wieght' matches no parameter of the model; closest names: '1.weight', '0.weight', '1.bias'.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from lightning_spectral.functional._common.parameter_selection import (
    name_matches,
    select_parameters,
    unmatched_patterns,
)

if TYPE_CHECKING:
    from lightning_spectral.functional.weights.matrices import ConvMode

__all__ = [
    "check_param_spec",
    "check_patterns_match",
    "check_weight_patterns",
    "checked_param_patterns",
    "include_argument",
]


def check_param_spec(params: object, argument: str = "params") -> None:
    """At construction: ``params`` (the argument ``argument``) must be ``None``, a non-empty string, or a
    non-empty list/tuple of them.
    """
    patterns = [params] if isinstance(params, str) else params
    if params is None:
        return
    if (
        not isinstance(patterns, (list, tuple))
        or not patterns
        or not all(isinstance(p, str) and p for p in patterns)
    ):
        raise ValueError(
            f"`{argument}` must be None (every trainable parameter), a name / glob / module prefix, or a "
            f"non-empty list of them, got {params!r}."
        )


def check_patterns_match(
    unmatched: Sequence[tuple[str, str]], names: Sequence[str], monitor: str, *, weights: bool = False
) -> None:
    """Raise ``ValueError`` naming each ``(argument, pattern)`` of ``unmatched`` and, for the first, the closest
    of ``names`` (:func:`difflib.get_close_matches`); nothing when ``unmatched`` is empty.
    """
    if not unmatched:
        return
    argument, pattern = unmatched[0]
    closest = difflib.get_close_matches(pattern, list(names), n=3, cutoff=0.0)
    others = "".join(f", `{a}` pattern {p!r}" for a, p in unmatched[1:])
    raise ValueError(
        f"{monitor}: `{argument}` pattern {pattern!r}{others} matches no "
        f"{'weight matrix' if weights else 'parameter'} of the model; closest names: "
        f"{', '.join(repr(name) for name in closest) or 'none (the model has none)'}."
    )


def include_argument(
    params: str | Sequence[str] | None, include: str | Sequence[str] | None
) -> tuple[str, str | Sequence[str] | None]:
    """The monitor's ``include`` patterns and the name they were given under: ``params`` is the older name of
    ``include`` (both accepted; passing both is a ``ValueError``).
    """
    if params is not None and include is not None:
        raise ValueError("Pass `include` or its older name `params`, not both.")
    return ("params", params) if params is not None else ("include", include)


def checked_param_patterns(
    model: nn.Module,
    params: str | Sequence[str] | None,
    monitor: str,
    *,
    exclude: str | Sequence[str] | None = None,
    argument: str = "params",
) -> str | list[str] | None:
    """The parameter selection of a monitor, checked against ``model``: ``ValueError`` at the first pattern of
    ``params`` (given as ``argument``) or ``exclude`` that matches no parameter (:func:`check_patterns_match`).

    Returns ``params`` as a list (a string stays a string, ``None`` passes through: every trainable parameter);
    with ``exclude`` the explicit names that remain (what the functional estimators take as ``params``).
    """
    names = [name for name, _ in model.named_parameters()]
    unmatched = [(argument, pattern) for pattern in unmatched_patterns(model, params)]
    unmatched += [("exclude", pattern) for pattern in unmatched_patterns(model, exclude)]
    check_patterns_match(unmatched, names, monitor)
    if exclude is not None:
        return list(select_parameters(model, params, exclude=exclude))
    return params if params is None or isinstance(params, str) else list(params)


def check_weight_patterns(
    model: nn.Module,
    include: str | Sequence[str] | None,
    exclude: str | Sequence[str] | None,
    conv_mode: ConvMode,
    monitor: str,
) -> None:
    """``ValueError`` for an ``include`` / ``exclude`` glob that matches no weight matrix of ``model``, by its
    reported name or its parameter name (the matching of
    :func:`~lightning_spectral.functional.weights.matrices.weight_matrices`).
    """
    if include is None and exclude is None:
        return
    from lightning_spectral.functional.weights.matrices import weight_matrices

    matrices = weight_matrices(model, conv_mode=conv_mode)
    names = list(dict.fromkeys(n for m in matrices for n in (m.name, m.parameter_name)))
    unmatched = [
        (argument, pattern)
        for argument, patterns in (("include", include), ("exclude", exclude))
        for pattern in ([patterns] if isinstance(patterns, str) else list(patterns or []))
        if not any(name_matches(name, pattern) for name in names)
    ]
    check_patterns_match(unmatched, names, monitor, weights=True)
