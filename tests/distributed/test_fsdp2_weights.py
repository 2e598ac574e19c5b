"""The weight monitor under real two-process CPU FSDP2 (Lightning's ``ModelParallelStrategy`` with
``fully_shard``, gloo): every weight is a sharded ``DTensor``, gathered one matrix at a time.

Lightning's ``strategy="fsdp"`` (FSDP1) needs CUDA; ``ModelParallelStrategy`` runs on CPU, so this is the
sharded-parameter path that can be tested here. The logged spectra are compared with single-process ones of
the consolidated weights (the matrices of the final step, which is a measured step), to 1e-5 relative: the
same float32 matrices through the same exact SVD (every matrix here is small enough for the exact path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spectral_testing.consolidated_weights import assert_spectra_of_consolidated_weights
from spectral_testing.ddp import load_script, run_ddp_script

pytestmark = [pytest.mark.ddp, pytest.mark.slow]  # every test here runs (or shares) a two-process run

SCRIPT = Path(__file__).with_name("fsdp2_weights_script.py")


def run(mode: str, out: Path) -> list[dict]:
    process = run_ddp_script(SCRIPT, mode, str(out))
    assert process.returncode == 0, process.stdout[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp2")
    return out, run("measure", out)


def test_weights_are_sharded_dtensors_and_ranks_agree(measured):
    _, ranks = measured
    script = load_script(SCRIPT)
    for outcome in ranks:
        assert outcome["parameter_types"] == ["DTensor"]  # the monitor really met sharded parameters
        assert outcome["global_step"] == script.MAX_STEPS
    assert ranks[0]["metrics"].keys() == ranks[1]["metrics"].keys()
    for key, value in ranks[0]["metrics"].items():
        assert ranks[1]["metrics"][key] == value, key  # rank 0's numbers, broadcast


def test_logged_spectra_equal_single_process_spectra_of_the_whole_matrices(measured):
    out, ranks = measured
    assert_spectra_of_consolidated_weights(out, ranks[0]["metrics"])


def test_a_failure_between_two_gathers_ends_the_measurement_on_both_ranks(tmp_path):
    """Rank 0 raises between the gathers of the first and the second matrix; rank 1 must not wait in the next
    gather: both leave the measurement, disable the monitor (strict=False) and train to the end."""
    ranks = run("fail", tmp_path)
    script = load_script(SCRIPT)
    for r, outcome in enumerate(ranks):
        assert outcome["global_step"] == script.MAX_STEPS
        assert outcome["metrics"] == {}
        assert json.loads((tmp_path / f"disabled{r}.json").read_text()) is True
