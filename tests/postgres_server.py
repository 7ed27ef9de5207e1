"""A throwaway PostgreSQL server for tests: ``initdb`` in a temporary folder, a Unix socket there and TCP on
127.0.0.1 (a free port) with scram-sha-256 password authentication, one role with a password and one database.

``initdb`` refuses to run as root, so as root every server command runs as the ``postgres`` user
(``runuser -u postgres --``) and the folder belongs to that user.
"""
from __future__ import annotations

import glob
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROLE, DATABASE = "livestock", "optuna"


class PostgresUnavailable(RuntimeError):
    """The server could not be set up here (binaries missing, initdb or start failed); the message says why."""


@dataclass
class PostgresServer:
    root: Path
    bin_dir: Path
    port: int
    password: str
    as_postgres: bool  # commands run as the postgres user (the tests run as root)

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL over TCP with the role's password (what a worker on another machine would use)."""
        return f"{driver}://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def psql(self, sql: str, database: str = "postgres", user: str = "postgres") -> str:
        """Run ``sql`` through the Unix socket as ``user`` (local connections are trusted)."""
        return _run(self, [str(self.bin_dir / "psql"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", user,
                           "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]).stdout

    def stop(self) -> None:
        """``pg_ctl stop -m fast``, then remove the folder."""
        try:
            _run(self, [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, else the one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresUnavailable("PostgreSQL server binaries (initdb) not found; install the postgresql package")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(server: PostgresServer, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if server.as_postgres else cmd


def _run(server: PostgresServer, cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = _as_server_user(server, cmd)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=server.root)
    if done.returncode:
        raise PostgresUnavailable(f"{' '.join(cmd)} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
    return done


# The watchers' Popen objects, kept so that none is collected (and warned about) while its watcher still runs.
_WATCHERS: list[subprocess.Popen] = []


def _stop_when_process_ends(server: PostgresServer, pid: int) -> None:
    """A test process that dies (killed, or pytest-xdist's "node down") never reaches its fixture's teardown, and the
    server it started would run on with its folder in /tmp. A detached watcher stops the server (``-m immediate``: the
    data is thrown away) and removes the folder once ``pid`` is gone; after a normal :meth:`PostgresServer.stop` it
    finds nothing left to do. PostgreSQL has no option to end with its parent, hence the watcher."""
    stop = shlex.join(_as_server_user(server, [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir),
                                               "-m", "immediate", "-w", "stop"]))
    script = (f"while kill -0 {pid} 2>/dev/null; do sleep 1; done; "
              f"if [ -d {shlex.quote(str(server.data_dir))} ]; then {stop}; fi; rm -rf {shlex.quote(str(server.root))}")
    _WATCHERS.append(subprocess.Popen(["sh", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def start_postgres(owner_pid: int | None = None) -> PostgresServer:
    """Initialise and start a server; raises :class:`PostgresUnavailable` with the reason when it cannot. The server
    is stopped and its folder removed when the process ``owner_pid`` (default: this one) ends without stopping it."""
    bin_dir = find_bin_dir()
    as_postgres = os.geteuid() == 0
    # Not under pytest's temporary folder: its parents are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="livestock-pg-"))
    server = PostgresServer(root=root, bin_dir=bin_dir, port=_free_port(), password=secrets.token_hex(12),
                            as_postgres=as_postgres)
    try:
        if as_postgres:
            shutil.chown(root, "postgres", "postgres")
        _run(server, [str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", "postgres", "-E", "UTF8",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"], timeout=120)
        (server.data_dir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        with open(server.data_dir / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {server.port}\n"
                       f"unix_socket_directories = '{root}'\npassword_encryption = 'scram-sha-256'\n"
                       # a throwaway server: durability is not wanted, speed is
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        _run(server, [str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(root / "server.log"),
                      "-w", "-t", "60", "start"], timeout=90)
        _stop_when_process_ends(server, os.getpid() if owner_pid is None else owner_pid)
        server.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{server.password}'")
        server.psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        return server
    except PostgresUnavailable as e:
        log = root / "server.log"
        detail = log.read_text()[-1500:] if log.is_file() else ""
        try:
            server.stop()
        except PostgresUnavailable:
            shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"{e}\n{detail}".strip()) from None
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise


def start_postgres_or_skip(owner_pid: int | None = None) -> PostgresServer:
    """:func:`start_postgres` for a test: where the server cannot start the test skips with the reason, unless
    LIVESTOCK_REQUIRE_POSTGRES=1 (CI) makes that a failure."""
    import pytest

    try:
        return start_postgres(owner_pid)
    except PostgresUnavailable as e:
        if os.environ.get("LIVESTOCK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL server could not start: {e}")
        pytest.skip(f"PostgreSQL server could not start: {e}")
