"""The ``params=`` argument of a monitor, checked against the model at setup.

A monitor that measures a subset of the parameters (names, globs or module prefixes; see
:func:`~lightning_spectral.functional._common.parameter_selection.select_parameters`) checks its patterns once the
model is known: a pattern that matches no parameter stops the run at setup with a ``ValueError`` naming the
pattern and the closest parameter names (a typo must not silently measure something else). The weight monitor's
``include`` / ``exclude`` globs get the same check against its weight matrices
(:func:`check_patterns_match`).

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
import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from lightning_spectral.functional._common.parameter_selection import unmatched_patterns

if TYPE_CHECKING:
    from lightning_spectral.functional.weights.matrices import ConvMode

__all__ = ["check_param_spec", "check_patterns_match", "check_weight_patterns", "checked_param_patterns"]


def check_param_spec(params: object) -> None:
    """At construction: ``params`` must be ``None``, a non-empty string, or a non-empty list/tuple of them."""
    patterns = [params] if isinstance(params, str) else params
    if params is None:
        return
    if (
        not isinstance(patterns, (list, tuple))
        or not patterns
        or not all(isinstance(p, str) and p for p in patterns)
    ):
        raise ValueError(
            "`params` must be None (every trainable parameter), a name / glob / module prefix, or a non-empty "
            f"list of them, got {params!r}."
        )


def check_patterns_match(unmatched: Sequence[tuple[str, str]], names: Sequence[str], monitor: str) -> None:
    """Raise ``ValueError`` naming each ``(argument, pattern)`` of ``unmatched`` and, for the first, the closest
    of ``names`` (:func:`difflib.get_close_matches`); nothing when ``unmatched`` is empty."""
    if not unmatched:
        return
    argument, pattern = unmatched[0]
    closest = difflib.get_close_matches(pattern, list(names), n=3, cutoff=0.0)
    others = "".join(f", `{a}` pattern {p!r}" for a, p in unmatched[1:])
    raise ValueError(
        f"{monitor}: `{argument}` pattern {pattern!r}{others} matches no "
        f"{'parameter' if argument == 'params' else 'weight matrix'} of the model; closest names: "
        f"{', '.join(repr(name) for name in closest) or 'none (the model has none)'}."
    )


def checked_param_patterns(
    model: nn.Module, params: str | Sequence[str] | None, monitor: str
) -> str | list[str] | None:
    """``params`` as a list (a string stays a string, ``None`` passes through: every trainable parameter);
    ``ValueError`` at the first pattern that matches no parameter of ``model`` (:func:`check_patterns_match`)."""
    unmatched = unmatched_patterns(model, params)
    check_patterns_match(
        [("params", pattern) for pattern in unmatched],
        [name for name, _ in model.named_parameters()],
        monitor,
    )
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
    :func:`~lightning_spectral.functional.weights.matrices.weight_matrices`)."""
    if include is None and exclude is None:
        return
    from lightning_spectral.functional.weights.matrices import weight_matrices

    matrices = weight_matrices(model, conv_mode=conv_mode)
    names = list(dict.fromkeys(n for m in matrices for n in (m.name, m.parameter_name)))
    unmatched = [
        (argument, pattern)
        for argument, patterns in (("include", include), ("exclude", exclude))
        for pattern in ([patterns] if isinstance(patterns, str) else list(patterns or []))
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names)
    ]
    check_patterns_match(unmatched, names, monitor)
