"""Which prompt groups the trainer's current weights were trained on: `trainer/trained.jsonl`.

Rank 0 appends one line when an attempt starts (`{"attempt", "resumedFrom"}`: the checkpoint it loaded) and
one per optimizer step (`{"step", "attempt", "groups"}`: the run-wide group ids of the samples it trained),
written before that step can reach a checkpoint. Steps at or after a resume point were rolled back by the
resume, so `lineage` drops them; what remains is exactly what the weights saw, whatever was restarted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TRAINED_FILE = "trained.jsonl"


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, flushed and fsynced (a kill can cut only the line being written; readers skip it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # the line a kill cut short
            continue
    return records


def lineage(records: Iterable[dict[str, Any]]) -> dict[int, list[int]]:
    """Step -> group ids trained into the current weights (pure)."""
    trained: dict[int, list[int]] = {}
    for record in records:
        if "resumedFrom" in record:
            trained = {s: g for s, g in trained.items() if s < int(record["resumedFrom"])}
        else:
            trained[int(record["step"])] = [int(g) for g in record["groups"]]
    return trained
