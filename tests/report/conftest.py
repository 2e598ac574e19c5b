"""The two real runs and their report, built once per session for the report tests that read them."""

from __future__ import annotations

from pathlib import Path

import pytest
from spectral_testing.report_runs import LEARNING_RATES, fit, monitors

from lightning_spectral.report import build_report


@pytest.fixture(scope="session")
def run_dirs(tmp_path_factory) -> list[Path]:
    """The first run by its parent folder (event files found below it), the second by its version folder."""
    root = tmp_path_factory.mktemp("runs")
    dirs = [fit(root, name, monitors(), lr) for name, lr in LEARNING_RATES.items()]
    return [dirs[0].parent, dirs[1]]


@pytest.fixture(scope="session")
def report(run_dirs, tmp_path_factory) -> Path:
    return build_report(run_dirs, tmp_path_factory.mktemp("report") / "out", progress=False)
