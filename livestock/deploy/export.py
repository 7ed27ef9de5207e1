"""Edge deployment: YOLOv5 weights -> ONNX FP32 / FP16 / INT8, magnitude pruning, and a size / latency / mAP report.

The contest ran on edge devices with a 100 MB limit on the weight file. This stage turns a trained checkpoint into
files an ONNX Runtime (or, where installed, OpenVINO) device can run, and measures what each form costs and gives:

- **ONNX FP32**: YOLOv5's own exporter (``yolov5.export.run``), one self-contained ``.onnx`` file with a **fixed
  input shape** (batch 1, ``imgsz`` x ``imgsz``). Inference must use the same ``imgsz`` as the export:
  :func:`check_model_file` raises a clear error when it does not.
- **ONNX FP16**: the FP32 graph converted to half precision, inputs and outputs kept FP32 (Cast nodes at the
  edges), and the detection-head decode kept FP32 too: at 1280 px box centres reach 1280, where FP16 steps by 1 px.
- **ONNX INT8**: ONNX Runtime static quantisation (QDQ, per-channel weights, uint8 activations, int8 weights),
  calibrated on training images letterboxed exactly as inference letterboxes them. The decode ops after the
  Detect head's last Convs (Reshape / Transpose / Sigmoid / Split / Mul / Pow / Add / Concat) stay float:
  quantising them turns every confidence into 0. They are found from the graph (:func:`find_detect_head`),
  never from node names, so the same code serves P5 (YOLOv5n/s/m) and P6 (YOLOv5m6) models.
- **Pruning**: global L1 (magnitude) unstructured pruning of every Conv weight, made permanent, with an optional
  fine-tune hook. Zeros make the file compress better; they do not make dense CPU kernels faster, and the report
  measures exactly that.

Trust: YOLOv5 checkpoints are pickles (loading one runs code) and YOLOv5's ONNX loader ``eval``s the class names
stored in the model's metadata. Export and benchmark only files you trust.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import logging
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from livestock.fileio import atomic_write_bytes, atomic_write_csv
from livestock.records import Detections

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "onnx-fp16", "onnx-int8", "openvino")
DEFAULT_FORMATS: tuple[str, ...] = ("onnx", "onnx-fp16", "onnx-int8")
SIZE_LIMIT_MB = 100.0  # the contest's limit on the weight file
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
ONNX_OPSET = 18  # torch >= 2.9 exports opset 18 whatever is asked; asking for it avoids a failing down-conversion
_FILE_SUFFIX = {"onnx": "", "onnx-fp16": "_fp16", "onnx-int8": "_int8"}
_TWO_GB = 2**31 - 1  # protobuf's limit on one serialised message


# ---------------------------------------------------------------- model files: checks with clear errors


@dataclass(frozen=True)
class OnnxModelInfo:
    """What an exported detector says about itself: fixed input shape, classes, stride, precision."""

    path: Path
    input_shape: tuple[int, int, int, int]  # (batch, 3, height, width), fixed at export
    n_outputs_per_anchor: int  # 5 + number of classes
    names: dict[int, str]
    stride: int
    precision: str  # "fp32" | "fp16" | "int8"

    @property
    def imgsz(self) -> tuple[int, int]:
        return self.input_shape[2], self.input_shape[3]

    @property
    def nc(self) -> int:
        return self.n_outputs_per_anchor - 5


def _as_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(imgsz, (int, np.integer)):
        return int(imgsz), int(imgsz)
    hw = tuple(int(v) for v in imgsz)
    if len(hw) == 1:
        return hw[0], hw[0]
    if len(hw) != 2:
        raise ValueError(f"imgsz must be one size or (height, width), got {imgsz!r}")
    return hw  # type: ignore[return-value]


def _parse_names(text: str, where: Path) -> dict[int, str]:
    import ast

    try:
        names = ast.literal_eval(text)  # YOLOv5 writes str(dict); literal_eval reads it without running code
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"{where}: unreadable class names in the model metadata: {text[:80]!r}") from e
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise ValueError(f"{where}: class names in the model metadata are not a dict or list: {text[:80]!r}")
    return {int(k): str(v) for k, v in names.items()}


def load_onnx(path: str | os.PathLike):
    """``onnx.load`` with a clear error naming the file when it is missing, truncated or not an ONNX model."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX model file not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf DecodeError, checker ValidationError, missing external data...
        raise ValueError(f"{path}: not a valid ONNX model (corrupt or truncated file?): {e}") from e
    return model


def check_onnx_model(
    path: str | os.PathLike, imgsz: int | Sequence[int] | None = None, nc: int | None = None
) -> OnnxModelInfo:
    """Read an exported detector's fixed input shape, classes and precision; with ``imgsz`` / ``nc`` given,
    raise ValueError naming the file when they differ from what the model was exported for."""
    path = Path(path)
    model = load_onnx(path)
    graph = model.graph
    if len(graph.input) != 1 or not graph.output:
        raise ValueError(f"{path}: expected one image input and a detection output, found "
                         f"{len(graph.input)} input(s), {len(graph.output)} output(s)")
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in graph.input[0].type.tensor_type.shape.dim]
    out_dims = [d.dim_value if d.HasField("dim_value") else 0 for d in graph.output[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or 0 in dims or dims[1] != 3:
        raise ValueError(f"{path}: expected a fixed input shape (1, 3, H, W), found {dims} (dynamic export?)")
    if len(out_dims) != 3 or out_dims[2] < 6:
        raise ValueError(f"{path}: output shape {out_dims} is not a YOLOv5 detection output (1, anchors, 5 + classes)")
    meta = {p.key: p.value for p in model.metadata_props}
    if "names" not in meta or "stride" not in meta:
        raise ValueError(f"{path}: no YOLOv5 metadata (stride, names); export it with `livestock export`")
    names = _parse_names(meta["names"], path)
    info = OnnxModelInfo(path, tuple(dims), out_dims[2], names, int(meta["stride"]), meta.get("precision", "fp32"))
    if len(names) != info.nc:
        raise ValueError(f"{path}: metadata lists {len(names)} class names but the output has {info.nc} classes")
    if imgsz is not None and _as_hw(imgsz) != info.imgsz:
        h, w = _as_hw(imgsz)
        raise ValueError(
            f"{path}: exported for a fixed {info.imgsz[0]}x{info.imgsz[1]} input, asked to run at {h}x{w}; "
            f"run inference with imgsz={info.imgsz[0]} or export again with --imgsz {h}"
        )
    if nc is not None and nc != info.nc:
        raise ValueError(f"{path}: model has {info.nc} classes {list(names.values())}, the data has {nc}")
    return info


def load_checkpoint_model(weights: str | os.PathLike):
    """The FP32 ``nn.Module`` inside a YOLOv5 checkpoint (``ema`` if present, else ``model``), not fused.

    Loading unpickles the file (runs code from it): only for files the user names.
    """
    from livestock.model.yolov5_engine import load_checkpoint

    path = Path(weights)
    try:
        ckpt = load_checkpoint(path)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # torch's unpickling errors on a truncated or foreign file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated file?): {e}") from e
    model = ckpt.get("ema") or ckpt["model"]
    if not hasattr(model, "yaml") or not hasattr(model, "stride"):
        raise ValueError(f"{path}: not a YOLOv5 checkpoint (its 'model' entry is a {type(model).__name__})")
    return model.float().eval()


def check_model_file(
    path: str | os.PathLike, imgsz: int | Sequence[int] | None = None, nc: int | None = None
) -> dict:
    """Check a weight file before inference: ``.onnx`` via :func:`check_onnx_model` (fixed imgsz, classes);
    ``.pt`` by loading it (classes, imgsz a multiple of the stride). Returns ``{"names", "stride", "imgsz"}``."""
    path = Path(path)
    if path.suffix == ".onnx":
        info = check_onnx_model(path, imgsz, nc)
        return {"names": info.names, "stride": info.stride, "imgsz": info.imgsz}
    model = load_checkpoint_model(path)
    names = getattr(model, "names", None) or [f"class{i}" for i in range(int(model.yaml.get("nc", 0)))]
    names = names if isinstance(names, dict) else dict(enumerate(names))
    stride = int(max(model.stride))
    model_nc = int(model.yaml.get("nc", len(names))) if isinstance(model.yaml, dict) else len(names)
    if nc is not None and nc != model_nc:
        raise ValueError(f"{path}: model has {model_nc} classes {list(names.values())}, the data has {nc}")
    hw = _as_hw(imgsz) if imgsz is not None else None
    if hw is not None and (hw[0] % stride or hw[1] % stride):
        raise ValueError(f"{path}: imgsz {hw[0]}x{hw[1]} is not a multiple of the model's stride {stride}")
    return {"names": names, "stride": stride, "imgsz": hw}


# ---------------------------------------------------------------- the Detect head, found from the graph


def find_detect_head(model) -> tuple[list[str], list[str]]:
    """``(head_convs, decode_nodes)`` of a YOLOv5 ONNX graph (``onnx.ModelProto`` or path).

    Walking back from the graph outputs, the first Conv met on every path is one of the Detect head's output
    Convs (one per pyramid level: 3 for P5 models, 4 for P6). Everything reachable forward from those Convs'
    outputs is the decode: reshape to (anchors, 5 + classes), sigmoid, grid / anchor arithmetic, concat.
    """
    from collections import defaultdict

    if isinstance(model, (str, os.PathLike)):
        model = load_onnx(model)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    heads: list = []
    visited: set[int] = set()
    stack = [o.name for o in graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in visited:
            continue  # graph input, initializer or already seen
        visited.add(id(node))
        if node.op_type == "Conv":
            heads.append(node)
        else:
            stack.extend(node.input)
    if not heads:
        raise ValueError("no Conv found upstream of the graph output: not a YOLOv5 detection graph")

    decode: list[str] = []
    seen: set[int] = set()
    stack = [out for head in heads for out in head.output]
    while stack:
        for node in consumers.get(stack.pop(), ()):
            if id(node) not in seen:
                seen.add(id(node))
                decode.append(node.name)
                stack.extend(node.output)
    order = {node.name: i for i, node in enumerate(graph.node)}
    return sorted((h.name for h in heads), key=order.get), sorted(decode, key=order.get)


# ---------------------------------------------------------------- images, as inference sees them


def letterbox_input(image: str | os.PathLike | np.ndarray, imgsz: int | Sequence[int], stride: int = 32
                    ) -> tuple[np.ndarray, tuple[int, int]]:
    """``(input, (height, width))``: the (1, 3, H, W) float32 RGB tensor in [0, 1] that YOLOv5 inference feeds a
    fixed-shape model (``letterbox(auto=False)``, grey padding), and the original image size.

    ``image`` is a path or a BGR uint8 array as ``cv2.imread`` returns it.
    """
    import cv2

    from livestock.model.yolov5_engine import ensure_yolov5

    ensure_yolov5()
    from yolov5.utils.augmentations import letterbox

    if isinstance(image, np.ndarray):
        im0 = image
    else:
        im0 = cv2.imread(str(image))
        if im0 is None:
            raise ValueError(f"{image}: not a readable image")
    im = letterbox(im0, _as_hw(imgsz), stride=stride, auto=False)[0]
    im = np.ascontiguousarray(im.transpose((2, 0, 1))[::-1], dtype=np.float32) / 255.0  # HWC BGR -> CHW RGB
    return im[None], im0.shape[:2]


def images_from(spec: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train") -> list[Path]:
    """Image paths from a folder (recursive), a list file (one path per line), a YOLOv5 data.yaml (its ``split``
    entry) or a sequence of any of these; sorted, so calibration picks are reproducible."""
    if not isinstance(spec, (str, os.PathLike)):
        return sorted({p for item in spec for p in images_from(item, split)})
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: image folder / list / data.yaml not found")
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [path]
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if split not in doc:
            raise ValueError(f"{path}: no {split!r} entry in this data.yaml")
        root = Path(doc.get("path") or path.parent)
        root = root if root.is_absolute() else (path.parent / root)
        entries = doc[split] if isinstance(doc[split], list) else [doc[split]]
        return images_from([e if Path(e).is_absolute() else root / e for e in entries], split)
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return sorted(Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines)


def pick_evenly(items: Sequence, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


# ---------------------------------------------------------------- export


def _onnx_metadata(model, **extra: str) -> None:
    props = {p.key: p.value for p in model.metadata_props}
    props.update(extra)
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def _save_onnx(model, path: Path) -> Path:
    """One self-contained file, written atomically; a model over protobuf's 2 GB limit keeps its weights in
    ``<name>.data`` beside it (the two files must then travel together)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() < _TWO_GB:
        atomic_write_bytes(path, model.SerializeToString())
        Path(f"{path}.data").unlink(missing_ok=True)  # a stale sidecar from an earlier export
        return path
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}.data")
    return path


@contextlib.contextmanager
def _quiet_yolov5() -> Iterator[None]:
    """YOLOv5's console log at WARNING meanwhile (its model summaries and export chatter drown the report);
    handlers added by the caller, which capture messages, keep their own level."""
    from yolov5.utils.general import LOGGER

    levels = [(h, h.level) for h in LOGGER.handlers]
    for handler, _ in levels:
        handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler, level in levels:
            handler.setLevel(level)


class _CaptureLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def export_onnx_fp32(weights: str | os.PathLike, imgsz: int, out_path: str | os.PathLike) -> Path:
    """ONNX FP32 with a fixed (1, 3, imgsz, imgsz) input through ``yolov5.export.run``, saved as one file.

    YOLOv5 writes the export beside the weights; it runs on a link in a scratch folder instead, so the user's
    weights folder is left alone. With torch >= 2.9 the exporter emits opset 18 and an external ``.onnx.data``
    file; the model is reloaded with its data and saved again as a single self-contained ``.onnx``.
    """
    from livestock.model.yolov5_engine import ensure_yolov5

    weights = Path(weights).resolve()
    out_path = Path(out_path)
    info = check_model_file(weights, imgsz)  # clear errors for missing / corrupt / wrong-stride weights
    ensure_yolov5()
    import onnx
    from yolov5.export import run
    from yolov5.utils.general import LOGGER

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_path.parent) as tmp:
        link = Path(tmp) / f"{out_path.stem}.pt"
        try:
            link.symlink_to(weights)
        except OSError:
            shutil.copyfile(weights, link)
        # YOLOv5 swallows exporter exceptions into a log line and returns no file: keep its log for the error.
        capture = _CaptureLog()
        LOGGER.addHandler(capture)
        try:
            with _quiet_yolov5():
                files = run(weights=str(link), include=("onnx",), imgsz=list(_as_hw(imgsz)), device="cpu",
                            batch_size=1, opset=ONNX_OPSET, dynamic=False, simplify=False)
        finally:
            LOGGER.removeHandler(capture)
        produced = link.with_suffix(".onnx")
        if not files or not produced.is_file():
            failure = [ln for ln in capture.lines if "fail" in ln.lower()] or capture.lines[-3:]
            raise RuntimeError(f"{weights}: ONNX export failed: {' | '.join(failure)}")
        model = onnx.load(str(produced))  # pulls in the .onnx.data weights if the exporter left them outside
    h, w = _as_hw(imgsz)
    _onnx_metadata(model, imgsz=f"[{h}, {w}]", precision="fp32",
                   stride=str(info["stride"]), names=str(info["names"]))
    return _save_onnx(model, out_path)


def _sort_topologically(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (the ONNX spec's rule)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        still = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                still.append(node)
        if len(still) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near node {still[0].name!r}")
        pending = still
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def convert_onnx_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """FP32 ONNX -> FP16 weights and compute; inputs, outputs and the head decode stay FP32 (Cast nodes between).

    ``onnxruntime.transformers.float16`` ships with onnxruntime, so this needs no further package.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    check_onnx_model(src)
    model = load_onnx(src)
    _, decode = find_detect_head(model)
    model16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=decode)
    _sort_topologically(model16.graph)  # the converter appends its input Casts at the end of the node list
    _onnx_metadata(model16, precision="fp16")
    return _save_onnx(model16, Path(dst))


class _LetterboxCalibration:
    """ONNX Runtime calibration reader: one letterboxed image per call, with a progress bar."""

    def __init__(self, images: Sequence[str | os.PathLike | np.ndarray], input_name: str,
                 imgsz: tuple[int, int], stride: int) -> None:
        from tqdm.auto import tqdm

        self._images = iter(images)
        self._input_name = input_name
        self._imgsz, self._stride = imgsz, stride
        self._bar = tqdm(total=len(images), desc="INT8 calibration", unit="img", leave=False)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        if image is None:
            self._bar.close()
            return None
        self._bar.update(1)
        return {self._input_name: letterbox_input(image, self._imgsz, self._stride)[0]}

    def rewind(self) -> None:  # part of the reader protocol; one pass is all MinMax calibration needs
        pass


def quantize_onnx_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calib_images: Sequence[str | os.PathLike | np.ndarray],
    per_channel: bool = True,
    reduce_range: bool = False,
    keep_decode_float: bool = True,
) -> Path:
    """Static INT8 quantisation (QDQ) of an FP32 ONNX detector, calibrated on ``calib_images`` (paths or BGR
    arrays), letterboxed as inference letterboxes. Weights int8 per output channel, activations uint8 (on x86,
    int8 activations fall back to slow kernels here: measured as slow as FP32). The Detect head decode stays float.

    ``reduce_range=True`` (7-bit weights) avoids int overflow on x86 CPUs without VNNI instructions.
    ``keep_decode_float=False`` quantises the decode too: only to show what that does (confidences collapse to 0).
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
        quant_pre_process(str(src), str(prepared))
        model = load_onnx(prepared)
        _, decode = find_detect_head(model)  # names in the prepared graph, the one being quantised
        decode = decode if keep_decode_float else []
        reader = _LetterboxCalibration(calib_images, model.graph.input[0].name, info.imgsz, info.stride)
        quantize_static(
            str(prepared), str(quantized), reader,
            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=decode, calibrate_method=CalibrationMethod.MinMax,
        )
        model8 = load_onnx(quantized)
    _onnx_metadata(model8, precision="int8", names=str(info.names), stride=str(info.stride),
                   imgsz=f"[{info.imgsz[0]}, {info.imgsz[1]}]")
    return _save_onnx(model8, dst)


def export_openvino(onnx_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """OpenVINO IR (``.xml`` + ``.bin`` + metadata ``.yaml``, the folder layout YOLOv5's DetectMultiBackend reads),
    converted from the FP32 ONNX export. Needs the ``openvino`` package, which this project does not install."""
    try:
        import openvino as ov
    except ImportError as e:
        raise ValueError("OpenVINO export needs the `openvino` package (pip install openvino); it is not installed") from e
    import yaml

    from livestock.fileio import atomic_write_text

    info = check_onnx_model(onnx_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{Path(onnx_path).stem}.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    atomic_write_text(xml.with_suffix(".yaml"), yaml.safe_dump({"stride": info.stride, "names": info.names}))
    return out_dir


def export_model(
    weights: str | os.PathLike,
    imgsz: int = 640,
    formats: Sequence[str] = DEFAULT_FORMATS,
    calib_images: Sequence[str | os.PathLike | np.ndarray] | str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    n_calib: int = 32,
) -> dict[str, Path]:
    """Export ``weights`` for a fixed ``imgsz`` x ``imgsz`` input; returns ``{format: path}``.

    Files: ``<stem>_<imgsz>.onnx`` (FP32), ``..._fp16.onnx``, ``..._int8.onnx``, ``<stem>_<imgsz>_openvino_model/``,
    in ``out_dir`` (default: beside the weights). ``calib_images`` (INT8 only): image paths / BGR arrays, or a
    folder, list file or data.yaml (its ``train`` images); ``n_calib`` of them are taken, evenly spread.
    Inference with these files must use the same ``imgsz``. Files over the contest's 100 MB limit are flagged
    in the log (an FP32 YOLOv5m6 is 141 MB: its FP16 or INT8 form is the one to deploy).
    """
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or formats}; choose from {list(EXPORT_FORMATS)}")
    weights = Path(weights)
    # Inputs first, so a bad call fails in a second rather than after the export.
    if "onnx-int8" in formats:
        if calib_images is None:
            raise ValueError(f"{weights}: INT8 export needs calibration images (--calib: folder, list or data.yaml)")
        if isinstance(calib_images, (str, os.PathLike)):
            source = calib_images
            calib_images = images_from(source)
            if not calib_images:
                raise ValueError(f"{source}: no calibration images found (.jpg / .jpeg / .png / .bmp)")
        calib_images = pick_evenly(calib_images, n_calib)
    if "openvino" in formats and importlib.util.find_spec("openvino") is None:
        raise ValueError("OpenVINO export needs the `openvino` package (pip install openvino); it is not installed")
    out_dir = Path(out_dir) if out_dir is not None else weights.parent
    stem = f"{weights.stem}_{imgsz}"
    # The FP32 export is the source of every other format; when it is not asked for, it is a scratch file.
    fp32 = out_dir / (f"{stem}.onnx" if "onnx" in formats else f".{stem}.scratch.onnx")
    paths: dict[str, Path] = {"onnx": export_onnx_fp32(weights, imgsz, fp32)}
    try:
        if "onnx-fp16" in formats:
            paths["onnx-fp16"] = convert_onnx_fp16(fp32, out_dir / f"{stem}_fp16.onnx")
        if "onnx-int8" in formats:
            paths["onnx-int8"] = quantize_onnx_int8(fp32, out_dir / f"{stem}_int8.onnx", calib_images)
        if "openvino" in formats:
            paths["openvino"] = export_openvino(fp32, out_dir / f"{stem}_openvino_model")
    finally:
        if "onnx" not in formats:
            fp32.unlink(missing_ok=True)
            paths.pop("onnx", None)
    for fmt, path in paths.items():
        mb = file_size_mb(path)
        if mb > SIZE_LIMIT_MB:
            logging.getLogger(__name__).warning("%s: %.1f MB, over the contest's %.0f MB limit", path, mb, SIZE_LIMIT_MB)
    return paths


# ---------------------------------------------------------------- pruning


def conv_weight_sparsity(model) -> float:
    """Fraction of Conv weights that are exactly zero."""
    import torch.nn as nn

    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    total = sum(w.numel() for w in convs)
    return float(sum(int((w == 0).sum()) for w in convs) / max(total, 1))


def prune_conv_weights(model, sparsity: float) -> float:
    """Global L1 (magnitude) unstructured pruning of all Conv2d weights to ``sparsity``, made permanent
    (the masks are folded into the weights). Returns the resulting Conv weight sparsity."""
    import torch.nn as nn
    from torch.nn.utils import prune

    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    prune.global_unstructured(convs, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    for module, name in convs:
        prune.remove(module, name)
    return conv_weight_sparsity(model)


def _save_checkpoint(model, path: Path, half: bool = True) -> Path:
    """A checkpoint YOLOv5 loads (``attempt_load``, ``--weights``): ``{'model': module}``, stored FP16 as YOLOv5's
    own ``strip_optimizer`` stores trained weights (computation is FP32 after loading)."""
    import copy

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    module = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save({"model": module.half() if half else module.float(), "epoch": -1}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def prune_weights(
    weights: str | os.PathLike,
    sparsity: float,
    out_path: str | os.PathLike,
    fine_tune: Callable[[Path], str | os.PathLike] | None = None,
) -> Path:
    """Prune a YOLOv5 checkpoint's Conv weights to ``sparsity`` (global magnitude) and save it to ``out_path``.

    ``fine_tune``, optional: called with the pruned checkpoint's path, returns the path of a fine-tuned
    checkpoint (for example a few epochs of ``livestock train`` from those weights). Dense training regrows the
    zeroed weights, so the fine-tuned weights are pruned again to the same sparsity (prune, fine-tune, re-prune).
    """
    out_path = Path(out_path)
    model = load_checkpoint_model(weights)
    prune_conv_weights(model, sparsity)
    _save_checkpoint(model, out_path)
    if fine_tune is not None:
        tuned = Path(fine_tune(out_path))
        model = load_checkpoint_model(tuned)
        prune_conv_weights(model, sparsity)
        _save_checkpoint(model, out_path)
    return out_path


# ---------------------------------------------------------------- models to time without trained weights


def random_init_weights(name: str, out_path: str | os.PathLike, nc: int = 2, seed: int = 0) -> Path:
    """A checkpoint of an untrained ``name`` model (``nc`` classes, fixed seed): enough to time a model and to
    check an export, meaningless for accuracy."""
    from livestock.model.yolov5_engine import ensure_yolov5, model_cfg
    from livestock.records import CLASS_NAMES

    cfg = model_cfg(name)
    ensure_yolov5()
    import torch
    from yolov5.models.yolo import DetectionModel

    torch.manual_seed(seed)
    with _quiet_yolov5():
        model = DetectionModel(str(cfg), ch=3, nc=nc, anchors=None)
    model.names = {i: (CLASS_NAMES[i] if i < len(CLASS_NAMES) else f"class{i}") for i in range(nc)}
    return _save_checkpoint(model.eval(), Path(out_path))


# ---------------------------------------------------------------- raw head output, for checks


def forward_raw(weights: str | os.PathLike, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """The decoded head output ``(1, anchors, 5 + nc)`` (boxes in input pixels, objectness, class scores) of a
    ``.pt`` (PyTorch, fused as ``DetectMultiBackend`` loads it) or ``.onnx`` file (ONNX Runtime) for the input
    ``x`` of :func:`letterbox_input`: the same tensor into both, so an export can be compared with its source."""
    path = Path(weights)
    if path.suffix == ".onnx":
        check_onnx_model(path, imgsz=tuple(x.shape[2:]))
        session = ort_session(path, threads or 1)
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads or previous))
    try:
        return _latency_runner(path, x, int(threads or previous))()
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------- measurements


def file_size_mb(path: str | os.PathLike) -> float:
    """Size in MB (10^6 bytes); for a folder (OpenVINO IR) the sum of its files."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6


def compressed_size_mb(path: str | os.PathLike, level: int = 6) -> float:
    """Size after zlib (deflate, as zip/gzip) compression: what zeros from pruning buy on disk or on the wire."""
    compressor = zlib.compressobj(level)
    total = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            total += len(compressor.compress(chunk))
    return (total + len(compressor.flush())) / 1e6


def ort_session(path: str | os.PathLike, threads: int):
    """ONNX Runtime CPU session with ``threads`` intra-op threads, one inter-op thread, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ValueError(f"{path}: ONNX Runtime cannot load this model: {e}") from e


def _latency_runner(path: Path, x: np.ndarray, threads: int) -> Callable[[], np.ndarray]:
    """A zero-argument callable running one batch-1 forward pass of ``path`` on ``x`` and returning the head
    output: ``.onnx`` in ONNX Runtime with ``threads`` threads, ``.pt`` in PyTorch (the caller sets its threads)."""
    if path.suffix == ".onnx":
        session = ort_session(path, threads)
        feed = {session.get_inputs()[0].name: x}
        return lambda: session.run(None, feed)[0]
    from livestock.model.yolov5_engine import ensure_yolov5

    ensure_yolov5()
    import torch
    from yolov5.models.experimental import attempt_load

    check_model_file(path, imgsz=tuple(x.shape[2:]))
    with _quiet_yolov5():
        # absolute: YOLOv5 takes a relative name that is not found from its cwd for a Hugging Face repository
        model = attempt_load(str(path.resolve()), device=torch.device("cpu"), inplace=True, fuse=True).eval()  # as DetectMultiBackend
    tensor = torch.from_numpy(x)

    def run() -> np.ndarray:
        with torch.inference_mode():
            y = model(tensor)
        return (y[0] if isinstance(y, (list, tuple)) else y).numpy()

    return run


def time_latency(
    files: dict[str, Path], imgsz: int, threads: int = 2, runs: int = 20, repeats: int = 3, warmup: int = 3,
    image: str | os.PathLike | None = None,
) -> dict[str, list[float]]:
    """Batch-1 forward latencies (ms) of each file, model forward only (no letterbox, no NMS).

    Threads are pinned (``torch.set_num_threads`` / ORT ``intra_op_num_threads``). The files are timed in
    ``repeats`` interleaved rounds of ``runs`` calls, so a burst of load from other processes spreads over all
    of them instead of hitting one; report the median.
    """
    import torch
    from tqdm.auto import tqdm

    if image is not None:
        x = letterbox_input(image, imgsz)[0]
    else:
        x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        runners = {key: _latency_runner(Path(p), x, threads) for key, p in files.items()}
        times: dict[str, list[float]] = {key: [] for key in files}
        with tqdm(total=repeats * len(runners) * runs, desc=f"latency @{imgsz}", unit="run", leave=False) as bar:
            for _ in range(repeats):
                for key, run in runners.items():
                    for _ in range(warmup):
                        run()
                    for _ in range(runs):
                        t0 = time.perf_counter()
                        run()
                        times[key].append((time.perf_counter() - t0) * 1000.0)
                        bar.update(1)
    finally:
        torch.set_num_threads(previous)
    return times


def ground_truth_frame(images: Sequence[str | os.PathLike], names: dict[int, str]) -> pd.DataFrame:
    """The contest answer format (ImageID, LabelName, XMin, XMax, YMin, YMax, normalised) from YOLO label files."""
    from livestock.data.yolo_format import label_path_for, read_label_file

    rows = []
    for image in images:
        label = label_path_for(image)
        if not label.is_file():
            continue  # an image without a label file has no boxes
        class_ids, yolo = read_label_file(label)
        for c, (xc, yc, w, h) in zip(class_ids.tolist(), yolo.tolist()):
            rows.append((Path(image).name, names[int(c)], xc - w / 2, xc + w / 2, yc - h / 2, yc + h / 2))
    return pd.DataFrame(rows, columns=["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"])


def predictions_frame(detections: Iterable[Detections], names: dict[int, str]) -> pd.DataFrame:
    """The contest submission format (normalised corners), each image's rows by confidence, highest first."""
    rows = []
    for det in detections:
        det = det.sorted_by_score()
        for (x1, y1, x2, y2), score, c in zip(det.boxes.tolist(), det.scores.tolist(), det.class_ids.tolist()):
            rows.append((det.image_id, names[int(c)], score, x1 / det.width, x2 / det.width,
                         y1 / det.height, y2 / det.height))
    return pd.DataFrame(rows, columns=["ImageID", "LabelName", "Conf", "XMin", "XMax", "YMin", "YMax"])


def evaluate_map(
    weights: str | os.PathLike, data_yaml: str | os.PathLike, imgsz: int, iou_threshold: float = 0.75,
    conf: float = 0.001, nms_iou: float = 0.68, max_images: int | None = None,
) -> float:
    """Contest mAP (``livestock.evaluation.metrics``, IoU 0.75 by default) of ``weights`` (.pt or .onnx) on the validation
    images of ``data_yaml``, through the deployment path (``livestock.evaluation.detect.detect``: DetectMultiBackend,
    YOLOv5's letterbox and NMS; conf 0.001 and NMS IoU 0.68 as the original entry's inference).

    As in YOLOv5's ``detect.py``, ``.pt`` weights see a minimal-rectangle letterbox and fixed-shape exports the
    full ``imgsz`` square: part of a difference between a ``.pt`` and its ONNX FP32 score comes from that."""
    from livestock.evaluation.metrics import mean_average_precision_for_boxes
    from livestock.evaluation.detect import detect

    images = images_from(data_yaml, split="val")
    if max_images:
        images = pick_evenly(images, max_images)
    if not images:
        raise ValueError(f"{data_yaml}: no validation images")
    names = check_model_file(weights, imgsz)["names"]
    answer = ground_truth_frame(images, names)
    if answer.empty:
        raise ValueError(f"{data_yaml}: the validation images have no labelled boxes to score against")
    detections = detect(weights, images, imgsz, conf, nms_iou, device="cpu", progress=False)
    preds = predictions_frame(detections, names)
    return float(mean_average_precision_for_boxes(answer, preds, iou_threshold=iou_threshold)[0])


# ---------------------------------------------------------------- the report


BENCH_COLUMNS = [
    "model", "imgsz", "variant", "sparsity", "stored", "size_mb", "size_zip_mb", "under_100mb", "latency_ms",
    "latency_p90_ms", "x_faster_than_pytorch", "x_faster_than_onnx_fp32", "x_smaller_than_onnx_fp32",
    "map75", "threads", "file",
]


def _export_or_reuse(weights: Path, imgsz: int, formats: Sequence[str], calib: Sequence, work: Path
                     ) -> dict[str, Path]:
    """Exports of ``weights`` in ``work``; files already there and newer than the weights are reused, so a
    kept bench folder (``--keep-models``) can be timed again without exporting again."""
    stem = f"{weights.stem}_{imgsz}"
    expected = {f: work / f"{stem}{_FILE_SUFFIX[f]}.onnx" for f in formats}
    source_time = weights.stat().st_mtime
    if all(p.is_file() and p.stat().st_mtime >= source_time for p in expected.values()):
        try:
            for path in expected.values():
                check_onnx_model(path, imgsz=imgsz)
            return expected
        except ValueError:
            pass  # a damaged file: export again
    return export_model(weights, imgsz, formats, calib_images=calib, out_dir=work)


def _variants(
    weights: Path, label: str, imgsz: int, work: Path, calib: Sequence, prune_sparsity: float | None,
) -> list[tuple[str, float, str, Path]]:
    """(variant, sparsity, stored precision, file) for one model at one size, exporting what is needed."""
    rows: list[tuple[str, float, str, Path]] = []
    exports = _export_or_reuse(weights, imgsz, DEFAULT_FORMATS, calib, work)
    rows += [("pytorch-fp32", 0.0, _stored_precision(weights), weights),
             ("onnx-fp32", 0.0, "fp32", exports["onnx"]),
             ("onnx-fp16", 0.0, "fp16", exports["onnx-fp16"]),
             ("onnx-int8", 0.0, "int8", exports["onnx-int8"])]
    if prune_sparsity:
        pruned = work / f"{label}_pruned{int(round(prune_sparsity * 100))}.pt"
        if not pruned.is_file() or pruned.stat().st_mtime < weights.stat().st_mtime:
            prune_weights(weights, prune_sparsity, pruned)
        pexports = _export_or_reuse(pruned, imgsz, ("onnx", "onnx-int8"), calib, work)
        rows += [("pytorch-fp32", prune_sparsity, _stored_precision(pruned), pruned),
                 ("onnx-fp32", prune_sparsity, "fp32", pexports["onnx"]),
                 ("onnx-int8", prune_sparsity, "int8", pexports["onnx-int8"])]
    return rows


def _noise_images(size: int, n: int = 4) -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8) for i in range(n)]


def _stored_precision(weights: Path) -> str:
    """Precision the checkpoint stores its weights in (YOLOv5 saves trained weights FP16, computes FP32)."""
    from livestock.model.yolov5_engine import load_checkpoint

    ckpt = load_checkpoint(weights)
    module = ckpt.get("ema") or ckpt["model"]
    return str(next(module.parameters()).dtype).replace("torch.float", "fp")


def benchmark_models(
    models: Sequence[str] = ("yolov5n", "yolov5s", "yolov5m6"),
    imgsz: Sequence[int] = (640,),
    extra: Sequence[tuple[str, int]] = (("yolov5m6", 1280),),
    threads: int = 2,
    runs: int = 20,
    weights: str | os.PathLike | None = None,
    data_yaml: str | os.PathLike | None = None,
    prune_sparsity: float | None = 0.5,
    repeats: int = 3,
    work_dir: str | os.PathLike | None = None,
    n_calib: int = 32,
    max_val_images: int | None = None,
) -> pd.DataFrame:
    """Size, batch-1 CPU latency and (with trained ``weights`` + ``data_yaml``) contest mAP@0.75 of every
    deployable form of each model: PyTorch FP32, ONNX FP32 / FP16 / INT8, and magnitude-pruned variants.

    ``models`` are YOLOv5 architecture names timed with random weights (latency and size do not depend on the
    values; the INT8 calibration of such a model is meaningless for accuracy, fine for timing), each at every
    ``imgsz``, plus the ``(model, imgsz)`` pairs in ``extra``. Trained ``weights`` add rows of their own at the
    first ``imgsz``, calibrated on and scored with the ``data_yaml`` images.
    Latency: median over ``repeats`` x ``runs`` forward passes with ``threads`` threads. Exported files live in
    ``work_dir`` (a temporary folder, removed afterwards, when not given).
    """
    from tqdm.auto import tqdm

    jobs: list[tuple[str, int, Path | None]] = [(m, int(s), None) for m in models for s in imgsz]
    jobs += [(m, int(s), None) for m, s in extra if (m, int(s), None) not in jobs]
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"{weights}: trained weights not found")
        jobs.append((Path(weights).stem, int(imgsz[0]), Path(weights).resolve()))
    if data_yaml is not None and weights is None:
        raise ValueError(f"{data_yaml}: mAP needs trained --weights; random-init models are timed only")

    scratch = None
    if work_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="livestock-bench-")
        work = Path(scratch.name)
    else:
        work = Path(work_dir)
    rows = []
    try:
        for label, size, trained in tqdm(jobs, desc="bench", unit="model"):
            folder = work / f"{label}_{size}"
            folder.mkdir(parents=True, exist_ok=True)
            if trained is None:
                source = work / f"{label}.pt"
                if not source.is_file():
                    random_init_weights(label, source)
                calib, image = _noise_images(size), None  # random weights have nothing to calibrate for
            elif data_yaml is not None:
                source = trained
                calib = pick_evenly(images_from(data_yaml, "train"), n_calib)
                if not calib:
                    raise ValueError(f"{data_yaml}: no training images to calibrate INT8 on")
                image = calib[0]
            else:  # timing only: without images the INT8 accuracy of these weights is not measured
                source, calib, image = trained, _noise_images(size), None
            variants = _variants(source, label, size, folder, calib, prune_sparsity)
            files = {f"{v}|{s}": p for v, s, _, p in variants}
            times = time_latency(files, size, threads=threads, runs=runs, repeats=repeats, image=image)
            for variant, sparsity, stored, path in variants:
                t = np.asarray(times[f"{variant}|{sparsity}"])
                score = np.nan
                if trained is not None and data_yaml is not None:
                    score = evaluate_map(path, data_yaml, size, max_images=max_val_images)
                rows.append({
                    "model": label, "imgsz": size, "variant": variant, "sparsity": sparsity, "stored": stored,
                    "size_mb": file_size_mb(path), "size_zip_mb": compressed_size_mb(path),
                    "latency_ms": float(np.median(t)), "latency_p90_ms": float(np.percentile(t, 90)),
                    "map75": score, "threads": threads, "file": path.name,
                })
    finally:
        if scratch is not None:
            scratch.cleanup()
    df = pd.DataFrame(rows)
    df["under_100mb"] = df["size_mb"] <= SIZE_LIMIT_MB
    for (label, size), group in df.groupby(["model", "imgsz"], sort=False):
        dense = group[group["sparsity"] == 0]
        pt = dense.loc[dense["variant"] == "pytorch-fp32", "latency_ms"].iloc[0]
        onnx32 = dense.loc[dense["variant"] == "onnx-fp32"].iloc[0]
        df.loc[group.index, "x_faster_than_pytorch"] = pt / group["latency_ms"]
        df.loc[group.index, "x_faster_than_onnx_fp32"] = onnx32["latency_ms"] / group["latency_ms"]
        df.loc[group.index, "x_smaller_than_onnx_fp32"] = onnx32["size_mb"] / group["size_mb"]
    return df[BENCH_COLUMNS]


def format_bench_table(df: pd.DataFrame) -> str:
    """The report as a fixed-width table (what ``livestock bench`` prints)."""
    show = df.drop(columns=["file", "threads"]).copy()
    show["sparsity"] = show["sparsity"].map(lambda s: f"{s:.0%}")
    return show.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-")


def plot_bench(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Latency against file size and, where measured, against mAP@0.75 (one point per variant), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_map = df["map75"].notna().any()
    fig, axes = plt.subplots(1, 2 if has_map else 1, figsize=(13 if has_map else 7, 5), squeeze=False)
    panels = [("size_mb", "file size (MB)")] + ([("map75", "mAP@0.75 (contest metric)")] if has_map else [])
    markers = {"pytorch-fp32": "o", "onnx-fp32": "s", "onnx-fp16": "^", "onnx-int8": "D"}
    for ax, (column, ylabel) in zip(axes[0], panels):
        data = df[df[column].notna()]
        for (label, size), group in data.groupby(["model", "imgsz"], sort=False):
            colour = ax._get_lines.get_next_color()
            for _, row in group.iterrows():
                pruned = row["sparsity"] > 0
                ax.scatter(row["latency_ms"], row[column], color=colour, marker=markers.get(row["variant"], "o"),
                           facecolors="none" if pruned else colour, s=55)
                if not pruned:  # pruned points sit beside their dense twin; one label is enough
                    ax.annotate(row["variant"].replace("pytorch", "pt"), (row["latency_ms"], row[column]),
                                fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.scatter([], [], color=colour, label=f"{label}@{size}")
        if column == "size_mb":
            ax.axhline(SIZE_LIMIT_MB, color="grey", linestyle="--", linewidth=1)
            ax.text(0.01, SIZE_LIMIT_MB, "100 MB limit", va="bottom", fontsize=8, color="grey",
                    transform=ax.get_yaxis_transform())
        ax.set_xscale("log")
        ax.set_xlabel(f"CPU latency per image, batch 1, {int(df['threads'].iloc[0])} threads (ms, log)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Deployable forms: filled = dense, hollow = pruned")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------- CLI


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cli_export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="YOLOv5 checkpoint (.pt) to export (a pickle: trusted files only)")
    parser.add_argument("--imgsz", type=int, default=640, help="fixed square input size; inference must use the same")
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                        help=f"comma-separated, from {','.join(EXPORT_FORMATS)} (openvino needs the openvino package)")
    parser.add_argument("--calib", default=None, help="INT8 calibration images: folder, list file or data.yaml (train)")
    parser.add_argument("--n-calib", type=int, default=32, help="number of calibration images, spread evenly")
    parser.add_argument("--out", default=None, help="output folder (default: beside the weights)")


def cli_export(args: argparse.Namespace) -> int:
    paths = export_model(args.weights, args.imgsz, _csv_list(args.formats), calib_images=args.calib,
                         out_dir=args.out, n_calib=args.n_calib)
    for fmt, path in paths.items():
        mb = file_size_mb(path)
        flag = "" if mb <= SIZE_LIMIT_MB else f"  (over the {SIZE_LIMIT_MB:.0f} MB limit)"
        print(f"{fmt:<10} {mb:8.1f} MB  {path}{flag}")
    return 0


def cli_bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="yolov5n,yolov5s,yolov5m6", help="YOLOv5 architectures, timed with random weights")
    parser.add_argument("--imgsz", default="640", help="comma-separated input sizes for every model")
    parser.add_argument("--extra", default="", help="extra model@size pairs, e.g. yolov5m6@1280")
    parser.add_argument("--weights", default=None, help="trained checkpoint to add (mAP needs --data)")
    parser.add_argument("--data", default=None, help="data.yaml: train images calibrate INT8, val images give mAP@0.75")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch and ONNX Runtime")
    parser.add_argument("--runs", type=int, default=20, help="timed forward passes per round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; latency is the median of all")
    parser.add_argument("--prune", type=float, default=0.5, help="sparsity of the pruned variants (0: none)")
    parser.add_argument("--out", default="runs/bench", help="folder for bench.csv and bench.png")
    parser.add_argument("--keep-models", action="store_true", help="keep exported files in OUT/models")


def cli_bench(args: argparse.Namespace) -> int:
    out = Path(args.out)
    extra = []
    for item in _csv_list(args.extra):
        name, sep, size = item.partition("@")
        if not sep or not size.isdigit():
            raise ValueError(f"--extra {item!r}: expected model@size, e.g. yolov5m6@1280")
        extra.append((name, int(size)))
    df = benchmark_models(
        models=_csv_list(args.models), imgsz=[int(s) for s in _csv_list(args.imgsz)], extra=extra,
        threads=args.threads, runs=args.runs, repeats=args.repeats, weights=args.weights, data_yaml=args.data,
        prune_sparsity=args.prune or None, work_dir=out / "models" if args.keep_models else None,
    )
    atomic_write_csv(df, out / "bench.csv")
    plot_bench(df, out / "bench.png")
    print(format_bench_table(df))
    print(f"\nwrote {out / 'bench.csv'} and {out / 'bench.png'}")
    return 0
