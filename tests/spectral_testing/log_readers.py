"""Read logged values back from real logger files."""

from __future__ import annotations

from pathlib import Path

from lightning_spectral.report.reader import read_run, read_scalars


def read_tensorboard_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series of every event file under ``log_dir``: ``{tag: [(step, value), ...]}`` by step, with
    every logged value (a step logged twice appears twice, so a test sees it); the package's reader."""
    return read_scalars(log_dir, keep_repeats=True)


def read_tensorboard_histogram_tags(log_dir: str | Path) -> set[str]:
    """The ``spectral/`` histogram tags written under ``log_dir`` (read by the package's report reader)."""
    return set(read_run(log_dir, name=str(log_dir)).histograms)


def _parse_wandb_file(data: bytes) -> list:
    """The records of one ``run-*.wandb`` file: a 7-byte header, then leveldb-log framing (32 KiB blocks of
    chunks, each with a 7-byte header: crc u32, length u16, type u8 with 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    records = []
    position, block_size, pending = 7, 32768, b""
    while position + 7 <= len(data):
        room = block_size - (position % block_size)
        if room < 7:  # block trailer padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def read_wandb_records(save_dir: str | Path, timeout: float = 60.0) -> list:
    """Every ``wandb_internal_pb2.Record`` of the finished offline run(s) under ``save_dir``.

    W&B's service writes the file asynchronously: wait (up to ``timeout`` seconds) until every run file ends
    with its ``exit`` record, so a loaded machine does not read a half-written run.
    """
    import time

    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        files = sorted(Path(save_dir).rglob("run-*.wandb"))
        try:
            runs = [_parse_wandb_file(path.read_bytes()) for path in files]
        except DecodeError:  # a record only partly written yet: read the file again
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        finished = bool(runs) and all(
            any(r.WhichOneof("record_type") == "exit" for r in records) for records in runs
        )
        if finished or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not files:
        raise FileNotFoundError(f"no W&B run file under {save_dir}")
    return [record for records in runs for record in records]


def read_wandb_history(save_dir: str | Path) -> list[dict[str, object]]:
    """The logged history rows of the offline W&B run(s) under ``save_dir``, values decoded from JSON."""
    import json

    rows = []
    for record in read_wandb_records(save_dir):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows
