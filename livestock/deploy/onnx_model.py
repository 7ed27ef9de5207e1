"""An exported detector's graph, and the checks a weight file passes before deployment uses it.

The Detect head is found from the graph (:func:`find_detect_head`), never from node names, so the same code serves
P5 (YOLOv5n/s/m) and P6 (YOLOv5m6) models and graphs that ONNX Runtime's pre-processing has renamed.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from livestock.model.yolov5 import models as yolov5_models
from livestock.model.onnx_file import as_hw, check_onnx_model, load_onnx

if TYPE_CHECKING:
    import onnx


def check_model_file(
    path: str | os.PathLike, imgsz: int | Sequence[int] | None = None, nc: int | None = None
) -> dict:
    """``{"names", "stride", "imgsz"}`` of a ``.onnx`` export or ``.pt`` checkpoint, checked before use.

    ValueError naming the file when it is unreadable, has other than ``nc`` classes, or cannot run at ``imgsz``."""
    path = Path(path)
    if path.suffix == ".onnx":
        info = check_onnx_model(path, imgsz, nc)  # a fixed-shape export runs at its own size only
        return {"names": info.names, "stride": info.stride, "imgsz": info.imgsz}
    names, stride = yolov5_models.model_names_and_stride(yolov5_models.load_model(path))
    if nc is not None and nc != len(names):
        raise ValueError(f"{path}: model has {len(names)} classes {list(names.values())}, the data has {nc}")
    hw = as_hw(imgsz) if imgsz is not None else None
    if hw is not None and (hw[0] % stride or hw[1] % stride):
        raise ValueError(f"{path}: imgsz {hw[0]}x{hw[1]} is not a multiple of the model's stride {stride}")
    return {"names": names, "stride": stride, "imgsz": hw}


def find_detect_head(model: "onnx.ModelProto | str | os.PathLike") -> tuple[list[str], list[str]]:
    """Names of a YOLOv5 ONNX graph's Detect-head output Convs and of the decode nodes after them, in graph order.

    Walking back from the graph outputs, the first Conv met on every path is one of the head's output Convs (one
    per pyramid level: 3 for P5 models, 4 for P6). Everything reachable forward from their outputs is the decode:
    reshape to (anchors, 5 + classes), sigmoid, grid / anchor arithmetic, concat.
    """
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


def sort_topologically(graph: "onnx.GraphProto") -> None:
    """Reorder ``graph.node`` in place so that every node comes after the producers of its inputs."""
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
        copy.CopyFrom(node)  # the repeated field owns its messages: copy before clearing it
    del graph.node[:]
    graph.node.extend(copies)
