"""ONNX Runtime's session option ``session.x64quantprecision=1`` on the CPU INT8 files: on an x86 CPU without VNNI
it multiplies u8 x u8 instead of u8 x s8 (ONNX Runtime converts the weights when the session loads), which cannot
saturate. Does it give the 8-bit file back what saturation takes from it, and what does it cost?

For each finished main job: its model's FP32 export, the default CPU INT8 file (7-bit weights) and the 8-bit one
(``livestock export --cpu-int8-weight-bits 8``), both with the head's last Convs float, from the same 32 calibration
images. Each INT8 file is scored on the job's 60-image validation fold (the bench's scoring path, contest mAP@0.75)
with the option off and on, and timed at batch 1 (``livestock.deploy.bench.time_latency``: 2 threads, 3 interleaved
rounds of 20; the option's copies are separate files, so all forms share the rounds).

The option is set on every session ONNX Runtime makes in this process while it is on (YOLOv5's DetectMultiBackend
and the bench's runner make their own), by wrapping ``onnxruntime.InferenceSession``: the package has no switch
for it, because this measurement decides whether it needs one.

usage: python results/int8_saturation/measure_x64quantprecision.py OUT_JSON JOB_FOLDER [JOB_FOLDER ...]
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import onnxruntime as ort

from livestock.data.split import pick_evenly
from livestock.deploy.bench import evaluate_map, time_latency, validation_images
from livestock.deploy.export import export_model
from livestock.deploy.images import images_from
from livestock.deploy.quantize import quantize_onnx_int8
from livestock.experiments.engines import N_CALIB
from livestock.fileio import atomic_write_text
from livestock.model.run_record import machine_info

OPTION = "session.x64quantprecision"
PRECISE = "_precise"  # a file whose name holds this is run with the option on
_InferenceSession = ort.InferenceSession


def _session(path, sess_options=None, providers=None, **kwargs):
    if PRECISE in Path(str(path)).name:
        sess_options = sess_options or ort.SessionOptions()
        sess_options.add_session_config_entry(OPTION, "1")
    return _InferenceSession(path, sess_options, providers=providers, **kwargs)


@contextlib.contextmanager
def option_by_file_name():
    ort.InferenceSession = _session
    try:
        yield
    finally:
        ort.InferenceSession = _InferenceSession


def job_row(job: Path) -> dict:
    os.chdir(job)
    data = "data/splits/multilabel/data.yaml"
    calib = pick_evenly(images_from(data), N_CALIB)
    out = job / "runs" / "x64quantprecision"
    fp32 = export_model("trained_model/multilabel_best.pt", 320, ("onnx",), out_dir=out)["onnx"]
    files = {"onnx_fp32": fp32}
    for bits in (7, 8):
        path = quantize_onnx_int8(fp32, out / f"int8_{bits}bit.onnx", calib, reduce_range=bits == 7)
        files[f"int8_{bits}bit"] = path
        files[f"int8_{bits}bit{PRECISE}"] = Path(shutil.copyfile(path, out / f"int8_{bits}bit{PRECISE}.onnx"))
    images = validation_images(data)
    with option_by_file_name():
        row = {f"{name}_val_mAP@0.75": evaluate_map(path, images, 320) for name, path in files.items()}
        times, _ = time_latency(files, 320, threads=2, runs=20, repeats=3, image=images[0])
    row.update({f"{name}_ms": round(statistics.median(ms), 2) for name, ms in times.items()})
    print("RESULT", job, {k: round(v, 4) for k, v in row.items()}, flush=True)
    return row


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_json = Path(sys.argv[1]).resolve()
    rows = {str(job): job_row(job) for job in (Path(a).resolve() for a in sys.argv[2:])}
    atomic_write_text(out_json, json.dumps({"machine": machine_info("cpu"), "onnxruntime": ort.__version__,
                                            "jobs": rows}, indent=1) + "\n")
