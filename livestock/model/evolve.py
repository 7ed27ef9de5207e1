"""Genetic evolution of chosen hyper-parameters, YOLOv5-style, resumable.

Each generation is one short training run (the engine's ``train``) with one hyp set. Generation 0 trains
the base hyp; every later one mutates a parent drawn from the history, as YOLOv5 7.0's ``train.py --evolve``
does, but **only the keys the user names** change (the original entry's change to YOLOv5's loop):

- parents: the ``top_n`` (5) generations by fitness; one is drawn at random with weights
  ``fitness - min(fitness) + 1e-6``;
- mutation: per chosen key, with probability ``mutation_prob`` (0.8), a factor
  ``1 + gain * N(0, 1) * U(0, 1) * sigma`` (sigma 0.2, one uniform draw shared by all keys, as in YOLOv5),
  clipped to [0.3, 3.0]. ``gain`` is YOLOv5's per-key mutation scale (1 for lr0 / lrf, 0.3 for momentum; a key
  YOLOv5 never mutates gets 1 when chosen here);
- the mutated values are clipped to the key's bounds and rounded to 5 significant digits; the factors are drawn
  again until at least one key has changed after that. A value of 0 stays 0 (mutation multiplies).

Random draws come from ``numpy.random.default_rng([seed, generation])``: the same seed and history give the
same hyp sets, also after a restart.

The loop itself is an Optuna study (:mod:`livestock.model.search`) whose sampler is these rules
(:class:`livestock.model.search.GeneticSampler`); a generation is a trial. This module keeps the rules, the contest
fitness and :func:`evolve`, the one-worker form of ``livestock search --sampler ga`` with the original's files.

Files in the evolution folder ``project/name`` (``runs/evolve/exp``):
``evolve.csv`` (one row per finished generation: its trial number, fitness, metrics, seconds, every hyp value;
rewritten atomically after each generation), ``evolve_settings.yaml`` (what a restart must match), ``study.log``
(the Optuna journal: every trial, finished or not), ``trial_NNN/`` (the training runs, by trial number),
``best_hyp.yaml`` (the best generation's full hyp, ready for ``livestock train --hyp``), ``trials.csv``,
``fitness.png`` (fitness per trial and each chosen key) and ``importances.csv``. Restarting with the same settings
continues after the last finished generation; a generation that was interrupted is trained again with the same
hyp (a new trial number).

Fitness: ``contest`` (the default, as in ``livestock search`` and the evolution notebook) = mAP@0.75 by the contest's
metric (:mod:`livestock.evaluation.metrics`) on the validation set's predictions (:func:`contest_fitness`), the score
the contest ranks by; ``yolov5`` (the original's) = 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95 from YOLOv5's validation of the
generation's best.pt.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from livestock import provenance
from livestock.fileio import atomic_write_csv, atomic_write_text
from livestock.model.engine import TrainSettings
from livestock.model.genetic import DEFAULT_KEYS, parse_bounds, parse_keys, resolve_bounds
from livestock.model.objective import FITNESS_KINDS, TRIAL_SETTINGS
from livestock.model.search import GeneticSettings, run_search, training_objective
from livestock.model.yolov5.compat import DEFAULT_HYP, HYP_KEYS, load_hyp

METRIC_COLUMNS = ("P", "R", "mAP@0.5", "mAP@0.5:0.95", "mAP@0.75")
CSV_NAME, SETTINGS_NAME, STUDY_NAME = "evolve.csv", "evolve_settings.yaml", "study.log"
# Settings a restart must share with the run it continues (device, workers, generations may change).
# ``inputs``: the fingerprint of the data the set was made from (livestock.provenance), so new zips behind the same
# data.yaml path never continue an evolution of the old ones.
_RESUME_SETTINGS = ("data", "inputs", "model", "weights", "base_hyp", "keys", "bounds", "fitness", "imgsz", "epochs",
                    "batch_size", "optimizer", "linear_lr", "seed", "top_n", "mutation_prob", "sigma")


# ---------------------------------------------------------------- pure parts: keys, bounds, mutation


# ---------------------------------------------------------------- the loop


@dataclass
class EvolveResult:
    save_dir: Path
    history: pd.DataFrame  # evolve.csv: one row per generation
    best_generation: int
    best_fitness: float
    best_hyp: dict
    best_hyp_path: Path
    plot: Path

    def summary(self) -> str:
        """The evolution folder, the number of generations and the best one."""
        return (f"evolution folder: {self.save_dir}\ngenerations: {len(self.history)}; best: generation "
                f"{self.best_generation} with fitness {self.best_fitness:.4f}\nbest hyp: {self.best_hyp_path}")


def _settings(**kw) -> dict:
    kw.setdefault("inputs", None)  # unknown: the data set has no provenance record
    return {k: kw[k] for k in _RESUME_SETTINGS}


def _check_resume(save_dir: Path, settings: dict) -> None:
    import yaml

    path = save_dir / SETTINGS_NAME
    if not path.is_file():
        atomic_write_text(path, yaml.safe_dump(settings, sort_keys=False))
        return
    old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    differ = [k for k in _RESUME_SETTINGS if old.get(k) != settings[k]]
    if "inputs" in differ:
        raise provenance.StaleError(f"{save_dir}: evolved on other data than {settings['data']} now describes; move "
                                    f"or delete this evolution folder, or choose another --name (OUT_DIR), to evolve "
                                    f"on the current data")
    if differ:
        detail = "; ".join(f"{k}: {old.get(k)!r} there, {settings[k]!r} now" for k in differ)
        raise ValueError(f"{path}: this evolution folder was started with other settings ({detail}). "
                         f"Continue it with the same settings, or choose another --name")


def evolve(
    data_yaml: str | os.PathLike,
    generations: int = 7,
    epochs: int = 7,
    keys: str | Sequence[str] = DEFAULT_KEYS,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    base_hyp: str | os.PathLike | dict = DEFAULT_HYP,
    fitness: str = "contest",
    project: str | os.PathLike = "runs/evolve",
    name: str = "exp",
    top_n: int = 5,
    mutation_prob: float = 0.8,
    sigma: float = 0.2,
    keep_weights: bool = False,
    objective: Callable | None = None,
    **training: object,
) -> EvolveResult:
    """Evolve ``keys`` of ``base_hyp`` for ``generations`` generations (in total, counting finished ones) of
    ``epochs`` epochs each on ``data_yaml``; results in ``project/name`` (see the module docstring).

    Re-running the same call continues an interrupted evolution; raising ``generations`` extends a finished one.
    ``keep_weights=False`` deletes each generation's weights once it is scored (a yolov5m6 checkpoint is ~68 MB).
    ``training``: the generations' :data:`TRIAL_SETTINGS`, meaning what they mean in
    :class:`~livestock.model.engine.TrainSettings` (e.g. ``weights=``, ``imgsz=``); ``objective`` replaces the
    training (any :data:`livestock.model.search.Objective`, e.g. a cheap function in tests).
    """
    unknown = sorted(set(training) - set(TRIAL_SETTINGS))
    if unknown:
        raise ValueError(f"evolve() takes no training setting {unknown}; it takes {', '.join(TRIAL_SETTINGS)}")
    t = TrainSettings.of(**training)
    keys = parse_keys(keys)
    bounds_by_key = resolve_bounds(keys, bounds)
    if fitness not in FITNESS_KINDS:
        raise ValueError(f"fitness must be one of {FITNESS_KINDS}, not {fitness!r}")
    if generations < 1 or epochs < 1:
        raise ValueError(f"need generations >= 1 and epochs >= 1 (got {generations}, {epochs})")
    base = load_hyp(base_hyp)
    save_dir = Path(project) / name
    source = provenance.require_current(data_yaml)  # a split of other data than the current fails here, named
    if objective is None:
        objective = training_objective(data_yaml, epochs=epochs, project=save_dir, fitness=fitness,
                                       keep_weights=keep_weights, **training)
    save_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(
        data=str(Path(data_yaml).resolve()), inputs=source["inputs"] if source else None, model=t.model,
        weights=str(t.weights) if t.weights else None, base_hyp={k: base[k] for k in HYP_KEYS}, keys=list(keys),
        bounds={k: list(v) for k, v in bounds_by_key.items()}, fitness=fitness, imgsz=int(t.imgsz), epochs=int(epochs),
        batch_size=int(t.batch_size), optimizer=t.optimizer, linear_lr=bool(t.linear_lr), seed=int(t.seed),
        top_n=int(top_n), mutation_prob=float(mutation_prob), sigma=float(sigma),
    )
    _check_resume(save_dir, settings)
    # One worker owns an evolution folder, so a trial still running at the start was cut off by a crash: exclusive
    # retries it at once instead of waiting for its heartbeat to go stale.
    search = run_search(
        objective, trials=generations, keys=keys, bounds=bounds_by_key, base_hyp=base, sampler="ga",
        storage=save_dir / STUDY_NAME, study_name=name, out=save_dir, seed=t.seed,
        ga=GeneticSettings(top_n=top_n, mutation_prob=mutation_prob, sigma=sigma), exclusive=True, progress="evolve",
        after_trial=lambda r: atomic_write_csv(evolution_history(r.trials, base), save_dir / CSV_NAME),
    )
    history = evolution_history(search.trials, base)
    best = history.loc[history["fitness"].astype(float).idxmax()]
    return EvolveResult(save_dir=save_dir, history=history, best_generation=int(best["generation"]),
                        best_fitness=float(best["fitness"]), best_hyp=search.best_hyp,
                        best_hyp_path=search.best_hyp_path, plot=search.plot)


def evolution_history(trials: pd.DataFrame, base_hyp: Mapping[str, float]) -> pd.DataFrame:
    """``evolve.csv`` from a search's trials table: one row per complete trial in trial order (``generation``
    0, 1, ...; ``trial`` its number in the study, which names its run folder), fitness, metrics, seconds and every
    hyp value (the base with the trial's keys)."""
    done = trials[trials["state"] == "COMPLETE"].sort_values("number", kind="stable").reset_index(drop=True)
    searched = [k for k in HYP_KEYS if k in done.columns]
    rows = []
    for g, t in done.iterrows():
        rows.append({"generation": g, "trial": int(t["number"]), "fitness": float(t["fitness"]),
                     **{c: t.get(c, math.nan) for c in METRIC_COLUMNS},
                     "epochs_run": t.get("epochs_run", math.nan), "seconds": round(float(t["duration_s"]), 1),
                     **{k: float(t[k]) if k in searched else base_hyp[k] for k in HYP_KEYS}})
    history = pd.DataFrame(rows, columns=["generation", "trial", "fitness", *METRIC_COLUMNS, "epochs_run", "seconds",
                                          *HYP_KEYS])
    # Whole epochs, also when an unfinished trial elsewhere in the table made the column float.
    history["epochs_run"] = pd.to_numeric(history["epochs_run"]).astype("Int64")
    return history


# ---------------------------------------------------------------- command line


def cli_evolve_args(p: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock evolve`` to ``parser``."""
    p.add_argument("--data", required=True, help="dataset yaml, e.g. data/splits/mini/data.yaml")
    p.add_argument("--generations", type=int, default=7, help="total generations (default %(default)s)")
    p.add_argument("--epochs", type=int, default=7, help="epochs per generation (default %(default)s)")
    p.add_argument("--keys", default=",".join(DEFAULT_KEYS), help="hyp keys to mutate (default %(default)s)")
    p.add_argument("--bounds", default=None, help="override bounds, e.g. lr0=1e-4:1e-2,momentum=0.8:0.95")
    p.add_argument("--hyp", default=DEFAULT_HYP, help="base hyp yaml or shipped name (default %(default)s)")
    p.add_argument("--fitness", choices=FITNESS_KINDS, default="contest",
                   help="contest: mAP@0.75 by the contest metric (default, as livestock search); yolov5: the "
                        "original's 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95")
    p.add_argument("--model", default=None, help="architecture (default yolov5n from scratch)")
    p.add_argument("--weights", default="", help="'' = from scratch; checkpoint path or pretrained name; auto: the "
                                                 "barn-pretrained file for the model and size")
    p.add_argument("--img", "--imgsz", dest="imgsz", type=int, default=640)
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--project", default="runs/evolve")
    p.add_argument("--name", default="exp", help="evolution folder name; the same name resumes")
    p.add_argument("--optimizer", choices=["SGD", "Adam", "AdamW"], default="SGD")
    p.add_argument("--linear-lr", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-weights", action="store_true", help="keep every generation's weights")
    p.add_argument("--verbose", action="store_true")


def cli_evolve(args: argparse.Namespace) -> int:
    """Run ``livestock evolve`` with parsed ``args``; returns the exit code."""
    from livestock.model.pretrain import command_start_weights

    weights = command_start_weights(args.weights, args.model, args.imgsz)
    result = evolve(
        args.data, generations=args.generations, epochs=args.epochs, keys=args.keys,
        bounds=parse_bounds(args.bounds) or None, base_hyp=args.hyp, fitness=args.fitness, model=args.model,
        weights=weights, imgsz=args.imgsz, batch_size=args.batch_size, device=args.device,
        workers=args.workers, project=args.project, name=args.name, optimizer=args.optimizer,
        linear_lr=args.linear_lr, seed=args.seed, keep_weights=args.keep_weights, verbose=args.verbose,
    )
    print(result.summary())
    return 0
