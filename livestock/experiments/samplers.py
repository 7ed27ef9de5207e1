"""The sampler comparison: the original's genetic algorithm against TPE, CMA-ES and random search, same budget.

Each (sampler, seed) is one search study of ``trials`` trials (:func:`livestock.model.search.run_search`, its
journal file in ``out/<sampler>-seed<seed>/``, so an interrupted comparison resumes from the trials already
finished), every trial a short training on the mini set from the same start weights, scored by the contest metric on
the mini validation fold; the seed is both the sampler's and the trials' training seed. Then each study's best hyp
is trained again on the full training split and scored on the test set (cells of
:mod:`livestock.experiments.runner`). Outputs: ``curves.csv`` (best fitness after k trials, per study),
``best_after.png`` (mean ± sd over seeds per sampler), ``rows.csv`` (one row per study: its re-trained test scores,
its best fitness after k trials and, for each sampler but the GA, both minus the GA's at the same seed) and
``table.csv`` / ``table.md`` (mean ± sd over seeds per sampler).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from livestock.experiments.runner import GoldSet, Say, TrainingCell, format_mean_sd, mean_sd, run_cells
from livestock.fileio import atomic_write_csv, atomic_write_figure, atomic_write_text, read_csv
from livestock.model.engine import DEFAULT_ENGINE
from livestock.model.search import SAMPLERS, run_search, training_objective
from livestock.model.search_results import TRIALS_NAME

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

CHECKPOINTS = (5, 10, 20)  # "best after k trials" columns of the table (those within the budget)
REFERENCE = "ga"  # the original's sampler: the others are also reported as differences from it, paired by seed


def best_so_far(trials: pd.DataFrame) -> np.ndarray:
    """The best fitness after each of a study's finished trials, in trial-number order (failed trials skipped)."""
    done = trials[trials["state"] == "COMPLETE"].sort_values("number")
    return np.maximum.accumulate(done["fitness"].to_numpy(dtype=float)) if len(done) else np.zeros(0)


def minus_reference(rows: pd.DataFrame, column: str, reference: str = REFERENCE) -> pd.Series:
    """``column`` minus the ``reference`` sampler's value at the same seed, per row of ``rows`` (one row per sampler
    and seed, columns ``name`` and ``seed``); NaN on the reference's own rows and where a seed has no reference row.
    Each seed's studies start from the same trial 0, so the paired difference drops the seed-to-seed spread that
    the training shares."""
    ref = rows[rows["name"] == reference].set_index("seed")[column]
    diff = rows[column] - rows["seed"].map(ref)
    return diff.where(rows["name"] != reference)


def compare_samplers(mini_yaml: str | os.PathLike, train_yaml: str | os.PathLike, test: GoldSet,
                     out: str | os.PathLike, *, samplers: Sequence[str] = SAMPLERS, seeds: Sequence[int] = (0, 1, 2),
                     trials: int = 20, epochs: int = 3, retrain_epochs: int = 30, keys: str = "lr0,lrf,momentum",
                     base_hyp: str | None = None, weights: str | None = None, model: str | None = None,
                     engine: str = DEFAULT_ENGINE, imgsz: int = 320, batch: int = 16, device: str = "cpu",
                     workers: int = 2, say: Say = print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run (or finish) every study, re-train each best hyp on ``train_yaml`` and score it on ``test``; returns
    (curves: one row per study and trial count, table: one row per sampler, mean ± sd over seeds)."""
    unknown = [s for s in samplers if s not in SAMPLERS]
    if unknown:
        raise ValueError(f"unknown sampler(s) {unknown}; choose from {list(SAMPLERS)}")
    out = Path(out)
    curves, best_hyps = [], {}
    for sampler in samplers:
        for seed in seeds:
            study = f"{sampler}-seed{seed}"
            folder = out / study
            say(f"search {study}: {trials} trials of {epochs} epochs")
            objective = training_objective(mini_yaml, epochs=epochs, project=folder, engine=engine, imgsz=imgsz,
                                           batch_size=batch, model=model, weights=weights, device=device,
                                           workers=workers, seed=seed)
            result = run_search(objective, trials=trials, keys=keys, base_hyp=base_hyp, sampler=sampler,
                                study_name=study, out=folder, seed=seed, exclusive=True, progress=study,
                                engine=engine)
            table = read_csv(folder / TRIALS_NAME)
            best = best_so_far(table)
            curves += [{"sampler": sampler, "seed": seed, "trials": k + 1, "best": b} for k, b in enumerate(best)]
            best_hyps[(sampler, seed)] = result.best_hyp
    curves_df = pd.DataFrame(curves)
    atomic_write_csv(curves_df, out / "curves.csv")
    atomic_write_figure(plot_best_after(curves_df), out / "best_after.png")

    cells = [TrainingCell.of(sampler, train_yaml, engine=engine, seed=seed, model=model, weights=weights,
                             hyp=best_hyps[(sampler, seed)], imgsz=imgsz, epochs=retrain_epochs, batch_size=batch,
                             device=device, workers=workers)
             for sampler in samplers for seed in seeds]
    rows = run_cells(cells, test, out / "retrain", say=say)
    checkpoints = sorted({k for k in CHECKPOINTS if k <= trials} | {trials})
    for k in checkpoints:
        at = curves_df[curves_df["trials"] == k].set_index(["sampler", "seed"])["best"]
        rows[f"best_after_{k}"] = [at.get((c.name, c.training.seed), np.nan) for c in cells]
    paired = [f"best_after_{trials}", "test_mAP@0.75"] if REFERENCE in samplers and len(samplers) > 1 else []
    for c in paired:
        rows[f"{c}_minus_{REFERENCE}"] = minus_reference(rows, c)
    atomic_write_csv(rows, out / "rows.csv")
    table = mean_sd(rows)
    atomic_write_csv(table, out / "table.csv")
    columns = {f"best_after_{k}": (f"best val mAP@0.75 after {k} trials", ".3f") for k in checkpoints}
    columns["test_mAP@0.75"] = ("re-trained: test mAP@0.75", ".3f")
    for c in paired:
        columns[f"{c}_minus_{REFERENCE}"] = (f"{columns[c][0]}, minus {REFERENCE} (paired by seed)", "+.4f")
    atomic_write_text(out / "table.md", format_mean_sd(table, columns, by="name") +
                      f"\nSearch: {trials} trials x {epochs} epochs on {mini_yaml}, fitness = contest mAP@0.75 on its "
                      f"validation split; re-trained {retrain_epochs} epochs on {train_yaml}, scored on the "
                      f"{test.name}.\n")
    return curves_df, table


def plot_best_after(curves: pd.DataFrame) -> "Figure":
    """Best validation fitness after k trials, per sampler, mean over seeds ± sd band (left), and the same as a gain
    over each seed's trial 0 (right). Every study's trial 0 is the base hyp trained with the study's seed, so the
    right panel takes out the seed-to-seed spread of the training itself, which the left panel's bands mostly show."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    first = curves[curves["trials"] == 1].set_index(["sampler", "seed"])["best"]
    gain = curves["best"] - [first[(s, seed)] for s, seed in zip(curves["sampler"], curves["seed"])]
    fig = Figure(figsize=(11, 4.5))
    panels = fig.subplots(1, 2)
    for ax, values, ylabel in ((panels[0], curves["best"], "best validation mAP@0.75 so far"),
                               (panels[1], gain, "gain over trial 0 (the base hyp), same seed")):
        for sampler, group in values.groupby([curves["sampler"], curves["trials"]], sort=False).agg(
                ["mean", "std"]).fillna(0.0).groupby(level=0, sort=False):
            stats = group.droplevel(0)
            ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=sampler)
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.15)
        ax.set_xlabel("trials")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    panels[0].legend()
    fig.suptitle("Search samplers: best fitness after k trials (mean ± sd over seeds)")
    fig.tight_layout()
    return fig
