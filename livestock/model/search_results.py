"""A search's results on disk: the trials table, the best hyp, the fitness plot and parameter importances."""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from livestock.model.study_storage import display_url
from livestock.fileio import atomic_write_csv, atomic_write_figure, atomic_write_text

MIN_IMPORTANCE_TRIALS = 4
TRIALS_NAME, BEST_HYP_NAME, PLOT_NAME, IMPORTANCE_NAME = "trials.csv", "best_hyp.yaml", "fitness.png", "importances.csv"
SETTINGS_ATTR = "livestock_search"  # study user attribute: what every worker must agree on
SURPLUS_ATTR = "surplus"  # trial user attribute of a trial given up for lack of a free slot
WORKER_ATTR = "worker"  # trial user attribute: host:pid of the worker that ran it
CLAIM_ATTR = "claim"  # trial user attribute: the trial's own number, set as its objective starts
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)  # states that count towards a study's trials


def plot_evolution(history: pd.DataFrame, keys: Sequence[str], path: str | os.PathLike, fitness_kind: str = "",
                   x: str = "generation") -> Path:
    """Fitness per generation (or per ``x``: a search's trial ``number``), with the best so far, and each chosen key
    per generation, coloured by fitness."""
    from matplotlib.figure import Figure  # no pyplot: leaves a notebook's backend alone

    label = "trial" if x == "number" else x
    g = history[x].to_numpy()
    f = history["fitness"].to_numpy(dtype=float)
    fig = Figure(figsize=(4 * (1 + len(keys)), 3.5), layout="constrained")
    axes = fig.subplots(1, 1 + len(keys), squeeze=False)[0]
    axes[0].plot(g, f, "o", label=label)
    axes[0].plot(g, np.maximum.accumulate(f), "-", label="best so far")
    axes[0].set(xlabel=label, ylabel=f"fitness ({fitness_kind})" if fitness_kind else "fitness",
                title=f"fitness per {label}")
    axes[0].legend()
    low, high = (float(f.min()), float(f.max())) if f.max() > f.min() else (float(f.min()) - 0.5, float(f.min()) + 0.5)
    for ax, k in zip(axes[1:], keys):  # one colour scale shared by every panel
        sc = ax.scatter(g, history[k].to_numpy(dtype=float), c=f, cmap="viridis", vmin=low, vmax=high)
        ax.set(xlabel=label, ylabel=k, title=k)
        if k == "lr0":
            ax.set_yscale("log")
    if len(keys):
        fig.colorbar(sc, ax=axes[-1], label="fitness")
    return atomic_write_figure(fig, path, dpi=100)


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
    finished = int(table["state"].isin([s.name for s in FINISHED_STATES]).sum())
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
