"""The firing rule of :class:`~lightning_spectral.callbacks.SpectralEarlyStopping`: which quantity of a
measured value is compared with the threshold, and which of a batch of new measurements fires.

Example::

    >>> rule = StoppingCriterion("spectral/x", threshold=2.0, relative_to="previous")
    >>> rule.description
    'spectral/x / its previous value > 2'
    >>> rule.judge(None, [("spectral/x", 5.0, 2.0)])
    (1, '`spectral/x` = 5, ratio to its previous measurement 2 = 2.5 > 2')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from pytorch_lightning.utilities import rank_zero_warn

from lightning_spectral.callbacks._internal.optimizer_info import learning_rate, resolved_sgd_settings

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = [
    "FIRED",
    "MODES",
    "NOT_FINITE",
    "NOT_FIRED",
    "RELATIVE_TO",
    "StoppingCriterion",
]

#: On which side of the threshold the criterion fires.
StopMode = Literal["above", "below"]
MODES: tuple[StopMode, ...] = get_args(StopMode)
#: What a value is compared relative to (``None``: itself).
RelativeTo = Literal["lr", "previous"]
RELATIVE_TO: tuple[RelativeTo | None, ...] = (None, *get_args(RelativeTo))
#: Verdicts on a batch of new measurements, in increasing strength.
NOT_FIRED, FIRED, NOT_FINITE = 0, 1, 2


@dataclass(frozen=True)
class StoppingCriterion:
    """The rule (see the docs' implementation notes); the arguments mean what they mean for ``SpectralEarlyStopping``."""

    monitor: str
    threshold: float
    relative_to: RelativeTo | None = None
    mode: StopMode = "above"
    check_finite: bool = True

    @property
    def description(self) -> str:
        """The firing rule in words, e.g. ``"spectral/hessian/lambda_1 / stability limit > 1"``."""
        quantity = {
            None: self.monitor,
            "lr": f"{self.monitor} / stability limit",
            "previous": f"{self.monitor} / its previous value",
        }[self.relative_to]
        return f"{quantity} {'>' if self.mode == 'above' else '<'} {self.threshold:g}"

    def quantity(self, trainer: pl.Trainer, value: float, previous: float | None) -> tuple[float | None, str]:
        """The compared quantity ``q`` (``None``: this measurement cannot fire) and what it is, in words."""
        if self.relative_to is None:
            return value, ""
        if self.relative_to == "previous":
            if previous is None or not math.isfinite(previous) or previous <= 0:
                return None, ""
            return value / previous, f"ratio to its previous measurement {previous:.6g}"
        settings, why = resolved_sgd_settings(trainer)
        if settings is not None:
            if settings.lr == 0:
                return 0.0, "ratio to the stability limit of SGD with lr=0"
            limit = settings.stability_limit()
            return value / limit, f"ratio to the stability limit {limit:.6g} of {settings.describe()}"
        lr = learning_rate(trainer)
        if lr is None or not lr >= 0:
            raise ValueError(
                f"SpectralEarlyStopping(relative_to='lr') needs an optimizer with a learning rate, got lr={lr!r}."
            )
        if why:  # SGD, but its groups step with different settings: no single limit to compare with
            rank_zero_warn(
                f"SpectralEarlyStopping(relative_to='lr'): no single SGD stability limit ({why}), so "
                "`relative_to='lr'` measurements cannot fire; watch the Hessian monitor's `eos_ratio` of one "
                "group's parameters (`params=`) instead."
            )
            return None, ""
        return lr * value / 2, f"lr·value/2 with lr={lr:g} (not SGD: the plain-SGD limit 2/lr)"

    def judge(self, trainer: pl.Trainer, new: Sequence[tuple[str, float, float | None]]) -> tuple[int, str]:
        """This rank's verdict on its new measurements and a description of the most extreme firing one."""
        comparison = ">" if self.mode == "above" else "<"
        worst: tuple[float, str] | None = None
        for key, value, previous in new:
            if not math.isfinite(value):
                if self.check_finite:
                    return NOT_FINITE, f"`{key}` = {value} is not finite"
                continue
            q, how = self.quantity(trainer, value, previous)
            if q is None or not (q > self.threshold if self.mode == "above" else q < self.threshold):
                continue
            described = f"`{key}` = {value:.6g}" + (f", {how} = {q:.4g}" if how else "")
            described += f" {comparison} {self.threshold:g}"
            score = q if self.mode == "above" else -q
            if worst is None or score > worst[0]:
                worst = (score, described)
        return (NOT_FIRED, "") if worst is None else (FIRED, worst[1])
