"""ONNX detector files: read one with clear errors, check what it was exported for, write one back.

Inference (``livestock.evaluation``) and deployment (``livestock.deploy``) both read exported detectors; the
checks live here, below both, so that neither has to import the other. No YOLOv5 import: an exported file is
read from its own graph and metadata (``stride``, ``names``, ``precision``, written by ``livestock export`` or by
Ultralytics' exporter with ``engine`` and ``end2end``).

The output layout depends on the head (see :mod:`livestock.model.engine`), and only the metadata tells them apart
(a one-class YOLOv5 output has the end-to-end shape):

- ``objectness`` (YOLOv5): ``(1, anchors, 5 + classes)``, rows of centre xywh, objectness, class scores;
- ``class`` (YOLOv8 / YOLO11, YOLO26's one-to-many head): ``(1, 4 + classes, anchors)``, columns of centre xywh
  and class scores;
- ``end_to_end`` (YOLO26's one-to-one head): ``(1, detections, 6)``, rows of corners, confidence, class index.
"""
from __future__ import annotations

import ast
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from livestock.fileio import atomic_write_bytes

if TYPE_CHECKING:
    import onnx

_TWO_GB = 2**31 - 1  # protobuf's limit on one serialised message
HEAD_LAYOUTS: tuple[str, ...] = ("objectness", "class", "end_to_end")  # see the module docstring


@dataclass(frozen=True)
class OnnxModelInfo:
    """What an exported detector says about itself: fixed input shape, output layout, classes, stride, precision."""

    path: Path
    input_shape: tuple[int, int, int, int]  # (batch, 3, height, width), fixed at export
    output_shape: tuple[int, int, int]
    head: str  # one of HEAD_LAYOUTS
    names: dict[int, str]
    stride: int
    precision: str  # "fp32" | "fp16" | "int8"

    @property
    def imgsz(self) -> tuple[int, int]:
        """The fixed input size, (height, width)."""
        return self.input_shape[2], self.input_shape[3]

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)


def onnx_engine(metadata: dict[str, str]) -> str:
    """The engine that wrote an ONNX export, from its metadata: the ``engine`` entry, else Ultralytics when its
    exporter's ``author`` entry says so, else ``yolov5`` (YOLOv5's exporter writes neither)."""
    if "engine" in metadata:
        return metadata["engine"]
    return "ultralytics" if metadata.get("author", "").startswith("Ultralytics") else "yolov5"


def _head_layout(metadata: dict[str, str]) -> str:
    if metadata.get("end2end") == "True":  # Ultralytics' exporter records which head it exported
        return "end_to_end"
    return "class" if onnx_engine(metadata) == "ultralytics" else "objectness"


def _classes_in_output(head: str, out_dims: list[int]) -> int | None:
    """The number of classes an output of that layout holds, or None when its shape does not say (end-to-end)."""
    if head == "objectness":
        return out_dims[2] - 5
    if head == "class":
        return out_dims[1] - 4
    return None


def as_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    """An image size given as one number or as (height, width), as (height, width)."""
    if isinstance(imgsz, (int, np.integer)):
        return int(imgsz), int(imgsz)
    hw = tuple(int(v) for v in imgsz)
    if len(hw) == 1:
        return hw[0], hw[0]
    if len(hw) != 2:
        raise ValueError(f"imgsz must be one size or (height, width), got {imgsz!r}")
    return hw  # type: ignore[return-value]


def _parse_names(text: str, where: Path) -> dict[int, str]:
    try:
        names = ast.literal_eval(text)  # YOLOv5 writes str(dict); literal_eval reads it without running code
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"{where}: unreadable class names in the model metadata: {text[:80]!r}") from e
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise ValueError(f"{where}: class names in the model metadata are not a dict or list: {text[:80]!r}")
    return {int(k): str(v) for k, v in names.items()}


def load_onnx(path: str | os.PathLike) -> "onnx.ModelProto":
    """The ONNX model in ``path``; a clear error naming the file when it is missing, truncated or not ONNX."""
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
    """An exported detector's fixed input shape, output layout, classes and precision, checked against ``imgsz``
    and ``nc``.

    ValueError naming the file when it is not a detector export of either engine, or the given ``imgsz`` / ``nc``
    differ from what it was exported for."""
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
    meta = {p.key: p.value for p in model.metadata_props}
    head = _head_layout(meta)
    expected = {"objectness": "(1, anchors, 5 + classes)", "class": "(1, 4 + classes, anchors)",
                "end_to_end": "(1, detections, 6)"}[head]
    in_output = _classes_in_output(head, out_dims) if len(out_dims) == 3 else None
    if len(out_dims) != 3 or 0 in out_dims or (out_dims[2] != 6 if in_output is None else in_output < 1):
        raise ValueError(f"{path}: output shape {out_dims} is not a {head} detection output {expected}")
    if "names" not in meta or "stride" not in meta:
        raise ValueError(f"{path}: no detector metadata (stride, names); export it with `livestock export`")
    names = _parse_names(meta["names"], path)
    info = OnnxModelInfo(path, tuple(dims), tuple(out_dims), head, names, int(meta["stride"]),
                         meta.get("precision", "fp32"))
    if in_output is not None and len(names) != in_output:
        raise ValueError(f"{path}: metadata lists {len(names)} class names but the output has {in_output} classes")
    if imgsz is not None and as_hw(imgsz) != info.imgsz:
        h, w = as_hw(imgsz)
        raise ValueError(
            f"{path}: exported for a fixed {info.imgsz[0]}x{info.imgsz[1]} input, asked to run at {h}x{w}; "
            f"run inference with imgsz={info.imgsz[0]} or export again with --imgsz {h}"
        )
    if nc is not None and nc != info.nc:
        raise ValueError(f"{path}: model has {info.nc} classes {list(names.values())}, the data has {nc}")
    return info


def set_onnx_metadata(model: "onnx.ModelProto", **entries: object) -> None:
    """Add or replace metadata entries (stored as strings) of an ONNX model, in place."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update({key: str(value) for key, value in entries.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def save_onnx(model: "onnx.ModelProto", path: str | os.PathLike) -> Path:
    """Write an ONNX model as one self-contained file, atomically; returns its path.

    The model is checked first (``onnx.checker``): a graph a converter got wrong (every FP16 export of
    onnxruntime < 1.32 wrote one tensor from several nodes) stops here with a ValueError naming ``path``, before a
    file exists that would only fail when loaded. A model over protobuf's 2 GB limit cannot be one message: its
    weights go to ``<name>.data`` beside it, and the two files must then travel together; such a model is not
    checked (the checker reads it only from files, and the two-file write is not atomic anyway).
    """
    import onnx

    path = Path(path)
    if model.ByteSize() < _TWO_GB:
        data = model.SerializeToString()  # once: the checker and the file read the same bytes
        try:
            onnx.checker.check_model(data)
        except onnx.checker.ValidationError as e:
            raise ValueError(f"{path}: not a valid ONNX graph, nothing written: {e}") from e
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        Path(f"{path}.data").unlink(missing_ok=True)  # a stale sidecar from an earlier export would mislead
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}.data")
    return path


@contextmanager
def weights_in_scratch(weights: str | os.PathLike, out_path: str | os.PathLike) -> Iterator[Path]:
    """``weights`` as ``<scratch>/<out_path stem>.pt`` in a temporary folder beside ``out_path``, removed afterwards.

    Both engines' exporters write their files beside the weights they are given and name them after it: run on
    this link (or a copy, where links are not allowed) they leave the user's weights folder alone, and the export
    lands on the same file system as ``out_path``, to be moved into place."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_path.parent) as tmp:
        link = Path(tmp) / f"{out_path.stem}.pt"
        try:
            link.symlink_to(Path(weights).resolve())
        except OSError:
            shutil.copyfile(weights, link)
        yield link

