"""Images for the deployment stage: which ones (calibration, scoring) and the tensor inference makes of each.

The calibration input must be the inference input, or INT8 ranges are fitted to pictures the model never sees:
:func:`letterbox_input` letterboxes as YOLOv5's inference does for a fixed-shape export.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np

from livestock.evaluation.detect import IMAGE_SUFFIXES
from livestock.model import yolov5_models
from livestock.model.onnx_file import as_hw

T = TypeVar("T")


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
    """Image paths, sorted, from a folder, list file, data.yaml or a sequence of these.

    A folder is searched recursively, a list file holds one path a line, a YOLOv5 data.yaml gives its ``split``."""
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


def pick_evenly(items: Sequence[T], n: int) -> list[T]:
    """``n`` items spread evenly over ``items``, first and last included (all of them when there are fewer)."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]
