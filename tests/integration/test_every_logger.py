"""Scalars reach CSVLogger and MLFlowLogger (local file store) unchanged; histograms are skipped there."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger
from spectral_testing.log_readers import read_tensorboard_scalars
from spectral_testing.models import TinyClassifier, trainer_kwargs

from lightning_spectral.callbacks import NTKTraceMonitor, WeightSpectrumMonitor


def test_tensorboard_csv_and_mlflow_receive_the_same_values(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    tracking_uri = (tmp_path / "mlruns").as_uri()
    loggers = [
        TensorBoardLogger(str(tmp_path), name="tb"),
        CSVLogger(str(tmp_path), name="csv"),
        MLFlowLogger(experiment_name="spectral", tracking_uri=tracking_uri),
    ]
    monitors = [
        WeightSpectrumMonitor(every_n_steps=2, include=["net.0.weight"], strict=True),
        NTKTraceMonitor(every_n_steps=2, strict=True),
    ]
    pl.seed_everything(0)
    pl.Trainer(callbacks=monitors, **trainer_kwargs(tmp_path, logger=loggers, max_epochs=1)).fit(
        TinyClassifier()
    )

    keys = [
        "spectral/weights/net.0.weight/sigma_max",
        "spectral/weights/net.0.weight/stable_rank",
        "spectral/ntk/trace",
    ]
    tensorboard = read_tensorboard_scalars(loggers[0].log_dir)
    rows = list(csv.DictReader(open(Path(loggers[1].log_dir) / "metrics.csv")))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for key in keys:
        expected = tensorboard[key]
        assert [s for s, _ in expected] == [0, 2, 4]
        from_csv = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
        from_mlflow = sorted((m.step, m.value) for m in client.get_metric_history(loggers[2].run_id, key))
        for (step, value), (csv_step, csv_value), (ml_step, ml_value) in zip(expected, from_csv, from_mlflow):
            assert step == csv_step == ml_step
            assert csv_value == pytest.approx(value, rel=1e-6) and ml_value == pytest.approx(value, rel=1e-6)
        assert len(from_csv) == len(from_mlflow) == 3
    # histograms went to TensorBoard only; the CSV file has no histogram column
    assert not any("singular_values" in column for column in rows[0])
    params = client.get_run(loggers[2].run_id).data.params
    assert params["spectral/weights/include"] == "net.0.weight" and params["spectral/ntk/method"] == "auto"
