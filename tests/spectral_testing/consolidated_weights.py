"""The weight monitor's logged spectra against single-process ones of the weights a sharded run saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_spectral.functional import weight_matrices, weight_spectrum
from spectral_testing.ddp import DISTRIBUTED, load_script

METRICS = ("sigma_max", "frobenius_norm", "stable_rank", "effective_rank", "sigma_1", "sigma_2", "sigma_3")


def assert_spectra_of_consolidated_weights(out: Path, logged: dict[str, float]) -> None:
    """The ``logged`` spectra equal single-process spectra of the weights the script saved in ``out`` (1e-5).
    Used by the two-process FSDP2 test and by the one-GPU run in tests/gpu/test_cuda.py."""
    script = load_script(DISTRIBUTED / "fsdp2_weights_script.py")
    model = script.ShardedClassifier()  # not sharded: configure_model is Lightning's to call
    model.load_state_dict(torch.load(out / "weights.pt", map_location="cpu"))
    matrices = weight_matrices(model)
    assert [m.name for m in matrices] == ["net.1.weight", "net.4.weight", "net.6.weight", "embed.weight"]
    for matrix in matrices:
        reference = weight_spectrum(matrix.matrix, k=3)
        expected = {
            "sigma_max": reference.sigma_max,
            "frobenius_norm": reference.frobenius_norm,
            "stable_rank": reference.stable_rank,
            "effective_rank": reference.effective_rank,
            **{f"sigma_{i}": v for i, v in enumerate(reference.singular_values.tolist(), 1)},
        }
        for key in METRICS:
            assert logged[f"spectral/weights/{matrix.name}/{key}"] == pytest.approx(
                expected[key], rel=1e-5
            ), (
                matrix.name,
                key,
            )
    # The rotation needs the previous measurement's vectors: logged from the second measurement on.
    assert all(f"spectral/weights/{m.name}/rotation" in logged for m in matrices)
    sigma_max = max(weight_spectrum(m.matrix, k=3).sigma_max for m in matrices)
    assert logged["spectral/weights/max_sigma_max"] == pytest.approx(sigma_max, rel=1e-5)
