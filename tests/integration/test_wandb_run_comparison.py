"""W&B run comparison: metric definitions, run config and summaries, read back from the offline run file."""

from __future__ import annotations

import json

import pytorch_lightning as pl
import yaml
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from spectral_testing.log_readers import read_wandb_history, read_wandb_records
from spectral_testing.models import TinyClassifier, trainer_kwargs

from lightning_spectral.callbacks import HessianEigenMonitor, WeightSpectrumMonitor


def test_metrics_are_declared_configured_and_summarised(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb_logger = WandbLogger(save_dir=str(tmp_path), project="spectral-test")
    csv_logger = CSVLogger(str(tmp_path), name="csv")
    monitors = [
        HessianEigenMonitor(k=2, every_n_steps=2, strict=True),
        WeightSpectrumMonitor(every_n_steps=2, include=["net.0.weight"], strict=True),
    ]
    pl.seed_everything(0)
    trainer = pl.Trainer(
        callbacks=monitors, **trainer_kwargs(tmp_path, logger=[wandb_logger, csv_logger], max_epochs=1)
    )
    trainer.fit(TinyClassifier())
    wandb_logger.experiment.finish()
    records = read_wandb_records(tmp_path)

    metrics = {
        r.metric.name: r.metric for r in records if r.WhichOneof("record_type") == "metric" and r.metric.name
    }
    lambda_1 = metrics["spectral/hessian/lambda_1"]
    assert lambda_1.step_metric == "trainer/global_step" and lambda_1.summary.max
    # W&B reads "." as nesting in define_metric: a layer key is declared with its dots escaped
    assert metrics["spectral/weights/net\\.0\\.weight/stable_rank"].summary.min
    assert metrics["spectral/weights/net\\.0\\.weight/frobenius_norm"].summary.last
    assert metrics["spectral/hessian/residual_max"].summary.last

    config = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config.update({item.key: json.loads(item.value_json) for item in r.config.update})
    assert config["spectral/hessian/k"] == 2
    assert config["spectral/hessian/every_n_steps"] == 2
    assert config["spectral/weights/include"] == "net.0.weight"

    lambdas = [
        row["spectral/hessian/lambda_1"]
        for row in read_wandb_history(tmp_path)
        if "spectral/hessian/lambda_1" in row
    ]
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.summary.update}
            )
    assert len(lambdas) == 3
    assert summary["spectral/hessian/lambda_1"]["max"] == max(lambdas)
    ranks = [
        row[key]
        for row in read_wandb_history(tmp_path)
        if (key := "spectral/weights/net.0.weight/stable_rank") in row
    ]
    assert len(ranks) == 3 and summary["spectral/weights/net.0.weight/stable_rank"] == {"min": min(ranks)}

    # the run config reaches the other loggers too (here CSVLogger's hparams.yaml)
    hparams = yaml.safe_load(open(f"{csv_logger.log_dir}/hparams.yaml"))
    assert hparams["spectral/hessian/k"] == 2 and hparams["spectral/weights/k"] == 5
