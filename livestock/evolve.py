"""Genetic evolution of chosen hyper-parameters, YOLOv5-style, resumable.

Each generation is one short training run (``livestock.engine.train``) with one hyp set. Generation 0 trains
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

The loop itself is an Optuna study (:mod:`livestock.search`) whose sampler is these rules
(:class:`livestock.search.GeneticSampler`); a generation is a trial. This module keeps the rules, the contest
fitness and :func:`evolve`, the one-worker form of ``livestock search --sampler ga`` with the original's files.

Files in the evolution folder ``project/name`` (``runs/evolve/exp``):
``evolve.csv`` (one row per finished generation: its trial number, fitness, metrics, seconds, every hyp value;
rewritten atomically after each generation), ``evolve_settings.yaml`` (what a restart must match), ``study.log``
(the Optuna journal: every trial, finished or not), ``trial_NNN/`` (the training runs, by trial number),
``best_hyp.yaml`` (the best generation's full hyp, ready for ``livestock train --hyp``), ``trials.csv``,
``fitness.png`` (fitness per trial and each chosen key) and ``importances.csv``. Restarting with the same settings
continues after the last finished generation; a generation that was interrupted is trained again with the same
hyp (a new trial number).

Fitness: ``yolov5`` = 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95 from YOLOv5's validation of the generation's best.pt;
``contest`` = mAP@0.75 by the contest's metric (:mod:`livestock.metrics`) on the validation set's predictions
(:func:`contest_fitness`).
"""
from __future__ import annotations

import argparse
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from livestock.engine import DEFAULT_HYP, HYP_KEYS, load_data_yaml, load_hyp, validate
from livestock.records import atomic_write_bytes, atomic_write_csv, atomic_write_text

DEFAULT_KEYS: tuple[str, ...] = ("lr0", "lrf", "momentum")
# Per key: (mutation gain, lower bound, upper bound), the table YOLOv5 7.0's train.py evolves with.
YOLOV5_EVOLVE_META: dict[str, tuple[float, float, float]] = {
    "lr0": (1, 1e-5, 1e-1), "lrf": (1, 0.01, 1.0), "momentum": (0.3, 0.6, 0.98),
    "weight_decay": (1, 0.0, 0.001), "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95),
    "warmup_bias_lr": (1, 0.0, 0.2), "box": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0),
    "obj": (1, 0.2, 4.0), "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0),
    "fl_gamma": (0, 0.0, 2.0), "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0), "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001), "flipud": (1, 0.0, 1.0), "fliplr": (0, 0.0, 1.0), "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0), "copy_paste": (1, 0.0, 1.0),
}
FITNESS_KINDS = ("yolov5", "contest")
CONTEST_IOU = 0.75
METRIC_COLUMNS = ("P", "R", "mAP@0.5", "mAP@0.5:0.95", "mAP@0.75")
CSV_NAME, SETTINGS_NAME, STUDY_NAME = "evolve.csv", "evolve_settings.yaml", "study.log"
# Settings a restart must share with the run it continues (device, workers, generations may change).
_RESUME_SETTINGS = ("data", "model", "weights", "base_hyp", "keys", "bounds", "fitness", "imgsz", "epochs",
                    "batch_size", "optimizer", "linear_lr", "seed", "top_n", "mutation_prob", "sigma")


# ---------------------------------------------------------------- pure parts: keys, bounds, mutation


def parse_keys(keys: str | Iterable[str]) -> tuple[str, ...]:
    """``"lr0,lrf"`` or ``["lr0", "lrf"]`` -> ``("lr0", "lrf")``; every key must be a YOLOv5 hyp key."""
    items = [k.strip() for k in (keys.split(",") if isinstance(keys, str) else keys) if k and k.strip()]
    if not items:
        raise ValueError("no hyper-parameter keys to evolve")
    unknown = [k for k in items if k not in HYP_KEYS]
    if unknown:
        raise ValueError(f"unknown hyper-parameter keys {unknown}; choose from {', '.join(HYP_KEYS)}")
    if len(set(items)) != len(items):
        raise ValueError(f"repeated keys in {items}")
    return tuple(items)


def resolve_bounds(keys: Sequence[str], bounds: Mapping[str, tuple[float, float]] | None = None
                   ) -> dict[str, tuple[float, float]]:
    """Bounds per chosen key: ``bounds[key]`` where given, else YOLOv5's."""
    out = {}
    for k in keys:
        low, high = (bounds or {}).get(k, YOLOV5_EVOLVE_META[k][1:])
        low, high = float(low), float(high)
        if not low <= high:
            raise ValueError(f"bounds of {k}: lower {low} > upper {high}")
        out[k] = (low, high)
    extra = set(bounds or {}) - set(keys)
    if extra:
        raise ValueError(f"bounds given for keys that are not evolved: {sorted(extra)}")
    return out


def parse_bounds(text: str | None) -> dict[str, tuple[float, float]]:
    """``"lr0=1e-4:1e-2,momentum=0.8:0.95"`` -> ``{"lr0": (1e-4, 1e-2), "momentum": (0.8, 0.95)}``."""
    out: dict[str, tuple[float, float]] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        try:
            key, rng = item.split("=")
            low, high = rng.split(":")
            out[key.strip()] = (float(low), float(high))
        except ValueError as e:
            raise ValueError(f"bad bounds {item!r}: expected key=low:high") from e
    return out


def _round(x: float) -> float:
    return float(f"{x:.5g}")


def constrain(hyp: Mapping[str, float], bounds: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Chosen keys clipped to their bounds and rounded to 5 significant digits; the rest untouched."""
    out = dict(hyp)
    for k, (low, high) in bounds.items():
        out[k] = _round(min(max(float(out[k]), low), high))
    return out


def select_parent(history: pd.DataFrame, keys: Sequence[str], rng: np.random.Generator, top_n: int = 5
                  ) -> dict[str, float]:
    """The chosen keys' values of one of the ``top_n`` fittest generations, drawn with weights
    ``fitness - min + 1e-6`` (better generations more often, the worst of the top ones almost never)."""
    if history.empty:
        raise ValueError("no finished generation to select a parent from")
    top = history.sort_values("fitness", ascending=False, kind="stable").head(top_n)
    f = top["fitness"].to_numpy(dtype=float)
    w = f - f.min() + 1e-6
    row = top.iloc[int(rng.choice(len(top), p=w / w.sum()))]
    return {k: float(row[k]) for k in keys}


def mutate(parent: Mapping[str, float], keys: Sequence[str], bounds: Mapping[str, tuple[float, float]],
           rng: np.random.Generator, mutation_prob: float = 0.8, sigma: float = 0.2,
           factor_clip: tuple[float, float] = (0.3, 3.0)) -> dict[str, float]:
    """YOLOv5's mutation applied to ``keys`` only (see the module docstring); returns the mutated chosen keys."""
    gains = np.array([YOLOV5_EVOLVE_META[k][0] or 1.0 for k in keys], dtype=float)
    n = len(keys)
    key_bounds = {k: bounds[k] for k in keys}
    start = constrain({k: float(parent[k]) for k in keys}, key_bounds)
    for _ in range(1000):
        v = (gains * (rng.random(n) < mutation_prob) * rng.standard_normal(n) * rng.random() * sigma + 1)
        v = v.clip(*factor_clip)
        mutated = constrain({k: float(parent[k]) * float(v[i]) for i, k in enumerate(keys)}, key_bounds)
        # At least one key must change after the bounds are applied (YOLOv5 checks before, so a key pushed
        # past its bound, e.g. lrf below 0.01, could repeat the parent and waste a generation).
        if any(mutated[k] != start[k] for k in keys):
            return mutated
    raise ValueError(f"cannot mutate {dict(start)} within bounds {key_bounds}: every key is pinned at a bound")


def next_hyp(history: pd.DataFrame, base_hyp: Mapping[str, float], keys: Sequence[str],
             bounds: Mapping[str, tuple[float, float]], seed: int, generation: int, top_n: int = 5,
             mutation_prob: float = 0.8, sigma: float = 0.2) -> dict[str, float]:
    """The hyp of ``generation``: the base (chosen keys constrained) for generation 0, else the base with the
    chosen keys replaced by a mutated parent drawn from ``history``. Deterministic in (seed, generation, history).
    With an empty history (parallel workers: a generation that starts before any other has finished) the parent
    is the base itself."""
    hyp = constrain(base_hyp, bounds)
    if generation == 0:
        return hyp
    rng = np.random.default_rng([int(seed), int(generation)])
    parent = select_parent(history, keys, rng, top_n) if len(history) else {k: hyp[k] for k in keys}
    hyp.update(mutate(parent, keys, bounds, rng, mutation_prob, sigma))
    return hyp


# ---------------------------------------------------------------- contest fitness


def _split_images(entry: str | list[str]) -> list[Path]:
    """Image files of a dataset split entry (a folder, a list file, or a list of either), as YOLOv5 reads them."""
    from yolov5.utils.dataloaders import IMG_FORMATS

    out: list[Path] = []
    for item in [entry] if isinstance(entry, str) else entry:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix[1:].lower() in IMG_FORMATS)
        elif p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    f = Path(line)
                    out.append(f if f.is_absolute() else (p.parent / line.removeprefix("./")).resolve())
        else:
            raise FileNotFoundError(f"{p}: split entry not found")
    return out


def _yolo_rows_to_frame(rows: np.ndarray, image_id: str, names: Mapping[int, str], with_conf: bool) -> pd.DataFrame:
    x, y, w, h = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    frame = {"ImageID": image_id, "LabelName": [names[int(c)] for c in rows[:, 0]]}
    if with_conf:
        frame["Conf"] = rows[:, 5]
    frame.update(XMin=x - w / 2, XMax=x + w / 2, YMin=y - h / 2, YMax=y + h / 2)
    return pd.DataFrame(frame)


def _read_rows(path: Path, n: int) -> np.ndarray:
    if not path.is_file() or path.stat().st_size == 0:
        return np.zeros((0, n))
    return np.loadtxt(path, ndmin=2)[:, :n]


def validation_frames(weights: str | os.PathLike, data_yaml: str | os.PathLike, imgsz: int = 640,
                      conf: float = 0.001, iou: float = 0.6, device: str = "auto", batch_size: int = 32,
                      workers: int = 8, work_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(answer, predictions) of a dataset's validation split in the contest's format (normalised corners;
    predictions sorted by confidence within each image, the order the contest's scorer needs). Predictions come
    from YOLOv5's validation with ``save_txt``; ground truth from the split's YOLO label files. Images are
    identified by file name, so names must be unique within the split."""
    import tempfile

    from livestock.engine import _names, ensure_yolov5

    ensure_yolov5()
    from yolov5.utils.dataloaders import img2label_paths

    data, _ = load_data_yaml(data_yaml)
    names = _names(data)
    images = _split_images(data["val"])
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        table = validate(weights, data_yaml, imgsz=imgsz, conf=conf, iou=iou, device=device, batch_size=batch_size,
                         workers=workers, project=tmp, name="val", exist_ok=True, plots=False, save_txt=True)
        pred_dir = Path(table.attrs["save_dir"]) / "labels"
        answers, preds = [], []
        for image, label in zip(images, img2label_paths([str(p) for p in images])):
            gt = _read_rows(Path(label), 5)
            if len(gt):
                answers.append(_yolo_rows_to_frame(gt, image.name, names, with_conf=False))
            det = _read_rows(pred_dir / f"{image.stem}.txt", 6)
            if len(det):
                det = det[np.argsort(-det[:, 5], kind="stable")]
                preds.append(_yolo_rows_to_frame(det, image.name, names, with_conf=True))
    answer_cols = ["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"]
    answer = pd.concat(answers, ignore_index=True) if answers else pd.DataFrame(columns=answer_cols)
    pred = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame(columns=answer_cols[:2] + ["Conf"] + answer_cols[2:])
    return answer, pred


def contest_fitness(weights: str | os.PathLike, data_yaml: str | os.PathLike, imgsz: int = 640,
                    device: str = "auto", iou_threshold: float = CONTEST_IOU, conf: float = 0.001, iou: float = 0.6,
                    batch_size: int = 32, workers: int = 8) -> float:
    """The contest's metric (mAP at IoU ``iou_threshold``, 0.75, by :mod:`livestock.metrics`) of ``weights`` on
    the validation split of ``data_yaml``, predicting with NMS ``conf``/``iou``. 0.0 when nothing is predicted."""
    from livestock.metrics import mean_average_precision_for_boxes

    answer, pred = validation_frames(weights, data_yaml, imgsz=imgsz, conf=conf, iou=iou, device=device,
                                     batch_size=batch_size, workers=workers)
    if answer.empty:
        raise ValueError(f"{data_yaml}: the validation split has no labelled boxes to score against")
    if pred.empty:
        return 0.0
    return float(mean_average_precision_for_boxes(answer, pred, iou_threshold=iou_threshold)[0])


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
        return (f"evolution folder: {self.save_dir}\ngenerations: {len(self.history)}; best: generation "
                f"{self.best_generation} with fitness {self.best_fitness:.4f}\nbest hyp: {self.best_hyp_path}")


def _settings(**kw) -> dict:
    return {k: kw[k] for k in _RESUME_SETTINGS}


def _check_resume(save_dir: Path, settings: dict) -> None:
    import yaml

    path = save_dir / SETTINGS_NAME
    if not path.is_file():
        atomic_write_text(path, yaml.safe_dump(settings, sort_keys=False))
        return
    old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    differ = [k for k in _RESUME_SETTINGS if old.get(k) != settings[k]]
    if differ:
        detail = "; ".join(f"{k}: {old.get(k)!r} there, {settings[k]!r} now" for k in differ)
        raise ValueError(f"{path}: this evolution folder was started with other settings ({detail}). "
                         f"Continue it with the same settings, or choose another --name")


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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())


def evolve(
    data_yaml: str | os.PathLike,
    generations: int = 7,
    epochs: int = 7,
    keys: str | Sequence[str] = DEFAULT_KEYS,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    base_hyp: str | os.PathLike | dict = DEFAULT_HYP,
    fitness: str = "yolov5",
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    imgsz: int = 640,
    batch_size: int = 16,
    device: str = "auto",
    workers: int = 8,
    project: str | os.PathLike = "runs/evolve",
    name: str = "exp",
    optimizer: str = "SGD",
    linear_lr: bool = True,
    seed: int = 0,
    top_n: int = 5,
    mutation_prob: float = 0.8,
    sigma: float = 0.2,
    keep_weights: bool = False,
    verbose: bool = False,
    objective: Callable | None = None,
) -> EvolveResult:
    """Evolve ``keys`` of ``base_hyp`` for ``generations`` generations (in total, counting finished ones) of
    ``epochs`` epochs each on ``data_yaml``; results in ``project/name`` (see the module docstring).

    Re-running the same call continues an interrupted evolution; raising ``generations`` extends a finished one.
    ``keep_weights=False`` deletes each generation's weights once it is scored (a yolov5m6 checkpoint is ~68 MB).
    The training arguments mean what they mean for :func:`livestock.engine.train`; ``objective`` replaces the
    training (any :data:`livestock.search.Objective`, e.g. a cheap function in tests).
    """
    # The search is built on this module's keys, bounds and mutation, so it is imported here, at call time.
    from livestock.search import GeneticSettings, run_search, training_objective

    keys = parse_keys(keys)
    bounds_by_key = resolve_bounds(keys, bounds)
    if fitness not in FITNESS_KINDS:
        raise ValueError(f"fitness must be one of {FITNESS_KINDS}, not {fitness!r}")
    if generations < 1 or epochs < 1:
        raise ValueError(f"need generations >= 1 and epochs >= 1 (got {generations}, {epochs})")
    base = load_hyp(base_hyp)
    save_dir = Path(project) / name
    if objective is None:
        objective = training_objective(
            data_yaml, epochs=epochs, imgsz=imgsz, batch=batch_size, model=model, weights=weights, device=device,
            workers=workers, seed=seed, project=save_dir, fitness=fitness, optimizer=optimizer, linear_lr=linear_lr,
            keep_weights=keep_weights, verbose=verbose,
        )
    save_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(
        data=str(Path(data_yaml).resolve()), model=model, weights=str(weights) if weights else None,
        base_hyp={k: base[k] for k in HYP_KEYS}, keys=list(keys),
        bounds={k: list(v) for k, v in bounds_by_key.items()}, fitness=fitness, imgsz=int(imgsz), epochs=int(epochs),
        batch_size=int(batch_size), optimizer=optimizer, linear_lr=bool(linear_lr), seed=int(seed), top_n=int(top_n),
        mutation_prob=float(mutation_prob), sigma=float(sigma),
    )
    _check_resume(save_dir, settings)
    # One worker owns an evolution folder, so a trial still running at the start was cut off by a crash: exclusive
    # retries it at once instead of waiting for its heartbeat to go stale.
    search = run_search(
        objective, trials=generations, keys=keys, bounds=bounds_by_key, base_hyp=base, sampler="ga",
        storage=save_dir / STUDY_NAME, study_name=name, out=save_dir, seed=seed,
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
    p.add_argument("--data", required=True, help="dataset yaml, e.g. data/splits/mini/data.yaml")
    p.add_argument("--generations", type=int, default=7, help="total generations (default %(default)s)")
    p.add_argument("--epochs", type=int, default=7, help="epochs per generation (default %(default)s)")
    p.add_argument("--keys", default=",".join(DEFAULT_KEYS), help="hyp keys to mutate (default %(default)s)")
    p.add_argument("--bounds", default=None, help="override bounds, e.g. lr0=1e-4:1e-2,momentum=0.8:0.95")
    p.add_argument("--hyp", default=DEFAULT_HYP, help="base hyp yaml or shipped name (default %(default)s)")
    p.add_argument("--fitness", choices=FITNESS_KINDS, default="yolov5",
                   help="yolov5: 0.1 mAP@0.5 + 0.9 mAP@0.5:0.95; contest: mAP@0.75 by the contest metric")
    p.add_argument("--model", default=None, help="architecture (default yolov5n from scratch)")
    p.add_argument("--weights", default="", help="'' = from scratch; checkpoint path or pretrained name")
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
    result = evolve(
        args.data, generations=args.generations, epochs=args.epochs, keys=args.keys,
        bounds=parse_bounds(args.bounds) or None, base_hyp=args.hyp, fitness=args.fitness, model=args.model,
        weights=args.weights or None, imgsz=args.imgsz, batch_size=args.batch_size, device=args.device,
        workers=args.workers, project=args.project, name=args.name, optimizer=args.optimizer,
        linear_lr=args.linear_lr, seed=args.seed, keep_weights=args.keep_weights, verbose=args.verbose,
    )
    print(result.summary())
    return 0
