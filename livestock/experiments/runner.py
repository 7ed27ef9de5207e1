"""Trainings compared under one budget, each repeated over seeds, scored on the test set by the final score's path.

A comparison is a list of :class:`TrainingCell`: a named training setting (engine, model, start weights, hyp, data,
image size, epochs, batch) at one seed. :func:`run_cell` trains it in ``project/<name>-seed<seed>/train``, detects
the test images at one NMS setting and scores them with the contest metric against ground truth written for exactly
those images (:func:`gold_test_set`), and leaves ``result.json`` beside the run. Running a comparison again
continues it:

- a cell whose ``result.json`` was made from the same settings, data, start weights and test set is not run again;
- a cell whose training was cut off resumes from its ``last.pt`` (both engines write it atomically);
- a cell folder made with other settings is refused with one line naming the difference (nothing is mixed);
- training time is summed over the sessions it took (:class:`livestock.model.run_record.RunRecord`).

:func:`mean_sd` turns the cells' rows into one row per setting, ``mean ± sd`` over seeds.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from livestock import paths
from livestock.data.eda import load_prepared_records
from livestock.data.yolo_format import prepare_dataset, prepared_from, split_image_paths, split_records
from livestock.evaluation.detect import DEFAULT_CONF, DEFAULT_IOU, detect, weights_sha256
from livestock.evaluation.inference import score_detections
from livestock.evaluation.submission import records_to_answer
from livestock.fileio import atomic_write_csv, atomic_write_text, file_sha256
from livestock.model.engine import DEFAULT_ENGINE, TrainSettings, epochs_in_results, get_engine
from livestock.model.run_record import RunRecord
from livestock.provenance import GroundTruth, ground_truth_for, read_record
from livestock.records import ImageRecord

Say = Callable[[str], None]
RESULT_FILE = "result.json"
RECORD_FILE = "record.json"
# The scoring setting of every cell: the original submission's conf 0.001 and NMS IoU 0.68, the default of every
# detection here and the setting the search's fitness uses, so models compare without tuning each one.
TEST_CONF, TEST_IOU = DEFAULT_CONF, DEFAULT_IOU


@dataclass(frozen=True)
class GoldSet:
    """The images a comparison is scored on (the test images, or a validation split) and the ground truth written
    for exactly them; ``fingerprint`` names both."""

    records: tuple[ImageRecord, ...]
    answer: Path
    name: str  # "synthetic test set" or "your test set"
    fingerprint: str

    @classmethod
    def of(cls, records: Sequence[ImageRecord], answer: str | os.PathLike, name: str | None = None) -> "GoldSet":
        """``records`` scored against ``answer``, which the caller has found to be their ground truth
        (:func:`livestock.provenance.ground_truth_for`); ``name`` default: the set its record names."""
        answer = Path(answer)
        if name is None:
            dataset = (read_record(answer) or {}).get("dataset")
            name = GroundTruth(answer, "", dataset).set_name("test set")
        h = hashlib.sha256(file_sha256(answer).encode())
        for r in sorted(records, key=lambda r: r.image_id):
            h.update(f"{r.image_id}\n".encode())
        return cls(tuple(records), answer, name, h.hexdigest())

    @classmethod
    def val_split(cls, data_yaml: str | os.PathLike, folder: str | os.PathLike) -> "GoldSet":
        """The validation split of a dataset yaml, its labels as the truth (written to ``folder/val_answer.csv``):
        the images and truth a search trial's fitness is measured on."""
        records = split_records(data_yaml, "val")
        answer = atomic_write_csv(records_to_answer(records), Path(folder) / "val_answer.csv")
        return cls.of(records, answer, name=f"validation split of {data_yaml}")


def gold_test_set(test_dir: str | os.PathLike = paths.TEST_DIR,
                  prepared_dir: str | os.PathLike = paths.PREPARED_TEST_DIR,
                  answer: str | os.PathLike = paths.TEST_ANSWER) -> GoldSet:
    """The test images of ``test_dir`` (prepared into ``prepared_dir`` unless done for these zips) with ``answer``,
    which must have been written for exactly them (:func:`livestock.provenance.ground_truth_for`)."""
    if not prepared_from(test_dir, prepared_dir, images_only=True):
        prepare_dataset(test_dir, prepared_dir, images_only=True, progress=False)
    truth = ground_truth_for(answer, prepared_dir)
    if not truth:
        raise ValueError(f"{answer}: cannot score the comparison: {truth.reason}")
    return GoldSet.of(load_prepared_records(prepared_dir), truth.path)


# A comparison's training defaults where TrainSettings' differ: the CPU demo's 320 px and 30 epochs, 2 loader workers.
CELL_DEFAULTS = TrainSettings(imgsz=320, epochs=30, workers=2)
# Settings that change only the speed or the run folder's bookkeeping, not a cell's result; run_cell sets the latter.
# Not the data-loader workers: each loader worker draws its augmentations from its own seeded stream (YOLOv5's and
# Ultralytics' loaders seed them alike), so one seed trains another model with 1 worker than with 2 (YOLOv5n, one
# epoch on the mini set from the pretrained weights: box loss 0.03013 against 0.02958). YOLOv5 also caps the
# workers at the CPU count, so a cell of 2 workers on a 1-CPU machine is not the same training.
_NOT_RESULT = ("device", "cache", "project", "name", "exist_ok", "plots", "verbose", "on_epoch", "resume",
               "max_weight_mb", "fail_on_oversize")
# The settings every cell's stored result has been keyed by since comparisons began (under these names); a setting
# not in it joins the key only when it differs from the cells' default (CELL_DEFAULTS), so results stored before it
# existed stay valid.
_KEYED = {"model": "model", "weights": "weights", "hyp": "hyp", "imgsz": "imgsz", "epochs": "epochs",
          "batch_size": "batch", "seed": "seed"}


@dataclass(frozen=True)
class TrainingCell:
    """One training of a comparison: a setting ``name`` trained on ``data_yaml`` by ``engine`` with ``training``
    (``weights`` None: from scratch; ``hyp`` None: the engine's own CPU scratch hyp). Make one with :meth:`of`."""

    name: str
    data_yaml: str
    training: TrainSettings
    engine: str = DEFAULT_ENGINE

    @classmethod
    def of(cls, name: str, data_yaml: str | os.PathLike, engine: str = DEFAULT_ENGINE,
           **training: object) -> "TrainingCell":
        """A cell whose ``training`` is :data:`CELL_DEFAULTS` with ``training`` (TrainSettings fields) applied."""
        return cls(name, str(data_yaml), TrainSettings.of(CELL_DEFAULTS, **training), engine)

    @property
    def key(self) -> str:
        """The cell's folder name: ``<name>-seed<seed>``."""
        return f"{self.name}-seed{self.training.seed}"

    def settings(self) -> dict:
        """What defines the cell's result: name, data, engine, the training settings (device, cache and the run
        folder aside: they change only the speed), the hyp's values, the data's image lists and the start
        weights' sha256."""
        engine = get_engine(self.engine)
        t = self.training
        keyed = {name: getattr(t, f) for f, name in _KEYED.items()}
        others = {f.name: getattr(t, f.name) for f in fields(t) if f.name not in _KEYED and f.name not in _NOT_RESULT
                  and getattr(t, f.name) != getattr(CELL_DEFAULTS, f.name)}
        data = hashlib.sha256(Path(self.data_yaml).read_bytes())
        for split in ("train", "val"):
            data.update("".join(f"{p}\n" for p in split_image_paths(self.data_yaml, split)).encode())
        return {"name": self.name, "data_yaml": self.data_yaml, "engine": self.engine, **keyed, **others,
                "model": t.model or engine.DEFAULT_MODEL, "weights": str(t.weights) if t.weights else None,
                "hyp_values": engine.load_hyp(t.hyp or engine.DEFAULT_HYP), "data_sha256": data.hexdigest(),
                "weights_sha256": weights_sha256(t.weights) if t.weights else None}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_cell(cell: TrainingCell, test: GoldSet | None, project: str | os.PathLike, *, conf: float = TEST_CONF,
             iou: float = TEST_IOU, say: Say = print) -> dict:
    """Train ``cell`` (or continue it, or find it done) and score its best weights on ``test``; the result
    (settings, training seconds summed over sessions, epochs, parameters, size, validation and test mAP; no test
    mAP when ``test`` is None)."""
    folder = Path(project) / cell.key
    settings = {**cell.settings(), "test_sha256": test.fingerprint if test else None, "conf": conf, "iou": iou}
    settings = json.loads(json.dumps(settings))  # as it reads back from the file
    done = _read_json(folder / RESULT_FILE)
    if done is not None and done.get("settings") == settings:
        say(f"{cell.key}: done already ({folder / RESULT_FILE})")
        return done
    t = cell.training
    record = RunRecord(folder / RECORD_FILE, settings, device=t.device, engine=cell.engine, what="comparison cell",
                       hint="remove it to train it again with these settings")
    engine = get_engine(cell.engine)
    run_dir = folder / "train"
    resume = engine.can_resume(run_dir)
    best = run_dir / "weights" / "best.pt"
    if resume or not best.is_file():
        if resume:
            say(f"{cell.key}: resuming {run_dir} after epoch {epochs_in_results(run_dir / 'results.csv')}")
        else:
            (run_dir / "results.csv").unlink(missing_ok=True)  # a run killed before its first last.pt
            say(f"{cell.key}: training {t.model or engine.DEFAULT_MODEL}, {t.epochs} epochs at {t.imgsz} px "
                f"from {t.weights or 'scratch'}")

        def on_epoch(epoch: int, epochs: int, metrics: dict) -> None:
            record.add("train")
            say(f"{cell.key}: epoch {epoch}/{epochs}  val mAP@0.5 {metrics['mAP@0.5']:.3f}")

        result = engine.train(cell.data_yaml, t, weights=t.weights or None, hyp=t.hyp or engine.DEFAULT_HYP,
                              project=folder, name="train", exist_ok=True, plots=False, on_epoch=on_epoch,
                              resume=resume)
        record.add("train")
        best, val = result.best, result.metrics
    else:
        val = engine.validate(best, cell.data_yaml, imgsz=t.imgsz, device=t.device, project=folder,
                              name="val", exist_ok=True, plots=False)
        record.add("validate")
    scores = {}
    if test is not None:
        detections = detect(best, list(test.records), imgsz=t.imgsz, conf=conf, iou=iou, device=t.device,
                            progress=False)
        scores = score_detections(detections, test.answer)
        record.add("test")
    size = engine.checkpoint_size_report(best)
    out = {
        "settings": settings, "cell": cell.key, "name": cell.name, "seed": t.seed,
        "test_set": test.name if test else None,
        "best": str(best), "epochs_run": epochs_in_results(run_dir / "results.csv"),
        "train_s": record.totals().get("train", 0.0), "sessions": record.sessions,
        "parameters": int(size["parameters"]), "weights_mb": round(float(size["stripped_fp16_mb"]), 2),
        "val_mAP@0.5": float(val.loc["all", "mAP@0.5"]), "val_mAP@0.5:0.95": float(val.loc["all", "mAP@0.5:0.95"]),
        **{f"test_{k}": float(v) for k, v in scores.items()},
        "machine": record.session["machine"],
    }
    atomic_write_text(folder / RESULT_FILE, json.dumps(out, indent=2) + "\n")
    # the column keys say "test" whichever gold set scored the cell; the line names the set
    score = (f"mAP@0.75 {out['test_mAP@0.75']:.3f}  mAP@0.5 {out['test_mAP@0.5']:.3f} on the {test.name}" if test else
             f"val mAP@0.5 {out['val_mAP@0.5']:.3f} (no test truth)")
    say(f"{cell.key}: {score}  ({out['train_s'] / 60:.1f} min training)")
    return out


def run_cells(cells: Sequence[TrainingCell], test: GoldSet | None, project: str | os.PathLike, *,
              conf: float = TEST_CONF, iou: float = TEST_IOU, say: Say = print) -> pd.DataFrame:
    """:func:`run_cell` for each cell in order; one row per cell (the settings left out)."""
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two cells share a name and seed: {sorted(k for k in keys if keys.count(k) > 1)}")
    rows = []
    for i, cell in enumerate(cells, 1):
        say(f"[{i}/{len(cells)}] {cell.key}")
        result = run_cell(cell, test, project, conf=conf, iou=iou, say=say)
        rows.append({k: v for k, v in result.items() if k not in ("settings", "machine")})
    return pd.DataFrame(rows)


def mean_sd(rows: pd.DataFrame, by: str = "name", columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per ``by`` value, in first-seen order: ``seeds`` and, for each numeric column, its mean and sample
    standard deviation over the seeds (``<column>`` and ``<column>_sd``; sd is NaN for a single seed)."""
    columns = list(columns or [c for c in rows.columns if c not in (by, "seed") and
                               pd.api.types.is_numeric_dtype(rows[c])])
    out = []
    for value, group in rows.groupby(by, sort=False):
        row: dict = {by: value, "seeds": len(group)}
        for c in columns:
            x = group[c].to_numpy(dtype=float)
            row[c] = float(np.mean(x))
            row[f"{c}_sd"] = float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def format_mean_sd(table: pd.DataFrame, columns: dict[str, tuple], by: str = "name") -> str:
    """A Markdown table of :func:`mean_sd`'s output: ``columns`` maps a column to (header, number format) or
    (header, number format, scale), the scale turning the stored unit into the shown one (seconds into minutes:
    1 / 60); a column with an ``_sd`` beside it shows ``mean ± sd``."""
    head = [by, "seeds", *(spec[0] for spec in columns.values())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r[by]), str(int(r["seeds"]))]
        for c, (_, fmt, *scale) in columns.items():
            value = r.get(c)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                cells.append("–")
                continue
            factor = scale[0] if scale else 1.0
            text = format(value * factor, fmt)
            sd = r.get(f"{c}_sd")
            if sd is not None and not (isinstance(sd, float) and np.isnan(sd)):
                text += f" ± {format(sd * factor, fmt.lstrip('+'))}"  # a sign ("+.4f") is the mean's, not the sd's
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
