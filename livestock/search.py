"""Hyper-parameter search on Optuna: one shared study, any number of workers on any number of machines.

A study searches the hyp keys the user names (the key / bounds rules of :mod:`livestock.evolve`: YOLOv5's bounds
unless overridden) with one of four samplers:

- ``ga``: the original entry's YOLOv5 genetic algorithm as an Optuna sampler (:class:`GeneticSampler`): trial 0
  is the base hyp, every later trial mutates a parent drawn from the top 5 finished trials;
- ``tpe``, ``cmaes``: Bayesian / evolution-strategy samplers (what the original left for later); ``random``.

Every trial is ``objective(hyp, reporter) -> fitness`` (:data:`Objective`), maximised. :func:`training_objective`
is the real one: a short training run on the mini set scored by the contest metric on its validation fold.

Workers share the study through its storage, never through each other:

- ``postgresql://user:password@host/db`` for several machines (see the README), ``sqlite:///path.db`` on one
  machine, or a path ending in ``.log``: an Optuna journal file (one machine, or a shared file system). Default:
  ``<out>/study.log``.
- ``workers=N`` starts N local worker processes, each with its own storage connection; the same command on
  another machine, with the same storage and study name, joins the study.
- The study stops at exactly ``trials`` finished (complete or pruned) trials across all workers: a worker starts
  a trial only while finished + running + queued trials leave a free slot, and a trial that two workers started
  for the last slot at the same moment is given up by the one with the higher trial number (recorded as FAIL
  with the user attribute ``surplus``, never run, left out of ``trials.csv``).
- A worker that dies (killed, machine lost) stops sending heartbeats; once its trial's last heartbeat is older
  than ``grace_period`` the next worker to look marks it FAIL and queues it again with the same parameters, once
  (Optuna's ``RetryHeartbeatStaleTrialCallback(max_retry=1)``; the retry carries the system attributes
  ``failed_trial`` and ``retry_history``). Optuna 5 records heartbeats only in its RDB storage (PostgreSQL,
  SQLite); for journal files :class:`HeartbeatJournalStorage` adds them (see there). Workers with nothing left to
  start wait for the running trials, so a dead worker's trial is retried before the study ends.
- Finished trials live in the storage: re-running the same command resumes a stopped study; a larger ``trials``
  extends a finished one.

Outputs in ``out`` (default ``runs/search/<study>``): ``trials.csv`` (one row per trial: state, fitness, recorded
metrics, duration, worker, the searched keys), ``best_hyp.yaml`` (the base hyp with the best trial's keys, ready
for ``livestock train --hyp``), ``fitness.png`` and ``importances.csv`` (Optuna's parameter importances), written
atomically; per-trial training runs go to ``out/trial_NNN``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import pickle
import shutil
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the interface optuna's heartbeat machinery checks for
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

# Everything this module takes from the rest of the package: the engine's training, the evolution's key / bounds /
# mutation rules and contest fitness, atomic writes.
from livestock.engine import DEFAULT_HYP, fitness_yolov5, load_data_yaml, load_hyp, train
from livestock.evolve import (DEFAULT_KEYS, FITNESS_KINDS, contest_fitness, next_hyp, parse_bounds, parse_keys,
                              plot_evolution, resolve_bounds)
from livestock.records import atomic_write_csv, atomic_write_text

SAMPLERS = ("ga", "tpe", "cmaes", "random")
PRUNERS = ("none", "median", "hyperband")
STARTUP_TRIALS = 5  # most random trials tpe / cmaes draw before modelling the history
LOG_SCALE_RATIO = 100.0  # keys whose bounds span two decades or more (lr0, lrf) are searched on a log scale
MIN_IMPORTANCE_TRIALS = 4
JOURNAL_NAME = "study.log"
TRIALS_NAME, BEST_HYP_NAME, PLOT_NAME, IMPORTANCE_NAME = "trials.csv", "best_hyp.yaml", "fitness.png", "importances.csv"
SETTINGS_ATTR = "livestock_search"  # study user attribute: what every worker must agree on
SURPLUS_ATTR = "surplus"  # trial user attribute of a trial given up for lack of a free slot
WORKER_ATTR = "worker"  # trial user attribute: host:pid of the worker that ran it
CLAIM_ATTR = "claim"  # trial user attribute: the trial's own number, set as its objective starts
HEARTBEAT_ATTR = "livestock_heartbeat"  # trial system attribute, journal storage only
# States that hold one of the study's slots: finished, or on their way to finish.
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_HOLDING = (*_FINISHED, TrialState.RUNNING, TrialState.WAITING)


class TrialReporter:
    """What an objective sees of its trial: its number, per-epoch reports (which may prune it) and extra results."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial

    @property
    def number(self) -> int:
        """The trial's number in the study (unique across workers; names its run folder)."""
        return self._trial.number

    def report(self, epoch: int, fitness: float) -> None:
        """Report ``fitness`` after ``epoch``; raises ``optuna.TrialPruned`` when the study's pruner says stop."""
        self._trial.report(float(fitness), step=int(epoch))
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} at fitness {fitness:.5g}")

    def record(self, **values: Any) -> None:
        """Keep extra results (metrics, epochs run) with the trial; they become columns of ``trials.csv``."""
        for key, value in values.items():
            self._trial.set_user_attr(key, value.item() if isinstance(value, np.generic) else value)


# The objective seam: the full hyp dict (base hyp with the trial's keys applied) and the trial's reporter -> fitness
# (higher is better). Objectives given to several worker processes must be picklable (a module-level function or an
# instance of a module-level class such as TrainingObjective).
Objective = Callable[[dict[str, float], TrialReporter], float]


# ---------------------------------------------------------------- the real objective: train, score


@dataclass(frozen=True)
class TrainingObjective:
    """Train on ``data_yaml`` with the trial's hyp (:func:`livestock.engine.train`) and score the best weights:
    ``contest`` = mAP@0.75 by the contest metric on the validation split, ``yolov5`` = YOLOv5's fitness."""

    data_yaml: str
    epochs: int
    imgsz: int = 640
    batch: int = 16
    model: str | None = None
    weights: str | None = None
    device: str = "auto"
    workers: int = 8  # data-loader workers of each training run
    seed: int = 0
    project: str = "runs/search/search"
    fitness: str = "contest"
    optimizer: str = "SGD"
    linear_lr: bool = True
    keep_weights: bool = False  # a yolov5m6 checkpoint is ~68 MB: by default a scored trial drops its weights
    verbose: bool = False

    def __call__(self, hyp: dict[str, float], reporter: TrialReporter) -> float:
        result = train(
            self.data_yaml, model=self.model, weights=self.weights, hyp=hyp, imgsz=self.imgsz, epochs=self.epochs,
            batch_size=self.batch, device=self.device, workers=self.workers, project=self.project,
            name=f"trial_{reporter.number:03d}", exist_ok=True, linear_lr=self.linear_lr, optimizer=self.optimizer,
            seed=self.seed, plots=False, verbose=self.verbose,
        )
        map75 = math.nan
        if self.fitness == "contest":
            map75 = contest_fitness(result.best, self.data_yaml, imgsz=self.imgsz, device=self.device,
                                    batch_size=self.batch * 2, workers=self.workers)
        score = map75 if self.fitness == "contest" else fitness_yolov5(result.metrics)
        row = result.metrics.loc["all"]
        reporter.record(**{k: float(row[k]) for k in ("P", "R", "mAP@0.5", "mAP@0.5:0.95")}, **{"mAP@0.75": map75},
                        epochs_run=int(result.epochs_run))
        if not self.keep_weights:
            shutil.rmtree(result.save_dir / "weights", ignore_errors=True)
        self.report_final_fitness(reporter, score)
        return score

    def report_final_fitness(self, reporter: TrialReporter, score: float) -> None:
        """The one place this objective reports to the pruner: the final fitness only, as epoch ``epochs``.

        ``livestock.engine.train`` has no per-epoch hook yet, so a pruner sees each trial once, after its full
        training: it can mark a trial pruned but cannot save it any epochs. Per-epoch reports come with the engine
        interface's epoch callback."""
        reporter.report(self.epochs, score)

    def describe(self) -> dict[str, Any]:
        """The settings every worker of one study must share (paths may differ between machines)."""
        return {"kind": "training", "epochs": self.epochs, "imgsz": self.imgsz, "batch": self.batch,
                "model": self.model, "weights": Path(self.weights).name if self.weights else None,
                "fitness": self.fitness, "optimizer": self.optimizer, "linear_lr": self.linear_lr}


def training_objective(data_yaml: str | os.PathLike, epochs: int, imgsz: int = 640, batch: int = 16,
                       model: str | None = None, weights: str | os.PathLike | None = None, device: str = "auto",
                       workers: int = 8, seed: int = 0, project: str | os.PathLike = "runs/search/search",
                       fitness: str = "contest", optimizer: str = "SGD", linear_lr: bool = True,
                       keep_weights: bool = False, verbose: bool = False) -> TrainingObjective:
    """The real objective: train ``epochs`` epochs on ``data_yaml`` (the mini set) with the trial's hyp, score the
    validation fold with the contest metric (``fitness="contest"``, mAP@0.75) or YOLOv5's fitness; each trial's run
    goes to ``project/trial_NNN``. The base hyp comes from :func:`run_search`, which hands every trial its full hyp.
    It reports only the final fitness, at epoch ``epochs`` (:meth:`TrainingObjective.report_final_fitness`):
    the engine has no per-epoch hook yet."""
    if fitness not in FITNESS_KINDS:
        raise ValueError(f"fitness must be one of {FITNESS_KINDS}, not {fitness!r}")
    if epochs < 1:
        raise ValueError(f"need epochs >= 1 (got {epochs})")
    load_data_yaml(data_yaml)  # fail now, not after the first trial's training
    return TrainingObjective(
        data_yaml=str(data_yaml), epochs=int(epochs), imgsz=int(imgsz), batch=int(batch), model=model,
        weights=str(weights) if weights else None, device=device, workers=int(workers), seed=int(seed),
        project=str(project), fitness=fitness, optimizer=optimizer, linear_lr=bool(linear_lr),
        keep_weights=bool(keep_weights), verbose=bool(verbose),
    )


# ---------------------------------------------------------------- search space and samplers


def search_space(bounds: Mapping[str, tuple[float, float]]) -> dict[str, FloatDistribution]:
    """One float distribution per key; log scale where the bounds are positive and span two decades or more."""
    return {k: FloatDistribution(float(low), float(high), log=bool(low > 0 and high / low >= LOG_SCALE_RATIO))
            for k, (low, high) in bounds.items()}


@dataclass(frozen=True)
class GeneticSettings:
    """YOLOv5's genetic algorithm settings: parents among the ``top_n`` fittest, mutation probability, sigma."""

    top_n: int = 5
    mutation_prob: float = 0.8
    sigma: float = 0.2


class GeneticSampler(optuna.samplers.BaseSampler):
    """YOLOv5 7.0's ``train.py --evolve`` as an Optuna sampler, over the chosen keys only (the original's change).

    Trial 0 proposes the base hyp (its keys constrained to the bounds). Every later trial draws a parent among the
    ``top_n`` finished (COMPLETE) trials by fitness, with weights ``fitness - min + 1e-6`` (YOLOv5's 'single'
    selection), and mutates it: per key, with probability ``mutation_prob``, a factor
    ``1 + gain * N(0, 1) * U(0, 1) * sigma`` (one uniform shared by all keys), clipped to [0.3, 3.0], drawn again
    until some key changes; values are clipped to the bounds and rounded to 5 significant digits
    (:func:`livestock.evolve.next_hyp`). A trial that starts before any has finished mutates the base. Random draws
    come from ``numpy.random.default_rng([seed, trial number])``: the same seed and history give the same proposal
    in any worker. Fitness is maximised.
    """

    def __init__(self, base_hyp: Mapping[str, float], bounds: Mapping[str, tuple[float, float]], seed: int = 0,
                 settings: GeneticSettings = GeneticSettings()) -> None:
        self._base = dict(base_hyp)
        self._bounds = {k: (float(lo), float(hi)) for k, (lo, hi) in bounds.items()}
        self._keys = tuple(self._bounds)
        self._space = search_space(self._bounds)
        self._seed = int(seed)
        self._settings = settings
        self._independent = optuna.samplers.RandomSampler(seed=seed)  # only for parameters outside the keys

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def history(self, study: optuna.Study) -> pd.DataFrame:
        """The finished trials a parent may come from: fitness and the keys, in trial order."""
        rows = [{"fitness": t.value, **{k: t.params[k] for k in self._keys}}
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if all(k in t.params for k in self._keys)]
        return pd.DataFrame(rows, columns=["fitness", *self._keys])

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        s = self._settings
        hyp = next_hyp(self.history(study), self._base, self._keys, self._bounds, self._seed, trial.number,
                       s.top_n, s.mutation_prob, s.sigma)
        return {k: hyp[k] for k in search_space}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)


def make_sampler(name: str, base_hyp: Mapping[str, float], bounds: Mapping[str, tuple[float, float]], trials: int,
                 seed: int | None, ga: GeneticSettings = GeneticSettings()) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (see :data:`SAMPLERS`); ``seed`` None draws one from the OS (not for ``ga``)."""
    # At most STARTUP_TRIALS random trials, and never more than half the budget, before the model takes over.
    startup = max(1, min(STARTUP_TRIALS, trials // 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # constant_liar
        if name == "ga":
            return GeneticSampler(base_hyp, bounds, seed=0 if seed is None else seed, settings=ga)
        if name == "tpe":
            # constant_liar: parallel workers treat each other's running trials as bad, so they spread out.
            return optuna.samplers.TPESampler(n_startup_trials=startup, seed=seed, constant_liar=True)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(n_startup_trials=startup, seed=seed, warn_independent_sampling=False)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler must be one of {SAMPLERS}, not {name!r}")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """``none``, ``median`` (below the median of earlier trials at the same epoch) or ``hyperband``."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    raise ValueError(f"pruner must be one of {PRUNERS}, not {name!r}")


# ---------------------------------------------------------------- storages


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
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
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
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=int(heartbeat_interval),
                              grace_period=grace_period, heartbeat_stale_trial_callback=retry)
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat_interval, grace_period, retry)


# ---------------------------------------------------------------- the worker loop


class _SurplusTrial(Exception):
    """Raised for a trial started for a slot another worker took first; Optuna records it as FAIL."""


@dataclass(frozen=True)
class _Plan:
    """Everything a worker process needs (pickled to spawned workers)."""

    objective: Objective
    storage: str
    study_name: str
    trials: int
    bounds: dict[str, tuple[float, float]]
    base_hyp: dict[str, float]
    sampler: str
    pruner: str
    seed: int
    ga: GeneticSettings
    heartbeat_interval: int
    grace_period: int | None


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {"finished": sum(s in _FINISHED for s in states), "running": states.count(TrialState.RUNNING),
            "waiting": states.count(TrialState.WAITING)}


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _fail_and_retry(study: optuna.Study, numbers: Sequence[int]) -> list[int]:
    """Fail these RUNNING trials and queue their retries, as Optuna does for stale ones; returns those failed here
    (not by another worker meanwhile)."""
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
        for number in numbers:
            try:
                frozen = study.tell(number, state=TrialState.FAIL)
            except (UpdateFinishedTrialError, ValueError, RuntimeError):
                continue  # finished or failed by its own worker or another one in the meantime
            retry(study, frozen)
            failed.append(number)
    return failed


def _fail_running(study: optuna.Study) -> list[int]:
    """Fail every RUNNING trial now and queue its retry; for a caller that knows it is the study's only user, so
    trials still running were left by a run that died."""
    return _fail_and_retry(study, [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))])


class _UnclaimedWatch:
    """Catches trials whose worker died after creating them but before their objective started: Optuna's RDB
    heartbeat never marks a trial stale that has no heartbeat yet. A RUNNING trial seen without its claim for
    ``grace`` seconds of this worker's own clock (no clocks compared across machines) is failed and retried."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.first_seen: dict[int, float] = {}

    def check(self, study: optuna.Study) -> list[int]:
        now = time.monotonic()
        unclaimed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                     if t.user_attrs.get(CLAIM_ATTR) != t.number}  # a retry carries its predecessor's claim
        self.first_seen = {n: self.first_seen.get(n, now) for n in unclaimed}
        lost = [n for n, seen in self.first_seen.items() if now - seen > self.grace]
        return _fail_and_retry(study, lost) if lost else []


def _optuna_objective(study: optuna.Study, plan: _Plan) -> Callable[[optuna.Trial], float]:
    space = search_space(plan.bounds)

    def run(trial: optuna.Trial) -> float:
        # Two workers may start a trial for the same last slot; the lower trial number keeps it. Counting only
        # trials numbered below this one makes every worker reach the same verdict.
        ahead = sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and t.state in _HOLDING)
        if ahead >= plan.trials:
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise _SurplusTrial(f"trial {trial.number}: all {plan.trials} slots were taken by earlier trials")
        trial.set_user_attr(CLAIM_ATTR, trial.number)
        trial.set_user_attr(WORKER_ATTR, _worker_id())
        hyp = dict(plan.base_hyp)
        for k, d in space.items():
            hyp[k] = trial.suggest_float(k, d.low, d.high, log=d.log)
        return float(plan.objective(hyp, TrialReporter(trial)))

    return run


def _load_study(plan: _Plan, worker_seed: int | None) -> optuna.Study:
    storage = open_storage(plan.storage, plan.heartbeat_interval, plan.grace_period)
    sampler = make_sampler(plan.sampler, plan.base_hyp, plan.bounds, plan.trials, worker_seed, plan.ga)
    return optuna.load_study(study_name=plan.study_name, storage=storage, sampler=sampler,
                             pruner=make_pruner(plan.pruner))


def _work(plan: _Plan, worker_seed: int | None, progress: bool | str = False,
          on_finished: Callable[[int], None] | None = None) -> None:
    """Run trials until the study has ``plan.trials`` finished ones; ``on_finished(n)`` after each trial that
    raised the number of finished trials to ``n``."""
    from tqdm import tqdm

    study = _load_study(plan, worker_seed)
    objective = _optuna_objective(study, plan)
    desc = progress if isinstance(progress, str) else plan.study_name
    bar = tqdm(total=plan.trials, desc=desc, unit="trial", disable=not progress)
    unclaimed = _UnclaimedWatch(plan.grace_period or 2 * plan.heartbeat_interval)
    seen = -1
    try:
        while True:
            _fail_stale(study)  # a dead worker's trial frees its slot and is queued again
            unclaimed.check(study)
            c = _counts(study)
            if c["finished"] != seen:
                seen = c["finished"]
                bar.n = min(seen, plan.trials)
                bar.refresh()
                if on_finished is not None:
                    on_finished(seen)
            if c["finished"] >= plan.trials:
                return
            if c["waiting"] == 0 and c["finished"] + c["running"] >= plan.trials:
                # Every open slot is held by a running trial: wait for it to finish, or to go stale and come back
                # as a queued retry.
                time.sleep(min(plan.heartbeat_interval, 5))
                continue
            study.optimize(objective, n_trials=1, catch=(_SurplusTrial,))
            best = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            if best:
                bar.set_postfix(best=f"{max(best):.4f}")
    finally:
        bar.close()


def _worker_process(plan: _Plan, worker_seed: int | None) -> None:
    _work(plan, worker_seed)


def _run_processes(plan: _Plan, study: optuna.Study, seeds: list[int | None], progress: bool | str,
                   on_finished: Callable[[int], None] | None = None) -> None:
    """Spawn one worker process per seed and wait for all; a worker that dies is reported, and the others finish
    the study (its trial is retried once its heartbeat goes stale)."""
    from tqdm import tqdm

    ctx = multiprocessing.get_context("spawn")  # no fork: the parent may hold CUDA, threads, database connections
    procs = [ctx.Process(target=_worker_process, args=(plan, s), name=f"{plan.study_name}-worker-{i}")
             for i, s in enumerate(seeds)]
    bar = tqdm(total=plan.trials, desc=progress if isinstance(progress, str) else plan.study_name, unit="trial",
               disable=not progress)
    seen = -1

    def poll() -> None:
        nonlocal seen
        finished = _counts(study)["finished"]
        if finished != seen:
            seen = finished
            bar.n = min(finished, plan.trials)
            bar.refresh()
            if on_finished is not None:
                on_finished(finished)

    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            poll()
            for p in procs:
                p.join(timeout=1.0 / len(procs))
        poll()
    finally:
        bar.close()
        for p in procs:
            if p.is_alive():  # the launcher was interrupted: its workers stop with it
                p.terminate()
                p.join(10)
    for p in procs:
        if p.exitcode:
            print(f"worker {p.name} (pid {p.pid}) ended with exit code {p.exitcode}", file=sys.stderr)


# ---------------------------------------------------------------- results


def _study_settings(study: optuna.Study) -> dict[str, Any]:
    settings = study.user_attrs.get(SETTINGS_ATTR)
    if not settings:
        raise ValueError(f"study {study.study_name!r} was not made by livestock search (no {SETTINGS_ATTR} attribute)")
    return settings


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial (surplus ones left out): number, state, fitness, recorded metrics, duration, worker,
    ``retry_of`` (the trial it repeats), then the searched keys."""
    keys = list(_study_settings(study)["keys"])
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS_ATTR):
            continue
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else math.nan
        extra = {k: v for k, v in t.user_attrs.items() if k not in (WORKER_ATTR, SURPLUS_ATTR, CLAIM_ATTR)}
        rows.append({"number": t.number, "state": t.state.name, "fitness": t.value, **extra,
                     "duration_s": round(duration, 3), WORKER_ATTR: t.user_attrs.get(WORKER_ATTR),
                     "retry_of": t.system_attrs.get("failed_trial"), **{k: t.params.get(k, math.nan) for k in keys}})
    columns = ["number", "state", "fitness", "duration_s", WORKER_ATTR, "retry_of", *keys]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=columns)
    extra_cols = [c for c in table.columns if c not in columns]
    table = table[["number", "state", "fitness", *extra_cols, *columns[3:]]]
    table["retry_of"] = table["retry_of"].astype("Int64")
    return table.sort_values("number", kind="stable").reset_index(drop=True)


def parameter_importances(study: optuna.Study, keys: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """(table of key, importance, note): Optuna's default importance evaluator over the finished trials, or an
    empty table and the reason when there are too few trials to tell."""
    empty = pd.DataFrame(columns=["key", "importance"])
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < MIN_IMPORTANCE_TRIALS:
        return empty, f"parameter importances need {MIN_IMPORTANCE_TRIALS} complete trials, the study has {n}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the evaluator warns on degenerate histories; the note says why
            imp = optuna.importance.get_param_importances(study, params=list(keys))
    except (ValueError, RuntimeError) as e:
        return empty, f"parameter importances unavailable: {e}"
    table = pd.DataFrame({"key": list(imp), "importance": [float(v) for v in imp.values()]})
    note = f"parameter importances over {n} complete trials"
    if len(keys) == 1:
        note += " (one key: its importance is 1 by definition)"
    return table, note


@dataclass
class SearchResult:
    study_name: str
    storage: str  # password hidden
    out: Path
    trials: pd.DataFrame  # trials.csv
    best_trial: int | None
    best_fitness: float | None
    best_hyp: dict | None
    best_hyp_path: Path | None
    plot: Path | None
    importances: pd.DataFrame
    importance_note: str
    finished: int = 0
    requested: int = 0
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """Printable lines: study, best trial and its keys, importances, files."""
        lines = [f"study {self.study_name!r} in {self.storage}: {self.finished} of {self.requested} trials finished"]
        if self.best_trial is None:
            lines.append("no complete trial yet")
        else:
            keys = [c for c in self.trials.columns if c in (self.best_hyp or {})]
            values = ", ".join(f"{k}={self.best_hyp[k]:.6g}" for k in keys)
            lines.append(f"best: trial {self.best_trial} with fitness {self.best_fitness:.5f} ({values})")
            lines.append(f"best hyp: {self.best_hyp_path}")
        if len(self.importances):
            lines.append(self.importance_note + ": " + ", ".join(
                f"{r.key} {r.importance:.3f}" for r in self.importances.itertuples()))
        else:
            lines.append(self.importance_note)
        lines.append("files: " + ", ".join(str(p) for p in self.files))
        return "\n".join(lines)


def write_results(study: optuna.Study, out: str | os.PathLike, requested: int, url: str = "",
                  final: bool = True) -> SearchResult:
    """Write trials.csv and best_hyp.yaml of ``study`` into ``out`` (atomically); ``final`` adds fitness.png and
    importances.csv (left out while trials still run: they cost more than a table)."""
    import yaml

    out = Path(out)
    settings = _study_settings(study)
    keys, base = list(settings["keys"]), dict(settings["base_hyp"])
    table = trials_table(study)
    files = [atomic_write_csv(table, out / TRIALS_NAME)]
    finished = int(table["state"].isin([s.name for s in _FINISHED]).sum())
    complete = table[table["state"] == TrialState.COMPLETE.name]
    best_trial = best_fitness = best_hyp = best_path = plot = None
    if len(complete):
        best = study.best_trial
        best_trial, best_fitness = best.number, float(best.value)
        best_hyp = {**base, **{k: float(best.params[k]) for k in keys}}
        header = (f"# Best hyp of study {study.study_name!r} ({settings['sampler']} sampler, {len(complete)} complete "
                  f"trials, keys {', '.join(keys)}).\n# Trial {best_trial}, fitness {best_fitness:.5f}.\n")
        best_path = atomic_write_text(out / BEST_HYP_NAME, header + yaml.safe_dump(best_hyp, sort_keys=False))
        files.append(best_path)
        if final:
            plot = plot_evolution(complete, keys, out / PLOT_NAME, x="number")
            files.append(plot)
    importances, note = pd.DataFrame(columns=["key", "importance"]), "parameter importances: at the end"
    if final:
        importances, note = parameter_importances(study, keys)
        files.append(atomic_write_csv(importances, out / IMPORTANCE_NAME))
    return SearchResult(study_name=study.study_name, storage=display_url(url), out=out, trials=table,
                        best_trial=best_trial, best_fitness=best_fitness, best_hyp=best_hyp, best_hyp_path=best_path,
                        plot=plot, importances=importances, importance_note=note, finished=finished,
                        requested=requested, files=files)


# ---------------------------------------------------------------- the entry point


def _objective_identity(objective: Objective) -> Any:
    describe = getattr(objective, "describe", None)
    if callable(describe):
        return describe()
    return f"{getattr(objective, '__module__', '?')}.{getattr(objective, '__qualname__', type(objective).__qualname__)}"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _open_or_create(plan: _Plan, settings: dict[str, Any], join: bool) -> tuple[optuna.Study, bool]:
    """The study (created when missing, unless ``join``) and whether this call created it; refuses a study whose
    recorded settings differ from ``settings``."""
    storage = open_storage(plan.storage, plan.heartbeat_interval, plan.grace_period)
    study, created = None, False
    if not join:
        try:
            study = optuna.create_study(storage=storage, study_name=plan.study_name, direction="maximize")
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another worker or an earlier run made it: join
    if study is None:
        try:
            study = optuna.load_study(study_name=plan.study_name, storage=storage)
        except KeyError as e:
            raise ValueError(f"no study {plan.study_name!r} in {display_url(plan.storage)} to join") from e
    old = study.user_attrs.get(SETTINGS_ATTR)
    if old is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
    elif old != settings:
        differ = [k for k in settings if old.get(k) != settings[k]]
        detail = "; ".join(f"{k}: {old.get(k)!r} there, {settings[k]!r} here" for k in differ)
        raise ValueError(f"study {plan.study_name!r} in {display_url(plan.storage)} was started with other settings "
                         f"({detail}). Join it with the same settings, or choose another --study")
    return study, created


def run_search(
    objective: Objective,
    trials: int,
    keys: str | Sequence[str] = DEFAULT_KEYS,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    base_hyp: str | os.PathLike | dict = DEFAULT_HYP,
    sampler: str = "ga",
    pruner: str = "none",
    storage: str | os.PathLike | None = None,
    study_name: str = "search",
    out: str | os.PathLike | None = None,
    workers: int = 1,
    join: bool = False,
    seed: int = 0,
    ga: GeneticSettings = GeneticSettings(),
    heartbeat_interval: int = 30,
    grace_period: int | None = None,
    exclusive: bool = False,
    progress: bool | str = True,
    after_trial: Callable[[SearchResult], None] | None = None,
) -> SearchResult:
    """Search ``keys`` of ``base_hyp`` with ``sampler`` until study ``study_name`` in ``storage`` has ``trials``
    finished trials, running ``workers`` local worker processes; then write the results into ``out``.

    - ``objective(hyp, reporter) -> fitness`` (:data:`Objective`), maximised; with ``workers > 1`` it must be
      picklable (spawned processes), e.g. :func:`training_objective`'s result.
    - ``storage``: ``postgresql://…``, ``sqlite:///….db``, a journal path ending in ``.log``, or None for
      ``out/study.log``; ``out`` defaults to ``runs/search/<study_name>``.
    - ``join``: only join an existing study (a typo in the study name fails instead of starting a new one).
    - ``seed``: the GA's seed (per trial number, so any worker proposes the same); tpe / cmaes / random seed the
      workers of the call that creates the study with ``seed``, ``seed + 1``, …, while workers joining an existing
      study draw their seeds from the OS, so two machines never repeat each other's draws.
    - ``heartbeat_interval`` / ``grace_period`` (seconds; grace default twice the interval): a running trial with
      no heartbeat for the grace period is failed and retried once.
    - ``exclusive``: this call is the study's only user, so trials still RUNNING when it starts were left by a run
      that died: they are failed and retried at once instead of after the grace period.
    - ``progress``: a progress bar (a string: its label) in this process.
    - ``after_trial(result)``: called after trials.csv and best_hyp.yaml were rewritten, each time a trial finished
      (seen by this process: its own trials, or its spawned workers' trials).
    """
    keys = parse_keys(keys)
    bounds_by_key = resolve_bounds(keys, bounds)
    base = load_hyp(base_hyp)
    if trials < 1 or workers < 1:
        raise ValueError(f"need trials >= 1 and workers >= 1 (got {trials}, {workers})")
    make_sampler(sampler, base, bounds_by_key, trials, seed, ga)  # a bad name fails before anything starts
    make_pruner(pruner)
    if workers > 1:
        try:
            pickle.dumps(objective)
        except Exception as e:  # pickling failures have no common base class
            raise ValueError(f"with workers > 1 the objective goes to spawned processes and must be picklable "
                             f"(a module-level function or class instance): {e}") from e
    out = Path(out) if out is not None else Path("runs/search") / study_name
    out.mkdir(parents=True, exist_ok=True)
    url = storage_url(storage, out)
    plan = _Plan(objective=objective, storage=url, study_name=study_name, trials=int(trials), bounds=bounds_by_key,
                 base_hyp=base, sampler=sampler, pruner=pruner, seed=int(seed), ga=ga,
                 heartbeat_interval=int(heartbeat_interval), grace_period=grace_period)
    settings = _jsonable({"keys": list(keys), "bounds": {k: list(v) for k, v in bounds_by_key.items()},
                          "base_hyp": base, "sampler": sampler, "seed": int(seed),
                          "ga": [ga.top_n, ga.mutation_prob, ga.sigma], "objective": _objective_identity(objective)})
    study, created = _open_or_create(plan, settings, join)
    if created and sampler != "ga":
        # Every study measures the base hyp first (the GA does so by itself: its trial 0 is the base).
        study.enqueue_trial({k: min(max(float(base[k]), lo), hi) for k, (lo, hi) in bounds_by_key.items()})
    if exclusive:
        _fail_running(study)

    def seed_of(i: int) -> int | None:
        return int(seed) + i if created or sampler == "ga" else None

    def checkpoint(finished: int) -> None:
        if finished:
            partial = write_results(study, out, trials, url, final=False)
            if after_trial is not None:
                after_trial(partial)

    if workers == 1:
        _work(plan, seed_of(0), progress=progress, on_finished=checkpoint)
    else:
        _run_processes(plan, study, [seed_of(i) for i in range(workers)], progress, on_finished=checkpoint)
    result = write_results(study, out, trials, url)
    if after_trial is not None:
        after_trial(result)
    if result.finished < trials:
        raise RuntimeError(f"study {study_name!r}: only {result.finished} of {trials} trials finished")
    return result


def load_objective(spec: str) -> Objective:
    """``module:attribute`` -> that objective (a function, or an instance with ``__call__``)."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"objective {spec!r}: expected module:function")
    obj = getattr(importlib.import_module(module), attr)
    if not callable(obj):
        raise ValueError(f"objective {spec!r} is not callable")
    return obj


# ---------------------------------------------------------------- command line


def cli_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="dataset yaml the trials train on, e.g. data/splits/mini/data.yaml")
    p.add_argument("--sampler", choices=SAMPLERS, default="ga", help="ga: YOLOv5's genetic algorithm (default); "
                   "tpe / cmaes: Bayesian / CMA-ES; random")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study stops at, all workers together")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default %(default)s)")
    p.add_argument("--storage", default=None,
                   help="postgresql://user:password@host/db, sqlite:///path.db or a journal file path ending in "
                        ".log (default OUT/study.log)")
    p.add_argument("--study", default="search", help="study name; the same storage and name join one study")
    p.add_argument("--join", action="store_true", help="only join an existing study (never create one)")
    p.add_argument("--epochs", type=int, default=7, help="epochs per trial (default %(default)s)")
    p.add_argument("--img", "--imgsz", dest="imgsz", type=int, default=640)
    p.add_argument("--batch", "--batch-size", dest="batch", type=int, default=16)
    p.add_argument("--keys", default=",".join(DEFAULT_KEYS), help="hyp keys to search (default %(default)s)")
    p.add_argument("--bounds", default=None, help="override bounds, e.g. lr0=1e-4:1e-2,momentum=0.8:0.95")
    p.add_argument("--pruner", choices=PRUNERS, default="none")
    p.add_argument("--base-hyp", "--hyp", dest="base_hyp", default=DEFAULT_HYP,
                   help="base hyp yaml or shipped name; keys not searched keep its values (default %(default)s)")
    p.add_argument("--fitness", choices=FITNESS_KINDS, default="contest",
                   help="contest: mAP@0.75 by the contest metric (default); yolov5: 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95")
    p.add_argument("--model", default=None, help="architecture (default yolov5n from scratch)")
    p.add_argument("--weights", default="", help="'' = from scratch; checkpoint path or pretrained name")
    p.add_argument("--device", default="auto")
    p.add_argument("--loader-workers", type=int, default=8, help="data-loader workers of each training run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/search/STUDY)")
    p.add_argument("--heartbeat", type=int, default=30, help="seconds between a running trial's heartbeats")
    p.add_argument("--grace", type=int, default=None,
                   help="seconds without a heartbeat before a trial counts as dead (default twice --heartbeat)")
    p.add_argument("--objective", default=None, help=argparse.SUPPRESS)  # module:function instead of training


def cli_search(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("runs/search") / args.study
    if args.objective:
        objective = load_objective(args.objective)
    else:
        if not args.data:
            raise ValueError("--data is required (the dataset yaml each trial trains on)")
        objective = training_objective(
            args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, model=args.model,
            weights=args.weights or None, device=args.device, workers=args.loader_workers, seed=args.seed,
            project=out, fitness=args.fitness,
        )
    result = run_search(
        objective, trials=args.trials, keys=args.keys, bounds=parse_bounds(args.bounds) or None,
        base_hyp=args.base_hyp, sampler=args.sampler, pruner=args.pruner, storage=args.storage,
        study_name=args.study, out=out, workers=args.workers, join=args.join, seed=args.seed,
        heartbeat_interval=args.heartbeat, grace_period=args.grace,
    )
    print(result.summary())
    return 0
