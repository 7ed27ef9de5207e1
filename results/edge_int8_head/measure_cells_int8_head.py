"""The INT8 loss of ``livestock compare engines``' cells with the head's last Convs float: each cell's ONNX FP32
export (``export/``) quantised again for ONNX Runtime's CPU with ``keep_head_float=True`` (the same 32 calibration
images the comparison used), its detections on the synthetic test set at the comparison's setting (conf 0.001, NMS
IoU 0.68, ONNX Runtime's CPU provider) scored with the contest metric, beside the cell's FP32 and CPU INT8 (head
Convs int8) scores from ``result.json`` / ``deploy.json``.

usage: python results/edge_int8_head/measure_cells_int8_head.py JOB_FOLDER COMPARISON_FOLDER OUT_JSON
JOB_FOLDER is the main job's folder the comparison ran in (its test set); COMPARISON_FOLDER the ``--out`` folder.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from livestock.data.split import pick_evenly
from livestock.deploy.images import images_from
from livestock.deploy.quantize import quantize_onnx_int8
from livestock.evaluation.detect import detect
from livestock.evaluation.inference import score_detections
from livestock.experiments.engines import N_CALIB
from livestock.experiments.runner import TEST_CONF, TEST_IOU, gold_test_set
from livestock.fileio import atomic_write_text
from livestock.model.run_record import machine_info


def main(job: Path, comparison: Path, out: Path) -> dict:
    out = out.resolve()
    comparison = comparison.resolve()
    os.chdir(job)
    test = gold_test_set()
    result = {"job": str(job), "comparison": str(comparison), "machine": machine_info("cpu"), "cells": {}}
    for cell in sorted(p for p in comparison.iterdir() if (p / "deploy.json").is_file()):
        record = json.loads((cell / "result.json").read_text(encoding="utf-8"))
        deploy = json.loads((cell / "deploy.json").read_text(encoding="utf-8"))
        settings = record["settings"]
        imgsz = settings["imgsz"]
        calib = pick_evenly(images_from(settings["data_yaml"], "train"), N_CALIB)
        fp32 = Path(deploy["files"]["onnx"])
        head_float = quantize_onnx_int8(fp32, cell / "export" / f"{fp32.stem}_int8_head_float.onnx", calib,
                                        keep_head_float=True, reduce_range=False)  # 8 bits, as deploy.json's file
        detections = detect(head_float, list(test.records), imgsz=imgsz, conf=TEST_CONF, iou=TEST_IOU,
                            device="cpu", progress=False)
        score = score_detections(detections, test.answer)
        row = {"fp32_test_mAP@0.75": record["test_mAP@0.75"],
               "int8_test_mAP@0.75": deploy["int8_test_mAP@0.75"],
               "int8_head_float_test_mAP@0.75": float(score["mAP@0.75"]),
               "int8_head_float_mb": round(head_float.stat().st_size / 1e6, 2)}
        row["int8_loss"] = row["fp32_test_mAP@0.75"] - row["int8_test_mAP@0.75"]
        row["int8_head_float_loss"] = row["fp32_test_mAP@0.75"] - row["int8_head_float_test_mAP@0.75"]
        result["cells"][cell.name] = row
        print(cell.name, {k: round(v, 4) for k, v in row.items()}, flush=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]), Path(sys.argv[3]))
