"""NMS IoU x confidence tuning from cached raw candidates, with test-time augmentation and box fusion as further
dimensions.

A peer entry tuned its inference thresholds by running the detector once per setting: 10 confidences
(0.0001 ... 0.001) x 21 NMS IoU values (0.30 ... 0.70), 210 full inference passes. Here the detector runs once
(:func:`livestock.evaluation.detect.collect_candidates`), and every setting is computed from the cached candidates with
one NMS per IoU value and a filter per confidence (:func:`livestock.evaluation.detect.grid_detections`), each setting
identical to what YOLOv5 would have produced. Each setting is scored with the contest metric
(:func:`livestock.evaluation.metrics.mean_average_precision_for_boxes`, mAP at IoU 0.75 by default). The original
entry's own setting (conf 0.001, NMS IoU 0.68) lies inside that grid and is marked in the table.

With ``--tta`` the detector also runs once with the engine's test-time augmentation (its augmented forward, three
views; a cache of its own), and the grid gains two cells, each over every (conf, IoU): **TTA + NMS**, one NMS over
all views (the engine's own augmented inference), and **TTA + WBF**, each view's NMS then weighted boxes fusion of
the views (:mod:`livestock.evaluation.fusion`). The one-pass cell (TTA off, NMS) is the grid without ``--tta``,
unchanged. WBF without TTA does not exist (one pass has no views to fuse). Every cell's setting is what a direct
run of it would give (each view's NMS is the exact replay; WBF is ``ensemble-boxes``' own function).

Outputs of :func:`write_tuning` in ``runs/tune/<name>/``: ``scores.csv`` (one row per setting: ``tta``, ``fusion``,
``conf``, ``iou``, scores), ``best.json`` (the best setting, the original's score, the grid) and ``heatmap.png``
(one panel per (TTA, fusion) cell).

Best setting, ties: the highest mAP; among equal mAP the cheaper inference (TTA off before on, then NMS before
WBF); then the setting writing the fewest detections (the smaller submission); then the higher confidence; then the
lower NMS IoU.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import pandas as pd

from livestock.evaluation.metrics import CONTEST_IOU, mean_average_precision_for_boxes
from livestock.evaluation.detect import (DEFAULT_CONF_FLOOR, CandidateFiles, Candidates, add_detector_args,
                                         cache_dir_arg, check_detector_args, collect_candidates, resolve_images)
from livestock.evaluation.fusion import FUSIONS, check_fusion, grid_fused_detections, setting_name
from livestock.evaluation.nms_replay import DEFAULT_MAX_DET, GridStats
from livestock.fileio import atomic_write_csv, atomic_write_figure, atomic_write_text
from livestock.progress import emit
from livestock.records import ImageRecord, load_records
from livestock.evaluation.submission import (NORMALISATION_HELP, NORMALISATIONS, detections_to_submission,
                                             normalisation, read_answer, records_to_answer, require_boxes)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

# The peer entry's grid, as the nearest doubles to the decimals (np.arange would give 0.30000000000000004 etc.).
DEFAULT_CONFS: tuple[float, ...] = tuple(round(0.0001 * k, 4) for k in range(1, 11))
DEFAULT_IOUS: tuple[float, ...] = tuple(round(0.30 + 0.02 * k, 2) for k in range(21))
ORIGINAL_SETTING: tuple[float, float] = (0.001, 0.68)  # (conf, NMS IoU) of the original entry's answer file

SCORE_COLUMNS = ("tta", "fusion", "conf", "iou", "map", "n_detections", "original")
ONE_PASS_CELLS: tuple[tuple[bool, str], ...] = ((False, "nms"),)  # (tta, fusion) of the grid without TTA
TTA_CELLS: tuple[tuple[bool, str], ...] = tuple((True, f) for f in FUSIONS)  # what --tta adds


def grid_settings(confs: Sequence[float] = DEFAULT_CONFS, ious: Sequence[float] = DEFAULT_IOUS,
                  extra: Iterable[tuple[float, float]] = (ORIGINAL_SETTING,)) -> list[tuple[float, float]]:
    """Every (conf, iou) of ``confs`` x ``ious``, then the ``extra`` settings not already in it."""
    settings = [(float(c), float(t)) for t in ious for c in confs]
    for c, t in extra:
        if (float(c), float(t)) not in settings:
            settings.append((float(c), float(t)))
    if not settings:
        raise ValueError("empty tuning grid: give at least one confidence and one IoU")
    for c, t in settings:
        if not (0.0 <= c <= 1.0 and 0.0 <= t <= 1.0):
            raise ValueError(f"setting conf={c}, iou={t}: both must lie in [0, 1]")
    return settings


def _image_ids(cache: Sequence[Candidates]) -> list[str]:
    return cache.image_ids() if isinstance(cache, CandidateFiles) else [c.image_id for c in cache]


def _answer_for(cache: Sequence[Candidates], answer: str | Path | pd.DataFrame) -> pd.DataFrame:
    ann = read_answer(answer)
    ids = set(_image_ids(cache))
    kept = ann[ann["ImageID"].isin(ids)].reset_index(drop=True)
    if len(kept) == 0:
        where = answer if not isinstance(answer, pd.DataFrame) else "answer frame"
        raise ValueError(f"{where}: none of its {ann['ImageID'].nunique()} images is among the {len(ids)} detected")
    kept.attrs["dropped_images"] = int(ann["ImageID"].nunique() - kept["ImageID"].nunique())
    return kept


def tune_thresholds(cache: Sequence[Candidates], answer: str | Path | pd.DataFrame,
                    confs: Sequence[float] = DEFAULT_CONFS, ious: Sequence[float] = DEFAULT_IOUS,
                    metric_iou: float = CONTEST_IOU, *,
                    extra_settings: Iterable[tuple[float, float]] = (ORIGINAL_SETTING,),
                    max_det: int = DEFAULT_MAX_DET, agnostic: bool = False, multi_label: bool = False,
                    normalise_by: Mapping[str, tuple[int, int]] | None = None, progress: bool = True,
                    tta_cache: Sequence[Candidates] | None = None, tta_fusions: Sequence[str] = FUSIONS
                    ) -> pd.DataFrame:
    """Score every (conf, NMS IoU) setting on the cached candidates against ``answer`` (ground truth: CSV path or
    DataFrame in the contest answer format). The answer is restricted to the cached images (answer images that
    were not detected on would count as misses for every setting alike). With ``tta_cache`` (the same images'
    candidates collected with TTA) every setting is also scored with TTA, its views fused by each of
    ``tta_fusions`` (NMS and WBF by default; WBF, one call per image and setting, is the slow one).

    Returns one row per setting, sorted by TTA, fusion, IoU then conf: ``tta``, ``fusion``, ``conf``, ``iou``,
    ``map`` (contest mAP at ``metric_iou``), ``ap_<class>`` per class of the answer, ``n_detections`` (rows of the
    submission), ``original`` (the original entry's setting: one pass, NMS, conf 0.001, IoU 0.68). ``table.attrs``
    holds ``metric_iou``, the grid statistics of each cell and ``dropped_images``."""
    ann = _answer_for(cache, answer)
    settings = grid_settings(confs, ious, extra_settings)
    cells = [(tta, fusion, cache) for tta, fusion in ONE_PASS_CELLS]
    if tta_cache is not None:
        if _image_ids(tta_cache) != _image_ids(cache):
            raise ValueError("the TTA candidates are not of the same images, in the same order, as the one-pass ones")
        if not tta_fusions:
            raise ValueError("TTA candidates given but no fusion to score them with (nms, wbf)")
        for fusion in tta_fusions:
            check_fusion(True, fusion)
        cells += [(tta, fusion, tta_cache) for tta, fusion in TTA_CELLS if fusion in tta_fusions]
    grids: dict[str, dict] = {}
    rows = []
    for tta, fusion, cands in cells:
        stats = GridStats()
        for conf, iou, dets in grid_fused_detections(cands, settings, fusion, max_det=max_det, agnostic=agnostic,
                                                     multi_label=multi_label, progress=progress, stats=stats):
            sub = detections_to_submission(dets, normalise_by=normalise_by)
            score, aps = mean_average_precision_for_boxes(ann, sub, iou_threshold=metric_iou)
            row = {"tta": tta, "fusion": fusion, "conf": conf, "iou": iou, "map": float(score),
                   "n_detections": len(sub), "original": not tta and (conf, iou) == ORIGINAL_SETTING}
            row.update({f"ap_{label}": float(ap) for label, (ap, _n) in sorted(aps.items())})
            rows.append(row)
            emit("settings", task="tuning NMS IoU x conf", done=len(rows), total=len(settings) * len(cells))
        grids[setting_name(tta, fusion)] = vars(stats)
    table = pd.DataFrame(rows)
    ap_cols = sorted(c for c in table.columns if c.startswith("ap_"))
    table = table[["tta", "fusion", "conf", "iou", "map", *ap_cols, "n_detections", "original"]]
    table = table.sort_values(["tta", "fusion", "iou", "conf"], kind="stable").reset_index(drop=True)
    table.attrs.update(metric_iou=float(metric_iou), dropped_images=ann.attrs["dropped_images"],
                       images=len(cache), grid=grids)
    return table


def best_setting(table: pd.DataFrame) -> pd.Series:
    """The row of the best setting: highest ``map``; ties by the cheaper inference (``tta`` off, then ``fusion``
    nms), then fewest ``n_detections``, then higher ``conf``, then lower ``iou`` (see the module docstring)."""
    if table.empty:
        raise ValueError("empty score table")
    order = table.assign(_neg_map=-table["map"], _wbf=table["fusion"] == "wbf", _neg_conf=-table["conf"]).sort_values(
        ["_neg_map", "tta", "_wbf", "n_detections", "_neg_conf", "iou"], kind="stable")
    return table.loc[order.index[0]]


def _cells(table: pd.DataFrame) -> list[tuple[bool, str]]:
    """The (tta, fusion) cells of a score table, in grid order."""
    present = set(zip(table["tta"].astype(bool), table["fusion"]))
    return [c for c in (*ONE_PASS_CELLS, *TTA_CELLS) if c in present]


def plot_heatmap(table: pd.DataFrame, title: str | None = None) -> "Figure":
    """mAP over the grid (NMS IoU down, confidence across), one panel per (TTA, fusion) cell on one colour scale,
    the best setting starred, the original ringed. Returns a matplotlib Figure (drawn without pyplot, so no global
    state changes)."""
    from matplotlib.figure import Figure

    cells = _cells(table)
    n_confs, n_ious = table["conf"].nunique(), table["iou"].nunique()
    fig = Figure(figsize=(0.4 + (0.8 + 0.75 * n_confs) * len(cells) + 0.8, 2.4 + 0.32 * n_ious), dpi=110,
                 layout="constrained")
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=True)[0]
    vmin, vmax = float(table["map"].min()), float(table["map"].max())
    metric = table.attrs.get("metric_iou", CONTEST_IOU)
    best = best_setting(table)
    for ax, (tta, fusion) in zip(axes, cells):
        part = table[(table["tta"] == tta) & (table["fusion"] == fusion)]
        grid = part.pivot_table(index="iou", columns="conf", values="map", aggfunc="first").sort_index()
        im = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", origin="lower", vmin=vmin, vmax=vmax)
        ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns], rotation=60, fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [f"{t:g}" for t in grid.index], fontsize=7)
        ax.set_xlabel("confidence threshold")
        ax.set_title(setting_name(tta, fusion), fontsize=9)
        cols, idx = list(grid.columns), list(grid.index)
        if (bool(best["tta"]), best["fusion"]) == (tta, fusion) and best["conf"] in cols and best["iou"] in idx:
            ax.plot(cols.index(best["conf"]), idx.index(best["iou"]), marker="*", color="red", markersize=13,
                    linestyle="none", label=f"best {best['map']:.4f} ({setting_name(tta, fusion)}, "
                                            f"conf {best['conf']:g}, IoU {best['iou']:g})")
        orig = part[part["original"]]
        if len(orig) and orig.iloc[0]["conf"] in cols and orig.iloc[0]["iou"] in idx:
            o = orig.iloc[0]
            ax.plot(cols.index(o["conf"]), idx.index(o["iou"]), marker="o", markerfacecolor="none", color="white",
                    markersize=11, linestyle="none",
                    label=f"original {o['map']:.4f} (conf {o['conf']:g}, IoU {o['iou']:g})")
    axes[0].set_ylabel("NMS IoU threshold")
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]  # best and original: one legend
    fig.legend(handles=handles, loc="outside lower center", ncols=max(len(handles), 1), fontsize=7, frameon=False)
    fig.colorbar(im, ax=list(axes), label=f"mAP@{metric:g}")
    fig.suptitle(title or f"mAP@{metric:g} over NMS settings", fontsize=9)
    return fig


def write_tuning(table: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """``scores.csv``, ``best.json`` and ``heatmap.png`` under ``out_dir``, each written atomically."""
    out = Path(out_dir)
    best = best_setting(table)
    orig = table[table["original"]]
    summary = {
        "best": {"tta": bool(best["tta"]), "fusion": str(best["fusion"]), "conf": float(best["conf"]),
                 "iou": float(best["iou"]), "map": float(best["map"]), "n_detections": int(best["n_detections"])},
        "original": None if orig.empty else {"conf": float(orig.iloc[0]["conf"]), "iou": float(orig.iloc[0]["iou"]),
                                             "map": float(orig.iloc[0]["map"])},
        "metric_iou": float(table.attrs.get("metric_iou", CONTEST_IOU)),
        "settings": int(len(table)),
        "cells": [{"tta": tta, "fusion": fusion} for tta, fusion in _cells(table)],
        "confs": sorted(float(c) for c in table["conf"].unique()),
        "ious": sorted(float(t) for t in table["iou"].unique()),
        "tie_rule": "highest map, then tta off, then nms before wbf, then fewest detections, then higher conf, "
                    "then lower iou",
        "images": table.attrs.get("images"),
        "answer_images_not_detected": table.attrs.get("dropped_images"),
        "grid": table.attrs.get("grid"),
    }
    return {
        "scores": atomic_write_csv(table, out / "scores.csv"),
        "best": atomic_write_text(out / "best.json", json.dumps(summary, indent=2) + "\n"),
        "heatmap": atomic_write_figure(plot_heatmap(table), out / "heatmap.png"),
    }


def run_tuning(weights: str | Path, images: str | Path | Sequence[str | Path | ImageRecord], out_dir: str | Path,
               answer: str | Path | pd.DataFrame | None = None, *, imgsz: int = 640,
               confs: Sequence[float] = DEFAULT_CONFS, ious: Sequence[float] = DEFAULT_IOUS,
               metric_iou: float = CONTEST_IOU, max_det: int = DEFAULT_MAX_DET, agnostic: bool = False,
               multi_label: bool = False, normalise_by: Mapping[str, tuple[int, int]] | None = None,
               device: str = "auto", cache_dir: str | Path | None = "runs/cache", batch: int = 1,
               conf_floor: float = DEFAULT_CONF_FLOOR, progress: bool = True, tta: bool = False,
               tta_fusions: Sequence[str] = FUSIONS) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Detect once (cached), tune, write; with ``tta`` also detect once with test-time augmentation (a cache of its
    own) and score its cells, one per fusion of ``tta_fusions`` (TTA + NMS, TTA + WBF). Ground truth: ``answer``
    or, when ``images`` are prepared records (a ``records.jsonl`` or ``ImageRecord`` objects), their boxes."""
    for fusion in tta_fusions if tta else ():
        check_fusion(True, fusion)  # refused before any detection runs
    grid_settings(confs, ious)  # so are a grid and a metric IoU that cannot be scored, and an unreadable answer
    if not 0 < metric_iou <= 1:
        raise ValueError(f"metric IoU {metric_iou}: must lie in (0, 1]")
    resolve_images(images)  # a missing or empty source fails here, named, before the ground truth is looked for
    source_of_answer = "the answer" if isinstance(answer, pd.DataFrame) else answer or images
    if answer is not None and not isinstance(answer, pd.DataFrame):
        answer = read_answer(answer)
    if answer is None:
        if isinstance(images, (str, Path)) and Path(images).suffix == ".jsonl":
            answer = records_to_answer(load_records(images))
        elif not isinstance(images, (str, Path)) and all(isinstance(r, ImageRecord) for r in images):
            answer = records_to_answer(images)  # type: ignore[arg-type]
        else:
            raise ValueError(f"{images}: no ground truth: give an answer CSV, or prepared records (records.jsonl)")
    require_boxes(answer, str(source_of_answer), "no answer rows")
    floor = min(conf_floor, *confs, ORIGINAL_SETTING[0])  # the cache must serve every setting of the grid
    caches = [collect_candidates(weights, images, imgsz, conf_floor=floor, device=device, cache_dir=cache_dir,
                                 batch=batch, progress=progress, in_memory=False, tta=augment)
              for augment in ((False, True) if tta else (False,))]
    emit("images", task="detect (tuning)", done=len(caches[0]), total=len(caches[0]))
    table = tune_thresholds(caches[0], answer, confs, ious, metric_iou, max_det=max_det, agnostic=agnostic,
                            multi_label=multi_label, normalise_by=normalise_by, progress=progress,
                            tta_cache=caches[1] if tta else None, tta_fusions=tta_fusions)
    return table, write_tuning(table, out_dir)


# ---------------------------------------------------------------- CLI: livestock tune


def cli_tune_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock tune`` to ``parser``."""
    parser.add_argument("--images", required=True,
                        help="validation images: a prepared records.jsonl (ground truth included), a folder, "
                             "a .txt list, or one image")
    parser.add_argument("--answer", help="ground truth in the contest answer format (needed unless --images "
                                         "is a records.jsonl)")
    add_detector_args(parser)
    parser.add_argument("--out", default="runs/tune/exp", help="output folder (runs/tune/exp)")
    parser.add_argument("--confs", type=float, nargs="+", default=list(DEFAULT_CONFS),
                        help="confidence thresholds (0.0001 ... 0.001, step 0.0001)")
    parser.add_argument("--ious", type=float, nargs="+", default=list(DEFAULT_IOUS),
                        help="NMS IoU thresholds (0.30 ... 0.70, step 0.02)")
    parser.add_argument("--metric-iou", type=float, default=CONTEST_IOU, help="IoU of the contest metric (0.75)")
    parser.add_argument("--normalise", choices=NORMALISATIONS, default="image", help=NORMALISATION_HELP)
    parser.add_argument("--tta", action="store_true",
                        help="also score test-time augmentation as grid dimensions: TTA on with NMS over its views "
                             "and with weighted boxes fusion (WBF) of them (one more, augmented, detector pass; "
                             "PyTorch checkpoints only)")
    parser.add_argument("--fusions", nargs="+", choices=FUSIONS, default=None,
                        help="with --tta: the fusions of its views to score (default: nms wbf; WBF, once per image "
                             "and setting, is the slow one)")


def cli_tune(args: argparse.Namespace) -> int:
    """Run ``livestock tune`` with parsed ``args``; returns the exit code."""
    if args.fusions is not None and not args.tta:
        raise ValueError("--fusions chooses how the views of --tta are fused: give --tta too")
    check_detector_args(args)
    table, written = run_tuning(
        args.weights, args.images, args.out, args.answer, imgsz=args.imgsz, confs=args.confs, ious=args.ious,
        metric_iou=args.metric_iou, max_det=args.max_det, agnostic=args.agnostic, multi_label=args.multi_label,
        normalise_by=normalisation(args.normalise), device=args.device,
        cache_dir=cache_dir_arg(args.cache_dir), batch=args.batch, conf_floor=args.conf_floor, tta=args.tta,
        tta_fusions=args.fusions or FUSIONS)
    best = best_setting(table)
    metric = table.attrs["metric_iou"]
    print(f"{len(table)} settings scored on {table.attrs['images']} images")
    for tta, fusion in _cells(table):
        top = best_setting(table[(table["tta"] == tta) & (table["fusion"] == fusion)])
        print(f"{setting_name(tta, fusion)}: best conf {top['conf']:g}, NMS IoU {top['iou']:g} -> "
              f"mAP@{metric:g} {top['map']:.5f}")
    print(f"best: {setting_name(bool(best['tta']), best['fusion'])}, conf {best['conf']:g}, NMS IoU {best['iou']:g} "
          f"-> mAP@{metric:g} {best['map']:.5f}")
    orig = table[table["original"]]
    if len(orig):
        print(f"original (conf {ORIGINAL_SETTING[0]:g}, NMS IoU {ORIGINAL_SETTING[1]:g}): {orig.iloc[0]['map']:.5f}")
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
