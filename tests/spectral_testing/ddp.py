"""Running a two-process CPU DDP script from a test (``strategy="ddp"`` relaunches ``sys.argv`` for rank 1,
which a pytest process cannot survive, so DDP fits run as scripts)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

DISTRIBUTED = Path(__file__).resolve().parents[1] / "distributed"
"""``tests/distributed/``: the two-process scripts (run by path) and their tests."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ddp_script(script: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``python script *args`` with a free ``MASTER_PORT``; fail the test if it takes over ``timeout`` s
    (ranks out of step), killing the whole process group. Returns the finished process (stdout + stderr)."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env.pop("LOCAL_RANK", None)
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # rank 1 is a child of this process: one group to end on a timeout
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the DDP run did not finish in {timeout:.0f} s (ranks out of step?):\n{output[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, output, None)


def load_script(script: Path) -> ModuleType:
    """The ``script`` imported as a module (its models and constants; its ``__main__`` part does not run)."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
