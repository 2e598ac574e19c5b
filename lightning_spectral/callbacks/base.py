"""``SpectralMonitor``: the shared base of every monitor (schedule, measurement batch, logging, state)."""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import math
import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_spectral._internal.validation import check_bool, check_int, check_open_unit_interval
from lightning_spectral.callbacks._internal.auto_schedule import DEFAULT_BUDGET, AutoSchedule
from lightning_spectral.callbacks._internal.collectives import (
    MeasurementCollectives,
    PeerMeasurementFailed,
    has_distributed_parameters,
)
from lightning_spectral.callbacks._internal.gathered_parameters import gathered_parameters
from lightning_spectral.callbacks._internal.half_precision_upcast import (
    float32_batch,
    float32_half_precision_tensors,
)
from lightning_spectral.callbacks._internal.measurement_batch import (
    draw_measurement_batches,
    to_module_device,
)
from lightning_spectral.callbacks._internal.metric_logging import (
    declare_metrics,
    log_config,
    log_figure,
    log_histogram,
    log_scalars,
)
from lightning_spectral.callbacks._internal.overhead_budget import OverheadBudget
from lightning_spectral.callbacks._internal.training_state_guard import preserved_training_state
from lightning_spectral.callbacks.schedule import Schedule
from lightning_spectral.linalg import NonFiniteError

SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")
"""Strategies (of either Lightning distribution, matched by class name) that shard parameters across ranks."""

DTENSOR_STRATEGIES = ("ModelParallelStrategy",)
"""The sharded strategies whose parameters are ``DTensor`` (FSDP2 / tensor parallel): a monitor with
``supports_dtensor_parameters`` gathers them (:meth:`MeasurementCollectives.full_tensor`)."""


_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def epoch_ran_to_its_end(trainer: pl.Trainer) -> bool:
    """Whether the training epoch now ending reached its last batch. Lightning also ends an epoch cut short
    (``max_steps`` reached, ``trainer.should_stop``): an epoch-based measurement there would be taken again when
    a run resumed from that point finishes the epoch, so epoch-based measurements wait for a whole epoch.
    """
    progress = getattr(
        getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_progress", None
    )
    return bool(getattr(progress, "is_last_batch", True))


def check_strategy_supported(strategy: Any, monitor: str, supports_dtensor_parameters: bool = False) -> None:
    """Raise ``NotImplementedError`` for a strategy that shards the parameters (FSDP, DeepSpeed, model
    parallel) unless the monitor can gather them: every monitor reads whole parameters, which such a strategy
    holds on no single rank. ``supports_dtensor_parameters``: the monitor gathers ``DTensor`` parameters, so
    :data:`DTENSOR_STRATEGIES` are allowed.
    """
    names = {cls.__name__ for cls in type(strategy).__mro__}
    sharded = next((name for name in SHARDED_STRATEGIES if name in names), None)
    if sharded is None or (supports_dtensor_parameters and sharded in DTENSOR_STRATEGIES):
        return
    if supports_dtensor_parameters:
        alternative = (
            "Use ModelParallelStrategy (FSDP2's fully_shard in configure_model), whose DTensor parameters this "
            "monitor measures (gathered, or -- HessianEigenMonitor and NTKTraceMonitor with `sharded_products` -- "
            "on the shards, for models that do not fit gathered), or strategy='ddp'"
        )
    else:
        alternative = "Use strategy='ddp' (or 'ddp_spawn') for runs you monitor"
    held = {
        "FSDPStrategy": "FSDP1 holds each rank's slice of flattened parameters (FlatParameter) outside the forward",
        "DeepSpeedStrategy": "DeepSpeed ZeRO holds each rank's partition of the parameters (ZeRO-3: empty "
        "placeholders outside the forward)",
    }.get(sharded, "it shards the parameters across ranks")
    raise NotImplementedError(
        f"{monitor} does not support {sharded}: {held}, and the monitor needs whole parameters (weight "
        f"matrices, parameter-space Hessian-vector products, per-example gradients). {alternative}, or measure "
        "checkpoints offline with lightning_spectral.functional (weight_spectrum, hessian_eigenvalues, ntk_trace) "
        "on a model with the consolidated state dict."
    )


def check_data_parallel_mesh(strategy: Any, monitor: str) -> None:
    """Refuse a ``ModelParallelStrategy`` mesh with tensor parallelism for a monitor that reduces its measurement
    over all ranks as data-parallel shards (:mod:`~lightning_spectral.callbacks._internal.gathered_parameters`).
    """
    mesh = (
        getattr(strategy, "_device_mesh", None)  # (the property raises before the processes start)
        if "ModelParallelStrategy" in {cls.__name__ for cls in type(strategy).__mro__}
        else None
    )
    if mesh is None or "tensor_parallel" not in (mesh.mesh_dim_names or ()):
        return
    size = mesh["tensor_parallel"].size()
    if size > 1:
        raise NotImplementedError(
            f"{monitor} supports ModelParallelStrategy with data parallelism only (FSDP2's fully_shard over the "
            f"data-parallel mesh), got tensor_parallel_size={size}: ranks of a tensor-parallel group share a batch, "
            "and the monitor's reductions treat every rank's batch as its own shard. Use "
            "ModelParallelStrategy(tensor_parallel_size=1) or strategy='ddp' for runs you measure with it; "
            "WeightSpectrumMonitor supports tensor parallelism."
        )


class SpectralMonitor(Callback):
    """Base class of the spectral monitors.

    Args:
        every_n_steps: measure whenever ``trainer.global_step`` is a multiple of this. With neither this nor
            ``every_n_epochs`` the monitor follows the automatic schedule (``auto_schedule_budget``).
        every_n_epochs: measure at the end of every ``every_n_epochs``-th training epoch.
        log_spacing: also measure at steps 1, 2, 4, 8, ... below ``every_n_steps`` (dense early).
        at_train_start: measure the initial model (step 0) from ``on_train_start``.
        batch: a fixed measurement batch, as the train dataloader yields it (it goes through the precision
            plugin's input conversion, the batch-transfer hooks and the device transfer like a training batch,
            and ``training_step`` receives the result); ``None`` draws ``num_batches``
            batches from the train dataloader at fit start, under ``seed``.
        num_batches: how many batches to draw when ``batch`` is ``None``.
        seed: seeds the measurement batch draw and every random probe of the measurements (a generator of
            the monitor's own; the training run's random state is never consumed).
        strict: re-raise errors raised inside a measurement instead of reporting them once and disabling
            the monitor for the rest of the run.
        max_overhead: a time budget, a float in (0, 1): a scheduled measurement is skipped while this
            monitor's measuring time exceeds ``max_overhead`` times the training time so far (see
            :mod:`~lightning_spectral.callbacks._internal.overhead_budget`); the overhead then stays within the budget
            plus one measurement, and ``spectral/<monitor>/overhead`` logs the ratio of measuring to training
            time after each measurement. ``None`` (default): every scheduled step is measured.
        name: this monitor's name: its metrics, run config and checkpoint state go under ``spectral/<name>/``
            instead of ``spectral/<monitor_name>/`` (``hessian``, ``ntk``, ``weights``). Needed for a second
            monitor of the same class, e.g. ``HessianEigenMonitor(params="head.*", name="hessian_head")``;
            two monitors that would log under one prefix are refused at setup. The spectral report draws the
            default names only.
        auto_schedule_budget: with neither ``every_n_steps`` nor ``every_n_epochs``: the fraction of the
            training time, in (0, 1), that *all* automatically scheduled monitors of the ``Trainer`` together
            may spend measuring (default ``None``: 0.05). They measure on the same steps: step 0, a few early
            steps, then every ``P`` steps, ``P`` of the 1-2-5 sequence chosen from the measured costs of a
            measurement and of a training step (:mod:`~lightning_spectral.callbacks._internal.auto_schedule`); ``P``
            goes into the run config and the checkpoint (a resumed run keeps it), and ``every_n_steps=P``
            repeats it. Monitors given different values share the smallest. Given with an explicit schedule:
            ``ValueError`` (use ``max_overhead`` there).

    Raises:
        ValueError: an argument outside its allowed values (the message names it).

    Example::

        class ParameterNorm(SpectralMonitor):
            monitor_name = "norm"

            def measure(self, trainer, pl_module, batches):
                return {"total": float(sum(p.detach().norm() ** 2 for p in pl_module.parameters()) ** 0.5)}

        Trainer(callbacks=[ParameterNorm(every_n_steps=100)])  # logs spectral/norm/total
    """

    #: The ``<monitor>`` part of the metric keys ``spectral/<monitor>/<metric>``.
    monitor_name: ClassVar[str] = ""
    #: Whether :meth:`measure` needs the measurement batch (the weight monitor does not).
    needs_batch: ClassVar[bool] = True
    #: ``every_n_steps`` used when neither ``every_n_steps`` nor ``every_n_epochs`` is given (None: the automatic
    #: schedule, :mod:`~lightning_spectral.callbacks._internal.auto_schedule`).
    default_every_n_steps: ClassVar[int | None] = None
    #: Metrics logged as NaN when the first measurement already meets non-finite numbers.
    primary_metrics: ClassVar[tuple[str, ...]] = ()
    #: W&B run summary per metric name (fnmatch patterns, first match wins; unmatched metrics: ``"last"``).
    metric_summaries: ClassVar[dict[str, str]] = {}
    #: Whether :meth:`measure` gathers ``DTensor`` parameters, so that the monitor runs under
    #: :data:`DTENSOR_STRATEGIES` (the other sharded strategies are refused at setup).
    supports_dtensor_parameters: ClassVar[bool] = False
    #: Whether :meth:`measure` runs on whole parameters: under a sharded (``DTensor``) model it then runs inside
    #: :func:`~lightning_spectral.callbacks._internal.gathered_parameters.gathered_parameters` (the module with its
    #: parameters gathered and FSDP's forward hooks set aside), data-parallel over all ranks as under DDP.
    measures_gathered_parameters: ClassVar[bool] = False
    #: Whether a model stored in float16 / bfloat16 (``precision="16-true"`` / ``"bf16-true"``) is measured
    #: through float32 copies of its parameters, buffers and batch
    #: (:mod:`~lightning_spectral.callbacks._internal.half_precision_upcast`): monitors that run the model do this.
    upcasts_half_precision: ClassVar[bool] = True

    def __init__(
        self,
        *,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        log_spacing: bool = False,
        at_train_start: bool = True,
        batch: Any = None,
        num_batches: int = 1,
        seed: int = 0,
        strict: bool = False,
        max_overhead: float | None = None,
        name: str | None = None,
        auto_schedule_budget: float | None = None,
    ) -> None:
        super().__init__()
        if not self.monitor_name:
            raise TypeError(f"{type(self).__name__} must set the class attribute `monitor_name`.")
        if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name)):
            raise ValueError(
                f"`name` must be None or a non-empty string of letters, digits, '_', '-' and '.', got {name!r}."
            )
        self.name = name
        if every_n_steps is None and every_n_epochs is None:
            every_n_steps = self.default_every_n_steps
        automatic = every_n_steps is None and every_n_epochs is None
        if automatic:
            check_bool("log_spacing", log_spacing)
            if log_spacing:
                raise ValueError(
                    "`log_spacing`=True needs `every_n_steps` (the regular interval after the dense start); "
                    "without a schedule the automatic one is dense early already."
                )
            check_bool("at_train_start", at_train_start)
            budget = DEFAULT_BUDGET if auto_schedule_budget is None else auto_schedule_budget
            check_open_unit_interval("auto_schedule_budget", budget)
            self.schedule: Schedule | None = None
        else:
            if auto_schedule_budget is not None:
                raise ValueError(
                    "`auto_schedule_budget` applies to the automatic schedule only (neither `every_n_steps` nor "
                    "`every_n_epochs` given); an explicit schedule keeps its exact steps, and `max_overhead` "
                    f"puts a budget on it. Got auto_schedule_budget={auto_schedule_budget!r}."
                )
            budget = None
            self.schedule = Schedule(
                every_n_steps=every_n_steps,
                every_n_epochs=every_n_epochs,
                log_spacing=log_spacing,
                at_train_start=at_train_start,
            )
        self.at_train_start = at_train_start
        self.auto_schedule_budget = budget
        #: Seconds as a float, for the automatic schedule's costs (replaceable: the tests drive it by hand).
        self.clock: Callable[[], float] = time.perf_counter
        self._auto: AutoSchedule | None = None
        self._loaded_auto_schedule: dict[str, Any] | None = None
        self._measurements_this_fit = 0
        self._measure_seconds = 0.0
        check_int("num_batches", num_batches, 1)
        check_int("seed", seed, 0)
        check_bool("strict", strict)
        if max_overhead is not None:
            check_open_unit_interval("max_overhead", max_overhead)
        self.max_overhead = max_overhead
        # one clock times the measurements for the automatic schedule and for the budget
        self.budget = OverheadBudget(max_overhead, clock=self._now) if max_overhead is not None else None
        self.user_batch = batch
        self.num_batches = num_batches
        self.seed = seed
        self.strict = strict
        self._batches: list[Any] = []
        self._last_measured_step: int | None = None
        self._previous_step = 0  # the global step at the last train-batch check (see Schedule.is_due)
        self._due_step: int | None = None
        self._num_measurements = 0
        self._disabled = False
        self._declared_metrics: set[str] = set()
        self._collectives: MeasurementCollectives | None = None
        self._gathered_originals: dict[int, torch.Tensor] = {}
        self._warned_non_finite = False

    # ------------------------------------------------------------------ subclass interface
    def measure(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batches: list[Any]
    ) -> Mapping[str, float]:
        """Measure the model; return ``{metric: value}`` (logged as ``spectral/<monitor_name>/<metric>``).

        Runs inside :func:`preserved_training_state`: the model may be put in eval mode, gradients may be
        computed with ``torch.autograd.grad``; everything is restored afterwards.

        Args:
            trainer: the running ``Trainer``.
            pl_module: the model being trained.
            batches: the measurement batches, on the model's device.

        Returns:
            ``{metric: value}``.
        """
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """Subclass state to checkpoint (e.g. warm-start vectors); tensors are fine."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # ------------------------------------------------------------------ helpers for subclasses
    @property
    def collectives(self) -> MeasurementCollectives:
        """The failure-aware collectives of the measurement in progress (identity on one process): combine the
        ranks' pieces of a measurement only through these, so a rank that fails cannot leave the others
        waiting (see :mod:`lightning_spectral.callbacks._internal.collectives`).
        """
        if self._collectives is None:
            raise RuntimeError("`collectives` is only available inside `measure`.")
        return self._collectives

    @property
    def metric_prefix(self) -> str:
        """``spectral/<name>/``, the monitor's ``name`` or, by default, its class's ``monitor_name``."""
        return f"spectral/{self.name or self.monitor_name}/"

    @property
    def auto_schedule(self) -> AutoSchedule | None:
        """The trainer's shared automatic schedule this monitor follows (``None``: an explicit schedule, or
        before setup): its ``period``, ``early_steps`` and ``budget``.
        """
        return self._auto

    @property
    def num_measurements(self) -> int:
        """How many measurements this monitor has completed (across resumes)."""
        return self._num_measurements

    def make_generator(self, device: torch.device | str, per_rank: bool = False) -> torch.Generator:
        """A generator of the monitor's own, seeded by ``seed`` and the measurement count (reproducible); with
        ``per_rank`` also by the global rank, for the shards of a random vector that each rank draws (sharded
        vectors: equal draws on every rank would make the shards repeat one another).

        Args:
            device: the generator's device (that of the vectors it draws).
            per_rank: also seed by the global rank.

        Returns:
            A seeded ``torch.Generator``.
        """
        generator = torch.Generator(device=torch.device(device))
        rank = self._collectives.rank if per_rank and self._collectives is not None else 0
        generator.manual_seed(self.seed * 1_000_003 + self._num_measurements + rank * 7_919)
        return generator

    def log_histogram(self, trainer: pl.Trainer, name: str, values: torch.Tensor) -> None:
        """Histogram ``spectral/<monitor>/<name>`` to the loggers that support it."""
        log_histogram(trainer, self.metric_prefix + name, values, trainer.global_step)

    def log_figure(self, trainer: pl.Trainer, name: str, figure: Any) -> None:
        """Matplotlib figure ``spectral/<monitor>/<name>`` to the loggers that support it."""
        log_figure(trainer, self.metric_prefix + name, figure, trainer.global_step)

    def summary_for(self, name: str) -> str:
        """The W&B run summary of metric ``name`` (see :attr:`metric_summaries`)."""
        return next(
            (summary for pattern, summary in self.metric_summaries.items() if fnmatch.fnmatch(name, pattern)),
            "last",
        )

    def config(self) -> dict[str, Any]:
        """The constructor arguments, as plain values for a run config (callables by qualified name)."""
        config: dict[str, Any] = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name in ("self", "batch"):
                continue
            value = getattr(self.schedule, name, getattr(self, name, None))
            if callable(value):
                value = getattr(value, "__qualname__", repr(value))
            elif isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            config[name] = value
        if self.schedule is None:
            config["every_n_steps"] = "auto"  # the chosen period is written here when it is chosen
            config["auto_schedule_budget"] = self.auto_schedule_budget
        config["batch"] = "user" if self.user_batch is not None else "drawn from the train dataloader"
        return config

    # ------------------------------------------------------------------ Lightning hooks
    @property
    @override
    def state_key(self) -> str:
        # the monitor's identity, not its settings: a resumed run whose schedule changed still gets its state.
        # Cached: Lightning reads it around every hook call of every callback (its profiler's action name), and
        # building it (a dict's repr) would cost each monitor microseconds on every training step.
        name = self.name or self.monitor_name
        cached = self.__dict__.get("_cached_state_key")
        if cached is None or cached[0] != name:
            cached = self._cached_state_key = (name, self._generate_state_key(name=name))
        return cached[1]

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_strategy_supported(trainer.strategy, type(self).__name__, self.supports_dtensor_parameters)
        if self.measures_gathered_parameters:
            check_data_parallel_mesh(trainer.strategy, type(self).__name__)
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning's CallbackConnector, undeclared
        others = [c for c in callbacks if isinstance(c, SpectralMonitor) and c is not self]
        clash = next((c for c in others if c.metric_prefix == self.metric_prefix), None)
        if clash is not None:
            raise ValueError(
                f"{type(self).__name__} and {type(clash).__name__} would both log under {self.metric_prefix!r} and "
                "overwrite each other's metrics: give each monitor its own `name=` (e.g. "
                f"name='{self.monitor_name}_head'), whose metrics then go to spectral/<name>/."
            )
        if self.schedule is None:
            assert self.auto_schedule_budget is not None  # given (or defaulted) with the automatic schedule
            self._auto = AutoSchedule.join(trainer, self, self.auto_schedule_budget)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_config(trainer, {f"{self.metric_prefix}{name}": value for name, value in self.config().items()})

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.budget is not None:
            self.budget.start()
        self._measurements_this_fit = 0
        if self._auto is not None:
            self._auto.start(trainer)
        if self.needs_batch:
            if self.user_batch is not None:
                self._batches = [to_module_device(trainer, self.user_batch)]
            else:
                self._batches = draw_measurement_batches(trainer, self.num_batches, self.seed)
        self._previous_step = trainer.global_step
        if self.schedule is None:  # automatic: the initial model (step 0), then the shared schedule's steps
            due = trainer.global_step == 0 and self.at_train_start
        else:
            due = self.schedule.is_measurement_step(trainer.global_step)
        self._due_step = trainer.global_step if due else None
        if self._due_step is not None:
            self._measure_and_log(trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self._auto is not None:
            due = step > self._previous_step and self._auto.due(trainer, step)
        else:
            assert self.schedule is not None  # without the automatic schedule (``_auto``), an explicit one
            due = self.schedule.is_due(self._previous_step, step)
        self._previous_step = step
        if due:
            self._due_step = step
            self._measure_and_log(trainer, pl_module)

    def measurement_due_at(self, step: int) -> bool:
        """Whether the step-based schedule had a measurement due at global step ``step`` in this monitor's last
        ``on_train_start`` / ``on_train_batch_end`` (the same on every rank: decided from global steps alone).

        Args:
            step: a global step.

        Returns:
            Whether a measurement was due there.
        """
        return self._due_step == step

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (
            self.schedule is not None
            and self.schedule.is_measurement_epoch(trainer.current_epoch)
            and epoch_ran_to_its_end(trainer)
        ):
            self._measure_and_log(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = []
        if self._auto is not None:
            self._auto.end_fit(trainer.global_step)
        if self.budget is not None and self.budget.num_skipped:
            rank_zero_info(
                f"{type(self).__name__}: {self.budget.num_skipped} scheduled measurement(s) skipped to keep the "
                f"time spent measuring within max_overhead={self.max_overhead} of the training time "
                f"({self._num_measurements} taken, overhead {self.budget.overhead():.3f})."
            )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "last_measured_step": self._last_measured_step,
            "num_measurements": self._num_measurements,
            "disabled": self._disabled,
            "extra": self.extra_state(),
            "budget": None if self.budget is None else self.budget.state_dict(),
            "measure_seconds": self._measure_seconds,
            "auto_schedule": None if self._auto is None else self._auto.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_measured_step = state_dict["last_measured_step"]
        self._num_measurements = state_dict["num_measurements"]
        self._disabled = state_dict["disabled"]
        self.load_extra_state(state_dict["extra"])
        if self.budget is not None and state_dict.get("budget"):
            self.budget.load_state_dict(state_dict["budget"])
        self._measure_seconds = float(state_dict.get("measure_seconds", 0.0))
        if self.schedule is None:
            self._loaded_auto_schedule = state_dict.get("auto_schedule")  # adopted at train start

    # ------------------------------------------------------------------ the measurement
    def _now(self) -> float:
        """``self.clock()``, read late: a test may replace ``clock`` after construction."""
        return self.clock()

    def _measure_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if self._disabled or trainer.sanity_checking or step == self._last_measured_step:
            return
        if self.budget is not None and not self._budget_allows(trainer):
            return
        started = self.clock()
        collectives = MeasurementCollectives(trainer)
        self._collectives = collectives
        try:
            try:
                with (
                    preserved_training_state(pl_module),
                    self._whole_parameters(pl_module, collectives),
                    self._measurement_dtype(pl_module) as upcast,
                ):
                    batches = [float32_batch(b) for b in self._batches] if upcast else self._batches
                    values = dict(self.measure(trainer, pl_module, batches))
            except PeerMeasurementFailed:
                raise
            except Exception as error:
                collectives.report_failure(non_finite=isinstance(error, NonFiniteError))
                raise
            collectives.finish()
        except NonFiniteError as error:  # NaN / inf met (here or on another rank): a finding, not a failure
            values = {name: math.nan for name in self.non_finite_metrics()}
            self._warn_non_finite(step, str(error))
        except Exception as error:
            if self.strict:
                raise
            self._disabled = True
            self._report_failure(trainer, step, error)
            return
        finally:
            self._collectives = None
        bad = sorted(name for name, value in values.items() if not math.isfinite(value))
        if bad:
            self._warn_non_finite(
                step, f"non-finite values of {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
            )
        self._last_measured_step = step
        self._num_measurements += 1
        seconds = self.clock() - started
        self._measure_seconds += seconds
        if self._auto is None:
            AutoSchedule.add_other_measurement(trainer, seconds)
        else:
            self._auto.add_measurement(self, seconds, first_of_fit=self._measurements_this_fit == 0)
            train = self._auto.train_seconds()
            if train > 0:  # none yet at train start
                values["overhead"] = self._measure_seconds / train  # this monitor's share
        self._measurements_this_fit += 1
        if self.budget is not None:
            self.budget.add_measurement(seconds)
            if self.budget.train_seconds() > 0:  # none yet at train start
                values["overhead"] = self.budget.overhead()
        new_names = [name for name in values if name not in self._declared_metrics]
        declare_metrics(trainer, {self.metric_prefix + name: self.summary_for(name) for name in new_names})
        self._declared_metrics.update(new_names)
        log_scalars(trainer, {self.metric_prefix + name: value for name, value in values.items()}, step)

    def _whole_parameters(
        self, pl_module: pl.LightningModule, collectives: MeasurementCollectives
    ) -> contextlib.AbstractContextManager[Any]:
        """Under a sharded (``DTensor``) model, the module with whole parameters for a monitor that measures on
        them (:attr:`measures_gathered_parameters`); :attr:`trained_parameter` maps them back meanwhile.
        """
        if not (self.measures_gathered_parameters and has_distributed_parameters(pl_module)):
            return contextlib.nullcontext()
        if not self.gathers_parameters(pl_module, collectives):
            return contextlib.nullcontext()  # the sharded path: measure() meets the DTensor shards
        return self._gathered(pl_module, collectives)

    def gathers_parameters(self, pl_module: pl.LightningModule, collectives: MeasurementCollectives) -> bool:
        """Whether a measurement of a sharded (``DTensor``) model runs on the gathered parameters (default) or
        on the shards (a subclass with a sharded path, deciding the same on every rank).

        Args:
            pl_module: the module measured.
            collectives: the measurement's collectives (for a decision every rank must share).

        Returns:
            ``True`` to gather the parameters for the measurement.
        """
        return True

    @contextlib.contextmanager
    def _gathered(self, pl_module: pl.LightningModule, collectives: MeasurementCollectives) -> Iterator[None]:
        with gathered_parameters(pl_module, collectives.full_tensor) as originals:
            self._gathered_originals = originals
            try:
                yield
            finally:
                self._gathered_originals = {}

    def trained_parameter(self, parameter: torch.Tensor) -> torch.Tensor:
        """The parameter the optimizer holds for ``parameter`` of the measured module: the ``DTensor`` shard
        for a gathered one (:meth:`_whole_parameters`), else ``parameter`` itself.

        Args:
            parameter: a parameter of the measured module.

        Returns:
            The optimizer's tensor for it.
        """
        return self._gathered_originals.get(id(parameter), parameter)

    def _measurement_dtype(self, pl_module: pl.LightningModule) -> contextlib.AbstractContextManager[bool]:
        """Float32 copies of a half-precision model for the measurement, where this monitor asks for them."""
        if self.upcasts_half_precision:
            return float32_half_precision_tensors(pl_module)
        return contextlib.nullcontext(False)

    def _budget_allows(self, trainer: pl.Trainer) -> bool:
        """Whether the time budget lets this scheduled step be measured; rank 0 decides for every rank (the
        ranks' clocks differ, and every rank must take the same measurements: they hold collectives).
        """
        assert self.budget is not None
        step = trainer.global_step
        allowed = self.budget.allows(step) if trainer.global_rank == 0 else True
        if trainer.world_size > 1:
            allowed = bool(trainer.strategy.broadcast(allowed, src=0))
            if not allowed and trainer.global_rank != 0:
                self.budget.skip(step)
        return allowed

    def non_finite_metrics(self) -> list[str]:
        """The metrics logged as NaN when a measurement meets non-finite numbers (NaN / inf weights, loss or
        products): every metric this monitor has logged so far, or :attr:`primary_metrics` before the first.

        Returns:
            The metric names (without the ``spectral/<monitor>/`` prefix).
        """
        return sorted(self._declared_metrics) or list(self.primary_metrics)

    def _warn_non_finite(self, step: int, what: str) -> None:
        if self._warned_non_finite:
            return
        self._warned_non_finite = True
        rank_zero_warn(
            f"{type(self).__name__}: {what} at step {step} (NaN or inf in the weights, the loss or the "
            "gradients?); the affected metrics are logged as NaN, training continues, and later occurrences "
            "are not reported again. SpectralEarlyStopping(check_finite=True) can stop the run on them."
        )

    def _report_failure(self, trainer: pl.Trainer, step: int, error: Exception) -> None:
        """One warning per failure: the failing rank shows its traceback, rank zero says that it followed."""
        consequence = (
            "the monitor is disabled for the rest of the run and training continues. Pass `strict=True` to "
            "raise instead."
        )
        if isinstance(error, PeerMeasurementFailed):
            rank_zero_warn(f"{type(self).__name__}: at step {step} {error} {consequence}")
            return
        where = f" on rank {trainer.global_rank}" if trainer.world_size > 1 else ""
        warnings.warn(
            f"{type(self).__name__}: the measurement at step {step} failed{where}; {consequence}\n"
            f"{traceback.format_exc()}",
            stacklevel=2,
        )
