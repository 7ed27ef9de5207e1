"""Edge export: weights of either engine -> ONNX FP32 / FP16 / INT8 (and OpenVINO IR where installed);
``livestock export``.

The contest ran on edge devices with a 100 MB limit on the weight file. This stage turns a trained checkpoint into
files an ONNX Runtime (or OpenVINO) device can run:

- **ONNX FP32**: the engine's own exporter (YOLOv5's, or Ultralytics' for YOLOv8 / YOLO11 / YOLO26 checkpoints,
  with the head the engine runs by default: YOLO26's NMS-free one), one self-contained ``.onnx`` file with a
  **fixed input shape** (batch 1, ``imgsz`` x ``imgsz``). Inference must use the same ``imgsz`` as the export:
  :func:`livestock.model.onnx_file.check_onnx_model` raises a clear error when it does not.
- **ONNX FP16**: the FP32 graph converted to half precision, inputs and outputs kept FP32 (Cast nodes at the
  edges), and the detection-head decode kept FP32 too (:func:`livestock.deploy.onnx_model.find_detect_head`): at
  1280 px box centres reach 1280, where FP16 steps by 1 px.
- **ONNX INT8**: :mod:`livestock.deploy.quantize`, for ONNX Runtime on a CPU (``onnx-int8``) or for TensorRT on a
  Jetson or another NVIDIA GPU (``onnx-int8-trt``: symmetric int8 only, the graph TensorRT builds an INT8 engine
  from).

Trust: checkpoints are pickles (loading one runs code) and YOLOv5's ONNX loader ``eval``s the class names stored in
the model's metadata. Export only files you trust.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from livestock.data.split import pick_evenly
from livestock.deploy.images import images_from
from livestock.deploy.onnx_model import check_model_file, find_detect_head, sort_topologically
from livestock.deploy.quantize import quantize_onnx_int8
from livestock.deploy.runtime import OPENVINO_INSTALL, import_openvino, openvino_available
from livestock.data.yolo_format import IMAGE_SUFFIXES
from livestock.model.yolov5 import models as yolov5_models
from livestock.model.engine import CONTEST_MAX_WEIGHT_MB, engine_of_weights, get_engine
from livestock.model.onnx_file import as_hw, check_onnx_model, load_onnx, save_onnx, set_onnx_metadata
from livestock.fileio import atomic_output_dir

if TYPE_CHECKING:
    import onnx

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "onnx-fp16", "onnx-int8", "onnx-int8-trt", "openvino")
DEFAULT_FORMATS: tuple[str, ...] = ("onnx", "onnx-fp16", "onnx-int8")
_FILE_SUFFIX = {"onnx": ".onnx", "onnx-fp16": "_fp16.onnx", "onnx-int8": "_int8.onnx",
                "onnx-int8-trt": "_int8_trt.onnx", "openvino": "_openvino_model"}
_INT8_TARGET = {"onnx-int8": "onnxruntime", "onnx-int8-trt": "tensorrt"}  # INT8 format -> quantize_onnx_int8's target


def export_path(out_dir: str | os.PathLike, weights: str | os.PathLike, imgsz: int, fmt: str) -> Path:
    """Where :func:`export_model` writes format ``fmt`` of ``weights`` at ``imgsz`` in ``out_dir``."""
    return Path(out_dir) / f"{Path(weights).stem}_{imgsz}{_FILE_SUFFIX[fmt]}"


def file_size_mb(path: str | os.PathLike) -> float:
    """Size in MB (10^6 bytes) of a file or, for a folder (OpenVINO IR), of all its files."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6


def export_onnx_fp32(weights: str | os.PathLike, imgsz: int, out_path: str | os.PathLike) -> Path:
    """Write the ONNX FP32 form of ``weights`` for a fixed ``imgsz`` square input to ``out_path``; returns it.

    Through the exporter of the engine that wrote ``weights``. The file carries stride, class names, imgsz and
    precision, which inference checks (Ultralytics' exporter writes the first three itself, and the engine)."""
    engine = engine_of_weights(weights)
    if engine != "yolov5":
        return get_engine(engine).export_onnx(weights, imgsz, out_path)
    info = check_model_file(weights, imgsz)  # clear errors for missing / corrupt / wrong-stride weights first
    h, w = as_hw(imgsz)
    return yolov5_models.export_onnx(weights, (h, w), out_path, metadata={
        "imgsz": f"[{h}, {w}]", "precision": "fp32", "stride": info["stride"], "names": info["names"]})


def convert_onnx_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the FP16 form of an FP32 ONNX export to ``dst``; returns ``dst``.

    Inputs, outputs and the head decode stay FP32, with Cast nodes between."""
    from onnxruntime.transformers.float16 import convert_float_to_float16  # ships with onnxruntime

    check_onnx_model(src)
    model = load_onnx(src)
    _, decode = find_detect_head(model)
    model16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=decode)
    _drop_repeated_casts(model16.graph)
    sort_topologically(model16.graph)  # the converter appends its input Casts at the end of the node list
    set_onnx_metadata(model16, precision="fp16")
    return save_onnx(model16, dst)  # checks the graph before writing: a converter's fault stops there


def _drop_repeated_casts(graph: "onnx.GraphProto") -> None:
    """Keep one of the identical Cast nodes that share an output name.

    onnxruntime's float16 converter before 1.32 adds a Cast back to FP32 for every input of a kept-float node (the
    head's decode) that reads an FP16 tensor, all named ``<tensor>_cast_to_fp32``: a tensor read twice gives two
    nodes with one output name, which onnx's checker refuses (not in SSA form). 1.32 shares one Cast; this does the
    same for the older ones (the GPU machine has 1.30), and leaves a graph without repeats as it is."""
    first: dict[str, "onnx.NodeProto"] = {}
    repeated = []
    for node in graph.node:
        if node.op_type == "Cast" and len(node.output) == 1 and node.output[0] in first:
            if first[node.output[0]] != node:
                raise ValueError(f"FP16 conversion: two different Cast nodes write {node.output[0]!r}")
            repeated.append(node)
        else:
            first.update((name, node) for name in node.output)
    for node in repeated:
        graph.node.remove(node)
    infos, seen = list(graph.value_info), set()
    del graph.value_info[:]
    for info in infos:
        if info.name not in seen:
            seen.add(info.name)
            graph.value_info.append(info)


def export_openvino(onnx_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the OpenVINO IR of an FP32 ONNX export to the folder ``out_dir``, atomically (a folder there before
    is replaced whole); returns it.

    ``.xml`` + ``.bin`` (weights kept FP32) + metadata ``.yaml``, the layout YOLOv5's DetectMultiBackend reads.
    Needs the optional ``openvino`` package (imported without its telemetry: :func:`import_openvino`)."""
    import yaml

    ov = import_openvino()
    info = check_onnx_model(onnx_path)
    out_dir = Path(out_dir)
    # <stem>_openvino_model/<stem>.xml as both engines name it; the folder's name, not the ONNX file's, which is
    # a hidden scratch file when ONNX itself was not asked for
    stem = out_dir.name.removesuffix("_openvino_model") or Path(onnx_path).stem
    with atomic_output_dir(out_dir) as tmp:
        xml = tmp / f"{stem}.xml"
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
        xml.with_suffix(".yaml").write_text(yaml.safe_dump({"stride": info.stride, "names": info.names}),
                                            encoding="utf-8")
    return out_dir


def export_model(
    weights: str | os.PathLike,
    imgsz: int = 640,
    formats: Sequence[str] = DEFAULT_FORMATS,
    calib_images: Sequence[str | os.PathLike | np.ndarray] | str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    n_calib: int = 32,
    cpu_int8_weight_bits: int = 7,
) -> dict[str, Path]:
    """Export ``weights`` for a fixed ``imgsz`` x ``imgsz`` input in each of ``formats``; returns ``{format: path}``.

    Files: ``<stem>_<imgsz>.onnx`` (FP32), ``..._fp16.onnx``, ``..._int8.onnx``, ``..._int8_trt.onnx`` (INT8 for
    TensorRT), ``<stem>_<imgsz>_openvino_model/``, in ``out_dir`` (default: beside the weights). Both INT8 formats
    calibrate on the same images. ``calib_images`` (INT8 only): image paths / BGR arrays, or a
    folder, list file or data.yaml (its ``train`` images); ``n_calib`` of them are taken, evenly spread.
    Inference with these files must use the same ``imgsz``. ``cpu_int8_weight_bits``: 7 (the default) or 8 for the
    CPU INT8 file's weights; 8 is for a runtime known to have VNNI or ARM's dot-product instructions, and overflows
    on other x86 CPUs (:mod:`livestock.deploy.quantize`). Files over the contest's 100 MB limit are flagged
    in the log (an FP32 YOLOv5m6 is 141 MB: its FP16 or INT8 form is the one to deploy).
    """
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or formats}; choose from {list(EXPORT_FORMATS)}")
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights not found")
    if imgsz < 32 or n_calib < 1:
        raise ValueError(f"need imgsz >= 32 and n_calib >= 1 (got {imgsz}, {n_calib})")
    if cpu_int8_weight_bits not in (7, 8):
        raise ValueError(f"cpu_int8_weight_bits must be 7 or 8, not {cpu_int8_weight_bits}")
    # Inputs first, so a bad call fails in a second rather than after the export.
    if set(formats) & set(_INT8_TARGET):
        if calib_images is None:
            raise ValueError(f"{weights}: INT8 export needs calibration images (--calib: folder, list or data.yaml)")
        if isinstance(calib_images, (str, os.PathLike)):
            source = calib_images
            calib_images = images_from(source)
            if not calib_images:
                raise ValueError(f"{source}: no calibration images found ({' / '.join(IMAGE_SUFFIXES)})")
        calib_images = pick_evenly(calib_images, n_calib)
    if "openvino" in formats and not openvino_available():
        raise ValueError(f"OpenVINO export needs the `openvino` package, which is not installed: {OPENVINO_INSTALL}")
    out_dir = Path(out_dir) if out_dir is not None else weights.parent
    # The FP32 export is the source of every other format; when it is not asked for, it is a scratch file.
    fp32 = export_path(out_dir, weights, imgsz, "onnx")
    if "onnx" not in formats:
        fp32 = fp32.with_name(f".{fp32.stem}.scratch.onnx")
    paths: dict[str, Path] = {"onnx": export_onnx_fp32(weights, imgsz, fp32)}
    try:
        if "onnx-fp16" in formats:
            paths["onnx-fp16"] = convert_onnx_fp16(fp32, export_path(out_dir, weights, imgsz, "onnx-fp16"))
        for fmt, target in _INT8_TARGET.items():
            if fmt in formats:
                paths[fmt] = quantize_onnx_int8(
                    fp32, export_path(out_dir, weights, imgsz, fmt), calib_images, target=target,
                    reduce_range=(cpu_int8_weight_bits == 7) if target == "onnxruntime" else None)
        if "openvino" in formats:
            paths["openvino"] = export_openvino(fp32, export_path(out_dir, weights, imgsz, "openvino"))
    finally:
        if "onnx" not in formats:
            fp32.unlink(missing_ok=True)
            paths.pop("onnx", None)
    for fmt, path in paths.items():
        mb = file_size_mb(path)
        if mb > CONTEST_MAX_WEIGHT_MB:
            logging.getLogger(__name__).warning("%s: %.1f MB, over the contest's %.0f MB limit", path, mb,
                                                CONTEST_MAX_WEIGHT_MB)
    return paths


# ---------------------------------------------------------------- CLI: livestock export


def comma_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated command-line value."""
    return [t.strip() for t in text.split(",") if t.strip()]


def cli_export_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``livestock export``."""
    parser.add_argument("--weights", required=True,
                        help="checkpoint (.pt) of either engine to export (a pickle: trusted files only)")
    parser.add_argument("--imgsz", type=int, default=640, help="fixed square input size; inference must use the same")
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                        help=f"comma-separated, from {','.join(EXPORT_FORMATS)} (openvino needs the openvino package)")
    parser.add_argument("--calib", default=None, help="INT8 calibration images: folder, list file or data.yaml (train)")
    parser.add_argument("--n-calib", type=int, default=32, help="number of calibration images, spread evenly")
    parser.add_argument("--out", default=None, help="output folder (default: beside the weights)")
    parser.add_argument("--cpu-int8-weight-bits", type=int, choices=(7, 8), default=7,
                        help="bits of the onnx-int8 file's weights (default %(default)s: 8 overflows in ONNX Runtime "
                             "on x86 CPUs without VNNI; 8 only for a CPU known to have VNNI or an ARM one)")


def cli_export(args: argparse.Namespace) -> int:
    """``livestock export``: write the asked formats and print each file's size."""
    paths = export_model(args.weights, args.imgsz, comma_list(args.formats), calib_images=args.calib,
                         out_dir=args.out, n_calib=args.n_calib, cpu_int8_weight_bits=args.cpu_int8_weight_bits)
    for fmt, path in paths.items():
        mb = file_size_mb(path)
        flag = "" if mb <= CONTEST_MAX_WEIGHT_MB else f"  (over the {CONTEST_MAX_WEIGHT_MB:.0f} MB limit)"
        print(f"{fmt:<13} {mb:8.1f} MB  {path}{flag}")
    return 0
