"""TTA and WBF measured on one main-job model: the inference notebook's tuning with ``TTA = True`` on the validation
fold, the same grid scored on the synthetic test set, and each cell's validation-chosen setting read off the test
grid (a grid cell equals a direct run: tests/test_tta.py).

usage: python results/tta/measure_tta.py JOB_FOLDER OUT_FOLDER
JOB_FOLDER is a finished main job's folder (``livestock pipeline --workdir JOB_FOLDER``); OUT_FOLDER receives
``val/`` and ``test/`` (scores.csv, best.json, heatmap.png) and ``result.json``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from livestock.data import split
from livestock.data.eda import load_prepared_records
from livestock.evaluation import tune
from livestock.fileio import atomic_write_text


def main(job: Path, out: Path) -> dict:
    out = out.resolve()
    os.chdir(job)  # the job's relative paths, as the notebook sees them
    weights = "trained_model/multilabel_best.pt"
    common = dict(imgsz=320, device="cpu", cache_dir="runs/cache", tta=True, progress=False)
    val = split.split_records("data/prepared", "data/splits/multilabel", "val")
    test = load_prepared_records("data/prepared_test")
    on_val, _ = tune.run_tuning(weights, val, out / "val", **common)
    on_test, _ = tune.run_tuning(weights, test, out / "test", answer="data_test/answer.csv", **common)
    cells = []
    for (tta, fusion), grid in on_val.groupby(["tta", "fusion"], sort=False):
        chosen = tune.best_setting(grid)
        same = on_test[(on_test["tta"] == tta) & (on_test["fusion"] == fusion)
                       & (on_test["conf"].round(6) == round(float(chosen["conf"]), 6))
                       & (on_test["iou"].round(4) == round(float(chosen["iou"]), 4))]
        if len(same) != 1:
            raise RuntimeError(f"setting {tta, fusion, chosen['conf'], chosen['iou']} not once in the test grid")
        cells.append({"tta": bool(tta), "fusion": str(fusion), "conf": float(chosen["conf"]),
                      "iou": float(chosen["iou"]), "val": float(chosen["map"]), "test": float(same["map"].iloc[0])})
    overall = tune.best_setting(on_val)
    result = {"job": str(job), "cells": cells,
              "chosen": {"tta": bool(overall["tta"]), "fusion": str(overall["fusion"])}}
    atomic_write_text(out / "result.json", json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(json.dumps(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))))
