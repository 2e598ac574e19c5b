"""The report's TensorBoard reader: resumed runs joined, separate runs in one folder warned about, a step logged
twice kept only when asked (``read_scalars``, which the examples and the tests share)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_spectral.report import read_runs


def write_scalars(folder: Path, steps: range) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for step in steps:
        writer.add_scalar("spectral/hessian/lambda_1", float(step), step)
    writer.close()


def test_a_folder_of_separate_runs_is_warned_about_and_a_resumed_run_is_not(tmp_path):
    import warnings

    resumed = tmp_path / "resumed"
    write_scalars(resumed / "version_0", range(0, 9, 2))
    write_scalars(resumed / "version_1", range(8, 17, 2))  # resumed from step 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (run,) = read_runs([resumed])
    assert run.scalars["spectral/hessian/lambda_1"].steps.tolist() == list(range(0, 17, 2))

    separate = tmp_path / "separate"
    write_scalars(separate / "version_0", range(0, 17, 2))
    write_scalars(separate / "version_1", range(0, 9, 2))  # another run from step 0
    with pytest.warns(UserWarning, match="version_1 starts again at step 0.*Pass each sub-folder"):
        read_runs([separate])


def test_read_scalars_keeps_a_step_logged_twice_only_when_asked(tmp_path):
    """The reader the examples and the tests share: by default a later file wins at a repeated step;
    ``keep_repeats=True`` (what the tests read with, to see a duplicate) keeps both values."""
    from torch.utils.tensorboard import SummaryWriter

    from lightning_spectral.report.reader import read_scalars

    write_scalars(tmp_path / "version_0", range(0, 9, 2))  # value = step
    writer = SummaryWriter(str(tmp_path / "version_1"))
    writer.add_scalar("spectral/hessian/lambda_1", 100.0, 8)  # step 8 again, in a later file
    writer.close()
    tag = "spectral/hessian/lambda_1"
    assert read_scalars(tmp_path)[tag] == [(0, 0.0), (2, 2.0), (4, 4.0), (6, 6.0), (8, 100.0)]
    assert read_scalars(tmp_path, keep_repeats=True)[tag] == [
        (0, 0.0),
        (2, 2.0),
        (4, 4.0),
        (6, 6.0),
        (8, 8.0),
        (8, 100.0),
    ]
    with pytest.raises(FileNotFoundError, match="no TensorBoard event file"):
        read_scalars(tmp_path / "empty")
