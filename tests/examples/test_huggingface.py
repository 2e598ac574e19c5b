"""``examples/huggingface.py``, shortened: a tiny BERT fine-tuned with every monitor logs finite spectral values
and its report's per-layer figures draw no text over other text."""

from __future__ import annotations

import math

import pytest
from spectral_testing.examples import load_example
from spectral_testing.figure_text import overlapping_texts
from spectral_testing.log_readers import read_tensorboard_scalars

pytest.importorskip("transformers", reason="the example builds a transformers BERT (the `dev` extra)")


@pytest.mark.slow
def test_the_example_runs_and_its_report_is_legible(tmp_path):
    from lightning_spectral.report import read_runs
    from lightning_spectral.report.figures import make_figures, run_colors

    log_dir = tmp_path / "runs"
    assert (
        load_example("huggingface").main(
            ["--max-steps", "8", "--every-n-steps", "4", "--log-dir", str(log_dir)]
        )
        == 0
    )
    run = next(log_dir.rglob("version_0"))
    scalars = read_tensorboard_scalars(run)
    for key in ("spectral/hessian/lambda_1", "spectral/ntk/trace", "spectral/weights/max_sigma_max"):
        steps, values = zip(*scalars[key])
        assert list(steps) == [0, 4, 8] and all(math.isfinite(v) for v in values), key
    assert (run / "report" / "index.html").exists() and (run / "report" / "weights_sigma_max.png").exists()
    runs = read_runs([run])
    for figure in make_figures(runs, run_colors(runs))[0]:
        assert overlapping_texts(figure.figure) == [], figure.name
