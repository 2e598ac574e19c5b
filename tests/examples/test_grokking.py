"""``examples/grokking.py``, shortened: memorisation first, the jump in validation accuracy much later, with
the weight matrices losing stable rank and their top singular vectors coming to rest.

The full example trains on 30 % of the p = 59 pairs for 6000 steps (validation accuracy 50 % near step 2700).
Here the training fraction is 40 %, which groks sooner, and 1500 steps, so the whole transition fits in a
short run. Over seeds 0-4 (reference machine): train accuracy 100 % at step 32-34, validation accuracy 0.000
at the first validation (step 50), 50 % at steps 700-850, 1.000 at the end; the mean stable rank ends at
0.56-0.70 of its initial value; the median rotation of the last five measurements is at most 0.001
(embedding), 0.047 (hidden layer) and 0.011 (read-out), against at least 0.12, 0.80 and 0.74 in the first
five. The NTK alignment between examples (``alignment_offdiagonal``, on the example's batch of 8 labels × 4
held-out pairs) is −0.058 to −0.007 at steps 0 and 250 (memorised, validation accuracy ≤ 0.002) and
+0.079 to +0.171 at the end, 0.11-0.23 above its first value (seeds 0-4:
``python examples/grokking.py --train-fraction 0.4 --steps 1500 --seed N``). The tolerances below leave
room around those ranges. The plain alignment stays flat, so only its logging is checked.

The values are read back from the TensorBoard event files with the tests' own reader, not the example's.
"""

from __future__ import annotations

import math
import statistics

import pytest
from spectral_testing.examples import assert_png_figure, load_example
from spectral_testing.log_readers import read_tensorboard_scalars

STEPS, VAL_EVERY, WEIGHTS_EVERY, NTK_EVERY = 1500, 50, 50, 250
LAYERS = ("embed.weight", "hidden.weight", "readout.weight")


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One shortened run of the example's ``main``: its scalars and the PNG path."""
    root = tmp_path_factory.mktemp("grokking")
    log_dir, png = root / "runs", root / "plot" / "grokking.png"
    argv = ["--train-fraction", "0.4", "--steps", str(STEPS), "--val-every", str(VAL_EVERY)]
    argv += ["--weights-every", str(WEIGHTS_EVERY), "--ntk-every", str(NTK_EVERY)]
    assert load_example("grokking").main([*argv, "--log-dir", str(log_dir), "--plot", str(png)]) == 0
    return read_tensorboard_scalars(log_dir), png


def first_step(series, threshold):
    return next(step for step, value in series if value >= threshold)


@pytest.mark.slow
def test_train_accuracy_saturates_long_before_validation_accuracy_jumps(short_run):
    scalars, _ = short_run
    train_acc, val_acc = scalars["train_acc"], scalars["val_acc"]
    assert len(train_acc) == STEPS and len(val_acc) == STEPS // VAL_EVERY
    fitted = first_step(train_acc, 1.0)
    # Memorisation: the training set is fitted within a hundred steps, and at the first validation after
    # that the held-out pairs are still at chance (1/59) or below.
    assert fitted <= 100, fitted
    first_val_step, first_val = next((step, value) for step, value in val_acc if step >= fitted)
    assert first_val < 0.05, (first_val_step, first_val)
    # Grokking: validation accuracy passes 50 % only many times later, and ends near 100 %.
    grokked = first_step(val_acc, 0.5)
    assert grokked >= 10 * max(fitted, first_val_step), (fitted, grokked)
    assert val_acc[-1][1] > 0.95, val_acc[-1]


@pytest.mark.slow
def test_stable_rank_falls_and_singular_vectors_stop_rotating(short_run):
    scalars, _ = short_run
    mean_rank = scalars["spectral/weights/mean_stable_rank"]
    assert [step for step, _ in mean_rank] == list(range(0, STEPS + 1, WEIGHTS_EVERY))
    # Weight decay pulls the matrices towards low rank as the network generalises.
    assert mean_rank[-1][1] < 0.8 * mean_rank[0][1], (mean_rank[0], mean_rank[-1])
    for layer in LAYERS:
        rotation = [value for _, value in scalars[f"spectral/weights/{layer}/rotation"]]
        # The top singular subspace turns fast while the network memorises, and hardly at all at the end.
        assert statistics.median(rotation[-5:]) < 0.1 * max(rotation[:5]), (
            layer,
            rotation[:5],
            rotation[-5:],
        )


@pytest.mark.slow
def test_ntk_alignment_between_examples_rises_as_the_network_generalises(short_run):
    scalars, _ = short_run
    steps, alignment = zip(*scalars["spectral/ntk/alignment"])
    assert list(steps) == list(range(0, STEPS + 1, NTK_EVERY))
    assert all(0 < value < 1 and math.isfinite(value) for value in alignment), alignment
    measured = dict(scalars["spectral/ntk/alignment_offdiagonal"])
    assert sorted(measured) == list(range(0, STEPS + 1, NTK_EVERY))
    # Memorised but not generalising (step 250): held-out pairs with equal sums are no more alike than others.
    assert measured[0] < 0.02 and measured[NTK_EVERY] < 0.02, measured
    # Grokked: they are, clearly.
    assert measured[STEPS] > 0.05 and measured[STEPS] - measured[0] > 0.08, measured


@pytest.mark.slow
def test_plot_is_written(short_run):
    assert_png_figure(short_run[1])


def test_bad_arguments_are_rejected():
    example = load_example("grokking")
    bad = (["--train-fraction", "1.0"], ["--steps", "0"], ["--lr", "0"], ["--threads", "-1"])
    too_many = (["--ntk-labels", "60"], ["--ntk-labels", "20", "--ntk-per-label", "4"])  # > p; 80 · 59 rows
    for argv in (*bad, *too_many):
        with pytest.raises(SystemExit):
            example.main(argv)
    with pytest.raises(ValueError, match="train_fraction"):
        example.modular_addition(5, 0.01)
    _, held_out = example.modular_addition(5, 0.5)
    with pytest.raises(ValueError, match="per_label"):
        example.label_balanced(held_out, 5, 10)  # 13 held-out pairs: no label has 10


def test_label_balanced_batch():
    example = load_example("grokking")
    _, held_out = example.modular_addition(11, 0.3)
    pairs, labels = example.label_balanced(held_out, 3, 2)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ((pairs[:, 0] + pairs[:, 1]) % 11).tolist() == labels.tolist()
