"""One batch-1 forward pass of a weight file, ``.onnx`` in ONNX Runtime or ``.pt`` in PyTorch, on the same input.

Both give the decoded head output before NMS, in the layout of the model's head
(:data:`livestock.model.onnx_file.HEAD_LAYOUTS`; YOLOv5's ``(1, anchors, 5 + nc)``: boxes in input pixels, objectness,
class scores): the level at which an export is compared with its source, and the call that latency timing repeats.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from livestock.deploy.onnx_model import check_model_file
from livestock.model.yolov5 import models as yolov5_models
from livestock.model.onnx_file import check_onnx_model

if TYPE_CHECKING:
    import onnxruntime


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


def forward_runner(path: str | os.PathLike, x: np.ndarray, threads: int, device: str = "cpu"
                   ) -> Callable[[], np.ndarray]:
    """A zero-argument callable that runs one forward pass of ``path`` on ``x`` and returns the head output.

    ``.onnx``: ONNX Runtime on the CPU with ``threads`` threads. ``.pt``: PyTorch on ``device``, the model fused as
    YOLOv5's inference loads it (the caller sets PyTorch's CPU threads). The output comes back to the host, so a
    call on a GPU returns only once the GPU has finished.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        check_onnx_model(path, imgsz=tuple(x.shape[2:]))
        session = ort_session(path, threads)
        feed = {session.get_inputs()[0].name: x}
        return lambda: session.run(None, feed)[0]
    import torch

    check_model_file(path, imgsz=tuple(x.shape[2:]))
    model = yolov5_models.load_model(path, fuse=True, device=device)
    tensor = torch.from_numpy(x).to(device)

    def run() -> np.ndarray:
        with torch.inference_mode():
            y = model(tensor)
        return (y[0] if isinstance(y, (list, tuple)) else y).cpu().numpy()  # eval mode: (decoded, raw levels)

    return run


def forward_raw(weights: str | os.PathLike, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """The decoded head output of ``weights`` (``.pt`` or ``.onnx``) on the CPU for an input ``x``.

    ``x`` as :func:`livestock.deploy.images.letterbox_input` makes it: the same tensor into an export and its
    source, so that the two can be compared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads or previous))
    try:
        return forward_runner(weights, x, int(threads or 1))()
    finally:
        torch.set_num_threads(previous)
