"""YOLOv5 detection as raw candidates (:class:`livestock.model.engine.Candidates`): the model behind
``DetectMultiBackend`` with YOLOv5's ``detect.py`` letterbox, its head output filtered as ``non_max_suppression``
filters it first. With ``augment``, the forward is YOLOv5's own augmented one (``detect.py --augment``), each row
labelled with its view."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from livestock.model.engine import TTA_VIEWS, augmented_candidates, counting_head_rows
from livestock.model.yolov5.compat import ensure_yolov5, load_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch



def head_rows_to_candidates(pred: "torch.Tensor", conf_floor: float) -> tuple:
    """``(boxes, scores, objectness)`` of one image's head output ``(anchors, 5 + nc)`` above ``conf_floor``.

    The filter is YOLOv5's own first step of ``non_max_suppression`` with the same float32 operations
    (``obj > floor``, then ``obj * cls > floor``), and boxes go to corners with its ``xywh2xyxy``, so the NMS
    replay on these arrays matches YOLOv5 bit for bit."""
    ensure_yolov5()
    from yolov5.utils.general import xywh2xyxy

    obj = pred[:, 4]
    best = (pred[:, 5:] * pred[:, 4:5]).max(1).values
    kept = pred[(obj > conf_floor) & (best > conf_floor)]
    boxes = xywh2xyxy(kept[:, :4])
    return (boxes.numpy().astype("float32", copy=True), kept[:, 5:].numpy().astype("float32", copy=True),
            kept[:, 4].numpy().astype("float32", copy=True))


class Yolov5Detector:
    """A YOLOv5 model behind ``DetectMultiBackend`` (PyTorch ``.pt`` or ONNX Runtime ``.onnx``) with the
    letterbox settings YOLOv5's ``detect.py`` uses for it: a minimal rectangle for PyTorch weights, the fixed
    exported shape for ONNX. Loading a ``.pt`` runs pickled code: only for files you trust.

    ``augment``: YOLOv5's augmented forward (``model(im, augment=True)``, as ``detect.py --augment`` runs it), for
    PyTorch weights only: an ONNX export holds the one-pass graph."""

    def __init__(self, weights: Path, imgsz: int, device: "torch.device", n_classes: int,
                 augment: bool = False) -> None:
        ensure_yolov5()
        from yolov5.models.common import DetectMultiBackend
        from yolov5.utils.general import check_img_size

        if augment and weights.suffix.lower() != ".pt":
            raise ValueError(f"{weights}: test-time augmentation runs YOLOv5's augmented forward of the PyTorch "
                             "model; an exported model runs one pass: use the .pt checkpoint, or TTA off")
        self.augment = augment
        self.n_views = TTA_VIEWS if augment else 1
        if weights.suffix.lower() == ".onnx":
            from livestock.model.onnx_file import load_onnx

            load_onnx(weights)  # a truncated or foreign file: an error naming it, before ONNX Runtime's own
        else:
            load_checkpoint(weights)  # the same for a checkpoint: one line naming the file, not a traceback
        self.model = DetectMultiBackend(str(weights), device=device, fp16=False)
        if self.model.onnx:
            # An FP16 export wants FP16 input; DetectMultiBackend casts the input when its fp16 flag is set.
            self.model.fp16 = self.model.session.get_inputs()[0].type == "tensor(float16)"
        self.stride = int(self.model.stride)
        self.n_classes = len(self.model.names)
        if self.n_classes != n_classes:
            raise ValueError(f"{weights}: the model predicts {self.n_classes} classes, expected {n_classes}")
        self.max_batch: int | None = None
        if self.model.pt:
            self.imgsz: tuple[int, int] = tuple(check_img_size([imgsz, imgsz], s=self.stride))  # type: ignore
            self.auto = True
        else:
            shape = self.model.session.get_inputs()[0].shape  # [batch, 3, height, width], ints when fixed
            b, h, w = shape[0], shape[2], shape[3]
            self.max_batch = b if isinstance(b, int) else None
            if isinstance(h, int) and isinstance(w, int):
                if (h, w) != (imgsz, imgsz):
                    raise ValueError(f"{weights}: exported for input {w}x{h}, asked for --imgsz {imgsz}")
                self.imgsz = (h, w)
            else:
                self.imgsz = tuple(check_img_size([imgsz, imgsz], s=self.stride))  # type: ignore
            self.auto = False

    def letterbox(self, image_bgr: "np.ndarray") -> "np.ndarray":
        """The network input of one BGR image: CHW RGB uint8, letterboxed as ``detect.py`` does."""
        import numpy as np
        from yolov5.utils.augmentations import letterbox

        out = letterbox(image_bgr, self.imgsz, stride=self.stride, auto=self.auto)[0]
        return np.ascontiguousarray(out.transpose((2, 0, 1))[::-1])  # HWC BGR -> CHW RGB

    def candidates(self, batch: "np.ndarray", conf_floor: float) -> list[tuple]:
        """Per image of a uint8 batch ``(b, 3, h, w)``: ``(boxes, scores, objectness, end_to_end=False, views)``,
        ``views`` each row's view of the augmented forward (None without ``augment``)."""
        import torch

        with torch.inference_mode():
            im = torch.from_numpy(batch).to(self.model.device)
            im = im.half() if self.model.fp16 else im.float()
            im /= 255
            if self.augment:
                net = self.model.model  # the DetectionModel behind DetectMultiBackend
                with counting_head_rows(net.model[-1], dim=1) as counts:
                    pred = self.model(im, augment=True)
            else:
                pred = self.model(im)
        if isinstance(pred, (list, tuple)):
            pred = pred[0]
        if pred.shape[-1] != 5 + self.n_classes:
            raise ValueError(f"unexpected head output of shape {tuple(pred.shape)} (a segmentation model?)")
        pred = pred.float().cpu()
        if not self.augment:
            return [(*head_rows_to_candidates(p, conf_floor), False, None) for p in pred]
        # rows along axis 1 of YOLOv5's (images, rows, 5 + classes) output
        return augmented_candidates(pred, counts, net._clip_augmented, self.n_views, pred.shape[1],
                                    lambda p, rows: head_rows_to_candidates(p[rows], conf_floor))


def load_detector(weights: Path, imgsz: int, device: "torch.device", n_classes: int,
                  augment: bool = False) -> Yolov5Detector:
    """A :class:`Yolov5Detector` for a checkpoint or an exported ONNX file (``augment``: TTA, checkpoints only)."""
    return Yolov5Detector(Path(weights), imgsz, device, n_classes, augment)
