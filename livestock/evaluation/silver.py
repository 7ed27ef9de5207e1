"""Silver (pseudo-label) training data: a trained detector relabels the cow training images.

The real cow labels miss many visible cows. The original entry let its model predict on every cow training image
(confidence 0.05, NMS IoU 0.7), kept the images with at least 4 predicted boxes and added them, with the
predictions as their labels, to the training set beside the gold copies. Two ways to merge are built here:

- ``replace`` (the original's rule): the predictions become the image's labels; the plus set holds the gold image
  *and* this silver copy.
- ``union``: the gold boxes plus every predicted box that overlaps no gold box of the image (IoU below
  ``merge_iou``); the result contains all gold boxes, so it takes the gold copy's place (no second copy).

Each image shows one species, so a silver box takes the image's class whatever class the model predicted.

The plus dataset is a folder of its own: ``images/`` (relative symlinks to the prepared JPEGs, or hard links /
copies where links are not possible: YOLOv5 finds labels by replacing ``/images/`` with ``/labels/`` in the path,
so the silver copy of an image needs a path of its own), ``labels/``, ``train.txt``, ``records.jsonl``,
``manifest.csv`` and a ``data.yaml`` whose ``val`` (and ``test``) are the split's own lists. Only images of the
split's training list are relabelled, and :func:`check_no_leakage` refuses a plus set in which any validation or
test image (by image id) would enter training.

Background frames (``n_backgrounds``): images without animals, with empty label files, to cut false positives;
they join every set built, and the ``gold`` set holds them without any silver box (their effect alone).
The synthetic generator draws every frame with animals, and blanking animals out of a frame leaves patches a
detector learns to read, so two sources are offered instead:

- ``crops`` (default, works on real data): the largest region of a training frame that is clear of every gold
  box and every predicted box, saved as an image of its own. Predictions are avoided too because the cow labels
  are incomplete: a region clear of labels alone may hold an unlabelled cow, which would teach the very error
  the silver labels fight.
- ``render`` (synthetic set only): empty barn frames drawn by the synthetic generator's scene renderer with the
  animals taken out (:func:`render_background`); out of domain for real footage.

:func:`silver_quality` measures, on the synthetic set whose left-out cow boxes are known (``synth_truth.csv``),
how many left-out cows each mode recovers and how many of the boxes it adds are wrong.
:func:`livestock.experiments.training_sets.compare_training_sets` trains gold-only and gold + silver under one budget
and scores each on the test set.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from livestock import paths, provenance
from livestock.evaluation.analysis import (
    default_truth_csv,
    load_truth,
    max_iou,
    normalise_truth,
    select_records,
    split_image_ids,
)
from livestock.evaluation.detect import detect, resolve_images
from livestock.fileio import atomic_write_csv, atomic_write_text, read_csv
from livestock.progress import emit
from livestock.records import (
    Detections,
    ImageRecord,
    load_records,
    save_records,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

MODES: tuple[str, ...] = ("replace", "union")
# The set without silver labels: gold plus background frames only, to measure what background frames do alone.
GOLD_SET = "gold"
SILVER_DIR = paths.DATA_DIR / "silver"
SILVER_SUFFIX = "_silver"
BACKGROUND_PREFIX = "background_"
BACKGROUND_SOURCES: tuple[str, ...] = ("crops", "render")
# The original's settings.
DEFAULT_CONF, DEFAULT_NMS_IOU, DEFAULT_MIN_BOXES = 0.05, 0.7, 4
SWEEP_CONFS: tuple[float, ...] = (0.1, 0.25, 0.5)  # stricter silver confidences measured beside the chosen one


# ---------------------------------------------------------------- merging (pure)


def merge_silver(gold: ImageRecord, det: Detections, mode: str = "replace", *, conf: float = 0.0,
                 min_boxes: int = DEFAULT_MIN_BOXES, merge_iou: float = 0.5) -> ImageRecord | None:
    """The silver labels of one image, or None when fewer than ``min_boxes`` predictions (confidence >= ``conf``)
    remain (the original kept only images with at least 4 predicted boxes).

    ``replace``: the predicted boxes, highest confidence first. ``union``: the gold boxes (all of them, in their
    order) followed by the predicted boxes whose IoU with every gold box is below ``merge_iou``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if det.image_id != gold.image_id:
        raise ValueError(f"detections of {det.image_id} given for record {gold.image_id}")
    d = det.filter(det.scores >= conf).sorted_by_score()
    if len(d) < min_boxes:
        return None
    if mode == "replace":
        boxes = d.boxes
    else:
        new = d.boxes[max_iou(d.boxes, gold.boxes) < merge_iou]
        boxes = np.concatenate([gold.boxes, new], axis=0)
    return ImageRecord(gold.image_id, gold.image_path, gold.width, gold.height, gold.label, boxes)


def build_silver_records(gold: Sequence[ImageRecord], detections: Iterable[Detections], mode: str = "replace", *,
                         conf: float = DEFAULT_CONF, min_boxes: int = DEFAULT_MIN_BOXES,
                         merge_iou: float = 0.5) -> list[ImageRecord]:
    """:func:`merge_silver` over many images; images without detections count as having none."""
    by_id = {d.image_id: d for d in detections}
    out = []
    for r in gold:
        s = merge_silver(r, by_id.get(r.image_id, Detections(r.image_id, r.width, r.height)), mode, conf=conf,
                         min_boxes=min_boxes, merge_iou=merge_iou)
        if s is not None:
            out.append(s)
    return out


def check_no_leakage(train_ids: Iterable[str], held_out: Mapping[str, Iterable[str]]) -> None:
    """ValueError naming the images when any training image id is also in a held-out list (val, test)."""
    train = set(train_ids)
    for name, ids in held_out.items():
        both = sorted(train & set(ids))
        if both:
            raise ValueError(f"{len(both)} {name} image(s) would enter training, e.g. {both[:3]}")


# ---------------------------------------------------------------- quality against known truth (pure)


def silver_quality(gold: Sequence[ImageRecord], silver: Mapping[str, Sequence[ImageRecord]], truth: pd.DataFrame,
                   *, recover_iou: float = 0.75, wrong_iou: float = 0.5, added_iou: float = 0.5) -> pd.DataFrame:
    """How good each silver set is, measured on the synthetic set's known truth.

    ``gold``: every image the model relabelled (e.g. the cow training images), with its gold boxes;
    ``silver``: mode -> the silver records kept (a subset of those images); ``truth``: every true box
    (``image_id, label, x1, y1, x2, y2, labelled``), ``labelled`` False for boxes left out of the labels.

    Per mode: ``left_out`` true boxes missing from the gold labels of ``gold``; ``recovered`` those a silver
    box covers at IoU >= ``recover_iou`` (the contest's 0.75), ``recover_share`` = recovered / left_out (images the
    min-box filter dropped recover nothing); ``added`` silver boxes overlapping no gold box (IoU < ``added_iou``),
    ``wrong`` added boxes matching no true box at IoU >= ``wrong_iou``, ``wrong_share`` = wrong / added;
    ``gold_kept_share``: gold boxes of the silver images that a silver box still covers at ``recover_iou``
    (1 for union; what replace loses)."""
    truth = normalise_truth(truth)
    truth_by_image = {str(k): g for k, g in truth.groupby("image_id", sort=False)}
    gold_by_id = {r.image_id: r for r in gold}
    empty = pd.DataFrame(columns=truth.columns)
    left_out_total = 0
    for r in gold:
        t = truth_by_image.get(r.image_id, empty)
        left_out_total += int((~t["labelled"].astype(bool)).sum())
    rows = []
    for mode, records in silver.items():
        recovered = added = wrong = gold_boxes = gold_kept = 0
        for s in records:
            g = gold_by_id.get(s.image_id)
            if g is None:
                raise ValueError(f"silver image {s.image_id} ({mode}) is not among the gold images")
            t = truth_by_image.get(s.image_id, empty)
            true_boxes = t[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
            left_out = true_boxes[~t["labelled"].to_numpy(bool)]
            recovered += int((max_iou(left_out, s.boxes) >= recover_iou).sum())
            new = s.boxes[max_iou(s.boxes, g.boxes) < added_iou]
            added += len(new)
            wrong += int((max_iou(new, true_boxes) < wrong_iou).sum())
            gold_boxes += g.n_boxes
            gold_kept += int((max_iou(g.boxes, s.boxes) >= recover_iou).sum())
        rows.append({
            "mode": mode, "images": len(gold), "silver_images": len(records),
            "left_out": left_out_total, "recovered": recovered,
            "recover_share": recovered / left_out_total if left_out_total else float("nan"),
            "added": added, "wrong": wrong, "wrong_share": wrong / added if added else float("nan"),
            "gold_boxes": gold_boxes, "gold_kept_share": gold_kept / gold_boxes if gold_boxes else float("nan"),
        })
    return pd.DataFrame(rows, columns=["mode", "images", "silver_images", "left_out", "recovered", "recover_share",
                                       "added", "wrong", "wrong_share", "gold_boxes", "gold_kept_share"])


def silver_threshold_sweep(gold: Sequence[ImageRecord], detections: Sequence[Detections], truth: pd.DataFrame,
                           confs: Sequence[float] = (0.05, 0.1, 0.25, 0.5), modes: Sequence[str] = MODES, *,
                           min_boxes: int = DEFAULT_MIN_BOXES, merge_iou: float = 0.5) -> pd.DataFrame:
    """:func:`silver_quality` of each mode at several silver confidences, from one detector pass at the lowest
    (filtering by confidence after NMS gives what NMS at the higher confidence gives, up to ``max_det``).
    One row per (conf, mode), columns as :func:`silver_quality` with ``conf`` first."""
    parts = []
    for c in confs:
        sets = {m: build_silver_records(gold, detections, m, conf=c, min_boxes=min_boxes, merge_iou=merge_iou)
                for m in modes}
        parts.append(silver_quality(gold, sets, truth).assign(conf=c))
    out = pd.concat(parts, ignore_index=True)
    return out[["conf"] + [c for c in out.columns if c != "conf"]]


# ---------------------------------------------------------------- background frames


def render_background(rng: np.random.Generator, label: str, width: int, height: int) -> np.ndarray:
    """A barn frame without animals (BGR uint8) in the synthetic generator's style
    (:func:`livestock.data.synth.render_empty_frame`), planned at the calibrated full size closest in aspect ratio
    and drawn at ``width`` x ``height``."""
    import cv2

    from livestock.data import synth

    sizes = [tuple(int(v) for v in k.split("_", 1)[1].split("x")) for k in synth.CALIBRATION if k.startswith(label)]
    if not sizes:
        raise ValueError(f"no synthetic scene style for class {label!r}")
    full = min(sizes, key=lambda s: abs(s[0] / s[1] - width / height))
    img = synth.render_empty_frame(label, full, seed=int(rng.integers(2**31)), image_scale=min(1.0, width / full[0]))
    if img.shape[:2] != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return img


def largest_free_rectangle(boxes: np.ndarray, width: int, height: int, margin: float = 0.02, grid: int = 64
                           ) -> tuple[int, int, int, int] | None:
    """The largest axis-aligned rectangle of the frame that touches none of ``boxes`` (each grown by ``margin``
    of the frame's longer side), on a ``grid``-cell lattice along the longer side; None when the frame is full."""
    cell = max(width, height) / grid
    gw, gh = max(1, int(width // cell)), max(1, int(height // cell))
    free = np.ones((gh, gw), dtype=bool)
    pad = margin * max(width, height)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        c0, r0 = max(0, int((x1 - pad) // cell)), max(0, int((y1 - pad) // cell))
        c1, r1 = min(gw, int(np.ceil((x2 + pad) / cell))), min(gh, int(np.ceil((y2 + pad) / cell)))
        free[r0:r1, c0:c1] = False
    best, best_area = None, 0
    heights = np.zeros(gw, dtype=np.int64)
    for r in range(gh):  # largest rectangle under a histogram, one row at a time
        heights = np.where(free[r], heights + 1, 0)
        stack: list[int] = []
        for c in range(gw + 1):
            h = heights[c] if c < gw else 0
            while stack and heights[stack[-1]] >= h:
                top = stack.pop()
                left = stack[-1] + 1 if stack else 0
                area = int(heights[top]) * (c - left)
                if area > best_area:
                    best_area, best = area, (left, r - int(heights[top]) + 1, c, r + 1)
            stack.append(c)
    if best is None:
        return None
    c0, r0, c1, r1 = best
    return int(c0 * cell), int(r0 * cell), min(width, int(c1 * cell)), min(height, int(r1 * cell))


def background_crops(records: Sequence[ImageRecord], detections: Iterable[Detections], n: int, seed: int = 0,
                     min_side: float = 0.25, max_aspect: float = 3.0) -> Iterator[tuple[str, np.ndarray]]:
    """Up to ``n`` animal-free crops of training frames: the largest rectangle clear of every gold box *and*
    every predicted box (so unlabelled cows the model sees are kept out too), when both its sides are at least
    ``min_side`` of the frame's and its aspect ratio at most ``max_aspect``. Yields (source image id, BGR)."""
    import cv2

    rng = np.random.default_rng(seed)
    by_id = {d.image_id: d for d in detections}
    made = 0
    for i in rng.permutation(len(records)):
        if made >= n:
            return
        r = records[int(i)]
        d = by_id.get(r.image_id)
        occupied = np.concatenate([r.boxes, d.boxes]) if d is not None and len(d) else r.boxes
        rect = largest_free_rectangle(occupied, r.width, r.height)
        if rect is None:
            continue
        x1, y1, x2, y2 = rect
        w, h = x2 - x1, y2 - y1
        if w < min_side * r.width or h < min_side * r.height or max(w / h, h / w) > max_aspect:
            continue
        img = cv2.imread(r.image_path, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"{r.image_path}: image not found or unreadable")
        yield r.image_id, np.ascontiguousarray(img[y1:y2, x1:x2])
        made += 1


def rendered_backgrounds(records: Sequence[ImageRecord], n: int, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """``n`` rendered empty frames; each copies the class (barn style) and size of a random training record."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        r = records[int(rng.integers(len(records)))]
        yield "", render_background(rng, r.label, r.width, r.height)


# ---------------------------------------------------------------- the plus dataset


def _link(src: Path, dest: Path) -> str:
    """Relative symlink (survives moving the whole data folder), else a hard link, else a copy."""
    try:
        os.symlink(os.path.relpath(src.resolve(), dest.parent.resolve()), dest)
        return "symlink"
    except OSError:
        pass
    try:
        os.link(src, dest)
        return "hardlink"
    except OSError:
        shutil.copy2(src, dest)
        return "copy"


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully built folder into place, so readers see the old set or the new one, never half of one."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_plus_dataset(gold_train: Sequence[ImageRecord], silver: Sequence[ImageRecord], out_dir: str | Path, *,
                       mode: str, val: str | Path, test: str | Path | None = None,
                       backgrounds: Iterable[tuple[str, np.ndarray]] = ()) -> Path:
    """Write the gold + silver training set to ``out_dir`` and return its ``data.yaml``.

    ``gold_train``: every training record (both classes) with gold labels; ``silver``: silver records of some of
    them (:func:`build_silver_records`); ``val``/``test``: the split's list files (or folders), used as they are
    and checked against leakage. ``replace`` adds each silver image as a second copy ``<stem>_silver.jpg``;
    ``union`` puts the silver labels on the gold copy. ``backgrounds``: (source image id or '', BGR image)
    pairs (:func:`background_crops`, :func:`rendered_backgrounds`), written as ``background_00000.jpg ...``
    with empty label files; a crop's source must be a training image."""
    import cv2

    from tqdm.auto import tqdm

    from livestock.data.yolo_format import label_text, write_data_yaml

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    gold_by_id = {r.image_id: r for r in gold_train}
    stray = [s.image_id for s in silver if s.image_id not in gold_by_id]
    if stray:
        raise ValueError(f"silver image(s) not in the training list: {stray[:3]}")
    held_out = {"validation": _list_ids(val)}
    if test is not None:
        held_out["test"] = _list_ids(test)
    check_no_leakage(gold_by_id, held_out)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        images, labels = tmp / "images", tmp / "labels"
        images.mkdir()
        labels.mkdir()
        silver_by_id = {s.image_id: s for s in silver}
        entries: list[tuple[ImageRecord, str, str, int]] = []  # (record, kind, source id, n gold boxes)
        for r in gold_train:
            s = silver_by_id.get(r.image_id)
            if mode == "union" and s is not None:
                entries.append((s, "silver", r.image_id, r.n_boxes))
            else:
                entries.append((r, "gold", r.image_id, r.n_boxes))
            if mode == "replace" and s is not None:
                name = f"{Path(r.image_id).stem}{SILVER_SUFFIX}{Path(r.image_id).suffix}"
                entries.append((ImageRecord(name, s.image_path, s.width, s.height, s.label, s.boxes),
                                "silver", r.image_id, r.n_boxes))
        plus_records, manifest, link_kinds = [], [], set()
        for rec, kind, source, n_gold in tqdm(entries, desc=f"plus set ({mode})", unit="img", mininterval=0.5):
            src = Path(rec.image_path)
            if not src.is_file():
                raise FileNotFoundError(f"{src}: image of {source} not found")
            link_kinds.add(_link(src, images / rec.image_id))
            (labels / f"{rec.stem}.txt").write_text(label_text(rec), encoding="utf-8")
            final_path = os.path.abspath(out_dir / "images" / rec.image_id)  # never resolve: it is a link
            plus_records.append(ImageRecord(rec.image_id, final_path, rec.width, rec.height, rec.label, rec.boxes))
            manifest.append({"image_id": rec.image_id, "source_image_id": source, "kind": kind,
                             "label": rec.label, "n_boxes": rec.n_boxes, "n_gold": n_gold})
            emit("images", task=f"plus set ({mode})", done=len(manifest), total=len(entries))
        n_backgrounds = 0
        for source, img in backgrounds:
            if source and source not in gold_by_id:
                raise ValueError(f"background crop of {source}, which is not in the training list")
            name = f"{BACKGROUND_PREFIX}{n_backgrounds:05d}"
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise ValueError(f"could not encode background frame {name} (shape {np.shape(img)})")
            (images / f"{name}.jpg").write_bytes(buf.tobytes())
            (labels / f"{name}.txt").write_text("", encoding="utf-8")
            manifest.append({"image_id": f"{name}.jpg", "source_image_id": source, "kind": "background",
                             "label": "", "n_boxes": 0, "n_gold": 0})
            n_backgrounds += 1
        train_paths = [os.path.abspath(out_dir / "images" / m["image_id"]) for m in manifest]
        atomic_write_text(tmp / "train.txt", "\n".join(train_paths) + "\n")
        save_records(plus_records, tmp / "records.jsonl")
        atomic_write_csv(pd.DataFrame(manifest), tmp / "manifest.csv")
        info = {"mode": mode, "gold_images": len(gold_train), "silver_images": len(silver),
                "backgrounds": n_backgrounds, "train_entries": len(train_paths), "links": sorted(link_kinds)}
        atomic_write_text(tmp / "plus.json", json.dumps(info, indent=2))
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # data.yaml last: written in place, since write_data_yaml stores absolute paths of the final folder
    return write_data_yaml(out_dir / "data.yaml", out_dir / "train.txt", val, test)


def _list_ids(list_or_dir: str | Path) -> set[str]:
    """Image ids (file names) of a YOLOv5 list file or image folder."""
    p = Path(list_or_dir)
    if p.is_dir():
        return {q.name for q in p.iterdir() if q.suffix.lower() in (".jpg", ".jpeg", ".png")}
    if not p.is_file():
        raise FileNotFoundError(f"{p}: image list not found")
    return {Path(line.strip()).name for line in p.read_text(encoding="utf-8").splitlines() if line.strip()}


# ---------------------------------------------------------------- reading a plus set back


def load_plus_set(plus_dir: str | Path) -> tuple[list[ImageRecord], pd.DataFrame]:
    """A plus set's training records and its manifest (image_id, source_image_id, kind, label, n_boxes, n_gold)."""
    plus_dir = Path(plus_dir)
    manifest_path = plus_dir / "manifest.csv"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: not a plus set (run `livestock silver` first)")
    manifest = read_csv(manifest_path, keep_default_na=False)
    return load_records(plus_dir / "records.jsonl"), manifest


def silver_records_of(plus_dir: str | Path) -> list[ImageRecord]:
    """The silver records of a plus set, under their source image ids (comparable with the gold records)."""
    records, manifest = load_plus_set(plus_dir)
    by_id = {r.image_id: r for r in records}
    out = []
    for row in manifest[manifest["kind"] == "silver"].itertuples():
        r = by_id[row.image_id]
        out.append(ImageRecord(row.source_image_id, r.image_path, r.width, r.height, r.label, r.boxes))
    return out


def plot_silver_examples(gold: Sequence[ImageRecord], silver: Mapping[str, Sequence[ImageRecord]],
                         image_ids: Sequence[str], truth: pd.DataFrame | None = None, max_side: int = 480
                         ) -> "Figure":
    """One row per image: the gold labels, then each mode's silver labels (boxes not in gold in orange). With
    ``truth``, the boxes left out of the gold labels are drawn dashed in white on every panel."""
    from livestock.evaluation.analysis import GT_COLOUR, MISSING_COLOUR, draw_boxes, read_rgb

    from matplotlib.figure import Figure

    gold_by_id = {r.image_id: r for r in gold}
    modes = list(silver)
    silver_by_mode = {m: {r.image_id: r for r in silver[m]} for m in modes}
    left_out = {}
    if truth is not None:
        t = normalise_truth(truth)
        t = t[~t["labelled"]]
        left_out = {str(k): g[["x1", "y1", "x2", "y2"]].to_numpy(np.float64) for k, g in t.groupby("image_id")}
    ncols = 1 + len(modes)
    fig = Figure(figsize=(3.4 * ncols, 2.2 * max(1, len(image_ids)) + 0.4), layout="constrained")
    axes = fig.subplots(max(1, len(image_ids)), ncols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for row, image_id in enumerate(image_ids):
        g = gold_by_id[image_id]
        img, scale = read_rgb(g.image_path, max_side)
        panels = [("gold", g.boxes, np.zeros((0, 4)))]
        for m in modes:
            s = silver_by_mode[m].get(image_id)
            if s is None:
                panels.append((f"{m}: not kept", np.zeros((0, 4)), np.zeros((0, 4))))
                continue
            new = max_iou(s.boxes, g.boxes) < 0.5
            panels.append((f"{m}: {s.n_boxes} boxes ({int(new.sum())} new)", s.boxes[~new], s.boxes[new]))
        for col, (title, same, new) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img)
            draw_boxes(ax, left_out.get(image_id, np.zeros((0, 4))), scale, "white", linestyle=":")
            draw_boxes(ax, same, scale, GT_COLOUR)
            draw_boxes(ax, new, scale, MISSING_COLOUR)
            ax.set_title(f"{image_id}\n{title}" if col == 0 else title, fontsize=7)
    fig.suptitle("gold vs silver labels (green: as gold, orange: added"
                 + (", dotted white: truly left out)" if truth is not None else ")"), fontsize=9)
    return fig


# ---------------------------------------------------------------- the stage


def training_targets(prepared_dir: str | Path, split_dir: str | Path, classes: Sequence[str] = ("cow",)
                     ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """The split's training records (gold) and those of them to relabel (of ``classes``)."""
    split_dir = Path(split_dir)
    provenance.require_current(prepared_dir, split_dir)
    train = select_records(load_records(Path(prepared_dir) / "records.jsonl"), split_image_ids(split_dir, "train"),
                           where=str(split_dir / "train.txt"))
    targets = [r for r in train if r.label in set(classes)]
    if not targets:
        raise ValueError(f"{split_dir / 'train.txt'}: no training image of class(es) {list(classes)} to relabel")
    return train, targets


# How the settings of build_silver_sets are called on the command line (``livestock silver``).
SILVER_OPTIONS: dict[str, str] = {"conf": "--conf", "nms_iou": "--nms-iou", "min_boxes": "--min-boxes",
                                  "merge_iou": "--merge-iou", "n_backgrounds": "--backgrounds", "imgsz": "--imgsz"}


def check_silver_settings(*, conf: float, nms_iou: float, min_boxes: int, merge_iou: float, n_backgrounds: int = 0,
                          imgsz: int = 640, names: Mapping[str, str] | None = None) -> None:
    """A ValueError naming each setting of :func:`build_silver_sets` that no silver set can take, as ``names`` calls
    it (:data:`SILVER_OPTIONS`: the options the user typed; default the parameter names), before the model loads.
    The confidence stays below 1: the detector keeps only candidates above it, and none is above 1."""
    name = (names or {}).get
    bad = [f"{name(k, k)} {v}" for k, v in (("conf", conf),) if not 0 <= v < 1]
    bad += [f"{name(k, k)} {v}" for k, v in (("nms_iou", nms_iou), ("merge_iou", merge_iou)) if not 0 < v <= 1]
    bad += [f"{name(k, k)} {v}" for k, v in (("min_boxes", min_boxes), ("n_backgrounds", n_backgrounds)) if v < 0]
    bad += [f"{name('imgsz', 'imgsz')} {imgsz}"] if imgsz < 32 else []
    if bad:
        raise ValueError(f"{', '.join(bad)}: the confidence lies in [0, 1), IoUs in (0, 1], box and background "
                         f"counts are 0 or more, the image size is at least 32")


def build_silver_sets(weights: str | Path, prepared_dir: str | Path = paths.PREPARED_DIR,
                      split_dir: str | Path = paths.SPLITS_DIR / "multilabel", out_dir: str | Path = SILVER_DIR, *,
                      modes: Sequence[str] = MODES, classes: Sequence[str] = ("cow",), imgsz: int = 640,
                      conf: float = DEFAULT_CONF, nms_iou: float = DEFAULT_NMS_IOU,
                      min_boxes: int = DEFAULT_MIN_BOXES, merge_iou: float = 0.5, n_backgrounds: int = 0,
                      background_source: str = "crops",
                      test: str | Path | None = None, truth_csv: str | Path | None = None, device: str = "auto",
                      cache_dir: str | Path | None = "runs/cache", seed: int = 0) -> dict[str, Path]:
    """Predict on the split's training images of ``classes``, build one plus set per mode in ``out_dir/<mode>/``
    (mode ``gold``: the gold set plus ``n_backgrounds`` background frames, no silver boxes), and with a truth file
    written for the zips the prepared set came from (default ``synth_truth.csv`` in that data folder, see
    :func:`livestock.evaluation.analysis.default_truth_csv`) write ``out_dir/silver_quality.csv`` and
    ``silver_quality_sweep.csv`` (the same at stricter confidences, from the same predictions) for the silver sets;
    without one, earlier such files are removed (they measured other images). Each plus set records its provenance
    (``source.json``). Returns name -> path (``<mode>`` -> its data.yaml, ``quality``, ``quality_sweep``)."""
    prepared_dir, split_dir, out_dir = Path(prepared_dir), Path(split_dir), Path(out_dir)
    check_silver_settings(conf=conf, nms_iou=nms_iou, min_boxes=min_boxes, merge_iou=merge_iou,
                          n_backgrounds=n_backgrounds, imgsz=imgsz)
    for m in modes:
        if m not in (*MODES, GOLD_SET):
            raise ValueError(f"mode must be one of {(*MODES, GOLD_SET)}, got {m!r}")
    if GOLD_SET in modes and n_backgrounds < 1:
        raise ValueError(f"the {GOLD_SET!r} set is gold plus background frames: give n_backgrounds >= 1 "
                         f"(without them it is the split itself)")
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights not found")
    train, targets = training_targets(prepared_dir, split_dir, classes)
    val_list = split_dir / "val.txt"
    if not val_list.is_file():
        raise FileNotFoundError(f"{val_list}: split list not found (run `livestock split` first)")
    if background_source not in BACKGROUND_SOURCES:
        raise ValueError(f"background source must be one of {BACKGROUND_SOURCES}, got {background_source!r}")
    # The plus sets' data.yaml names these lists: a missing list or image fails here, not after the detection.
    resolve_images(val_list)
    if test is not None:
        resolve_images(test)
    truth_csv = default_truth_csv(prepared_dir, truth_csv)

    # The detector's raw candidates are cached by weights hash and image hash (``cache_dir``), so a rerun with
    # other merge settings costs no network pass.
    emit("images", task="detect (relabel)", done=0, total=len(targets))
    detections = detect(weights, list(targets), imgsz=imgsz, conf=conf, iou=nms_iou,
                        device=device, cache_dir=cache_dir)
    emit("images", task="detect (relabel)", done=len(targets), total=len(targets))
    written: dict[str, Path] = {}
    silver_by_mode = {m: build_silver_records(targets, detections, m, conf=conf, min_boxes=min_boxes,
                                              merge_iou=merge_iou) for m in modes if m != GOLD_SET}
    for m in modes:
        # the gold set is a union set without silver boxes: every gold image once, plus the backgrounds
        written[m] = write_plus_dataset(train, silver_by_mode.get(m, []), out_dir / m,
                                        mode="union" if m == GOLD_SET else m, val=val_list, test=test,
                                        backgrounds=_backgrounds(background_source, train, detections,
                                                                 n_backgrounds, seed))
        provenance.record_derived(out_dir / m, split_dir, "livestock silver", mode=m)
    if truth_csv is None or not silver_by_mode:
        for name in ("silver_quality.csv", "silver_quality_sweep.csv"):
            (out_dir / name).unlink(missing_ok=True)
    else:
        truth = load_truth(truth_csv)
        quality = silver_quality(targets, silver_by_mode, truth)
        written["quality"] = atomic_write_csv(quality, out_dir / "silver_quality.csv")
        confs = sorted({conf, *(c for c in SWEEP_CONFS if c > conf)})
        sweep = silver_threshold_sweep(targets, detections, truth, confs, list(silver_by_mode),
                                       min_boxes=min_boxes, merge_iou=merge_iou)
        written["quality_sweep"] = atomic_write_csv(sweep, out_dir / "silver_quality_sweep.csv")
    return written


def _backgrounds(source: str, train: Sequence[ImageRecord], detections: Sequence[Detections], n: int, seed: int
                 ) -> Iterator[tuple[str, np.ndarray]]:
    if source == "crops":
        return background_crops(train, detections, n, seed=seed)
    if source == "render":
        return rendered_backgrounds(train, n, seed=seed)
    raise ValueError(f"background source must be one of {BACKGROUND_SOURCES}, got {source!r}")


# ---------------------------------------------------------------- CLI: livestock silver


def cli_silver_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock silver`` to ``parser``."""
    parser.add_argument("--weights", required=True, help="trained weights of either engine (.pt; only files you trust)")
    parser.add_argument("--prepared", default=str(paths.PREPARED_DIR), help="prepared dataset (records.jsonl)")
    parser.add_argument("--split", default=str(paths.SPLITS_DIR / "multilabel"),
                        help="split folder: train.txt is relabelled, val.txt stays the validation list")
    parser.add_argument("--out", default=str(SILVER_DIR), help="output folder (one plus set per mode)")
    parser.add_argument("--mode", choices=(*MODES, "both", GOLD_SET), default="both",
                        help="replace, union or both: silver sets; gold: gold + --backgrounds frames, no silver")
    parser.add_argument("--classes", default="cow", help="comma-separated classes to relabel (default cow)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF, help="confidence of a silver box (0.05)")
    parser.add_argument("--nms-iou", type=float, default=DEFAULT_NMS_IOU, help="NMS IoU (0.7)")
    parser.add_argument("--min-boxes", type=int, default=DEFAULT_MIN_BOXES,
                        help="keep images with at least this many predicted boxes (4)")
    parser.add_argument("--merge-iou", type=float, default=0.5,
                        help="union mode: a predicted box is added when its IoU with every gold box is below this")
    parser.add_argument("--backgrounds", type=int, default=0, help="number of empty background frames to add")
    parser.add_argument("--background-source", choices=BACKGROUND_SOURCES, default="crops",
                        help="crops: animal-free regions of training frames; render: synthetic empty barns")
    parser.add_argument("--test", default=None, help="test image list or folder (kept out of training, checked)")
    parser.add_argument("--truth", default=None, help="synth_truth.csv to measure silver quality (only when "
                                                      "written for the zips the prepared set came from)")
    parser.add_argument("--cache-dir", default="runs/cache",
                        help="detector raw-candidate cache folder (runs/cache); 'none' to keep nothing on disk")
    parser.add_argument("--seed", type=int, default=0)


def cli_silver(args: argparse.Namespace) -> int:
    """Run ``livestock silver`` with parsed ``args``; returns the exit code."""
    check_silver_settings(conf=args.conf, nms_iou=args.nms_iou, min_boxes=args.min_boxes, merge_iou=args.merge_iou,
                          n_backgrounds=args.backgrounds, imgsz=args.imgsz, names=SILVER_OPTIONS)
    modes = MODES if args.mode == "both" else (args.mode,)
    written = build_silver_sets(
        args.weights, args.prepared, args.split, args.out, modes=modes,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()], imgsz=args.imgsz, conf=args.conf,
        nms_iou=args.nms_iou, min_boxes=args.min_boxes, merge_iou=args.merge_iou, n_backgrounds=args.backgrounds,
        background_source=args.background_source,
        test=args.test, truth_csv=args.truth, device=args.device, seed=args.seed,
        cache_dir=None if args.cache_dir.strip().lower() in ("", "none") else args.cache_dir)
    for m in modes:
        manifest = read_csv(Path(written[m]).parent / "manifest.csv")
        counts = manifest["kind"].value_counts().to_dict()
        print(f"{m}: {written[m]} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    if "quality_sweep" in written:
        print(read_csv(written["quality_sweep"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0
