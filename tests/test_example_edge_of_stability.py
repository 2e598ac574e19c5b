"""``examples/edge_of_stability.py``, shortened: full-batch GD at η = 0.5 sharpens to 2/η and stays there.

The full example (three step sizes, 1000 steps) makes the README figure; here one step size and 400 steps,
enough for the digits MLP to rise from λ_max ≈ 2.3 to the limit 2/η = 4 (by step ~100), overshoot, and
settle (on the reference machine: λ_max = 2.32 at step 0, peak 5.76 at step 150, then within 11% of 2/η from
step 200 on, within 9.4% over the last quarter, 4.13 at step 400). The values are read back from the
TensorBoard event files with the tests' own reader, not the example's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from spectral_testing.log_readers import read_tensorboard_scalars

pytest.importorskip("sklearn", reason="the example trains on scikit-learn's digits (the `dev` extra)")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "edge_of_stability.py"
LR, STEPS, EVERY = 0.5, 400, 10


def load_example():
    spec = importlib.util.spec_from_file_location("edge_of_stability_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One shortened run of the example's ``main``: its log directory and the PNG path."""
    root = tmp_path_factory.mktemp("edge_of_stability")
    log_dir, png = root / "runs", root / "plot" / "eos.png"
    argv = ["--learning-rates", str(LR), "--steps", str(STEPS), "--every-n-steps", str(EVERY)]
    assert load_example().main([*argv, "--log-dir", str(log_dir), "--plot", str(png)]) == 0
    return log_dir, png


def test_sharpness_rises_to_two_over_eta_and_hovers_there(short_run):
    log_dir, _ = short_run
    scalars = read_tensorboard_scalars(log_dir / f"lr={LR:g}")
    steps, sharpness = zip(*scalars["spectral/hessian/lambda_1"])
    assert list(steps) == list(range(0, STEPS + 1, EVERY))
    limit = 2 / LR
    # Progressive sharpening: the initial model is far below the limit, and λ_max climbs to it.
    assert sharpness[0] < 0.7 * limit
    assert max(sharpness) > limit
    assert sharpness[-1] > 1.5 * sharpness[0]
    # Edge of stability: at the end λ_max is within 15% of 2/η, and has stayed there over the last quarter.
    assert abs(sharpness[-1] / limit - 1) < 0.15, sharpness[-1]
    last_quarter = sharpness[-len(sharpness) // 4 :]
    assert all(abs(value / limit - 1) < 0.15 for value in last_quarter), last_quarter
    # The monitor's own indicator agrees: eos_ratio = η·λ_max/2 for plain SGD.
    _, ratios = zip(*scalars["spectral/hessian/eos_ratio"])
    assert ratios == pytest.approx([LR * value / 2 for value in sharpness], rel=1e-5)
    # Training still makes progress at the edge of stability (non-monotonically).
    _, losses = zip(*scalars["train_loss"])
    assert len(losses) >= STEPS - 1 and losses[-1] < losses[0] / 5


def test_plot_is_written(short_run):
    _, png = short_run
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_bad_arguments_are_rejected():
    example = load_example()
    for argv in (["--learning-rates", "-0.1"], ["--steps", "0"], ["--threads", "-1"]):
        with pytest.raises(SystemExit):
            example.main(argv)
    with pytest.raises(ValueError, match="num_examples"):
        example.digits_data(5)
