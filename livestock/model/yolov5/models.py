"""YOLOv5 engine: model-file hooks (load, create, export, letterbox) for the deployment stage.

Deployment (``livestock.deploy``) works on the model files, not on the engine: whatever it needs from YOLOv5 goes
through the functions here, so that no module outside the engine imports ``yolov5``. Each one applies the
engine's compatibility fixes (:func:`livestock.model.yolov5.compat.ensure_yolov5`) before touching YOLOv5.

Trust: checkpoints are pickles (loading one runs code from it); only files the user names are loaded.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np

from livestock.model.engine import save_model_checkpoint
from livestock.model.onnx_file import as_hw, save_onnx, set_onnx_metadata, weights_in_scratch
from livestock.model.yolov5.compat import ensure_yolov5, load_checkpoint, model_cfg
from livestock.records import CLASS_NAMES

if TYPE_CHECKING:
    import torch

ONNX_OPSET = 18  # torch >= 2.9 exports opset 18 whatever is asked; asking for it avoids a failing down-conversion


@contextlib.contextmanager
def _quiet_yolov5() -> Iterator[None]:
    """YOLOv5's console log at WARNING meanwhile; handlers the caller added keep their level.

    Its model summaries and export chatter would drown the caller's report, but the exporter reports its own
    failures at INFO, so the logger itself must stay at INFO for a capturing handler to see them.
    """
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


def _check_is_yolov5(model: object, path: Path) -> None:
    if not hasattr(model, "yaml") or not hasattr(model, "stride"):
        raise ValueError(f"{path}: not a YOLOv5 checkpoint (its 'model' entry is a {type(model).__name__})")


def load_model(weights: str | os.PathLike, fuse: bool = True, device: str = "cpu") -> "torch.nn.Module":
    """The FP32 eval-mode model in a checkpoint, on ``device``.

    ``ema`` if present, else ``model``; with ``fuse``, BatchNorm folded into the Convs as YOLOv5's inference loads
    it. ValueError naming the file when it is truncated or not a YOLOv5 checkpoint."""
    import torch

    path = Path(weights)
    try:
        ckpt = load_checkpoint(path)  # FileNotFoundError / ValueError name the file already
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # torch's unpickling errors on a truncated or foreign file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated file?): {e}") from e
    _check_is_yolov5(ckpt.get("ema") or ckpt["model"], path)
    if not fuse:
        return (ckpt.get("ema") or ckpt["model"]).float().eval().to(torch.device(device))
    from yolov5.models.experimental import attempt_load

    with _quiet_yolov5():
        # attempt_load also applies YOLOv5's module compatibility updates, as DetectMultiBackend does; the path
        # is absolute because YOLOv5 looks a relative name that it does not find up on the Hugging Face Hub.
        return attempt_load(str(path.resolve()), device=torch.device(device), inplace=True, fuse=True).eval()


def random_init_checkpoint(model_name: str, path: str | os.PathLike, nc: int = 2, seed: int = 0) -> Path:
    """Write a checkpoint of an untrained ``model_name`` (``yolov5n`` ... ``yolov5x6``) to ``path`` (atomically,
    FP16 as YOLOv5 stores trained weights); returns it.

    ``nc`` classes, weights from a fixed ``seed``: enough to time a model or check an export, meaningless for
    accuracy."""
    cfg = model_cfg(model_name)
    ensure_yolov5()
    import torch
    from yolov5.models.yolo import DetectionModel

    with torch.random.fork_rng(devices=[]), _quiet_yolov5():  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model = DetectionModel(str(cfg), ch=3, nc=nc, anchors=None)
    model.names = {i: (CLASS_NAMES[i] if i < len(CLASS_NAMES) else f"class{i}") for i in range(nc)}
    return save_model_checkpoint(model.eval(), path)


def export_onnx(weights: str | os.PathLike, imgsz: int | Sequence[int], out_path: str | os.PathLike,
                metadata: Mapping[str, object] | None = None) -> Path:
    """Write the ONNX FP32 export of a checkpoint for a fixed ``imgsz`` input to ``out_path``; returns it.

    YOLOv5's own exporter, batch 1; one self-contained file, with ``metadata`` added to the exporter's."""
    weights = Path(weights).resolve()
    out_path = Path(out_path)
    ensure_yolov5()
    import onnx
    from yolov5.export import run
    from yolov5.utils.general import LOGGER

    with weights_in_scratch(weights, out_path) as link:
        # YOLOv5 swallows exporter exceptions into a log line and returns no file: keep its log for the error.
        capture = _CaptureLog()
        LOGGER.addHandler(capture)
        try:
            with _quiet_yolov5():
                files = run(weights=str(link), include=("onnx",), imgsz=list(as_hw(imgsz)), device="cpu",
                            batch_size=1, opset=ONNX_OPSET, dynamic=False, simplify=False)
        finally:
            LOGGER.removeHandler(capture)
        produced = link.with_suffix(".onnx")
        if not files or not produced.is_file():
            failure = [ln for ln in capture.lines if "fail" in ln.lower()] or capture.lines[-3:]
            raise RuntimeError(f"{weights}: ONNX export failed: {' | '.join(failure)}")
        # torch >= 2.9 leaves the weights in an external .onnx.data file: loading pulls them in, so the file
        # saved below is self-contained.
        model = onnx.load(str(produced))
    set_onnx_metadata(model, **(metadata or {}))
    return save_onnx(model, out_path)


def letterbox(image_bgr: np.ndarray, imgsz_hw: tuple[int, int], stride: int = 32, auto: bool = False) -> np.ndarray:
    """YOLOv5's letterbox of a BGR uint8 HWC image to ``imgsz_hw``, as a BGR uint8 HWC image.

    Grey padding; with ``auto``, the minimal stride-multiple rectangle instead of the full size."""
    ensure_yolov5()
    from yolov5.utils.augmentations import letterbox as yolov5_letterbox

    return yolov5_letterbox(image_bgr, as_hw(imgsz_hw), stride=stride, auto=auto)[0]
