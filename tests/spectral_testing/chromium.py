"""Headless Chromium for page renders (the report page, the docs site): a screenshot and the console lines."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def require_chromium() -> None:
    """Skip without Chromium; under CI (which installs it in ``.ci/run``) fail instead."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (CI installs it in .ci/run)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")


def chromium(page: Path, screenshot: Path, profile: Path, size: tuple[int, int] = (1200, 2000)) -> list[str]:
    """Render ``page`` headless into ``screenshot`` (``size`` = width, height); return Chromium's
    console-message lines (console messages and uncaught script errors)."""
    process = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={screenshot}",
            f"--window-size={size[0]},{size[1]}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return [line for line in process.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
