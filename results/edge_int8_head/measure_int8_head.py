"""ONNX Runtime's CPU INT8 file of one main-job model, with the head's last Convs in int8 (as ``livestock export``'s
``onnx-int8`` had them when this was measured, with 8-bit weights) and with them float (as in the TensorRT file:
``quantize_onnx_int8(..., keep_head_float=True)``), from the same FP32 export and the same 32 calibration images.
Contest mAP@0.75 on the job's 60-image validation fold through the bench's scoring path
(``livestock.deploy.bench.evaluate_map``: conf 0.001, NMS IoU 0.68, ONNX Runtime's CPU provider), and batch-1
latency at 320 px on the bench's timing path (``livestock.deploy.bench.time_latency``: 2 threads, 3 interleaved
rounds of 20 runs on a validation frame; the median).

usage: python results/edge_int8_head/measure_int8_head.py JOB_FOLDER OUT_FOLDER
JOB_FOLDER is a finished main job's folder (``livestock pipeline --workdir JOB_FOLDER``); OUT_FOLDER receives the
exports and ``result.json``. Time it with nothing else running.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from livestock.data.split import pick_evenly
from livestock.deploy.bench import evaluate_map, time_latency, validation_images
from livestock.deploy.export import export_model, file_size_mb
from livestock.deploy.images import images_from
from livestock.deploy.quantize import quantize_onnx_int8
from livestock.fileio import atomic_write_text
from livestock.model.run_record import machine_info

IMGSZ = 320


def main(job: Path, out: Path) -> dict:
    out = out.resolve()
    os.chdir(job)  # the job's relative paths
    data = "data/splits/multilabel/data.yaml"
    weights = "trained_model/multilabel_best.pt"
    calib = pick_evenly(images_from(data), 32)  # the images export_model picks from data.yaml's train list
    files = export_model(weights, IMGSZ, ("onnx",), out_dir=out)
    stem = out / f"{Path(weights).stem}_{IMGSZ}"
    # 8-bit weights in both, as the export wrote them when this was measured (7 bits since; see int8_saturation)
    files["onnx-int8"] = quantize_onnx_int8(files["onnx"], f"{stem}_int8.onnx", calib, reduce_range=False,
                                            keep_head_float=False)
    files["onnx-int8-head-float"] = quantize_onnx_int8(files["onnx"], f"{stem}_int8_head_float.onnx", calib,
                                                       keep_head_float=True, reduce_range=False)
    images = validation_images(data)
    result = {"job": str(job), "images": len(images), "machine": machine_info("cpu"), "files": {}}
    for fmt, path in files.items():
        result["files"][fmt] = {"mb": round(file_size_mb(path), 2), "val_mAP@0.75": evaluate_map(path, images, IMGSZ)}
        print(fmt, result["files"][fmt], flush=True)
    times, precisions = time_latency(files, IMGSZ, threads=2, runs=20, repeats=3, image=images[0])
    for fmt, ms in times.items():
        result["files"][fmt].update(latency_ms=round(statistics.median(ms), 2), computed_in=precisions[fmt])
        print(fmt, "latency", result["files"][fmt]["latency_ms"], "ms", flush=True)
    atomic_write_text(out / "result.json", json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
