"""Every monitor under real two-process CPU DDP (gloo), against a single-process measurement on the union of the
ranks' shards; and a measurement that raises on one rank, which must end on every rank (no hang).

Tolerance 1e-4 relative (the issue's): the DDP numbers are means / sums of the ranks' float32 pieces, the
reference the same arithmetic on the concatenated batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from spectral_testing.ddp import load_script, run_ddp_script
from spectral_testing.log_readers import read_tensorboard_scalars

from lightning_spectral.functional import (
    HessianOperator,
    adam_preconditioner,
    adam_stability_limit,
    batch_sharpness,
    hessian_eigenvalues,
    ntk_alignment,
    ntk_lambda_max,
    ntk_trace,
    weight_spectrum,
)

pytestmark = [pytest.mark.ddp, pytest.mark.slow]  # every test here runs (or shares) a two-process run

SCRIPT = Path(__file__).with_name("ddp_monitors_script.py")


@pytest.fixture(scope="module", params=["measure", "measure-spawn"], ids=["ddp", "ddp_spawn"])
def ddp_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    process = run_ddp_script(SCRIPT, request.param, str(out))
    assert process.returncode == 0, process.stdout[-3000:]
    return out


def unions(out: Path) -> tuple[list, list]:
    """The ranks' first measurement batches, and per measurement batch the union of the ranks' shards."""
    per_rank = [torch.load(out / f"rank{r}_batches.pt") for r in (0, 1)]
    unions = [
        tuple(torch.cat([batches[b][i] for batches in per_rank]) for i in (0, 1))
        for b in range(len(per_rank[0]))
    ]
    return [batches[0] for batches in per_rank], unions


def union_reference(out: Path):
    """The script, the initial model, the ranks' first batches and the unions of every measurement batch."""
    script = load_script(SCRIPT)
    model = script.Regressor()
    model.load_state_dict(torch.load(out / "initial.pt"))
    return (script, model, *unions(out))


def test_ranks_measure_on_different_shards_and_agree(ddp_run):
    _, _, shards, _ = union_reference(ddp_run)
    assert not torch.equal(shards[0][0], shards[1][0])  # the union is not one batch twice
    ranks = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert {"spectral/hessian/lambda_1", "spectral/ntk/trace", "spectral/weights/max_sigma_max"} <= set(
        ranks[0]
    )
    for key in ranks[0]:
        assert ranks[1][key] == pytest.approx(ranks[0][key], rel=1e-6, abs=1e-9), key


def test_hessian_equals_single_process_measurement_on_the_union(ddp_run):
    """Two measurement batches per rank: λ of the average Hessian over the batches' unions, and the batch
    sharpness as the mean over those unions (each batch's gradient and product all-reduced on its own)."""
    script, model, _, union_batches = union_reference(ddp_run)
    assert len(union_batches) == script.HESSIAN_BATCHES == 2
    logged = json.loads((ddp_run / "rank0.json").read_text())
    reference = hessian_eigenvalues(
        k=script.HESSIAN_K,
        tol=1e-8,
        max_matvecs=32,
        operator=HessianOperator.from_batches(model, script.loss_fn, union_batches),
    )
    for i, value in enumerate(reference.eigenvalues.tolist(), 1):
        assert logged[f"spectral/hessian/lambda_{i}"] == pytest.approx(value, rel=1e-4)
    sharpness = batch_sharpness(model, script.loss_fn, union_batches)
    assert logged["spectral/hessian/batch_sharpness"] == pytest.approx(sharpness.value, rel=1e-4)
    assert logged["spectral/hessian/eos_ratio"] == pytest.approx(
        0.05 * reference.eigenvalues[0].item() / 2, rel=1e-4
    )


def test_adam_preconditioned_sharpness_equals_single_process_measurement_on_the_union(tmp_path):
    """Both ranks hold the same Adam state (DDP averages the gradients), so the preconditioned sharpness is that
    of the union's Hessian with rank 0's preconditioner."""
    process = run_ddp_script(SCRIPT, "adam", str(tmp_path))
    assert process.returncode == 0, process.stdout[-3000:]
    script = load_script(SCRIPT)
    model = script.AdamRegressor()
    model.load_state_dict(torch.load(tmp_path / "final.pt"))
    optimizer = model.configure_optimizers()
    optimizer.load_state_dict(torch.load(tmp_path / "optimizer.pt"))
    (union,) = unions(tmp_path)[1]
    d = adam_preconditioner(optimizer, list(model.parameters()))
    reference = hessian_eigenvalues(model, script.loss_fn, union, tol=1e-8, max_matvecs=32, preconditioner=d)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for logged in ranks:
        value = logged["spectral/hessian/preconditioned_lambda_1"]
        assert value == pytest.approx(reference.eigenvalues[0].item(), rel=1e-4)
        assert logged["spectral/hessian/eos_ratio"] == pytest.approx(value / adam_stability_limit(0.01, 0.9))


def test_ntk_equals_single_process_measurement_on_the_union(ddp_run):
    _, model, _, ((x, y), _) = union_reference(ddp_run)  # the NTK monitor's batch: the first
    model.eval()
    logged = json.loads((ddp_run / "rank0.json").read_text())
    trace = ntk_trace(model, x, method="exact")
    assert trace.num_examples == 2 * 4
    assert logged["spectral/ntk/trace"] == pytest.approx(trace.trace, rel=1e-4)
    assert logged["spectral/ntk/trace_per_example"] == pytest.approx(trace.trace / 8, rel=1e-4)
    lambda_max = ntk_lambda_max(model, x, k=1, tol=1e-6).eigenvalues[0].item()
    assert logged["spectral/ntk/lambda_max"] == pytest.approx(lambda_max, rel=1e-4)
    assert logged["spectral/ntk/alignment"] == pytest.approx(ntk_alignment(model, x, y), rel=1e-4)
    # Pairs across the two ranks' shards count too: it needs the gathered batch.
    offdiagonal = ntk_alignment(model, x, y, offdiagonal=True)
    assert logged["spectral/ntk/alignment_offdiagonal"] == pytest.approx(offdiagonal, rel=1e-4, abs=1e-6)


def test_weights_equal_single_process_spectra(ddp_run):
    _, model, _, _ = union_reference(ddp_run)
    logged = json.loads((ddp_run / "rank1.json").read_text())  # rank 1 received rank 0's numbers
    for name in ("net.0.weight", "net.2.weight"):
        spectrum = weight_spectrum(dict(model.named_parameters())[name].detach())
        assert logged[f"spectral/weights/{name}/sigma_max"] == pytest.approx(spectrum.sigma_max, rel=1e-6)
        assert logged[f"spectral/weights/{name}/stable_rank"] == pytest.approx(spectrum.stable_rank, rel=1e-6)


def test_only_rank_zero_writes_to_the_logger(ddp_run):
    event_files = list((ddp_run / "tb").rglob("events.out.tfevents.*"))
    assert len(event_files) == 1
    scalars = read_tensorboard_scalars(event_files[0].parent)
    logged = json.loads((ddp_run / "rank0.json").read_text())
    for key in ("spectral/hessian/lambda_1", "spectral/ntk/trace", "spectral/weights/max_sigma_max"):
        assert [step for step, _ in scalars[key]] == [0]
        assert scalars[key][0][1] == pytest.approx(logged[key], rel=1e-6)


def test_a_failure_on_one_rank_raises_on_every_rank(tmp_path):
    """Rank 1 raises inside Lanczos (between two all-reduced products): both processes must end with an error
    well before the process group's 30-minute timeout."""
    process = run_ddp_script(SCRIPT, "fail-strict", str(tmp_path), timeout=120)
    assert process.returncode != 0
    assert "injected failure on rank 1" in process.stdout
    assert "PeerMeasurementFailed" in process.stdout  # rank 0 left its measurement too
    assert not list(tmp_path.glob("rank*.json"))  # neither rank finished fit


def test_a_failure_on_one_rank_disables_the_monitor_on_every_rank(tmp_path):
    process = run_ddp_script(SCRIPT, "fail-lenient", str(tmp_path), timeout=120)
    assert process.returncode == 0, process.stdout[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"global_step": 3, "disabled": True}] * 2  # training went on to max_steps on both
    assert "failed on rank 1" in process.stdout and "injected failure on rank 1" in process.stdout


def test_the_time_budget_is_decided_by_rank_zero_for_every_rank(tmp_path):
    """``max_overhead`` with clocks that disagree (a measurement costs 2 s on rank 0, 200 s on rank 1): both ranks
    measure the steps rank 0's budget allows -- 1 s steps, budget 0.5: steps 0, 4, 8, 12 -- and neither hangs."""
    process = run_ddp_script(SCRIPT, "budget", str(tmp_path), timeout=180)
    assert process.returncode == 0, process.stdout[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"steps": [0, 4, 8, 12], "skipped": 9, "global_step": 12}] * 2
