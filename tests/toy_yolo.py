"""A tiny YOLO-format detection set drawn from scratch, for engine and evolution tests.

Each frame shows one species only, as in the real data: class 0 ("pig") is a pink, wide ellipse;
class 1 ("cow") a dark, tall ellipse with a white patch. Shapes and colours differ enough that a
nano model learns them in a few CPU epochs, so "trained beats untrained" is a fair test.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

NAMES = {0: "pig", 1: "cow"}


def _draw_frame(rng: np.random.Generator, width: int, height: int, class_id: int) -> tuple[np.ndarray, list]:
    base = rng.integers(90, 150)
    img = np.full((height, width, 3), base, np.uint8)
    img = cv2.add(img, rng.integers(0, 25, (height, width, 3), dtype=np.uint8))  # sensor noise
    boxes: list[tuple[int, float, float, float, float]] = []
    scale = min(width, height) / 180
    for _ in range(int(rng.integers(1, 4))):
        # Half-axes: objects a quarter to a third of the frame high, large enough for a nano model at 128 px.
        if class_id == 0:
            ax, ay = rng.uniform(34, 50) * scale, rng.uniform(18, 26) * scale
            colour = (int(rng.integers(150, 190)), int(rng.integers(150, 190)), int(rng.integers(225, 255)))
        else:
            ax, ay = rng.uniform(18, 26) * scale, rng.uniform(30, 44) * scale
            colour = (int(rng.integers(15, 45)),) * 3
        for _attempt in range(20):  # avoid overlaps so every label stays fully visible
            cx, cy = rng.uniform(ax + 2, width - ax - 2), rng.uniform(ay + 2, height - ay - 2)
            x1, y1, x2, y2 = cx - ax, cy - ay, cx + ax, cy + ay
            if all(x2 < b[1] - 2 or x1 > b[3] + 2 or y2 < b[2] - 2 or y1 > b[4] + 2 for b in boxes):
                break
        else:
            continue
        cv2.ellipse(img, (int(cx), int(cy)), (int(ax), int(ay)), 0, 0, 360, colour, -1)
        if class_id == 1:
            cv2.circle(img, (int(cx), int(cy - ay / 3)), max(2, int(ax / 2)), (235, 235, 235), -1)
        boxes.append((class_id, x1, y1, x2, y2))
    return img, boxes


def make_toy_yolo_dataset(
    root: str | Path,
    n_train: int = 48,
    n_val: int = 16,
    width: int = 320,
    height: int = 180,
    seed: int = 0,
) -> Path:
    """Write images/{train,val}, labels/{train,val} and data.yaml under ``root``; return data.yaml's path."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            class_id = i % 2
            img, boxes = _draw_frame(rng, width, height, class_id)
            stem = f"toy_{NAMES[class_id]}_{split}_{i:04d}"
            cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), img)
            lines = [
                f"{c} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
                for c, x1, y1, x2, y2 in boxes
            ]
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(
        yaml.safe_dump({"path": str(root.resolve()), "train": "images/train", "val": "images/val", "names": NAMES})
    )
    return data_yaml
