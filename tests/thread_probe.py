"""Which torch thread count a process and its later children get after an engine's offline layer ran: both engines'
imports set OMP_NUM_THREADS, and their layers must leave the threads as the user had them."""
from __future__ import annotations

import os
import subprocess
import sys

_PROBE = """
import os, subprocess, sys
child = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
before = subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip()
exec(sys.argv[1])
import torch
after = subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip()
print(os.environ.get("OMP_NUM_THREADS"), before, torch.get_num_threads(), after)
"""


def assert_threads_kept(fix: str, user_threads: str | None) -> None:
    """Run ``fix`` (Python source) in a fresh interpreter whose OMP_NUM_THREADS is ``user_threads`` (unset for None)
    and check that the variable is left as it was and that the interpreter itself and a child started afterwards
    compute with the torch threads a child got before ``fix`` ran (the user's value where one is set)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if user_threads is not None:
        env["OMP_NUM_THREADS"] = user_threads
    out = subprocess.run([sys.executable, "-c", _PROBE, fix], env=env, capture_output=True, text=True, check=True)
    variable, before, here, after = out.stdout.split()[-4:]
    assert variable == str(user_threads)
    assert here == before and after == before
    if user_threads is not None:
        assert before == user_threads
