"""Where the INT8 drift of the test suite's tiny YOLOv5n comes from: the quantiser's version or the trained model.

In the GPU machine's package versions (onnxruntime 1.30, torch 2.11) the INT8 tests of ``tests/test_export.py``
failed: confidences of the top FP32 candidates moved by up to 0.24 against the tests' 0.05. Two runs separate the
two suspects:

- ``train OUT``: in the running environment, trains the suite's tiny YOLOv5n (``tests/conftest.py``'s
  ``TINY_TRAIN_ARGS``, on ``tests/toy_yolo.py``'s toy set) at seeds 0, 1, 2, exports it to FP32 ONNX, and measures
  both INT8 files against it exactly as ``test_int8_of_a_trained_model_stays_close_to_fp32`` does (16 calibration
  images, the top 20 FP32 candidates of 4 validation images). ``OUT/seed<N>/result.json``; a seed already done is
  skipped, so an interrupted run resumes.
- ``requantise OUT OTHER``: quantises the FP32 files another environment's ``train`` wrote (``OTHER/seed<N>/``)
  with this environment's onnxruntime, measures the same, and compares the INT8 graphs with the other
  environment's (nodes; largest difference of any stored number): ``OUT/requantised_<OTHER name>.json``.

The suite under pytest-xdist on 2 cores trains with one thread (``tests/conftest.py`` sets ``OMP_NUM_THREADS``);
run with ``OMP_NUM_THREADS=1`` to train as it does (another thread count sums in another order: another model).

usage: python results/gpu_machine_standin/measure_int8_drift.py train OUT
       python results/gpu_machine_standin/measure_int8_drift.py requantise OUT OTHER
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the suite's own training recipe and toy set, not a copy of them

from conftest import TINY_TRAIN_ARGS  # noqa: E402
from toy_yolo import make_toy_yolo_dataset  # noqa: E402

from livestock.data.split import pick_evenly  # noqa: E402
from livestock.deploy.export import export_model  # noqa: E402
from livestock.deploy.images import images_from, letterbox_input  # noqa: E402
from livestock.deploy.quantize import quantize_onnx_int8  # noqa: E402
from livestock.deploy.runtime import forward_raw  # noqa: E402
from livestock.fileio import atomic_write_text  # noqa: E402
from livestock.model.run_record import machine_info  # noqa: E402

SEEDS = (0, 1, 2)
IMG = 64  # the size the suite trains and exports the tiny model at
TARGETS = {"onnx-int8": "onnxruntime", "onnx-int8-trt": "tensorrt"}


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "numpy": np.__version__}


def _conf(raw: np.ndarray) -> np.ndarray:
    return raw[:, 4] * raw[:, 5:].max(1)


def drift(fp32: Path, int8: Path, data_yaml: Path) -> dict:
    """The test's measure: worst box (px) and confidence difference over the top 20 FP32 candidates."""
    worst_box = worst_conf = 0.0
    for image in pick_evenly(images_from(data_yaml, split="val"), 4):
        x, _ = letterbox_input(image, IMG)
        ref, q = forward_raw(fp32, x)[0], forward_raw(int8, x)[0]
        top = np.argsort(-_conf(ref))[:20]
        worst_box = max(worst_box, float(np.abs(q[top, :4] - ref[top, :4]).max()))
        worst_conf = max(worst_conf, float(np.abs(_conf(q)[top] - _conf(ref)[top]).max()))
    return {"worst_box_px": round(worst_box, 3), "worst_conf": round(worst_conf, 4)}


def _quantise_all(fp32: Path, data_yaml: Path, out: Path) -> dict:
    calib = pick_evenly(images_from(data_yaml, split="train"), 16)  # what export_model's n_calib=16 picks
    result = {}
    for fmt, target in TARGETS.items():
        dst = quantize_onnx_int8(fp32, out / f"{fp32.stem}_{fmt}.onnx", calib, target=target)
        result[fmt] = drift(fp32, dst, data_yaml)
    return result


def train_seeds(out: Path) -> None:
    from livestock.model.yolov5.training import train

    data_yaml = make_toy_yolo_dataset(out / "toy", n_train=64, n_val=16)
    for seed in SEEDS:
        folder = out / f"seed{seed}"
        if (folder / "result.json").is_file():
            continue
        run = train(data_yaml, project=out / "runs", name=f"seed{seed}", exist_ok=True,
                    **{**TINY_TRAIN_ARGS, "seed": seed})
        fp32 = export_model(run.best, IMG, formats=("onnx",), out_dir=folder)["onnx"]
        result = {"seed": seed, "versions": _versions(), "machine": machine_info("cpu"),
                  "best_val": {"mAP@0.5": round(run.map50, 4), "mAP@0.5:0.95": round(run.map50_95, 4)},
                  "drift": _quantise_all(fp32, data_yaml, folder)}
        atomic_write_text(folder / "result.json", json.dumps(result, indent=1) + "\n")
        print(f"seed {seed}: {result['best_val']} {result['drift']}", flush=True)


def _stored_numbers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i).astype(np.float64) for i in onnx.load(str(path)).graph.initializer}


def _nodes(path: Path) -> list[tuple]:
    import onnx

    return [(n.op_type, tuple(n.input), tuple(n.output)) for n in onnx.load(str(path)).graph.node]


def requantise(out: Path, other: Path) -> None:
    data_yaml = other / "toy" / "data.yaml"
    result = {"versions": _versions(), "other": other.name, "seeds": {}}
    for seed in SEEDS:
        theirs = json.loads((other / f"seed{seed}" / "result.json").read_text())
        fp32 = next((other / f"seed{seed}").glob("*_64.onnx"))
        folder = out / f"requantised_{other.name}" / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        ours = _quantise_all(fp32, data_yaml, folder)
        graphs = {}
        for fmt in TARGETS:
            a, b = folder / f"{fp32.stem}_{fmt}.onnx", other / f"seed{seed}" / f"{fp32.stem}_{fmt}.onnx"
            na, nb = _stored_numbers(a), _stored_numbers(b)
            graphs[fmt] = {"same_nodes": _nodes(a) == _nodes(b), "same_initializer_names": na.keys() == nb.keys(),
                           "max_abs_difference": max(float(np.abs(na[k] - nb[k]).max()) for k in na),
                           "initializers_differing": sum(not np.array_equal(na[k], nb[k]) for k in na)}
        result["seeds"][seed] = {"drift_here": ours, "drift_there": theirs["drift"],
                                 "there": theirs["versions"], "graphs_compared": graphs}
        print(f"seed {seed}: here {ours} there {theirs['drift']} graphs {graphs}", flush=True)
    atomic_write_text(out / f"requantised_{other.name}.json", json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "train":
        train_seeds(Path(sys.argv[2]).resolve())
    elif len(sys.argv) == 4 and sys.argv[1] == "requantise":
        requantise(Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve())
    else:
        sys.exit(__doc__)
