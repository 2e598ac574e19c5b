"""``examples/edge_of_stability.py``, shortened: full-batch GD at η = 0.5 sharpens to 2/η and stays there;
SGD with batch size 8 keeps λ_max below 2/η while its batch sharpness approaches 2/η.

The full example (three step sizes, 1000 steps, and 6000 SGD steps) makes the README figure; here one step
size and 400 steps, enough for the digits MLP to rise from λ_max ≈ 2.3 to the limit 2/η = 4 (by step ~100),
overshoot, and settle (on the reference machine: λ_max = 2.32 at step 0, peak 5.76 at step 150, then within
11% of 2/η from step 200 on, within 9.4% over the last quarter, 4.13 at step 400).

The stochastic run is shortened from 6000 to 2000 steps at the example's η = 0.65 (2/η = 3.08), batch size 8,
measured every 100 steps. Over the last quarter of such runs with seeds 0-7 (reference machine), the batch
sharpness averaged 0.82-0.91 of 2/η and the full-batch λ_max 0.54-0.65 of 2/η; the tolerances below leave
room around those ranges. (λ_max and the batch sharpness start at 0.72-0.77 and 0.94-1.07 of 2/η, drop in
the first few hundred steps, and climb back.)

The full-batch Adam run is shortened from 1000 to 800 steps at η = 0.002: over seeds 0-4 (reference
machine) the preconditioned ``eos_ratio`` started at 0.06-0.10, reached 0.9 at steps 300-560 and stayed at
0.91-1.04 over the last quarter, while λ_max of the Hessian rose from 2.2 to 10.8-14.4 (5-13 % of it after
``eos_ratio`` first reached 0.9).

The values are read back from the TensorBoard event files with the tests' own reader, not the example's.

Full-batch NAdam on the edge-of-stability example's digits MLP: the preconditioned sharpness λ_1(D⁻¹H)
settles at the limit derived for NAdam's momentum schedule (``nadam_stability_limit``), ``eos_ratio`` ≈ 1,
where Adam's limit 38/η would put it near 0.1.

The limit is checked on a frozen quadratic in tests/functional/hessian/test_adaptive_preconditioners.py; this is
the training-dynamics check (Cohen et al. 2022 observe the same for Adam). On the reference machine, η = 0.002:
``eos_ratio`` 1.98 at step 50 (the overshoot), then 1.03-1.14 from step 100 to 400 (1.03-1.12 from step 200 on,
the range the test asserts to lie in 0.95-1.2), while the limit itself is about 1950, a tenth of Adam's 38/η.
"""

from __future__ import annotations

import pytest
import torch
from _common.example_fit import logged_fit
from spectral_testing.examples import assert_png_figure, load_example
from spectral_testing.log_readers import read_tensorboard_scalars

from lightning_spectral.callbacks import HessianEigenMonitor
from lightning_spectral.functional import adam_stability_limit

pytest.importorskip("sklearn", reason="the example trains on scikit-learn's digits (the `dev` extra)")

LR, STEPS, EVERY = 0.5, 400, 10
SGD_LR, SGD_BATCH, SGD_STEPS, SGD_EVERY = 0.65, 8, 2000, 100
ADAM_LR, ADAM_STEPS = 0.002, 800


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One shortened run of the example's ``main``: its log directory and the PNG path."""
    root = tmp_path_factory.mktemp("edge_of_stability")
    log_dir, png = root / "runs", root / "plot" / "eos.png"
    argv = ["--learning-rates", str(LR), "--steps", str(STEPS), "--every-n-steps", str(EVERY)]
    argv += ["--sgd-learning-rate", str(SGD_LR), "--sgd-batch-size", str(SGD_BATCH)]
    argv += ["--sgd-steps", str(SGD_STEPS), "--sgd-every-n-steps", str(SGD_EVERY)]
    argv += ["--adam-learning-rate", str(ADAM_LR), "--adam-steps", str(ADAM_STEPS)]
    assert load_example("edge_of_stability").main([*argv, "--log-dir", str(log_dir), "--plot", str(png)]) == 0
    return log_dir, png


@pytest.mark.slow
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


@pytest.mark.slow
def test_sgd_batch_sharpness_near_two_over_eta_while_lambda_max_stays_below(short_run):
    log_dir, _ = short_run
    scalars = read_tensorboard_scalars(log_dir / f"lr={SGD_LR:g}_batch={SGD_BATCH}")
    steps, sharpness = zip(*scalars["spectral/hessian/lambda_1"])
    batch_steps, batch_sharpness = zip(*scalars["spectral/hessian/batch_sharpness"])
    assert list(steps) == list(batch_steps) == list(range(0, SGD_STEPS + 1, SGD_EVERY))
    limit = 2 / SGD_LR
    quarter = len(steps) // 4
    mean_sharpness = sum(sharpness[-quarter:]) / quarter / limit
    mean_batch_sharpness = sum(batch_sharpness[-quarter:]) / quarter / limit
    # Edge of stochastic stability: the batch sharpness has come up to within 25% of 2/η (the mean over the
    # last quarter; 0.82-0.91 of 2/η over seeds 0-7, still creeping up: 0.88 after the full 6000 steps) ...
    assert abs(mean_batch_sharpness - 1) < 0.25, mean_batch_sharpness
    # ... while the full-batch λ_max stays well below it (0.54-0.65 over the seeds, no value above 0.67),
    assert mean_sharpness < 0.75, mean_sharpness
    assert all(value < 0.8 * limit for value in sharpness[-quarter:]), sharpness[-quarter:]
    # ... and below the batch sharpness: the curvature SGD steps along exceeds the full-batch one (ratio of
    # the means 1.34-1.58 over the seeds).
    assert mean_batch_sharpness > 1.2 * mean_sharpness, (mean_batch_sharpness, mean_sharpness)
    # The monitor's ratio is the same quantity over the plain-SGD limit.
    _, ratios = zip(*scalars["spectral/hessian/batch_sharpness_ratio"])
    assert ratios == pytest.approx([value / limit for value in batch_sharpness], rel=1e-5)


@pytest.mark.slow
def test_adam_preconditioned_sharpness_rises_to_its_limit_while_lambda_max_keeps_rising(short_run):
    """The adaptive edge of stability (Cohen et al. 2022): λ_1(D⁻¹H) settles at (2 + 2β₁)/((1 − β₁)η)."""
    log_dir, _ = short_run
    scalars = read_tensorboard_scalars(log_dir / f"adam_lr={ADAM_LR:g}")
    steps, ratios = zip(*scalars["spectral/hessian/eos_ratio"])
    _, preconditioned = zip(*scalars["spectral/hessian/preconditioned_lambda_1"])
    sharpness = dict(scalars["spectral/hessian/lambda_1"])
    assert list(steps) == list(range(EVERY, ADAM_STEPS + 1, EVERY))  # none at step 0: no moments yet
    limit = (2 + 2 * 0.9) / ((1 - 0.9) * ADAM_LR)  # 38/η
    assert ratios == pytest.approx([value / limit for value in preconditioned], rel=1e-5)
    # Far below the limit at first, then up to it ...
    assert ratios[0] < 0.2, ratios[0]
    reached = next(step for step, ratio in zip(steps, ratios) if ratio >= 0.9)
    # ... and hovering there over the last quarter (0.91-1.04 over seeds 0-4),
    last_quarter = ratios[-len(ratios) // 4 :]
    assert all(0.8 < ratio < 1.15 for ratio in last_quarter), last_quarter
    # while the Hessian's own λ_max keeps rising past the point where the preconditioned one got there.
    assert sharpness[ADAM_STEPS] > 4 * sharpness[0]
    assert sharpness[ADAM_STEPS] > 1.02 * sharpness[reached], (sharpness[reached], sharpness[ADAM_STEPS])
    _, losses = zip(*scalars["train_loss"])
    assert losses[-1] < losses[0] / 50


@pytest.mark.slow
def test_plot_is_written(short_run):
    assert_png_figure(short_run[1])


def test_bad_arguments_are_rejected():
    example = load_example("edge_of_stability")
    bad = (["--learning-rates", "-0.1"], ["--steps", "0"], ["--threads", "-1"], ["--sgd-batch-size", "-1"])
    for argv in (*bad, ["--sgd-learning-rate", "0"], ["--sgd-batch-size", "1001"], ["--adam-steps", "-1"]):
        with pytest.raises(SystemExit):
            example.main(argv)
    with pytest.raises(ValueError, match="num_examples"):
        example.digits_data(5)
    with pytest.raises(ValueError, match="batch_size"):
        example.train(0.1, steps=1, log_dir="unused", num_examples=100, batch_size=101)
    with pytest.raises(ValueError, match="optimizer"):
        example.train(0.1, steps=1, log_dir="unused", optimizer="rmsprop")


# ----------------------------------------------------------------------------------------- full-batch NAdam
NADAM_LR, NADAM_STEPS, NADAM_EVERY = 0.002, 400, 50


def test_full_batch_nadam_hovers_at_its_own_limit(tmp_path):
    example = load_example("edge_of_stability")

    class NAdamMLP(example.DigitsMLP):
        def configure_optimizers(self):
            return torch.optim.NAdam(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    model = NAdamMLP(NADAM_LR, hidden=64, num_examples=1000, batch_size=None, optimizer="adam")
    monitor = HessianEigenMonitor(
        every_n_steps=NADAM_EVERY, batch=model.data, compute_batch_sharpness=False, strict=True
    )
    run_dir = logged_fit(model, callbacks=[monitor], log_dir=tmp_path, name="nadam", max_steps=NADAM_STEPS)
    scalars = read_tensorboard_scalars(run_dir)
    ratios = dict(scalars["spectral/hessian/eos_ratio"])
    sharpness = dict(scalars["spectral/hessian/preconditioned_lambda_1"])
    # none at step 0: no moments yet
    assert sorted(ratios) == list(range(NADAM_EVERY, NADAM_STEPS + 1, NADAM_EVERY))
    settled = [ratios[step] for step in range(200, NADAM_STEPS + 1, NADAM_EVERY)]
    assert all(0.95 < ratio < 1.2 for ratio in settled), settled
    # Adam's limit would read the same sharpness as far below its edge.
    assert all(
        sharpness[step] / adam_stability_limit(NADAM_LR, 0.9) < 0.2
        for step in range(200, NADAM_STEPS + 1, NADAM_EVERY)
    )
