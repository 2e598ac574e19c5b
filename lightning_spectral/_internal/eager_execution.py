"""Measurements run ``torch.compile``d code eagerly: exact, no double-backward error, no recompilation.

A model trained with ``torch.compile`` (``torch.compile(net)``, ``module.compile()`` or
``trainer.fit(torch.compile(lightning_module))``) reaches the monitors as compiled code. Measuring through it
goes wrong three ways:

- the Hessian's double-backward products fail: AOTAutograd, behind every ``torch.compile`` backend that
  trains, raises ``RuntimeError: torch.compile with aot_autograd does not currently support double backward``;
- a measurement in eval mode, with ``requires_grad`` changed, under ``torch.func`` transforms or with other
  precision switches breaks Dynamo's guards, so the measurement compiles the model again (seconds to minutes
  with Inductor, each time a new combination appears) and can exhaust the recompile limit
  (``torch._dynamo.config.recompile_limit``), after which *training* itself falls back to eager code;
- compiled kernels (fused, reordered) round differently from the operations the model spells out.

:func:`compiled_code_runs_eagerly` runs the body with ``torch.compiler.set_stance("force_eager")``: every
compiled function and module executes its original Python code, nothing is compiled or recompiled, the
cache of compiled graphs training uses is left as it was, and the stance in force before (the user's own,
if any) comes back on exit. The numbers are those of the uncompiled model. ``set_stance`` exists from
PyTorch 2.6; on older versions the body runs as is (compiled code stays compiled there, so double-backward
Hessian products of a compiled model fail; ``hvp_method="forward_over_reverse"`` works). Entering costs a
few microseconds; before anything has imported ``torch._dynamo`` (which ``torch.compile`` does) nothing can be
compiled and the context does nothing, so an uncompiled script does not pay for that import.

The estimators of :mod:`lightning_spectral.functional` evaluate the model inside it (the Hessian operator's
loss, the NTK's functional model), so they take compiled models as they are; every monitor's measurement goes
through them.

Example::

    >>> import torch
    >>> double = torch.compile(lambda x: 2 * x, backend="eager")
    >>> with compiled_code_runs_eagerly():
    ...     double(torch.ones(2))
    tensor([2., 2.])
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch

__all__ = ["compiled_code_runs_eagerly", "eager_stance_available"]


def eager_stance_available() -> bool:
    """Whether this PyTorch has ``torch.compiler.set_stance`` (2.6 and later)."""
    return callable(getattr(getattr(torch, "compiler", None), "set_stance", None))


@contextlib.contextmanager
def compiled_code_runs_eagerly() -> Iterator[None]:
    """Run ``torch.compile``d code in the body eagerly (see the module docstring); restore the stance on exit."""
    if "torch._dynamo" not in sys.modules or not eager_stance_available():  # nothing compiled / no stance
        yield
        return
    with torch.compiler.set_stance("force_eager"):
        yield
