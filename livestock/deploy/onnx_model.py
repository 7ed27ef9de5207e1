"""An exported detector's graph, and the checks a weight file passes before deployment uses it.

The Detect head is found from the graph (:func:`find_detect_head`), never from node names, so the same code serves
YOLOv5's P5 (YOLOv5n/s/m) and P6 (YOLOv5m6) models, the Ultralytics engine's YOLO11 and YOLO26 heads, and graphs that
ONNX Runtime's pre-processing has renamed.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from livestock.model.engine import engine_of_weights, get_engine, model_names_and_stride
from livestock.model.onnx_file import as_hw, check_onnx_model, load_onnx

if TYPE_CHECKING:
    import onnx


def check_model_file(
    path: str | os.PathLike, imgsz: int | Sequence[int] | None = None, nc: int | None = None
) -> dict:
    """``{"names", "stride", "imgsz"}`` of a ``.onnx`` export or a ``.pt`` checkpoint of either engine, checked
    before use.

    ValueError naming the file when it is unreadable, has other than ``nc`` classes, or cannot run at ``imgsz``."""
    path = Path(path)
    if path.suffix == ".onnx":
        info = check_onnx_model(path, imgsz, nc)  # a fixed-shape export runs at its own size only
        return {"names": info.names, "stride": info.stride, "imgsz": info.imgsz}
    model = get_engine(engine_of_weights(path)).load_model(path, fuse=False)  # names and stride: no fusing needed
    names, stride = model_names_and_stride(model)
    if nc is not None and nc != len(names):
        raise ValueError(f"{path}: model has {len(names)} classes {list(names.values())}, the data has {nc}")
    hw = as_hw(imgsz) if imgsz is not None else None
    if hw is not None and (hw[0] % stride or hw[1] % stride):
        raise ValueError(f"{path}: imgsz {hw[0]}x{hw[1]} is not a multiple of the model's stride {stride}")
    return {"names": names, "stride": stride, "imgsz": hw}


# Ops that turn a feature map into rows: the decode starts with one after each of the head's last Convs.
_TO_ROWS = frozenset({"Reshape", "Flatten"})


def find_detect_head(model: "onnx.ModelProto | str | os.PathLike") -> tuple[list[str], list[str]]:
    """Names of a detection graph's head output Convs and of the decode nodes after them, in graph order.

    Walking back from the graph outputs, the first Conv met on every path is one of the head's output Convs, unless
    it convolves rows the decode has already reshaped: that Conv is part of the decode and the walk goes on through
    it (the Distribution Focal Loss Conv of YOLO11 / YOLOv8, a fixed 1x1 Conv that turns each box side's softmaxed
    distance bins into their expectation). Everything reachable forward from the head Convs' outputs is the decode.
    The same walk serves every head this package exports:

    - YOLOv5 (objectness x class): one Conv per pyramid level (3 for P5 models, 4 for P6); the decode reshapes to
      (anchors, 5 + classes), applies the sigmoid and the grid / anchor arithmetic, and concatenates the levels.
    - YOLO11 (anchor-free, class scores only): a box Conv and a class Conv per level; the decode is the softmax
      over distance bins, the DFL Conv, the distances to corners around each anchor point times the stride, the
      class sigmoid and the concatenation.
    - YOLO26: the same two Convs per level without distance bins; its end-to-end (one-to-one) head adds the top-k
      selection (TopK, GatherElements, class index) to the decode.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_onnx(model)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    inputs = {i.name for i in graph.input}

    def convolves_rows(conv) -> bool:
        """Whether every path from the Conv's data input back to the nearest Conv (or the image) crosses a
        reshape into rows."""
        stack, seen = [conv.input[0]], set()
        while stack:
            name = stack.pop()
            if name in inputs:
                return False
            node = producer.get(name)
            if node is None or id(node) in seen or node.op_type in _TO_ROWS:
                continue  # an initializer, already seen, or a path that crossed a reshape
            seen.add(id(node))
            if node.op_type == "Conv":
                return False
            stack.extend(node.input)
        return True

    heads: list = []
    visited: set[int] = set()
    stack = [o.name for o in graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in visited:
            continue  # graph input, initializer or already seen
        visited.add(id(node))
        if node.op_type != "Conv":
            stack.extend(node.input)
        elif convolves_rows(node):
            stack.append(node.input[0])  # a decode Conv: its weights are constants, its data input leads on
        else:
            heads.append(node)
    if not heads:
        raise ValueError("no Conv found upstream of the graph output: not a detection graph")

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
