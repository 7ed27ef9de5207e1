"""The contest metric: Open-Images-style mAP exactly as the ``map-boxes`` package (1.0.6) computes it, only fast.

The contest ranked entries by ``map_boxes.mean_average_precision_for_boxes(answer, submission, iou_threshold=0.75)``.
:func:`mean_average_precision_for_boxes` takes the same inputs and returns the same numbers, bit for bit,
including the scorer's quirks, which are part of the contract:

- coordinates and confidences are cast to float32; IoU has no ``+1`` and a match needs ``IoU >= threshold``;
- images are visited in the order they first appear in the answer; predictions for images that are not in the
  answer are ignored; predictions of a class on an answer image without ground truth of that class are false
  positives; classes that appear only in predictions are ignored;
- within one image and class, detections are matched in **file order**, not by confidence: each takes its
  highest-IoU ground-truth box (the first one on ties) and is a false positive when that box is already taken
  (it never falls back to its second best). A submission should therefore list each image's boxes by
  confidence, highest first;
- AP is the all-point interpolated area under the precision envelope after ``np.argsort(-conf)`` over all
  detections of a class (not a stable sort: ties are ordered as numpy's default sort orders them, which is
  reproduced here by making the very same call on the very same float32 array); mAP is the mean over classes
  present in the answer.

Because a detection never falls back, the box it claims does not depend on earlier matches. So the candidate
box and its IoU are computed once for every detection with vectorised IoU over (detection, box) pairs of the same
image and class, and a detection is a true positive iff its IoU reaches the threshold and it is the first
detection, in file order, that claims that box with such an IoU. The candidates do not depend on the threshold
either, so mAP at several thresholds (:func:`map_50_95`) costs one matching.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import pandas as pd

ANSWER_COLUMNS: tuple[str, ...] = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
PREDICTION_COLUMNS: tuple[str, ...] = ("ImageID", "LabelName", "Conf", "XMin", "XMax", "YMin", "YMax")
CONTEST_IOU = 0.75
# 0.50, 0.55, ..., 0.95 as the nearest doubles to the decimals (np.linspace gives 0.7000000000000001).
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

TableLike = Union[str, os.PathLike, pd.DataFrame, np.ndarray, Sequence]

# (detection, box) pairs per IoU chunk: large temporaries cost page faults on every allocation,
# small ones stay in cache.
_MAX_PAIRS_PER_CHUNK = 1 << 16


# ---------------------------------------------------------------- reading, as map-boxes reads


def _read_table(source: TableLike, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {what} file not found")
        table = pd.read_csv(path)
        where = str(path)
    elif isinstance(source, pd.DataFrame):
        table, where = source, f"{what} DataFrame"
    else:
        # map-boxes names the columns of an array positionally.
        return pd.DataFrame(source, columns=list(columns))
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; expected {list(columns)}")
    if not isinstance(source, pd.DataFrame):
        return table
    return source.loc[:, list(columns)]  # what map-boxes' pd.DataFrame(df, columns=...) selects, without a copy


def _as_object(values) -> np.ndarray:
    return np.asarray(values, dtype=object)


def _float32(table: pd.DataFrame, column: str) -> np.ndarray:
    return np.asarray(table[column].values.astype(np.float32), dtype=np.float32)


# ---------------------------------------------------------------- matching


def _overlap_matrix(d: list[np.ndarray], g: list[np.ndarray], exact: bool) -> np.ndarray:
    """IoU with map-boxes' arithmetic: float64 of float32 values, no +1, zero unless the intersection has positive
    width and height, the union summed as ``(det_area + gt_area) - inter``. ``d`` holds the detections' x1, y1, x2,
    y2 and area shaped (m, 1), ``g`` the same of ground-truth boxes shaped (m, k).

    map-boxes uses Python's ``min(a, b)``, which keeps ``a`` unless ``b < a`` (``max``: unless ``b > a``);
    ``np.minimum`` / ``np.maximum`` give the same values for finite numbers (a zero's sign may differ, but then the
    width is not positive either way), so the cheap form is used unless a coordinate is NaN or infinite."""
    dx1, dy1, dx2, dy2, d_area = d
    gx1, gy1, gx2, gy2, g_area = g
    with np.errstate(all="ignore"):
        if exact:
            iw = np.where(gx2 < dx2, gx2, dx2) - np.where(gx1 > dx1, gx1, dx1)
            ih = np.where(gy2 < dy2, gy2, dy2) - np.where(gy1 > dy1, gy1, dy1)
            hit = (iw > 0) & (ih > 0)
            inter = iw * ih
            iou = inter / (d_area + g_area - inter)
            iou[~hit] = 0.0
            return iou
        iw = np.minimum(dx2, gx2)
        iw -= np.maximum(dx1, gx1)
        ih = np.minimum(dy2, gy2)
        ih -= np.maximum(dy1, gy1)
        # Finite, so after clamping at 0 the product is positive exactly when both sides are (float32
        # differences are multiples of 2**-149: their float64 product cannot underflow).
        np.maximum(iw, 0.0, out=iw)
        np.maximum(ih, 0.0, out=ih)
        iw *= ih
        union = d_area + g_area
        union -= iw
        return np.divide(iw, union, out=np.zeros_like(iw), where=iw > 0)


def _candidates(det_boxes: np.ndarray, gt_boxes: np.ndarray, gt_start: np.ndarray, gt_count: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the ground-truth box ``np.argmax`` of its IoU row picks (index into ``gt_boxes``,
    -1 when its image has no box of its class) and that IoU.

    Detections are bucketed by the number of boxes they are compared with, so each bucket is a dense
    (detections x boxes) IoU matrix and ``np.argmax`` runs on rows equal to the scorer's. Large counts share
    power-of-two buckets; their padding columns hold -1, below any IoU, so they never win. Buckets are cut into
    chunks small enough for the temporaries to stay in cache."""
    n = len(det_boxes)
    cand = np.full(n, -1, dtype=np.int64)
    cand_iou = np.zeros(n, dtype=np.float64)
    has_gt = gt_count > 0
    if not has_gt.any():
        return cand, cand_iou
    exact = not (np.isfinite(det_boxes).all() and np.isfinite(gt_boxes).all())

    def columns(boxes: np.ndarray) -> list[np.ndarray]:
        x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
        with np.errstate(all="ignore"):
            return [x1, y1, x2, y2, (x2 - x1) * (y2 - y1)]  # the area exactly as map-boxes computes it

    det_cols, gt_cols = columns(det_boxes), columns(gt_boxes)
    width = np.where(gt_count <= 32, gt_count, 1 << np.ceil(np.log2(np.maximum(gt_count, 1))).astype(np.int64))
    with_gt = np.flatnonzero(has_gt)
    by_width = with_gt[np.argsort(width[with_gt], kind="stable")]
    sorted_width = width[by_width]
    edges = np.flatnonzero(np.diff(sorted_width)) + 1
    last_gt = len(gt_boxes) - 1
    for bucket in np.split(by_width, edges):
        w = int(width[bucket[0]])
        step = max(1, _MAX_PAIRS_PER_CHUNK // w)
        for lo in range(0, len(bucket), step):
            rows = bucket[lo:lo + step]
            starts, counts = gt_start[rows], gt_count[rows]
            cols = starts[:, None] + np.arange(w)
            padded = w > 32 and bool((counts != w).any())
            if padded:
                np.minimum(cols, last_gt, out=cols)
            iou = _overlap_matrix([np.take(c, rows)[:, None] for c in det_cols],
                                  [np.take(c, cols) for c in gt_cols], exact)
            if padded:
                iou[np.arange(w) >= counts[:, None]] = -1.0
            best = np.argmax(iou, axis=1)
            cand[rows] = starts + best
            cand_iou[rows] = np.take_along_axis(iou, best[:, None], axis=1)[:, 0]
    return cand, cand_iou


@dataclass
class _ClassMatches:
    """One class's detections in the order map-boxes collects them (answer images in order, file order within)."""

    scores: np.ndarray  # float32
    candidate: np.ndarray  # global ground-truth index each detection claims, -1 when none
    candidate_iou: np.ndarray  # float64
    visit: np.ndarray  # which pass over the answer images collected it (only differs with repeated image ids)
    n_annotations: float
    n_predictions: int


@dataclass
class _Matching:
    classes: list[str]
    per_class: list[_ClassMatches]
    n_answer_images: int
    n_predictions_used: int  # rows on answer images with an answer class


def _gather_by_visit(img_sorted: np.ndarray, visits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions into ``img_sorted`` (image index per detection, sorted) listing, for each visited image in turn,
    its detections; and the visit number of each."""
    starts = np.searchsorted(img_sorted, visits, side="left")
    lengths = np.searchsorted(img_sorted, visits, side="right") - starts
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    positions = np.repeat(starts - offsets, lengths) + np.arange(total)
    return positions, np.repeat(np.arange(len(visits)), lengths)


def _match(valid: pd.DataFrame, preds: pd.DataFrame) -> _Matching:
    # Same conversions as map-boxes, so ids, labels and coordinates compare exactly as they do there.
    ann_unique = _as_object(valid["ImageID"].unique().astype(str))
    distinct = pd.Index(pd.unique(ann_unique))
    visits = distinct.get_indexer(ann_unique)  # arange unless str() merged different raw ids
    labels = [str(c) for c in valid["LabelName"].unique().astype(str)]
    classes = sorted(c for c in set(labels) if c != "nan")
    class_index = pd.Index(classes, dtype=object)
    n_cls = len(classes)

    gt_img = distinct.get_indexer(_as_object(valid["ImageID"].values.astype(str)))
    gt_cls = class_index.get_indexer(_as_object(valid["LabelName"].values.astype(str)))
    gt_boxes = np.stack([_float32(valid, c) for c in ("XMin", "YMin", "XMax", "YMax")], axis=1).astype(np.float64)
    keep = (gt_cls >= 0) & (gt_img >= 0)
    gt_group = (gt_img * n_cls + gt_cls)[keep]
    gt_order = np.argsort(gt_group, kind="stable")  # file order within each image/class, as map-boxes lists them
    gt_boxes = gt_boxes[keep][gt_order]
    gt_group = gt_group[gt_order]
    n_groups = len(distinct) * n_cls
    gt_count_by_group = np.bincount(gt_group, minlength=n_groups) if n_groups else np.zeros(0, np.int64)
    gt_start_by_group = np.cumsum(gt_count_by_group) - gt_count_by_group

    det_img = distinct.get_indexer(_as_object(preds["ImageID"].values.astype(str)))
    det_cls = class_index.get_indexer(_as_object(preds["LabelName"].values.astype(str)))
    used = np.flatnonzero((det_img >= 0) & (det_cls >= 0))  # file order
    det_img, det_cls = det_img[used], det_cls[used]
    scores = _float32(preds, "Conf")[used]
    det_boxes = np.stack([_float32(preds, c)[used] for c in ("XMin", "YMin", "XMax", "YMax")], axis=1)
    det_group = det_img * n_cls + det_cls
    cand, cand_iou = _candidates(det_boxes.astype(np.float64), gt_boxes, gt_start_by_group[det_group],
                                 gt_count_by_group[det_group])

    # Class-major, then image (first-appearance order of the answer), file order within: a stable sort on one
    # small integer key (numpy radix-sorts 16-bit keys).
    class_major = det_cls * len(distinct) + det_img
    key_dtype = np.uint16 if len(distinct) * n_cls <= np.iinfo(np.uint16).max else np.int64
    order = np.argsort(class_major.astype(key_dtype), kind="stable")
    bounds = np.searchsorted(class_major[order], np.arange(n_cls + 1) * len(distinct))
    gt_counts = gt_count_by_group.reshape(len(distinct), n_cls) if n_cls else np.zeros((len(distinct), 0), np.int64)
    identity_visits = len(visits) == len(distinct)
    per_class = []
    for c in range(n_cls):
        take = order[bounds[c]:bounds[c + 1]]
        visit = det_img[take]
        if not identity_visits:
            positions, visit = _gather_by_visit(visit, visits)
            take = take[positions]
        per_class.append(_ClassMatches(
            scores=scores[take],
            candidate=cand[take],
            candidate_iou=cand_iou[take],
            visit=visit,
            n_annotations=float(gt_counts[visits, c].sum()),
            n_predictions=int(bounds[c + 1] - bounds[c]),
        ))
    return _Matching(classes, per_class, len(ann_unique), len(used))


def _true_positives(m: _ClassMatches, iou_threshold: float) -> np.ndarray:
    """1 for the first detection (collection order) of each visit claiming a box with IoU >= threshold."""
    tp = np.zeros(len(m.scores), dtype=np.int64)
    qualified = np.flatnonzero((m.candidate >= 0) & (m.candidate_iou >= iou_threshold))
    if len(qualified):
        key = m.visit[qualified].astype(np.int64) * (int(m.candidate.max()) + 1) + m.candidate[qualified]
        _, first = np.unique(key, return_index=True)
        tp[qualified[first]] = 1
    return tp


def _compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP, the same float operations as map-boxes' ``_compute_ap``."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope (max is exact: same values as its loop)
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def _average_precision(m: _ClassMatches, iou_threshold: float) -> float:
    tp = _true_positives(m, iou_threshold)
    fp = 1 - tp
    indices = np.argsort(-m.scores)  # the scorer's exact (unstable) call on the same float32 array
    fp = np.cumsum(fp[indices])
    tp = np.cumsum(tp[indices])
    recall = tp / m.n_annotations
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return _compute_ap(recall, precision)


def _evaluate(matching: _Matching, iou_threshold: float) -> tuple[float, dict[str, tuple[float, float]]]:
    average_precisions: dict[str, tuple[float, float]] = {}
    for label, m in zip(matching.classes, matching.per_class):
        if m.n_annotations == 0:
            average_precisions[label] = 0, 0
            continue
        average_precisions[label] = float(_average_precision(m, iou_threshold)), m.n_annotations
    present, total = 0, 0.0
    for ap, n in average_precisions.values():
        if n > 0:
            present += 1
            total += ap
    return (total / present if present else 0.0), average_precisions


def _prepare(ann: TableLike, pred: TableLike, exclude_not_in_annotations: bool = False) -> _Matching:
    valid = _read_table(ann, ANSWER_COLUMNS, "answer")
    preds = _read_table(pred, PREDICTION_COLUMNS, "predictions")
    if exclude_not_in_annotations:
        # Kept for signature compatibility: the scorer ignores such images anyway; the same filter is applied
        # (it compares raw ids with their str() forms, which matters only for numeric ids).
        preds = preds[preds["ImageID"].isin(valid["ImageID"].unique().astype(str))]
    return _match(valid, preds)


# ---------------------------------------------------------------- public API


def mean_average_precision_for_boxes(
    ann: TableLike,
    pred: TableLike,
    iou_threshold: float = CONTEST_IOU,
    exclude_not_in_annotations: bool = False,
    verbose: bool = False,
) -> tuple[float, dict[str, tuple[float, float]]]:
    """Contest mAP, identical to ``map_boxes.mean_average_precision_for_boxes`` (see the module docstring).

    ``ann``: CSV path, DataFrame or array ``(N, 6)`` with ImageID, LabelName, XMin, XMax, YMin, YMax (normalised).
    ``pred``: the same plus ``Conf`` after LabelName, ``(N, 7)``.
    Returns ``(mAP, {class: (AP, n_annotations)})``. Unlike map-boxes the default threshold is the contest's 0.75
    and nothing is printed unless ``verbose``.
    """
    matching = _prepare(ann, pred, exclude_not_in_annotations)
    mean_ap, aps = _evaluate(matching, iou_threshold)
    if verbose:
        print(f"images in answer: {matching.n_answer_images}, predictions scored: {matching.n_predictions_used}")
        for label, (ap, n) in aps.items():
            print(f"{label:30s} | {ap:.6f} | {int(n):7d}")
        print(f"mAP@{iou_threshold:g}: {mean_ap:.6f}")
    return mean_ap, aps


def map_at(ann: TableLike, pred: TableLike, iou: float = CONTEST_IOU) -> float:
    """Contest mAP at one IoU threshold (0.75 by default, the contest's)."""
    return mean_average_precision_for_boxes(ann, pred, iou_threshold=iou)[0]


def map_50(ann: TableLike, pred: TableLike) -> float:
    """The contest mAP at IoU 0.5."""
    return map_at(ann, pred, 0.5)


def map_at_thresholds(ann: TableLike, pred: TableLike, iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS
                      ) -> dict[float, float]:
    """mAP at each threshold, sharing one matching (each value equals ``map_at`` at that threshold)."""
    matching = _prepare(ann, pred)
    return {float(t): _evaluate(matching, t)[0] for t in iou_thresholds}


def map_50_95(ann: TableLike, pred: TableLike) -> float:
    """COCO-style summary: the mean of this metric over IoU 0.50, 0.55, ..., 0.95."""
    return float(np.mean(list(map_at_thresholds(ann, pred, COCO_IOU_THRESHOLDS).values())))


def per_class_table(ann: TableLike, pred: TableLike, iou_threshold: float = CONTEST_IOU) -> pd.DataFrame:
    """One row per class of the answer: n_annotations, n_predictions (on answer images), AP at ``iou_threshold``,
    AP@0.5 and AP@0.5:0.95; the mean of each AP column is the corresponding mAP."""
    matching = _prepare(ann, pred)
    at = {t: _evaluate(matching, t)[1] for t in {float(iou_threshold), 0.5, *COCO_IOU_THRESHOLDS}}
    headline = f"AP@{iou_threshold:g}"
    rows = []
    for label, m in zip(matching.classes, matching.per_class):
        row = {"label": label, "n_annotations": int(m.n_annotations), "n_predictions": m.n_predictions,
               headline: at[float(iou_threshold)][label][0]}
        row.setdefault("AP@0.5", at[0.5][label][0])
        row["AP@0.5:0.95"] = float(np.mean([at[t][label][0] for t in COCO_IOU_THRESHOLDS]))
        rows.append(row)
    columns = list(dict.fromkeys(["label", "n_annotations", "n_predictions", headline, "AP@0.5", "AP@0.5:0.95"]))
    return pd.DataFrame(rows, columns=columns).set_index("label")


def format_score_table(table: pd.DataFrame) -> str:
    """The per-class table followed by one mAP line per AP column (classes with annotations only)."""
    lines = [table.to_string(float_format=lambda v: f"{v:.6f}")]
    present = table[table["n_annotations"] > 0]
    for column in [c for c in table.columns if c.startswith("AP@")]:
        value = float(present[column].mean()) if len(present) else 0.0
        lines.append(f"m{column}: {value:.6f}")
    return "\n".join(lines)
