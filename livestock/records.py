"""Typed containers every pipeline stage passes on.

An :class:`ImageRecord` is one labelled image (the ground truth as read from AI Hub files);
:class:`Detections` is what a detector says about one image. Boxes are always pixel corners
``(x1, y1, x2, y2)`` in float64 arrays of shape ``(N, 4)``; conversion to YOLO or contest
coordinates happens only at the edges (``yolo_format``, ``submission``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from livestock.fileio import atomic_write_text

# Index = YOLO class id, as in the original entry's data.yaml.
CLASS_NAMES: tuple[str, ...] = ("pig", "cow")
CLASS_TO_ID: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}


def _as_boxes(boxes: Iterable | np.ndarray | None) -> np.ndarray:
    arr = np.asarray(boxes if boxes is not None else [], dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image: where its JPEG lies, its size, its class and its boxes (pixel corners)."""

    image_id: str  # file name with extension, the contest's ImageID, e.g. livestock_cow_bbox_000123.jpg
    image_path: str  # path of the extracted JPEG on disk
    width: int
    height: int
    label: str  # "pig" | "cow": from the file / zip name, never from the JSON category_id
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    def __post_init__(self) -> None:
        if self.label not in CLASS_TO_ID:
            raise ValueError(f"{self.image_id}: unknown class {self.label!r}, expected one of {CLASS_NAMES}")
        object.__setattr__(self, "boxes", _as_boxes(self.boxes))

    @property
    def class_id(self) -> int:
        """The YOLO class id of the label."""
        return CLASS_TO_ID[self.label]

    @property
    def n_boxes(self) -> int:
        """How many boxes the image has."""
        return int(self.boxes.shape[0])

    @property
    def stem(self) -> str:
        """The image file name without its extension."""
        return Path(self.image_id).stem

    def to_json(self) -> dict:
        """The record as a JSON-ready dict (one line of ``records.jsonl``)."""
        return {
            "image_id": self.image_id,
            "image_path": self.image_path,
            "width": int(self.width),
            "height": int(self.height),
            "label": self.label,
            "boxes": self.boxes.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict) -> "ImageRecord":
        """The record a :meth:`to_json` dict describes; a ValueError for a size no image has."""
        width, height = int(d["width"]), int(d["height"])
        if width <= 0 or height <= 0:  # every box and normalised coordinate would be wrong, found only much later
            raise ValueError(f"{d['image_id']}: width and height must be positive, got {width}x{height}")
        return cls(d["image_id"], d["image_path"], width, height, d["label"], d["boxes"])


@dataclass
class Detections:
    """A detector's output for one image: pixel-corner boxes, confidences and class ids."""

    image_id: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))

    def __post_init__(self) -> None:
        self.boxes = _as_boxes(self.boxes)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if not (len(self.boxes) == len(self.scores) == len(self.class_ids)):
            raise ValueError(
                f"{self.image_id}: {len(self.boxes)} boxes, {len(self.scores)} scores, {len(self.class_ids)} class ids"
            )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def sorted_by_score(self) -> "Detections":
        """Highest confidence first (stable), the order the contest scorer needs within an image."""
        order = np.argsort(-self.scores, kind="stable")
        return Detections(self.image_id, self.width, self.height, self.boxes[order], self.scores[order],
                          self.class_ids[order])

    def filter(self, keep: np.ndarray) -> "Detections":
        """The detections ``keep`` selects (a boolean mask or indices)."""
        return Detections(self.image_id, self.width, self.height, self.boxes[keep], self.scores[keep],
                          self.class_ids[keep])


# ---------------------------------------------------------------- persistence


def save_records(records: Iterable[ImageRecord], path: str | os.PathLike) -> Path:
    """One JSON object per line (``records.jsonl``), written atomically."""
    lines = [json.dumps(r.to_json(), ensure_ascii=False) for r in records]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def load_records(path: str | os.PathLike) -> list[ImageRecord]:
    """The records of a ``records.jsonl`` file; ValueError naming the line of a malformed one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: records file not found (run `livestock prepare` first)")
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(ImageRecord.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: malformed record: {e}") from e
    return out
