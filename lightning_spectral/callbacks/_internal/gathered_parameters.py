"""A sharded (FSDP2) module seen as a plain module with whole parameters, for the length of one measurement."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lightning_spectral.callbacks._internal.collectives import MeasurementCollectives
from lightning_spectral.functional._common.module_gradients import is_sharded_tensor

__all__ = ["GATHER_MEMORY_FRACTION", "available_memory", "fits_gathered", "gathered_parameters"]

GATHER_MEMORY_FRACTION = 0.5
"""``sharded_products="auto"`` gathers when the gathered measurement's estimate is at most this fraction of the
memory available on every rank's device (:func:`fits_gathered`)."""


def available_memory(device: torch.device) -> int:
    """Bytes available now on ``device``: the free memory of a CUDA device (``torch.cuda.mem_get_info``), the
    host's ``MemAvailable`` (``/proc/meminfo``) otherwise, or the free physical pages where that is missing.
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def fits_gathered(
    module: nn.Module,
    measured_numel: int,
    vectors: int,
    collectives: MeasurementCollectives,
    available: Callable[[torch.device], int] = available_memory,
) -> bool:
    """Whether the parameters *fit gathered*: on every rank, the whole (unsharded) parameters of ``module``
    plus ``vectors`` whole vectors of the ``measured_numel`` measured parameters (a Lanczos basis and its
    products), in the parameters' dtype, take at most :data:`GATHER_MEMORY_FRACTION` of the memory ``available``
    on the rank's device now (the rest is left to the gradient graph of the measurement, which is about a
    training step's activations, and to everything else). Decided with one all-reduce, the same on every rank
    (any rank that does not fit sends every rank to the sharded path).
    """
    parameters = list(module.parameters())
    whole = sum(p.numel() * p.element_size() for p in parameters)  # a DTensor's numel is the whole tensor's
    itemsize = parameters[0].element_size() if parameters else 4
    needed = whole + vectors * measured_numel * itemsize
    device = parameters[0].device if parameters else torch.device("cpu")
    misses = 0.0 if needed <= GATHER_MEMORY_FRACTION * available(device) else 1.0
    total = collectives.sum(torch.tensor([misses], dtype=torch.float64, device=device))
    return float(total[0]) == 0.0


def _fsdp_hook_handles(module: nn.Module) -> list[Any]:
    """The forward pre-/post-hook handles FSDP2's ``fully_shard`` registered on ``module`` (none for others)."""
    get_state = getattr(module, "_get_fsdp_state", None)
    if get_state is None:
        return []
    state = get_state()
    handles: list[Any] = []
    for handle in (
        getattr(state, "_pre_forward_hook_handle", None),
        getattr(state, "_post_forward_hook_handle", None),
    ):
        handles.extend(getattr(handle, "handles", None) or ([handle] if handle is not None else []))
    return handles


@contextlib.contextmanager
def gathered_parameters(
    module: nn.Module, full_tensor: Callable[[Tensor], Tensor]
) -> Iterator[dict[int, Tensor]]:
    """Whole plain parameters and no FSDP forward hooks in ``module`` for the body (see the docs' implementation notes).

    Args:
        module: the (partly) ``fully_shard``-ed module.
        full_tensor: gathers one ``DTensor`` whole, on every rank
            (:meth:`~lightning_spectral.callbacks._internal.collectives.MeasurementCollectives.full_tensor`).

    Yields:
        ``{id(gathered parameter): original DTensor parameter}``, to map measured parameters back to those the
        optimizer holds.
    """
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    gathered: dict[int, nn.Parameter] = {}
    originals: dict[int, Tensor] = {}
    hook_dicts: dict[
        int, tuple[dict[Any, Any], dict[Any, Any]]
    ] = {}  # each hook dict once, as it was (a group shares a state)
    try:
        for submodule in module.modules():
            for handle in _fsdp_hook_handles(submodule):
                hooks = handle.hooks_dict_ref()
                if hooks is not None:
                    hook_dicts.setdefault(id(hooks), (hooks, dict(hooks)))
                    hooks.pop(handle.id, None)
            for name, parameter in list(submodule._parameters.items()):
                if parameter is None or not is_sharded_tensor(parameter):
                    continue
                whole = gathered.get(id(parameter))
                if whole is None:
                    whole = nn.Parameter(
                        full_tensor(parameter.detach()), requires_grad=parameter.requires_grad
                    )
                    gathered[id(parameter)] = whole
                    originals[id(whole)] = parameter
                swapped.append((submodule, name, parameter))
                submodule._parameters[name] = whole
        yield originals
    finally:
        for submodule, name, parameter in reversed(swapped):
            submodule._parameters[name] = parameter
        for hooks, saved in hook_dicts.values():
            hooks.clear()
            hooks.update(saved)
