"""Full-batch NAdam on the edge-of-stability example's digits MLP: the preconditioned sharpness λ_1(D⁻¹H)
settles at the limit derived for NAdam's momentum schedule (``nadam_stability_limit``), ``eos_ratio`` ≈ 1,
where Adam's limit 38/η would put it near 0.1.

The limit is checked on a frozen quadratic in tests/functional/test_nadam_adadelta_preconditioners.py; this is
the training-dynamics check (Cohen et al. 2022 observe the same for Adam). On the reference machine, η = 0.002:
``eos_ratio`` 1.98 at step 50 (the overshoot), then 1.03-1.14 from step 100 to 400 (1.03-1.12 from step 200 on,
the range the test asserts to lie in 0.95-1.2), while the limit itself is about 1950, a tenth of Adam's 38/η.
"""

from __future__ import annotations

import pytest
import torch
from _common.example_fit import logged_fit
from spectral_testing.examples import load_example
from spectral_testing.log_readers import read_tensorboard_scalars

from lightning_spectral.callbacks import HessianEigenMonitor
from lightning_spectral.functional import adam_stability_limit

pytest.importorskip("sklearn", reason="the example trains on scikit-learn's digits (the `dev` extra)")

LR, STEPS, EVERY = 0.002, 400, 50


def test_full_batch_nadam_hovers_at_its_own_limit(tmp_path):
    example = load_example("edge_of_stability")

    class NAdamMLP(example.DigitsMLP):
        def configure_optimizers(self):
            return torch.optim.NAdam(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    model = NAdamMLP(LR, hidden=64, num_examples=1000, batch_size=None, optimizer="adam")
    monitor = HessianEigenMonitor(
        every_n_steps=EVERY, batch=model.data, compute_batch_sharpness=False, strict=True
    )
    run_dir = logged_fit(model, callbacks=[monitor], log_dir=tmp_path, name="nadam", max_steps=STEPS)
    scalars = read_tensorboard_scalars(run_dir)
    ratios = dict(scalars["spectral/hessian/eos_ratio"])
    sharpness = dict(scalars["spectral/hessian/preconditioned_lambda_1"])
    assert sorted(ratios) == list(range(EVERY, STEPS + 1, EVERY))  # none at step 0: no moments yet
    settled = [ratios[step] for step in range(200, STEPS + 1, EVERY)]
    assert all(0.95 < ratio < 1.2 for ratio in settled), settled
    # Adam's limit would read the same sharpness as far below its edge.
    assert all(sharpness[step] / adam_stability_limit(LR, 0.9) < 0.2 for step in range(200, STEPS + 1, EVERY))
