"""A sharded (FSDP2) module seen as a plain module with whole parameters, for the length of one measurement."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor, nn

from lightning_spectral.callbacks._internal.collectives import is_distributed_tensor

__all__ = ["gathered_parameters"]


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
    """Whole plain parameters and no FSDP forward hooks in ``module`` for the body (see the module's science notes).

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
                if parameter is None or not is_distributed_tensor(parameter):
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
