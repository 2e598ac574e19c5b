"""The ``params=`` argument of a monitor, checked against the model at setup.

A monitor that measures a subset of the parameters (names, globs or module prefixes; see
:func:`~lightning_spectral.functional.parameter_selection.select_parameters`) checks its patterns once the
model is known: patterns that match no parameter are named in a warning and dropped (a typo should not
silently measure something else), and if none matches the run stops at setup with a ``ValueError``.

Example::

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    >>> checked_param_patterns(model, ["1.*", "head.*"], "NTKTraceMonitor")  # warns about "head.*"
    ['1.*']
"""

from __future__ import annotations

from collections.abc import Sequence

from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightning_spectral.functional.parameter_selection import unmatched_patterns

__all__ = ["check_param_spec", "checked_param_patterns"]


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


def checked_param_patterns(
    model: nn.Module, params: str | Sequence[str] | None, monitor: str
) -> str | list[str] | None:
    """``params`` without the patterns that match no parameter of ``model`` (named in a rank-zero warning);
    ``ValueError`` if no pattern matches. ``None`` (every trainable parameter) passes through."""
    unmatched = unmatched_patterns(model, params)
    if not unmatched:
        return params if params is None or isinstance(params, str) else list(params)
    patterns = [params] if isinstance(params, str) else list(params)
    kept = [p for p in patterns if p not in unmatched]
    if not kept:
        raise ValueError(f"{monitor}: `params` patterns {unmatched} match no parameter of the model.")
    rank_zero_warn(
        f"{monitor}: `params` patterns {unmatched} match no parameter of the model and are ignored; measuring "
        f"the parameters matched by {kept}."
    )
    return kept
