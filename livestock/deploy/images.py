"""Images for the deployment stage: which ones (calibration, scoring) and the tensor inference makes of each.

The calibration input must be the inference input, or INT8 ranges are fitted to pictures the model never sees:
:func:`letterbox_input` letterboxes as YOLOv5's inference does for a fixed-shape export.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from livestock.data.yolo_format import split_image_paths
from livestock.evaluation.detect import resolve_images
from livestock.model.yolov5 import models as yolov5_models
from livestock.model.onnx_file import as_hw

def letterbox_input(image: str | os.PathLike | np.ndarray, imgsz: int | Sequence[int], stride: int = 32
                    ) -> tuple[np.ndarray, tuple[int, int]]:
    """The model input YOLOv5 inference makes of one image for a fixed-shape model, and the image's size.

    ``image``: a path or a BGR uint8 array. Returns ``(input, (height, width))``, the input a (1, 3, H, W) float32
    RGB tensor in [0, 1] (full-size letterbox, grey padding)."""
    import cv2

    if isinstance(image, np.ndarray):
        im0 = image
    else:
        im0 = cv2.imread(str(image))
        if im0 is None:
            raise ValueError(f"{image}: not a readable image")
    im = yolov5_models.letterbox(im0, as_hw(imgsz), stride=stride, auto=False)
    im = np.ascontiguousarray(im.transpose((2, 0, 1))[::-1], dtype=np.float32) / 255.0  # HWC BGR -> CHW RGB
    return im[None], im0.shape[:2]


def images_from(spec: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train") -> list[Path]:
    """Image paths, sorted: a dataset yaml's ``split`` (:func:`livestock.data.yolo_format.split_image_paths`), or
    any image source detection takes (:func:`livestock.evaluation.detect.resolve_images`: a folder, a list file,
    prepared records, one image, or a sequence of paths)."""
    if isinstance(spec, (str, os.PathLike)) and Path(spec).suffix.lower() in (".yaml", ".yml"):
        return sorted(split_image_paths(spec, split))
    return sorted(item.path for item in resolve_images(spec))
