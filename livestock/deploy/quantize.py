"""INT8: ONNX Runtime static quantisation (QDQ) of an FP32 export, calibrated on letterboxed training images.

Two targets, one calibration:

- ``onnxruntime`` (the default, for CPUs): weights int8 per output channel, activations uint8 with a zero point
  (asymmetric): on x86, int8 activations fall back to slow kernels in ONNX Runtime (measured as slow as FP32).
  The weights use 7 of the 8 bits (``reduce_range``): on an x86 CPU without VNNI (AVX2 or AVX-512 only: AMD Zen 2 /
  Zen 3, Intel before Cascade Lake) ONNX Runtime multiplies u8 activations by s8 weights with an instruction that
  adds pairs of products into 16 bits and saturates, which 8-bit weights overflow. Measured on such a CPU (AVX2, no
  VNNI), 8-bit weights cost a from-scratch YOLO11n 0.25 test mAP@0.75 of 0.70 and 7-bit weights 0.002; over three
  main-job YOLOv5n models 0.010 ± 0.011 against -0.004 ± 0.007 (``results/int8_saturation/``). A file that is
  right only on some CPUs is no edge export, so 7 bits is the default on this target; ``reduce_range=False``
  (``livestock export --cpu-int8-weight-bits 8``) gives 8-bit weights for a runtime known to have VNNI (or ARM's
  dot-product instructions).
- ``tensorrt`` (for a Jetson or any NVIDIA GPU): TensorRT builds INT8 engines from such a QDQ graph only when it
  follows its rules: every QuantizeLinear / DequantizeLinear int8 with a zero point of 0 (symmetric), per output
  channel on a Conv's weights, and no int32 bias (its parser stops at the first asymmetric zero point: "Non-zero
  zero point is not supported"). So activations are int8 and symmetric and biases stay float;
  :func:`tensorrt_qdq_problems` checks the written graph against those rules. ONNX Runtime runs the file too
  (slowly on x86), which is how its accuracy is measured without TensorRT.

In both, the detection head's last Convs and the decode after them stay float
(:func:`livestock.deploy.onnx_model.find_detect_head` finds them in the graph, for each engine's heads). The decode:
quantised, one step (the output's range / 255, set by box coordinates in pixels) serves box pixels and confidences
alike, and every confidence below half a step becomes 0. The head Convs: one range over all their outputs
(objectness and class logits, box offsets or box-bin logits) is coarse for each, and symmetric (TensorRT) twice as
coarse: in int8 they moved a toy YOLO11n's boxes to IoU 0.35 and a YOLO26n one-to-many head's confidences by 0.12
against FP32 (0.93 and 0.07 float), and a toy YOLOv5n's raw box sides by 3.8 px at 64 px in the CPU file (0.6 px
float). They are a few 1x1 Convs, a negligible share of the arithmetic; over nine from-scratch models of both
engines, int8 or float head Convs made no difference to test mAP@0.75 (−0.0001 ± 0.0029,
``results/edge_int8_head/``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from livestock.deploy.images import letterbox_input
from livestock.deploy.onnx_model import find_detect_head
from livestock.model.onnx_file import check_onnx_model, load_onnx, save_onnx, set_onnx_metadata

if TYPE_CHECKING:
    import onnx

QUANT_TARGETS: tuple[str, ...] = ("onnxruntime", "tensorrt")


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
    reduce_range: bool | None = None,
    keep_decode_float: bool = True,
    target: str = "onnxruntime",
    keep_head_float: bool = True,
) -> Path:
    """Write the static INT8 (QDQ) form of an FP32 ONNX detector to ``dst``; returns ``dst``.

    Calibrated on ``calib_images`` (paths or BGR arrays), letterboxed as inference letterboxes them.
    ``target``: ``onnxruntime`` (uint8 activations, for CPUs) or ``tensorrt`` (symmetric int8 only, float biases:
    the graph TensorRT's ONNX parser accepts; checked before the file is written).

    ``reduce_range``: 7-bit weights, which x86 CPUs without VNNI multiply without saturating (see the module
    docstring); None is the target's choice (7 bits for ``onnxruntime``, 8 for ``tensorrt``, whose int8 products on
    a GPU do not saturate).
    ``keep_decode_float=False`` quantises the decode too: only to show what that does (every confidence rounds to
    a whole multiple of the output's step, which the box coordinates set: below half a step, 0).
    ``keep_head_float=False`` quantises the head's last Convs too (see the module docstring).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if target not in QUANT_TARGETS:
        raise ValueError(f"unknown INT8 target {target!r}; choose from {list(QUANT_TARGETS)}")
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
        heads, decode = find_detect_head(model)  # names in the prepared graph, the one being quantised
        tensorrt = target == "tensorrt"
        reduce_range = not tensorrt if reduce_range is None else reduce_range
        keep_float = (list(decode) if keep_decode_float else []) + (list(heads) if keep_head_float else [])
        reader = LetterboxCalibration(calib_images, model.graph.input[0].name, info.imgsz, info.stride)
        quantize_static(
            str(prepared), str(quantized), reader,
            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
            activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
            if tensorrt else None,
        )
        model8 = load_onnx(quantized)
    if tensorrt and (problems := tensorrt_qdq_problems(model8)):
        raise RuntimeError(f"{dst}: the INT8 graph breaks TensorRT's rules in {len(problems)} nodes, first: "
                           f"{problems[0]}")
    set_onnx_metadata(model8, precision="int8", names=info.names, stride=info.stride,
                      imgsz=f"[{info.imgsz[0]}, {info.imgsz[1]}]", int8_target=target,
                      int8_weight_bits="7" if reduce_range else "8")
    return save_onnx(model8, dst)


def tensorrt_qdq_problems(model: "onnx.ModelProto") -> list[str]:
    """Where an ONNX QDQ graph breaks the rules of TensorRT's INT8 (explicit quantisation); empty when it keeps them.

    One line per offending QuantizeLinear / DequantizeLinear node: a zero point that is not int8 or not all 0, or a
    DequantizeLinear of a stored tensor that is not int8 (an int32 bias); a per-channel DequantizeLinear of a Conv
    weight must run along axis 0, the output channels. These are the rules of TensorRT's ONNX parser (10.x:
    "Non-zero zero point is not supported"; an int32 bias stops it too, NVIDIA/TensorRT#3360), checked here
    because TensorRT itself needs a CUDA device to parse a graph."""
    from onnx import TensorProto, numpy_helper

    stored = {init.name: init for init in model.graph.initializer}
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) > 2 and node.input[2]:
            zero = numpy_helper.to_array(stored[node.input[2]]) if node.input[2] in stored else None
            if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
                kind = "not stored" if zero is None else f"{zero.dtype}, max |value| {int(np.abs(zero).max())}"
                problems.append(f"{node.op_type} {node.name}: zero point {kind}, TensorRT needs int8 zeros")
        if node.op_type != "DequantizeLinear" or node.input[0] not in stored:
            continue
        data_type = stored[node.input[0]].data_type  # the stored type: no need to unpack the weights
        if data_type != TensorProto.INT8:
            dtype = TensorProto.DataType.Name(data_type).lower()
            problems.append(f"DequantizeLinear {node.name}: {dtype} input {node.input[0]}, TensorRT dequantises "
                            f"int8 only")
        scale = numpy_helper.to_array(stored[node.input[1]]) if node.input[1] in stored else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale is not None and scale.size > 1 and set(node.output) & conv_weights and axis != 0:
            problems.append(f"DequantizeLinear {node.name}: per-channel along axis {axis}, TensorRT needs 0")
    return problems
