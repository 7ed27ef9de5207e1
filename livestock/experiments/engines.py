"""The engine comparison: YOLOv5n, YOLO11n and YOLO26n on the same data, split, budget, threads and metric.

Each model trains on the multilabel split with every seed (:mod:`livestock.experiments.runner`: resumable cells,
the test set scored by the final score's path), then its best weights are exported (ONNX FP32, INT8 with the decode
kept float, OpenVINO IR where the package is installed) and the INT8 file is scored on the same test images the
same way: the INT8 loss is per seed. Latency is a property of the architecture, not of the seed: each model's first
seed's files are timed at batch 1 with ``threads`` CPU threads, all models in one interleaved round
(:func:`livestock.deploy.bench.time_latency`). ``livestock compare engines`` runs it and writes
``rows.csv`` (one row per model and seed), ``table.csv`` / ``table.md`` (mean ± sd over seeds).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from livestock.data.split import pick_evenly
from livestock.deploy.bench import time_latency
from livestock.deploy.export import export_model, file_size_mb
from livestock.deploy.runtime import openvino_available
from livestock.deploy.images import images_from
from livestock.evaluation.detect import detect, weights_sha256
from livestock.evaluation.inference import score_detections
from livestock.experiments.runner import (TEST_CONF, TEST_IOU, GoldSet, Say, TrainingCell, format_mean_sd,
                                          mean_sd, run_cells)
from livestock.fileio import atomic_write_csv, atomic_write_text

DEFAULT_MODELS: tuple[str, ...] = ("yolov5:yolov5n", "ultralytics:yolo11n", "ultralytics:yolo26n")
DEPLOY_FILE = "deploy.json"
N_CALIB = 32  # INT8 calibration images, evenly picked from the training list


def parse_models(text: str | Sequence[str]) -> list[tuple[str, str]]:
    """``engine:model`` items (comma-separated or a list) as (engine, model) pairs."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    pairs = []
    for item in items:
        engine, sep, model = item.partition(":")
        if not sep or not engine or not model:
            raise ValueError(f"model {item!r}: write it as engine:model, e.g. ultralytics:yolo11n")
        pairs.append((engine, model))
    return pairs


def deploy_formats() -> tuple[str, ...]:
    """The exports of every trained model: ONNX FP32 and INT8, and OpenVINO IR when ``openvino`` is installed."""
    return ("onnx", "onnx-int8", *(("openvino",) if openvino_available() else ()))


def deploy_cell(result: dict, cell: TrainingCell, test: GoldSet, folder: Path, *,
                conf: float = TEST_CONF, iou: float = TEST_IOU, say: Say = print) -> dict:
    """Export one trained cell's best weights and score the INT8 file on ``test`` (cached in ``deploy.json``,
    valid while the weights and test set are the same); file sizes in MB and the exported paths."""
    best = Path(result["best"])
    key = {"weights_sha256": weights_sha256(best), "test_sha256": test.fingerprint, "conf": conf, "iou": iou,
           "formats": list(deploy_formats())}
    path = folder / DEPLOY_FILE
    if path.is_file():
        done = json.loads(path.read_text(encoding="utf-8"))
        if done.get("key") == key and all(Path(p).exists() for p in done["files"].values()):
            return done
    say(f"{cell.key}: exporting {', '.join(key['formats'])} and scoring INT8 on the {test.name}")
    calib = pick_evenly(images_from(cell.data_yaml, "train"), N_CALIB)
    imgsz = cell.training.imgsz
    files = export_model(best, imgsz, key["formats"], calib_images=calib, out_dir=folder / "export")
    detections = detect(files["onnx-int8"], list(test.records), imgsz=imgsz, conf=conf, iou=iou, device="cpu",
                        progress=False)
    int8 = score_detections(detections, test.answer)
    out = {"key": key, "files": {f: str(p) for f, p in files.items()},
           **{f"{f}_mb": round(file_size_mb(p), 2) for f, p in files.items()},
           **{f"int8_test_{k}": float(v) for k, v in int8.items()}}
    atomic_write_text(path, json.dumps(out, indent=2) + "\n")
    return out


def compare_engines(data_yaml: str | os.PathLike, test: GoldSet, project: str | os.PathLike, *,
                    models: Sequence[tuple[str, str]] = tuple(parse_models(DEFAULT_MODELS)),
                    seeds: Sequence[int] = (0, 1, 2), epochs: int = 30, imgsz: int = 320, batch: int = 16,
                    weights: dict[str, str] | None = None, device: str = "cpu", workers: int = 2, threads: int = 2,
                    runs: int = 20, repeats: int = 3, say: Say = print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every model with every seed, export and score INT8, time each model's first seed's files; returns
    (rows: one per model and seed, table: mean ± sd per model) and writes both into ``project``. ``weights`` maps
    a model to its start weights (default: all from scratch, the same budget for all)."""
    project = Path(project)
    weights = weights or {}
    cells = [TrainingCell.of(model, data_yaml, engine=engine, seed=int(seed), model=model,
                             weights=weights.get(model) or None, imgsz=imgsz, epochs=epochs, batch_size=batch,
                             device=device, workers=workers)
             for seed in seeds for engine, model in models]  # seed-major: a cut-off run has all models at seed 0
    rows = run_cells(cells, test, project, say=say)
    deployed = []
    for cell, (_, row) in zip(cells, rows.iterrows()):
        d = deploy_cell(row.to_dict(), cell, test, project / cell.key, say=say)
        deployed.append(d)
        for k, v in d.items():
            if k not in ("key", "files"):
                rows.loc[row.name, k] = v
    rows["int8_loss_mAP@0.75"] = rows["test_mAP@0.75"] - rows["int8_test_mAP@0.75"]

    # Latency: one round over every model's first-seed files, interleaved so that a burst of load from elsewhere
    # spreads over all of them.
    files: dict[str, Path] = {}
    for cell, d, best in zip(cells, deployed, rows["best"]):
        if f"{cell.name}|pytorch" not in files:
            files[f"{cell.name}|pytorch"] = Path(best)
            files.update({f"{cell.name}|{fmt}": Path(p) for fmt, p in d["files"].items()})
    say(f"timing {len(files)} files at batch 1, {threads} threads ...")
    image = pick_evenly(images_from(str(data_yaml), "val"), 1)
    times, computes = time_latency(files, imgsz, threads=threads, runs=runs, repeats=repeats,
                                   image=image[0] if image else None)
    for key, t in times.items():
        name, fmt = key.split("|")
        rows.loc[rows["name"] == name, f"{fmt}_ms"] = float(pd.Series(t).median())
        if fmt == "openvino":  # the precision OpenVINO chose on this CPU (bf16 where it has bf16 units)
            rows.loc[rows["name"] == name, "openvino_compute"] = computes[key]
    atomic_write_csv(rows, project / "rows.csv")
    table = mean_sd(rows)
    atomic_write_csv(table, project / "table.csv")
    atomic_write_text(project / "table.md", format_engine_table(table, test.name, threads))
    return rows, table


ENGINE_COLUMNS: dict[str, tuple] = {
    "test_mAP@0.75": ("test mAP@0.75", ".3f"), "test_mAP@0.5": ("test mAP@0.5", ".3f"),
    "train_s": ("training (min)", ".1f", 1 / 60), "parameters": ("parameters (M)", ".2f", 1e-6),
    "pytorch_ms": ("PyTorch FP32 (ms)", ".1f"), "onnx_ms": ("ONNX FP32 (ms)", ".1f"),
    "onnx-int8_ms": ("ONNX INT8 (ms)", ".1f"), "openvino_ms": ("OpenVINO (ms)", ".1f"),
    "weights_mb": ("checkpoint FP16 (MB)", ".2f"), "onnx_mb": ("ONNX FP32 (MB)", ".2f"),
    "onnx-int8_mb": ("ONNX INT8 (MB)", ".2f"), "int8_loss_mAP@0.75": ("INT8 mAP@0.75 loss", ".3f"),
}


def format_engine_table(table: pd.DataFrame, test_name: str, threads: int) -> str:
    """The comparison as Markdown: minutes and millions where a reader expects them."""
    columns = {c: v for c, v in ENGINE_COLUMNS.items() if c in table}
    note = (f"\nmAP: contest metric on the {test_name}; latency: median at batch 1 with {threads} CPU threads, "
            f"the first seed's files (the same architecture times the same whatever its weights).\n")
    return format_mean_sd(table, columns) + note
