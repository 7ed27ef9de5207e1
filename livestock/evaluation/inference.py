"""The last stage: detect on the test images at the chosen setting (TTA on or off, its fusion, conf, NMS IoU: what
tuning chose on the validation fold), write the contest ``answer.csv``, validate it, and score it when ground truth
for exactly those images exists (the synthetic set has it; the real test set does not): :func:`score_if_truth`
scores only against truth whose provenance record matches the test zips
(:func:`livestock.provenance.ground_truth_for`), and names the data set in the result.

Detection goes through :mod:`livestock.evaluation.detect`, so an exported ``.onnx`` model (``livestock export``) is
judged by the same code and the same contest metric as its PyTorch checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from livestock.data.split import pick_evenly
from livestock.data.yolo_format import split_records
from livestock.evaluation.detect import DEFAULT_CONF, DEFAULT_IOU, detect
from livestock.evaluation.metrics import (COCO_IOU_THRESHOLDS, CONTEST_IOU, map_at_thresholds,
                                         mean_average_precision_for_boxes, per_class_table)
from livestock.evaluation.submission import (detections_to_submission, normalisation, read_answer, records_to_answer,
                                             submission_summary, validate_submission, write_submission)
from livestock.fileio import atomic_write_text
from livestock.progress import emit
from livestock.provenance import GroundTruth
from livestock.records import Detections, ImageRecord


def write_answer(weights: str | os.PathLike, images: Sequence[ImageRecord] | str | os.PathLike,
                 out_csv: str | os.PathLike, *, imgsz: int, conf: float, iou: float, device: str = "auto",
                 cache_dir: str | os.PathLike | None = None, answer: str | os.PathLike | None = None,
                 normalise: str = "image", tta: bool = False, fusion: str = "nms") -> pd.DataFrame:
    """Detect, write ``out_csv`` atomically in the contest format and return it validated (against ``answer``
    when given: unknown ImageIDs are then an error, as they would be a silent no-op in the scorer).
    ``normalise``: ``image`` or ``original`` (see :data:`livestock.evaluation.submission.NORMALISATION_HELP`).
    ``tta`` / ``fusion``: test-time augmentation and how its views are fused (``nms`` or ``wbf``), as a tuning's
    ``best.json`` names them (see :func:`livestock.evaluation.detect.detect`)."""
    normalise_by = normalisation(normalise)
    detections = detect(weights, images, imgsz=imgsz, conf=conf, iou=iou, device=device, cache_dir=cache_dir,
                        tta=tta, fusion=fusion)
    emit("images", task="detect (answer)", done=len(detections), total=len(detections))
    write_submission(detections, out_csv, normalise_by=normalise_by)
    frame = validate_submission(out_csv, answer=answer, unknown_images="warn",
                                check_coordinate_range=normalise_by is None)
    print(f"{out_csv}: {submission_summary(frame)}")
    for warning in frame.attrs.get("warnings", []):
        print(f"warning: {warning}")
    return frame


def score_answer(answer: str | os.PathLike, submission: str | os.PathLike, out_json: str | os.PathLike | None = None,
                 iou_threshold: float = CONTEST_IOU, **settings: object) -> dict:
    """Per-class AP at the contest IoU, AP@0.5 and AP@0.5:0.95 of a submission file, as a dict (also written to
    ``out_json``, atomically, with ``settings`` such as conf / iou / weights for the record)."""
    read_answer(answer)  # a malformed answer file fails here with its own message
    table = per_class_table(str(answer), str(submission), iou_threshold=iou_threshold)
    present = table[table["n_annotations"] > 0]
    headline = f"AP@{iou_threshold:g}"
    result = {
        "answer": str(answer), "submission": str(submission), "metric_iou": iou_threshold,
        "map_75" if iou_threshold == CONTEST_IOU else f"map_{iou_threshold:g}": float(present[headline].mean()),
        "map_50": float(present["AP@0.5"].mean()),
        "map_50_95": float(present["AP@0.5:0.95"].mean()),
        "per_class": {
            label: {"n_annotations": int(row["n_annotations"]), "n_predictions": int(row["n_predictions"]),
                    **{c: float(row[c]) for c in table.columns if c.startswith("AP@")}}
            for label, row in table.iterrows()
        },
        **settings,
    }
    if out_json is not None:
        atomic_write_text(out_json, json.dumps(result, indent=2) + "\n")
    return result


def score_if_truth(truth: GroundTruth, submission: str | os.PathLike, out_json: str | os.PathLike,
                   **settings: object) -> dict | None:
    """:func:`score_answer` against ``truth`` when it belongs to the test images, the result (and ``out_json``)
    naming the data set (``test_set``: "synthetic test set" or "your test set"). Otherwise None, and an earlier
    ``out_json`` is removed: it scored other images and must not pass for a score of these."""
    if not truth:
        Path(out_json).unlink(missing_ok=True)
        return None
    return score_answer(truth.path, submission, out_json, test_set=truth.set_name("test set"), dataset=truth.dataset,
                        **settings)


def score_table(result: dict) -> pd.DataFrame:
    """The per-class part of :func:`score_answer`'s result as a table, with an ``all`` row of means."""
    table = pd.DataFrame(result["per_class"]).T
    means = table[[c for c in table.columns if c.startswith("AP@")]].mean()
    table.loc["all"] = {**means.to_dict(), "n_annotations": table["n_annotations"].sum(),
                        "n_predictions": table["n_predictions"].sum()}
    return table


def split_map(weights: str | os.PathLike, data_yaml: str | os.PathLike, *, split: str = "val", imgsz: int,
              conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU, device: str = "auto",
              metric_iou: float = CONTEST_IOU, max_images: int | None = None,
              cache_dir: str | os.PathLike | None = None, progress: bool = False) -> float:
    """Contest mAP (at ``metric_iou``, 0.75) of ``weights`` on one split of a dataset yaml, through the very
    path of the final score: detection -> NMS at ``conf`` / ``iou`` -> submission frame -> contest metric.
    ``max_images`` scores that many images spread evenly over the split. 0.0 when nothing is detected."""
    records = split_records(data_yaml, split)
    if max_images:
        records = pick_evenly(records, max_images)
    answer = records_to_answer(records)
    if answer.empty:
        raise ValueError(f"{data_yaml}: the {split} split has no labelled boxes to score against")
    detections = detect(weights, records, imgsz, conf, iou, device=device, cache_dir=cache_dir, progress=progress)
    submission = detections_to_submission(detections)
    if submission.empty:
        return 0.0
    return float(mean_average_precision_for_boxes(answer, submission, iou_threshold=metric_iou)[0])


def score_detections(detections: Sequence[Detections], answer: str | os.PathLike | pd.DataFrame) -> dict[str, float]:
    """Contest mAP of detections against an answer file: mAP@0.5, mAP@0.75 (the contest's) and mAP@0.5:0.95."""
    # The metric reads the answer file as the contest scorer does, and names a missing one.
    pred = detections_to_submission(detections)
    at = map_at_thresholds(answer, pred, sorted({0.5, 0.75, *COCO_IOU_THRESHOLDS}))
    return {"mAP@0.5": at[0.5], "mAP@0.75": at[0.75],
            "mAP@0.5:0.95": float(np.mean([at[t] for t in COCO_IOU_THRESHOLDS]))}
