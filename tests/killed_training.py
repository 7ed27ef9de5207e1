"""Kill a training process part-way, as a lost Colab session or a pre-empted machine would, for resume tests."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence


REPO = Path(__file__).resolve().parents[1]


def repo_env() -> dict[str, str]:
    """This environment with the repository on PYTHONPATH, for ``python -m livestock.cli`` in a subprocess."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def kill_when(cmd: Sequence[str], ready: Callable[[], bool], *, cwd: Path | None = None,
              env: Mapping[str, str] | None = None, timeout_s: float = 600, delay_s: float = 0.0) -> None:
    """Run ``cmd`` and kill it (SIGKILL, no clean-up) ``delay_s`` after ``ready()``; fails, with the end of its
    error output, if the process ends first, or if ``timeout_s`` passes (a hang detector only)."""
    errors = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall a chatty training
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env) if env is not None else repo_env(),
                            stdout=subprocess.DEVNULL, stderr=errors)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if proc.poll() is not None:
                errors.seek(0)
                raise AssertionError("ended before it could be killed: " + errors.read().decode()[-3000:])
            assert time.monotonic() < deadline, f"not ready to be killed after {timeout_s} s"
            time.sleep(0.05)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errors.close()
    assert proc.returncode == -signal.SIGKILL, f"ended by itself (exit {proc.returncode}) before the kill"


def kill_after_epochs(cmd: Sequence[str], results_csv: Path, epochs: int = 2, timeout_s: float = 600,
                      env: Mapping[str, str] | None = None) -> int:
    """Run ``cmd``, kill it once ``results_csv`` holds ``epochs`` epoch rows (the header aside), and return the
    number of epoch rows it had written by then."""
    kill_when(cmd, lambda: results_csv.is_file() and len(results_csv.read_text().splitlines()) > epochs,
              env=env, timeout_s=timeout_s)
    return len(results_csv.read_text().splitlines()) - 1
