"""Error analysis of a detector on labelled images: where it is right, where it is wrong, and where the
labels themselves are probably wrong.

- :func:`per_class_table`: precision and recall at a stated confidence (IoU 0.5, computed here from
  :class:`~livestock.records.Detections` against :class:`~livestock.records.ImageRecord`), and the contest
  metric's mAP@0.5, mAP@0.75 and mAP@0.5:0.95 per class (``livestock.evaluation.metrics``), with a mean row.
- :func:`boxes_per_image` / :func:`plot_boxes_per_image`: how many boxes the labels and the detector see per image.
- :func:`plot_overlays`: ground truth (green) against predictions (red) on chosen images.
- :func:`missing_label_candidates` / :func:`rank_missing_label_images`: confident predictions that overlap no
  labelled box, and the images ranked by them. The real cow labels are incomplete (visible cows without a box);
  these are the images to look at first. :func:`score_missing_label_finder` measures the ranking against the
  synthetic set's known truth (``synth_truth.csv``: which boxes were left out of the labels).
- :func:`run_error_analysis`: detector on a split's validation images, every table as CSV and every figure as
  PNG, written atomically.

Figures are :class:`matplotlib.figure.Figure` objects built without pyplot, so the module works headless and
in notebooks alike.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pandas as pd

from livestock import paths, provenance
from livestock.fileio import atomic_write_csv, atomic_write_figure, atomic_write_text, read_csv
from livestock.progress import emit
from livestock.records import (
    CLASS_NAMES,
    Detections,
    ImageRecord,
    load_records,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TRUTH_COLUMNS: tuple[str, ...] = ("image_id", "label", "x1", "y1", "x2", "y2", "labelled")
TABLE_COLUMNS: tuple[str, ...] = (
    "class", "images", "labels", "predictions", "TP", "P", "R", "mAP@0.5", "mAP@0.75", "mAP@0.5:0.95",
)
GT_COLOUR, PRED_COLOUR, MISSING_COLOUR = "#1db954", "#e5383b", "#ff9f1c"

FIGURE_DPI = 110  # the analysis figures hold thumbnails: a little sharper than the default 100


# ---------------------------------------------------------------- geometry


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), pixel corners, no +1: shape (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def max_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each box of ``a``, its highest IoU with any box of ``b`` (0 when ``b`` is empty)."""
    iou = pairwise_iou(a, b)
    return iou.max(axis=1) if iou.shape[1] else np.zeros(iou.shape[0])


def greedy_match(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float
                 ) -> np.ndarray:
    """One-to-one matching of detections to ground truth: detections in order of confidence (highest first,
    stable), each takes the unmatched ground-truth box it overlaps most if that IoU >= ``iou_threshold``.
    Returns, per detection (input order), the index of its ground-truth box or -1."""
    match = np.full(len(det_boxes), -1, dtype=np.int64)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return match
    iou = pairwise_iou(det_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for d in np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable"):
        row = np.where(taken, -1.0, iou[d])
        g = int(np.argmax(row))
        if row[g] >= iou_threshold:
            match[d] = g
            taken[g] = True
    return match


# ---------------------------------------------------------------- inputs


def _index_detections(records: Sequence[ImageRecord], detections: Iterable[Detections]) -> dict[str, Detections]:
    """Detections by image id; an image the detector returned nothing for gets an empty entry."""
    by_id = {d.image_id: d for d in detections}
    for r in records:
        by_id.setdefault(r.image_id, Detections(r.image_id, r.width, r.height))
    return by_id


def load_truth(path: str | Path) -> pd.DataFrame:
    """Read ``synth_truth.csv`` (every true box of the synthetic set, ``labelled`` False for boxes left out of
    the label files) with ``labelled`` as a bool column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: truth file not found (written by `livestock synth`)")
    truth = read_csv(path)
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(TRUTH_COLUMNS)}")
    return normalise_truth(truth, where=str(path))


def normalise_truth(truth: pd.DataFrame, where: str = "truth") -> pd.DataFrame:
    """A truth table (``synth_truth.csv`` rows) with its ``labelled`` column as booleans, checked."""
    truth = truth.copy()
    raw = truth["labelled"]
    if raw.dtype == bool:
        return truth
    text = raw.astype(str).str.strip().str.lower()
    mapping = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
    bad = sorted(set(text[~text.isin(list(mapping))]))
    if bad:
        raise ValueError(f"{where}: column 'labelled' holds {bad[:5]}, expected true/false or 1/0")
    truth["labelled"] = text.map(mapping).astype(bool)
    return truth


def _truth_boxes_by_image(truth: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """image_id -> (boxes (N, 4), labelled (N,))."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for image_id, g in truth.groupby("image_id", sort=False):
        out[str(image_id)] = (g[["x1", "y1", "x2", "y2"]].to_numpy(np.float64), g["labelled"].to_numpy(bool))
    return out


# ---------------------------------------------------------------- tables


def answer_frames(records: Sequence[ImageRecord], detections: Iterable[Detections]
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ground truth and predictions in the contest's answer / submission format (normalised corners;
    each image's predictions highest confidence first, the order the scorer needs)."""
    ann_rows, pred_rows = [], []
    for r in records:
        for x1, y1, x2, y2 in r.boxes:
            ann_rows.append((r.image_id, r.label, x1 / r.width, x2 / r.width, y1 / r.height, y2 / r.height))
    for d in detections:
        d = d.sorted_by_score()
        for (x1, y1, x2, y2), s, c in zip(d.boxes, d.scores, d.class_ids):
            pred_rows.append((d.image_id, CLASS_NAMES[int(c)], float(s),
                              x1 / d.width, x2 / d.width, y1 / d.height, y2 / d.height))
    ann = pd.DataFrame(ann_rows, columns=["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"])
    pred = pd.DataFrame(pred_rows, columns=["ImageID", "LabelName", "Conf", "XMin", "XMax", "YMin", "YMax"])
    return ann, pred


def precision_recall(records: Sequence[ImageRecord], detections: Iterable[Detections], conf: float = 0.25,
                     iou_threshold: float = 0.5) -> pd.DataFrame:
    """Per class: labelled boxes, predictions with confidence >= ``conf``, true positives (one-to-one greedy
    matching by confidence within each image and class, IoU >= ``iou_threshold``), P = TP / predictions,
    R = TP / labels (NaN where the denominator is 0)."""
    by_id = _index_detections(records, detections)
    stats = {name: {"images": 0, "labels": 0, "predictions": 0, "TP": 0} for name in CLASS_NAMES}
    for r in records:
        d = by_id[r.image_id]
        keep = d.scores >= conf
        stats[r.label]["images"] += 1
        stats[r.label]["labels"] += r.n_boxes
        for cid, name in enumerate(CLASS_NAMES):
            sel = keep & (d.class_ids == cid)
            gt = r.boxes if name == r.label else np.zeros((0, 4))
            m = greedy_match(d.boxes[sel], d.scores[sel], gt, iou_threshold)
            stats[name]["predictions"] += int(sel.sum())
            stats[name]["TP"] += int((m >= 0).sum())
    rows = []
    for name in CLASS_NAMES:
        s = stats[name]
        p = s["TP"] / s["predictions"] if s["predictions"] else float("nan")
        rec = s["TP"] / s["labels"] if s["labels"] else float("nan")
        rows.append({"class": name, **s, "P": p, "R": rec})
    return pd.DataFrame(rows, columns=["class", "images", "labels", "predictions", "TP", "P", "R"])


def per_class_table(records: Sequence[ImageRecord], detections: Sequence[Detections], conf: float = 0.25,
                    iou_threshold: float = 0.5) -> pd.DataFrame:
    """The validation table of the original's error analysis, one row per class with labels plus an ``all``
    row (sums of counts, means over those classes of P, R and the APs, as YOLOv5 and the contest average).

    P and R are taken at confidence ``conf`` and IoU ``iou_threshold`` (see :func:`precision_recall`); the APs
    use every detection and the contest metric (map-boxes semantics) at IoU 0.5, 0.75 and 0.5:0.05:0.95."""
    from livestock.evaluation.metrics import COCO_IOU_THRESHOLDS, mean_average_precision_for_boxes

    detections = list(detections)
    pr = precision_recall(records, detections, conf=conf, iou_threshold=iou_threshold).set_index("class")
    ann, pred = answer_frames(records, detections)
    ap: dict[float, dict[str, float]] = {}
    for t in sorted({0.5, 0.75, *COCO_IOU_THRESHOLDS}):
        if len(ann):
            _, per_class = mean_average_precision_for_boxes(ann, pred, iou_threshold=t)
        else:
            per_class = {}
        ap[t] = {name: float(v[0]) for name, v in per_class.items() if v[1] > 0}
    rows = []
    for name in CLASS_NAMES:
        if pr.loc[name, "labels"] == 0:
            continue
        rows.append({
            "class": name, **pr.loc[name].to_dict(),
            "mAP@0.5": ap[0.5].get(name, 0.0),
            "mAP@0.75": ap[0.75].get(name, 0.0),
            "mAP@0.5:0.95": float(np.mean([ap[t].get(name, 0.0) for t in COCO_IOU_THRESHOLDS])),
        })
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    if len(table):
        total = {"class": "all", **{c: int(table[c].sum()) for c in ("images", "labels", "predictions", "TP")}}
        total.update({c: float(table[c].mean()) for c in ("P", "R", "mAP@0.5", "mAP@0.75", "mAP@0.5:0.95")})
        table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    for c in ("images", "labels", "predictions", "TP"):
        table[c] = table[c].astype(int)
    table.attrs.update({"conf": conf, "iou": iou_threshold})
    return table


def boxes_per_image(records: Sequence[ImageRecord], detections: Iterable[Detections], conf: float = 0.25
                    ) -> pd.DataFrame:
    """One row per image: image_id, label, n_gt (labelled boxes), n_pred (predictions with confidence >= conf),
    diff = n_pred - n_gt."""
    by_id = _index_detections(records, detections)
    rows = [(r.image_id, r.label, r.n_boxes, int((by_id[r.image_id].scores >= conf).sum())) for r in records]
    df = pd.DataFrame(rows, columns=["image_id", "label", "n_gt", "n_pred"])
    df["diff"] = df["n_pred"] - df["n_gt"]
    return df


def missing_label_candidates(records: Sequence[ImageRecord], detections: Iterable[Detections],
                             conf: float = 0.5, iou_threshold: float = 0.5,
                             classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Confident predictions (score >= ``conf``) whose IoU with every labelled box of their image is below
    ``iou_threshold``: an object the detector is sure of and the labels do not have. The class of the
    prediction is not used, since each image shows one species (a cow predicted as a pig is still a cow).
    ``classes``: only images of these classes (e.g. ``["cow"]``, whose labels are known to be incomplete).

    Columns: image_id, label (the image's class), score, x1, y1, x2, y2, max_iou (with the labels)."""
    by_id = _index_detections(records, detections)
    rows = []
    for r in records:
        if classes is not None and r.label not in classes:
            continue
        d = by_id[r.image_id].sorted_by_score()
        keep = d.scores >= conf
        best = max_iou(d.boxes[keep], r.boxes)
        for box, score, iou in zip(d.boxes[keep], d.scores[keep], best):
            if iou < iou_threshold:
                rows.append((r.image_id, r.label, float(score), *map(float, box), float(iou)))
    return pd.DataFrame(rows, columns=["image_id", "label", "score", "x1", "y1", "x2", "y2", "max_iou"])


def rank_missing_label_images(candidates: pd.DataFrame, by: str = "sum") -> pd.DataFrame:
    """Images ranked by how likely their labels miss objects: ``by='sum'`` of candidate confidences
    (many confident unlabelled objects first) or ``by='max'`` (the single most confident one first); ties
    broken by the other score, then image id. Columns: rank (1-based), image_id, label, n_candidates,
    sum_conf, max_conf."""
    if by not in ("sum", "max"):
        raise ValueError(f"by must be 'sum' or 'max', got {by!r}")
    cols = ["rank", "image_id", "label", "n_candidates", "sum_conf", "max_conf"]
    if candidates.empty:
        return pd.DataFrame(columns=cols)
    g = candidates.groupby("image_id", sort=False)
    ranked = pd.DataFrame({
        "image_id": list(g.groups),
        "label": g["label"].first().to_numpy(),
        "n_candidates": g.size().to_numpy(),
        "sum_conf": g["score"].sum().to_numpy(),
        "max_conf": g["score"].max().to_numpy(),
    })
    keys = ["sum_conf", "max_conf"] if by == "sum" else ["max_conf", "sum_conf"]
    ranked = ranked.sort_values(keys + ["image_id"], ascending=[False, False, True], kind="stable")
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked.reset_index(drop=True)[cols]


def match_candidates_to_truth(candidates: pd.DataFrame, truth: pd.DataFrame, iou_threshold: float = 0.5
                              ) -> pd.DataFrame:
    """``candidates`` with ``is_left_out``: the candidate overlaps, at IoU >= ``iou_threshold``, a true box
    that was left out of the labels (``labelled`` False in the truth), i.e. the finder found a real missing label."""
    truth = normalise_truth(truth)
    by_image = _truth_boxes_by_image(truth)
    out = candidates.copy()
    hits = np.zeros(len(out), dtype=bool)
    for image_id, idx in out.groupby("image_id", sort=False).indices.items():
        boxes, labelled = by_image.get(str(image_id), (np.zeros((0, 4)), np.zeros(0, bool)))
        left_out = boxes[~labelled]
        hits[idx] = max_iou(out.iloc[idx][["x1", "y1", "x2", "y2"]].to_numpy(np.float64), left_out) >= iou_threshold
    out["is_left_out"] = hits
    return out


def score_missing_label_finder(candidates: pd.DataFrame, ranked: pd.DataFrame, truth: pd.DataFrame,
                               image_ids: Iterable[str] | None = None, top_k: Sequence[int] = (5, 10, 20),
                               iou_threshold: float = 0.5) -> pd.DataFrame:
    """Precision of the missing-label finder against known truth: of the candidate boxes in the top ``k``
    ranked images (and in all of them), the share that really are left-out objects; and recall, the share of
    left-out true boxes of the analysed images (``image_ids``, default: those in ``truth``) that some
    candidate found. Columns: scope, images, candidates, left_out_found, precision, left_out_total, recall."""
    truth = normalise_truth(truth)
    if image_ids is not None:
        truth = truth[truth["image_id"].isin(set(image_ids))]
    matched = match_candidates_to_truth(candidates, truth, iou_threshold)
    by_image = _truth_boxes_by_image(truth)
    left_out_total = int((~truth["labelled"]).sum())
    order = list(ranked["image_id"])
    scopes = [(f"top {k}", order[:k]) for k in top_k if k < len(order)] + [("all", order)]
    rows = []
    for scope, ids in scopes:
        sub = matched[matched["image_id"].isin(set(ids))]
        found = 0  # distinct left-out boxes hit, so duplicate predictions of one cow count once
        for image_id, g in sub.groupby("image_id"):
            boxes, labelled = by_image.get(str(image_id), (np.zeros((0, 4)), np.zeros(0, bool)))
            iou = pairwise_iou(boxes[~labelled], g[["x1", "y1", "x2", "y2"]].to_numpy(np.float64))
            found += int((iou >= iou_threshold).any(axis=1).sum()) if iou.size else 0
        rows.append({
            "scope": scope, "images": len(ids), "candidates": len(sub),
            "left_out_found": int(sub["is_left_out"].sum()),
            "precision": float(sub["is_left_out"].mean()) if len(sub) else float("nan"),
            "left_out_total": left_out_total,
            "recall": found / left_out_total if left_out_total else float("nan"),
        })
    return pd.DataFrame(rows, columns=["scope", "images", "candidates", "left_out_found", "precision",
                                       "left_out_total", "recall"])


# ---------------------------------------------------------------- figures


def read_rgb(path: str, max_side: int) -> tuple[np.ndarray, float]:
    """An image as RGB, shrunk to at most ``max_side`` pixels, and the scale it was shrunk by."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: image not found or unreadable")
    scale = min(1.0, max_side / max(img.shape[:2]))
    if scale < 1.0:
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    return img[:, :, ::-1], scale


def draw_boxes(ax: "Axes", boxes: np.ndarray, scale: float, colour: str, scores: np.ndarray | None = None,
                linestyle: str = "-") -> None:
    """Draw pixel boxes (scaled by ``scale``) on ``ax``, with their scores when given."""
    from matplotlib.patches import Rectangle

    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4) * scale):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.2,
                               linestyle=linestyle))
        if scores is not None:
            ax.text(x1, y1, f"{scores[i]:.2f}", color="white", fontsize=6, va="bottom",
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.5, "alpha": 0.8})


def _grid(n: int, ncols: int, tile: float = 3.6):
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig = Figure(figsize=(tile * ncols, tile * 0.62 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def plot_overlays(records: Sequence[ImageRecord], detections: Iterable[Detections], image_ids: Sequence[str],
                  conf: float = 0.25, ncols: int = 3, max_side: int = 640) -> "Figure":
    """Grid of the chosen images: labelled boxes in green, predictions (confidence >= ``conf``) in red with
    their scores."""
    rec_by_id = {r.image_id: r for r in records}
    by_id = _index_detections(records, detections)
    unknown = [i for i in image_ids if i not in rec_by_id]
    if unknown:
        raise ValueError(f"images not among the records: {unknown[:5]}")
    fig, axes = _grid(len(image_ids), ncols)
    for ax, image_id in zip(axes, image_ids):
        r, d = rec_by_id[image_id], by_id[image_id]
        img, scale = read_rgb(r.image_path, max_side)
        ax.imshow(img)
        draw_boxes(ax, r.boxes, scale, GT_COLOUR)
        keep = d.scores >= conf
        draw_boxes(ax, d.boxes[keep], scale, PRED_COLOUR, d.scores[keep], linestyle="--")
        ax.set_title(f"{image_id}\nGT {r.n_boxes} (green) / pred {int(keep.sum())} (red)", fontsize=7)
    fig.suptitle(f"ground truth vs predictions (conf >= {conf:g})", fontsize=9)
    return fig


def plot_boxes_per_image(counts: pd.DataFrame) -> "Figure":
    """Left: predicted vs labelled boxes per image (one point per image, per class, size = how many images
    share the point). Right: histogram of n_pred - n_gt per class."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_scatter, ax_hist = fig.subplots(1, 2)
    colours = {"pig": "#f4a261", "cow": "#264653"}
    top = int(max(counts["n_gt"].max(), counts["n_pred"].max(), 1)) if len(counts) else 1
    for label, g in counts.groupby("label"):
        pts = g.groupby(["n_gt", "n_pred"]).size().reset_index(name="n")
        ax_scatter.scatter(pts["n_gt"], pts["n_pred"], s=12 + 8 * pts["n"], alpha=0.6, label=label,
                           color=colours.get(label))
        lo, hi = int(g["diff"].min()), int(g["diff"].max())
        ax_hist.hist(g["diff"], bins=np.arange(lo - 0.5, hi + 1.5, 1.0), alpha=0.6, label=label,
                     color=colours.get(label))
    ax_scatter.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle=":")
    ax_scatter.set_xlabel("labelled boxes per image")
    ax_scatter.set_ylabel("predicted boxes per image")
    ax_scatter.set_title("boxes per image")
    from matplotlib.ticker import MaxNLocator

    ax_hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_hist.axvline(0, color="grey", linewidth=0.8, linestyle=":")
    ax_hist.set_xlabel("predicted - labelled")
    ax_hist.set_ylabel("images")
    ax_hist.set_title("count difference per image")
    for ax in (ax_scatter, ax_hist):
        if len(counts):
            ax.legend(fontsize=8)
    return fig


def plot_missing_label_thumbnails(records: Sequence[ImageRecord], candidates: pd.DataFrame, ranked: pd.DataFrame,
                                  top_k: int = 12, ncols: int = 4, max_side: int = 480) -> "Figure":
    """Thumbnails of the ``top_k`` images most likely to miss labels: labelled boxes in green, the confident
    unmatched predictions in orange with their scores."""
    rec_by_id = {r.image_id: r for r in records}
    ids = list(ranked["image_id"])[:top_k]
    fig, axes = _grid(max(1, len(ids)), ncols, tile=3.0)
    if not ids:
        axes[0].text(0.5, 0.5, "no confident prediction without a label", ha="center", va="center")
        return fig
    for ax, (_, row) in zip(axes, ranked.head(top_k).iterrows()):
        r = rec_by_id[row["image_id"]]
        img, scale = read_rgb(r.image_path, max_side)
        c = candidates[candidates["image_id"] == r.image_id]
        ax.imshow(img)
        draw_boxes(ax, r.boxes, scale, GT_COLOUR)
        draw_boxes(ax, c[["x1", "y1", "x2", "y2"]].to_numpy(), scale, MISSING_COLOUR, c["score"].to_numpy())
        ax.set_title(f"#{row['rank']} {r.image_id}\n{row['n_candidates']} unlabelled, sum {row['sum_conf']:.2f}",
                     fontsize=7)
    fig.suptitle("images most likely to have missing labels (orange: confident, no label)", fontsize=9)
    return fig


def choose_overlay_images(counts: pd.DataFrame, n: int = 6) -> list[str]:
    """The ``n`` images where the detector and the labels disagree most on the count (largest |diff|,
    ties by image id), so the overlays show errors rather than easy frames."""
    if counts.empty:
        return []
    order = counts.assign(absdiff=counts["diff"].abs()).sort_values(["absdiff", "image_id"], ascending=[False, True])
    return list(order["image_id"].head(n))


def split_image_ids(split_dir: str | Path, subset: str = "val") -> list[str]:
    """Image ids (file names) listed in ``<split_dir>/<subset>.txt`` (one image path per line)."""
    path = Path(split_dir) / f"{subset}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list not found (run `livestock split` first)")
    ids = [Path(line.strip()).name for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path}: lists no images")
    return ids


def select_records(records: Sequence[ImageRecord], image_ids: Iterable[str], where: str = "split") -> list[ImageRecord]:
    """The records of ``image_ids``, in that order; an id without a record is an error naming ``where``."""
    by_id = {r.image_id: r for r in records}
    ids = list(image_ids)
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ValueError(f"{where}: {len(unknown)} image(s) not in the prepared records, e.g. {unknown[:3]}")
    return [by_id[i] for i in ids]


def write_error_analysis(records: Sequence[ImageRecord], detections: Sequence[Detections], out_dir: str | Path, *,
                         conf: float = 0.25, iou_threshold: float = 0.5, missing_conf: float = 0.5,
                         rank_by: str = "sum", n_overlays: int = 6, top_k: int = 12,
                         truth: pd.DataFrame | None = None, missing_classes: Sequence[str] | None = None,
                         source: str | Path | None = None) -> dict[str, Path]:
    """Every table and figure of the analysis for these records and detections, into ``out_dir``:
    per_class.csv, boxes_per_image.csv/png, overlays.png, missing_candidates.csv, missing_ranked.csv,
    missing_thumbnails.png, and with ``truth``: missing_finder_score.csv (without, an earlier one is removed: it
    scored other images). ``source``: the split analysed, whose provenance ``source.json`` records. Returns
    name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    provenance.forget(out)
    detections = list(detections)
    written: dict[str, Path] = {}
    table = per_class_table(records, detections, conf=conf, iou_threshold=iou_threshold)
    written["per_class"] = atomic_write_csv(table, out / "per_class.csv")
    counts = boxes_per_image(records, detections, conf=conf)
    written["boxes_per_image"] = atomic_write_csv(counts, out / "boxes_per_image.csv")
    written["boxes_per_image_png"] = atomic_write_figure(plot_boxes_per_image(counts), out / "boxes_per_image.png",
                                                         dpi=FIGURE_DPI)
    chosen = choose_overlay_images(counts, n_overlays)
    if chosen:
        fig = plot_overlays(records, detections, chosen, conf=conf)
        written["overlays_png"] = atomic_write_figure(fig, out / "overlays.png", dpi=FIGURE_DPI)
    candidates = missing_label_candidates(records, detections, conf=missing_conf, iou_threshold=iou_threshold,
                                          classes=missing_classes)
    ranked = rank_missing_label_images(candidates, by=rank_by)
    if truth is not None:
        candidates = match_candidates_to_truth(candidates, truth, iou_threshold)
        searched = [r.image_id for r in records if missing_classes is None or r.label in missing_classes]
        finder = score_missing_label_finder(candidates, ranked, truth, image_ids=searched,
                                            iou_threshold=iou_threshold)
        written["missing_finder_score"] = atomic_write_csv(finder, out / "missing_finder_score.csv")
    else:
        (out / "missing_finder_score.csv").unlink(missing_ok=True)
    written["missing_candidates"] = atomic_write_csv(candidates, out / "missing_candidates.csv")
    written["missing_ranked"] = atomic_write_csv(ranked, out / "missing_ranked.csv")
    written["missing_thumbnails_png"] = atomic_write_figure(
        plot_missing_label_thumbnails(records, candidates, ranked, top_k=top_k), out / "missing_thumbnails.png",
        dpi=FIGURE_DPI)
    settings = {"conf": conf, "iou": iou_threshold, "missing_conf": missing_conf, "rank_by": rank_by,
                "missing_classes": list(missing_classes) if missing_classes is not None else None,
                "images": len(records), "detections": int(sum(len(d) for d in detections))}
    written["settings"] = atomic_write_text(out / "settings.json", json.dumps(settings, indent=2))
    written["source"] = provenance.record_derived(out, source, "livestock analyze")
    return written


def analysis_inputs(weights: str | Path, prepared_dir: str | Path = paths.PREPARED_DIR,
                    split_dir: str | Path = paths.SPLITS_DIR / "multilabel", *, subset: str = "val",
                    imgsz: int = 640, det_conf: float = 0.001, nms_iou: float = 0.6, device: str = "auto",
                    cache_dir: str | Path | None = "runs/cache") -> tuple[list[ImageRecord], list[Detections]]:
    """The split's ``subset`` records (from ``<prepared_dir>/records.jsonl``) and ``weights``' detections on them."""
    from livestock.evaluation.detect import detect

    provenance.require_current(prepared_dir, split_dir)
    records = select_records(load_records(Path(prepared_dir) / "records.jsonl"), split_image_ids(split_dir, subset),
                             where=str(Path(split_dir) / f"{subset}.txt"))
    emit("images", task=f"detect ({subset})", done=0, total=len(records))
    detections = detect(weights, list(records), imgsz=imgsz, conf=det_conf, iou=nms_iou,
                        device=device, cache_dir=cache_dir)
    emit("images", task=f"detect ({subset})", done=len(records), total=len(records))
    return records, list(detections)


def default_truth_csv(prepared_dir: str | Path, truth_csv: str | Path | None = None) -> Path | None:
    """The truth file that may score the prepared set's images: ``truth_csv`` (default: ``synth_truth.csv`` in the
    data folder the set was prepared from) when its record says it was written for exactly those zips
    (:func:`livestock.provenance.ground_truth_for`). None when there is no such file or it belongs to other images;
    ``""`` asks for none; a ``truth_csv`` named explicitly that belongs to other images is a ValueError."""
    if truth_csv == "":
        return None
    if truth_csv is None:
        record = provenance.read_record(prepared_dir)
        data = Path(prepared_dir, record["data"]) if record and record.get("data") else Path(prepared_dir).parent
        data = Path(os.path.normpath(data))
        candidate = data / paths.SYNTH_TRUTH.name
        found = provenance.ground_truth_for(candidate, prepared_dir) if candidate.is_file() else None
        return found.path if found else None
    found = provenance.ground_truth_for(truth_csv, prepared_dir)
    if not found:
        raise ValueError(found.reason)
    return found.path


def run_error_analysis(weights: str | Path, prepared_dir: str | Path = paths.PREPARED_DIR,
                       split_dir: str | Path = paths.SPLITS_DIR / "multilabel", out_dir: str | Path = "runs/analysis",
                       *, subset: str = "val", imgsz: int = 640, det_conf: float = 0.001, nms_iou: float = 0.6,
                       conf: float = 0.25, iou_threshold: float = 0.5, missing_conf: float = 0.5,
                       rank_by: str = "sum", truth_csv: str | Path | None = None, device: str = "auto",
                       cache_dir: str | Path | None = "runs/cache", n_overlays: int = 6, top_k: int = 12,
                       missing_classes: Sequence[str] | None = None) -> dict[str, Path]:
    """Run ``weights`` on the split's ``subset`` images (``det_conf`` / ``nms_iou``: the detector's own
    thresholds, low so that the APs see the whole precision-recall curve) and write the analysis to
    ``out_dir`` (see :func:`write_error_analysis`). ``truth_csv``: the synthetic truth, to score the
    missing-label finder, used only when written for the zips the prepared set came from; default
    ``synth_truth.csv`` in that data folder (see :func:`default_truth_csv`)."""
    # the truth file first: a wrong one fails before the detection, not after
    truth_csv = default_truth_csv(prepared_dir, truth_csv)
    truth = load_truth(truth_csv) if truth_csv is not None else None
    records, detections = analysis_inputs(weights, prepared_dir, split_dir, subset=subset, imgsz=imgsz,
                                          det_conf=det_conf, nms_iou=nms_iou, device=device, cache_dir=cache_dir)
    return write_error_analysis(records, detections, out_dir, conf=conf, iou_threshold=iou_threshold,
                                missing_conf=missing_conf, rank_by=rank_by, n_overlays=n_overlays, top_k=top_k,
                                truth=truth, missing_classes=missing_classes, source=split_dir)


# ---------------------------------------------------------------- CLI: livestock analyze


def cli_analyze_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock analyze`` to ``parser``."""
    parser.add_argument("--weights", required=True, help="trained weights of either engine (.pt; only files you trust)")
    parser.add_argument("--prepared", default=str(paths.PREPARED_DIR), help="prepared dataset (records.jsonl)")
    parser.add_argument("--split", default=str(paths.SPLITS_DIR / "multilabel"), help="split folder (val.txt)")
    parser.add_argument("--subset", default="val", help="which list of the split to analyse (default val)")
    parser.add_argument("--out", default="runs/analysis", help="output folder for CSV + PNG")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--det-conf", type=float, default=0.001, help="detector confidence threshold")
    parser.add_argument("--nms-iou", type=float, default=0.6, help="detector NMS IoU")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence at which P and R are stated")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU of a match for P / R and missing labels")
    parser.add_argument("--missing-conf", type=float, default=0.5,
                        help="a prediction this confident matching no label is a missing-label candidate")
    parser.add_argument("--rank-by", choices=("sum", "max"), default="sum")
    parser.add_argument("--missing-classes", default="",
                        help="look for missing labels only in images of these classes, e.g. cow (default: all)")
    parser.add_argument("--truth", default=None, help="synth_truth.csv to score the missing-label finder (only "
                                                      "when written for the zips the prepared set came from)")
    parser.add_argument("--cache-dir", default="runs/cache",
                        help="detector raw-candidate cache folder (runs/cache); 'none' to keep nothing on disk")


def cli_analyze(args: argparse.Namespace) -> int:
    """Run ``livestock analyze`` with parsed ``args``; returns the exit code."""
    # settings no analysis can take fail before the model loads
    thresholds = {"--conf": args.conf, "--missing-conf": args.missing_conf}
    # the detector keeps only candidates above its threshold, and none is above 1
    outside = [f"--det-conf {args.det_conf}"] if not 0 <= args.det_conf < 1 else []
    outside += [f"{k} {v}" for k, v in thresholds.items() if not 0 <= v <= 1]
    outside += [f"{k} {v}" for k, v in (("--nms-iou", args.nms_iou), ("--iou", args.iou)) if not 0 < v <= 1]
    if outside or args.imgsz < 32:
        raise ValueError(f"{', '.join(outside) or f'--imgsz {args.imgsz}'}: confidences lie in [0, 1] (--det-conf "
                         f"below 1), IoUs in (0, 1], --imgsz is at least 32")
    unknown = {c.strip() for c in args.missing_classes.split(",") if c.strip()} - set(CLASS_NAMES)
    if unknown:
        raise ValueError(f"--missing-classes {args.missing_classes!r}: classes are {', '.join(CLASS_NAMES)}")
    written = run_error_analysis(
        args.weights, args.prepared, args.split, args.out, subset=args.subset, imgsz=args.imgsz,
        det_conf=args.det_conf, nms_iou=args.nms_iou, conf=args.conf, iou_threshold=args.iou,
        missing_conf=args.missing_conf, rank_by=args.rank_by, truth_csv=args.truth, device=args.device,
        cache_dir=None if args.cache_dir.strip().lower() in ("", "none") else args.cache_dir,
        missing_classes=[c.strip() for c in args.missing_classes.split(",") if c.strip()] or None)
    table = read_csv(written["per_class"])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if "missing_finder_score" in written:
        print(read_csv(written["missing_finder_score"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"written to {Path(args.out)}: " + ", ".join(sorted(p.name for p in written.values())))
    return 0
