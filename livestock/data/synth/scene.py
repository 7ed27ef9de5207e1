"""Planning one synthetic scene: how many animals, their shapes, poses, sizes and places, and what stands in front.

Every draw comes from the image's geometry stream, so the plan (and with it every true box) is the same whether
the frame is rendered or only its labels are wanted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from livestock.data.synth.calibration import TRAIN_COW_LABELLED_COUNT_HIST, scene_style
from livestock.data.synth.shapes import Animal, cow_shape, fill_fraction, pig_shape, pose_parts, unit_extent
from livestock.data.synth.style import BARN, Style

_QUANTILE_LEVELS = np.linspace(0.0, 1.0, 21)
_PLACEMENT_TRIES = 25


@dataclass
class Occluder:
    """A rail or post in front of the animals: hides them in the id map as well as in the picture."""

    kind: str  # "rail" | "post"
    p0: tuple[float, float]
    p1: tuple[float, float]
    thickness: float  # pixels


@dataclass
class Scene:
    """Everything one frame shows, in pixels: its size, the animals (painter's order), occluders, the horizon."""

    label: str
    width: int
    height: int
    animals: list[Animal]
    occluders: list[Occluder]
    n_left_out: int  # cow boxes to leave out of the label JSON
    horizon: float  # normalised y where the back wall meets the floor


def _from_quantiles(rng: np.random.Generator, q: tuple[float, ...], size: int | None = None) -> np.ndarray:
    return np.interp(rng.random(size), _QUANTILE_LEVELS, q)


def _sample_count(rng: np.random.Generator, hist: tuple[int, ...]) -> int:
    p = np.asarray(hist, float)
    return int(rng.choice(len(p), p=p / p.sum()))


def plan_scene(rng: np.random.Generator, label: str, size: tuple[int, int], split: str,
               missing_cow_rate: float, image_scale: float, style: Style = BARN) -> Scene:
    """Plan a ``label`` frame of full ``size`` scaled by ``image_scale`` in ``style``, drawing from ``rng`` only."""
    full_w, full_h = size
    width, height = max(16, round(full_w * image_scale)), max(16, round(full_h * image_scale))
    cal = scene_style(label, size)
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
    size_factor = 1.0
    if style.size_factor is not None:  # a wider or narrower view than the calibrated cameras
        size_factor = math.exp(rng.uniform(math.log(style.size_factor[0]), math.log(style.size_factor[1])))
    xc_q, yc_q = cal["xc_q"], cal["yc_q"]
    if style.spread_positions:  # animals anywhere in the frame, not only where the real cameras see them
        even = np.linspace(0.03, 0.97, len(_QUANTILE_LEVELS))
        xc_q, yc_q = ((1 - style.spread_positions) * np.asarray(q) + style.spread_positions * even
                      for q in (xc_q, yc_q))
    frame_scale = math.sqrt(width * height)
    horizontal_pigs = full_w == 1280  # the 1280x960 pens are filmed from the side: pigs lie across the frame
    animals: list[Animal] = []
    boxes = np.zeros((0, 4))
    max_overlap = 0.3 if label == "pig" else 0.22
    for _ in range(n_animals):
        animal = pig_shape(rng, style) if label == "pig" else cow_shape(rng, style)
        animal.flip = 1.0 if rng.random() < 0.5 else -1.0
        if label == "cow":
            # turned towards / away from the camera: the side view shortens (calibrated to the real
            # box shapes, w / (w + h) quartiles 0.49 / 0.54 / 0.59)
            animal.squash = min(1.0, rng.uniform(*style.cow_squash))
            animal.angle = rng.normal(0.0, math.radians(style.cow_tilt_deg))
        elif horizontal_pigs:
            animal.angle = rng.normal(0.0, math.radians(style.side_pig_tilt_deg))
        else:
            animal.angle = rng.uniform(0.0, 2.0 * math.pi)
        ux0, uy0, ux1, uy1 = unit_extent(animal)
        unit_size = math.sqrt((ux1 - ux0) * (uy1 - uy0))
        may_leave_frame = rng.random() < cal["edge_share"]
        # 25 candidate placements at once; the first that overlaps little wins, else the least overlapping
        k = _PLACEMENT_TRIES
        xc = _from_quantiles(rng, xc_q, k) + rng.normal(0, 0.015, k)
        yc = _from_quantiles(rng, yc_q, k) + rng.normal(0, 0.015, k)
        slope = cal["size_slope"] * style.size_slope
        log_size = image_log_size + slope * (yc - 0.5) + rng.normal(0.0, cal["size_sd"], k)
        log_size = np.clip(log_size, *cal["log_size_range"])
        scale = cal["size_gain"] * np.exp(log_size) * frame_scale / unit_size * size_factor
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
        animal.full_area = fill_fraction(animal) * (box[2] - box[0]) * (box[3] - box[1])
        animals.append(animal)
        boxes = np.vstack([boxes, box])
    # painter's order: farther (higher in the frame) first
    order = np.argsort(boxes[:, 3] + rng.normal(0, 0.02 * height, len(boxes)), kind="stable")
    animals = [animals[i] for i in order]
    for a in animals:  # from here on, part points are pixels
        parts, a.patches = pose_parts(a, a.scale, a.centre)
        for p, pts in zip(a.parts, parts):
            p.pts = pts

    occluders: list[Occluder] = []
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
                occluders.append(Occluder("rail", (0, y - dy - slope), (width, y - dy + slope), max(1, 12 * s)))
        for _ in range(int(rng.choice(3, p=[0.5, 0.35, 0.15]))):  # barn pillars
            x = rng.uniform(0.03, 0.97) * width
            occluders.append(Occluder("post", (x, 0), (x + rng.normal(0, 0.02) * width, height),
                                       max(2, rng.uniform(18, 40) * s)))
    else:
        horizon = min(rng.uniform(0.0, 0.12), highest)
        for _ in range(int(rng.choice(3, p=[0.55, 0.3, 0.15]))):  # pen gate bars and pipes
            if rng.random() < 0.5:
                x = rng.uniform(0, 1) * width
                occluders.append(Occluder("post", (x, 0), (x + rng.normal(0, 0.05) * width, height),
                                           max(1, rng.uniform(8, 16) * s)))
            else:
                y = rng.uniform(0, 1) * height
                occluders.append(Occluder("rail", (0, y), (width, y + rng.normal(0, 0.05) * height),
                                           max(1, rng.uniform(8, 14) * s)))
    return Scene(label, width, height, animals, occluders, n_left_out, horizon)


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

