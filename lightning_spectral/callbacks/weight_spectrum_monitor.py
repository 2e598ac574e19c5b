"""``WeightSpectrumMonitor``: singular values and singular-vector dynamics of every weight matrix during fit."""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from lightning_spectral._internal.deprecation import renamed_keywords
from lightning_spectral._internal.validation import (
    check_bool,
    check_choice,
    check_int,
    check_open_unit_interval,
)
from lightning_spectral.callbacks._internal.collectives import has_distributed_parameters
from lightning_spectral.callbacks._internal.metric_logging import log_table
from lightning_spectral.callbacks._internal.parameter_patterns import check_weight_patterns
from lightning_spectral.callbacks.base import SpectralMonitor
from lightning_spectral.functional.weights.farms import FarmsFit, farms_alpha
from lightning_spectral.functional.weights.interlayer_alignment import (
    AlignmentPair,
    attention_alignment,
    attention_modules,
    consecutive_pairs,
    pair_alignment,
)
from lightning_spectral.functional.weights.matrices import CONV_MODES, ConvMode, WeightMatrix, weight_matrices
from lightning_spectral.functional.weights.power_law import PowerLawFit, power_law_alpha
from lightning_spectral.functional.weights.singular_dynamics import AGREEMENT_TOP, agreement_score
from lightning_spectral.functional.weights.spectrum import (
    DEFAULT_TOL,
    METHODS,
    WeightSpectrum,
    WeightSpectrumMethod,
    weight_spectra,
)

TABLE_COLUMNS = (
    "step",
    "layer",
    "sigma_max",
    "stable_rank",
    "effective_rank",
    "effective_rank_estimate",
    "alpha",
)
#: Allowed values of ``alpha`` (one, or a sequence of them).
AlphaMode = Literal["plain", "farms", "weightwatcher"]
ALPHA_MODES: tuple[AlphaMode, ...] = get_args(AlphaMode)


class WeightSpectrumMonitor(SpectralMonitor):
    """Randomized SVD of every weight matrix of the model on a schedule.

    Per layer, under ``spectral/weights/<name>/``: ``sigma_max``, ``sigma_1 .. sigma_k``,
    ``frobenius_norm``, ``stable_rank``, ``effective_rank`` (exact; a layer decomposed by the randomized SVD logs
    the tail-spreading estimate as ``effective_rank_estimate`` instead), ``alpha`` (where a power-law fit is
    possible), from the second measurement on ``agreement`` (Yunis et al.'s singular-vector agreement with the
    previous measurement, mean of the first ``min(10, k)`` indices) and ``rotation`` (drift of the top-``k`` left
    subspace), ``condition_number`` and the rank measures ``stable_rank_ratio``, ``effective_rank_ratio``,
    ``mass90_count``, ``gini`` (when asked for), ``alpha_farms`` and ``alpha_weightwatcher`` (when asked
    for with ``alpha``); with ``interlayer_alignment`` the score of each pair of consecutive
    matrices under ``spectral/weights/alignment/<pair>``; the aggregates ``spectral/weights/mean_stable_rank`` and
    ``spectral/weights/max_sigma_max``; and a histogram of each layer's singular values every
    ``histogram_every_n`` measurements on loggers that draw histograms. A model with more than
    ``per_layer_limit`` matrices (a BERT has 150+) logs the aggregates only, plus the per-layer keys that a
    stopper, ``EarlyStopping`` or ``ModelCheckpoint`` watches (every layer's numbers still go to the W&B table
    ``spectral/weights/per_layer`` at the end of the fit). The numerics are in
    :mod:`lightning_spectral.functional.weights.spectrum`, :mod:`~lightning_spectral.functional.weights.singular_dynamics`
    and :mod:`~lightning_spectral.functional.weights.interlayer_alignment` (definitions and formulas there).

    Replicated weights (one process, DDP) are decomposed on rank 0 and the numbers broadcast. Sharded ``DTensor``
    weights (Lightning's ``ModelParallelStrategy``: FSDP2's ``fully_shard``, tensor parallelism) are gathered one
    matrix at a time, every rank joining each all-gather, and rank 0 decomposes each whole matrix before the next
    is gathered (:meth:`~lightning_spectral.callbacks._internal.collectives.MeasurementCollectives.full_tensor`).

    Args:
        every_n_steps: measure every n optimizer steps (see :class:`SpectralMonitor`); default: the automatic
            schedule when neither ``every_n_steps`` nor ``every_n_epochs`` is given.
        every_n_epochs: measure at the end of every n-th epoch.
        log_spacing: also measure at steps 1, 2, 4, ... below ``every_n_steps``.
        at_train_start: measure the initial weights.
        k: leading singular triplets computed per matrix, logged as ``sigma_1 .. sigma_k``; also the
            indices whose ``agreement`` (score: the first ``min(10, k)``; ``k >= 10`` gives Yunis et al.'s
            score) and inter-layer alignment are measured, and the subspace whose ``rotation`` is reported
            (clipped to ``min(m, n)`` per layer).
        method: ``"auto"`` (exact SVD for small matrices, randomized above a measured threshold),
            ``"exact"`` or ``"randomized"``.
        num_power_iterations: power iterations of the randomized SVD.
        num_oversamples: extra sketch columns of the randomized SVD.
        exact_threshold: ``"auto"`` is exact when ``min(m, n) <= exact_threshold`` (default: measured
            crossover, see :func:`~lightning_spectral.functional.weights.spectrum.weight_spectrum`).
        tol: accuracy check of randomized results: above this relative residual ``max_i ρ_i/σ_i`` the top
            ``k`` are recomputed by Lanczos (flat spectra, e.g. at initialization); ``None`` turns it off.
        warm_start: seed each range finder with the layer's previous right singular vectors (followed by a cold
            start's Gaussian columns); ``agreement`` and ``rotation`` are logged either way.
        include: glob pattern(s) on parameter names to keep (default: every supported layer).
        exclude: glob pattern(s) on parameter names to drop. A pattern of either that matches no weight matrix
            raises ``ValueError`` at setup, naming it and the closest names.
        trainable_only: skip parameters with ``requires_grad=False``.
        conv_mode: ``"flatten"`` (``(out, in·∏k)`` per convolution) or ``"per_position"``.
        split_fused: measure attention's ``in_proj_weight`` as its ``.q/.k/.v`` blocks and recurrent weights as
            their gate blocks (default); ``False``: each fused matrix whole, as one matrix.
        compute_condition_number: also log ``condition_number`` = σ_1/σ_k of the top-k block.
        alpha: which power-law exponents to log, one of ``"plain"``, ``"farms"``, ``"weightwatcher"`` or a
            sequence of them. ``alpha`` (the default fit of the whole matrix, where it is decomposed exactly)
            is always logged; ``"farms"`` adds ``alpha_farms`` for every matrix, the FARMS exponent free of
            aspect-ratio bias (:func:`~lightning_spectral.functional.weights.farms.farms_alpha` with its defaults:
            at most 81 blocks of 100×100 per matrix, ``x_min`` at the median), comparable across layers of
            different shapes; ``"weightwatcher"`` adds ``alpha_weightwatcher`` where ``alpha`` is logged,
            WeightWatcher's fit of the same eigenvalues (``power_law_alpha(..., fit="weightwatcher")``).
        compute_rank_measures: also log ``stable_rank_ratio`` (stable rank / ``min(m, n)``) and, for layers
            decomposed exactly, ``effective_rank_ratio``, ``mass90_count`` (fewest singular values holding 90 %
            of ``Σσ``) and ``gini`` (Gini coefficient of the singular values).
        interlayer_alignment: ``True``: log the alignment score (mean of the first ``min(10, k)`` entries of
            ``diag |V_{l+1}ᵀ U_l|``) of every pair of consecutive matrices found by
            :func:`~lightning_spectral.functional.weights.interlayer_alignment.consecutive_pairs` and, per attention
            layer, of each head's query/key pair (``<attn>.qk[h]``) and the value→output pair (``<attn>.vo``;
            not for sharded weights); a list of ``(earlier, later)`` matrix names: those pairs only;
            ``False`` (default): none.
        histogram_every_n: log singular-value histograms every n-th measurement (0: never).
        per_layer_limit: per-layer scalars and histograms are logged while the monitor measures at most this many
            matrices (``None``: always); above it only the aggregates, the per-layer keys another callback
            watches (its ``monitor`` pattern, e.g. ``SpectralEarlyStopping.rank_collapse``) and the W&B table,
            and one message at the first measurement says so. Choose layers with ``include`` / ``exclude``.
        seed: seeds the random sketches.
        strict: re-raise measurement errors instead of disabling the monitor.
        max_overhead: a time budget (see :class:`~lightning_spectral.callbacks.SpectralMonitor`).
        name: the name its metrics go under (see :class:`~lightning_spectral.callbacks.SpectralMonitor`).
        auto_schedule_budget: the shared budget of the automatic schedule (see
            :class:`~lightning_spectral.callbacks.SpectralMonitor`).

    Raises:
        ValueError: an argument out of range (the message names it and what is allowed).

    Example::

        trainer = Trainer(callbacks=[WeightSpectrumMonitor(every_n_steps=100, log_spacing=True)])
    """

    monitor_name = "weights"
    primary_metrics = ("max_sigma_max", "mean_stable_rank")
    needs_batch = False
    upcasts_half_precision = False  # reads the weights only; weight_spectrum upcasts each matrix itself
    supports_dtensor_parameters = True
    metric_summaries = {
        "*sigma_max": "max",
        "*/sigma_*": "max",
        "*stable_rank": "min",
        "*/effective_rank": "min",
        "*/effective_rank_estimate": "min",
        "*/rotation": "max",
        "*/agreement": "min",
    }

    @renamed_keywords(n_iter="num_power_iterations", oversample="num_oversamples")
    def __init__(
        self,
        *,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        log_spacing: bool = False,
        at_train_start: bool = True,
        k: int = 5,
        method: WeightSpectrumMethod = "auto",
        num_power_iterations: int = 2,
        num_oversamples: int = 10,
        exact_threshold: int | None = None,
        tol: float | None = DEFAULT_TOL,
        warm_start: bool = True,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        trainable_only: bool = False,
        conv_mode: ConvMode = "flatten",
        split_fused: bool = True,
        compute_condition_number: bool = False,
        alpha: AlphaMode | Sequence[AlphaMode] = "plain",
        compute_rank_measures: bool = False,
        interlayer_alignment: bool | Sequence[tuple[str, str]] = False,
        histogram_every_n: int = 1,
        per_layer_limit: int | None = 64,
        seed: int = 0,
        strict: bool = False,
        max_overhead: float | None = None,
        name: str | None = None,
        auto_schedule_budget: float | None = None,
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
            auto_schedule_budget=auto_schedule_budget,
        )
        check_int("k", k, 1)
        check_choice("method", method, METHODS)
        check_int("num_power_iterations", num_power_iterations, 0)
        check_int("num_oversamples", num_oversamples, 0)
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
        if not isinstance(alpha, (str, Sequence)):
            raise TypeError(f"`alpha` must be a string or a sequence of strings, got {type(alpha).__name__}.")
        if not isinstance(alpha, str) and not alpha:
            raise ValueError(
                f"`alpha` must be one of {ALPHA_MODES} or a non-empty sequence of them, got {alpha!r}."
            )
        for mode in (alpha,) if isinstance(alpha, str) else alpha:
            check_choice("alpha", mode, ALPHA_MODES)
        check_bool("split_fused", split_fused)
        check_bool("compute_rank_measures", compute_rank_measures)
        self.interlayer_alignment = _check_pairs(interlayer_alignment)
        self.k = k
        self.method = method
        self.num_power_iterations = num_power_iterations
        self.num_oversamples = num_oversamples
        self.exact_threshold = exact_threshold
        self.tol = tol
        self.warm_start = warm_start
        self.include = include
        self.exclude = exclude
        self.trainable_only = trainable_only
        self.conv_mode = conv_mode
        self.compute_condition_number = compute_condition_number
        self.alpha = alpha
        self._alpha_modes = frozenset((alpha,) if isinstance(alpha, str) else alpha)
        self.split_fused = split_fused
        self.compute_rank_measures = compute_rank_measures
        self.histogram_every_n = histogram_every_n
        self.per_layer_limit = per_layer_limit
        self._every_layer = True  # whether this measurement logs every layer's scalars (per_layer_limit)
        self._watched: list[str] = []  # the metric patterns of other callbacks under this monitor's prefix
        self._told_limit = False
        self._previous: dict[str, WeightSpectrum] = {}
        self._table_rows: list[list[Any]] = []

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        check_weight_patterns(pl_module, self.include, self.exclude, self.conv_mode, type(self).__name__)
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning's CallbackConnector, undeclared
        self._watched = [
            monitor
            for callback in callbacks
            if isinstance(monitor := getattr(callback, "monitor", None), str)
            and monitor.startswith(self.metric_prefix)
        ]

    @override
    def measure(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: list[Any]
    ) -> Mapping[str, float]:
        # Weights are replicated across DDP ranks: rank 0 decomposes them, the others receive its numbers (so
        # `callback_metrics`, and any stopping decision on them, agree on every rank). Sharded (DTensor)
        # weights are gathered one matrix at a time, every rank taking part in each gather.
        if has_distributed_parameters(pl_module):
            values = self._measure_sharded(trainer, pl_module, self._matrices(pl_module))
        elif self.collectives.rank == 0:
            values = self._measure_replicated(trainer, pl_module, self._matrices(pl_module))
        else:
            values = None
        values = self.collectives.broadcast(values, src=0)
        assert values is not None  # rank 0's numbers
        return {key: value for key, value in values.items() if self._logs_key(key)}

    def _logs_key(self, key: str) -> bool:
        """Whether metric ``key`` is logged: an aggregate, every key within ``per_layer_limit``, or a watched one."""
        return (
            self._every_layer
            or "/" not in key
            or any(fnmatch.fnmatchcase(self.metric_prefix + key, pattern) for pattern in self._watched)
        )

    def _matrices(self, pl_module: pl.LightningModule) -> list[WeightMatrix]:
        with warnings.catch_warnings():
            if self.num_measurements > 0:  # unmatched include/exclude patterns are reported once
                warnings.simplefilter("ignore", UserWarning)
            matrices = weight_matrices(
                pl_module,
                include=self.include,
                exclude=self.exclude,
                trainable_only=self.trainable_only,
                conv_mode=self.conv_mode,
                split_fused=self.split_fused,
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

    def _measure_replicated(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, matrices: list[WeightMatrix]
    ) -> dict[str, float]:
        """All matrices at once (same-shape layers are decomposed as one batch), on rank 0."""
        # A layer with NaN / inf entries gets NaN metrics (the base class warns once); the others are measured.
        everything = matrices
        broken = [m.name for m in matrices if not bool(torch.isfinite(m.matrix).all())]
        matrices = [m for m in matrices if m.name not in broken]
        spectra = self._spectra(matrices) if matrices else []
        values = self._alignment_values(everything, dict(zip((m.name for m in matrices), spectra)), pl_module)
        return (
            values
            | self._values(trainer, [(m.name, s) for m, s in zip(matrices, spectra)], broken)
            | self._alpha_values(matrices, spectra)
        )

    def _measure_sharded(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, matrices: list[WeightMatrix]
    ) -> dict[str, float] | None:
        """One matrix at a time: every rank joins its all-gather, rank 0 decomposes the whole matrix and drops
        it before the next (memory: one full matrix at a time); the values on rank 0, ``None`` elsewhere.
        """
        measured: list[tuple[str, WeightSpectrum]] = []
        broken: list[str] = []
        alphas: dict[str, float] = {}
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
            alphas.update(self._alpha_values([whole], measured[-1][1:]))
            del full, whole
        if self.collectives.rank != 0:
            return None
        # attention pairs would need each attention layer's whole weights again: consecutive pairs only
        values = self._alignment_values(matrices, dict(measured), None)
        return values | self._values(trainer, measured, broken) | alphas

    def _alpha_values(
        self, matrices: list[WeightMatrix], spectra: Sequence[WeightSpectrum]
    ) -> dict[str, float]:
        """``<name>/alpha_farms`` and ``<name>/alpha_weightwatcher`` as asked for by ``alpha`` (none where no
        fit is possible).
        """
        values = {}
        for matrix, spectrum in zip(matrices, spectra):
            fits: list[tuple[str, FarmsFit | PowerLawFit | None]] = []
            if "farms" in self._alpha_modes:
                fits.append(("alpha_farms", farms_alpha(matrix.matrix)))
            if "weightwatcher" in self._alpha_modes and spectrum.all_singular_values is not None:
                eigenvalues = spectrum.all_singular_values.double() ** 2
                fits.append(("alpha_weightwatcher", power_law_alpha(eigenvalues, fit="weightwatcher")))
            for key, fit in fits:
                if fit is not None and math.isfinite(fit.alpha):
                    values[f"{matrix.name}/{key}"] = fit.alpha
        return values

    def _pairs(self, matrices: list[WeightMatrix]) -> list[AlignmentPair]:
        if self.interlayer_alignment is True:
            return consecutive_pairs(matrices)
        known = {m.name for m in matrices}
        for pair in self.interlayer_alignment or ():
            for name in (pair.earlier, pair.later):
                if name not in known:
                    raise ValueError(
                        f"`interlayer_alignment` names {name!r}, which is not a measured weight matrix; "
                        f"the matrices are: {sorted(known)}."
                    )
        return list(self.interlayer_alignment or ())

    def _alignment_values(
        self,
        matrices: list[WeightMatrix],
        spectra: dict[str, WeightSpectrum],
        pl_module: pl.LightningModule | None,
    ) -> dict[str, float]:
        """``alignment/<pair>`` scores (NaN where a matrix of the pair is not finite)."""
        if self.interlayer_alignment is False:
            return {}
        types = {m.name: m.module_type for m in matrices}
        values = {}
        for pair in self._pairs(matrices):
            earlier, later = spectra.get(pair.earlier), spectra.get(pair.later)
            if earlier is None or later is None:
                values[f"alignment/{pair.name}"] = math.nan
                continue
            if (
                earlier.shape[0 if types[pair.earlier] not in ("Embedding", "EmbeddingBag") else 1]
                != later.shape[1]
            ):
                raise ValueError(
                    f"`interlayer_alignment` pair {pair.name!r}: {pair.earlier} {earlier.shape} does not feed "
                    f"{pair.later} {later.shape} (output and input dimensions differ)."
                )
            diagonal = pair_alignment(earlier, types[pair.earlier], later)
            values[f"alignment/{pair.name}"] = agreement_score(diagonal, AGREEMENT_TOP)
        if self.interlayer_alignment is True and pl_module is not None:
            for name, module in attention_modules(pl_module, matrices):
                if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                    values[f"alignment/{name}.vo"] = math.nan  # the base class warns about the broken layer
                    continue
                blocks = attention_alignment(
                    module,
                    name,
                    self.k,
                    method=self.method,
                    num_power_iterations=self.num_power_iterations,
                    num_oversamples=self.num_oversamples,
                    generator=self.make_generator(module.out_proj.weight.device),
                    exact_threshold=self.exact_threshold,
                    tol=self.tol,
                )
                values.update(
                    {f"alignment/{p}": agreement_score(d, AGREEMENT_TOP) for p, d in blocks.items()}
                )
        return values

    def _values(
        self, trainer: pl.Trainer, measured: list[tuple[str, WeightSpectrum]], broken: list[str]
    ) -> dict[str, float]:
        """The logged values of the decomposed layers (and NaN for the ``broken`` ones); histograms, the
        warm-start state and the table rows as a side effect.
        """
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
            [
                trainer.global_step,
                name,
                s.sigma_max,
                s.stable_rank,
                None if s.effective_rank_is_estimate else s.effective_rank,
                s.effective_rank if s.effective_rank_is_estimate else None,
                s.alpha,
            ]
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
            num_power_iterations=self.num_power_iterations,
            num_oversamples=self.num_oversamples,
            generator=self.make_generator(matrices[0].matrix.device) if generator is None else generator,
            exact_threshold=self.exact_threshold,
            tol=self.tol,
            warm_start=self.warm_start,
        )

    def _layer_values(self, spectrum: WeightSpectrum) -> dict[str, float]:
        # one key, one meaning: the tail-spreading estimate of a randomized top-k has its own key
        effective_rank_key = (
            "effective_rank_estimate" if spectrum.effective_rank_is_estimate else "effective_rank"
        )
        values = {
            "sigma_max": spectrum.sigma_max,
            "frobenius_norm": spectrum.frobenius_norm,
            "stable_rank": spectrum.stable_rank,
            effective_rank_key: spectrum.effective_rank,
        }
        for i, sigma in enumerate(spectrum.singular_values.tolist(), start=1):
            values[f"sigma_{i}"] = sigma
        if spectrum.alpha is not None and math.isfinite(spectrum.alpha):
            values["alpha"] = spectrum.alpha
        if spectrum.agreement is not None:
            values["agreement"] = agreement_score(spectrum.agreement, AGREEMENT_TOP)
        if spectrum.rotation is not None:
            values["rotation"] = spectrum.rotation
        if self.compute_condition_number:
            values["condition_number"] = spectrum.condition_number
        if self.compute_rank_measures:
            assert spectrum.stable_rank_ratio is not None  # set by weight_spectrum (None: older checkpoints)
            values["stable_rank_ratio"] = spectrum.stable_rank_ratio
            for key in ("effective_rank_ratio", "mass90_count", "gini"):
                if getattr(spectrum, key) is not None:  # exact decompositions only
                    values[key] = float(getattr(spectrum, key))
        return values

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Per-layer spectra of the whole run as one table (``spectral/weights/per_layer``, W&B only)."""
        super().on_fit_end(trainer, pl_module)
        log_table(trainer, self.metric_prefix + "per_layer", list(TABLE_COLUMNS), self._table_rows)
        self._table_rows = []

    # Warm-start state: the last spectrum of every layer, as plain tensors/floats for the checkpoint.
    @override
    def extra_state(self) -> dict[str, Any]:
        return {
            name: {**dataclasses.asdict(spectrum), "power_law": None}
            | {"left_vectors": spectrum.left_vectors.cpu(), "right_vectors": spectrum.right_vectors.cpu()}
            for name, spectrum in self._previous.items()
        }

    @override
    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._previous = {name: WeightSpectrum(**fields) for name, fields in state.items()}


def _check_pairs(value: object) -> bool | list[AlignmentPair]:
    """``interlayer_alignment``: a bool or a sequence of ``(earlier, later)`` name pairs."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            "`interlayer_alignment` must be True, False or a list of (earlier, later) weight-matrix name pairs, "
            f"got {value!r}."
        )
    pairs = []
    for item in value:
        if (
            isinstance(item, (str, bytes))
            or not isinstance(item, Sequence)
            or len(item) != 2
            or not all(isinstance(n, str) for n in item)
        ):
            raise ValueError(
                f"`interlayer_alignment` entries must be (earlier, later) pairs of weight-matrix names, got {item!r}."
            )
        pairs.append(AlignmentPair(item[0], item[1]))
    if not pairs:
        raise ValueError("`interlayer_alignment` must name at least one pair (or be True / False).")
    return pairs
