"""Full float32 precision for a measurement, whatever the training run chose for speed.

Training often trades float32 precision for speed: Ampere and later GPUs run float32 convolutions in
TensorFloat-32 by default (``torch.backends.cudnn.conv.fp32_precision == "tf32"``), and Lightning itself
suggests ``torch.set_float32_matmul_precision("high")`` (TF32 matrix products on CUDA, bfloat16 passes in
oneDNN on CPUs that have them). TF32 keeps 10 bits of mantissa, so each product carries a relative error of up
to about ``2⁻¹¹ ≈ 5·10⁻⁴``. Measured on an NVIDIA H200 (``python -m benchmarks.tf32_effect``;
``benchmarks/RESULTS.md``, section *CUDA*): the top-3 Hessian eigenvalues of a 1.1 M-parameter CNN by Lanczos
were off by 0.8–3.7·10⁻⁵ relative with TF32 on and by 0.02–2.5·10⁻⁷ in IEEE float32 on the same GPU: errors
a hundred times larger or more, which no ``tol`` gets under, and which depend on the kernels the GPU picks.

:func:`full_float32_precision` sets every float32 precision switch PyTorch has to IEEE float32 for the body
and restores each exactly on exit, so training goes on with the precision it chose. PyTorch ≥ 2.9 has one
``fp32_precision`` switch per backend and operator (``torch.backends.cuda.matmul``, ``cudnn.conv``,
``cudnn.rnn``, ``mkldnn.matmul``, ``mkldnn.conv``, ``mkldnn.rnn``) and raises when the legacy ``allow_tf32``
flags are mixed with them, so there the body gets ``torch.set_float32_matmul_precision("highest")`` and every
switch set to ``"ieee"``; older versions get ``torch.set_float32_matmul_precision("highest")`` and
``torch.backends.cudnn.allow_tf32 = False``.

Every monitor measures inside it (through ``preserved_training_state``). Functional users can wrap their
own calls::

    with full_float32_precision():
        result = hessian_eigenvalues(model, loss_fn, batch, k=3)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

#: The (backend, operator) pairs of PyTorch ≥ 2.9's per-operator ``fp32_precision`` switches.
PRECISION_SWITCHES = (
    ("cuda", "matmul"),
    ("cudnn", "conv"),
    ("cudnn", "rnn"),
    ("mkldnn", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "rnn"),
)
#: The value of those switches that means IEEE float32 arithmetic.
IEEE = "ieee"


def precision_switches() -> list[Any]:
    """The per-operator ``fp32_precision`` switch objects this PyTorch has (empty before 2.9)."""
    switches = []
    for backend, operator in PRECISION_SWITCHES:
        switch = getattr(getattr(torch.backends, backend, None), operator, None)
        if switch is not None and hasattr(switch, "fp32_precision"):
            switches.append(switch)
    return switches


def _matmul_precision() -> str | None:
    """``torch.get_float32_matmul_precision()``, or ``None`` where PyTorch refuses to answer (2.9-2.11 raise
    when the switches were set through both the legacy and the per-operator API)."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


@contextlib.contextmanager
def full_float32_precision() -> Iterator[None]:
    """Run the body with IEEE float32 matrix products and convolutions; restore every switch on exit."""
    switches = precision_switches()
    saved_switches = [switch.fp32_precision for switch in switches]
    saved_matmul = _matmul_precision()
    saved_cudnn = None if switches else torch.backends.cudnn.allow_tf32
    try:
        # The global call first: it keeps PyTorch's legacy matmul setting and the per-operator switches in
        # agreement, so code that asks torch.get_float32_matmul_precision() inside the body gets "highest".
        if saved_matmul is not None:
            torch.set_float32_matmul_precision("highest")
        for switch in switches:
            switch.fp32_precision = IEEE
        if saved_cudnn is not None:
            torch.backends.cudnn.allow_tf32 = False
        yield
    finally:
        if saved_matmul is not None:
            torch.set_float32_matmul_precision(saved_matmul)
        for switch, value in zip(switches, saved_switches):
            switch.fp32_precision = value
        if saved_cudnn is not None:
            torch.backends.cudnn.allow_tf32 = saved_cudnn
