"""INT8: ONNX Runtime static quantisation (QDQ) of an FP32 export, calibrated on letterboxed training images.

Weights are int8 per output channel, activations uint8: on x86, int8 activations fall back to slow kernels in
ONNX Runtime (measured as slow as FP32). The decode after the detection head's last Convs stays float
(:func:`livestock.deploy.onnx_model.find_detect_head` finds it in the graph, for each engine's heads): quantised,
one step (the output's range / 255, set by box coordinates in pixels) serves box pixels and confidences alike, and
every confidence below half a step becomes 0.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from livestock.deploy.images import letterbox_input
from livestock.deploy.onnx_model import find_detect_head
from livestock.model.onnx_file import check_onnx_model, load_onnx, save_onnx, set_onnx_metadata


class LetterboxCalibration:
    """ONNX Runtime calibration reader: one letterboxed image per call, with a progress bar."""

    def __init__(self, images: Sequence[str | os.PathLike | np.ndarray], input_name: str,
                 imgsz: tuple[int, int], stride: int) -> None:
        from tqdm.auto import tqdm

        self._images = iter(images)
        self._input_name = input_name
        self._imgsz, self._stride = imgsz, stride
        self._bar = tqdm(total=len(images), desc="INT8 calibration", unit="img", leave=False)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next image as the model's input feed; None when all have been read."""
        image = next(self._images, None)
        if image is None:
            self._bar.close()
            return None
        self._bar.update(1)
        return {self._input_name: letterbox_input(image, self._imgsz, self._stride)[0]}

    def rewind(self) -> None:
        """Part of the reader protocol; a no-op, as MinMax calibration reads the images once."""


def quantize_onnx_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calib_images: Sequence[str | os.PathLike | np.ndarray],
    per_channel: bool = True,
    reduce_range: bool = False,
    keep_decode_float: bool = True,
) -> Path:
    """Write the static INT8 (QDQ) form of an FP32 ONNX detector to ``dst``; returns ``dst``.

    Calibrated on ``calib_images`` (paths or BGR arrays), letterboxed as inference letterboxes them.

    ``reduce_range=True`` (7-bit weights) avoids int overflow on x86 CPUs without VNNI instructions.
    ``keep_decode_float=False`` quantises the decode too: only to show what that does (every confidence rounds to
    a whole multiple of the output's step, which the box coordinates set: below half a step, 0).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    info = check_onnx_model(src)
    if info.precision != "fp32":
        raise ValueError(f"{src}: INT8 quantisation needs the FP32 export, this model is {info.precision}")
    if len(calib_images) == 0:
        raise ValueError(f"{src}: INT8 calibration needs images (training images, letterboxed as inference does)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=dst.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "int8.onnx"
        # Shape inference + graph optimisation first, as ONNX Runtime recommends: fewer, fused nodes to quantise.
        # ONNX's own shape inference: ONNX Runtime's symbolic one has no rule for ReduceMax and fails on YOLO26's
        # top-k decode; a fixed-shape export needs no symbolic dimensions (the quantised YOLOv5 and YOLO11 graphs
        # come out the same either way).
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        model = load_onnx(prepared)
        _, decode = find_detect_head(model)  # names in the prepared graph, the one being quantised
        decode = decode if keep_decode_float else []
        reader = LetterboxCalibration(calib_images, model.graph.input[0].name, info.imgsz, info.stride)
        quantize_static(
            str(prepared), str(quantized), reader,
            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=decode, calibrate_method=CalibrationMethod.MinMax,
        )
        model8 = load_onnx(quantized)
    set_onnx_metadata(model8, precision="int8", names=info.names, stride=info.stride,
                      imgsz=f"[{info.imgsz[0]}, {info.imgsz[1]}]")
    return save_onnx(model8, dst)
