"""Property-based: any value of any scalar constructor argument is either accepted or refused with a
``ValueError`` / ``TypeError`` that names the argument, for every public callback."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning_spectral.callbacks import (
    HessianEigenMonitor,
    NTKTraceMonitor,
    SpectralEarlyStopping,
    WeightSpectrumMonitor,
)

ANY_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "exact", "LA", "SA", "LM", "eval", "train", "above", "below", "stop", "lr"]),
)

# SpectralEarlyStopping needs its `monitor` and a criterion; the monitors need nothing.
REQUIRED = {SpectralEarlyStopping: {"monitor": "spectral/hessian/lambda_1", "threshold": 1.0}}


def scalar_arguments(cls):
    """Constructor arguments whose default is a plain scalar (or None): the ones a YAML config sets."""
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        default = parameter.default
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if default is None or isinstance(default, (bool, int, float, str)):
            yield name


CASES = [
    (cls, name)
    for cls in REQUIRED.keys() | {HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor}
    for name in scalar_arguments(cls)
]


@pytest.mark.parametrize(
    "cls, name", sorted(CASES, key=lambda c: (c[0].__name__, c[1])), ids=lambda v: getattr(v, "__name__", v)
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=ANY_SCALAR)
def test_any_value_is_accepted_or_refused_by_name(cls, name, value):
    kwargs = {**REQUIRED.get(cls, {}), name: value}
    try:
        cls(**kwargs)
    except (ValueError, TypeError) as error:
        assert f"`{name}`" in str(error), (name, value, str(error))


# ---------------------------------------------------------------------------------------------- functional API
def _functional_calls():
    import torch
    from torch import nn

    from lightning_spectral.functional import hessian_eigenvalues, ntk_trace, weight_spectrum

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(5, 3), torch.randn(5, 2)

    def loss(m, batch):
        return ((m(batch[0]) - batch[1]) ** 2).mean()

    weight = torch.randn(6, 4)
    return {
        "weight_spectrum": (
            lambda **kw: weight_spectrum(weight, **kw),
            ("k", "method", "num_oversamples", "num_power_iterations"),
        ),
        "ntk_trace": (lambda **kw: ntk_trace(model, x, **kw), ("method", "num_probes", "chunk_size")),
        "hessian_eigenvalues": (
            lambda **kw: hessian_eigenvalues(model, loss, (x, y), **kw),
            ("k", "tol", "max_matvecs", "which", "eigenvalue_tol"),
        ),
    }


FUNCTIONAL = _functional_calls()


@pytest.mark.parametrize(
    "function, name", [(f, n) for f, (_, names) in FUNCTIONAL.items() for n in names], ids=str
)
@settings(max_examples=25, deadline=None)
@given(value=ANY_SCALAR)
def test_functional_arguments_are_accepted_or_refused_by_name(function, name, value):
    call, _ = FUNCTIONAL[function]
    try:
        call(**{name: value})
    except (ValueError, TypeError) as error:
        assert f"`{name}`" in str(error), (name, value, str(error))
