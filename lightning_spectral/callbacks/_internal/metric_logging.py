"""Send monitor values to every logger of a trainer, and to ``trainer.callback_metrics``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch

if TYPE_CHECKING:
    import pytorch_lightning as pl


def _loggers(trainer: pl.Trainer) -> list[Any]:
    """``trainer.loggers``, used by duck typing: a ``lightning.pytorch`` trainer holds that distribution's loggers,
    and the TensorBoard / W&B ones are told apart by class name (:func:`_logger_kind`).
    """
    return list(trainer.loggers)


def _logger_kind(logger: Any) -> str:
    names = {cls.__name__ for cls in type(logger).__mro__}
    if "TensorBoardLogger" in names:
        return "tensorboard"
    if "WandbLogger" in names:
        return "wandb"
    return "other"


def log_scalars(trainer: pl.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Log ``metrics`` to every logger (rank zero) and put them in ``trainer.callback_metrics`` (all ranks)."""
    if not metrics:
        return
    values = {key: float(value) for key, value in metrics.items()}
    for key, value in values.items():
        trainer.callback_metrics[key] = torch.tensor(value)
    if trainer.is_global_zero:
        for logger in _loggers(trainer):
            logger.log_metrics(values, step=step)


def declare_metrics(trainer: pl.Trainer, summaries: Mapping[str, str]) -> None:
    """Declare ``{key: summary}`` to the W&B loggers (rank zero), once per key, before the key is first logged.

    Each key gets ``trainer/global_step`` as its step metric and a run summary (``"max"``, ``"min"``,
    ``"last"``, ...) so W&B's run comparison and parallel-coordinates views work without setup. Other
    loggers have no such notion and are skipped. ``define_metric`` reads a ``.`` as a nested-key separator,
    so the dots of a key (every layer name: ``spectral/weights/net.0.weight/stable_rank``) are escaped, or
    the summary would apply to a nested key that is never logged.
    """
    if not trainer.is_global_zero or not summaries:
        return
    for logger in _loggers(trainer):
        if _logger_kind(logger) == "wandb":
            for key, summary in summaries.items():
                logger.experiment.define_metric(
                    key.replace(".", "\\."), step_metric="trainer/global_step", summary=summary
                )


def log_config(trainer: pl.Trainer, config: Mapping[str, Any]) -> None:
    """Write a monitor's configuration into every logger's run config / hyperparameters (rank zero).

    A TensorBoard logger writes its ``hparams.yaml`` once (at the first save, when the file does not exist yet),
    so a value written later (the automatic schedule's chosen ``every_n_steps``) would stay out of the file: the
    file is rewritten here from the logger's merged hyperparameters when it already exists.
    """
    if trainer.is_global_zero and config:
        for logger in _loggers(trainer):
            logger.log_hyperparams(dict(config))
            if _logger_kind(logger) == "tensorboard":
                _rewrite_hparams_file(logger)


def _rewrite_hparams_file(logger: Any) -> None:
    """Rewrite a TensorBoard logger's existing ``hparams.yaml`` from its current ``hparams``."""
    import os

    from lightning_fabric.utilities.cloud_io import get_filesystem
    from pytorch_lightning.core.saving import save_hparams_to_yaml

    path = os.path.join(logger.log_dir, getattr(logger, "NAME_HPARAMS_FILE", "hparams.yaml"))
    if get_filesystem(path).isfile(path):
        save_hparams_to_yaml(path, logger.hparams)


def log_histogram(trainer: pl.Trainer, key: str, values: torch.Tensor, step: int) -> None:
    """Log a histogram of ``values`` to the loggers that support histograms (rank zero only)."""
    if not trainer.is_global_zero:
        return
    data = values.detach().float().cpu()
    for logger in _loggers(trainer):
        kind = _logger_kind(logger)
        if kind == "tensorboard":
            logger.experiment.add_histogram(key, data, global_step=step)
        elif kind == "wandb":
            import wandb

            # wandb annotates `sequence` as a Sequence; it takes NumPy arrays (np.histogram's input)
            logger.log_metrics({key: wandb.Histogram(cast("Sequence[Any]", data.numpy()))}, step=step)


def log_table(trainer: pl.Trainer, key: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Log a table to the loggers that hold tables (W&B ``wandb.Table``; rank zero only)."""
    if trainer.is_global_zero and rows:
        for logger in _loggers(trainer):
            if _logger_kind(logger) == "wandb":
                logger.log_table(key=key, columns=columns, data=rows)


def log_figure(trainer: pl.Trainer, key: str, figure: Any, step: int) -> None:
    """Log a matplotlib figure to the loggers that support images (rank zero only); the figure is closed."""
    if trainer.is_global_zero:
        for logger in _loggers(trainer):
            kind = _logger_kind(logger)
            if kind == "tensorboard":
                logger.experiment.add_figure(key, figure, global_step=step, close=False)
            elif kind == "wandb":
                import wandb

                logger.log_metrics({key: wandb.Image(figure)}, step=step)
    import matplotlib.pyplot as plt

    plt.close(figure)
