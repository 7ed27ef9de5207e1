"""Realistic in-memory records for EDA and split tests, drawn with numpy from the real set's figures:
cow : pig about 3 : 1, cow box counts from the real histogram, pig box-count groups 506 / 2,749 / 1,048,
pig frames 1920x1080 or 1280x960 (3,131 : 1,172), cows all 1920x1080, a few empty cow frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from livestock.records import ImageRecord, save_records

# boxes per cow image 0..11 (the real histogram's first and last bins split over their two counts)
COW_COUNT_WEIGHTS = np.array([3, 1987, 2408, 2985, 2099, 1314, 661, 400, 222, 56, 12, 5], dtype=float)
PIG_GROUP_WEIGHTS = np.array([506, 2749, 1048], dtype=float)  # little (3-7), medium (8-12), many (13-20)
PIG_GROUP_COUNTS = (np.arange(3, 8), np.arange(8, 13), np.arange(13, 21))


def _boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    area = np.exp(rng.normal(np.log(40_000), 0.9, n))  # median 40k px^2, a few below 4k, a few above 100k
    ratio = np.clip(rng.normal(0.5, 0.13, n), 0.15, 0.85)  # w / (w + h)
    w = np.sqrt(area * ratio / (1 - ratio))
    h = area / w
    w, h = np.minimum(w, width - 1), np.minimum(h, height - 1)
    x1 = rng.uniform(0, width - w)
    y1 = rng.uniform(0, height - h)
    return np.round(np.stack([x1, y1, x1 + w, y1 + h], axis=1), 1)


def synthetic_records(n_images: int = 3000, seed: int = 0,
                      image_dir: str = "/data/prepared/images") -> list[ImageRecord]:
    """``n_images`` records with the real set's class ratio, frame sizes and box-count distributions (no files)."""
    rng = np.random.default_rng(seed)
    records = []
    n_cow = int(round(n_images * 12152 / 16455))
    for i in range(n_images):
        label = "cow" if i < n_cow else "pig"
        if label == "cow":
            width, height = 1920, 1080
            n = int(rng.choice(len(COW_COUNT_WEIGHTS), p=COW_COUNT_WEIGHTS / COW_COUNT_WEIGHTS.sum()))
        else:
            width, height = (1920, 1080) if rng.random() < 3131 / 4303 else (1280, 960)
            g = int(rng.choice(3, p=PIG_GROUP_WEIGHTS / PIG_GROUP_WEIGHTS.sum()))
            n = int(rng.choice(PIG_GROUP_COUNTS[g]))
        image_id = f"livestock_{label}_bbox_{i:06d}.jpg"
        records.append(ImageRecord(image_id, f"{image_dir}/{image_id}", width, height, label,
                                   _boxes(rng, n, width, height)))
    order = rng.permutation(n_images)  # cows and pigs interleaved, as file names sort in the real set
    return [records[k] for k in order]


def write_tiny_prepared(prepared_dir: Path, n_images: int = 30, seed: int = 0,
                        scale: float = 0.05) -> list[ImageRecord]:
    """A prepared folder with small real JPEGs: ``records.jsonl`` + ``images/*.jpg``, frames shrunk by
    ``scale`` (1920x1080 -> 96x54) with boxes scaled alike, so a notebook run stays quick."""
    import cv2

    rng = np.random.default_rng(seed)
    images_dir = prepared_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for r in synthetic_records(n_images, seed=seed, image_dir=str(images_dir)):
        w, h = int(r.width * scale), int(r.height * scale)
        img = rng.integers(60, 160, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(r.image_path, img)
        out.append(ImageRecord(r.image_id, r.image_path, w, h, r.label, r.boxes * scale))
    save_records(out, prepared_dir / "records.jsonl")
    return out
