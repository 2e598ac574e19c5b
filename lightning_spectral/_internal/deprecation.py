"""Old names of renamed keyword arguments and classes, still accepted with a ``DeprecationWarning``."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["renamed_attribute", "renamed_keywords"]


def renamed_keywords(**renames: str) -> Callable[[F], F]:
    """Decorator: accept each old keyword (the key) as a deprecated alias of its new name (the value).

    The wrapped function keeps its signature (``inspect.signature`` and the docs show the new names only).

    Args:
        **renames: ``old_name="new_name"`` for every renamed keyword argument.

    Returns:
        The decorator.

    Raises:
        TypeError: (from the wrapped function) both the old and the new name were given.

    Example::

        @renamed_keywords(max_iter="max_matvecs")
        def lanczos(matvec, dim, k, *, max_matvecs=None): ...

        lanczos(matvec, 10, 1, max_iter=20)  # DeprecationWarning: `max_iter` is deprecated, use `max_matvecs`
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{function.__qualname__}() got both `{old}` and `{new}`: `{old}` is the deprecated "
                            f"name of `{new}`; pass `{new}` only."
                        )
                    warnings.warn(
                        f"{function.__qualname__}(): the keyword `{old}` is deprecated, use `{new}` instead.",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def renamed_attribute(module_name: str, name: str, renames: Mapping[str, str]) -> Any:
    """For a module's ``__getattr__``: the object now called ``renames[name]``, with a ``DeprecationWarning``.

    Args:
        module_name: the module's ``__name__``.
        name: the attribute asked for.
        renames: ``{old_name: new_name}`` of the module's renamed attributes.

    Returns:
        The module's attribute under the new name.

    Raises:
        AttributeError: ``name`` is not an old name of this module.

    Example::

        _RENAMED = {"Eigenpairs": "Eigenpairs"}

        def __getattr__(name):
            return renamed_attribute(__name__, name, _RENAMED)
    """
    new = renames.get(name)
    if new is None:
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    warnings.warn(
        f"`{module_name}.{name}` is deprecated, use `{module_name}.{new}` (the same class, renamed).",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(sys.modules[module_name], new)
