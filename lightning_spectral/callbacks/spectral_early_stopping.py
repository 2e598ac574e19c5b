"""``SpectralEarlyStopping``: stop (or warn, or checkpoint and stop) when a spectral quantity crosses a line."""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal, get_args

import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_spectral._internal.validation import check_bool, check_choice, check_int, check_positive_finite
from lightning_spectral.callbacks._internal.new_measurements import NewMeasurements
from lightning_spectral.callbacks._internal.optimizer_info import first_optimizer
from lightning_spectral.callbacks._internal.stopping_criterion import (
    MODES,
    NOT_FINITE,
    NOT_FIRED,
    RELATIVE_TO,
    RelativeTo,
    StopMode,
    StoppingCriterion,
)
from lightning_spectral.callbacks.base import SpectralMonitor

StopAction = Literal["stop", "warn", "checkpoint_and_stop"]
ACTIONS: tuple[StopAction, ...] = get_args(StopAction)
#: File name of the checkpoint written by ``action="checkpoint_and_stop"``.
CHECKPOINT_FILENAME = "spectral-early-stop-step={step}.ckpt"


class SpectralEarlyStopping(Callback):
    """Stop training (or warn, or checkpoint and stop) when a spectral metric crosses a threshold.

    Each new measurement of a watched key is judged once, in the hook of the monitor that produced it; the
    callback acts after ``patience`` consecutive firing measurements (not steps), at once for a NaN/Inf value
    (``check_finite``), and once per firing episode. Under DDP every decision is all-reduced, so all ranks
    stop at the same step; the counter is checkpointed, so a resumed run stops where the uninterrupted one
    would have.

    Args:
        monitor: a key of ``trainer.callback_metrics`` (e.g. ``"spectral/hessian/lambda_1"``) or an
            ``fnmatch`` pattern over the keys; a pattern fires when any matching key fires. A warning is
            given at the end of training if no key ever matched.
        threshold: the line to cross. Required, except with ``relative_to="lr"`` (default 1.0: the edge of
            stability itself). Must be positive with ``relative_to`` set (it is a ratio then).
        relative_to: ``None`` (compare the value itself), ``"lr"`` (compare the value over the optimizer's
            stability limit, ``η·v/2`` for plain SGD) or ``"previous"`` (compare the value over the previous
            measurement of the same key: a spike detector).
        mode: ``"above"`` fires when the compared quantity is ``> threshold``, ``"below"`` when ``< threshold``.
        patience: act after this many consecutive firing measurements (``>= 1``).
        warmup_steps: ignore measurements taken before this many optimizer steps (``>= 0``).
        check_finite: a NaN or infinite value acts at once, without waiting for ``patience``.
        action: ``"stop"`` (set ``trainer.should_stop``), ``"warn"`` (only warn, once per firing episode)
            or ``"checkpoint_and_stop"`` (save ``spectral-early-stop-step=<N>.ckpt`` to the ``ModelCheckpoint``
            directory, or ``default_root_dir`` without one, then stop).

    Attributes:
        wait_count: the current number of consecutive firing measurements (kept across resume).
        stopped_step: the ``global_step`` at which this callback stopped training (``None`` if it did not).
        reason: the last message this callback logged or warned (``None`` if it never acted).

    Example::

        trainer = Trainer(callbacks=[
            HessianEigenMonitor(every_n_steps=10),
            SpectralEarlyStopping.edge_of_stability(patience=3),       # η·λ_max/2 > 1 three times in a row
            SpectralEarlyStopping("spectral/hessian/lambda_1", threshold=1e4, action="warn"),
        ])
    """

    def __init__(
        self,
        monitor: str,
        *,
        threshold: float | None = None,
        relative_to: RelativeTo | None = None,
        mode: StopMode = "above",
        patience: int = 1,
        warmup_steps: int = 0,
        check_finite: bool = True,
        action: StopAction = "stop",
    ) -> None:
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(
                f"`monitor` must be a non-empty string (a callback_metrics key or an fnmatch pattern), got {monitor!r}."
            )
        check_choice("mode", mode, MODES)
        check_choice("action", action, ACTIONS)
        check_choice("relative_to", relative_to, RELATIVE_TO)
        check_int("patience", patience, 1)
        check_int("warmup_steps", warmup_steps, 0)
        check_bool("check_finite", check_finite)
        if threshold is None:
            if relative_to != "lr":
                raise ValueError(
                    "`threshold` is required unless relative_to='lr' (where it defaults to 1.0, the edge of "
                    f"stability); got threshold=None with relative_to={relative_to!r}."
                )
            threshold = 1.0
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not math.isfinite(threshold)
        ):
            raise ValueError(f"`threshold` must be a finite number, got {threshold!r}.")
        if relative_to is not None and threshold <= 0:
            raise ValueError(
                f"`threshold` must be positive with relative_to={relative_to!r} (it is a ratio), got {threshold!r}."
            )
        self.monitor = monitor
        self.threshold = float(threshold)
        self.relative_to = relative_to
        self.mode = mode
        self.patience = patience
        self.warmup_steps = warmup_steps
        self.check_finite = check_finite
        self.action = action
        self.wait_count = 0
        self.stopped_step: int | None = None
        self.reason: str | None = None
        self._name: str | None = None  # set by the ready-made constructors, used in messages
        self._measurements = NewMeasurements(monitor)
        self._owners: list[SpectralMonitor] | None = (
            None  # monitors whose keys alone can match (set at setup)
        )
        self._in_episode = False
        self._warned_unmatched = False
        self._warned_adaptive = False
        self._owner_counts: dict[int, int] = {}

    # ------------------------------------------------------------------ ready-made criteria
    @classmethod
    def edge_of_stability(
        cls, patience: int = 3, monitor: str = "spectral/hessian/lambda_1", **kwargs: Any
    ) -> SpectralEarlyStopping:
        """Stop when λ_max passes the optimizer's stability limit, ``η·λ_max/2 > 1`` for plain SGD.

        Gradient descent with step size η is unstable along directions of curvature above ``2/η``
        (``(2 + 2β)/η`` with momentum β): once the sharpness measured by ``HessianEigenMonitor`` stays past
        this edge for ``patience`` consecutive measurements, training has left the stable regime. Under
        Adam / AdamW / RMSprop the relevant limit is that of the preconditioned sharpness: watch the monitor's
        ``eos_ratio`` instead, ``SpectralEarlyStopping("spectral/hessian/eos_ratio", threshold=1.0)``.
        ``kwargs`` go to the constructor (``threshold`` defaults to 1.0, ``action``, ``warmup_steps``, ...).

        Args:
            patience: consecutive firing measurements before acting.
            monitor: the sharpness key (default ``spectral/hessian/lambda_1``).
            **kwargs: further constructor arguments.

        Returns:
            The callback, with ``relative_to="lr"``.

        Example::

            Trainer(callbacks=[HessianEigenMonitor(every_n_steps=10), SpectralEarlyStopping.edge_of_stability()])
        """
        instance = cls(monitor, relative_to="lr", mode="above", patience=patience, **kwargs)
        instance._name = "edge_of_stability"
        return instance

    @classmethod
    def stochastic_edge_of_stability(
        cls, patience: int = 3, monitor: str = "spectral/ntk/sgd_stability", **kwargs: Any
    ) -> SpectralEarlyStopping:
        """Stop when SGD's noise-kernel norm 𝒦 passes 1, the stochastic edge of stability (Agarwala &
        Pennington 2024), for ``patience`` consecutive measurements.

        Watches ``NTKTraceMonitor``'s ``sgd_stability``, the trace-based lower bound of 𝒦 (MSE loss,
        ``torch.optim.SGD``; :mod:`~lightning_spectral.functional.ntk.sgd_stability`): above 1 the second moment of
        the residual grows under the mini-batch noise although the mean may still be stable, so the run is
        past the edge whatever the rest of the spectrum. ``kwargs`` go to the constructor (``threshold``
        defaults to 1.0, ``action``, ``warmup_steps``, ...).

        Args:
            patience: consecutive firing measurements before acting.
            monitor: the key of 𝒦's bound (default ``spectral/ntk/sgd_stability``).
            **kwargs: further constructor arguments.

        Returns:
            The callback.

        Example::

            Trainer(callbacks=[NTKTraceMonitor(every_n_steps=10), SpectralEarlyStopping.stochastic_edge_of_stability()])
        """
        kwargs.setdefault("threshold", 1.0)
        instance = cls(monitor, mode="above", patience=patience, **kwargs)
        instance._name = "stochastic_edge_of_stability"
        return instance

    @classmethod
    def rank_collapse(cls, layer_glob: str, min_stable_rank: float, **kwargs: Any) -> SpectralEarlyStopping:
        """Stop when the stable rank ``‖W‖_F² / ‖W‖_2²`` of any layer matching ``layer_glob`` drops below
        ``min_stable_rank``.

        Watches the keys ``spectral/weights/<layer_glob>/stable_rank`` of ``WeightSpectrumMonitor``
        (``fnmatch`` pattern, e.g. ``"encoder.*"``). ``kwargs`` go to the constructor (``patience``, ...).

        Args:
            layer_glob: ``fnmatch`` pattern of the layer names.
            min_stable_rank: the threshold (``> 0``).
            **kwargs: further constructor arguments.

        Returns:
            The callback, with ``mode="below"``.

        Example::

            SpectralEarlyStopping.rank_collapse("encoder.*", min_stable_rank=1.5, action="warn")
        """
        if not isinstance(layer_glob, str) or not layer_glob:
            raise ValueError(f"`layer_glob` must be a non-empty fnmatch pattern, got {layer_glob!r}.")
        check_positive_finite("min_stable_rank", min_stable_rank)
        instance = cls(
            f"spectral/weights/{layer_glob}/stable_rank", threshold=min_stable_rank, mode="below", **kwargs
        )
        instance._name = "rank_collapse"
        return instance

    @classmethod
    def sharpness_spike(
        cls, factor: float = 2.0, monitor: str = "spectral/hessian/lambda_1", **kwargs: Any
    ) -> SpectralEarlyStopping:
        """Stop when the value jumps above ``factor`` times its previous measurement (``relative_to="previous"``).

        A sudden jump of λ_max (a catapult, a loss spike) often precedes divergence. ``factor`` must exceed 1.
        ``kwargs`` go to the constructor (``patience``, ``action``, ...).

        Args:
            factor: the jump, ``> 1``.
            monitor: the watched key (default ``spectral/hessian/lambda_1``).
            **kwargs: further constructor arguments.

        Returns:
            The callback.

        Raises:
            ValueError: ``factor`` is not above 1.

        Example::

            SpectralEarlyStopping.sharpness_spike(factor=3.0, patience=1, action="checkpoint_and_stop")
        """
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1.0 < factor < math.inf:
            raise ValueError(f"`factor` must be a finite number > 1, got {factor!r}.")
        instance = cls(monitor, threshold=factor, relative_to="previous", mode="above", **kwargs)
        instance._name = "sharpness_spike"
        return instance

    # ------------------------------------------------------------------ description
    @property
    def criterion(self) -> str:
        """The firing rule in words, e.g. ``"spectral/hessian/lambda_1 / stability limit > 1"``."""
        return self._rule.description

    @property
    def _rule(self) -> StoppingCriterion:
        return StoppingCriterion(self.monitor, self.threshold, self.relative_to, self.mode, self.check_finite)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            threshold=self.threshold,
            relative_to=self.relative_to,
            action=self.action,
        )

    def checkpoint_path(self, trainer: pl.Trainer) -> str:
        """Where ``action="checkpoint_and_stop"`` saves at the current step.

        Args:
            trainer: the running ``Trainer``.

        Returns:
            ``<dirpath>/spectral-early-stop-step=<global_step>.ckpt``, ``<dirpath>`` the ``ModelCheckpoint``
            directory or ``trainer.default_root_dir``.
        """
        directory = getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
        return os.path.join(directory, CHECKPOINT_FILENAME.format(step=trainer.global_step))

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        callbacks = list(trainer.callbacks)  # type: ignore[attr-defined]  # set by Lightning's CallbackConnector, undeclared
        monitors = [c for c in callbacks if isinstance(c, SpectralMonitor)]
        self._measurements.owned_prefixes = tuple(m.metric_prefix for m in monitors)
        # A pattern whose literal start lies under a monitor's prefix can only match that monitor's keys:
        # new values then appear only at that monitor's scheduled measurements.
        literal = re.split(r"[*?\[]", self.monitor, maxsplit=1)[0]
        owners = [m for m in monitors if literal.startswith(m.metric_prefix)]
        self._owners = owners or None
        position = next(i for i, c in enumerate(callbacks) if c is self)
        last_monitor = max((i for i, c in enumerate(callbacks) if isinstance(c, SpectralMonitor)), default=-1)
        if last_monitor > position:
            callbacks.insert(last_monitor, callbacks.pop(position))  # right after the last monitor
            # a new list: the hook loop running now keeps the old one
            trainer.callbacks = callbacks  # type: ignore[attr-defined]  # set by Lightning's CallbackConnector, undeclared

    def _warn_if_adaptive(self, trainer: pl.Trainer) -> None:
        """Once: with ``relative_to="lr"`` under an optimizer other than ``torch.optim.SGD`` (Adam, AdamW, RMSprop,
        ...) say what is compared: ``lr·value/2``, the raw value against the plain-SGD limit ``2/lr``, a heuristic
        (adaptive optimizers are stable relative to the preconditioned sharpness), and what to watch instead.
        """
        optimizer = first_optimizer(trainer)
        if self._warned_adaptive or self.relative_to != "lr" or optimizer is None:
            return
        if "SGD" in {cls.__name__ for cls in type(optimizer).__mro__}:
            return
        self._warned_adaptive = True
        rank_zero_warn(
            f"SpectralEarlyStopping({self.monitor!r}, relative_to='lr') under {type(optimizer).__name__}: it compares "
            f"lr·value/2 with {self.threshold:g}, i.e. the raw value against the plain-SGD stability limit 2/lr, "
            "only a heuristic here: an adaptive optimizer is stable relative to its preconditioned sharpness "
            "λ_1(D⁻¹H), not λ_max of the Hessian. The Hessian monitor logs that ratio as eos_ratio: watch "
            "SpectralEarlyStopping('spectral/hessian/eos_ratio', threshold=1.0) instead."
        )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after a resume restored the owners' states, before any measurement of this fit
        self._owner_counts = {id(m): m.num_measurements for m in self._owners or []}

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._warn_if_adaptive(trainer)
        self._evaluate(trainer, self._owners_measure_at_step(trainer))

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A key the module logs in its own on_train_epoch_end arrives after the callbacks' epoch-end hooks
        # (Lightning runs only its stock EarlyStopping and ModelCheckpoint after the module's hook): judge it
        # before the next epoch trains, at the step it was logged at.
        self._evaluate(trainer, self._owners is None)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._evaluate(trainer, self._owners_measure_at_step(trainer))

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        owners = self._owners
        scheduled = owners is None or any(
            m.schedule is not None and m.schedule.is_measurement_epoch(trainer.current_epoch) for m in owners
        )
        self._evaluate(trainer, scheduled)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluate(trainer, self._owners is None)  # monitors do not measure during validation

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fast_dev_run = trainer.fast_dev_run  # type: ignore[attr-defined]  # set by Lightning's Trainer setup, undeclared
        if not self._measurements.matched_any and not self._warned_unmatched and not fast_dev_run:
            self._warned_unmatched = True
            rank_zero_warn(
                f"SpectralEarlyStopping: no key of trainer.callback_metrics matched monitor={self.monitor!r} "
                "during training, so it never checked anything. Is the monitor that writes it in the callbacks, "
                "and does its schedule measure?"
            )

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "last": self._measurements.state_dict(),
            "stopped_step": self.stopped_step,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait_count = int(state_dict["wait_count"])
        self._measurements.load_state_dict(state_dict["last"])
        self.stopped_step = state_dict["stopped_step"]

    # ------------------------------------------------------------------ evaluation
    def _owners_measure_at_step(self, trainer: pl.Trainer) -> bool:
        owners = self._owners
        return owners is None or any(m.measurement_due_at(trainer.global_step) for m in owners)

    def _evaluate(self, trainer: pl.Trainer, scheduled: bool) -> None:
        """Judge the new measurements, if any. ``scheduled``: whether any can exist now, decided from the
        global step and epoch alone (so equal on every rank); the collectives run only then.
        """
        fast_dev_run = trainer.fast_dev_run  # type: ignore[attr-defined]  # set by Lightning's Trainer setup, undeclared
        if not scheduled or trainer.state.fn != "fit" or trainer.sanity_checking or fast_dev_run:
            return
        if trainer.global_step < self.warmup_steps:  # the same step on every rank: no collective needed
            # nothing is collected: a value first seen during warmup (a constant key, a NaN loss) is new after it
            return
        new = self._measurements.collect(trainer.callback_metrics, trainer.global_step)
        if not self._measurements.matched_any:
            self._warn_if_owners_log_other_keys(trainer)
        if not self.check_finite:  # a non-finite value is skipped: it neither fires nor resets the patience
            new = [item for item in new if math.isfinite(item[1])]
        strategy = trainer.strategy
        # Every rank reaches every reduction below: each condition is the result of the previous reduction.
        if not strategy.reduce_boolean_decision(bool(new), all=False):
            return
        verdict, description = self._rule.judge(trainer, new)
        if not strategy.reduce_boolean_decision(verdict != NOT_FIRED, all=False):
            self.wait_count = 0
            self._in_episode = False
            return
        self.wait_count += 1
        not_finite = strategy.reduce_boolean_decision(verdict == NOT_FINITE, all=False)
        if self._in_episode or not (not_finite or self.wait_count >= self.patience):
            return
        self._in_episode = True
        description, rank = self._shared_description(trainer, verdict, description)
        self._act(trainer, description, rank, not_finite)

    def _warn_if_owners_log_other_keys(self, trainer: pl.Trainer) -> None:
        """Warn once, during training, when the monitor(s) whose prefix the pattern lies under have measured
        at least twice in this fit, past step 0, without logging a matching key: the criterion would check
        nothing for the whole run (e.g. ``spectral/hessian/trace`` without ``compute_trace=True``). Two
        measurements and a step past 0 because some keys first appear then (``rotation`` needs a previous
        measurement, adaptive optimizers' ``eos_ratio`` a first optimizer step). Without owners the warning
        waits for the end of fit.
        """
        owners = self._owners
        if self._warned_unmatched or owners is None or trainer.global_step == 0:
            return
        # measurements of this fit: a resumed run's owners restore their earlier count, but not the metrics
        if not any(m.num_measurements - self._owner_counts.get(id(m), 0) >= 2 for m in owners):
            return
        self._warned_unmatched = True
        prefixes = tuple(m.metric_prefix for m in owners)
        logged = sorted(key for key in trainer.callback_metrics if key.startswith(prefixes))
        shown = ", ".join(logged[:8]) + (f", ... ({len(logged)} in all)" if len(logged) > 8 else "")
        names = " / ".join(type(m).__name__ for m in owners)
        rank_zero_warn(
            f"SpectralEarlyStopping: by step {trainer.global_step} no key that {names} logged matched "
            f"monitor={self.monitor!r} ({shown or 'nothing logged'}), so this criterion checks nothing. Some "
            "keys need an option of their monitor, e.g. `spectral/hessian/trace` needs "
            "HessianEigenMonitor(compute_trace=True)."
        )

    def _shared_description(self, trainer: pl.Trainer, verdict: int, description: str) -> tuple[str, int]:
        """The description of the lowest rank with the strongest verdict (non-finite over firing), on every rank."""
        world_size = trainer.world_size
        if world_size == 1:
            return description, 0
        strategy = trainer.strategy
        # one max-reduction picks the strongest verdict and, among its ranks, the lowest one
        code = torch.tensor(
            verdict * world_size + (world_size - 1 - trainer.global_rank), device=strategy.root_device
        )
        source = world_size - 1 - int(strategy.reduce(code, reduce_op="max")) % world_size
        return strategy.broadcast(description, src=source), source

    def _act(self, trainer: pl.Trainer, description: str, rank: int, not_finite: bool) -> None:
        step = trainer.global_step
        name = f"[{self._name}]" if self._name else ""
        where = f" on rank {rank}" if trainer.world_size > 1 else ""
        if not_finite:
            count = "non-finite values act at once, without patience"
        else:
            count = f"{self.wait_count} consecutive firing measurement(s), patience {self.patience}"
        message = (
            f"SpectralEarlyStopping{name} ({self.criterion}): {description} at step {step}{where}; {count}."
        )
        if self.action == "warn":
            self.reason = f"{message} Training continues (action='warn')."
            rank_zero_warn(self.reason)
            return
        if self.action == "checkpoint_and_stop":
            path = self.checkpoint_path(trainer)
            trainer.save_checkpoint(path)
            message += f" Saved the checkpoint {path}."
        self.reason = f"{message} Stopping training."
        self.stopped_step = step
        trainer.should_stop = True
        rank_zero_info(self.reason)
