"""Renamed keywords and classes (issue #24, consistent names): every old name still works, warns with the new
name, and gives the same result as the new name; old and new together are a ``TypeError``."""

from __future__ import annotations

import importlib
import inspect
import re
import warnings

import pytest
import torch
from torch import nn

from lightning_spectral._internal.deprecation import renamed_attribute, renamed_keywords
from lightning_spectral.callbacks import HessianEigenMonitor, WeightSpectrumMonitor
from lightning_spectral.functional import hessian_eigenvalues, ntk_lambda_max, weight_spectra, weight_spectrum
from lightning_spectral.linalg import lanczos, project_out, randomized_svd


def _symmetric(dim: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return a + a.T


def _tiny_regression():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    batch = (torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64))
    return model, lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]), batch


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(3)


def _lanczos(**kw):
    a = _symmetric()
    return lanczos(lambda v: a @ v, 12, 2, dtype=torch.float64, generator=_seeded(), **kw).eigenvalues


def _randomized_svd(**kw):
    return randomized_svd(_symmetric(20), 3, generator=_seeded(), **kw).S


def _project_out(**kw):
    basis = torch.linalg.qr(_symmetric(6)[:, :2]).Q
    return project_out(torch.ones(6, dtype=torch.float64), basis, **kw)


def _hessian_eigenvalues(**kw):
    model, loss_fn, batch = _tiny_regression()
    return hessian_eigenvalues(model, loss_fn, batch, k=1, generator=_seeded(), **kw).eigenvalues


def _ntk_lambda_max(**kw):
    model, _, (inputs, _) = _tiny_regression()
    return ntk_lambda_max(model, inputs, tol=1e-12, generator=_seeded(), **kw).eigenvalues


def _weight_spectrum(**kw):
    return weight_spectrum(
        _symmetric(40), 3, method="randomized", tol=None, generator=_seeded(), **kw
    ).singular_values


def _weight_spectra(**kw):
    return weight_spectra([_symmetric(40)], 3, method="randomized", tol=None, generator=_seeded(), **kw)[
        0
    ].singular_values


def _weight_monitor(**kw):
    monitor = WeightSpectrumMonitor(**kw)
    return torch.tensor([monitor.num_power_iterations, monitor.num_oversamples])


def _hessian_monitor(**kw):
    monitor = HessianEigenMonitor(**kw)
    return torch.tensor(
        [
            monitor.max_matvecs,
            monitor.trace_num_matvecs,
            monitor.density_num_probes,
            monitor.density_num_steps,
        ]
    )


# (what is called, the old keywords, the same values under the new keywords); values differ from the defaults
KEYWORD_ALIASES = [
    (_lanczos, {"max_iter": 7}, {"max_matvecs": 7}),
    (_randomized_svd, {"n_iter": 0, "oversample": 1}, {"num_power_iterations": 0, "num_oversamples": 1}),
    (_project_out, {"passes": 1}, {"num_passes": 1}),
    (_hessian_eigenvalues, {"max_iter": 3}, {"max_matvecs": 3}),
    (_ntk_lambda_max, {"max_iter": 2}, {"max_matvecs": 2}),
    (_weight_spectrum, {"n_iter": 0, "oversample": 1}, {"num_power_iterations": 0, "num_oversamples": 1}),
    (_weight_spectra, {"n_iter": 0, "oversample": 1}, {"num_power_iterations": 0, "num_oversamples": 1}),
    (_weight_monitor, {"n_iter": 5, "oversample": 4}, {"num_power_iterations": 5, "num_oversamples": 4}),
    (
        _hessian_monitor,
        {"max_iter": 9, "trace_matvecs": 12, "density_probes": 3, "density_steps": 11},
        {"max_matvecs": 9, "trace_num_matvecs": 12, "density_num_probes": 3, "density_num_steps": 11},
    ),
]


@pytest.mark.parametrize("call, old, new", KEYWORD_ALIASES, ids=lambda x: getattr(x, "__name__", ""))
def test_an_old_keyword_warns_with_its_new_name_and_gives_the_same_result(call, old, new):
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "error", ".*is deprecated, use", DeprecationWarning
        )  # the new names do not warn
        expected = call(**new)
    with pytest.warns(DeprecationWarning) as record:
        got = call(**old)
    messages = " ".join(str(w.message) for w in record if issubclass(w.category, DeprecationWarning))
    for old_name, new_name in zip(old, new):
        assert f"`{old_name}` is deprecated, use `{new_name}`" in messages
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # the defaults differ from these values, so the old keyword really reached the function
    assert not torch.equal(call(), expected)


@pytest.mark.parametrize("call, old, new", KEYWORD_ALIASES, ids=lambda x: getattr(x, "__name__", ""))
def test_an_old_and_a_new_keyword_together_are_a_type_error(call, old, new):
    old_name, new_name = next(iter(old)), next(iter(new))
    with pytest.raises(TypeError, match=re.escape(f"`{old_name}` and `{new_name}`")):
        call(**{old_name: old[old_name], new_name: new[new_name]})


@pytest.mark.parametrize(
    "function",
    [
        lanczos,
        randomized_svd,
        project_out,
        hessian_eigenvalues,
        ntk_lambda_max,
        weight_spectrum,
        weight_spectra,
    ],
)
def test_the_signature_shows_the_new_names_only(function):
    names = set(inspect.signature(function).parameters)
    assert not names & {"max_iter", "n_iter", "oversample", "passes"}
    assert names & {"max_matvecs", "num_power_iterations", "num_passes"}


def test_the_monitors_signatures_and_configs_show_the_new_names_only():
    hessian = set(inspect.signature(HessianEigenMonitor).parameters)
    assert {"max_matvecs", "trace_num_matvecs", "density_num_probes", "density_num_steps"} <= hessian
    assert not hessian & {"max_iter", "trace_matvecs", "density_probes", "density_steps"}
    config = WeightSpectrumMonitor(num_power_iterations=4).config()
    assert config["num_power_iterations"] == 4 and "n_iter" not in config


CLASS_ALIASES = [
    ("lightning_spectral.linalg", "LanczosResult", "Eigenpairs"),
    ("lightning_spectral.linalg.results", "LanczosResult", "Eigenpairs"),
    ("lightning_spectral.linalg", "SVDResult", "SVDFactors"),
    ("lightning_spectral.linalg.results", "SVDResult", "SVDFactors"),
    ("lightning_spectral", "HessianEigenResult", "HessianEigenpairs"),
    ("lightning_spectral.functional", "HessianEigenResult", "HessianEigenpairs"),
    ("lightning_spectral.functional.hessian", "HessianEigenResult", "HessianEigenpairs"),
    ("lightning_spectral.functional.hessian.spectrum", "HessianEigenResult", "HessianEigenpairs"),
]


@pytest.mark.parametrize("module, old, new", CLASS_ALIASES)
def test_an_old_class_name_imports_the_renamed_class_with_a_warning(module, old, new):
    renamed = getattr(importlib.import_module(module), new)
    namespace: dict = {}
    with pytest.warns(
        DeprecationWarning, match=re.escape(f"{module}.{old}` is deprecated, use `{module}.{new}`")
    ):
        exec(f"from {module} import {old}", namespace)
    assert namespace[old] is renamed
    assert old not in importlib.import_module(module).__all__


def test_a_result_is_an_instance_of_the_old_class_name():
    with pytest.warns(DeprecationWarning):
        from lightning_spectral.linalg import LanczosResult
    a = _symmetric()
    assert isinstance(lanczos(lambda v: a @ v, 12, 1, dtype=torch.float64), LanczosResult)


def test_the_helpers_reject_what_they_do_not_know():
    with pytest.raises(AttributeError, match="no_such_name"):
        renamed_attribute("lightning_spectral.linalg", "no_such_name", {"LanczosResult": "Eigenpairs"})

    @renamed_keywords(old="new")
    def f(*, new=0):
        return new

    with pytest.raises(TypeError, match="unexpected keyword argument 'other'"):
        f(other=1)  # an unknown keyword is the wrapped function's own TypeError
    assert f(new=2) == 2
