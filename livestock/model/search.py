"""Hyper-parameter search on Optuna: one shared study, any number of workers on any number of machines.

A study searches the hyp keys the user names (the key / bounds rules of :mod:`livestock.model.evolve`: YOLOv5's bounds
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
import multiprocessing
import os
import pickle
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from livestock import provenance
from livestock.model.genetic import (DEFAULT_KEYS, GeneticSampler, GeneticSettings, parse_bounds, parse_keys,
                                     resolve_bounds, search_space)
from livestock.model.objective import FITNESS_KINDS, Objective, TrialReporter, training_objective
from livestock.model.run_record import threads_per_process
from livestock.model.search_results import (CLAIM_ATTR, FINISHED_STATES, SETTINGS_ATTR, SURPLUS_ATTR, WORKER_ATTR,
                                            TRIALS_NAME, SearchResult, write_results)
from livestock.model.study_storage import display_url, open_storage, storage_url
from livestock.model.engine import DEFAULT_ENGINE, ENGINES, get_engine
from livestock.progress import emit

SAMPLERS = ("ga", "tpe", "cmaes", "random")
PRUNERS = ("none", "median", "hyperband")
STARTUP_TRIALS = 5  # most random trials tpe / cmaes draw before modelling the history
# States that hold one of the study's slots: finished, or on their way to finish.
_HOLDING = (*FINISHED_STATES, TrialState.RUNNING, TrialState.WAITING)


# ---------------------------------------------------------------- search space and samplers


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
    return {"finished": sum(s in FINISHED_STATES for s in states), "running": states.count(TrialState.RUNNING),
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
            study.optimize(objective, n_trials=1, catch=(_SurplusTrial,), callbacks=[_emit_trial(plan.trials)])
            best = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
            if best:
                bar.set_postfix(best=f"{max(best):.4f}")
    finally:
        bar.close()


def _emit_trial(requested: int) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """An Optuna callback sending each finished trial of this worker to :mod:`livestock.progress` (the main job
    prints it): its number, state, fitness, the study's finished count against ``requested``, the best so far."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.user_attrs.get(SURPLUS_ATTR):
            return  # never ran: another worker took its slot
        values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        emit("trial", number=trial.number, state=trial.state.name, fitness=trial.value,
             done=_counts(study)["finished"], requested=requested, best=max(values) if values else None)

    return callback


def _worker_process(plan: _Plan, worker_seed: int | None, threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _work(plan, worker_seed)


def _run_processes(plan: _Plan, study: optuna.Study, seeds: list[int | None], progress: bool | str,
                   on_finished: Callable[[int], None] | None = None) -> None:
    """Spawn one worker process per seed and wait for all; a worker that dies is reported, and the others finish
    the study (its trial is retried once its heartbeat goes stale)."""
    from tqdm import tqdm

    ctx = multiprocessing.get_context("spawn")  # no fork: the parent may hold CUDA, threads, database connections
    threads = threads_per_process(len(seeds))  # the workers share this machine's CPUs
    procs = [ctx.Process(target=_worker_process, args=(plan, s, threads), name=f"{plan.study_name}-worker-{i}")
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
    base_hyp: str | os.PathLike | dict | None = None,
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
    engine: str = DEFAULT_ENGINE,
) -> SearchResult:
    """Search ``keys`` of ``base_hyp`` with ``sampler`` until study ``study_name`` in ``storage`` has ``trials``
    finished trials, running ``workers`` local worker processes; then write the results into ``out``.

    - ``objective(hyp, reporter) -> fitness`` (:data:`Objective`), maximised; with ``workers > 1`` it must be
      picklable (spawned processes), e.g. :func:`training_objective`'s result. The spawned processes share this
      machine's CPUs (:func:`~livestock.model.run_record.threads_per_process`).
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
    - ``engine``: whose hyp space ``keys`` and ``base_hyp`` (default: the engine's CPU scratch hyp) belong to.
    - ``progress``: a progress bar (a string: its label) in this process.
    - ``after_trial(result)``: called after trials.csv and best_hyp.yaml were rewritten, each time a trial finished
      (seen by this process: its own trials, or its spawned workers' trials).
    """
    trainer = get_engine(engine)
    keys = parse_keys(keys, trainer.HYP_KEYS)
    bounds_by_key = resolve_bounds(keys, bounds)
    base = trainer.load_hyp(trainer.DEFAULT_HYP if base_hyp is None else base_hyp)
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
    if getattr(objective, "data_yaml", None):  # a training objective: trials of other data must not mix with these
        provenance.continue_folder(out, objective.data_yaml, "livestock search", marker=TRIALS_NAME)
    url = storage_url(storage, out)
    plan = _Plan(objective=objective, storage=url, study_name=study_name, trials=int(trials), bounds=bounds_by_key,
                 base_hyp=base, sampler=sampler, pruner=pruner, seed=int(seed), ga=ga,
                 heartbeat_interval=int(heartbeat_interval), grace_period=grace_period)
    settings = _jsonable({"keys": list(keys), "bounds": {k: list(v) for k, v in bounds_by_key.items()},
                          "base_hyp": base, "engine": engine, "sampler": sampler, "seed": int(seed),
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
    """Add the options of ``livestock search`` to ``parser``."""
    p.add_argument("--data", help="dataset yaml the trials train on, e.g. data/splits/mini/data.yaml")
    p.add_argument("--sampler", choices=SAMPLERS, default="ga", help="ga: YOLOv5's genetic algorithm (default); "
                   "tpe / cmaes: Bayesian / CMA-ES; random")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study stops at, all workers together")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine; they share its CPUs as torch threads unless "
                        "OMP_NUM_THREADS is set (default %(default)s)")
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
    p.add_argument("--engine", choices=list(ENGINES), default=DEFAULT_ENGINE, help="detection engine (%(default)s)")
    p.add_argument("--base-hyp", "--hyp", dest="base_hyp", default=None,
                   help="base hyp yaml or shipped name; keys not searched keep its values (default: the engine's "
                        "CPU scratch hyp)")
    p.add_argument("--fitness", choices=FITNESS_KINDS, default="contest",
                   help="contest: mAP@0.75 by the contest metric (default); yolov5: 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95")
    p.add_argument("--model", default=None, help="architecture (default: the engine's smallest, from scratch)")
    p.add_argument("--weights", default="", help="'' = from scratch; checkpoint path or pretrained name; auto: the "
                                                 "barn-pretrained file for the model and size")
    p.add_argument("--device", default="auto")
    p.add_argument("--loader-workers", type=int, default=8, help="data-loader workers of each training run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/search/STUDY)")
    p.add_argument("--heartbeat", type=int, default=30, help="seconds between a running trial's heartbeats")
    p.add_argument("--grace", type=int, default=None,
                   help="seconds without a heartbeat before a trial counts as dead (default twice --heartbeat)")
    p.add_argument("--objective", default=None, help=argparse.SUPPRESS)  # module:function instead of training


def cli_search(args: argparse.Namespace) -> int:
    """Run ``livestock search`` with parsed ``args``; returns the exit code."""
    out = Path(args.out) if args.out else Path("runs/search") / args.study
    if args.objective:
        objective = load_objective(args.objective)
    else:
        if not args.data:
            raise ValueError("--data is required (the dataset yaml each trial trains on)")
        from livestock.model.pretrain import command_start_weights

        weights = command_start_weights(args.weights, args.model, args.imgsz, args.engine)
        objective = training_objective(
            args.data, epochs=args.epochs, project=out, fitness=args.fitness, engine=args.engine, imgsz=args.imgsz,
            batch_size=args.batch, model=args.model, weights=weights, device=args.device,
            workers=args.loader_workers, seed=args.seed,
        )
    result = run_search(
        objective, trials=args.trials, keys=args.keys, bounds=parse_bounds(args.bounds) or None,
        base_hyp=args.base_hyp, engine=args.engine, sampler=args.sampler, pruner=args.pruner, storage=args.storage,
        study_name=args.study, out=out, workers=args.workers, join=args.join, seed=args.seed,
        heartbeat_interval=args.heartbeat, grace_period=args.grace,
    )
    print(result.summary())
    return 0
