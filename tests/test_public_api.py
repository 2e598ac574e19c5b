"""The top-level exports of ``lightning_spectral`` and the import layering behind them."""

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_spectral
from lightning_spectral._internal.moved_modules import MOVED_MODULES


@pytest.mark.parametrize("name", lightning_spectral.__all__)
def test_every_exported_name_is_the_object_of_its_home_module(name):
    exported = getattr(lightning_spectral, name)
    home = importlib.import_module(lightning_spectral._EXPORTS[name])
    assert exported is getattr(home, name)
    assert name in home.__all__
    defining = importlib.import_module(exported.__module__)  # where the class or function is defined
    assert exported is getattr(defining, name)
    namespace: dict = {}
    exec(f"from lightning_spectral import {name}", namespace)
    assert namespace[name] is exported


def test_the_main_entry_points_are_exported():
    expected = {
        "HessianEigenMonitor",
        "NTKTraceMonitor",
        "WeightSpectrumMonitor",
        "SpectralEarlyStopping",
        "hessian_eigenvalues",
        "hessian_trace",
        "hessian_density",
        "ntk_trace",
        "weight_spectra",
    }
    assert expected <= set(lightning_spectral.__all__)
    assert len(set(lightning_spectral.__all__)) == len(lightning_spectral.__all__)
    assert expected <= set(dir(lightning_spectral))
    namespace: dict = {}
    exec("from lightning_spectral import *", namespace)
    assert set(lightning_spectral.__all__) <= set(namespace)


def test_type_checkers_see_the_same_names_as_all():
    """The ``if TYPE_CHECKING:`` imports (what mypy and IDEs read) name exactly ``__all__``."""
    tree = ast.parse(Path(lightning_spectral.__file__).read_text())
    (block,) = [
        n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING"
    ]
    imported = {
        (node.module, alias.name)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {(module, name) for name, module in lightning_spectral._EXPORTS.items()}


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        lightning_spectral.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from lightning_spectral import no_such_name", {})


@pytest.mark.parametrize(
    "module", ["lightning_spectral", "lightning_spectral.linalg", "lightning_spectral.functional"]
)
def test_importing_without_lightning(module):
    """The package, its numerical core and its estimators import without Lightning (a fresh interpreter)."""
    code = (
        f"import sys, {module}; "
        "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'lightning.pytorch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_a_monitor_from_the_top_level_imports_lightning():
    """The control for the test above: the same check does see Lightning once a monitor is imported."""
    code = (
        "import sys; from lightning_spectral import HessianEigenMonitor; "
        "print('pytorch_lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


@pytest.mark.parametrize("old, new", sorted(MOVED_MODULES.items()))
def test_a_moved_module_still_imports_from_its_old_path(old, new):
    """``import <old path>`` gives the module at its new path (the same object) and a DeprecationWarning naming
    it; the module keeps its own spec."""
    module = importlib.import_module(new)
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} moved to {new}")):
        old_module = importlib.import_module(old)
    assert old_module is module
    assert module.__spec__.name == new


def test_the_old_paths_are_the_modules_that_moved():
    """Each old path names no module of today's tree (it would shadow it), each new path one that exists."""
    for old, new in MOVED_MODULES.items():
        assert importlib.util.find_spec(new) is not None, new
        parent, _, leaf = old.rpartition(".")
        assert not (Path(importlib.import_module(parent).__file__).parent / f"{leaf}.py").exists(), old
