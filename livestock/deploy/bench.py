"""What each deployable form costs and gives: file size, batch-1 latency and contest mAP@0.75; ``livestock bench``.

Models of either engine (YOLOv5; YOLOv8 / YOLO11 / YOLO26 through Ultralytics). Forms: PyTorch FP32, ONNX FP32 /
FP16 / INT8 (:mod:`livestock.deploy.export`), OpenVINO IR where the ``openvino`` package is installed, and
magnitude-pruned variants (:mod:`livestock.deploy.prune`). Latency is the model's forward pass only (no letterbox,
no NMS); PyTorch runs on the chosen device, ONNX Runtime and OpenVINO on the CPU (the edge target). OpenVINO's CPU
plugin picks its own precision for the FP32 IR (bf16 on CPUs with bfloat16 units): the ``compute`` column says
which. mAP goes through the deployment path itself (:func:`livestock.evaluation.detect.detect`, which runs
checkpoints and ONNX files; OpenVINO rows are timed only) and the contest metric.

Trust: checkpoints are pickles (loading one runs code from it). Benchmark only files you trust.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from livestock.data.yolo_format import label_path_for, read_label_file, yolo_to_pixel
from livestock.deploy.export import (
    DEFAULT_FORMATS, comma_list, export_model, export_path, file_size_mb,
)
from livestock.data.split import pick_evenly
from livestock.deploy.images import images_from, letterbox_input
from livestock.deploy.onnx_model import check_model_file
from livestock.deploy.prune import prune_weights
from livestock.deploy.runtime import OPENVINO_INSTALL, forward_runner, openvino_available, openvino_xml
from livestock.evaluation.detect import detect
from livestock.model.engine import engine_of_model, get_engine, parse_device, stored_precision
from livestock.evaluation.metrics import map_at
from livestock.evaluation.submission import detections_to_submission, records_to_answer
from livestock.model.onnx_file import check_onnx_model
from livestock.model.engine import CONTEST_MAX_WEIGHT_MB
from livestock.fileio import atomic_write_csv, atomic_write_figure
from livestock.records import ImageRecord

BENCH_COLUMNS = [
    "model", "imgsz", "variant", "sparsity", "stored", "compute", "size_mb", "size_zip_mb", "under_100mb", "device",
    "latency_ms", "latency_p90_ms", "x_faster_than_pytorch", "x_faster_than_onnx_fp32", "x_smaller_than_onnx_fp32",
    "map75", "threads", "file",
]
DEFAULT_MAX_VAL_IMAGES = 200  # the CLI's cap on scored validation images: every variant is scored on them


# ---------------------------------------------------------------- measurements


def compressed_size_mb(path: str | os.PathLike, level: int = 6) -> float:
    """Size in MB after zlib (deflate, as zip / gzip) compression: what pruning's zeros buy on disk or the wire.
    A folder (OpenVINO IR) counts each of its files compressed alone, as zip compresses its entries."""
    path = Path(path)
    total = 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
        compressor = zlib.compressobj(level)
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                total += len(compressor.compress(chunk))
        total += len(compressor.flush())
    return total / 1e6


def time_latency(
    files: dict[str, Path], imgsz: int, threads: int = 2, runs: int = 20, repeats: int = 3, warmup: int = 3,
    image: str | os.PathLike | None = None, device: str = "cpu",
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Batch-1 forward latencies (ms) of each file, ``.pt`` files on ``device``, ``.onnx`` files and OpenVINO
    folders on the CPU; and the precision each runtime computed in (:class:`livestock.deploy.runtime.ForwardRunner`).

    Threads are pinned (``torch.set_num_threads`` / ORT ``intra_op_num_threads`` / OpenVINO
    ``INFERENCE_NUM_THREADS``). The files are timed in ``repeats`` interleaved rounds of ``runs`` calls, so a
    burst of load from other processes spreads over all of them instead of hitting one; report the median.
    """
    import torch
    from tqdm.auto import tqdm

    if image is not None:
        x = letterbox_input(image, imgsz)[0]
    else:
        x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        runners = {key: forward_runner(p, x, threads, device) for key, p in files.items()}
        times: dict[str, list[float]] = {key: [] for key in files}
        with tqdm(total=repeats * len(runners) * runs, desc=f"latency @{imgsz}", unit="run", leave=False) as bar:
            for _ in range(repeats):
                for key, run in runners.items():
                    for _ in range(warmup):
                        run()
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        run()
                        times[key].append((time.perf_counter() - t0) * 1000.0)
                        bar.update(1)
    finally:
        torch.set_num_threads(previous)
    return times, {key: run.precision for key, run in runners.items()}


# ---------------------------------------------------------------- accuracy


def validation_images(data_yaml: str | os.PathLike, max_images: int | None = None) -> list[Path]:
    """The validation images of ``data_yaml`` that a benchmark scores: all, or ``max_images`` spread evenly."""
    images = images_from(data_yaml, split="val")
    if max_images:
        images = pick_evenly(images, max_images)
    if not images:
        raise ValueError(f"{data_yaml}: no validation images")
    return images


def _label_records(images: Sequence[Path], names: dict[int, str]) -> list[ImageRecord]:
    """Ground truth of ``images`` from their YOLO label files, one record per image and class (an image without a
    label file has no boxes)."""
    from PIL import Image

    records = []
    for image in images:
        label = label_path_for(image)
        if not label.is_file():
            continue
        class_ids, yolo = read_label_file(label)
        with Image.open(image) as im:  # the header only: the size is all that is needed
            width, height = im.size
        for c in np.unique(class_ids):
            boxes = yolo_to_pixel(yolo[class_ids == c], width, height)
            records.append(ImageRecord(Path(image).name, str(image), width, height, names[int(c)], boxes))
    return records


def evaluate_map(
    weights: str | os.PathLike, images: Sequence[Path], imgsz: int, iou_threshold: float = 0.75,
    conf: float = 0.001, nms_iou: float = 0.68, device: str = "cpu",
) -> float:
    """Contest mAP (IoU 0.75 by default) of ``weights`` (.pt of either engine, or .onnx) on labelled ``images``.

    Scored through the deployment path: ``detect`` at conf 0.001 and NMS IoU 0.68 (the original entry's
    inference), ``.pt`` weights on ``device``, ``.onnx`` on the CPU. As in YOLOv5's ``detect.py``, ``.pt`` weights
    see a minimal-rectangle letterbox and fixed-shape exports the full ``imgsz`` square: part of a difference
    between a ``.pt`` and its ONNX FP32 score comes from that."""
    names = check_model_file(weights, imgsz)["names"]
    answer = records_to_answer(_label_records(images, names))
    if answer.empty:
        first = f" ({images[0]}, ...)" if len(images) else ""
        raise ValueError(f"none of the {len(images)} images{first} has labelled boxes to score against")
    on = device if Path(weights).suffix == ".pt" else "cpu"  # ONNX Runtime stays on the CPU, the edge target
    detections = detect(weights, images, imgsz, conf, nms_iou, device=on, progress=False)
    predictions = detections_to_submission(detections, [names[i] for i in range(len(names))])
    return float(map_at(answer, predictions, iou=iou_threshold))


# ---------------------------------------------------------------- the report


def _export_or_reuse(weights: Path, imgsz: int, formats: Sequence[str], calib: Sequence, work: Path
                     ) -> dict[str, Path]:
    """Exports of ``weights`` in ``work``; files already there and newer than the weights are reused, so a
    kept bench folder (``--keep-models``) can be timed again without exporting again."""
    expected = {f: export_path(work, weights, imgsz, f) for f in formats}
    source_time = weights.stat().st_mtime
    if all(p.exists() and p.stat().st_mtime >= source_time for p in expected.values()):
        try:
            for path in expected.values():
                if path.is_dir():
                    openvino_xml(path)  # its input shape is checked when it is loaded to be timed
                else:
                    check_onnx_model(path, imgsz=imgsz)
            return expected
        except ValueError:
            pass  # a damaged file: export again
    return export_model(weights, imgsz, formats, calib_images=calib, out_dir=work)


def _variants(
    weights: Path, label: str, imgsz: int, work: Path, calib: Sequence, prune_sparsity: float | None,
) -> list[tuple[str, float, str, Path]]:
    """(variant, sparsity, stored precision, file) for one model at one size, exporting what is needed."""
    rows: list[tuple[str, float, str, Path]] = []
    openvino = ("openvino",) if openvino_available() else ()
    exports = _export_or_reuse(weights, imgsz, DEFAULT_FORMATS + openvino, calib, work)
    rows += [("pytorch-fp32", 0.0, stored_precision(weights), weights),
             ("onnx-fp32", 0.0, "fp32", exports["onnx"]),
             ("onnx-fp16", 0.0, "fp16", exports["onnx-fp16"]),
             ("onnx-int8", 0.0, "int8", exports["onnx-int8"])]
    if openvino:
        rows.append(("openvino", 0.0, "fp32", exports["openvino"]))  # the IR keeps the FP32 export's weights
    if prune_sparsity:
        pruned = work / f"{label}_pruned{int(round(prune_sparsity * 100))}.pt"
        if not pruned.is_file() or pruned.stat().st_mtime < weights.stat().st_mtime:
            prune_weights(weights, prune_sparsity, pruned)
        pexports = _export_or_reuse(pruned, imgsz, ("onnx", "onnx-int8"), calib, work)
        rows += [("pytorch-fp32", prune_sparsity, stored_precision(pruned), pruned),
                 ("onnx-fp32", prune_sparsity, "fp32", pexports["onnx"]),
                 ("onnx-int8", prune_sparsity, "int8", pexports["onnx-int8"])]
    return rows


def _noise_images(size: int, n: int = 4) -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8) for i in range(n)]


def benchmark_models(
    models: Sequence[str] = ("yolov5n", "yolov5s", "yolov5m6"),
    imgsz: Sequence[int] = (640,),
    extra: Sequence[tuple[str, int]] = (("yolov5m6", 1280),),
    threads: int = 2,
    runs: int = 20,
    weights: str | os.PathLike | None = None,
    data_yaml: str | os.PathLike | None = None,
    prune_sparsity: float | None = 0.5,
    repeats: int = 3,
    work_dir: str | os.PathLike | None = None,
    n_calib: int = 32,
    max_val_images: int | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """The benchmark table: size, batch-1 latency and contest mAP@0.75 of every deployable form of each model.

    One row per form (``openvino`` where the package is installed; a one-line notice says when it is skipped);
    mAP only for trained ``weights`` with a ``data_yaml``, not for OpenVINO rows, and ``attrs["val_images"]`` is
    the number of validation images scored.
    ``models`` are architecture names of either engine (``yolov5n``, ``yolov5m6``, ``yolo11n``, ``yolo26m``, ...:
    :func:`livestock.model.engine.engine_of_model`) timed with random weights (latency and size do not depend on
    the values; the INT8 calibration of such a model is meaningless for accuracy, fine for timing), each at every
    ``imgsz``, plus the ``(model, imgsz)`` pairs in ``extra``. Trained ``weights`` (a checkpoint of either engine)
    add rows of their own at the first ``imgsz``, calibrated on the ``data_yaml`` training images and scored on
    at most ``max_val_images`` of its validation images, evenly picked. Latency: median over ``repeats`` x
    ``runs`` forward passes with ``threads`` CPU threads, PyTorch on ``device``, ONNX Runtime and OpenVINO on the
    CPU. Exported files live in ``work_dir`` (a temporary folder, removed afterwards, when not given).
    """
    from tqdm.auto import tqdm

    device = str(parse_device(device).torch())  # a bad or unavailable device fails now, not after the exports
    jobs: list[tuple[str, int, Path | None]] = [(m, int(s), None) for m in models for s in imgsz]
    jobs += [(m, int(s), None) for m, s in extra if (m, int(s), None) not in jobs]
    owners = {m: engine_of_model(m) for m, _, _ in jobs}  # an unknown name fails now, not after other exports
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: trained weights not found")
        jobs.append((Path(weights).stem, int(imgsz[0]), Path(weights).resolve()))
    if data_yaml is not None and weights is None:
        raise ValueError(f"{data_yaml}: mAP needs trained --weights; random-init models are timed only")
    val_images = validation_images(data_yaml, max_val_images) if data_yaml is not None else []
    if not openvino_available():
        logging.getLogger(__name__).warning("openvino is not installed: the openvino variant is skipped (%s)",
                                            OPENVINO_INSTALL)

    scratch = None
    if work_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="livestock-bench-")
        work = Path(scratch.name)
    else:
        work = Path(work_dir)
    rows = []
    try:
        for label, size, trained in tqdm(jobs, desc="bench", unit="model"):
            folder = work / f"{label}_{size}"
            folder.mkdir(parents=True, exist_ok=True)
            if trained is None:
                source = work / f"{label}.pt"
                if not source.is_file():
                    get_engine(owners[label]).random_init_checkpoint(label, source)
                calib, image = _noise_images(size), None  # random weights have nothing to calibrate for
            elif data_yaml is not None:
                source = trained
                calib = pick_evenly(images_from(data_yaml, "train"), n_calib)
                if not calib:
                    raise ValueError(f"{data_yaml}: no training images to calibrate INT8 on")
                image = calib[0]
            else:  # timing only: without images the INT8 accuracy of these weights is not measured
                source, calib, image = trained, _noise_images(size), None
            variants = _variants(source, label, size, folder, calib, prune_sparsity)
            files = {f"{v}|{s}": p for v, s, _, p in variants}
            times, computes = time_latency(files, size, threads=threads, runs=runs, repeats=repeats, image=image,
                                           device=device)
            for variant, sparsity, stored, path in variants:
                t = np.asarray(times[f"{variant}|{sparsity}"])
                score = np.nan
                if trained is not None and val_images and not path.is_dir():  # detect runs no OpenVINO folder
                    score = evaluate_map(path, val_images, size, device=device)
                rows.append({
                    "model": label, "imgsz": size, "variant": variant, "sparsity": sparsity, "stored": stored,
                    "compute": computes[f"{variant}|{sparsity}"], "size_mb": file_size_mb(path),
                    "size_zip_mb": compressed_size_mb(path),
                    "device": device if path.suffix == ".pt" else "cpu",  # ONNX Runtime, OpenVINO: the CPU
                    "latency_ms": float(np.median(t)), "latency_p90_ms": float(np.percentile(t, 90)),
                    "map75": score, "threads": threads, "file": path.name,
                })
    finally:
        if scratch is not None:
            scratch.cleanup()
    df = pd.DataFrame(rows)
    df["under_100mb"] = df["size_mb"] <= CONTEST_MAX_WEIGHT_MB
    for _, group in df.groupby(["model", "imgsz"], sort=False):
        dense = group[group["sparsity"] == 0]
        pt = dense.loc[dense["variant"] == "pytorch-fp32", "latency_ms"].iloc[0]
        onnx32 = dense.loc[dense["variant"] == "onnx-fp32"].iloc[0]
        df.loc[group.index, "x_faster_than_pytorch"] = pt / group["latency_ms"]
        df.loc[group.index, "x_faster_than_onnx_fp32"] = onnx32["latency_ms"] / group["latency_ms"]
        df.loc[group.index, "x_smaller_than_onnx_fp32"] = onnx32["size_mb"] / group["size_mb"]
    df = df[BENCH_COLUMNS].copy()
    df.attrs["val_images"] = len(val_images)
    return df


def format_bench_table(df: pd.DataFrame) -> str:
    """The report as a fixed-width table (what ``livestock bench`` prints)."""
    show = df.drop(columns=["file", "threads"]).copy()
    show["sparsity"] = show["sparsity"].map(lambda s: f"{s:.0%}")
    return show.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-")


def plot_bench(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a PNG of latency against file size and, where measured, against mAP@0.75 (a point per variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_map = df["map75"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_map else 1, figsize=(13 if has_map else 7, 5), squeeze=False)
    panels = [("size_mb", "file size (MB)")] + ([("map75", "mAP@0.75 (contest metric)")] if has_map else [])
    markers = {"pytorch-fp32": "o", "onnx-fp32": "s", "onnx-fp16": "^", "onnx-int8": "D", "openvino": "v"}
    devices = ", ".join(sorted(set(df["device"])))
    for ax, (column, ylabel) in zip(axes[0], panels):
        data = df[df[column].notna()]
        for (label, size), group in data.groupby(["model", "imgsz"], sort=False):
            colour = ax._get_lines.get_next_color()
            for _, row in group.iterrows():
                pruned = row["sparsity"] > 0
                ax.scatter(row["latency_ms"], row[column], color=colour, marker=markers.get(row["variant"], "o"),
                           facecolors="none" if pruned else colour, s=55)
                if not pruned:  # pruned points sit beside their dense twin; one label is enough
                    ax.annotate(row["variant"].replace("pytorch", "pt"), (row["latency_ms"], row[column]),
                                fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.scatter([], [], color=colour, label=f"{label}@{size}")
        if column == "size_mb":
            ax.axhline(CONTEST_MAX_WEIGHT_MB, color="grey", linestyle="--", linewidth=1)
            ax.text(0.01, CONTEST_MAX_WEIGHT_MB, "100 MB limit", va="bottom", fontsize=8, color="grey",
                    transform=ax.get_yaxis_transform())
        ax.set_xscale("log")
        ax.set_xlabel(f"latency per image ({devices}), batch 1, {int(df['threads'].iloc[0])} CPU threads (ms, log)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Deployable forms: filled = dense, hollow = pruned")
    fig.tight_layout()
    try:
        return atomic_write_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- CLI: livestock bench


def cli_bench_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``livestock bench``."""
    parser.add_argument("--models", default="yolov5n,yolov5s,yolov5m6",
                        help="architectures of either engine, timed with random weights: YOLOv5 (yolov5n ... yolov5x, "
                             "yolov5n6 ... yolov5x6) or Ultralytics (yolov8n ..., yolo11n ... yolo11x, "
                             "yolo26n ... yolo26x, yolo26n-p6 ...)")
    parser.add_argument("--imgsz", default="640", help="comma-separated input sizes for every model")
    parser.add_argument("--extra", default="", help="extra model@size pairs, e.g. yolov5m6@1280")
    parser.add_argument("--weights", default=None, help="trained checkpoint of either engine to add (mAP needs --data)")
    parser.add_argument("--data", default=None, help="data.yaml: train images calibrate INT8, val images give mAP@0.75")
    parser.add_argument("--device", default="cpu",
                        help="device PyTorch runs on (cpu, cuda:0, ...); ONNX Runtime and OpenVINO run on the CPU")
    parser.add_argument("--max-images", type=int, default=DEFAULT_MAX_VAL_IMAGES,
                        help="score at most this many validation images, spread evenly (0: all)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch, ONNX Runtime and OpenVINO")
    parser.add_argument("--runs", type=int, default=20, help="timed forward passes per round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; latency is the median of all")
    parser.add_argument("--prune", type=float, default=0.5, help="sparsity of the pruned variants (0: none)")
    parser.add_argument("--out", default="runs/bench", help="folder for bench.csv and bench.png")
    parser.add_argument("--keep-models", action="store_true", help="keep exported files in OUT/models")


def cli_bench(args: argparse.Namespace) -> int:
    """``livestock bench``: run the benchmark, write bench.csv and bench.png, print the table."""
    out = Path(args.out)
    extra = []
    for item in comma_list(args.extra):
        name, sep, size = item.partition("@")
        if not sep or not size.isdigit():
            raise ValueError(f"--extra {item!r}: expected model@size, e.g. yolov5m6@1280")
        extra.append((name, int(size)))
    if args.max_images < 0:
        raise ValueError(f"--max-images {args.max_images}: expected a count, or 0 for all")
    sizes = comma_list(args.imgsz)
    if not sizes or not all(s.isdigit() and int(s) >= 32 for s in sizes) or any(n < 32 for _, n in extra):
        raise ValueError(f"--imgsz {args.imgsz!r} / --extra {args.extra!r}: sizes are whole numbers of at least 32")
    if args.threads < 1 or args.runs < 1 or args.repeats < 1:
        raise ValueError(f"--threads, --runs and --repeats must be at least 1 "
                         f"(got {args.threads}, {args.runs}, {args.repeats})")
    if not 0 <= args.prune < 1:
        raise ValueError(f"--prune {args.prune}: a sparsity in [0, 1)")
    if args.weights is not None and not Path(args.weights).is_file():
        raise FileNotFoundError(f"{args.weights}: weights not found")
    df = benchmark_models(
        models=comma_list(args.models), imgsz=[int(s) for s in sizes], extra=extra,
        threads=args.threads, runs=args.runs, repeats=args.repeats, weights=args.weights, data_yaml=args.data,
        prune_sparsity=args.prune or None, work_dir=out / "models" if args.keep_models else None,
        max_val_images=args.max_images or None, device=args.device,
    )
    atomic_write_csv(df, out / "bench.csv")
    plot_bench(df, out / "bench.png")
    print(format_bench_table(df))
    if df.attrs.get("val_images"):
        print(f"\nmAP@0.75 on {df.attrs['val_images']} validation images")
    print(f"\nwrote {out / 'bench.csv'} and {out / 'bench.png'}")
    return 0
