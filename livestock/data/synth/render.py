"""Drawing synthetic frames: the barn, the animals, occluders, lighting and noise, and each animal's true box.

An id map is rasterised from the same polygons as the picture (without anti-aliasing), so a true box is the
tight box of the pixels where the animal is visible: inside the frame and not hidden by another animal or an
occluder. The picture's looks come from a second random stream, so skipping the rendering (``labels_only``)
leaves every box as it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from livestock.data.synth.calibration import CLASS_CODE, MIN_VISIBLE_SHARE, SPLIT_CODE, scene_style
from livestock.data.synth.scene import Occluder, Scene, plan_scene
from livestock.data.synth.shapes import FIXED_BITS, FIXED_ONE, Animal, draw_part, fixed_point
from livestock.data.synth.style import Style, get_style


def _animal_roi(animal: Animal, width: int, height: int) -> tuple[int, int, int, int] | None:
    pts = np.concatenate([p.pts for p in animal.parts])
    pad = 2 + animal.scale * 0.03
    x0, y0 = max(0, int(pts[:, 0].min() - pad)), max(0, int(pts[:, 1].min() - pad))
    x1, y1 = min(width, int(pts[:, 0].max() + pad) + 1), min(height, int(pts[:, 1].max() + pad) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def visible_boxes(scene: Scene, idmap: np.ndarray, rois: list) -> list[tuple[int, Animal, list[int]]]:
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


def _draw_id(idmap: np.ndarray, k: int, animal: Animal) -> tuple[int, int, int, int] | None:
    """Draw animal number ``k``'s silhouette into the id map (over those behind it); returns its ROI."""
    for p in animal.parts:
        if p.silhouette:
            draw_part(idmap, p, k, animal.scale, aa=False)
    return _animal_roi(animal, idmap.shape[1], idmap.shape[0])


def draw_ids(scene: Scene) -> tuple[np.ndarray, list]:
    """The scene's id map (animal k's visible pixels hold k, the rest 0) and each animal's ROI, without rendering."""
    idmap = np.zeros((scene.height, scene.width), np.uint8)
    rois = [_draw_id(idmap, k, animal) for k, animal in enumerate(scene.animals, start=1)]
    for o in scene.occluders:
        _draw_occluder(idmap, o, 0, aa=False)
    return idmap, rois


def _draw_occluder(canvas: np.ndarray, o: Occluder, colour, aa: bool) -> None:
    p0 = (int(round(o.p0[0] * FIXED_ONE)), int(round(o.p0[1] * FIXED_ONE)))
    p1 = (int(round(o.p1[0] * FIXED_ONE)), int(round(o.p1[1] * FIXED_ONE)))
    cv2.line(canvas, p0, p1, colour, max(1, int(round(o.thickness))), cv2.LINE_AA if aa else cv2.LINE_8, FIXED_BITS)


def _clip_u8(c) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


def _palette(label: str, rng: np.random.Generator, style: Style) -> tuple[dict[str, tuple], tuple | None]:
    if label == "pig":
        coats = style.pig_coats
        base = np.array(coats[rng.integers(len(coats))], float) * rng.uniform(0.9, 1.08) + rng.normal(0, 4, 3)
        pinker = np.array([-10, -15, 10])
        tones = {"body": base, "belly": base * 1.05 + pinker, "highlight": base * 1.07, "leg": base * 0.86,
                 "tail": base * 0.9, "ear": base * 0.88 + pinker, "snout": base * 0.8 + pinker * 2,
                 "nostril": np.array([50, 50, 80])}
        patch = (base * rng.uniform(0.45, 0.75)) if rng.random() < 0.6 else np.array([70, 72, 80])
    else:
        coat = style.cow_coats[int(rng.choice(len(style.cow_coats), p=[p for _, p in style.cow_coats]))][0]
        base = np.array(coat.base, float) * rng.uniform(0.85, 1.15) + rng.normal(0, 2.5, 3)  # keep dark coats neutral
        dark = coat.dark
        tones = {"body": base, "head": base * 0.95, "leg": base * (0.9 if dark else 0.95),
                 "leg_far": base * 0.7, "hoof": np.array([35, 38, 45]), "tail": base * 0.8,
                 "ear": base * 0.9, "ear_far": base * 0.7, "horn": np.array([185, 205, 215]),
                 "udder": np.array([160, 170, 225]),
                 "muzzle": np.array([60, 70, 95]) if dark else np.array([140, 150, 190]),
                 "eye": np.array([20, 20, 25])}
        if coat.face is not None:  # a white face with a pink muzzle
            tones["head"] = np.array(coat.face, float) * rng.uniform(0.9, 1.05)
            tones["muzzle"] = np.array([140, 150, 200])
        patch = np.array(coat.patch) + rng.normal(0, 4, 3) if coat.patch is not None else None
    return {k: _clip_u8(v) for k, v in tones.items()}, (_clip_u8(patch) if patch is not None else None)


def _background(scene: Scene, rng: np.random.Generator, style: Style) -> np.ndarray:
    """Barn background at a quarter of the resolution (smooth anyway), then enlarged."""
    w, h = max(8, scene.width // 4), max(8, scene.height // 4)
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    hz = scene.horizon
    # BGR: sawdust, straw, bare concrete, dark wet bedding / concrete, worn concrete, wet slats
    if scene.label == "cow":
        floor = np.array(rng.choice(style.cow_floors), np.float32)
        wall = np.array(rng.choice(style.cow_walls), np.float32)
    else:
        floor = np.array(rng.choice(style.pig_floors), np.float32)
        wall = np.array(rng.choice(style.pig_walls), np.float32)
    floor = floor * rng.uniform(*style.floor_gain) + rng.normal(0, 3, 3).astype(np.float32)
    # brightness field: large blotches (wet patches, bedding, dirt) + fine grain, times soft shadows
    blot = cv2.resize(rng.standard_normal((6, 10), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    grain = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), 1.2)
    light = 1.0 + blot * np.float32(rng.uniform(*style.blotches)) + grain * np.float32(rng.uniform(*style.grain))
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


def _textures(img: np.ndarray, scene: Scene, rng: np.random.Generator) -> None:
    """Shifted style: planks, tiles or grass tufts on the floor and boards on the wall, at full resolution."""
    W, H = scene.width, scene.height
    s = H / 1080.0
    hz = max(0, int(scene.horizon * H))
    kind = int(rng.integers(3))
    dark = tuple(int(v) for v in np.clip(img[min(H - 1, (hz + H) // 2), W // 2].astype(int) - 35, 0, 255))
    step = max(3, int(rng.uniform(20, 60) * s))
    if kind == 0:  # boards across the floor, widening towards the camera
        y = float(hz + step)
        while y < H:
            cv2.line(img, (0, int(y)), (W, int(y + rng.normal(0, 2) * s)), dark, max(1, int(3 * s)), cv2.LINE_AA)
            y += step * (0.6 + 0.8 * (y - hz) / max(H - hz, 1))
    elif kind == 1:  # tiles or a rubber-mat grid
        for y in range(hz + step, H, step):
            cv2.line(img, (0, y), (W, y), dark, max(1, int(2 * s)), cv2.LINE_8)
        for x in range(int(rng.uniform(0, step)), W, step):
            cv2.line(img, (x, hz), (x, H), dark, max(1, int(2 * s)), cv2.LINE_8)
    else:  # grass or straw tufts
        n = int(rng.integers(300, 900) * max(s * s * 4, 0.05)) + 1
        xs, ys = rng.integers(0, W, n), rng.integers(min(hz, H - 1), H, n)
        lean = rng.normal(0, 0.4, n)
        length = rng.uniform(6, 18, n) * max(s, 0.25)
        tone = rng.integers(-40, 40, (n, 1))
        for x, y, a, ln, t in zip(xs, ys, lean, length, tone):
            colour = tuple(int(v) for v in np.clip(img[y, x].astype(int) + t, 0, 255))
            cv2.line(img, (int(x), int(y)), (int(x + a * ln), int(y - ln)), colour, 1, cv2.LINE_AA)
    if hz > 2:  # wall boards
        wall_step = max(3, int(rng.uniform(30, 90) * s))
        wall_dark = tuple(int(v) for v in np.clip(img[hz // 2, W // 2].astype(int) - 40, 0, 255))
        for x in range(int(rng.uniform(0, wall_step)), W, wall_step):
            cv2.line(img, (x, 0), (x, hz), wall_dark, max(1, int(3 * s)), cv2.LINE_AA)


def _structures(img: np.ndarray, scene: Scene, rng: np.random.Generator, style: Style) -> None:
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
    metal = style.metal
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
            cv2.line(img, (x, hz), (x + int(rng.normal(0, 0.15) * W), H), style.partition, max(2, int(24 * s)),
                     cv2.LINE_AA)
        if rng.random() < 0.5:  # round feeder
            c = (int(rng.uniform(0.1, 0.9) * W), int(rng.uniform(0.1, 0.9) * H))
            r = max(2, int(rng.uniform(40, 80) * s))
            cv2.circle(img, c, r, (120, 125, 128), -1, cv2.LINE_AA)
            cv2.circle(img, c, r, metal, max(1, int(6 * s)), cv2.LINE_AA)
            cv2.circle(img, c, max(1, r // 2), (90, 95, 100), -1, cv2.LINE_AA)


def _paint_animal(img: np.ndarray, idmap: np.ndarray, k: int, animal: Animal, roi, rng: np.random.Generator,
                  style: Style) -> None:
    tones, patch = _palette(animal.label, rng, style)
    for p in animal.parts:
        draw_part(img, p, tones[p.tone], animal.scale, aa=True)
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    mine = (idmap[y0:y1, x0:x1] == k).view(np.uint8)  # the animal as just drawn, nothing in front of it yet
    sub = img[y0:y1, x0:x1]
    if animal.patches and patch is not None and (animal.label == "cow" or rng.random() < 0.5):
        patched = sub.copy()
        for p in animal.patches:  # one call per blob: fillPoly's even-odd rule would punch holes in overlaps
            cv2.fillPoly(patched, [fixed_point(p - (x0, y0))], patch, cv2.LINE_AA, FIXED_BITS)
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


def _render(scene: Scene, rng: np.random.Generator, style: Style) -> tuple[np.ndarray, np.ndarray, list]:
    img = _background(scene, rng, style)
    if style.textures:
        _textures(img, scene, rng)
    _structures(img, scene, rng, style)
    idmap = np.zeros((scene.height, scene.width), np.uint8)
    rois = []
    for k, animal in enumerate(scene.animals, start=1):
        roi = _draw_id(idmap, k, animal)
        rois.append(roi)
        _paint_animal(img, idmap, k, animal, roi, rng, style)
    for o in scene.occluders:
        shade = int(rng.integers(60, 170))
        _draw_occluder(img, o, (shade, shade, shade + int(rng.integers(-10, 10))), aa=True)
        _draw_occluder(idmap, o, 0, aa=False)
    # lighting: a smooth gain field (window light, heat lamps, dark corners), applied once
    gw, gh = 16, 9
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    tilt = style.light_tilt
    gain = 1.0 + rng.uniform(-tilt, tilt) * (xx / gw - 0.5) + rng.uniform(-tilt, tilt) * (yy / gh - 0.5)
    gain -= rng.uniform(0.0, style.vignette) * (((xx / gw - 0.5) ** 2 + (yy / gh - 0.5) ** 2) * 2)
    gain = np.repeat(gain[..., None], 3, axis=2)
    if scene.label == "pig" and rng.random() < style.heat_lamp_share:  # warm heat lamp
        lx, ly = rng.uniform(0, gw), rng.uniform(0, gh)
        spot = np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / rng.uniform(3, 10))
        gain += spot[..., None] * np.array([0.0, 0.12, 0.35], np.float32)
    gain *= rng.uniform(*style.exposure)
    if style.colour_casts:  # the light source's colour: sodium lamps, cold LEDs, green-tinted roof sheets
        cast = np.array(style.colour_casts[rng.integers(len(style.colour_casts))], np.float32)
        gain *= cast * np.float32(rng.uniform(0.9, 1.1))
    gain = cv2.resize(np.clip(gain * 128, 0, 255).astype(np.uint8), (scene.width, scene.height),
                      interpolation=cv2.INTER_LINEAR)
    img = cv2.multiply(img, gain, scale=1.0 / 128)
    if style.contrast is not None:  # flat haze or hard light, about the frame's mean
        c = rng.uniform(*style.contrast)
        img = cv2.addWeighted(img, c, img, 0.0, float(img.mean()) * (1.0 - c))
    if rng.random() < style.night_share:  # infrared night frame
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
                 jpeg_quality: int | None = None, style: str | Style = "barn") -> tuple[np.ndarray | None, SynthImage]:
    """Render one synthetic frame. Returns (BGR image or None when ``labels_only``, its record).

    The same (label, number, split, seed, size, image_scale, style) always gives the same boxes, whether the
    pixels are rendered or not. ``style``: ``barn`` (the main job's frames) or ``shifted`` (the pretraining
    domain, see :mod:`livestock.data.synth.style`); the styles draw from different random streams.
    """
    style = get_style(style)
    if label not in CLASS_CODE or split not in SPLIT_CODE:
        raise ValueError(f"label must be 'pig' or 'cow' and split 'train' or 'test', got {label!r}, {split!r}")
    scene_style(label, size)  # refuses a class and frame size the generator has no style for
    entropy = [int(seed), CLASS_CODE[label], SPLIT_CODE[split], int(number), *style.entropy]
    rng_geometry = np.random.default_rng(entropy + [0])
    rng_look = np.random.default_rng(entropy + [1])
    scene = plan_scene(rng_geometry, label, size, split, missing_cow_rate if split == "train" else 0.0, image_scale,
                       style)
    if labels_only:
        idmap, rois = draw_ids(scene)
        img = None
        jpeg = _solid_jpeg(scene.width, scene.height)
    else:
        img, idmap, rois = _render(scene, rng_look, style)
        quality = int(jpeg_quality if jpeg_quality is not None else rng_look.integers(55, 96))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"JPEG encoding failed for {label} image {number}")
        jpeg = buf.tobytes()
    visible = visible_boxes(scene, idmap, rois)
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
                       image_scale: float = 1.0, style: str | Style = "barn") -> np.ndarray:
    """A barn frame in the style of ``label``'s scenes (walls, floor, pens, fences, lighting, noise) with
    no animal in it (BGR uint8): background images for training, or to paste animals onto."""
    style = get_style(style)
    scene_style(label, size)  # refuses a class and frame size the generator has no style for
    rng = np.random.default_rng([int(seed), CLASS_CODE[label], 2, 0, *style.entropy])
    scene = plan_scene(rng, label, size, "test", 0.0, image_scale, style)
    scene.animals = []
    img, _, _ = _render(scene, rng, style)
    return img


def image_name(label: str, number: int) -> str:
    """AI Hub file name of an image: ``livestock_<label>_bbox_<6 digits>.jpg``."""
    if not 0 <= number <= 999_999:
        raise ValueError(f"image number {number} does not fit the 6-digit AI Hub naming")
    return f"livestock_{label}_bbox_{number:06d}.jpg"


