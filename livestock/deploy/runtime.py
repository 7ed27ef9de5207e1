"""One batch-1 forward pass of a model file on a given input: a ``.pt`` checkpoint of either engine in PyTorch, an
``.onnx`` export in ONNX Runtime, an OpenVINO IR folder (``*_openvino_model/``) in OpenVINO.

Each gives the decoded head output before NMS, in the layout of the model's head
(:data:`livestock.model.onnx_file.HEAD_LAYOUTS`; YOLOv5's ``(1, anchors, 5 + nc)``: boxes in input pixels, objectness,
class scores): the level at which an export is compared with its source, and the call that latency timing repeats.

OpenVINO is optional (``pip install openvino``); :func:`import_openvino` imports it without its usage telemetry.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable

import numpy as np

from livestock.deploy.onnx_model import check_model_file
from livestock.model.engine import engine_of_weights, get_engine
from livestock.model.onnx_file import check_onnx_model

if TYPE_CHECKING:
    import onnxruntime

OPENVINO_INSTALL = "pip install openvino"
# OpenVINO's names of the element types its CPU plugin computes in -> this package's precision names
_OPENVINO_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


@dataclass(frozen=True)
class ForwardRunner:
    """One forward pass of a loaded model on a fixed input, repeatable: call it for the head output (numpy).

    ``precision``: what the runtime computes in: ``fp32`` for a checkpoint, the export's own precision for ONNX
    (``fp32``, ``fp16``, ``int8``), and for OpenVINO the one its CPU plugin chose for the FP32 model (its
    ``INFERENCE_PRECISION_HINT``: ``bf16`` on CPUs with bfloat16 units, else ``fp32``)."""

    run: Callable[[], np.ndarray]
    precision: str

    def __call__(self) -> np.ndarray:
        """The head output of one forward pass."""
        return self.run()


def ort_session(path: str | os.PathLike, threads: int) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, one inter-op thread, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1  # batch 1 has no parallel branches worth a second pool
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ValueError(f"{path}: ONNX Runtime cannot load this model: {e}") from e


# ---------------------------------------------------------------- OpenVINO


def openvino_available() -> bool:
    """Whether the ``openvino`` package is installed (looked up without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def import_openvino() -> ModuleType:
    """The ``openvino`` module, imported without its usage telemetry; a ValueError saying how to install it.

    Importing OpenVINO sends a usage event to Google Analytics (and its model conversion more), unless the user
    opted out in a consent file in their home folder or ``CI=true``; its dependency ``openvino-telemetry`` does the
    sending. Imported while that package is hidden, OpenVINO's modules bind their own no-op stand-in (OpenVINO ships
    it for installs without telemetry) for good: nothing is sent and nothing is written in the user's home. A module
    that someone imported earlier in the process is returned as it is."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    if not openvino_available():
        raise ValueError(f"OpenVINO is not installed: {OPENVINO_INSTALL}")
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "openvino_telemetry"}
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # importing it now raises ImportError
    try:
        import openvino
    finally:
        del sys.modules["openvino_telemetry"]
        sys.modules.update(hidden)
    return openvino


def openvino_xml(folder: str | os.PathLike) -> Path:
    """The model file (``.xml``, its weights in the ``.bin`` beside it) of an OpenVINO IR folder; a ValueError
    naming the folder when it holds none or several."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: OpenVINO model folder not found")
    xmls = sorted(folder.glob("*.xml"))
    if len(xmls) != 1 or not xmls[0].with_suffix(".bin").is_file():
        raise ValueError(f"{folder}: expected one OpenVINO model (.xml with its .bin), found "
                         f"{[p.name for p in folder.iterdir()]}")
    return xmls[0]


def openvino_runner(folder: str | os.PathLike, x: np.ndarray, threads: int, precision: str | None = None
                    ) -> ForwardRunner:
    """A :class:`ForwardRunner` of an OpenVINO IR folder on its CPU plugin with ``threads`` inference threads.

    The latency hint (one stream: batch 1, one request at a time). ``precision`` None leaves the precision hint at
    the plugin's default, which is what a deployment gets (bf16 on CPUs with bfloat16 units, though the IR stores
    FP32); ``fp32`` (or ``bf16``, ``fp16``) asks for one, to compare with an FP32 runtime. The precision the plugin
    took is the runner's ``precision``."""
    ov = import_openvino()
    folder = Path(folder)
    core = ov.Core()
    try:
        model = core.read_model(str(openvino_xml(folder)))
    except RuntimeError as e:  # a truncated .xml or .bin
        raise ValueError(f"{folder}: OpenVINO cannot read this model: {e}") from e
    shape = model.input(0).get_partial_shape()
    if shape.is_dynamic or tuple(shape.to_shape()) != x.shape:
        raise ValueError(f"{folder}: exported for input {shape}, given {list(x.shape)}")
    config: dict[str, object] = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY"}
    if precision is not None:
        names = {ours: theirs for theirs, ours in _OPENVINO_PRECISION.items()}
        if precision not in names:
            raise ValueError(f"OpenVINO precision {precision!r}: choose one of {', '.join(names)}")
        config["INFERENCE_PRECISION_HINT"] = names[precision]
    compiled = core.compile_model(model, "CPU", config)
    name = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    request = compiled.create_infer_request()
    feed = np.ascontiguousarray(x, dtype=np.float32)

    def run() -> np.ndarray:
        request.infer({0: feed})
        return request.get_output_tensor(0).data.copy()  # the request's buffer: the next call overwrites it

    return ForwardRunner(run, _OPENVINO_PRECISION.get(name, name))


# ---------------------------------------------------------------- any model file


def forward_runner(path: str | os.PathLike, x: np.ndarray, threads: int, device: str = "cpu") -> ForwardRunner:
    """A :class:`ForwardRunner`: one forward pass of ``path`` on ``x``, returning the head output's first tensor.

    ``.onnx``: ONNX Runtime on the CPU with ``threads`` threads. A folder: an OpenVINO IR on the CPU with
    ``threads`` threads (:func:`openvino_runner`). ``.pt`` of either engine: PyTorch on ``device``, the model
    fused as the engine's inference runs it (the caller sets PyTorch's CPU threads). The output comes back to the
    host, so a call on a GPU returns only once the GPU has finished.
    """
    path = Path(path)
    if path.is_dir():
        return openvino_runner(path, x, threads)
    if path.suffix == ".onnx":
        info = check_onnx_model(path, imgsz=tuple(x.shape[2:]))
        session = ort_session(path, threads)
        feed = {session.get_inputs()[0].name: x}
        return ForwardRunner(lambda: session.run(None, feed)[0], info.precision)
    import torch

    check_model_file(path, imgsz=tuple(x.shape[2:]))
    model = get_engine(engine_of_weights(path)).load_model(path, fuse=True, device=device)
    tensor = torch.from_numpy(x).to(device)

    def run() -> np.ndarray:
        with torch.inference_mode():
            y = model(tensor)
        # eval mode: (decoded, raw per-level outputs) for both engines' heads; the decoded one is compared
        return (y[0] if isinstance(y, (list, tuple)) else y).cpu().numpy()

    return ForwardRunner(run, "fp32")


def forward_raw(weights: str | os.PathLike, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """The decoded head output of ``weights`` (``.pt``, ``.onnx`` or an OpenVINO folder) on the CPU for an input
    ``x``.

    ``x`` as :func:`livestock.deploy.images.letterbox_input` makes it: the same tensor into an export and its
    source, so that the two can be compared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads or previous))
    try:
        return forward_runner(weights, x, int(threads or 1))()
    finally:
        torch.set_num_threads(previous)
