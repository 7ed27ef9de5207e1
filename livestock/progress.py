"""Progress events from long work (training epochs, evolution trials, images detected) to whoever watches.

The main job runs its stages as notebooks in separate kernels, whose output the terminal never sees. A stage
therefore reports progress as JSON lines appended to the file named by ``LIVESTOCK_PROGRESS``; the pipeline sets
that variable for its kernels and prints what arrives (:mod:`livestock.pipeline`). Without the variable, events
go nowhere and cost nothing. One line per event, written with a single ``write`` on a file opened for appending,
so lines from several processes (evolution workers) never interleave.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator

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


@contextlib.contextmanager
def follow_events(path: str | os.PathLike, handle: Callable[[dict], None], interval_s: float = 0.5
                  ) -> Iterator[None]:
    """While open, a background thread hands every event appended to ``path`` to ``handle``, in order; on close
    the events still unread are handed over too. An exception in ``handle`` is reported, not raised: progress
    display never stops the work it watches."""
    stop = threading.Event()
    offset = 0

    def drain() -> None:
        nonlocal offset
        events, offset = read_events(path, offset)
        for event in events:
            try:
                handle(event)
            except Exception as e:  # a display bug must not end a training run
                print(f"[progress] could not show event {event}: {e!r}", file=sys.stderr)

    def loop() -> None:
        while not stop.wait(interval_s):
            drain()

    thread = threading.Thread(target=loop, name=f"progress:{os.fspath(path)}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        drain()
