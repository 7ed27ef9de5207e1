"""Where a search's study lives: PostgreSQL or SQLite through Optuna's RDB storage, or a journal file, each with
heartbeats so that a trial whose worker died is failed and retried once."""
from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the interface optuna's heartbeat machinery checks for
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

JOURNAL_NAME = "study.log"
HEARTBEAT_ATTR = "livestock_heartbeat"  # trial system attribute, journal storage only


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat its RDB storage has.

    Optuna 5's ``JournalStorage`` records no heartbeats, so a trial whose worker died would stay RUNNING forever.
    Here the running trial's worker writes the time as the trial's system attribute ``livestock_heartbeat`` every
    ``heartbeat_interval`` seconds (Optuna's own heartbeat thread calls :meth:`record_heartbeat`), and a trial whose
    latest heartbeat (or start, if later: a retried trial carries its predecessor's attributes) is older than
    ``grace_period`` is stale; Optuna's ``fail_stale_trials`` then fails it and calls the retry callback, exactly as
    with PostgreSQL. Times are each worker's wall clock: machines sharing one journal file need synchronised
    clocks (NTP); the RDB storage uses the database server's clock instead.
    """

    def __init__(self, backend: JournalFileBackend, heartbeat_interval: int, grace_period: int | None = None,
                 heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> None:
        if heartbeat_interval <= 0 or (grace_period is not None and grace_period <= 0):
            raise ValueError("heartbeat_interval and grace_period must be positive")
        super().__init__(backend)
        self.heartbeat_interval = int(heartbeat_interval)
        self.grace_period = int(grace_period) if grace_period else 2 * self.heartbeat_interval
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        """Record that ``trial_id``'s worker is alive now."""
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass  # another worker already failed this trial as stale; its retry runs elsewhere

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beats = [float(t.system_attrs.get(HEARTBEAT_ATTR, -math.inf))]
            if t.datetime_start is not None:
                beats.append(t.datetime_start.timestamp())
            if now - max(beats) > self.grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats."""
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        """What runs for a trial found stale (the retry)."""
        return self.heartbeat_stale_trial_callback


def storage_url(storage: str | os.PathLike | None, out: str | os.PathLike) -> str:
    """Normalise a storage argument: a database URL (``postgresql://`` is read as ``postgresql+psycopg://``, the
    driver installed with this package), a journal file path ending in ``.log``, or None for ``out/study.log``."""
    if storage is None:
        return str(Path(out) / JOURNAL_NAME)
    text = str(storage)
    if "://" in text:
        for plain in ("postgresql://", "postgres://"):
            if text.startswith(plain):
                return "postgresql+psycopg://" + text[len(plain):]
        return text
    if text.endswith(".log"):
        return text
    raise ValueError(f"storage {text!r}: expected postgresql://user:password@host/db, sqlite:///path.db "
                     "or a journal file path ending in .log")


def display_url(url: str) -> str:
    """A storage URL with its password hidden, for printing."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_storage(url: str, heartbeat_interval: int = 30,
                 grace_period: int | None = None) -> optuna.storages.BaseStorage:
    """The storage at ``url`` (see :func:`storage_url`), with heartbeats every ``heartbeat_interval`` seconds and
    stale trials (no heartbeat for ``grace_period``, default twice the interval) failed and retried once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are experimental in optuna 5
        retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
        if "://" in url:
            engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}  # trials run for hours; idle links drop
            if url.startswith("sqlite"):
                engine_kwargs["connect_args"] = {"timeout": 60}  # several local processes share one file
            return _rdb_storage(url, engine_kwargs=engine_kwargs, heartbeat_interval=int(heartbeat_interval),
                                grace_period=grace_period, heartbeat_stale_trial_callback=retry)
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat_interval, grace_period, retry)


def _rdb_storage(url: str, attempts: int = 5, **kwargs: Any) -> RDBStorage:
    """``RDBStorage`` whose first use of an empty database may race with another worker's: both create Optuna's
    tables and types, and on PostgreSQL the loser fails with a duplicate-key error on the type it tried to create.
    The schema is then there, so the loser simply connects again."""
    from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError, ProgrammingError

    try:
        for attempt in range(attempts - 1):
            try:
                return RDBStorage(url, **kwargs)
            except (IntegrityError, ProgrammingError):
                time.sleep(0.2 * (attempt + 1))
        return RDBStorage(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, OperationalError) as e:  # a bad URL, an unknown driver, no server
        raise ValueError(f"{display_url(url)}: cannot open the study's database: "
                         f"{str(e.orig if getattr(e, 'orig', None) else e).splitlines()[0]}") from e
