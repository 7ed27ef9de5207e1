"""Kill a training process part-way, as a lost Colab session or a pre-empted machine would, for resume tests."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence


def kill_when(cmd: Sequence[str], ready: Callable[[], bool], *, cwd: Path | None = None,
              env: Mapping[str, str] | None = None, timeout_s: float = 600) -> None:
    """Run ``cmd`` and kill it (SIGKILL, no clean-up) as soon as ``ready()``; fails if the process ends first or
    ``timeout_s`` passes."""
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env) if env is not None else dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def kill_after_epochs(cmd: Sequence[str], results_csv: Path, epochs: int = 2, timeout_s: float = 600,
                      env: Mapping[str, str] | None = None) -> int:
    """Run ``cmd``, kill it once ``results_csv`` holds ``epochs`` epoch rows (the header aside), and return the
    number of epoch rows it had written by then."""
    kill_when(cmd, lambda: results_csv.is_file() and len(results_csv.read_text().splitlines()) > epochs,
              env=env, timeout_s=timeout_s)
    return len(results_csv.read_text().splitlines()) - 1
