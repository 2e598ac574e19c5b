"""A sharded (FSDP2) module seen as a plain module with whole parameters, for the length of one measurement.

Under Lightning's ``ModelParallelStrategy`` with ``fully_shard`` every parameter is a ``DTensor`` shard and the
``FSDPModule`` forward hooks all-gather them around each forward (and reduce-scatter gradients after
``backward``). The Hessian and NTK measurements differentiate the loss / outputs with respect to whole parameters
(``torch.func.functional_call``, ``torch.autograd.grad``), which the hooks' swapping of parameter tensors in and
out of the modules would break. :func:`gathered_parameters` therefore, on entry,

- gathers each ``DTensor`` parameter whole (:meth:`MeasurementCollectives.full_tensor`: one all-gather over its
  mesh, every rank in the same module order; a tied parameter once) into a plain ``nn.Parameter`` with the same
  ``requires_grad`` and registers it in place of the shard;
- sets the ``FSDPModule`` forward hooks aside, so that a forward is the module's own code on those tensors
  (no all-gather, no reshard, no gradient reduce-scatter, no FSDP mixed-precision casts: the measurement runs
  in the parameters' dtype);

and on exit puts the original ``DTensor`` objects and the hooks back (the same objects, in the same order), so
the optimizer, FSDP's bookkeeping and the next training step see exactly what they saw before. Nothing is
written into the shards or their ``.grad``.

Every rank then holds the whole model, as under DDP, and the data-parallel reductions of the DDP path (the mean
of Hessian-vector products over the ranks' batch shards, the sum of NTK traces) apply unchanged: the numbers
equal those of the same fit under ``strategy="ddp"``. The cost is the memory of the gathered parameters (one
unsharded copy of the model per rank) on top of the shards, plus the measurement's own (the Lanczos vectors
are whole-parameter vectors, as under DDP). Tensor parallelism (a mesh with a ``tensor_parallel_size`` above 1)
is refused by the monitors: its ranks share a batch, so the data-parallel reductions over all ranks would
count each batch shard several times.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lightning_spectral.callbacks._internal.collectives import MeasurementCollectives, is_distributed_tensor

__all__ = ["GATHER_MEMORY_FRACTION", "available_memory", "fits_gathered", "gathered_parameters"]

GATHER_MEMORY_FRACTION = 0.5
"""``sharded_products="auto"`` gathers when the gathered measurement's estimate is at most this fraction of the
memory available on every rank's device (:func:`fits_gathered`)."""


def available_memory(device: torch.device) -> int:
    """Bytes available now on ``device``: the free memory of a CUDA device (``torch.cuda.mem_get_info``), the
    host's ``MemAvailable`` (``/proc/meminfo``) otherwise, or the free physical pages where that is missing."""
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
    (any rank that does not fit sends every rank to the sharded path)."""
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
    handles = []
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
    """Whole plain parameters and no FSDP forward hooks in ``module`` for the body (see the module docstring).

    Args:
        module: the (partly) ``fully_shard``-ed module.
        full_tensor: gathers one ``DTensor`` whole, on every rank
            (:meth:`~lightning_spectral.callbacks._internal.collectives.MeasurementCollectives.full_tensor`).

    Yields:
        ``{id(gathered parameter): original DTensor parameter}``, to map measured parameters back to those the
        optimizer holds.
    """
    swapped: list[tuple[nn.Module, str, Tensor]] = []
    gathered: dict[int, nn.Parameter] = {}
    originals: dict[int, Tensor] = {}
    hook_dicts: dict[int, tuple[dict, dict]] = {}  # each hook dict once, as it was (a group shares a state)
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
