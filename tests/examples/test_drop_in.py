"""``examples/drop_in.py``, shortened to two epochs: the spectral keys of every monitor land in the
TensorBoard event file next to the module's own ``train_loss`` / ``val_acc``, on the monitors' schedule; the
early stopping criterion fires when the step size is past the edge of stability."""

from __future__ import annotations

import math
import re

import pytest
from spectral_testing.examples import load_example
from spectral_testing.log_readers import read_tensorboard_scalars

pytest.importorskip("sklearn", reason="the example trains on scikit-learn's digits (the `dev` extra)")

EPOCHS, EVERY = 2, 10
STEPS = EPOCHS * 23  # 1437 training digits in batches of 64
LAYERS = ("features.0.weight", "features.2.weight", "classifier.1.weight", "classifier.3.weight")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One two-epoch run of the example's ``main``; returns its log directory."""
    log_dir = tmp_path_factory.mktemp("drop_in") / "runs"
    argv = ["--max-epochs", str(EPOCHS), "--every-n-steps", str(EVERY), "--log-dir", str(log_dir)]
    assert load_example("drop_in").main(argv) == 0
    return log_dir


def test_spectral_keys_land_in_the_tensorboard_event_file(short_run):
    event_files = list(short_run.rglob("events.out.tfevents.*"))
    assert len(event_files) == 1, event_files
    scalars = read_tensorboard_scalars(short_run)
    measured = list(range(0, STEPS + 1, EVERY))
    expected = [
        "spectral/hessian/lambda_1",
        "spectral/hessian/eos_ratio",
        "spectral/hessian/batch_sharpness",
        "spectral/ntk/trace",
        "spectral/ntk/sgd_stability",
        "spectral/weights/mean_stable_rank",
        "spectral/weights/max_sigma_max",
        *(
            f"spectral/weights/{layer}/{metric}"
            for layer in LAYERS
            for metric in ("sigma_max", "stable_rank")
        ),
    ]
    for key in expected:
        steps, values = zip(*scalars[key])
        assert list(steps) == measured, key
        assert all(math.isfinite(value) for value in values), key
    for layer in LAYERS:  # rotation needs a previous measurement
        steps, _ = zip(*scalars[f"spectral/weights/{layer}/rotation"])
        assert list(steps) == measured[1:], layer
    # The module's own metrics are there too, untouched.
    assert len(scalars["train_loss"]) == STEPS
    assert len(scalars["val_acc"]) == EPOCHS
    # Plain SGD: eos_ratio = η·λ_max/2 with the example's default η = 0.1.
    _, sharpness = zip(*scalars["spectral/hessian/lambda_1"])
    _, ratios = zip(*scalars["spectral/hessian/eos_ratio"])
    assert ratios == pytest.approx([0.1 * value / 2 for value in sharpness], rel=1e-5)


def test_log_location_is_printed(tmp_path, capsys):
    log_dir = tmp_path / "runs"
    argv = ["--max-epochs", "1", "--every-n-steps", "100", "--log-dir", str(log_dir)]
    assert load_example("drop_in").main(argv) == 0
    out = capsys.readouterr().out
    (version_dir,) = log_dir.glob("digits_cnn/version_*")
    assert f"TensorBoard logs: {version_dir}" in out
    assert f"tensorboard --logdir {log_dir}" in out
    # every_n_steps=100 in 23 steps: step 0 only, where λ_max is far below 2/η
    assert "SpectralEarlyStopping did not fire: eos_ratio was above 1 at 0 of 1 measurements" in out


def test_early_stopping_fires_past_the_edge(tmp_path, capsys):
    """At η = 0.5 (2/η = 4) the sharpness passes 2/η within a few measurements and training stops."""
    argv = ["--lr", "0.5", "--max-epochs", "5", "--every-n-steps", "5", "--log-dir", str(tmp_path)]
    assert load_example("drop_in").main(argv) == 0
    out = capsys.readouterr().out
    assert "SpectralEarlyStopping[edge_of_stability]" in out and "Stopping training" in out
    steps = int(re.search(r"^(\d+) steps:", out, flags=re.MULTILINE).group(1))
    assert steps < 5 * 23, out


def test_bad_arguments_are_rejected():
    example = load_example("drop_in")
    for argv in (["--lr", "0"], ["--max-epochs", "0"], ["--threads", "-1"]):
        with pytest.raises(SystemExit):
            example.main(argv)
