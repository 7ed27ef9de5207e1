"""Synthetic AI Hub-format dataset: rendered barn frames with pigs or cows, zipped like the real data.

The real AI Hub images cannot be shipped, so every stage of the pipeline is exercised on a set that
has the real set's *shape*: the same six zip names, file names, label JSON schema (pixel-corner boxes
and a misleading ``category_id``), image sizes, class ratio, boxes-per-image distributions, box sizes,
incomplete cow labels, and a test answer file in the contest format.

Frames are drawn with OpenCV primitives: a barn background (walls, floor, pens, fences), animals built
from ellipses and polygons (body, head, ears, legs, tail), occluders in front of them, lighting,
blur, sensor noise and JPEG compression. Every true box is the tight box of the animal's *visible*
pixels, read back from an id map rasterised with the same polygons.

Geometry (what is where) and appearance (colours, lighting, noise) come from two separate random
streams per image, so ``labels_only=True`` gives exactly the labels of the fully rendered set while
skipping the rendering cost.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from livestock.paths import DATA_DIR, SYNTH_TRUTH, TEST_ANSWER, TEST_DIR, TEST_ZIPS, TRAIN_ZIPS
from livestock.records import atomic_write_csv

# ----------------------------------------------------------------------------- calibration
# Image counts of the real AI Hub bbox training set (EDA of the original entry).
TRAIN_IMAGES = {"cow": 12_152, "pig": 4_303}
TRAIN_PIG_SIZES = {(1920, 1080): 3_131, (1280, 960): 1_172}
# Real test set: images per class in the contest answer file (one more test image has no box at all).
TEST_IMAGES = {"cow": 1_519, "pig": 538}
# Pig test frames by size, recovered from the answer file: 389 frames carry coordinates beyond 1, i.e.
# 1920x1080 frames that the original scoring notebook normalised by 1280x960.
TEST_PIG_SIZES = {(1920, 1080): 389, (1280, 960): 149}

# Labelled boxes per cow training image, n = 0..11: the original's EDA histogram (bins of width 1.1),
# its first bin split into the 3 empty images and 1 box, its last bin (17) split 13 / 4 between 10 and 11.
TRAIN_COW_LABELLED_COUNT_HIST = (3, 1987, 2408, 2985, 2099, 1314, 661, 400, 222, 56, 13, 4)

# Per (class, frame size), from the real contest answer (shared/real/contest_answer.csv, 10,647 boxes),
# pig 1920x1080 boxes first re-normalised by their true frame size:
#   count_hist  images with n = 0, 1, 2, ... boxes;
#   log_size_q  21 quantiles (0, 5, ..., 100 %) of each image's mean log sqrt(w*h) (w, h normalised by the
#               frame's width / height), taken at box-centre y = 0.5;
#   size_slope  within-image slope of log sqrt(w*h) against box-centre y (perspective: nearer is bigger);
#   size_sd     within-image residual standard deviation of log sqrt(w*h);
#   xc_q, yc_q  21 quantiles of normalised box centres.
CALIBRATION: dict[str, dict] = {
    "cow_1920x1080": dict(
        count_hist=(0, 274, 290, 370, 257, 154, 91, 48, 29, 5, 1),
        size_slope=2.266, size_sd=0.284, edge_share=0.050, size_gain=1.13,
        log_size_range=(-3.049, -0.934),
        log_size_q=(-3.208, -2.499, -2.329, -2.265, -2.221, -2.186, -2.154, -2.128, -2.106, -2.080, -2.048,
                    -2.019, -1.982, -1.955, -1.924, -1.875, -1.817, -1.703, -1.605, -1.448, -1.013),
        xc_q=(0.018, 0.099, 0.146, 0.185, 0.243, 0.290, 0.329, 0.370, 0.403, 0.451, 0.491, 0.530, 0.586,
              0.621, 0.655, 0.705, 0.735, 0.765, 0.827, 0.881, 0.983),
        yc_q=(0.051, 0.275, 0.306, 0.340, 0.376, 0.420, 0.456, 0.477, 0.495, 0.518, 0.538, 0.558, 0.574,
              0.596, 0.620, 0.656, 0.693, 0.720, 0.760, 0.799, 0.914),
    ),
    "pig_1280x960": dict(
        count_hist=(0, 0, 0, 0, 2, 5, 21, 26, 29, 22, 23, 17, 2, 0, 2),
        size_slope=1.843, size_sd=0.138, edge_share=0.040, size_gain=1.04,
        log_size_range=(-2.967, -1.100),
        log_size_q=(-2.454, -2.368, -2.360, -2.344, -2.336, -2.331, -2.324, -2.318, -2.291, -1.841, -1.785,
                    -1.771, -1.760, -1.752, -1.742, -1.701, -1.688, -1.679, -1.669, -1.664, -1.590),
        xc_q=(0.079, 0.589, 0.600, 0.608, 0.613, 0.627, 0.634, 0.649, 0.664, 0.677, 0.689, 0.698, 0.738,
              0.757, 0.781, 0.825, 0.848, 0.858, 0.889, 0.908, 0.954),
        yc_q=(0.183, 0.317, 0.349, 0.373, 0.410, 0.429, 0.472, 0.488, 0.498, 0.518, 0.587, 0.605, 0.649,
              0.698, 0.730, 0.736, 0.780, 0.859, 0.870, 0.914, 0.953),
    ),
    "pig_1920x1080": dict(
        count_hist=(0, 0, 0, 0, 0, 1, 1, 9, 13, 43, 59, 73, 58, 56, 51, 20, 5),
        size_slope=0.413, size_sd=0.168, edge_share=0.286, size_gain=1.05,
        log_size_range=(-2.244, -1.228),
        log_size_q=(-1.932, -1.781, -1.729, -1.706, -1.688, -1.666, -1.653, -1.637, -1.626, -1.613, -1.600,
                    -1.589, -1.579, -1.569, -1.555, -1.545, -1.537, -1.519, -1.498, -1.468, -1.383),
        xc_q=(0.098, 0.158, 0.179, 0.225, 0.260, 0.290, 0.328, 0.369, 0.399, 0.425, 0.459, 0.499, 0.526,
              0.560, 0.595, 0.633, 0.677, 0.721, 0.748, 0.773, 0.943),
        yc_q=(0.037, 0.072, 0.091, 0.109, 0.125, 0.144, 0.159, 0.190, 0.242, 0.294, 0.363, 0.415, 0.483,
              0.570, 0.647, 0.713, 0.753, 0.792, 0.823, 0.855, 0.900),
    ),
}
_QUANTILE_LEVELS = np.linspace(0.0, 1.0, 21)
_PLACEMENT_TRIES = 25
MIN_VISIBLE_SHARE = 0.35  # an animal is boxed when this share of its pixels is visible (in frame, not hidden)

# The label JSON's own categories are behaviours, not species. Their ids are chosen so that reading
# category_id as a YOLO class id (pig = 0, cow = 1) gives the wrong species for most boxes.
BEHAVIOUR_CATEGORIES = (
    {"id": 0, "name": "standing", "supercategory": "behaviour"},
    {"id": 1, "name": "lying", "supercategory": "behaviour"},
    {"id": 2, "name": "eating", "supercategory": "behaviour"},
    {"id": 3, "name": "sitting", "supercategory": "behaviour"},
)
_CATEGORY_ID = {c["name"]: c["id"] for c in BEHAVIOUR_CATEGORIES}

_ZIP_DATE = (2021, 7, 1, 0, 0, 0)  # fixed member timestamps: same seed, same zip bytes
_ZIP_FOLDER = {"cow": "소_bbox", "pig": "돼지_bbox"}
_SPLIT_CODE = {"train": 0, "test": 1}
_CLASS_CODE = {"pig": 0, "cow": 1}
_FIXED = 4  # sub-pixel bits for cv2 polygon drawing
_ONE = 1 << _FIXED


# ----------------------------------------------------------------------------- public containers


@dataclass
class SynthSummary:
    """What :func:`generate_synthetic_dataset` wrote."""

    train_dir: Path
    test_dir: Path
    truth_csv: Path
    answer_csv: Path
    train_images: dict[str, int] = field(default_factory=dict)
    train_labelled_boxes: dict[str, int] = field(default_factory=dict)  # boxes in the label JSONs
    train_true_boxes: dict[str, int] = field(default_factory=dict)  # every visible animal
    left_out_cow_boxes: int = 0
    test_images: dict[str, int] = field(default_factory=dict)
    test_boxes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_images(self) -> int:
        return sum(self.train_images.values()) + sum(self.test_images.values())

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(self.n_images, 1)

    def format(self) -> str:
        lines = [
            f"train  {self.train_dir}: " + ", ".join(
                f"{c} {self.train_images.get(c, 0)} images / {self.train_labelled_boxes.get(c, 0)} labelled boxes"
                f" ({self.train_true_boxes.get(c, 0)} true)" for c in ("cow", "pig")),
            f"       left-out cow boxes: {self.left_out_cow_boxes}"
            f" ({self.left_out_cow_boxes / max(self.train_true_boxes.get('cow', 0), 1):.1%} of true cow boxes)",
            f"test   {self.test_dir}: " + ", ".join(
                f"{c} {self.test_images.get(c, 0)} images / {self.test_boxes.get(c, 0)} boxes" for c in ("cow", "pig")),
            f"truth  {self.truth_csv}",
            f"answer {self.answer_csv}",
            f"time   {self.seconds:.1f} s ({self.seconds_per_image * 1000:.1f} ms per image)",
        ]
        return "\n".join(lines)


def split_by_class_ratio(n_images: int, split: str = "train") -> dict[str, int]:
    """Split an image total between cow and pig in the real ratio of ``split`` ('train' or 'test'),
    with at least one image of each class when ``n_images >= 2``."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n_images < 0:
        raise ValueError(f"image count must be >= 0, got {n_images}")
    real = TRAIN_IMAGES if split == "train" else TEST_IMAGES
    n_cow = int(round(n_images * real["cow"] / (real["cow"] + real["pig"])))
    if n_images >= 2:
        n_cow = min(max(n_cow, 1), n_images - 1)
    return {"cow": n_cow, "pig": n_images - n_cow}


# ----------------------------------------------------------------------------- geometry helpers

_CIRCLE = np.linspace(0.0, 2.0 * np.pi, 32, endpoint=False)
_COS, _SIN = np.cos(_CIRCLE), np.sin(_CIRCLE)


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle: float = 0.0) -> np.ndarray:
    x, y = ax * _COS, ay * _SIN
    c, s = math.cos(angle), math.sin(angle)
    out = np.empty((len(_COS), 2))
    out[:, 0] = cx + c * x - s * y
    out[:, 1] = cy + s * x + c * y
    return out


def _superellipse(cx: float, cy: float, ax: float, ay: float, power: float) -> np.ndarray:
    # |x/a|^p + |y/b|^p = 1: p > 2 gives the boxier trunk of a cow
    e = 2.0 / power
    x = ax * np.sign(_COS) * np.abs(_COS) ** e
    y = ay * np.sign(_SIN) * np.abs(_SIN) ** e
    return np.stack([cx + x, cy + y], axis=1)


def _quad(p0: tuple[float, float], p1: tuple[float, float], w0: float, w1: float) -> np.ndarray:
    """A tapered limb from p0 (width w0) to p1 (width w1)."""
    p0a, p1a = np.asarray(p0, float), np.asarray(p1, float)
    d = p1a - p0a
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    return np.stack([p0a + n * w0 / 2, p1a + n * w1 / 2, p1a - n * w1 / 2, p0a - n * w0 / 2])


def _rotate_about(pts: np.ndarray, centre: tuple[float, float], angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    q = pts - centre
    return np.stack([centre[0] + c * q[:, 0] - s * q[:, 1], centre[1] + s * q[:, 0] + c * q[:, 1]], axis=1)


@dataclass
class _Part:
    pts: np.ndarray  # canonical coordinates, then pixels after placement
    tone: str  # colour role
    line: float = 0.0  # > 0: an open polyline of this thickness (canonical units) instead of a fill
    silhouette: bool = True  # part of the animal's outline (id map); False for markings inside it


@dataclass
class _Animal:
    label: str
    parts: list[_Part]
    behaviour: str
    body_width: float  # canonical half width of the trunk, for shading
    patches: list[np.ndarray] = field(default_factory=list)  # canonical marking blobs, clipped to the animal
    angle: float = 0.0
    flip: float = 1.0
    squash: float = 1.0
    scale: float = 1.0
    centre: tuple[float, float] = (0.0, 0.0)
    full_area: float = 0.0  # pixels the whole animal would cover, in frame or not
    canon: tuple | None = None  # cache of _canonical()


def _pig_shape(rng: np.random.Generator) -> _Animal:
    """A pig seen from above (CCTV over a pen), facing +x, trunk from x = -0.5 to 0.5."""
    bw = rng.uniform(0.21, 0.28)
    side_lying = rng.random() < 0.25
    parts: list[_Part] = []
    if side_lying:  # lying on its side: legs stretched out sideways
        for x0, dx in ((0.27, 0.08), (0.17, 0.04), (-0.25, -0.06), (-0.33, -0.1)):
            parts.append(_Part(_quad((x0, bw * 0.5), (x0 + dx, bw + rng.uniform(0.14, 0.22)), 0.09, 0.055), "body"))
    else:  # trotters just showing beside the trunk
        for x0 in (0.3, -0.3):
            for side in (-1, 1):
                parts.append(_Part(_ellipse(x0, side * (bw + 0.005), 0.065, 0.045), "leg"))
    tail_curl = rng.uniform(-1, 1) * 0.04
    parts.append(_Part(np.array([[-0.48, 0.0], [-0.56, 0.02 + tail_curl], [-0.6, -0.02], [-0.57, -0.04]]),
                       "tail", line=0.022))
    trunk = [_ellipse(-0.2, 0.0, 0.3, bw), _ellipse(0.0, 0.0, 0.5, bw * 0.97), _ellipse(0.22, 0.0, 0.28, bw * 0.93)]
    parts += [_Part(p, "body") for p in trunk]
    if side_lying:
        parts.append(_Part(_ellipse(0.0, bw * 0.45, 0.32, bw * 0.35), "belly", silhouette=False))
    parts.append(_Part(_ellipse(0.0, -bw * 0.1 if side_lying else 0.0, 0.36, bw * 0.3), "highlight", silhouette=False))
    # head, snout and ears turn together about the neck
    neck = (0.42, 0.0)
    turn = float(np.clip(rng.normal(0.0, 0.25), -0.6, 0.6))
    ear = rng.uniform(0.85, 1.2)
    head = [
        _Part(_ellipse(0.55, 0.0, 0.15, bw * 0.72), "body"),
        _Part(np.array([[0.56, -bw * 0.5], [0.76, -0.06], [0.76, 0.06], [0.56, bw * 0.5]]), "body"),
        _Part(_ellipse(0.765, 0.0, 0.028, 0.068), "snout"),
        _Part(_ellipse(0.77, -0.03, 0.011, 0.016), "nostril", silhouette=False),
        _Part(_ellipse(0.77, 0.03, 0.011, 0.016), "nostril", silhouette=False),
    ]
    for side in (-1, 1):  # floppy ears lying forward over the eyes
        head.append(_Part(_ellipse(0.56 + 0.02 * ear, side * bw * 0.5, 0.1 * ear, 0.06 * ear, side * 0.5), "ear"))
    for p in head:
        p.pts = _rotate_about(p.pts, neck, turn)
    parts += head
    patches = []
    if rng.random() < 0.3:  # dirt or dark markings on the back
        for _ in range(int(rng.integers(1, 5))):
            patches.append(_ellipse(rng.uniform(-0.4, 0.35), rng.uniform(-bw, bw), rng.uniform(0.05, 0.14),
                                    rng.uniform(0.04, 0.1), rng.uniform(0, np.pi)))
    return _Animal("pig", parts, "lying" if side_lying or rng.random() < 0.55 else "standing", bw, patches)


def _cow_shape(rng: np.random.Generator) -> _Animal:
    """A cow seen from the side and a little above, facing +x, trunk from x = -0.45 to 0.45, y down."""
    b = rng.uniform(0.17, 0.21)  # half height of the trunk
    pose = str(rng.choice(["standing", "eating", "lying"], p=[0.65, 0.17, 0.18]))
    legs = rng.uniform(0.3, 0.36)
    stride = rng.uniform(-0.12, 0.12)
    parts: list[_Part] = []
    ground = b + legs if pose != "lying" else b * 1.02

    def leg(x: float, tilt: float, tone: str) -> None:
        top, foot = (x, b * 0.2), (x + tilt * legs, ground)
        parts.append(_Part(_quad(top, foot, 0.1, 0.055), tone))
        hock = (top[0] + 0.88 * (foot[0] - top[0]), top[1] + 0.88 * (foot[1] - top[1]))
        parts.append(_Part(_quad(hock, foot, 0.058, 0.062), "hoof"))

    if pose != "lying":  # legs first: the trunk hides where they join it
        leg(0.25, -stride, "leg_far")
        leg(-0.27, stride, "leg_far")
        leg(0.31, stride, "leg")
        leg(-0.33, -stride, "leg")
        tail = np.array([[-0.44, -b * 0.75], [-0.5, -b * 0.2], [-0.5, b + legs * 0.45]])
    else:
        tail = np.array([[-0.44, -b * 0.7], [-0.52, b * 0.2], [-0.42, b * 0.95]])
    parts.append(_Part(tail, "tail", line=0.024))
    parts.append(_Part(_ellipse(*tail[-1], 0.025, 0.045), "tail"))
    parts.append(_Part(_superellipse(0.0, 0.0, 0.45, b, 2.6), "body"))
    parts.append(_Part(_ellipse(0.26, -b * 0.1, 0.18, b * 1.06), "body"))  # shoulders
    parts.append(_Part(_ellipse(-0.3, -b * 0.08, 0.16, b * 1.03), "body"))  # hips
    if pose == "lying":  # folded legs showing under the chest and belly
        parts.append(_Part(_ellipse(0.3, b * 0.85, 0.14, 0.05), "leg"))
        parts.append(_Part(_ellipse(-0.2, b * 0.9, 0.12, 0.045), "leg"))
    else:
        if rng.random() < 0.35:
            parts.append(_Part(_ellipse(-0.18, b * 0.95, 0.07, 0.055), "udder"))
    # neck and head: alert (head up), eating (muzzle at the floor), lying (head up, resting)
    if pose == "eating":
        poll, head_dir = np.array([0.6, b * 0.35]), math.radians(rng.uniform(70, 90))
    elif pose == "lying":
        poll, head_dir = np.array([0.56, -b * 1.05]), math.radians(rng.uniform(40, 70))
    else:
        poll, head_dir = np.array([0.6, -b * rng.uniform(0.9, 1.3)]), math.radians(rng.uniform(35, 70))
    head_len = rng.uniform(0.24, 0.29)
    d = np.array([math.cos(head_dir), math.sin(head_dir)])
    n = np.array([-d[1], d[0]])  # points back / up from the head's axis
    w_poll, w_muzzle = 0.16, 0.1
    withers, chest = np.array([0.22, -b * 1.02]), np.array([0.42, b * 0.55])
    p_up, p_dn = poll + n * w_poll * 0.5, poll - n * w_poll * 0.5
    if np.hypot(*(p_up - withers)) > np.hypot(*(p_dn - withers)):
        p_up, p_dn = p_dn, p_up
    n_up = (p_up - poll) / np.hypot(*(p_up - poll))
    # neck: withers -> top of the head's base -> throat -> chest, with a dewlap bulge under the throat
    parts.append(_Part(np.stack([withers, p_up, p_dn, (p_dn + chest) / 2 + np.array([0.03, 0.04]), chest]), "body"))
    tip = poll + d * head_len
    parts.append(_Part(np.stack([p_up, tip + n * w_muzzle * 0.5, tip - n * w_muzzle * 0.5, p_dn]), "head"))
    parts.append(_Part(_ellipse(*(poll + d * head_len * 0.1), w_poll * 0.55, w_poll * 0.5), "head"))
    parts.append(_Part(_ellipse(*(tip - d * 0.02), 0.05, w_muzzle * 0.6, head_dir), "muzzle"))
    parts.append(_Part(_ellipse(*(poll + d * head_len * 0.35 + n * 0.035), 0.012, 0.012), "eye",
                       silhouette=False))
    for side, tone in ((1, "ear_far"), (-1, "ear")):
        ang = head_dir + math.pi + side * 1.2
        out = np.array([math.cos(ang), math.sin(ang)])
        parts.append(_Part(_ellipse(*(poll + d * 0.03 + out * 0.075), 0.07, 0.03, ang), tone))
    if rng.random() < 0.3:
        base = poll + n_up * w_poll * 0.4
        parts.append(_Part(np.stack([base, base + n_up * 0.05 - d * 0.01, base + n_up * 0.08 + d * 0.03]),
                           "horn", line=0.022))
    patches = []
    for _ in range(int(rng.integers(3, 8))):  # used by patterned coats (Holstein); their shape is geometry
        cx, cy = rng.uniform(-0.5, 0.6), rng.uniform(-b * 1.2, b + legs * 0.3)
        for _lobe in range(int(rng.integers(1, 4))):  # irregular blobs: a few overlapping lobes
            patches.append(_ellipse(cx + rng.normal(0, 0.05), cy + rng.normal(0, 0.04), rng.uniform(0.05, 0.14),
                                    rng.uniform(0.04, 0.1), rng.uniform(0, np.pi)))
    return _Animal("cow", parts, pose, b, patches)


def _canonical(animal: _Animal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All part and patch points in one array (one transform per pose instead of one per part), the
    split offsets, and which points belong to the silhouette."""
    if animal.canon is None:
        arrays = [p.pts for p in animal.parts] + list(animal.patches)
        lengths = [len(a) for a in arrays]
        silhouette = np.repeat([p.silhouette for p in animal.parts] + [False] * len(animal.patches), lengths)
        animal.canon = (np.concatenate(arrays), np.cumsum(lengths)[:-1], silhouette)
    return animal.canon


def _pose(animal: _Animal, pts: np.ndarray, scale: float, centre: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(animal.angle), math.sin(animal.angle)
    x = pts[:, 0] * (animal.squash * animal.flip)
    y = pts[:, 1]
    out = np.empty_like(pts)
    out[:, 0] = centre[0] + scale * (c * x - s * y)
    out[:, 1] = centre[1] + scale * (s * x + c * y)
    return out


def _unit_extent(animal: _Animal) -> tuple[float, float, float, float]:
    """Box of the posed animal's silhouette at scale 1 around the origin: (x0, y0, x1, y1)."""
    pts, _, silhouette = _canonical(animal)
    posed = _pose(animal, pts[silhouette], 1.0, (0.0, 0.0))
    (x0, y0), (x1, y1) = posed.min(axis=0), posed.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _pose_parts(animal: _Animal, scale: float, centre: tuple[float, float]
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    pts, offsets, _ = _canonical(animal)
    pieces = np.split(_pose(animal, pts, scale, centre), offsets)
    return pieces[:len(animal.parts)], pieces[len(animal.parts):]


def _fill_fraction(animal: _Animal, size: int = 48) -> float:
    """Share of the posed animal's box its silhouette covers (rasterised small)."""
    ux0, uy0, ux1, uy1 = _unit_extent(animal)
    k = size / max(ux1 - ux0, uy1 - uy0)
    w, h = max(1, int(math.ceil((ux1 - ux0) * k))), max(1, int(math.ceil((uy1 - uy0) * k)))
    canvas = np.zeros((h, w), np.uint8)
    parts, _ = _pose_parts(animal, k, (-ux0 * k, -uy0 * k))
    for p, pts in zip(animal.parts, parts):
        if p.silhouette:
            if p.line > 0:
                cv2.polylines(canvas, [_fixed(pts)], False, 1, max(1, int(round(p.line * k))), cv2.LINE_8, _FIXED)
            else:
                cv2.fillPoly(canvas, [_fixed(pts)], 1, cv2.LINE_8, _FIXED)
    return float(np.count_nonzero(canvas)) / (w * h)


# ----------------------------------------------------------------------------- scene planning


@dataclass
class _Occluder:
    kind: str  # "rail" | "post"
    p0: tuple[float, float]
    p1: tuple[float, float]
    thickness: float  # pixels


@dataclass
class _Scene:
    label: str
    width: int
    height: int
    animals: list[_Animal]
    occluders: list[_Occluder]
    n_left_out: int  # cow boxes to leave out of the label JSON
    horizon: float  # normalised y where the back wall meets the floor


def _from_quantiles(rng: np.random.Generator, q: tuple[float, ...], size: int | None = None) -> np.ndarray:
    return np.interp(rng.random(size), _QUANTILE_LEVELS, q)


def _sample_count(rng: np.random.Generator, hist: tuple[int, ...]) -> int:
    p = np.asarray(hist, float)
    return int(rng.choice(len(p), p=p / p.sum()))


def _plan_scene(rng: np.random.Generator, label: str, size: tuple[int, int], split: str,
                missing_cow_rate: float, image_scale: float) -> _Scene:
    full_w, full_h = size
    width, height = max(16, round(full_w * image_scale)), max(16, round(full_h * image_scale))
    cal = CALIBRATION[f"{label}_{full_w}x{full_h}"]
    n_left_out = 0
    if label == "cow" and split == "train":
        # The label histogram counts *labelled* cows; each true cow is left out with probability
        # missing_cow_rate, so the unlabelled ones add a negative-binomial number on top.
        n_labelled = _sample_count(rng, TRAIN_COW_LABELLED_COUNT_HIST)
        n_left_out = int(rng.negative_binomial(n_labelled, 1.0 - missing_cow_rate)) if n_labelled else 0
        n_animals = min(n_labelled + n_left_out, 18)
    elif label == "cow":
        # complete test labels; the real test set has one image without any box
        n_animals = _sample_count(rng, (1,) + tuple(cal["count_hist"][1:]))
    else:
        n_animals = _sample_count(rng, cal["count_hist"])

    image_log_size = float(_from_quantiles(rng, cal["log_size_q"]))
    frame_scale = math.sqrt(width * height)
    horizontal_pigs = full_w == 1280  # the 1280x960 pens are filmed from the side: pigs lie across the frame
    animals: list[_Animal] = []
    boxes = np.zeros((0, 4))
    max_overlap = 0.3 if label == "pig" else 0.22
    for _ in range(n_animals):
        animal = _pig_shape(rng) if label == "pig" else _cow_shape(rng)
        animal.flip = 1.0 if rng.random() < 0.5 else -1.0
        if label == "cow":
            # turned towards / away from the camera: the side view shortens (calibrated to the real
            # box shapes, w / (w + h) quartiles 0.49 / 0.54 / 0.59)
            animal.squash = min(1.0, rng.uniform(0.3, 1.08))
            animal.angle = rng.normal(0.0, math.radians(5))
        elif horizontal_pigs:
            animal.angle = rng.normal(0.0, math.radians(4))
        else:
            animal.angle = rng.uniform(0.0, 2.0 * math.pi)
        ux0, uy0, ux1, uy1 = _unit_extent(animal)
        unit_size = math.sqrt((ux1 - ux0) * (uy1 - uy0))
        may_leave_frame = rng.random() < cal["edge_share"]
        # 25 candidate placements at once; the first that overlaps little wins, else the least overlapping
        k = _PLACEMENT_TRIES
        xc = _from_quantiles(rng, cal["xc_q"], k) + rng.normal(0, 0.015, k)
        yc = _from_quantiles(rng, cal["yc_q"], k) + rng.normal(0, 0.015, k)
        log_size = image_log_size + cal["size_slope"] * (yc - 0.5) + rng.normal(0.0, cal["size_sd"], k)
        log_size = np.clip(log_size, *cal["log_size_range"])
        scale = cal["size_gain"] * np.exp(log_size) * frame_scale / unit_size
        bw, bh = scale * (ux1 - ux0), scale * (uy1 - uy0)
        bx0, by0 = xc * width - bw / 2, yc * height - bh / 2
        if may_leave_frame:  # cut by the nearest frame edge
            cut = rng.uniform(0.02, 0.5, k)
            side = np.argmin(np.stack([bx0, width - bx0 - bw, by0, height - by0 - bh]), axis=0)
            bx0 = np.select([side == 0, side == 1], [-cut * bw, width - (1 - cut) * bw], bx0)
            by0 = np.select([side == 2, side == 3], [-cut * bh, height - (1 - cut) * bh], by0)
        else:  # most animals lie wholly inside the frame: slide the box in
            mx, my = rng.uniform(0.003, 0.03, k) * width, rng.uniform(0.003, 0.03, k) * height
            bx0 = np.minimum(np.maximum(bx0, mx), np.maximum(width - bw - mx, 0.0))
            by0 = np.minimum(np.maximum(by0, my), np.maximum(height - bh - my, 0.0))
        candidates = np.stack([bx0, by0, bx0 + bw, by0 + bh], axis=1)
        overlap = _max_overlap(candidates, boxes)
        good = np.flatnonzero(overlap <= max_overlap)
        i = int(good[0]) if len(good) else int(np.argmin(overlap))
        box, scale = candidates[i], float(scale[i])
        animal.centre, animal.scale = (box[0] - scale * ux0, box[1] - scale * uy0), scale
        animal.full_area = _fill_fraction(animal) * (box[2] - box[0]) * (box[3] - box[1])
        animals.append(animal)
        boxes = np.vstack([boxes, box])
    # painter's order: farther (higher in the frame) first
    order = np.argsort(boxes[:, 3] + rng.normal(0, 0.02 * height, len(boxes)), kind="stable")
    animals = [animals[i] for i in order]
    for a in animals:  # from here on, part points are pixels
        parts, a.patches = _pose_parts(a, a.scale, a.centre)
        for p, pts in zip(a.parts, parts):
            p.pts = pts

    occluders: list[_Occluder] = []
    s = height / 1080.0
    # The back wall ends above every animal: cows stand with their feet on the floor, pigs (seen from
    # above) lie wholly on it. Where an animal reaches the top of the frame, no wall shows.
    floor_from = (boxes[:, 3] - 0.15 * (boxes[:, 3] - boxes[:, 1]) if label == "cow" else boxes[:, 1])
    highest = float(floor_from.min()) / height - 0.02 if len(boxes) else 1.0
    if label == "cow":
        horizon = min(rng.uniform(0.05, 0.25), highest)
        if rng.random() < 0.45:  # a fence rail in front of the herd
            y = rng.uniform(0.65, 0.97) * height
            slope = rng.normal(0, 0.04) * height
            for k in range(int(rng.integers(1, 3))):
                dy = k * rng.uniform(0.06, 0.1) * height
                occluders.append(_Occluder("rail", (0, y - dy - slope), (width, y - dy + slope), max(1, 12 * s)))
        for _ in range(int(rng.choice(3, p=[0.5, 0.35, 0.15]))):  # barn pillars
            x = rng.uniform(0.03, 0.97) * width
            occluders.append(_Occluder("post", (x, 0), (x + rng.normal(0, 0.02) * width, height),
                                       max(2, rng.uniform(18, 40) * s)))
    else:
        horizon = min(rng.uniform(0.0, 0.12), highest)
        for _ in range(int(rng.choice(3, p=[0.55, 0.3, 0.15]))):  # pen gate bars and pipes
            if rng.random() < 0.5:
                x = rng.uniform(0, 1) * width
                occluders.append(_Occluder("post", (x, 0), (x + rng.normal(0, 0.05) * width, height),
                                           max(1, rng.uniform(8, 16) * s)))
            else:
                y = rng.uniform(0, 1) * height
                occluders.append(_Occluder("rail", (0, y), (width, y + rng.normal(0, 0.05) * height),
                                           max(1, rng.uniform(8, 14) * s)))
    return _Scene(label, width, height, animals, occluders, n_left_out, horizon)


def _max_overlap(candidates: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """For each candidate box, its largest intersection over the smaller area against the placed boxes."""
    if len(boxes) == 0:
        return np.zeros(len(candidates))
    c, b = candidates[:, None, :], boxes[None, :, :]
    iw = np.clip(np.minimum(c[..., 2], b[..., 2]) - np.maximum(c[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(c[..., 3], b[..., 3]) - np.maximum(c[..., 1], b[..., 1]), 0, None)
    area_c = (c[..., 2] - c[..., 0]) * (c[..., 3] - c[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return np.max(iw * ih / np.maximum(np.minimum(area_c, area_b), 1e-9), axis=1)


# ----------------------------------------------------------------------------- rasterising


def _fixed(pts: np.ndarray) -> np.ndarray:
    return np.round(pts * _ONE).astype(np.int32)


def _draw_part(canvas: np.ndarray, part: _Part, colour, scale: float, aa: bool) -> None:
    line_type = cv2.LINE_AA if aa else cv2.LINE_8
    if part.line > 0:
        thickness = max(1, int(round(part.line * scale)))
        cv2.polylines(canvas, [_fixed(part.pts)], False, colour, thickness, line_type, _FIXED)
    else:
        cv2.fillPoly(canvas, [_fixed(part.pts)], colour, line_type, _FIXED)


def _animal_roi(animal: _Animal, width: int, height: int) -> tuple[int, int, int, int] | None:
    pts = np.concatenate([p.pts for p in animal.parts])
    pad = 2 + animal.scale * 0.03
    x0, y0 = max(0, int(pts[:, 0].min() - pad)), max(0, int(pts[:, 1].min() - pad))
    x1, y1 = min(width, int(pts[:, 0].max() + pad) + 1), min(height, int(pts[:, 1].max() + pad) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _visible_boxes(scene: _Scene, idmap: np.ndarray, rois: list) -> list[tuple[int, _Animal, list[int]]]:
    """Tight box of each animal's visible pixels; animals mostly hidden or out of frame are dropped."""
    out = []
    for k, (animal, roi) in enumerate(zip(scene.animals, rois), start=1):
        if roi is None:
            continue
        x0, y0, x1, y1 = roi
        mine = idmap[y0:y1, x0:x1] == k
        n_visible = int(np.count_nonzero(mine))
        # annotators skip animals they can barely see: over a third of the animal must show
        if n_visible < max(4.0, MIN_VISIBLE_SHARE * animal.full_area):
            continue
        cols, rows = np.flatnonzero(mine.any(axis=0)), np.flatnonzero(mine.any(axis=1))
        box = [x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1]
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        out.append((k, animal, box))
    return out


def _draw_ids(scene: _Scene) -> tuple[np.ndarray, list]:
    idmap = np.zeros((scene.height, scene.width), np.uint8)
    rois = []
    for k, animal in enumerate(scene.animals, start=1):
        for p in animal.parts:
            if p.silhouette:
                _draw_part(idmap, p, k, animal.scale, aa=False)
        rois.append(_animal_roi(animal, scene.width, scene.height))
    for o in scene.occluders:
        _draw_occluder(idmap, o, 0, aa=False)
    return idmap, rois


def _draw_occluder(canvas: np.ndarray, o: _Occluder, colour, aa: bool) -> None:
    p0 = (int(round(o.p0[0] * _ONE)), int(round(o.p0[1] * _ONE)))
    p1 = (int(round(o.p1[0] * _ONE)), int(round(o.p1[1] * _ONE)))
    cv2.line(canvas, p0, p1, colour, max(1, int(round(o.thickness))), cv2.LINE_AA if aa else cv2.LINE_8, _FIXED)


# ----------------------------------------------------------------------------- appearance

_PIG_COATS = np.array([[160, 172, 228], [178, 188, 236], [150, 178, 214], [196, 204, 228], [140, 160, 200],
                       [170, 182, 222]], float)  # BGR: pinks, beige, pale, dirty
_COW_COATS = {"holstein": np.array([226, 228, 232], float), "brown": np.array([52, 92, 156], float),
              "darkbrown": np.array([38, 62, 112], float), "black": np.array([38, 38, 42], float)}


def _clip_u8(c) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


def _palette(label: str, rng: np.random.Generator) -> tuple[dict[str, tuple], tuple | None]:
    if label == "pig":
        base = _PIG_COATS[rng.integers(len(_PIG_COATS))] * rng.uniform(0.9, 1.08) + rng.normal(0, 4, 3)
        pinker = np.array([-10, -15, 10])
        tones = {"body": base, "belly": base * 1.05 + pinker, "highlight": base * 1.07, "leg": base * 0.86,
                 "tail": base * 0.9, "ear": base * 0.88 + pinker, "snout": base * 0.8 + pinker * 2,
                 "nostril": np.array([50, 50, 80])}
        patch = (base * rng.uniform(0.45, 0.75)) if rng.random() < 0.6 else np.array([70, 72, 80])
    else:
        coat = rng.choice(list(_COW_COATS), p=[0.35, 0.4, 0.15, 0.1])
        base = _COW_COATS[coat] * rng.uniform(0.85, 1.15) + rng.normal(0, 2.5, 3)  # keep dark coats neutral
        dark = coat != "holstein"
        tones = {"body": base, "head": base * 0.95, "leg": base * (0.9 if dark else 0.95),
                 "leg_far": base * 0.7, "hoof": np.array([35, 38, 45]), "tail": base * 0.8,
                 "ear": base * 0.9, "ear_far": base * 0.7, "horn": np.array([185, 205, 215]),
                 "udder": np.array([160, 170, 225]),
                 "muzzle": np.array([60, 70, 95]) if dark else np.array([140, 150, 190]),
                 "eye": np.array([20, 20, 25])}
        patch = np.array([34, 34, 38]) + rng.normal(0, 4, 3) if coat == "holstein" else None
    return {k: _clip_u8(v) for k, v in tones.items()}, (_clip_u8(patch) if patch is not None else None)


def _background(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Barn background at a quarter of the resolution (smooth anyway), then enlarged."""
    w, h = max(8, scene.width // 4), max(8, scene.height // 4)
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    hz = scene.horizon
    # BGR: sawdust, straw, bare concrete, dark wet bedding / concrete, worn concrete, wet slats
    if scene.label == "cow":
        floor = np.array(rng.choice([[118, 146, 168], [92, 134, 168], [126, 130, 134], [70, 84, 100]]), np.float32)
        wall = np.array(rng.choice([[170, 175, 180], [150, 165, 180], [120, 130, 140]]), np.float32)
    else:
        floor = np.array(rng.choice([[128, 132, 134], [108, 114, 120], [140, 142, 140], [96, 108, 122]]), np.float32)
        wall = np.array(rng.choice([[185, 188, 190], [160, 170, 175], [140, 150, 160]]), np.float32)
    floor = floor * rng.uniform(0.8, 1.15) + rng.normal(0, 3, 3).astype(np.float32)
    # brightness field: large blotches (wet patches, bedding, dirt) + fine grain, times soft shadows
    blot = cv2.resize(rng.standard_normal((6, 10), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    grain = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), 1.2)
    light = 1.0 + blot * np.float32(rng.uniform(0.04, 0.12)) + grain * np.float32(rng.uniform(0.05, 0.11))
    shade = np.ones((h, w), np.float32)
    for a in scene.animals:  # soft shadow under each animal
        pts = np.concatenate([p.pts for p in a.parts]) / 4.0
        x0, x1 = pts[:, 0].min(), pts[:, 0].max()
        y0, y1 = pts[:, 1].min(), pts[:, 1].max()
        low = a.label == "cow"  # a cow's shadow lies at its feet, a pig's (seen from above) under its trunk
        centre = (int((x0 + x1) / 2), int(y1 - (y1 - y0) * (0.12 if low else 0.45)))
        axes = (max(1, int((x1 - x0) * 0.55)), max(1, int((y1 - y0) * (0.14 if low else 0.5))))
        cv2.ellipse(shade, centre, axes, 0, 0, 360, 0.55, -1)
    light *= cv2.GaussianBlur(shade, (0, 0), 2.0)
    colour = np.where((yy < hz)[..., None], wall, floor).astype(np.float32)  # (h, 1, 3)
    img = np.clip(light[..., None] * colour, 0, 255).astype(np.uint8)
    return cv2.resize(img, (scene.width, scene.height), interpolation=cv2.INTER_LINEAR)


def _structures(img: np.ndarray, scene: _Scene, rng: np.random.Generator) -> None:
    """Barn structure behind the animals: wall line, windows, feed fence, slatted floor, troughs."""
    W, H = scene.width, scene.height
    s = H / 1080.0
    hz = max(0, int(scene.horizon * H))
    if hz > 2:
        cv2.line(img, (0, hz), (W, hz), (70, 75, 80), max(1, int(6 * s)), cv2.LINE_AA)
        for _ in range(int(rng.integers(0, 4))):  # bright windows in the back wall
            x = int(rng.uniform(0, W))
            ww, wh = int(rng.uniform(0.04, 0.12) * W), int(rng.uniform(0.3, 0.7) * hz)
            cv2.rectangle(img, (x, int(hz * 0.15)), (x + ww, int(hz * 0.15) + wh), (235, 240, 240), -1)
        for _ in range(int(rng.integers(0, 3))):  # roof beams
            y = int(rng.uniform(0, hz))
            cv2.line(img, (0, y), (W, y + int(rng.normal(0, 0.03) * H)), (60, 60, 65), max(1, int(10 * s)), cv2.LINE_AA)
    metal = (150, 150, 145)
    if scene.label == "cow":
        if rng.random() < 0.7:  # feed fence (headlocks) along the back
            y0, y1 = hz, hz + int(rng.uniform(0.08, 0.2) * H)
            step = max(3, int(rng.uniform(25, 45) * s))
            for x in range(int(rng.uniform(0, step)), W, step):
                cv2.line(img, (x, y0), (x, y1), metal, max(1, int(4 * s)), cv2.LINE_AA)
            cv2.line(img, (0, y0), (W, y0), metal, max(1, int(6 * s)), cv2.LINE_AA)
            cv2.line(img, (0, y1), (W, y1), metal, max(1, int(6 * s)), cv2.LINE_AA)
        if rng.random() < 0.4:  # water trough
            x, y = int(rng.uniform(0, 0.8) * W), int(rng.uniform(0.3, 0.9) * H)
            cv2.rectangle(img, (x, y), (x + int(0.15 * W), y + int(0.05 * H)), (140, 140, 130), -1)
            cv2.rectangle(img, (x, y), (x + int(0.15 * W), y + int(0.05 * H)), (90, 90, 90), max(1, int(4 * s)))
        # straw and sawdust specks
        n = int(rng.integers(150, 400) * s * s * 4) + 1
        xs, ys = rng.integers(0, W, n), rng.integers(hz, H, n) if hz < H else rng.integers(0, H, n)
        img[ys, xs] = np.clip(img[ys, xs].astype(np.int16) + rng.integers(25, 60, (n, 1)), 0, 255).astype(np.uint8)
    else:
        if rng.random() < 0.6:  # slatted floor section
            x0 = int(rng.uniform(0, 0.6) * W)
            x1 = x0 + int(rng.uniform(0.2, 0.5) * W)
            step = max(3, int(rng.uniform(14, 24) * s))
            for y in range(max(hz, 0) + step, H, step):
                cv2.line(img, (x0, y), (x1, y), (60, 62, 64), max(1, int(3 * s)), cv2.LINE_8)
        for _ in range(int(rng.integers(1, 4))):  # pen partitions
            x = int(rng.uniform(0, 1) * W)
            cv2.line(img, (x, hz), (x + int(rng.normal(0, 0.15) * W), H), (175, 178, 180), max(2, int(24 * s)),
                     cv2.LINE_AA)
        if rng.random() < 0.5:  # round feeder
            c = (int(rng.uniform(0.1, 0.9) * W), int(rng.uniform(0.1, 0.9) * H))
            r = max(2, int(rng.uniform(40, 80) * s))
            cv2.circle(img, c, r, (120, 125, 128), -1, cv2.LINE_AA)
            cv2.circle(img, c, r, metal, max(1, int(6 * s)), cv2.LINE_AA)
            cv2.circle(img, c, max(1, r // 2), (90, 95, 100), -1, cv2.LINE_AA)


def _paint_animal(img: np.ndarray, idmap: np.ndarray, k: int, animal: _Animal, roi, rng: np.random.Generator) -> None:
    tones, patch = _palette(animal.label, rng)
    for p in animal.parts:
        _draw_part(img, p, tones[p.tone], animal.scale, aa=True)
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    mine = (idmap[y0:y1, x0:x1] == k).view(np.uint8)  # the animal as just drawn, nothing in front of it yet
    sub = img[y0:y1, x0:x1]
    if animal.patches and patch is not None and (animal.label == "cow" or rng.random() < 0.5):
        patched = sub.copy()
        for p in animal.patches:  # one call per blob: fillPoly's even-odd rule would punch holes in overlaps
            cv2.fillPoly(patched, [_fixed(p - (x0, y0))], patch, cv2.LINE_AA, _FIXED)
        cv2.copyTo(patched, mine, sub)
    # Shading, light from above: pigs get a rounded back (bright along the spine), cows a darker belly.
    # The gain is smooth, so it is computed on a coarse grid and enlarged.
    h, w = mine.shape
    step = 8.0
    gy, gx = np.mgrid[0:h + step:step, 0:w + step:step].astype(np.float32)
    px, py = gx + x0 - animal.centre[0], gy + y0 - animal.centre[1]
    if animal.label == "pig":
        c, s = math.cos(animal.angle), math.sin(animal.angle)
        across = (-s * px + c * py) / (animal.body_width * animal.scale)
        gain = 1.12 - 0.38 * np.clip(across * across, 0, 1.0)
    else:
        gain = np.clip(1.1 - 0.22 * py / (animal.body_width * animal.scale), 0.62, 1.22)
    gain = cv2.resize((gain * 128).astype(np.uint8), (int(gx.shape[1] * step), int(gx.shape[0] * step)),
                      interpolation=cv2.INTER_LINEAR)[int(step / 2):int(step / 2) + h, int(step / 2):int(step / 2) + w]
    shaded = cv2.multiply(sub, cv2.merge([gain, gain, gain]), scale=1.0 / 128)
    cv2.copyTo(shaded, mine, sub)
    # a thin darker outline makes the silhouette read against a similar background
    contours, _ = cv2.findContours(mine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = [cv2.approxPolyDP(c, 0.8, True) for c in contours]  # far fewer segments to anti-alias
    dark = _clip_u8(np.array(tones["body"]) * 0.55)
    cv2.drawContours(sub, contours, -1, dark, max(1, int(round(animal.scale * 0.006))), cv2.LINE_AA)


_NOISE_BANK: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}


def _noise(shape: tuple[int, int], sigma: int) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative halves of a fixed Gaussian noise field a little larger than the frame,
    so each image takes a random window of it with two saturating uint8 adds."""
    key = (shape[0], shape[1], sigma)
    if key not in _NOISE_BANK:
        if len(_NOISE_BANK) > 6:
            _NOISE_BANK.clear()
        n = np.random.default_rng(sigma).normal(0.0, sigma, (shape[0] + 16, shape[1] + 16, 3))
        n = np.clip(np.round(n), -255, 255).astype(np.int16)
        _NOISE_BANK[key] = (np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8))
    return _NOISE_BANK[key]


def _render(scene: _Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list]:
    img = _background(scene, rng)
    _structures(img, scene, rng)
    idmap = np.zeros((scene.height, scene.width), np.uint8)
    rois = []
    for k, animal in enumerate(scene.animals, start=1):
        for p in animal.parts:
            if p.silhouette:
                _draw_part(idmap, p, k, animal.scale, aa=False)
        roi = _animal_roi(animal, scene.width, scene.height)
        rois.append(roi)
        _paint_animal(img, idmap, k, animal, roi, rng)
    for o in scene.occluders:
        shade = int(rng.integers(60, 170))
        _draw_occluder(img, o, (shade, shade, shade + int(rng.integers(-10, 10))), aa=True)
        _draw_occluder(idmap, o, 0, aa=False)
    # lighting: a smooth gain field (window light, heat lamps, dark corners), applied once
    gw, gh = 16, 9
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    gain = 1.0 + rng.uniform(-0.25, 0.25) * (xx / gw - 0.5) + rng.uniform(-0.25, 0.25) * (yy / gh - 0.5)
    gain -= rng.uniform(0.0, 0.35) * (((xx / gw - 0.5) ** 2 + (yy / gh - 0.5) ** 2) * 2)
    gain = np.repeat(gain[..., None], 3, axis=2)
    if scene.label == "pig" and rng.random() < 0.35:  # warm heat lamp
        lx, ly = rng.uniform(0, gw), rng.uniform(0, gh)
        spot = np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / rng.uniform(3, 10))
        gain += spot[..., None] * np.array([0.0, 0.12, 0.35], np.float32)
    gain *= rng.uniform(0.75, 1.15)
    gain = cv2.resize(np.clip(gain * 128, 0, 255).astype(np.uint8), (scene.width, scene.height),
                      interpolation=cv2.INTER_LINEAR)
    img = cv2.multiply(img, gain, scale=1.0 / 128)
    if rng.random() < 0.12:  # infrared night frame
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    blur = rng.choice(3, p=[0.55, 0.3, 0.15])
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), 0.6 * float(blur) * max(scene.height / 1080, 0.3))
    sigma = int(rng.choice([0, 3, 6], p=[0.2, 0.5, 0.3]))
    if sigma:
        pos, neg = _noise((scene.height, scene.width), sigma)
        dy, dx = int(rng.integers(0, 16)), int(rng.integers(0, 16))
        win = (slice(dy, dy + scene.height), slice(dx, dx + scene.width))
        img = cv2.subtract(cv2.add(img, pos[win]), neg[win])
    return img, idmap, rois


_SOLID_JPEG: dict[tuple[int, int], bytes] = {}


def _solid_jpeg(width: int, height: int) -> bytes:
    key = (width, height)
    if key not in _SOLID_JPEG:
        ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 110, np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, 50, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        _SOLID_JPEG[key] = buf.tobytes()
    return _SOLID_JPEG[key]


# ----------------------------------------------------------------------------- one image


@dataclass
class SynthImage:
    """One generated frame: its JPEG bytes and every true box, with which ones the label JSON keeps."""

    image_id: str
    label: str
    width: int
    height: int
    jpeg: bytes
    boxes: list[list[int]]  # every visible animal, pixel corners
    labelled: list[bool]
    behaviours: list[str]


def render_image(label: str, number: int, split: str = "train", seed: int = 0, size: tuple[int, int] = (1920, 1080),
                 missing_cow_rate: float = 0.15, image_scale: float = 1.0, labels_only: bool = False,
                 jpeg_quality: int | None = None) -> tuple[np.ndarray | None, SynthImage]:
    """Render one synthetic frame. Returns (BGR image or None when ``labels_only``, its record).

    The same (label, number, split, seed, size, image_scale) always gives the same boxes, whether the
    pixels are rendered or not.
    """
    if label not in _CLASS_CODE or split not in _SPLIT_CODE:
        raise ValueError(f"label must be 'pig' or 'cow' and split 'train' or 'test', got {label!r}, {split!r}")
    if f"{label}_{size[0]}x{size[1]}" not in CALIBRATION:
        raise ValueError(f"no synthetic scene style for {label!r} at {size[0]}x{size[1]}; known: {sorted(CALIBRATION)}")
    entropy = [int(seed), _CLASS_CODE[label], _SPLIT_CODE[split], int(number)]
    rng_geometry = np.random.default_rng(entropy + [0])
    rng_look = np.random.default_rng(entropy + [1])
    scene = _plan_scene(rng_geometry, label, size, split, missing_cow_rate if split == "train" else 0.0, image_scale)
    if labels_only:
        idmap, rois = _draw_ids(scene)
        img = None
        jpeg = _solid_jpeg(scene.width, scene.height)
    else:
        img, idmap, rois = _render(scene, rng_look)
        quality = int(jpeg_quality if jpeg_quality is not None else rng_look.integers(55, 96))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"JPEG encoding failed for {label} image {number}")
        jpeg = buf.tobytes()
    visible = _visible_boxes(scene, idmap, rois)
    labelled = [True] * len(visible)
    if scene.n_left_out and visible:
        # Annotators skip the small, far-away and half-hidden cows first; keep at least one label.
        n_out = min(scene.n_left_out, len(visible) - 1)
        if n_out > 0:
            areas = np.array([(b[2] - b[0]) * (b[3] - b[1]) for _, _, b in visible], float)
            weights = 1.0 / np.sqrt(areas)
            out = rng_geometry.choice(len(visible), size=n_out, replace=False, p=weights / weights.sum())
            for i in out:
                labelled[int(i)] = False
    record = SynthImage(image_name(label, number), label, scene.width, scene.height, jpeg,
                       [b for _, _, b in visible], labelled, [a.behaviour for _, a, _ in visible])
    return img, record


def render_empty_frame(label: str, size: tuple[int, int] = (1920, 1080), seed: int = 0,
                       image_scale: float = 1.0) -> np.ndarray:
    """A barn frame in the style of ``label``'s scenes (walls, floor, pens, fences, lighting, noise) with
    no animal in it (BGR uint8): background images for training, or to paste animals onto."""
    if f"{label}_{size[0]}x{size[1]}" not in CALIBRATION:
        raise ValueError(f"no synthetic scene style for {label!r} at {size[0]}x{size[1]}; known: {sorted(CALIBRATION)}")
    rng = np.random.default_rng([int(seed), _CLASS_CODE[label], 2, 0])
    scene = _plan_scene(rng, label, size, "test", 0.0, image_scale)
    scene.animals = []
    img, _, _ = _render(scene, rng)
    return img


def image_name(label: str, number: int) -> str:
    """AI Hub file name of an image: ``livestock_<label>_bbox_<6 digits>.jpg``."""
    if not 0 <= number <= 999_999:
        raise ValueError(f"image number {number} does not fit the 6-digit AI Hub naming")
    return f"livestock_{label}_bbox_{number:06d}.jpg"


def label_json(record: SynthImage) -> dict:
    """The AI Hub label JSON of one image: labelled boxes only, behaviour categories (not species)."""
    number = int(Path(record.image_id).stem.rsplit("_", 1)[1])
    annotations = []
    for box, keep, behaviour in zip(record.boxes, record.labelled, record.behaviours):
        if not keep:
            continue
        x1, y1, x2, y2 = box
        annotations.append({"id": len(annotations) + 1, "image_id": number, "bbox": [x1, y1, x2, y2],
                            "area": (x2 - x1) * (y2 - y1), "category_id": _CATEGORY_ID[behaviour]})
    return {"label_info": {
        "image": {"file_name": record.image_id, "id": number, "width": record.width, "height": record.height,
                  "date_captured": "2021-07-01 00:00:00"},
        "annotations": annotations,
        "categories": [dict(c) for c in BEHAVIOUR_CATEGORIES],
    }}


# ----------------------------------------------------------------------------- zips


class _ZipStream:
    """A zip written member by member into a temp file, renamed into place only when complete."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.zf = zipfile.ZipFile(self.tmp, "w", allowZip64=True)

    def add(self, arcname: str, data: bytes, compress: bool) -> None:
        info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.flag_bits |= 0x800  # names are UTF-8 (the folders are Korean)
        info.create_system = 3
        info.external_attr = 0o644 << 16
        self.zf.writestr(info, data)

    def commit(self) -> None:
        self.zf.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.zf.fp is not None:
            self.zf.close()
        self.tmp.unlink(missing_ok=True)


def _image_numbers(seed: int, label: str, n_train: int, n_test: int) -> tuple[list[int], list[int]]:
    """Disjoint 6-digit numbers for train and test images of one class. As in the real data, the test
    numbers are scattered among the training numbers rather than forming a block."""
    total = n_train + n_test
    if total > 999_999:
        raise ValueError(f"{total} {label} images do not fit the 6-digit AI Hub numbering")
    rng = np.random.default_rng([int(seed), _CLASS_CODE[label], 7])
    is_test = np.zeros(total, bool)
    is_test[rng.choice(total, size=n_test, replace=False)] = True
    numbers = np.arange(1, total + 1)
    return numbers[~is_test].tolist(), numbers[is_test].tolist()


def _frame_sizes(label: str, n: int, split: str) -> list[tuple[int, int]]:
    """Frame size per image; pig sizes interleaved so any prefix keeps the real proportion."""
    if label == "cow":
        return [(1920, 1080)] * n
    real = TRAIN_PIG_SIZES if split == "train" else TEST_PIG_SIZES
    share_wide = real[(1920, 1080)] / sum(real.values())
    return [(1920, 1080) if math.floor((i + 1) * share_wide) > math.floor(i * share_wide) else (1280, 960)
            for i in range(n)]


# ----------------------------------------------------------------------------- the dataset


def generate_synthetic_dataset(
    train_dir: str | os.PathLike = DATA_DIR,
    test_dir: str | os.PathLike = TEST_DIR,
    n_train: int = 300,
    n_test: int = 60,
    seed: int = 0,
    missing_cow_rate: float = 0.15,
    image_scale: float = 1.0,
    labels_only: bool = False,
    train_counts: dict[str, int] | None = None,
    test_counts: dict[str, int] | None = None,
    progress: bool = True,
) -> SynthSummary:
    """Write a synthetic AI Hub-format dataset.

    ``train_dir`` gets the four training zips (cow / pig images and label JSONs) and ``synth_truth.csv``
    (every true box, with ``labelled`` False for the cow boxes left out of the JSONs); ``test_dir`` gets
    the two test image zips and ``answer.csv`` (complete ground truth, contest format, coordinates
    normalised by each image's own size). ``n_train`` / ``n_test`` are split cow : pig in the real ratio
    unless ``train_counts`` / ``test_counts`` ({'cow': n, 'pig': n}) are given. ``image_scale`` < 1
    renders smaller frames (labels match them); ``labels_only`` writes plain grey JPEGs of the right
    size and the same labels as a full render. Same arguments, same bytes.
    """
    train_dir, test_dir = Path(train_dir), Path(test_dir)
    if train_dir.resolve() == test_dir.resolve():
        raise ValueError(f"{train_dir}: train and test folders must differ (their zip names coincide)")
    if not 0.0 <= missing_cow_rate < 1.0:
        raise ValueError(f"missing_cow_rate must be in [0, 1), got {missing_cow_rate}")
    if not 0.0 < image_scale <= 1.0 or round(960 * image_scale) < 16:
        raise ValueError(f"image_scale must be in (0, 1] and give frames of at least 16 px, got {image_scale}")
    if train_counts is None:
        if n_train < 2:
            raise ValueError(f"n_train must be >= 2 (one image of each class), got {n_train}")
        train_counts = split_by_class_ratio(n_train, "train")
    if test_counts is None:
        test_counts = split_by_class_ratio(n_test, "test")
    for counts in (train_counts, test_counts):
        if set(counts) != {"cow", "pig"} or min(counts.values()) < 0:
            raise ValueError(f"per-class counts must be {{'cow': n, 'pig': n}} with n >= 0, got {counts}")

    start = time.perf_counter()
    summary = SynthSummary(train_dir, test_dir, train_dir / SYNTH_TRUTH.name, test_dir / TEST_ANSWER.name)
    truth_rows: list[tuple] = []
    answer_rows: list[tuple] = []
    numbers = {c: _image_numbers(seed, c, train_counts[c], test_counts[c]) for c in ("cow", "pig")}

    def images(label: str, split: str):
        nums = numbers[label][0 if split == "train" else 1]
        sizes = _frame_sizes(label, len(nums), split)
        bar = tqdm(list(zip(nums, sizes)), desc=f"synth {split} {label}", unit="img", disable=not progress,
                   leave=False)
        for number, size in bar:
            _, rec = render_image(label, number, split, seed, size, missing_cow_rate, image_scale, labels_only)
            yield rec

    # Every zip is written to a temp file and renamed into place only once the whole set is done, so an
    # interrupted run leaves the previous set (or nothing) rather than a mixture.
    zips = {key: _ZipStream(train_dir / name) for key, name in TRAIN_ZIPS.items()}
    zips.update({(label, "test"): _ZipStream(test_dir / name) for label, name in TEST_ZIPS.items()})
    try:
        for label in ("cow", "pig"):
            folder = _ZIP_FOLDER[label]
            n_img = n_lab = n_true = 0
            for rec in images(label, "train"):
                zips[(label, "images")].add(f"{folder}/{rec.image_id}", rec.jpeg, compress=labels_only)
                zips[(label, "labels")].add(f"{folder}/{Path(rec.image_id).stem}.json",
                                            json.dumps(label_json(rec), ensure_ascii=False).encode("utf-8"),
                                            compress=True)
                n_img += 1
                n_true += len(rec.boxes)
                n_lab += sum(rec.labelled)
                truth_rows += [(rec.image_id, label, *b, keep) for b, keep in zip(rec.boxes, rec.labelled)]
            summary.train_images[label] = n_img
            summary.train_labelled_boxes[label] = n_lab
            summary.train_true_boxes[label] = n_true
        for label in ("pig", "cow"):
            n_img = n_box = 0
            for rec in images(label, "test"):
                zips[(label, "test")].add(f"{_ZIP_FOLDER[label]}/{rec.image_id}", rec.jpeg, compress=labels_only)
                n_img += 1
                n_box += len(rec.boxes)
                answer_rows += [(rec.image_id, label, x1 / rec.width, x2 / rec.width, y1 / rec.height,
                                 y2 / rec.height) for x1, y1, x2, y2 in rec.boxes]
            summary.test_images[label] = n_img
            summary.test_boxes[label] = n_box
        for z in zips.values():
            z.commit()
    except BaseException:
        for z in zips.values():
            z.abort()
        raise
    summary.left_out_cow_boxes = summary.train_true_boxes["cow"] - summary.train_labelled_boxes["cow"]
    atomic_write_csv(pd.DataFrame(truth_rows, columns=["image_id", "label", "x1", "y1", "x2", "y2", "labelled"]),
                     summary.truth_csv)
    atomic_write_csv(pd.DataFrame(answer_rows, columns=["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"]),
                     summary.answer_csv)
    summary.seconds = time.perf_counter() - start
    return summary


# ----------------------------------------------------------------------------- statistics


def _read_answer(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: answer file not found")
    df = pd.read_csv(path)
    missing = {"ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: not a contest answer file, missing columns {sorted(missing)}")
    return df


def undo_pig_overscaling(answer: pd.DataFrame) -> pd.DataFrame:
    """Re-normalise pig rows of images whose coordinates pass 1.01: the original scoring notebook divided
    every pig box by 1280x960, so 1920x1080 pig frames reach x = 1.5 and y = 1.125 in the real answer."""
    out = answer.copy()
    pig = out["LabelName"] == "pig"
    reach = out[pig].groupby("ImageID")[["XMax", "YMax"]].max().max(axis=1)
    wide = out["ImageID"].isin(reach.index[reach > 1.01]) & pig
    out.loc[wide, ["XMin", "XMax"]] *= 1280 / 1920
    out.loc[wide, ["YMin", "YMax"]] *= 960 / 1080
    return out


def answer_statistics(answer_csv: str | os.PathLike, fix_pig_normalisation: bool = True) -> pd.DataFrame:
    """Per-class box statistics of an answer file: images, boxes, boxes per image (mean, box-count group
    shares), normalised box width / height quantiles."""
    df = _read_answer(answer_csv)
    if fix_pig_normalisation:
        df = undo_pig_overscaling(df)
    w, h = df["XMax"] - df["XMin"], df["YMax"] - df["YMin"]
    stats = {}
    for label, g in df.groupby("LabelName"):
        per_image = g.groupby("ImageID").size()
        little, many = (4, 6) if label == "cow" else (8, 13)  # the original's stratification groups
        s = {"images": float(len(per_image)), "boxes": float(len(g)), "boxes_per_image_mean": float(per_image.mean()),
             "share_little": float((per_image < little).mean()),
             "share_medium": float(((per_image >= little) & (per_image < many)).mean()),
             "share_many": float((per_image >= many).mean())}
        for q in (0.05, 0.25, 0.5, 0.75, 0.95):
            s[f"w_q{int(q * 100):02d}"] = float(w[g.index].quantile(q))
            s[f"h_q{int(q * 100):02d}"] = float(h[g.index].quantile(q))
        stats[label] = s
    return pd.DataFrame(stats)


def compare_with_answer(answer_csv_a: str | os.PathLike, answer_csv_b: str | os.PathLike,
                        fix_pig_normalisation: bool = True) -> pd.DataFrame:
    """Side-by-side statistics of two answer files (e.g. a synthetic one and the real one): one row per
    (class, statistic), columns ``a``, ``b`` and ``ratio`` = a / b."""
    a = answer_statistics(answer_csv_a, fix_pig_normalisation).stack()
    b = answer_statistics(answer_csv_b, fix_pig_normalisation).stack()
    out = pd.concat({"a": a, "b": b}, axis=1)
    out.index = out.index.swaplevel(0, 1)
    out.index.names = ["label", "statistic"]
    out = out.sort_index(level=0, sort_remaining=False)
    out["ratio"] = out["a"] / out["b"].where(out["b"] != 0)
    return out


# ----------------------------------------------------------------------------- CLI


def cli_synth_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder for the four training zips (default: data)")
    parser.add_argument("--test-out", type=Path, default=TEST_DIR,
                        help="folder for the two test zips and answer.csv (default: data_test)")
    parser.add_argument("--n-train", type=int, default=300, help="training images, split cow:pig in the real ratio")
    parser.add_argument("--n-test", type=int, default=60, help="test images, split cow:pig as the real test set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--missing-cow-rate", type=float, default=0.15,
                        help="share of true cow boxes left out of the training labels (default 0.15)")
    parser.add_argument("--image-scale", type=float, default=1.0,
                        help="frame size factor: 1.0 gives 1920x1080 / 1280x960, 0.25 gives 480x270 / 320x240")
    parser.add_argument("--labels-only", action="store_true",
                        help="skip rendering: plain grey JPEGs of the right size, same labels")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cli_synth(args: argparse.Namespace) -> int:
    summary = generate_synthetic_dataset(args.out, args.test_out, args.n_train, args.n_test, seed=args.seed,
                                         missing_cow_rate=args.missing_cow_rate, image_scale=args.image_scale,
                                         labels_only=args.labels_only, progress=not args.quiet)
    print(summary.format())
    return 0
