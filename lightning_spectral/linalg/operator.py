"""The linear operators the matrix-free routines accept: an object with ``matvec``, ``dim``, ``dtype`` and
``device``, a plain ``matvec`` function with its ``dim``, or a dense square matrix.

:class:`LinearOperator` is a structural protocol (PEP 544), as in curvlinops and SciPy's ``LinearOperator``:
:class:`~lightning_spectral.functional.HessianOperator` and the NTK operator of
:func:`~lightning_spectral.functional.ntk_operator` satisfy it without deriving from anything, so
:func:`~lightning_spectral.linalg.lanczos`, :func:`~lightning_spectral.linalg.slq_density`,
:func:`~lightning_spectral.linalg.hutchinson_trace` and :func:`~lightning_spectral.linalg.hutchpp_trace` take
them directly and read the size, dtype and device from them.

Example::

    >>> import torch
    >>> from lightning_spectral.linalg import lanczos
    >>> A = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    >>> round(float(lanczos(A, k=1).eigenvalues[0]), 6)  # a dense matrix is an operator too
    5.0
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from lightning_spectral._internal.validation import ArgumentTypeError, check_int

from ._matvec import Matvec, check_matvec

__all__ = ["LinearOperator", "ResolvedOperator", "resolve_operator"]


@runtime_checkable
class LinearOperator(Protocol):
    """A square linear operator ``A`` on ``R^dim`` known through its products ``v ↦ A v``.

    Anything with the four members ``dim``, ``dtype``, ``device`` and ``matvec`` is one (a class, a dataclass
    or a named tuple; no base class needed).

    Args:
        dim: the size of ``A`` (a read-only attribute or property).
        dtype: the dtype of the vectors it takes and returns.
        device: the device of those vectors.

    Example:
        >>> import torch
        >>> from lightning_spectral.linalg import hutchpp_trace
        >>> class Diagonal:
        ...     dim, dtype, device = 4, torch.float64, torch.device("cpu")
        ...     def matvec(self, v):
        ...         return torch.arange(1.0, 5.0, dtype=torch.float64) * v
        >>> isinstance(Diagonal(), LinearOperator)
        True
        >>> hutchpp_trace(Diagonal(), num_matvecs=4).estimate  # a budget >= dim: exact
        10.0
    """

    @property
    def dim(self) -> int:
        """The size of ``A``."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the vectors it takes and returns."""
        ...

    @property
    def device(self) -> torch.device:
        """The device of those vectors."""
        ...

    def matvec(self, v: Tensor) -> Tensor:
        """``A v`` for a 1-D tensor ``v`` of length ``dim`` (same dtype and device)."""
        ...


class ResolvedOperator(NamedTuple):
    """What a routine works with: the product function, the size, and the dtype/device (``None``: the
    routine's default).
    """

    matvec: Matvec
    dim: int
    dtype: torch.dtype | None
    device: torch.device | str | None


def resolve_operator(
    operator: LinearOperator | Tensor | Matvec,
    dim: int | None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    *,
    allow_empty: bool = False,
) -> ResolvedOperator:
    """The product function, size, dtype and device of ``operator``.

    Args:
        operator: a :class:`LinearOperator`, a dense square 2-D tensor, or a ``matvec`` function.
        dim: the size; required for a function, optional otherwise (must then agree with the operator).
        dtype: the working dtype; defaults to the operator's (a function: ``None``, the routine's default).
        device: the working device; defaults to the operator's.
        allow_empty: a ``dim`` of 0 is allowed (a process's empty shard of a sharded operator).

    Returns:
        A :class:`ResolvedOperator`.

    Raises:
        TypeError: ``operator`` is none of the three, or ``dim`` is missing for a function.
        ValueError: ``dim`` disagrees with the operator, or a tensor is not a square matrix.
    """
    if isinstance(operator, Tensor):
        if operator.ndim != 2 or operator.shape[0] != operator.shape[1] or operator.shape[0] == 0:
            raise ValueError(
                f"`matvec`: a dense operator must be a non-empty square matrix, got {tuple(operator.shape)}."
            )
        matrix = operator.detach()
        size, own_dtype, own_device = matrix.shape[0], matrix.dtype, matrix.device

        def product(v: Tensor) -> Tensor:
            return matrix @ v

    elif isinstance(operator, LinearOperator):
        product = operator.matvec
        size, own_dtype, own_device = operator.dim, operator.dtype, operator.device
    else:
        check_matvec(operator)
        if dim is None:
            raise ArgumentTypeError(
                "`dim` is required when `matvec` is a function (pass an operator with `dim`, `dtype`, `device` "
                "and `matvec`, or a dense matrix, to leave it out)."
            )
        return ResolvedOperator(operator, check_int("dim", dim, 0 if allow_empty else 1), dtype, device)
    if dim is not None and check_int("dim", dim, 1) != size:
        raise ValueError(f"`dim` ({dim}) disagrees with the operator's size ({size}).")
    return ResolvedOperator(
        product, size, own_dtype if dtype is None else dtype, own_device if device is None else device
    )
