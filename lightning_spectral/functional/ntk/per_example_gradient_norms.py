"""Per-example squared gradient norms of weighted model outputs, layer by layer where the algebra allows.

Example::

    >>> import torch
    >>> from lightning_spectral.functional.ntk.model_jacobian import make_functional_model
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> fm = make_functional_model(model.double())
    >>> x = torch.randn(5, 4, dtype=torch.float64)
    >>> one_hot = torch.eye(3, dtype=torch.float64)[:, None, :].expand(3, 5, 3)
    >>> s = per_example_squared_gradient_norms(fm, x, one_hot)
    >>> s.shape
    torch.Size([3, 5])
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_spectral._internal.anomaly_mode import anomaly_detection_paused
from lightning_spectral.functional.ntk.model_jacobian import FunctionalModel, warn_per_example_loop

__all__ = ["VECTORIZED_BUDGET", "LayerwiseChecks", "per_example_squared_gradient_norms"]

VECTORIZED_BUDGET = 2**24
"""Entries held at once by one vectorized step: ``chunk·P`` per-example gradient entries (generic path) or
``cotangents·Σ|z|`` layer-output gradient entries (layer-wise path)."""

_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
_CoveredModule = nn.Linear | nn.Conv1d | nn.Conv2d


@dataclass
class _Layer:
    """A covered layer: its module, the selected names of its weight / bias, what one forward call saw."""

    name: str
    module: _CoveredModule
    weight: str | None
    bias: str | None
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    _patches: Tensor | None = None

    def hook(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Tensor
    ) -> Tensor:
        # Linear / Conv take one input, positionally or as ``input=``
        self.inputs.append((args[0] if args else kwargs["input"]).detach())
        self.outputs.append(output)
        # The rest of the network sees a copy: an in-place op downstream (ReLU(inplace=True)) then cannot
        # rewrite the history of ``output``, whose gradient is the δ we need.
        return output.clone()

    def patches(self) -> Tensor:
        """The layer's input as ``(B, T, fan_in)``: one row per position ``t`` of each example (cached)."""
        if self._patches is None:
            self._patches = self._unfold(self.inputs[0])
        return self._patches

    def _unfold(self, a: Tensor) -> Tensor:
        m = self.module
        if isinstance(m, nn.Linear):
            return a.reshape(a.shape[0], -1, a.shape[-1])
        kernel: tuple[int, ...]
        dilation: tuple[int, ...]
        padding: tuple[int, ...]
        stride: tuple[int, ...]
        assert not isinstance(m.padding, str)  # string padding is not covered (_eligible)
        if isinstance(m, nn.Conv1d):
            a = a.unsqueeze(2)
            kernel, dilation = (1, m.kernel_size[0]), (1, m.dilation[0])
            padding, stride = (0, m.padding[0]), (1, m.stride[0])
        else:
            kernel, dilation, padding, stride = m.kernel_size, m.dilation, m.padding, m.stride
        return F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride).transpose(1, 2)

    def output_rows(self, delta: Tensor) -> Tensor:
        """``δ`` of shape ``(N, *output shape)`` as ``(N, B, T, fan_out)``."""
        n, b = delta.shape[:2]
        if isinstance(self.module, nn.Linear):
            return delta.reshape(n, b, -1, delta.shape[-1])
        return delta.reshape(n, b, delta.shape[2], -1).transpose(2, 3)

    def squared_norms(self, delta: Tensor) -> Tensor:
        """``(N, B)``: per-example squared norms of this layer's selected weight and bias gradients."""
        d = self.output_rows(delta)
        total = torch.zeros(d.shape[:2], dtype=d.dtype, device=d.device)
        if self.weight is not None:
            a = self.patches().to(d.dtype)
            positions, fan_in, fan_out = a.shape[1], a.shape[2], d.shape[3]
            if positions == 1:
                total = total + d.pow(2).sum((2, 3)) * a.pow(2).sum((1, 2))
            elif positions * positions <= fan_in * fan_out:
                gram_a = a @ a.transpose(1, 2)
                total = total + ((d @ d.transpose(2, 3)) * gram_a).sum((2, 3))
            else:
                total = total + torch.einsum("nbto,bti->nboi", d, a).pow(2).sum((2, 3))
        if self.bias is not None:
            total = total + d.sum(2).pow(2).sum(2)
        return total


class LayerwiseChecks:
    """The layer-wise set-ups that have passed the per-example check (the docs' implementation notes, *Check*), so that
    repeated calls on one model check once.

    A set-up is keyed by the covered layers (names, module and parameter objects), the parameters left to the
    generic path, and the inputs' shape, dtype and device; any change is checked again. Only passes are
    remembered: a set-up that failed is checked, and recomputed by the generic path, on every call. Keep one
    instance per model (identities of freed objects can be reused); :meth:`clear` forgets everything.

    Example::

        >>> checks = LayerwiseChecks()
        >>> len(checks)  # ntk_trace(model, x, layerwise_checks=checks) adds its set-up once it has passed
        0
    """

    def __init__(self) -> None:
        self._passed: set[tuple[Any, ...]] = set()

    def __len__(self) -> int:
        return len(self._passed)

    def __contains__(self, key: object) -> bool:
        return key in self._passed

    def add(self, key: tuple[Any, ...]) -> None:
        """Remember a set-up (a :meth:`key`) that has passed the check."""
        self._passed.add(key)

    def clear(self) -> None:
        """Forget every set-up that passed: the next evaluation of each is checked again."""
        self._passed.clear()

    @staticmethod
    def key(fm: FunctionalModel, layers: list[_Layer], rest: list[str], inputs: Tensor) -> tuple[Any, ...]:
        """The set-up: each covered layer's name, module object, selected parameter names and the parameter
        objects behind them (registered ones, so never a temporary), the generic path's names, the inputs'
        shape, dtype and device.

        Args:
            fm: the functional model.
            layers: the layers of the layer-wise path.
            rest: the parameter names of the generic path.
            inputs: the batch.

        Returns:
            A hashable key.
        """
        named: dict[str | None, Tensor] = dict(fm.module.model.named_parameters(remove_duplicate=False))
        covered = tuple(
            (
                layer.name,
                id(layer.module),
                layer.weight,
                layer.bias,
                id(named.get(layer.weight)),
                id(named.get(layer.bias)),
            )
            for layer in layers
        )
        return covered, tuple(rest), tuple(inputs.shape), inputs.dtype, inputs.device


def _eligible(module: nn.Module) -> TypeGuard[_CoveredModule]:
    if not isinstance(module, _LAYER_TYPES):
        return False
    base = next(t for t in _LAYER_TYPES if isinstance(module, t))
    if type(module).forward is not base.forward:
        return False
    if isinstance(module, nn.Linear):
        return True
    return module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)


def _candidate_layers(fm: FunctionalModel) -> list[_Layer]:
    model = fm.module.model
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    selected = set(fm.names)
    layers = []
    for name, module in model.named_modules():
        if not _eligible(module):
            continue
        prefix = name + "." if name else ""
        own = {kind: prefix + kind for kind in ("weight", "bias") if getattr(module, kind, None) is not None}
        if any(uses[id(getattr(module, kind))] > 1 for kind in own):
            continue  # tied to another module: its gradient has other terms
        picked = {kind: n for kind, n in own.items() if n in selected}
        if picked:
            layers.append(_Layer(name, module, picked.get("weight"), picked.get("bias")))
    return layers


def _restricted(fm: FunctionalModel, names: list[str]) -> FunctionalModel:
    """``fm`` differentiating only ``names``; the other selected parameters become constants."""
    constants = dict(fm.constants)
    constants.update({"model." + n: p for n, p in fm.params.items() if n not in names})
    return dataclasses.replace(
        fm, names=tuple(names), params={n: fm.params[n] for n in names}, constants=constants
    )


def _cotangent_block(cotangents: Tensor | None, start: int, stop: int, like: Tensor) -> Tensor:
    """Cotangents ``start..stop-1`` as ``(n, B, K)``; ``None`` stands for the one-hot ``c[k, i] = e_k``."""
    if cotangents is not None:
        return cotangents[start:stop]
    eye = torch.eye(like.shape[1], dtype=like.dtype, device=like.device)[start:stop]
    return eye[:, None, :].expand(stop - start, *like.shape)


def _generic_norms(
    fm: FunctionalModel,
    names: list[str],
    inputs: Tensor,
    cotangents: Tensor | None,
    outputs: Tensor,
    chunk_size: int | None,
) -> Tensor:
    """``(N, B)`` squared norms over the parameters ``names`` by ``vmap`` over examples of ``grad``."""
    sub = _restricted(fm, names)
    if chunk_size is None:
        chunk_size = max(1, VECTORIZED_BUDGET // max(1, sub.num_params))

    def squared_norm(params: dict[str, Tensor], example: Tensor, cotangent: Tensor) -> Tensor:
        def weighted_output(p: dict[str, Tensor]) -> Tensor:
            return (sub.example_outputs(p, example) * cotangent).sum()

        return sum(g.pow(2).sum() for g in torch.func.grad(weighted_output)(params).values())

    per_example = torch.func.vmap(squared_norm, in_dims=(None, 0, 0), chunk_size=chunk_size)
    count = outputs.shape[1] if cotangents is None else cotangents.shape[0]
    try:
        with anomaly_detection_paused():
            return torch.cat(
                [
                    per_example(sub.params, inputs, _cotangent_block(cotangents, n, n + 1, outputs)[0])[None]
                    for n in range(count)
                ]
            )
    except (RuntimeError, NotImplementedError) as error:  # vmap cannot batch the model (e.g. nn.GRU, nn.LSTM)
        warn_per_example_loop("per-example gradient norms", error)
        columns = [
            _single_example_norms(sub, inputs[i : i + 1], _cotangent_column(cotangents, i, outputs))
            for i in range(inputs.shape[0])
        ]
        return torch.stack(columns, 1)


def _cotangent_column(cotangents: Tensor | None, example: int, like: Tensor) -> Tensor:
    """The cotangents of one example as ``(N, 1, K)``."""
    if cotangents is not None:
        return cotangents[:, example : example + 1]
    return _cotangent_block(None, 0, like.shape[1], like[example : example + 1])


def _single_example_norms(fm: FunctionalModel, example: Tensor, cotangents: Tensor) -> Tensor:
    """``(N,)`` squared norms for one example (a batch of one) by plain autograd: one forward pass, then
    backward passes vectorized over the cotangents (at most about ``VECTORIZED_BUDGET / P`` at a time).
    Independent of the layer-wise algebra and of ``torch.func``: the check's reference.
    """
    params = {n: p.detach().requires_grad_(True) for n, p in fm.params.items()}
    with torch.enable_grad():
        outputs = fm.batch_outputs(params, example)
    chunk = max(1, VECTORIZED_BUDGET // max(1, fm.num_params))
    norms = []
    for start in range(0, cotangents.shape[0], chunk):
        block = cotangents[start : start + chunk]
        with anomaly_detection_paused():
            grads = torch.autograd.grad(
                outputs,
                list(params.values()),
                block,
                retain_graph=True,
                is_grads_batched=True,
                allow_unused=True,
            )
        # (N, *shape) per cotangent; a 0-dim parameter's is (N,)
        squares = [g.pow(2).reshape(g.shape[0], -1).sum(1) for g in grads if g is not None]
        norms.append(sum(squares[1:], squares[0]))
    return torch.cat(norms)


def _layer_norms(layers: list[_Layer], outputs: Tensor, cotangents: Tensor | None) -> Tensor:
    """``(N, B)`` squared norms over the covered layers: the gradients ``δ = ∂(c_n · f)/∂z`` of every layer
    output ``z`` for a chunk of cotangents come from one vectorized backward pass.
    """
    layer_outputs = [layer.outputs[0] for layer in layers]
    count = outputs.shape[1] if cotangents is None else cotangents.shape[0]
    chunk = max(1, VECTORIZED_BUDGET // max(1, sum(z.numel() for z in layer_outputs)))
    rows = []
    for start in range(0, count, chunk):
        block = _cotangent_block(cotangents, start, min(start + chunk, count), outputs)
        with anomaly_detection_paused():
            grads = torch.autograd.grad(
                outputs, layer_outputs, block, retain_graph=True, is_grads_batched=True, allow_unused=True
            )
        norms = torch.zeros(block.shape[:2], dtype=outputs.dtype, device=outputs.device)
        for layer, grad in zip(layers, grads):
            if grad is not None:  # None: the outputs do not depend on this layer
                norms = norms + layer.squared_norms(grad)
        rows.append(norms)
    return torch.cat(rows)


def per_example_squared_gradient_norms(
    fm: FunctionalModel,
    inputs: Tensor,
    cotangents: Tensor | None = None,
    *,
    chunk_size: int | None = None,
    checks: LayerwiseChecks | None = None,
) -> Tensor:
    """``s[n, i] = ‖∂/∂θ Σ_k cotangents[n, i, k] f_k(x_i)‖²`` as an ``(N, B)`` tensor (see the docs' implementation notes).

    Args:
        fm: the model as a function of its selected parameters
            (:func:`~lightning_spectral.functional.ntk.model_jacobian.make_functional_model`).
        inputs: the batch, first dimension ``B``.
        cotangents: ``(N, B, K)`` weights of the outputs (``K`` = outputs per example, flattened), or
            ``None`` for the one-hot cotangents ``c[k, i] = e_k`` (``N = K``; the rows are then
            ``‖∂f_k(x_i)/∂θ‖²``, summing to the NTK trace), generated chunk by chunk.
        chunk_size: examples per vectorized chunk of the generic path (default: about
            ``VECTORIZED_BUDGET / P`` examples).
        checks: a :class:`LayerwiseChecks`: the per-example check of the layer-wise path is skipped for a
            set-up that has passed it before (default: checked on every call).

    Returns:
        The ``(N, B)`` squared norms, in the outputs' dtype.
    """
    batch = inputs.shape[0]
    layers = _candidate_layers(fm)
    handles = [layer.module.register_forward_hook(layer.hook, with_kwargs=True) for layer in layers]
    try:
        params = {n: p.detach().requires_grad_(True) for n, p in fm.params.items()}
        with torch.enable_grad():
            outputs = fm.batch_outputs(params, inputs)
    finally:
        for handle in handles:
            handle.remove()
    if cotangents is not None:
        if (
            not isinstance(cotangents, Tensor)
            or cotangents.dim() != 3
            or cotangents.shape[1:] != outputs.shape
        ):
            raise ValueError(
                f"`cotangents` must be a tensor of shape (N, {batch}, {outputs.shape[1]}) or None, got "
                f"{tuple(cotangents.shape) if isinstance(cotangents, Tensor) else type(cotangents)}."
            )
        cotangents = cotangents.to(dtype=outputs.dtype, device=outputs.device)
    layers = [
        layer
        for layer in layers
        if len(layer.outputs) == 1
        and layer.inputs[0].dim() >= 2
        and layer.inputs[0].shape[0] == batch
        and layer.outputs[0].shape[0] == batch
        and layer.outputs[0].requires_grad
    ]
    covered = {n for layer in layers for n in (layer.weight, layer.bias) if n is not None}
    rest = [n for n in fm.names if n not in covered]
    if layers:
        total = _layer_norms(layers, outputs, cotangents)
    else:
        count = outputs.shape[1] if cotangents is None else cotangents.shape[0]
        total = outputs.new_zeros((count, batch))
    like = outputs.detach()
    names = [layer.name for layer in layers]
    for layer in layers:
        layer.outputs.clear()
    del outputs  # frees the forward graph before the generic path runs
    if rest:
        total = total + _generic_norms(fm, rest, inputs, cotangents, like, chunk_size)
    if not names:
        return total
    key = None if checks is None else LayerwiseChecks.key(fm, layers, rest, inputs)
    if checks is not None and key in checks:
        return total

    ends = sorted({0, batch - 1})
    reference = torch.stack(
        [_single_example_norms(fm, inputs[j : j + 1], _cotangent_column(cotangents, j, like)) for j in ends],
        1,
    )
    tolerance = torch.finfo(total.dtype).eps ** 0.5
    if (total[:, ends] - reference).abs().sum() > tolerance * reference.abs().sum():
        warnings.warn(
            "per-example gradient norms: the layer-wise computation disagreed with per-example autograd on "
            f"layers {names} (a layer whose rows do not follow the batch, or whose weights are also used "
            "outside its forward); using per-example autograd for all parameters.",
            stacklevel=2,
        )
        return _generic_norms(fm, list(fm.names), inputs, cotangents, like, chunk_size)
    if checks is not None and key is not None:
        checks.add(key)
    return total
