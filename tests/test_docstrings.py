"""The docstrings are the API reference (issue #25): every public name has the Google-style sections the
reference renders, its examples are Python, and its reST is balanced."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import textwrap

import pytest

from lightning_spectral._internal.public_api import PUBLIC_PACKAGES

PACKAGES = list(PUBLIC_PACKAGES)


def _public_objects() -> dict[str, object]:
    found: dict[str, object] = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and getattr(obj, "__module__", "").startswith("lightning_spectral"):
                found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return found


PUBLIC = _public_objects()


def _is_record(cls: type) -> bool:
    """A result type: a dataclass or a NamedTuple, documented by ``Attributes:``."""
    return dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields"))


def _public_methods(cls: type) -> dict[str, object]:
    methods = {}
    for name, value in vars(cls).items():
        if name.startswith("_") or isinstance(value, property):
            continue
        function = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if not inspect.isfunction(function) or getattr(function, "__override__", False):
            continue  # Lightning hooks (@override) take Lightning's documentation
        methods[f"{cls.__module__}.{cls.__qualname__}.{name}"] = function
    return methods


METHODS = {
    name: method
    for obj in PUBLIC.values()
    if inspect.isclass(obj) and not issubclass(obj, BaseException)
    for name, method in _public_methods(obj).items()
}


def _sections(doc: str) -> set[str]:
    return set(re.findall(r"^(Args|Returns|Yields|Raises|Example|Examples|Attributes):{1,2}\s*$", doc, re.M))


def _parameters(function: object) -> list[str]:
    skip = {"self", "cls"}
    return [name for name in inspect.signature(function).parameters if name not in skip]


def _returns_something(function: object) -> bool:
    annotation = inspect.signature(function).return_annotation
    return annotation not in (None, "None", inspect.Signature.empty)


def _missing_sections(obj: object, *, example: bool) -> list[str]:
    """The sections ``obj``'s docstring lacks: ``Args`` for parameters, ``Returns`` for a result,
    ``Attributes`` for a result type, ``Example`` when asked for."""
    doc = inspect.getdoc(obj) or ""
    assert doc, "no docstring"
    sections = _sections(doc)
    missing = ["Example"] if example and not sections & {"Example", "Examples"} else []
    if inspect.isclass(obj) and _is_record(obj):
        return missing + ([] if sections & {"Attributes", "Args"} else ["Attributes"])
    if _parameters(obj) and "Args" not in sections:
        missing.append("Args")
    if not inspect.isclass(obj) and _returns_something(obj) and not sections & {"Returns", "Yields"}:
        missing.append("Returns")
    return missing


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_has_its_sections(name):
    obj = PUBLIC[name]
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        assert inspect.getdoc(obj), f"{name} has no docstring"
        return
    missing = _missing_sections(obj, example=True)
    assert not missing, f"{name}: no {', '.join(missing)} section"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_public_method_documents_its_arguments_and_result(name):
    """A one-line docstring is enough for a method whose line says it all (``sum(tensor)``)."""
    method = METHODS[name]
    one_line = "\n" not in (inspect.getdoc(method) or "x").strip()
    missing = [] if one_line else _missing_sections(method, example=False)
    assert not missing, f"{name}: no {', '.join(missing)} section"


def _example_code(doc: str) -> list[str]:
    """The code of each ``Example`` section: doctest lines without prompts and outputs, or a literal block."""
    blocks = []
    for match in re.finditer(r"^(?:Example|Examples):{1,2}\s*\n((?:[ \t]*\n|[ \t]+.*\n?)+)", doc, re.M):
        block = textwrap.dedent(match.group(1))
        if ">>>" in block:
            lines = [
                line[4:] for line in block.splitlines() if line.startswith((">>> ", "... ", ">>>", "..."))
            ]
            lines = [line for line in lines if line.strip() != "..."]
        else:
            lines = block.splitlines()
        blocks.append(textwrap.dedent("\n".join(lines)))
    return blocks


@pytest.mark.parametrize("name", sorted({**PUBLIC, **METHODS}))
def test_examples_are_python_and_rest_is_balanced(name):
    doc = inspect.getdoc({**PUBLIC, **METHODS}[name]) or ""
    for code in _example_code(doc):
        ast.parse(code)  # a SyntaxError names the example that is not Python
    assert doc.count("``") % 2 == 0, f"{name}: unbalanced ``literal``"
    for match in re.finditer(r"^( *)\.\. math::[ \t]*\n(.*)\n(.*)", doc, re.M):
        indent, blank, body = match.groups()
        assert not blank.strip(), f"{name}: no blank line after `.. math::`"
        assert body.startswith(indent + " ") and body.strip(), f"{name}: `.. math::` body not indented"


def test_the_checks_see_the_public_api():
    """The control of the tests above: they do look at the monitors, estimators and their methods."""
    assert {"HessianEigenMonitor", "hessian_eigenvalues", "lanczos", "build_report"} <= {
        name.rsplit(".", 1)[-1] for name in PUBLIC
    }
    assert any(name.endswith("HessianOperator.matvec") for name in METHODS)
    assert _sections("Args:\n    x: y\n\nReturns:\n    z\n") == {"Args", "Returns"}
    assert _example_code("Example::\n\n    f(1)\n") == ["f(1)"]
    assert "math" in inspect.getdoc(importlib.import_module("lightning_spectral.linalg").lanczos)
    with pytest.raises(SyntaxError):
        ast.parse(_example_code("Example:\n    >>> f(1\n")[0])


def _all_docstrings() -> dict[str, object]:
    import pkgutil

    import lightning_spectral

    found: dict[str, object] = {**PUBLIC, **METHODS}
    for info in pkgutil.walk_packages(lightning_spectral.__path__, prefix="lightning_spectral."):
        if not info.name.endswith("__main__"):
            found[f"module {info.name}"] = importlib.import_module(info.name)
    return found


def test_every_docstring_renders_as_valid_rest():
    """What autodoc + napoleon make of each docstring parses without a docutils warning (the site's
    ``sphinx-build -W`` fails on those); needs Sphinx (the ``docs`` extra)."""
    import io

    pytest.importorskip("sphinx")
    from docutils.core import publish_doctree
    from docutils.parsers.rst import roles
    from sphinx.ext.napoleon import Config
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    def literal_role(name, rawtext, text, lineno, inliner, options=None, content=None):
        from docutils import nodes

        return [nodes.literal(rawtext, text)], []

    for role in ("func", "class", "meth", "mod", "data", "attr", "exc", "obj", "ref"):
        roles.register_local_role(role, literal_role)  # Sphinx's cross-reference roles, as plain literals
    config = Config(napoleon_use_param=True, napoleon_use_rtype=True, napoleon_use_ivar=True)
    failures = {}
    for name, obj in sorted(_all_docstrings().items()):
        kind = "class" if inspect.isclass(obj) else "function"
        rst = str(GoogleDocstring(inspect.getdoc(obj) or "", config, what=kind))
        warnings_out = io.StringIO()
        publish_doctree(rst, settings_overrides={"warning_stream": warnings_out, "report_level": 2})
        if warnings_out.getvalue():
            failures[name] = warnings_out.getvalue()
    assert not failures, "\n".join(f"{name}: {message}" for name, message in failures.items())
    broken = "Args:\n    x: a ``literal\n"  # the control: an unbalanced literal is reported
    out = io.StringIO()
    publish_doctree(str(GoogleDocstring(broken, config)), settings_overrides={"warning_stream": out})
    assert "Inline literal" in out.getvalue()
