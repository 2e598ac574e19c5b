"""Loading a script of ``examples/`` as a module (the examples are not a package), so tests call its ``main``;
checking the figure it writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a fresh module named ``<name>_example``."""
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png_figure(path: Path, min_bytes: int = 10_000) -> None:
    """``path`` is a PNG file (its signature) large enough to hold a drawn figure, not an empty canvas."""
    data = Path(path).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > min_bytes, (path, len(data))
