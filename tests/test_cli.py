"""The README's demo command, shortened: every monitor logs to TensorBoard under ./runs."""

from __future__ import annotations

import pytest
from spectral_testing.log_readers import read_tensorboard_scalars

from lightning_spectral.cli import main


@pytest.mark.slow
def test_demo_logs_every_monitor(tmp_path, capsys):
    assert main(["demo", "--log-dir", str(tmp_path / "runs"), "--max-steps", "20"]) == 0
    out = capsys.readouterr().out
    assert "tensorboard --logdir" in out and "spectral/hessian/lambda_1" in out
    scalars = read_tensorboard_scalars(tmp_path / "runs")
    for key in (
        "spectral/hessian/lambda_1",
        "spectral/hessian/eos_ratio",
        "spectral/hessian/batch_sharpness",
        "spectral/hessian/trace",
        "spectral/ntk/trace",
        "spectral/ntk/sgd_stability",
        "spectral/ntk/lambda_max",
        "spectral/ntk/alignment",
        "spectral/weights/mean_stable_rank",
        "spectral/weights/net.0.weight/sigma_max",
        "spectral/weights/net.0.weight/effective_rank",  # 16 × 5: exact
        "spectral/weights/net.3.weight/effective_rank_estimate",  # 64 × 16·L: randomized top-k, an estimate
    ):
        assert key in scalars, key
    assert "spectral/weights/net.3.weight/effective_rank" not in scalars  # one key, one meaning
    assert [s for s, _ in scalars["spectral/weights/mean_stable_rank"]] == [0, 1, 2, 4, 8, 16]


@pytest.mark.slow
def test_demo_learning_rate_and_name_as_the_readme_report_example_uses_them(tmp_path):
    """``--lr`` reaches the optimizer (``eos_ratio = lr·λ_1/2``) and ``--name`` the run folder."""
    root = tmp_path / "runs"
    assert (
        main(["demo", "--log-dir", str(root), "--max-steps", "4", "--lr", "0.25", "--name", "sgd_lr0.25"])
        == 0
    )
    scalars = read_tensorboard_scalars(root / "sgd_lr0.25")
    (_, lambda_1), (_, ratio) = (
        scalars["spectral/hessian/lambda_1"][-1],
        scalars["spectral/hessian/eos_ratio"][-1],
    )
    assert ratio == pytest.approx(0.25 * lambda_1 / 2, rel=1e-5)


def test_cli_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        main(["demo", "--max-steps", "0"])
    with pytest.raises(SystemExit):
        main(["demo", "--lr", "0"])
    with pytest.raises(SystemExit):
        main(["no-such-command"])
