"""A small YOLOv5 checkpoint whose head output is rich in candidates, test frames, and YOLOv5's own detect path
as the reference for the raw-candidate cache.

The checkpoint is a YOLOv5n (2 classes) that is not trained but shaped: batch-norm statistics are measured on the
test frames (so features carry the picture instead of shrinking to zero) and the head's weights are drawn wide
enough that confidences spread from 1e-4 to about 0.9. Every image then gives thousands of candidates above
1e-4 and hundreds above 1e-3, neighbouring anchors overlap heavily, and a few confidences tie exactly: the cases
where NMS, its caps and the confidence filter interact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from livestock.model.yolov5.compat import ensure_yolov5
from livestock.records import ImageRecord

# Frame sizes (width, height): landscape, portrait-ish and square, so letterbox padding differs per image.
FRAME_SIZES = ((320, 180), (256, 192), (300, 300), (200, 150))


def write_frames(folder: str | Path, n: int = 4, seed: int = 0) -> list[ImageRecord]:
    """``n`` JPEG frames with a few filled ellipses each, named like AI Hub files (pig / cow alternately);
    returns records whose boxes are the ellipses' bounding boxes."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        w, h = FRAME_SIZES[i % len(FRAME_SIZES)]
        label = ("pig", "cow")[i % 2]
        im = np.full((h, w, 3), int(rng.integers(80, 160)), np.uint8)
        im = cv2.add(im, rng.integers(0, 40, (h, w, 3), dtype=np.uint8))
        boxes = []
        for _ in range(4):
            cx, cy = int(rng.integers(20, w - 20)), int(rng.integers(20, h - 20))
            ax, ay = int(rng.integers(8, 40)), int(rng.integers(8, 30))
            cv2.ellipse(im, (cx, cy), (ax, ay), 0, 0, 360, tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
            boxes.append([max(cx - ax, 0), max(cy - ay, 0), min(cx + ax, w), min(cy + ay, h)])
        path = folder / f"livestock_{label}_bbox_{i:06d}.jpg"
        cv2.imwrite(str(path), im)
        records.append(ImageRecord(path.name, str(path), w, h, label, boxes))
    return records


def make_checkpoint(path: str | Path, frames: Sequence[str | Path], seed: int = 0, head_std: float = 0.1,
                    size: int = 320) -> Path:
    """Write the shaped YOLOv5n checkpoint described in the module docstring (FP16, as YOLOv5 saves)."""
    ensure_yolov5()
    import torch
    import yolov5
    from yolov5.models.yolo import Model
    from yolov5.utils.general import LOGGER

    torch.manual_seed(seed)
    level = LOGGER.level
    LOGGER.setLevel("WARNING")  # no layer table in the test log
    try:
        model = Model(os.path.join(os.path.dirname(yolov5.__file__), "models", "yolov5n.yaml"), ch=3, nc=2)
    finally:
        LOGGER.setLevel(level)
    model.names = {0: "pig", 1: "cow"}
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batch
            m.reset_running_stats()
    batch = []
    for f in frames:
        im = cv2.resize(cv2.imread(str(f)), (size, size))[:, :, ::-1].transpose(2, 0, 1) / 255.0
        batch.append(torch.tensor(im.copy(), dtype=torch.float32))
    model.train()
    with torch.no_grad():
        model(torch.stack(batch))
    model.eval()
    with torch.no_grad():
        for conv in model.model[-1].m:
            conv.weight.normal_(0, head_std)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.half(), "epoch": -1}, path)
    return path


def yolov5_raw_outputs(weights: str | Path, folder: str | Path, imgsz: int, augment: bool = False):
    """YOLOv5 ``detect.py``'s own loop up to the head output (``--augment``: its augmented forward):
    ``[(image id, pred, input hw, original shape)]``."""
    ensure_yolov5()
    import torch
    from yolov5.models.common import DetectMultiBackend
    from yolov5.utils.dataloaders import LoadImages

    model = DetectMultiBackend(str(Path(weights).resolve()), device=torch.device("cpu"))
    out = []
    for path, im, im0, _cap, _s in LoadImages(str(folder), img_size=imgsz, stride=model.stride, auto=model.pt):
        x = torch.from_numpy(im).float() / 255
        with torch.inference_mode():
            pred = model(x[None], augment=augment)
        pred = pred[0] if isinstance(pred, (list, tuple)) else pred
        out.append((Path(path).name, pred, tuple(im.shape[1:]), im0.shape))
    return out


def yolov5_detections(raw, conf: float, iou: float, max_det: int = 300, agnostic: bool = False,
                      multi_label: bool = False):
    """``non_max_suppression`` + ``scale_boxes`` on each head output, as ``detect.py`` does (boxes unrounded):
    ``[(image id, (n, 6) tensor [x1, y1, x2, y2, conf, cls] in original pixels)]``."""
    from yolov5.utils.general import non_max_suppression, scale_boxes

    out = []
    for image_id, pred, input_hw, shape0 in raw:
        det = non_max_suppression(pred.clone(), conf, iou, agnostic=agnostic, multi_label=multi_label,
                                  max_det=max_det)[0]
        det[:, :4] = scale_boxes(input_hw, det[:, :4].clone(), shape0)
        out.append((image_id, det))
    return out


def assert_same(reference, detections) -> None:
    """Bit-for-bit equality of YOLOv5's detections and ours: ids, order, boxes, confidences, classes."""
    assert [r[0] for r in reference] == [d.image_id for d in detections]
    for (image_id, det), d in zip(reference, detections):
        assert len(det) == len(d), f"{image_id}: {len(det)} detections from YOLOv5, {len(d)} from the cache"
        np.testing.assert_array_equal(det[:, :4].double().numpy(), d.boxes, err_msg=image_id)
        np.testing.assert_array_equal(det[:, 4].double().numpy(), d.scores, err_msg=image_id)
        np.testing.assert_array_equal(det[:, 5].long().numpy(), d.class_ids, err_msg=image_id)


def m6_sized_head(seed: int = 0, rows: int = 102_000, clusters: int = 60):
    """A head output ``(1, rows, 7)`` of YOLOv5m6@1280's size on a 1280x1280 input: boxes around ``clusters``
    animals, objectness mostly weak (sigmoid of N(-7, 2.5)) and class scores unquantised, so that float32
    confidences tie only by chance, a few rows an image, as a real head's do."""
    import torch

    rng = np.random.default_rng(seed)
    k = rng.integers(0, clusters, rows)
    xy = rng.uniform(40, 1240, (clusters, 2))[k] + rng.normal(0, 10, (rows, 2))
    wh = rng.uniform(30, 200, (clusters, 2))[k] * rng.uniform(0.8, 1.25, (rows, 2))
    obj = 1 / (1 + np.exp(-rng.normal(-7, 2.5, rows)))
    cls = 1 / (1 + np.exp(-rng.normal(0, 3, (rows, 2))))
    return torch.from_numpy(np.concatenate([xy, wh, obj[:, None], cls], 1).astype(np.float32))[None]

