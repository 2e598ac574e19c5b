"""``WeightSpectrumMonitor``: singular values and singular-vector rotation of every weight matrix during fit.

Per layer, under ``spectral/weights/<name>/``: ``sigma_max``, ``sigma_1 .. sigma_k``,
``frobenius_norm``, ``stable_rank``, ``effective_rank``, ``alpha`` (where a power-law fit is possible),
``rotation`` (from the second measurement on) and ``condition_number`` (when asked for); the aggregates
``spectral/weights/mean_stable_rank`` and ``spectral/weights/max_sigma_max``; and a histogram of each layer's
singular values every ``histogram_every_n`` measurements on loggers that draw histograms. A model with more
than ``per_layer_limit`` matrices (a BERT has 150+) logs the aggregates only, plus the per-layer keys that a
stopper, ``EarlyStopping`` or ``ModelCheckpoint`` watches (every layer's numbers still go to the W&B table
``spectral/weights/per_layer`` at the end of the fit). The numerics are in
:mod:`lightning_spectral.functional.weight_spectrum` (definitions and formulas there).

Replicated weights (one process, DDP) are decomposed on rank 0 and the numbers broadcast. Sharded ``DTensor``
weights (Lightning's ``ModelParallelStrategy``: FSDP2's ``fully_shard``, tensor parallelism) are gathered one
matrix at a time, every rank joining each all-gather, and rank 0 decomposes each whole matrix before the next
is gathered (:meth:`~lightning_spectral.callbacks.collectives.MeasurementCollectives.full_tensor`).

Example::

    trainer = Trainer(callbacks=[WeightSpectrumMonitor(every_n_steps=100, log_spacing=True)])
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_info

from lightning_spectral.callbacks.base import SpectralMonitor
from lightning_spectral.callbacks.collectives import has_distributed_parameters
from lightning_spectral.callbacks.metric_logging import log_table
from lightning_spectral.callbacks.parameter_patterns import check_weight_patterns
from lightning_spectral.functional.weight_matrices import CONV_MODES, WeightMatrix, weight_matrices
from lightning_spectral.functional.weight_spectrum import DEFAULT_TOL, METHODS, WeightSpectrum, weight_spectra
from lightning_spectral.validation import check_bool, check_choice, check_int, check_open_unit_interval

TABLE_COLUMNS = ("step", "layer", "sigma_max", "stable_rank", "effective_rank", "alpha")


class WeightSpectrumMonitor(SpectralMonitor):
    """Randomized SVD of every weight matrix of the model on a schedule.

    Args:
        every_n_steps: measure every n optimizer steps (see :class:`SpectralMonitor`); default 100 when
            neither ``every_n_steps`` nor ``every_n_epochs`` is given.
        every_n_epochs: measure at the end of every n-th epoch.
        log_spacing: also measure at steps 1, 2, 4, ... below ``every_n_steps``.
        at_train_start: measure the initial weights.
        k: leading singular triplets computed per matrix, logged as ``sigma_1 .. sigma_k``; also the
            dimension of the subspace whose ``rotation`` is reported (clipped to ``min(m, n)`` per layer).
        method: ``"auto"`` (exact SVD for small matrices, randomized above a measured threshold),
            ``"exact"`` or ``"randomized"``.
        n_iter: power iterations of the randomized SVD.
        oversample: extra sketch columns of the randomized SVD.
        exact_threshold: ``"auto"`` is exact when ``min(m, n) <= exact_threshold`` (default: measured
            crossover, see :func:`~lightning_spectral.functional.weight_spectrum.weight_spectrum`).
        tol: accuracy check of randomized results: above this relative residual ``max_i ρ_i/σ_i`` the top
            ``k`` are recomputed by Lanczos (flat spectra, e.g. at initialisation); ``None`` turns it off.
        warm_start: seed each range finder with the layer's previous right singular vectors (followed by a cold
            start's Gaussian columns); ``rotation`` is logged either way.
        include: glob pattern(s) on parameter names to keep (default: every supported layer).
        exclude: glob pattern(s) on parameter names to drop. A pattern of either that matches no weight matrix
            raises ``ValueError`` at setup, naming it and the closest names.
        trainable_only: skip parameters with ``requires_grad=False``.
        conv_mode: ``"flatten"`` (``(out, in·∏k)`` per convolution) or ``"per_position"``.
        compute_condition_number: also log ``condition_number`` = σ_1/σ_k of the top-k block.
        histogram_every_n: log singular-value histograms every n-th measurement (0: never).
        per_layer_limit: per-layer scalars and histograms are logged while the monitor measures at most this many
            matrices (``None``: always); above it only the aggregates, the per-layer keys another callback
            watches (its ``monitor`` pattern, e.g. ``SpectralEarlyStopping.rank_collapse``) and the W&B table,
            and one message at the first measurement says so. Choose layers with ``include`` / ``exclude``.
        seed: seeds the random sketches.
        strict: re-raise measurement errors instead of disabling the monitor.
        max_overhead: a time budget (see :class:`~lightning_spectral.callbacks.SpectralMonitor`).
        name: the name its metrics go under (see :class:`~lightning_spectral.callbacks.SpectralMonitor`).
    """

    monitor_name = "weights"
    primary_metrics = ("max_sigma_max", "mean_stable_rank")
    needs_batch = False
    upcasts_half_precision = False  # reads the weights only; weight_spectrum upcasts each matrix itself
    supports_dtensor_parameters = True
    default_every_n_steps = 100
    metric_summaries = {
        "*sigma_max": "max",
        "*/sigma_*": "max",
        "*stable_rank": "min",
        "*/effective_rank": "min",
        "*/rotation": "max",
    }

    def __init__(
        self,
        *,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        log_spacing: bool = False,
        at_train_start: bool = True,
        k: int = 5,
        method: str = "auto",
        n_iter: int = 2,
        oversample: int = 10,
        exact_threshold: int | None = None,
        tol: float | None = DEFAULT_TOL,
        warm_start: bool = True,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        trainable_only: bool = False,
        conv_mode: str = "flatten",
        compute_condition_number: bool = False,
        histogram_every_n: int = 1,
        per_layer_limit: int | None = 64,
        seed: int = 0,
        strict: bool = False,
        max_overhead: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            every_n_steps=every_n_steps,
            every_n_epochs=every_n_epochs,
            log_spacing=log_spacing,
            at_train_start=at_train_start,
            seed=seed,
            strict=strict,
            max_overhead=max_overhead,
            name=name,
        )
        check_int("k", k, 1)
        check_choice("method", method, METHODS)
        check_int("n_iter", n_iter, 0)
        check_int("oversample", oversample, 0)
        if exact_threshold is not None:
            check_int("exact_threshold", exact_threshold, 0)
        if tol is not None:
            check_open_unit_interval("tol", tol)
        check_choice("conv_mode", conv_mode, CONV_MODES)
        check_int("histogram_every_n", histogram_every_n, 0)
        if per_layer_limit is not None:
            check_int("per_layer_limit", per_layer_limit, 0)
        check_bool("warm_start", warm_start)
        check_bool("trainable_only", trainable_only)
        check_bool("compute_condition_number", compute_condition_number)
        self.k = k
        self.method = method
        self.n_iter = n_iter
        self.oversample = oversample
        self.exact_threshold = exact_threshold
        self.tol = tol
        self.warm_start = warm_start
        self.include = include
        self.exclude = exclude
        self.trainable_only = trainable_only
        self.conv_mode = conv_mode
        self.compute_condition_number = compute_condition_number
        self.histogram_every_n = histogram_every_n
        self.per_layer_limit = per_layer_limit
        self._every_layer = True  # whether this measurement logs every layer's scalars (per_layer_limit)
        self._watched: list[str] = []  # the metric patterns of other callbacks under this monitor's prefix
        self._told_limit = False
        self._previous: dict[str, WeightSpectrum] = {}
        self._table_rows: list[list[Any]] = []

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        check_weight_patterns(pl_module, self.include, self.exclude, self.conv_mode, type(self).__name__)
        self._watched = [
            monitor
            for callback in trainer.callbacks
            if isinstance(monitor := getattr(callback, "monitor", None), str)
            and monitor.startswith(self.metric_prefix)
        ]

    def measure(self, trainer: Any, pl_module: Any, batches: list[Any]) -> Mapping[str, float]:
        # Weights are replicated across DDP ranks: rank 0 decomposes them, the others receive its numbers (so
        # `callback_metrics`, and any stopping decision on them, agree on every rank). Sharded (DTensor)
        # weights are gathered one matrix at a time, every rank taking part in each gather.
        if has_distributed_parameters(pl_module):
            values = self._measure_sharded(trainer, self._matrices(pl_module))
        elif self.collectives.rank == 0:
            values = self._measure_replicated(trainer, self._matrices(pl_module))
        else:
            values = None
        values = self.collectives.broadcast(values, src=0)
        return {key: value for key, value in values.items() if self._logs_key(key)}

    def _logs_key(self, key: str) -> bool:
        """Whether metric ``key`` is logged: an aggregate, every key within ``per_layer_limit``, or a watched one."""
        return (
            self._every_layer
            or "/" not in key
            or any(fnmatch.fnmatchcase(self.metric_prefix + key, pattern) for pattern in self._watched)
        )

    def _matrices(self, pl_module: Any) -> list[WeightMatrix]:
        with warnings.catch_warnings():
            if self.num_measurements > 0:  # unmatched include/exclude patterns are reported once
                warnings.simplefilter("ignore", UserWarning)
            matrices = weight_matrices(
                pl_module,
                include=self.include,
                exclude=self.exclude,
                trainable_only=self.trainable_only,
                conv_mode=self.conv_mode,
            )
        self._every_layer = self.per_layer_limit is None or len(matrices) <= self.per_layer_limit
        if not self._every_layer and not self._told_limit:
            self._told_limit = True
            rank_zero_info(
                f"{type(self).__name__}: {len(matrices)} weight matrices, more than per_layer_limit="
                f"{self.per_layer_limit}: logging the aggregates (mean_stable_rank, max_sigma_max) and the "
                "per-layer keys another callback watches only; pass per_layer_limit=None for every layer's "
                "scalars and histograms, or choose layers with include= / exclude=."
            )
        return matrices

    def _measure_replicated(self, trainer: Any, matrices: list[WeightMatrix]) -> dict[str, float]:
        """All matrices at once (same-shape layers are decomposed as one batch), on rank 0."""
        # A layer with NaN / inf entries gets NaN metrics (the base class warns once); the others are measured.
        broken = [m.name for m in matrices if not bool(torch.isfinite(m.matrix).all())]
        matrices = [m for m in matrices if m.name not in broken]
        spectra = self._spectra(matrices) if matrices else []
        return self._values(trainer, [(m.name, s) for m, s in zip(matrices, spectra)], broken)

    def _measure_sharded(self, trainer: Any, matrices: list[WeightMatrix]) -> dict[str, float] | None:
        """One matrix at a time: every rank joins its all-gather, rank 0 decomposes the whole matrix and drops
        it before the next (memory: one full matrix at a time); the values on rank 0, ``None`` elsewhere."""
        measured: list[tuple[str, WeightSpectrum]] = []
        broken: list[str] = []
        generator = None
        for matrix in matrices:
            full = self.collectives.full_tensor(matrix.matrix)
            if self.collectives.rank != 0:
                continue
            if not bool(torch.isfinite(full).all()):
                broken.append(matrix.name)
                continue
            if generator is None:
                generator = self.make_generator(full.device)
            whole = dataclasses.replace(matrix, matrix=full)
            measured.append((matrix.name, self._spectra([whole], generator)[0]))
            del full, whole
        return self._values(trainer, measured, broken) if self.collectives.rank == 0 else None

    def _values(
        self, trainer: Any, measured: list[tuple[str, WeightSpectrum]], broken: list[str]
    ) -> dict[str, float]:
        """The logged values of the decomposed layers (and NaN for the ``broken`` ones); histograms, the
        warm-start state and the table rows as a side effect."""
        if not measured and not broken:
            return {}
        values: dict[str, float] = {
            f"{name}/{key}": math.nan
            for name in broken
            for key in ("sigma_max", "frobenius_norm", "stable_rank", "effective_rank")
        }
        draw_histograms = self.histogram_every_n > 0 and self.num_measurements % self.histogram_every_n == 0
        for name, spectrum in measured:
            values.update({f"{name}/{key}": value for key, value in self._layer_values(spectrum).items()})
            if draw_histograms and self._every_layer:
                singular_values = (
                    spectrum.all_singular_values
                    if spectrum.all_singular_values is not None
                    else spectrum.singular_values
                )
                self.log_histogram(trainer, f"{name}/singular_values", singular_values)
        self._previous = dict(measured)
        self._table_rows += [
            [trainer.global_step, name, s.sigma_max, s.stable_rank, s.effective_rank, s.alpha]
            for name, s in measured
        ]
        stable_ranks = [s.stable_rank for _, s in measured] + [math.nan] * len(broken)
        values["mean_stable_rank"] = sum(stable_ranks) / len(stable_ranks)
        values["max_sigma_max"] = math.nan if broken else max(s.sigma_max for _, s in measured)
        return values

    def _spectra(
        self, matrices: list[WeightMatrix], generator: torch.Generator | None = None
    ) -> list[WeightSpectrum]:
        # the previous spectra give the rotation always, and the range finder's warm start if asked for
        previous = [self._previous.get(m.name) for m in matrices]
        previous = [
            p if p is not None and p.shape == tuple(m.matrix.shape) else None
            for p, m in zip(previous, matrices)
        ]
        return weight_spectra(
            [m.matrix for m in matrices],
            self.k,
            method=self.method,
            previous=previous,
            n_iter=self.n_iter,
            oversample=self.oversample,
            generator=self.make_generator(matrices[0].matrix.device) if generator is None else generator,
            exact_threshold=self.exact_threshold,
            tol=self.tol,
            warm_start=self.warm_start,
        )

    def _layer_values(self, spectrum: WeightSpectrum) -> dict[str, float]:
        values = {
            "sigma_max": spectrum.sigma_max,
            "frobenius_norm": spectrum.frobenius_norm,
            "stable_rank": spectrum.stable_rank,
            "effective_rank": spectrum.effective_rank,
        }
        for i, sigma in enumerate(spectrum.singular_values.tolist(), start=1):
            values[f"sigma_{i}"] = sigma
        if spectrum.alpha is not None and math.isfinite(spectrum.alpha):
            values["alpha"] = spectrum.alpha
        if spectrum.rotation is not None:
            values["rotation"] = spectrum.rotation
        if self.compute_condition_number:
            values["condition_number"] = spectrum.condition_number
        return values

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Per-layer spectra of the whole run as one table (``spectral/weights/per_layer``, W&B only)."""
        super().on_fit_end(trainer, pl_module)
        log_table(trainer, self.metric_prefix + "per_layer", list(TABLE_COLUMNS), self._table_rows)
        self._table_rows = []

    # Warm-start state: the last spectrum of every layer, as plain tensors/floats for the checkpoint.
    def extra_state(self) -> dict[str, Any]:
        return {
            name: {**dataclasses.asdict(spectrum), "power_law": None}
            | {"left_vectors": spectrum.left_vectors.cpu(), "right_vectors": spectrum.right_vectors.cpu()}
            for name, spectrum in self._previous.items()
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._previous = {name: WeightSpectrum(**fields) for name, fields in state.items()}
