"""Read logged values back from real logger files."""

from __future__ import annotations

from pathlib import Path


def read_tensorboard_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series of every event file under ``log_dir``: ``{tag: [(step, value), ...]}`` by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    event_files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    if not event_files:
        raise FileNotFoundError(f"no TensorBoard event file under {log_dir}")
    for event_file in event_files:
        accumulator = EventAccumulator(str(event_file), size_guidance={"scalars": 0, "histograms": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(values) for tag, values in series.items()}


def read_tensorboard_histogram_tags(log_dir: str | Path) -> set[str]:
    """The histogram tags written under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for event_file in Path(log_dir).rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file), size_guidance={"histograms": 0})
        accumulator.Reload()
        tags.update(accumulator.Tags()["histograms"])
    return tags
