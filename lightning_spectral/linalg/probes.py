"""Random probe vectors for stochastic estimators."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_spectral._internal.validation import resolve_dtype_device

__all__ = ["rademacher"]


def rademacher(
    shape: int | Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A tensor of i.i.d. ``±1`` entries.

    Args:
        shape: output shape (an int or a sequence of non-negative ints).
        dtype: floating dtype of the output (default ``torch.get_default_dtype()``).
        device: output device (default CPU). ``generator`` must live on the same device.
        generator: source of randomness; ``None`` draws from the global torch RNG.

    Returns:
        Tensor of the given shape filled with ``-1`` and ``+1``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z = rademacher((3, 4), generator=g)
        >>> sorted(set(z.flatten().tolist()))
        [-1.0, 1.0]
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in shape):
        raise ValueError(f"`shape` must be a non-negative int or a sequence of them, got {shape!r}.")
    dtype, device = resolve_dtype_device(dtype, device)
    if (
        torch.device(device).type == "cpu"
    ):  # drawn in the output dtype, in place: the same values, 2-3× faster
        return torch.randint(0, 2, shape, generator=generator, device=device, dtype=dtype).mul_(2).sub_(1)
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return (2 * bits - 1).to(dtype)
