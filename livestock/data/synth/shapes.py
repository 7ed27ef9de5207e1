"""Animal shapes for the synthetic generator: pigs and cows as polygons in canonical units, and their posing.

A shape is built facing +x with its trunk about one unit long; :func:`pose_parts` turns, flips, squashes,
scales and places it in pixels. Polygons are drawn with OpenCV in fixed point (:data:`FIXED_BITS` sub-pixel bits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from livestock.data.synth.style import BARN, Style

FIXED_BITS = 4  # sub-pixel bits for cv2 polygon drawing
FIXED_ONE = 1 << FIXED_BITS


def fixed_point(pts: np.ndarray) -> np.ndarray:
    """Float pixel points as the int32 fixed-point coordinates cv2 draws with ``shift=FIXED_BITS``."""
    return np.round(pts * FIXED_ONE).astype(np.int32)



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
class Part:
    """One polygon (or polyline) of an animal and its colour role."""

    pts: np.ndarray  # canonical coordinates, then pixels after placement
    tone: str  # colour role
    line: float = 0.0  # > 0: an open polyline of this thickness (canonical units) instead of a fill
    silhouette: bool = True  # part of the animal's outline (id map); False for markings inside it


@dataclass
class Animal:
    """An animal's parts and markings, its pose in the frame and its behaviour (the label JSON's category)."""

    label: str
    parts: list[Part]
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


def pig_shape(rng: np.random.Generator, style: Style = BARN) -> Animal:
    """A pig seen from above (CCTV over a pen), facing +x, trunk from x = -0.5 to 0.5."""
    bw = rng.uniform(*style.pig_body_width)
    side_lying = rng.random() < 0.25
    parts: list[Part] = []
    if side_lying:  # lying on its side: legs stretched out sideways
        for x0, dx in ((0.27, 0.08), (0.17, 0.04), (-0.25, -0.06), (-0.33, -0.1)):
            parts.append(Part(_quad((x0, bw * 0.5), (x0 + dx, bw + rng.uniform(0.14, 0.22)), 0.09, 0.055), "body"))
    else:  # trotters just showing beside the trunk
        for x0 in (0.3, -0.3):
            for side in (-1, 1):
                parts.append(Part(_ellipse(x0, side * (bw + 0.005), 0.065, 0.045), "leg"))
    tail_curl = rng.uniform(-1, 1) * 0.04
    parts.append(Part(np.array([[-0.48, 0.0], [-0.56, 0.02 + tail_curl], [-0.6, -0.02], [-0.57, -0.04]]),
                       "tail", line=0.022))
    trunk = [_ellipse(-0.2, 0.0, 0.3, bw), _ellipse(0.0, 0.0, 0.5, bw * 0.97), _ellipse(0.22, 0.0, 0.28, bw * 0.93)]
    parts += [Part(p, "body") for p in trunk]
    if side_lying:
        parts.append(Part(_ellipse(0.0, bw * 0.45, 0.32, bw * 0.35), "belly", silhouette=False))
    parts.append(Part(_ellipse(0.0, -bw * 0.1 if side_lying else 0.0, 0.36, bw * 0.3), "highlight", silhouette=False))
    # head, snout and ears turn together about the neck
    neck = (0.42, 0.0)
    turn = float(np.clip(rng.normal(0.0, 0.25), -0.6, 0.6))
    ear = rng.uniform(0.85, 1.2)
    head = [
        Part(_ellipse(0.55, 0.0, 0.15, bw * 0.72), "body"),
        Part(np.array([[0.56, -bw * 0.5], [0.76, -0.06], [0.76, 0.06], [0.56, bw * 0.5]]), "body"),
        Part(_ellipse(0.765, 0.0, 0.028, 0.068), "snout"),
        Part(_ellipse(0.77, -0.03, 0.011, 0.016), "nostril", silhouette=False),
        Part(_ellipse(0.77, 0.03, 0.011, 0.016), "nostril", silhouette=False),
    ]
    for side in (-1, 1):  # floppy ears lying forward over the eyes
        head.append(Part(_ellipse(0.56 + 0.02 * ear, side * bw * 0.5, 0.1 * ear, 0.06 * ear, side * 0.5), "ear"))
    for p in head:
        p.pts = _rotate_about(p.pts, neck, turn)
    parts += head
    patches = []
    if rng.random() < style.pig_patch_share:  # dirt or dark markings on the back
        for _ in range(int(rng.integers(1, 5))):
            patches.append(_ellipse(rng.uniform(-0.4, 0.35), rng.uniform(-bw, bw), rng.uniform(0.05, 0.14),
                                    rng.uniform(0.04, 0.1), rng.uniform(0, np.pi)))
    return Animal("pig", parts, "lying" if side_lying or rng.random() < 0.55 else "standing", bw, patches)


def cow_shape(rng: np.random.Generator, style: Style = BARN) -> Animal:
    """A cow seen from the side and a little above, facing +x, trunk from x = -0.45 to 0.45, y down."""
    b = rng.uniform(*style.cow_trunk)  # half height of the trunk
    pose = str(rng.choice(["standing", "eating", "lying"], p=[0.65, 0.17, 0.18]))
    legs = rng.uniform(*style.cow_legs)
    stride = rng.uniform(-0.12, 0.12)
    parts: list[Part] = []
    ground = b + legs if pose != "lying" else b * 1.02

    def leg(x: float, tilt: float, tone: str) -> None:
        top, foot = (x, b * 0.2), (x + tilt * legs, ground)
        parts.append(Part(_quad(top, foot, 0.1, 0.055), tone))
        hock = (top[0] + 0.88 * (foot[0] - top[0]), top[1] + 0.88 * (foot[1] - top[1]))
        parts.append(Part(_quad(hock, foot, 0.058, 0.062), "hoof"))

    if pose != "lying":  # legs first: the trunk hides where they join it
        leg(0.25, -stride, "leg_far")
        leg(-0.27, stride, "leg_far")
        leg(0.31, stride, "leg")
        leg(-0.33, -stride, "leg")
        tail = np.array([[-0.44, -b * 0.75], [-0.5, -b * 0.2], [-0.5, b + legs * 0.45]])
    else:
        tail = np.array([[-0.44, -b * 0.7], [-0.52, b * 0.2], [-0.42, b * 0.95]])
    parts.append(Part(tail, "tail", line=0.024))
    parts.append(Part(_ellipse(*tail[-1], 0.025, 0.045), "tail"))
    parts.append(Part(_superellipse(0.0, 0.0, 0.45, b, 2.6), "body"))
    parts.append(Part(_ellipse(0.26, -b * 0.1, 0.18, b * 1.06), "body"))  # shoulders
    parts.append(Part(_ellipse(-0.3, -b * 0.08, 0.16, b * 1.03), "body"))  # hips
    if pose == "lying":  # folded legs showing under the chest and belly
        parts.append(Part(_ellipse(0.3, b * 0.85, 0.14, 0.05), "leg"))
        parts.append(Part(_ellipse(-0.2, b * 0.9, 0.12, 0.045), "leg"))
    else:
        if rng.random() < 0.35:
            parts.append(Part(_ellipse(-0.18, b * 0.95, 0.07, 0.055), "udder"))
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
    parts.append(Part(np.stack([withers, p_up, p_dn, (p_dn + chest) / 2 + np.array([0.03, 0.04]), chest]), "body"))
    tip = poll + d * head_len
    parts.append(Part(np.stack([p_up, tip + n * w_muzzle * 0.5, tip - n * w_muzzle * 0.5, p_dn]), "head"))
    parts.append(Part(_ellipse(*(poll + d * head_len * 0.1), w_poll * 0.55, w_poll * 0.5), "head"))
    parts.append(Part(_ellipse(*(tip - d * 0.02), 0.05, w_muzzle * 0.6, head_dir), "muzzle"))
    parts.append(Part(_ellipse(*(poll + d * head_len * 0.35 + n * 0.035), 0.012, 0.012), "eye",
                       silhouette=False))
    for side, tone in ((1, "ear_far"), (-1, "ear")):
        ang = head_dir + math.pi + side * 1.2
        out = np.array([math.cos(ang), math.sin(ang)])
        parts.append(Part(_ellipse(*(poll + d * 0.03 + out * 0.075), 0.07, 0.03, ang), tone))
    if rng.random() < 0.3:
        base = poll + n_up * w_poll * 0.4
        parts.append(Part(np.stack([base, base + n_up * 0.05 - d * 0.01, base + n_up * 0.08 + d * 0.03]),
                           "horn", line=0.022))
    patches = []
    for _ in range(int(rng.integers(3, 8))):  # used by patterned coats (Holstein); their shape is geometry
        cx, cy = rng.uniform(-0.5, 0.6), rng.uniform(-b * 1.2, b + legs * 0.3)
        for _lobe in range(int(rng.integers(1, 4))):  # irregular blobs: a few overlapping lobes
            patches.append(_ellipse(cx + rng.normal(0, 0.05), cy + rng.normal(0, 0.04), rng.uniform(0.05, 0.14),
                                    rng.uniform(0.04, 0.1), rng.uniform(0, np.pi)))
    return Animal("cow", parts, pose, b, patches)


def _canonical(animal: Animal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All part and patch points in one array (one transform per pose instead of one per part), the
    split offsets, and which points belong to the silhouette."""
    if animal.canon is None:
        arrays = [p.pts for p in animal.parts] + list(animal.patches)
        lengths = [len(a) for a in arrays]
        silhouette = np.repeat([p.silhouette for p in animal.parts] + [False] * len(animal.patches), lengths)
        animal.canon = (np.concatenate(arrays), np.cumsum(lengths)[:-1], silhouette)
    return animal.canon


def _pose(animal: Animal, pts: np.ndarray, scale: float, centre: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(animal.angle), math.sin(animal.angle)
    x = pts[:, 0] * (animal.squash * animal.flip)
    y = pts[:, 1]
    out = np.empty_like(pts)
    out[:, 0] = centre[0] + scale * (c * x - s * y)
    out[:, 1] = centre[1] + scale * (s * x + c * y)
    return out


def unit_extent(animal: Animal) -> tuple[float, float, float, float]:
    """Box of the posed animal's silhouette at scale 1 around the origin: (x0, y0, x1, y1)."""
    pts, _, silhouette = _canonical(animal)
    posed = _pose(animal, pts[silhouette], 1.0, (0.0, 0.0))
    (x0, y0), (x1, y1) = posed.min(axis=0), posed.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def pose_parts(animal: Animal, scale: float, centre: tuple[float, float]
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The animal's part and patch polygons posed at ``scale`` around ``centre`` (pixels): (parts, patches)."""
    pts, offsets, _ = _canonical(animal)
    pieces = np.split(_pose(animal, pts, scale, centre), offsets)
    return pieces[:len(animal.parts)], pieces[len(animal.parts):]


def fill_fraction(animal: Animal, size: int = 48) -> float:
    """Share of the posed animal's box its silhouette covers (rasterised small)."""
    ux0, uy0, ux1, uy1 = unit_extent(animal)
    k = size / max(ux1 - ux0, uy1 - uy0)
    w, h = max(1, int(math.ceil((ux1 - ux0) * k))), max(1, int(math.ceil((uy1 - uy0) * k)))
    canvas = np.zeros((h, w), np.uint8)
    parts, _ = pose_parts(animal, k, (-ux0 * k, -uy0 * k))
    for p, pts in zip(animal.parts, parts):
        if p.silhouette:
            draw_part(canvas, p, 1, k, aa=False, pts=pts)
    return float(np.count_nonzero(canvas)) / (w * h)


def draw_part(canvas: np.ndarray, part: Part, colour: int | tuple[int, ...], scale: float, aa: bool,
              pts: np.ndarray | None = None) -> None:
    """Draw one part (at ``pts``, else its own points): filled, or a polyline ``part.line * scale`` pixels thick."""
    pts = part.pts if pts is None else pts
    line_type = cv2.LINE_AA if aa else cv2.LINE_8
    if part.line > 0:
        thickness = max(1, int(round(part.line * scale)))
        cv2.polylines(canvas, [fixed_point(pts)], False, colour, thickness, line_type, FIXED_BITS)
    else:
        cv2.fillPoly(canvas, [fixed_point(pts)], colour, line_type, FIXED_BITS)
