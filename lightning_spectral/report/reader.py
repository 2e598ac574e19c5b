"""Read the ``spectral/`` scalars, histograms and images of runs back from their TensorBoard event files."""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

import numpy as np

PREFIX = "spectral/"
EVENT_GLOB = "events.out.tfevents.*"


class ReportError(ValueError):
    """A run folder that cannot be reported on (missing, no event files, no ``spectral/`` metrics)."""


@dataclass(frozen=True)
class Series:
    """One scalar tag: ``steps`` (increasing, unique) and ``values``, as float arrays of equal length."""

    steps: np.ndarray
    values: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.steps, self.values))


@dataclass(frozen=True)
class Histogram:
    """One logged histogram: ``counts[i]`` values in ``[edges[i], edges[i + 1])``."""

    step: int
    edges: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class Image:
    """One logged image (PNG bytes as TensorBoard stores them)."""

    step: int
    png: bytes


@dataclass
class RunData:
    """Everything under ``spectral/`` that one run logged.

    Attributes:
        name: the run's display name.
        path: its folder.
        event_files: the TensorBoard event files read.
        scalars: ``tag -> (steps, values)``.
        histograms: ``tag -> histograms by step``.
        images: ``tag -> images by step``.

    Example::

        (run,) = read_runs(["lightning_logs/version_0"])
        first_step, last_step = run.steps
    """

    name: str
    path: Path
    event_files: list[Path]
    scalars: dict[str, Series] = field(default_factory=dict)
    histograms: dict[str, list[Histogram]] = field(default_factory=dict)
    images: dict[str, list[Image]] = field(default_factory=dict)

    @property
    def steps(self) -> tuple[int, int]:
        """The first and last step at which any ``spectral/`` scalar was logged."""
        firsts = [int(s.steps[0]) for s in self.scalars.values()]
        lasts = [int(s.steps[-1]) for s in self.scalars.values()]
        return min(firsts), max(lasts)


def unique_run_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Each folder's name, with parent folders prepended where names collide, then ``" (2)"``, ... .

    >>> unique_run_names(["/logs/a/version_0", "/logs/b/version_0", "/logs/lr0.1"])
    ['a/version_0', 'b/version_0', 'lr0.1']
    >>> unique_run_names(["/logs/run", "/logs/run/"])
    ['run', 'run (2)']
    """
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    distinct = list(dict.fromkeys(parts))  # a folder given twice is told apart by the suffix only
    depth = dict.fromkeys(distinct, 1)
    while True:
        label = {p: "/".join(p[-depth[p] :]) for p in distinct}
        counts = Counter(label.values())
        grow = [p for p in distinct if counts[label[p]] > 1 and depth[p] < len(p) - 1]
        if not grow:
            break
        for p in grow:
            depth[p] += 1
    names = [label[p] for p in parts]
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return unique


def find_event_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The TensorBoard event files anywhere below ``run_dir``, oldest first (by the time in their name)."""

    def created(path: Path) -> tuple[float, str]:
        stamp = path.name[len(EVENT_GLOB) - 1 :].split(".", 1)[0]
        return (float(stamp) if stamp.isdigit() else path.stat().st_mtime, str(path))

    return sorted((p for p in Path(run_dir).rglob(EVENT_GLOB) if p.is_file()), key=created)


def read_scalars(
    run_dir: str | os.PathLike[str], *, keep_repeats: bool = False
) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files below ``run_dir``, ``{tag: [(step, value), ...]}`` by step (a
    later file's value wins at a step logged twice); ``FileNotFoundError`` if there is no event file.

    With ``keep_repeats=True`` every logged ``(step, value)`` is kept, a step logged twice twice (sorted by
    step, then value): what a test needs to see that nothing was logged twice.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = find_event_files(run_dir)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event file under {run_dir}")
    series: dict[str, list[tuple[int, float]]] = {}
    for event_file in files:
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    if keep_repeats:
        return {tag: sorted(events) for tag, events in series.items()}
    return {tag: sorted(dict(events).items()) for tag, events in series.items()}  # in file order: later wins


class _HasStep(Protocol):
    @property
    def step(self) -> int: ...


_Stepped = TypeVar("_Stepped", bound=_HasStep)


def nearest(items: Sequence[_Stepped], step: int) -> _Stepped:
    """The item of ``items`` (each with a ``.step``) logged nearest to ``step``, the earlier one on a tie.

    >>> nearest([Image(0, b""), Image(10, b""), Image(20, b"")], 16).step
    20
    """
    return min(items, key=lambda item: (abs(item.step - step), item.step))


def read_run(run_dir: str | os.PathLike[str], name: str, *, progress: TextIO | None = None) -> RunData:
    """Read every ``spectral/`` tag of the event files below ``run_dir``; :class:`ReportError` if none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"{path}: no such folder")
    files = find_event_files(path)
    if not files:
        raise ReportError(f"{path}: no TensorBoard event files (events.out.tfevents.*) in this folder")
    guidance = {
        "scalars": 0,
        "histograms": 0,
        "images": 0,
        "tensors": 1,
        "audio": 1,
        "compressedHistograms": 1,
    }
    scalars: dict[str, dict[int, float]] = {}
    histograms: dict[str, dict[int, Histogram]] = {}
    images: dict[str, dict[int, Image]] = {}
    first_steps: dict[Path, int] = {}  # per sub-folder, in the order of its first event file
    for number, event_file in enumerate(files, 1):
        started = time.monotonic()
        if progress is not None:
            size = event_file.stat().st_size / 2**20
            label = f"reading {name} [{number}/{len(files)}] {event_file.relative_to(path)} ({size:.1f} MiB)"
            print(label + " ...", end="", file=progress, flush=True)
        accumulator = EventAccumulator(str(event_file), size_guidance=guidance)
        accumulator.Reload()
        tags = accumulator.Tags()
        for tag in (t for t in tags["scalars"] if t.startswith(PREFIX)):
            events = accumulator.Scalars(tag)
            scalars.setdefault(tag, {}).update((e.step, e.value) for e in events)
            first = min(e.step for e in events)
            first_steps[event_file.parent] = min(first_steps.get(event_file.parent, first), first)
        for tag in (t for t in tags["histograms"] if t.startswith(PREFIX)):
            histograms.setdefault(tag, {}).update(
                (e.step, _histogram(e.step, e.histogram_value)) for e in accumulator.Histograms(tag)
            )
        for tag in (t for t in tags["images"] if t.startswith(PREFIX)):
            images.setdefault(tag, {}).update(
                (e.step, Image(e.step, e.encoded_image_string)) for e in accumulator.Images(tag)
            )
        if progress is not None:
            print(f" {time.monotonic() - started:.1f} s", file=progress, flush=True)
    _warn_if_restarted(path, first_steps)
    if not scalars:
        raise ReportError(
            f"{path}: its {len(files)} event file(s) hold no `spectral/` metrics "
            "(was a lightning_spectral monitor attached to a TensorBoardLogger?)"
        )
    return RunData(
        name=name,
        path=path,
        event_files=files,
        scalars={
            tag: Series(np.array(sorted(v), dtype=float), np.array([v[s] for s in sorted(v)], dtype=float))
            for tag, v in scalars.items()
        },
        histograms={tag: [v[s] for s in sorted(v)] for tag, v in histograms.items()},
        images={tag: [v[s] for s in sorted(v)] for tag, v in images.items()},
    )


def _warn_if_restarted(path: Path, first_steps: dict[Path, int]) -> None:
    """Warn when a later sub-folder's ``spectral/`` steps start at or before an earlier one's first step."""
    folders = list(first_steps)
    for later_index, later in enumerate(folders[1:], 1):
        earlier = next((f for f in folders[:later_index] if first_steps[later] <= first_steps[f]), None)
        if earlier is not None:
            warnings.warn(
                f"{path}: {later.relative_to(path)} starts again at step {first_steps[later]} (at or before "
                f"{earlier.relative_to(path)}'s first step {first_steps[earlier]}), so these look like separate "
                "runs, not a resumed one; they are merged as one run (later files win at shared steps). "
                "Pass each sub-folder as its own run to compare them.",
                stacklevel=3,
            )
            return


def read_runs(run_dirs: Sequence[str | os.PathLike[str]], *, progress: TextIO | None = None) -> list[RunData]:
    """:func:`read_run` of each folder, named by :func:`unique_run_names`; progress lines to ``progress``.

    Args:
        run_dirs: one folder per run, with TensorBoard event files anywhere below it.
        progress: a stream for one line per event file (``None``: quiet).

    Returns:
        One :class:`RunData` per folder, in order.

    Raises:
        ReportError: no folder given, or a folder that is missing, has no event files or no ``spectral/`` tag.

    Example::

        runs = read_runs(["runs/lr0.05", "runs/lr0.2"], progress=sys.stderr)  # a line per event file
        steps, values = runs[0].scalars["spectral/hessian/lambda_1"]
    """
    if not run_dirs:
        raise ReportError("no run folder given")
    names = unique_run_names(run_dirs)
    return [read_run(run_dir, name, progress=progress) for run_dir, name in zip(run_dirs, names)]


def _histogram(step: int, value: Any) -> Histogram:  # (TensorBoard's HistogramValue protobuf, untyped)
    """TensorBoard's ``HistogramValue`` (bucket right limits; the first bucket starts at ``min``)."""
    limits = np.asarray(value.bucket_limit, dtype=float)
    counts = np.asarray(value.bucket, dtype=float)
    left = min(float(value.min), float(limits[0])) if len(limits) else float(value.min)
    edges = np.concatenate([[left], limits])
    if len(edges) > 1 and not np.isfinite(edges[-1]):
        edges[-1] = max(float(value.max), edges[-2])
    return Histogram(step=int(step), edges=edges, counts=counts)
