"""Progress events from long work (training epochs, evolution trials, images detected) to whoever watches.

The main job runs its stages as notebooks in separate kernels, whose output the terminal never sees. A stage
therefore reports progress as JSON lines appended to the file named by ``LIVESTOCK_PROGRESS``; the pipeline sets
that variable for its kernels and prints what arrives (:mod:`livestock.pipeline`). Without the variable, events
go nowhere and cost nothing. One line per event, written with a single ``write`` on a file opened for appending,
so lines from several processes (evolution workers) never interleave.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

PROGRESS_ENV = "LIVESTOCK_PROGRESS"


def emit(kind: str, **fields: Any) -> None:
    """Append one event (``kind`` such as ``epoch``, ``trial``, ``images``, plus its fields) to the progress file."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    event = {"time": time.time(), "kind": kind, **fields}
    line = json.dumps(event, default=float) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


def read_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """The complete events in the file after byte ``offset``, and the offset after the last complete line."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    events = []
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # not ours: a progress file is only ever appended to by emit()
    return events, offset + end
