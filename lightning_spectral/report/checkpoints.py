"""Post-hoc singular-vector dynamics from a run's saved checkpoints: the agreement of every weight matrix with
the final checkpoint, index by index, at every saved step (Yunis et al. 2024, whose figures are drawn from
checkpoints this way).

Example::

    dynamics = checkpoint_dynamics("lightning_logs/version_0")
    dynamics.steps, dynamics.score["net.0.weight"]  # agreement with the final checkpoint per saved step
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_spectral._internal.validation import check_int
from lightning_spectral.functional.weights.singular_dynamics import (
    AGREEMENT_TOP,
    singular_vector_agreement,
    thin_singular_vectors,
)
from lightning_spectral.functional.weights.spectrum_metrics import effective_rank
from lightning_spectral.report.reader import ReportError

__all__ = ["CheckpointDynamics", "checkpoint_dynamics", "find_checkpoints", "state_dict_matrices"]


@dataclass
class CheckpointDynamics:
    """The singular-vector dynamics of one run, from its checkpoints.

    Attributes:
        steps: ``(T,)`` the saved steps, increasing; the last is the reference.
        agreement: per matrix, ``(T, r)`` agreement with the reference by index (row ``t``: step ``steps[t]``).
        score: per matrix, ``(T,)`` the mean of the first 10 agreements.
        effective_rank_ratio: per matrix, ``(T,)`` ``exp H(σ/Σσ) / r``.
        files: the checkpoint read for each step.
    """

    steps: np.ndarray
    agreement: dict[str, np.ndarray] = field(default_factory=dict)
    score: dict[str, np.ndarray] = field(default_factory=dict)
    effective_rank_ratio: dict[str, np.ndarray] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling refusal or a damaged file: name the file
        raise ReportError(f"{path}: cannot read this checkpoint ({type(error).__name__}: {error})") from error


def find_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(global_step, path)`` of the Lightning checkpoints below ``run_dir``, by step, one per step."""
    by_step: dict[int, Path] = {}
    for path in sorted(Path(run_dir).rglob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", str(p))):
        checkpoint = _load(path)
        if "state_dict" not in checkpoint or "global_step" not in checkpoint:
            continue
        by_step.setdefault(int(checkpoint["global_step"]), path)
    return sorted(by_step.items())


def state_dict_matrices(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weight matrices of a ``state_dict`` as 2-D tensors, named as the weight monitor names them."""
    matrices = {}
    for name, tensor in state_dict.items():
        if not (isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.ndim >= 2):
            continue
        last = name.rsplit(".", 1)[-1]
        if not (last == "weight" or last.endswith("_weight") or last.startswith("weight_")):
            continue
        matrix = tensor.reshape(tensor.shape[0], -1)
        if name.endswith("in_proj_weight") and matrix.shape[0] == 3 * matrix.shape[1]:
            E = matrix.shape[1]
            for block, label in enumerate("qkv"):
                matrices[f"{name}.{label}"] = matrix[block * E : (block + 1) * E]
        else:
            matrices[name] = matrix
    return matrices


def checkpoint_dynamics(
    run_dir: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    max_index: int | None = None,
) -> CheckpointDynamics | None:
    """Agreement with the final (or a ``reference``) checkpoint of every saved step of the run in ``run_dir``.

    Args:
        run_dir: a run's folder, with Lightning checkpoints anywhere below it.
        reference: a checkpoint file to compare with (of the same model; e.g. another run's final one); default:
            the run's last saved step.
        max_index: keep the agreement of the first ``max_index`` indices only (default: all ``r``).

    Returns:
        The dynamics, or ``None`` when fewer than two steps were saved.

    Raises:
        ReportError: a checkpoint cannot be read, or holds other weight matrices than the reference.
        ValueError: ``max_index`` is not a positive integer.
    """
    if max_index is not None:
        check_int("max_index", max_index, 1)
    found = find_checkpoints(run_dir)
    if len(found) < 2:
        return None
    reference_file = found[-1][1] if reference is None else Path(reference)
    reference_svd = {
        name: thin_singular_vectors(matrix)
        for name, matrix in state_dict_matrices(_load(reference_file)["state_dict"]).items()
    }
    rows: dict[str, list[np.ndarray]] = {name: [] for name in reference_svd}
    ratios: dict[str, list[float]] = {name: [] for name in reference_svd}
    steps, files = [], []
    for step, path in found:
        matrices = state_dict_matrices(_load(path)["state_dict"])
        mismatched = [
            name
            for name, (U_ref, _, V_ref) in reference_svd.items()
            if name not in matrices or tuple(matrices[name].shape) != (U_ref.shape[0], V_ref.shape[0])
        ]
        if mismatched:
            raise ReportError(
                f"{path}: its weight matrices {mismatched[:3]} are missing or of other shapes than in the "
                f"reference {reference_file}: not the same model"
            )
        steps.append(step)
        files.append(path)
        for name, (U_ref, _, V_ref) in reference_svd.items():
            U, S, V = thin_singular_vectors(matrices[name])
            agreement = singular_vector_agreement(U, V, U_ref, V_ref)
            rows[name].append(agreement[:max_index].numpy())
            ratios[name].append(effective_rank(S, 0, 0.0) / S.numel())
    dynamics = CheckpointDynamics(np.array(steps, dtype=float), files=files)
    for name in reference_svd:
        table = np.stack(rows[name])
        dynamics.agreement[name] = table
        dynamics.score[name] = table[:, :AGREEMENT_TOP].mean(axis=1)
        dynamics.effective_rank_ratio[name] = np.array(ratios[name])
    return dynamics
