"""The warm-start part of the Hessian benchmark: re-measuring after more SGD steps, cold against warm.

At the trained state the top-``k`` pairs are measured with our defaults (``tol=1e-3``); training goes on for
``WARM_STEPS`` more SGD steps and the new Hessian is measured cold (a Gaussian start) and warm (``v0=`` the
previous eigenvectors, through :func:`~lightning_spectral.functional.warm_start_vector`, i.e. mixed with a
Gaussian vector of equal norm). Target: ≥ 2× fewer HVPs warm, in every row.

**Krylov floor.** Next to what our stopping test spends, each row gives the fewest products with which
Lanczos, from the *same* start vector, has its top-``k`` Ritz values within ``FLOOR_ERROR`` of the float64
reference: what a stopping rule that knew the answer would spend. It is found by running
``hessian_eigenvalues(..., max_matvecs=m, tol=1e-12)`` (exactly ``m`` steps; the Ritz values of a run are those of
every longer run's first ``m`` steps) for ``m = k, k+1, …`` until the error is within ``FLOOR_ERROR``: the Ritz
values ``θ_i`` of nested Krylov spaces rise monotonically towards ``λ_i`` (Cauchy interlacing), so the first
such ``m`` is the floor. The cold/warm ratio of the floors bounds what any stopping rule can make of this warm
start: the target needs it ≥ 2× too.
"""

from __future__ import annotations

import copy
import math
import statistics
from typing import Any

from torch import Tensor

from benchmarks.common import markdown_table, seeded
from benchmarks.hessian_problems import (
    SEED,
    Problem,
    float64_reference,
    fmt_error,
    loss_fn,
    relative_error,
    sgd_steps,
)
from benchmarks.hessian_tools import Run, our_run
from lightning_spectral.functional import HessianOperator, hessian_eigenvalues

TARGET_WARM_RATIO = 2.0
WARM_STEPS = (10, 100)
#: The error a Krylov floor is taken at: the accuracy of the time-to-target tables.
FLOOR_ERROR = 1e-3
#: Steps tried for a floor before giving up (our default ``max_iter``).
FLOOR_MAX_STEPS = 50

HEADER = [
    "model",
    "k",
    "SGD steps",
    "λ_max before → after",
    "overlap abs(v_i before · v_i after)",
    "cold HVPs",
    "warm HVPs",
    "cold / warm",
    "Krylov floor cold / warm",
    "floor ratio",
    "worst error cold",
    "worst error warm",
]
COLD, WARM = HEADER.index("cold HVPs"), HEADER.index("warm HVPs")
FLOOR_COLD, FLOOR_WARM = len(HEADER), len(HEADER) + 1  # numbers kept after the printed columns


def krylov_floor(problem: Problem, k: int, seed: int, v0: Tensor | None) -> int | None:
    """The fewest Lanczos steps from the start of ``hessian_eigenvalues(k=k, v0=v0, generator=seeded(seed))``
    whose top-``k`` Ritz values are within ``FLOOR_ERROR`` of ``problem.reference``; ``None`` past
    ``FLOOR_MAX_STEPS``."""
    assert problem.reference is not None
    op = HessianOperator(problem.model, loss_fn, problem.batch, method="double_backward")
    for steps in range(k, FLOOR_MAX_STEPS + 1):
        result = hessian_eigenvalues(
            operator=op, k=k, v0=v0, tol=1e-12, max_matvecs=steps, generator=seeded(seed, op.device)
        )
        if relative_error(result.eigenvalues.tolist(), problem.reference.values, k) <= FLOOR_ERROR:
            return steps
    return None


def warm_start_rows(problem: Problem, k: int, repeats: int) -> list[list[Any]]:
    """Cold vs warm re-measurement with our defaults after ``WARM_STEPS`` more SGD steps, with the Krylov floors.

    Double-backward products (the cheaper ones in the HVP-cost table): HVP counts do not depend on how a
    product is made, up to rounding.
    """
    assert problem.reference is not None
    run = our_run("double_backward")
    previous = []
    for seed in range(repeats):
        op = HessianOperator(problem.model, loss_fn, problem.batch, method="double_backward")
        previous.append(hessian_eigenvalues(operator=op, k=k, generator=seeded(seed, op.device)).eigenvectors)
    rows = []
    for steps in WARM_STEPS:
        moved = copy.deepcopy(problem)
        moved.model.zero_grad(set_to_none=True)
        sgd_steps(moved.model, *moved.data, steps, seeded(SEED + steps))
        moved.reference = float64_reference(moved.model, moved.batch, k, crosscheck=False)
        cold = [run(moved, k, {}, seed, None) for seed in range(repeats)]
        warm = []
        for vectors in previous:
            op = HessianOperator(moved.model, loss_fn, moved.batch, method="double_backward")
            result = hessian_eigenvalues(operator=op, k=k, v0=vectors, generator=seeded(SEED, op.device))
            warm.append(Run(sorted(result.eigenvalues.tolist(), reverse=True), op.num_matvecs))
        floors_cold = [krylov_floor(moved, k, seed, None) for seed in range(repeats)]
        floors_warm = [krylov_floor(moved, k, SEED, vectors) for vectors in previous]
        cold_hvps = statistics.median(r.hvps for r in cold)
        warm_hvps = statistics.median(r.hvps for r in warm)
        floor_cold = statistics.median(f if f is not None else math.inf for f in floors_cold)
        floor_warm = statistics.median(f if f is not None else math.inf for f in floors_warm)
        overlaps = (problem.reference.vectors[:, :k] * moved.reference.vectors).sum(dim=0).abs()
        rows.append(
            [
                problem.name,
                k,
                steps,
                f"{float(problem.reference.values[0]):.4f} → {float(moved.reference.values[0]):.4f}",
                ", ".join(f"{float(o):.3f}" for o in overlaps),
                cold_hvps,
                warm_hvps,
                f"{cold_hvps / warm_hvps:.2f}×",
                f"{floor_cold:g} / {floor_warm:g}",
                f"{floor_cold / floor_warm:.2f}×",
                fmt_error(max(relative_error(r.values, moved.reference.values, k) for r in cold)),
                fmt_error(max(relative_error(r.values, moved.reference.values, k) for r in warm)),
                floor_cold,
                floor_warm,
            ]
        )
    return rows


def smallest_ratio(rows: list[list[Any]]) -> float:
    """The smallest cold / warm HVP ratio of our runs over the rows (the target's number)."""
    return min(row[COLD] / row[WARM] for row in rows)


def warm_start_section(rows: list[list[Any]], repeats: int) -> str:
    """The ``### Warm start`` part of the Hessian section: table, verdict and reading."""
    ratios = [row[COLD] / row[WARM] for row in rows]
    floor_ratios = [row[FLOOR_COLD] / row[FLOOR_WARM] for row in rows]
    if min(ratios) >= TARGET_WARM_RATIO:
        verdict = f"**met** in every row (smallest ratio {min(ratios):.2f}×)."
    else:
        missed = sum(r < TARGET_WARM_RATIO for r in ratios)
        verdict = f"**missed** in {missed} of {len(ratios)} rows (smallest ratio {min(ratios):.2f}×)."
    below = [row for row, ratio in zip(rows, floor_ratios) if ratio < TARGET_WARM_RATIO]
    if not below:
        floor_verdict = (
            f"The Krylov floor's ratio is ≥ {TARGET_WARM_RATIO:g}× in every row (smallest {min(floor_ratios):.2f}×): "
            "a stopping rule that knew the answer would meet the target."
        )
    else:
        ks = ", ".join(sorted({str(row[1]) for row in below}))
        floor_verdict = (
            f"The Krylov floor's own ratio is below {TARGET_WARM_RATIO:g}× in {len(below)} of {len(rows)} rows "
            f"(k = {ks}; smallest {min(floor_ratios):.2f}×): there no stopping rule, however well informed, "
            "reaches the target from this warm start."
        )
    table = markdown_table(HEADER, [row[: len(HEADER)] for row in rows])
    return f"""### Warm start

Our defaults (`tol=1e-3`, `max_matvecs=50`; double-backward products, which change no count) at the trained
state, then {" and ".join(map(str, WARM_STEPS))} more SGD steps; cold = fresh Gaussian start (seeds 0…{repeats - 1}), warm = `v0=` the previous
eigenvectors (one set from each of those seeds). Medians over {repeats}; errors against a float64 reference at the
new point. Krylov floor (`benchmarks/hessian_warm_start.py`): the fewest products with which Lanczos from the
same start vector has its top-k Ritz values within {FLOOR_ERROR:g} of that reference, i.e. what a stopping rule
that knew the answer would spend (medians over the same starts).

{table}

Target ≥ {TARGET_WARM_RATIO:g}× fewer HVPs warm: {verdict} {floor_verdict}

Reading this table. A warm start saves the steps the Krylov space needs to find the wanted directions: from a
random start their component is about 1/√P, from the previous eigenvectors it is the overlap in the table.
After that the residual still has to shrink from about the sine of the angle between old and new eigenvector to
`tol·λ`, at a rate set by the eigenvalue gaps, so the saving is a number of steps rather than a factor: a
factor 2 needs cold runs much longer than a warm run's floor. The overlap column shows how far the
eigenvectors turn under minibatch SGD between measurements; the closer the eigenvalues, the further they turn.
Our residual test (`‖Hv − θv‖ ≤ tol·|θ|`) stops a few products after the floor, with errors near 1e-6: a
Ritz value's error is about the square of its residual over the gap. A test on that estimate instead
(`‖r‖²/gap ≤ tol·|θ|`, the gap taken from the Ritz values) reached the floor in a scratch run on these problems,
but once stopped a cold CNN run at error 0.3 (the top eigenvalue not yet in the Krylov space, the gap
estimated from a Ritz value that had not converged), so the residual test stays.
"""
