"""FARMS and the WeightWatcher-compatible alpha: ``python -m benchmarks.farms_alpha [--seeds 5] [--matrices 300]``.

1. Aspect-ratio bias (Hu et al., ICML 2025): on i.i.d. Gaussian ``200×n`` matrices (no heavy tail at all), the
   plain exponent (KS-searched ``x_min``, and ``x_min`` at the median) against :func:`farms_alpha` (median
   ``x_min``, the authors' rule; and KS-searched), mean ± standard deviation over seeds, and the time of one
   estimate (same process, same matrices; medians of the seeds).
2. The cost per model: :func:`farms_alpha` of every layer of the weight benchmark's MLP (784→1024→1024→768→
   512→512→10) for ``num_windows`` 3, 5 and 9 (default), against the weight monitor's own decomposition
   (``weight_spectra``, default ``"auto"`` and ``"exact"``), medians of 5 runs in one process.
3. ``power_law_alpha(fit="weightwatcher")`` against WeightWatcher's own ``analyze()`` on a model of random
   ``nn.Linear`` layers (Gaussian and Student-t entries, several shapes), and how often the default fit differs.

Prints markdown (the source of ``benchmarks/RESULTS.md``'s FARMS section).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import statistics
import time

import torch
from torch import nn

from lightning_spectral.functional import farms_alpha, power_law_alpha


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def _median_xmin_alpha(eigenvalues: torch.Tensor) -> float:
    ordered = torch.sort(eigenvalues).values
    return power_law_alpha(ordered, xmin=float(ordered[ordered.numel() // 2])).alpha


def aspect_ratio_table(seeds: int) -> str:
    rows = []
    for n in (200, 400, 800, 1600):
        cols: dict[str, list[float]] = {k: [] for k in ("ks", "median", "farms", "farms_ks")}
        times: dict[str, list[float]] = {k: [] for k in ("ks", "farms", "farms_ks")}
        for seed in range(seeds):
            g = torch.Generator().manual_seed(seed)
            weight = torch.randn(200, n, generator=g) / math.sqrt(n)
            fit, t = _timed(lambda w: power_law_alpha(torch.linalg.svdvals(w) ** 2), weight)
            cols["ks"].append(fit.alpha)
            times["ks"].append(t)
            cols["median"].append(_median_xmin_alpha(torch.linalg.svdvals(weight.double()) ** 2))
            result, t = _timed(farms_alpha, weight)
            cols["farms"].append(result.alpha)
            times["farms"].append(t)
            result_ks, t = _timed(farms_alpha, weight, xmin="ks")
            cols["farms_ks"].append(result_ks.alpha)
            times["farms_ks"].append(t)

        def cell(values):
            return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

        rows.append(
            f"| 200×{n} | {n // 200} | {cell(cols['ks'])} | {cell(cols['median'])} | {cell(cols['farms'])} "
            f"| {result.alpha_std_error:.3f} | {cell(cols['farms_ks'])} | {result.num_submatrices} "
            f"| {1e3 * statistics.median(times['ks']):.1f} | {1e3 * statistics.median(times['farms']):.1f} "
            f"| {1e3 * statistics.median(times['farms_ks']):.0f} |"
        )
    header = (
        "| matrix | aspect ratio | plain alpha (KS x_min) | plain alpha (median x_min) | **FARMS alpha** "
        "(median x_min, default) | FARMS jackknife SE (last seed) | FARMS alpha (KS x_min) | submatrices "
        "| plain [ms] | FARMS [ms] | FARMS, KS [ms] |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    return header + "\n" + "\n".join(rows)


def cost_table() -> str:
    from benchmarks.common import median_time
    from benchmarks.weights_watcher import watcher_model
    from lightning_spectral.functional import weight_matrices, weight_spectra

    matrices = [w.matrix.detach() for w in weight_matrices(watcher_model())]
    rows = []
    reference = median_time(lambda: weight_spectra(matrices))
    rows.append(["`weight_spectra(...)` (monitor default: auto, k=5)", reference])
    rows.append(
        [
            '`weight_spectra(..., method="exact")` (all σ, plain alpha)',
            median_time(lambda: weight_spectra(matrices, method="exact")),
        ]
    )
    for windows in (3, 5, 9):
        blocks = sum(farms_alpha(m, num_windows=windows).num_submatrices for m in matrices)
        rows.append(
            [
                f"`farms_alpha` of every layer, num_windows={windows} ({blocks} blocks of ≤100×100)",
                median_time(lambda n=windows: [farms_alpha(m, num_windows=n) for m in matrices]),
            ]
        )
    header = "| work on the 6 layers | time [s] | ratio to the monitor's default |\n|---|---|---|"
    return header + "\n" + "\n".join(f"| {name} | {t:.3f} | {t / reference:.2f} |" for name, t in rows)


def weightwatcher_table(count: int) -> str:
    try:
        import weightwatcher as ww
    except Exception as error:  # optional (bench extra)
        return f"WeightWatcher not installed ({type(error).__name__}: {error})."
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(0)
    shapes = [(50, 30), (30, 50), (12, 15), (100, 64), (200, 40)]
    layers = []
    for k in range(count):
        m, n = shapes[k % len(shapes)]
        layer = nn.Linear(n, m, bias=False)
        with torch.no_grad():
            if (k // len(shapes)) % 2:
                layer.weight.copy_(torch.distributions.StudentT(2.0).sample((m, n)) / math.sqrt(n))
            else:
                layer.weight.copy_(torch.randn(m, n) / math.sqrt(n))
        layers.append(layer)
    model = nn.Sequential(*layers)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        details = ww.WeightWatcher(model=model).analyze()
    if len(details) != count:
        return f"WeightWatcher analyzed {len(details)} of {count} layers: cannot compare."
    worst, same_alpha, same_tail, default_differs = 0.0, 0, 0, 0
    for layer, (_, row) in zip(layers, details.iterrows()):
        eigenvalues = torch.linalg.svdvals(layer.weight.detach().double()) ** 2
        fit = power_law_alpha(eigenvalues, fit="weightwatcher")
        relative = abs(fit.alpha - row["alpha"]) / row["alpha"]
        worst = max(worst, relative)
        same_alpha += relative < 1e-6
        same_tail += fit.num_tail == int(row["num_pl_spikes"])
        default = power_law_alpha(eigenvalues)
        default_differs += default is None or abs(default.alpha - row["alpha"]) / row["alpha"] > 1e-6
    return (
        f'| layers | `fit="weightwatcher"` equal to WW\'s alpha (rel. 1e-6) | worst rel. difference '
        f"| same tail size (`num_pl_spikes`) | default fit differs |\n|---|---|---|---|---|\n"
        f"| {count} | {same_alpha} | {worst:.1e} | {same_tail} | {default_differs} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--matrices", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print(aspect_ratio_table(args.seeds))
    print()
    print(cost_table())
    print()
    print(weightwatcher_table(args.matrices))


if __name__ == "__main__":
    main()
