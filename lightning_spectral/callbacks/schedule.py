"""When a monitor measures: a small, testable schedule over optimizer steps and epochs."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_spectral._internal.validation import check_bool, check_int


@dataclass(frozen=True)
class Schedule:
    """The steps and epochs at which a monitor measures.

    Args:
        every_n_steps: measure whenever ``global_step`` is a multiple of this (``None``: not step-based).
        every_n_epochs: measure at the end of every ``every_n_epochs``-th training epoch (``None``: not
            epoch-based) that ran to its last batch (an epoch cut short by ``max_steps`` or a stop is not
            measured: a run resumed from there measures it when it ends). Both may be given; a step is never
            measured twice.
        log_spacing: also measure at the powers of two below ``every_n_steps`` (needs ``every_n_steps``).
        at_train_start: measure the model at step 0 (initialization), from ``on_train_start``.

    A measurement "at step ``s``" happens after ``s`` optimizer steps, when ``trainer.global_step == s``;
    where the global step jumps (manual optimization with several optimizers) it is taken at the first batch
    end at which the global step has reached or passed ``s`` (:meth:`is_due`). With ``log_spacing=True`` the
    schedule is dense early, where training changes fastest: the powers of two below ``every_n_steps``, then
    every ``every_n_steps``.

    Raises:
        ValueError: neither ``every_n_steps`` nor ``every_n_epochs`` is given, one is not a positive integer,
            ``log_spacing`` without ``every_n_steps``, or a flag that is not a bool.

    Example:
        >>> Schedule(every_n_steps=50, log_spacing=True).steps_up_to(200)
        [0, 1, 2, 4, 8, 16, 32, 50, 100, 150, 200]
    """

    every_n_steps: int | None = None
    every_n_epochs: int | None = None
    log_spacing: bool = False
    at_train_start: bool = True

    def __post_init__(self) -> None:
        check_int("every_n_steps", self.every_n_steps, 1, optional=True)
        check_int("every_n_epochs", self.every_n_epochs, 1, optional=True)
        if self.every_n_steps is None and self.every_n_epochs is None:
            raise ValueError(
                "At least one of `every_n_steps` or `every_n_epochs` must be a positive integer, got None for both."
            )
        if self.log_spacing and self.every_n_steps is None:
            raise ValueError(
                "`log_spacing=True` needs `every_n_steps` (the regular interval after the dense start)."
            )
        for name in ("log_spacing", "at_train_start"):
            check_bool(name, getattr(self, name))

    def is_measurement_step(self, step: int) -> bool:
        """Whether the step-based schedule measures when ``global_step == step``."""
        if step == 0:
            return self.at_train_start
        if self.every_n_steps is None:
            return False
        if step % self.every_n_steps == 0:
            return True
        return self.log_spacing and step < self.every_n_steps and (step & (step - 1)) == 0

    def is_due(self, previous_step: int, step: int) -> bool:
        """Whether a measurement step lies in ``(previous_step, step]``: the global step moved from
        ``previous_step`` to ``step`` since the last check. It moves by one per optimizer step in automatic
        optimization, but by the number of optimizers stepped per batch in manual optimization (a GAN's two
        optimizers: 2, 4, 6, ...), where an exact hit would skip every odd multiple of ``every_n_steps``.

        Args:
            previous_step: the global step at the last check.
            step: the global step now.

        Returns:
            Whether a measurement is due.
        """
        n = self.every_n_steps
        if n is None or step <= previous_step:
            return False
        if step // n > previous_step // n:  # a multiple of n in (previous_step, step]
            return True
        below_n = range(max(previous_step + 1, 1), min(step, n - 1) + 1)  # where log spacing adds steps
        return any(self.is_measurement_step(s) for s in below_n)

    def is_measurement_epoch(self, epoch: int) -> bool:
        """Whether the epoch-based schedule measures at the end of (0-based) training epoch ``epoch``."""
        return self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0

    def steps_up_to(self, last_step: int) -> list[int]:
        """The step-based measurement steps in ``[0, last_step]`` (epoch-based ones depend on epoch length)."""
        return [s for s in range(last_step + 1) if self.is_measurement_step(s)]
