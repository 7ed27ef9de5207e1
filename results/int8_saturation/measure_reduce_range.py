"""ONNX Runtime's CPU INT8 file with 8-bit weights (``reduce_range=False``) against 7-bit weights
(``reduce_range=True``), both with the head's last Convs in int8, and the export's default (7-bit weights, head Convs
float), from the same FP32 export and the same 32 calibration images, scored with the contest metric
at conf 0.001, NMS IoU 0.68 on ONNX Runtime's CPU provider, on the CPU this runs on (its instruction set is in
``machine``; the question is what an x86 CPU without VNNI does to u8 x s8 products).

- ``cells``: every cell of a ``livestock compare engines`` folder, on the synthetic test set (its FP32 export from
  ``deploy.json``, its PyTorch score from ``result.json``);
- ``jobs``: finished main jobs' models on their 60-image validation fold (the bench's scoring path), with batch-1
  latency of the three ONNX files (``livestock.deploy.bench.time_latency``: 2 threads, 3 interleaved rounds of 20).

usage: python results/int8_saturation/measure_reduce_range.py OUT_JSON --cells JOB_FOLDER COMPARISON_FOLDER
       python results/int8_saturation/measure_reduce_range.py OUT_JSON --jobs JOB_FOLDER [JOB_FOLDER ...]
"""
from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from livestock.data.split import pick_evenly
from livestock.deploy.bench import evaluate_map, time_latency, validation_images
from livestock.deploy.export import export_model
from livestock.deploy.images import images_from
from livestock.deploy.quantize import quantize_onnx_int8
from livestock.evaluation.detect import detect
from livestock.evaluation.inference import score_detections
from livestock.experiments.engines import N_CALIB
from livestock.experiments.runner import TEST_CONF, TEST_IOU, gold_test_set
from livestock.fileio import atomic_write_text
from livestock.model.run_record import machine_info

# The CPU file's forms: 8-bit and 7-bit weights with the head's last Convs in int8 (as the export wrote them before
# 2026-12-02), and the export's default since (7-bit weights, head Convs float).
VARIANTS = {"int8_8bit": dict(reduce_range=False, keep_head_float=False),
            "int8_7bit": dict(reduce_range=True, keep_head_float=False),
            "int8_default": {}}


def _int8_variants(fp32: Path, calib: list, folder: Path) -> dict[str, Path]:
    return {name: quantize_onnx_int8(fp32, folder / f"{fp32.stem}_{name}.onnx", calib, **settings)
            for name, settings in VARIANTS.items()}


def cells(job: Path, comparison: Path) -> dict:
    comparison = comparison.resolve()
    os.chdir(job)
    test = gold_test_set()
    rows = {}
    for cell in sorted(p for p in comparison.iterdir() if (p / "deploy.json").is_file()):
        record = json.loads((cell / "result.json").read_text(encoding="utf-8"))
        deploy = json.loads((cell / "deploy.json").read_text(encoding="utf-8"))
        imgsz = record["settings"]["imgsz"]
        calib = pick_evenly(images_from(record["settings"]["data_yaml"], "train"), N_CALIB)
        fp32 = Path(deploy["files"]["onnx"])
        files = {"onnx_fp32": fp32, **_int8_variants(fp32, calib, cell / "export")}
        row = {"pytorch_test_mAP@0.75": record["test_mAP@0.75"]}
        for name, path in files.items():
            dets = detect(path, list(test.records), imgsz=imgsz, conf=TEST_CONF, iou=TEST_IOU, device="cpu",
                          progress=False)
            row[f"{name}_test_mAP@0.75"] = float(score_detections(dets, test.answer)["mAP@0.75"])
        rows[cell.name] = row
        print("RESULT", cell.name, {k: round(v, 4) for k, v in row.items()}, flush=True)
    return rows


def jobs(folders: list[Path]) -> dict:
    rows = {}
    for job in folders:
        os.chdir(job)
        data = "data/splits/multilabel/data.yaml"
        calib = pick_evenly(images_from(data), N_CALIB)
        out = job / "runs" / "int8_saturation"
        fp32 = export_model("trained_model/multilabel_best.pt", 320, ("onnx",), out_dir=out)["onnx"]
        files = {"onnx_fp32": fp32, **_int8_variants(fp32, calib, out)}
        images = validation_images(data)
        row = {f"{name}_val_mAP@0.75": evaluate_map(path, images, 320) for name, path in files.items()}
        times, _ = time_latency(files, 320, threads=2, runs=20, repeats=3, image=images[0])
        row.update({f"{name}_ms": round(statistics.median(ms), 2) for name, ms in times.items()})
        rows[str(job)] = row
        print("RESULT", job, {k: round(v, 4) for k, v in row.items()}, flush=True)
    return rows


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] not in ("--cells", "--jobs"):
        sys.exit(__doc__)
    out = Path(sys.argv[1]).resolve()
    folders = [Path(a).resolve() for a in sys.argv[3:]]
    found = cells(*folders) if sys.argv[2] == "--cells" else jobs(folders)
    atomic_write_text(out, json.dumps({"machine": machine_info("cpu"), sys.argv[2][2:]: found}, indent=1) + "\n")
