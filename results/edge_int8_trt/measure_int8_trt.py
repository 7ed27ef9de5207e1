"""The two INT8 files of one main-job model, scored: ONNX Runtime's CPU form (``onnx-int8``: uint8 activations with
zero points) against the form TensorRT accepts (``onnx-int8-trt``: symmetric int8 only, float biases), both made by
``livestock export`` from the same 32 calibration images, with the FP32 export as the reference. Contest mAP@0.75 on
the job's 60-image validation fold through the bench's scoring path (``livestock.deploy.bench.evaluate_map``:
detection at conf 0.001 and NMS IoU 0.68, all on ONNX Runtime's CPU provider), and each file's count of breaches of
TensorRT's quantisation rules. ``result_seed*.json`` were measured when the CPU file had 8-bit weights; the export
writes 7-bit ones with the head's last Convs float since 2026-12-02 (``results/int8_saturation/``), so a run now
scores that file.

usage: python results/edge_int8_trt/measure_int8_trt.py JOB_FOLDER OUT_FOLDER
JOB_FOLDER is a finished main job's folder (``livestock pipeline --workdir JOB_FOLDER``); OUT_FOLDER receives the
exports and ``result.json``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from livestock.deploy.bench import evaluate_map, validation_images
from livestock.deploy.export import export_model, file_size_mb
from livestock.deploy.quantize import tensorrt_qdq_problems
from livestock.fileio import atomic_write_text
from livestock.model.onnx_file import load_onnx
from livestock.model.run_record import machine_info

FORMATS = ("onnx", "onnx-int8", "onnx-int8-trt")


def main(job: Path, out: Path) -> dict:
    out = out.resolve()
    os.chdir(job)  # the job's relative paths
    data = "data/splits/multilabel/data.yaml"
    files = export_model("trained_model/multilabel_best.pt", 320, FORMATS, calib_images=data, out_dir=out)
    images = validation_images(data)
    result = {"job": str(job), "images": len(images), "machine": machine_info("cpu"), "files": {}}
    for fmt in FORMATS:
        start = time.perf_counter()
        score = evaluate_map(files[fmt], images, 320)
        seconds = time.perf_counter() - start  # the scoring alone, not the rules check below
        result["files"][fmt] = {
            "mb": round(file_size_mb(files[fmt]), 2), "val_mAP@0.75": score,
            "tensorrt_problems": len(tensorrt_qdq_problems(load_onnx(files[fmt]))) if fmt != "onnx" else None,
            "scoring_s": round(seconds, 1)}
        print(fmt, result["files"][fmt], flush=True)
    atomic_write_text(out / "result.json", json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
