"""The suite's throwaway PostgreSQL server does not outlive the process that started it, even one killed before its
fixture's teardown (a pytest-xdist worker that dies leaves no server running in /tmp)."""
from __future__ import annotations

import socket
import subprocess
import time

from postgres_server import start_postgres_or_skip


def _accepts_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_server_stops_when_the_process_that_started_it_is_killed():
    owner = subprocess.Popen(["sleep", "600"])  # stands in for a test worker
    try:
        server = start_postgres_or_skip(owner_pid=owner.pid)
        assert server.psql("SELECT 1").strip() == "1" and _accepts_connections(server.port)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 60  # a hang detector only: the watcher looks once a second
    while server.root.exists():
        assert time.monotonic() < deadline, f"{server.root} still there a minute after its owner was killed"
        time.sleep(0.2)
    assert not _accepts_connections(server.port)
