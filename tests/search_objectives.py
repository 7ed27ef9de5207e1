"""Cheap objectives for the search tests: module-level, so spawned worker processes can import them."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

# The optimum of `quadratic` (inside the default bounds of lr0, lrf, momentum).
OPTIMUM = {"lr0": 0.01, "lrf": 0.2, "momentum": 0.9}


def quadratic(hyp: dict, reporter) -> float:
    """Higher is better; 0 at OPTIMUM (lr0 compared on a log scale)."""
    return -((math.log10(hyp["lr0"]) + 2) ** 2 + (hyp["lrf"] - 0.2) ** 2 + (hyp["momentum"] - 0.9) ** 2)


@dataclass(frozen=True)
class SlowQuadratic:
    """`quadratic` after a pause, leaving marker files ``start-<trial>-<pid>`` / ``end-<trial>-<pid>`` in ``marks``.
    With ``parties`` > 1 the first trial of each worker waits until that many workers have started one, so the
    workers really do run side by side; ``victim_sleep_s`` makes one trial number sleep long enough to be killed."""

    marks: str
    sleep_s: float = 0.2
    parties: int = 1
    victim: int = -1
    victim_sleep_s: float = 0.0

    def __call__(self, hyp: dict, reporter) -> float:
        marks = Path(self.marks)
        (marks / f"start-{reporter.number}-{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while len({p.name.rsplit("-", 1)[1] for p in marks.glob("start-*")}) < self.parties:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only some of {self.parties} workers started")
            time.sleep(0.05)
        time.sleep(self.victim_sleep_s if reporter.number == self.victim else self.sleep_s)
        (marks / f"end-{reporter.number}-{os.getpid()}").touch()
        return quadratic(hyp, reporter)


def epochs_quadratic(hyp: dict, reporter) -> float:
    """Reports 5 epochs climbing towards `quadratic`, so a pruner has something to compare."""
    final = quadratic(hyp, reporter)
    for epoch in range(1, 6):
        reporter.report(epoch, final - (5 - epoch) * 0.1)
    return final


def run_worker(**kwargs) -> None:
    """One worker of a shared study, as on another machine: ``livestock.model.search.run_search`` with one process."""
    from livestock.model.search import run_search

    run_search(progress=False, **kwargs)


def torch_threads(hyp: dict, reporter) -> float:
    """The torch thread count of the process that runs the trial."""
    import torch

    return float(torch.get_num_threads())
