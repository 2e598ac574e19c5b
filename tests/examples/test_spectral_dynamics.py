"""``examples/spectral_dynamics.py``, shortened (300 steps): weight decay lowers the effective rank; the
agreement with the final checkpoint and the inter-layer alignment are logged and drawn; the report draws the
agreement heatmaps from the run's checkpoints.

Full run (1500 steps, seed 0, reference machine): effective rank / min(m, n) of ``net.2`` 0.80 → 0.51 without
weight decay and 0.80 → 0.19 with weight decay 1.0; at step 300 (this test) 0.57 and 0.39. The
tolerance below asks only for a gap of 0.05 at step 300 and a fall from the initial value in both runs.
The values are read back from the TensorBoard event files with the tests' own reader, not the example's.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from spectral_testing.examples import assert_png_figure, load_example
from spectral_testing.log_readers import read_tensorboard_scalars

from lightning_spectral.report import build_report
from lightning_spectral.report.checkpoints import checkpoint_dynamics

STEPS, EVERY = 300, 25


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("spectral_dynamics")
    log_dir, png = root / "runs", root / "plot" / "spectral_dynamics.png"
    argv = ["--steps", str(STEPS), "--every", str(EVERY), "--log-dir", str(log_dir), "--plot", str(png)]
    assert load_example("spectral_dynamics").main(argv) == 0
    return log_dir, png


def test_weight_decay_collapses_the_rank_and_the_figure_is_drawn(short_run):
    log_dir, png = short_run
    assert_png_figure(png, min_bytes=50_000)
    ratio = {}
    for run in ("wd0", "wd1"):
        scalars = read_tensorboard_scalars(log_dir / run / "version_0")
        series = scalars["spectral/weights/net.2.weight/effective_rank_ratio"]
        assert [s for s, _ in series] == list(range(0, STEPS + 1, EVERY))
        ratio[run] = (series[0][1], series[-1][1])
        for pair in ("net.0.weight->net.2.weight", "net.2.weight->net.4.weight"):
            values = [v for _, v in scalars[f"spectral/weights/alignment/{pair}"]]
            assert all(0.0 <= v <= 1.0 for v in values)
        agreement = [v for _, v in scalars["spectral/weights/net.2.weight/agreement"]]
        assert len(agreement) == STEPS // EVERY and all(0.0 <= v <= 1.0 + 1e-6 for v in agreement)
    assert ratio["wd0"][0] == pytest.approx(ratio["wd1"][0])  # same initialisation
    assert ratio["wd1"][1] < ratio["wd0"][1] - 0.05 < ratio["wd0"][0] - 0.05, ratio


def test_checkpoint_agreement_and_the_report(short_run, tmp_path):
    log_dir, _ = short_run
    run = log_dir / "wd1" / "version_0"
    dynamics = checkpoint_dynamics(run)
    assert dynamics.steps.tolist() == list(range(EVERY, STEPS + 1, EVERY))
    table = dynamics.agreement["net.2.weight"]
    assert table.shape == (STEPS // EVERY, 64)
    np.testing.assert_allclose(table[-1], 1.0, atol=1e-12)  # the reference agrees with itself
    assert table[0, :10].mean() < 0.9  # and the first checkpoint does not, yet
    page = build_report([log_dir / "wd0", run], tmp_path / "report", progress=False)
    sources = re.findall(r'<img src="([^"]+)"', page.read_text(encoding="utf-8"))
    for name in (
        "checkpoint_agreement_run1.png",
        "checkpoint_agreement_run2.png",
        "checkpoint_agreement_map.png",
    ):
        assert name in sources, name
        assert_png_figure(page.parent / name)


def test_agreement_with_another_reference_and_a_checkpoint_of_another_model(short_run, tmp_path):
    import torch

    from lightning_spectral.report import ReportError

    log_dir, _ = short_run
    run = log_dir / "wd0" / "version_0"
    default = checkpoint_dynamics(run, max_index=5)
    last_file = default.files[-1]
    same = checkpoint_dynamics(run, reference=last_file, max_index=5)
    np.testing.assert_array_equal(same.agreement["net.0.weight"], default.agreement["net.0.weight"])
    assert default.agreement["net.0.weight"].shape == (STEPS // EVERY, 5)
    # the other run's final checkpoint: same model, other weights, a valid reference
    other = checkpoint_dynamics(run, reference=checkpoint_dynamics(log_dir / "wd1").files[-1])
    assert other.agreement["net.2.weight"][-1, :10].mean() < 0.99
    stranger = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"net.2.weight": torch.zeros(3, 3)}, "global_step": 7}, stranger)
    with pytest.raises(ReportError, match="not the same model"):
        checkpoint_dynamics(run, reference=stranger)
    with pytest.raises(ValueError, match="max_index"):
        checkpoint_dynamics(run, max_index=0)


def test_cli_report_without_checkpoints(short_run, tmp_path):
    from lightning_spectral.cli import main

    log_dir, _ = short_run
    out = tmp_path / "plain"
    assert main(["report", str(log_dir / "wd1"), "-o", str(out), "-q", "--no-checkpoints"]) == 0
    assert (out / "index.html").is_file() and not list(out.glob("checkpoint_agreement*"))
