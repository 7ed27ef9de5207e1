"""Stand-in raw candidates at YOLOv5m6@1280 volume, written into the candidate cache.

The original entry ran YOLOv5m6 at 1280 px: its head gives 3 x (160² + 80² + 40² + 20²) = 102,000 rows per image
(a 1280 x 1280 input, as an exported fixed-shape model sees every frame), of which at most 30,000 (``MAX_NMS``)
reach the cache (:func:`livestock.evaluation.detect.cap_candidates`). No trained m6 exists offline, so the memory
and time of tuning and silver labelling at that volume are measured on candidates built from a trained model that
does exist (the main job's YOLOv5n at 320 px):

1. **Source rows** (:func:`sample_head`): the model runs on a few images with a confidence floor of 0, so every
   row of its head is kept: box, objectness, class scores. Boxes are stored as fractions of the original frame.
2. **Stand-in head** (:func:`standin_head`): for each target image, 102,000 rows are drawn with replacement from
   the rows of one source image of the same class and frame size: about 27 copies of each row of a 320 px head on
   a 1920 x 1080 frame (3,780 rows), so the clusters of overlapping, high-scoring boxes around each animal and the
   spread of weak boxes over the frame keep their shape, 27 times denser, which is what NMS works through. Each
   box is shifted by a Gaussian of ``JITTER`` (5 %) of its width / height and scaled by ``exp`` of one of 5 %, as
   neighbouring anchors of a finer grid see the same animal from slightly shifted cells; each score (objectness
   and class scores) moves by a Gaussian of ``SCORE_JITTER`` (0.05) in logit space, for the same reason and
   because exact copies would tie in bulk (a real head's float32 confidences tie only by chance, as the stand-in's
   then do). The stand-in's (objectness, class score) distribution is thus the source model's, smoothed by a few
   percent. Boxes are then placed in the target frame's 1280 x 1280 letterbox.
3. **Into the cache** (:func:`write_standin_cache`): the rows go through YOLOv5's own first filter at the cache's
   confidence floor (``obj > floor`` and best ``obj * cls > floor``, as
   :func:`livestock.model.yolov5.detector.head_rows_to_candidates`), then :func:`cap_candidates`, and are saved
   with :func:`save_candidates` under the key (:func:`cache_key`) and folder (:func:`cache_folder`) of the real
   weights at 1280 px and that floor, with the SHA-256 of the target image. ``collect_candidates(weights, images,
   1280, ..., in_memory=False)`` and ``detect(weights, images, 1280, ...)`` then find every image cached and
   never load a network, so tuning and silver labelling run their real code on m6-sized candidates.

The boxes are not the target image's animals (they come from a source image), so scores measured on stand-in
candidates say nothing about accuracy; they exist for memory and time.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from livestock.evaluation.detect import (
    cache_folder,
    cache_key,
    cap_candidates,
    iter_candidates,
    save_candidates,
    weights_sha256,
)
from livestock.model.engine import Candidates
from livestock.records import ImageRecord

M6_IMGSZ = 1280
M6_STRIDES: tuple[int, ...] = (8, 16, 32, 64)  # P3-P6 heads of YOLOv5m6
ANCHORS_PER_CELL = 3
JITTER = 0.05  # box shift (share of its width / height) and log-size noise of a resampled row
SCORE_JITTER = 0.05  # logit-space noise of a resampled row's scores
_EPS = 1e-7  # scores are kept inside (0, 1) so their logits stay finite


def head_rows(input_hw: tuple[int, int], strides: Sequence[int] = M6_STRIDES, anchors: int = ANCHORS_PER_CELL) -> int:
    """Rows of a YOLOv5 head for a network input of ``input_hw`` (height, width): anchors per cell of every level."""
    h, w = input_hw
    return anchors * sum((h // s) * (w // s) for s in strides)


M6_HEAD_ROWS = head_rows((M6_IMGSZ, M6_IMGSZ))  # 102,000


@dataclass(frozen=True)
class SourceImage:
    """Every head row of a model on one image: boxes as (x1, y1, x2, y2) fractions of the original frame."""

    image_id: str
    label: str
    width: int
    height: int
    boxes: np.ndarray  # (n, 4) float64
    scores: np.ndarray  # (n, classes) float32
    objectness: np.ndarray  # (n,) float32

    def confidences(self) -> np.ndarray:
        """Each row's best ``obj * cls``, float32, as YOLOv5 computes it."""
        return (self.scores * self.objectness[:, None]).max(1)


def _frame_fractions(cands: Candidates) -> np.ndarray:
    """Candidate corners in network-input pixels -> fractions of the original frame (letterbox undone, not clipped)."""
    ih, iw = cands.input_shape
    gain = min(ih / cands.height, iw / cands.width)
    pad_x, pad_y = (iw - cands.width * gain) / 2, (ih - cands.height * gain) / 2
    b = cands.boxes.astype(np.float64)
    out = np.empty_like(b)
    out[:, [0, 2]] = (b[:, [0, 2]] - pad_x) / gain / cands.width
    out[:, [1, 3]] = (b[:, [1, 3]] - pad_y) / gain / cands.height
    return out


def sample_head(weights: str | Path, records: Sequence[ImageRecord], imgsz: int, *, device: str = "auto",
                progress: bool = True) -> list[SourceImage]:
    """Every head row of ``weights`` at ``imgsz`` on each of ``records`` (a confidence floor of 0 keeps them all)."""
    by_id = {r.image_id: r for r in records}
    out = []
    for c in iter_candidates(weights, list(records), imgsz, conf_floor=0.0, device=device, cache_dir=None,
                             progress=progress):
        if c.objectness is None:
            raise ValueError(f"{weights}: the stand-in needs a head with objectness (a YOLOv5 model)")
        out.append(SourceImage(c.image_id, by_id[c.image_id].label, c.width, c.height, _frame_fractions(c),
                               c.scores.astype(np.float32), c.objectness.astype(np.float32)))
    return out


def pick_source(sources: Sequence[SourceImage], record: ImageRecord) -> SourceImage:
    """The source image for ``record``: one of the same class and frame size (else the same class, else any),
    chosen by the image id so every run and every worker picks the same one."""
    if not sources:
        raise ValueError("no source image to draw stand-in candidates from")
    group = ([s for s in sources if (s.label, s.width, s.height) == (record.label, record.width, record.height)]
             or [s for s in sources if s.label == record.label] or list(sources))
    return group[zlib.crc32(record.image_id.encode("utf-8")) % len(group)]


def _letterbox_corners(frac: np.ndarray, width: int, height: int, imgsz: int) -> np.ndarray:
    """Frame fractions -> corners in the ``imgsz`` x ``imgsz`` letterboxed input of a ``width`` x ``height`` frame."""
    gain = min(imgsz / height, imgsz / width)
    pad_x, pad_y = (imgsz - width * gain) / 2, (imgsz - height * gain) / 2
    out = np.empty_like(frac)
    out[:, [0, 2]] = frac[:, [0, 2]] * width * gain + pad_x
    out[:, [1, 3]] = frac[:, [1, 3]] * height * gain + pad_y
    return out


def standin_head(source: SourceImage, width: int, height: int, rng: np.random.Generator,
                 n_rows: int = M6_HEAD_ROWS, imgsz: int = M6_IMGSZ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_rows`` head rows ``(boxes, scores, objectness)`` for a ``width`` x ``height`` frame at an ``imgsz``
    square input, drawn from ``source`` (see the module docstring). Boxes are float32 corners in input pixels."""
    if len(source.objectness) == 0:
        raise ValueError(f"{source.image_id}: no source rows to draw from")
    idx = rng.integers(0, len(source.objectness), n_rows)
    frac = source.boxes[idx]
    wh = frac[:, 2:] - frac[:, :2]
    centre = (frac[:, 2:] + frac[:, :2]) / 2 + rng.normal(0.0, JITTER, (n_rows, 2)) * wh
    wh = wh * np.exp(rng.normal(0.0, JITTER, (n_rows, 2)))
    frac = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
    boxes = _letterbox_corners(frac, width, height, imgsz).astype(np.float32)
    return boxes, _jitter_scores(source.scores[idx], rng), _jitter_scores(source.objectness[idx], rng)


def _jitter_scores(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Probabilities moved by a Gaussian of ``SCORE_JITTER`` in logit space, float32."""
    q = np.clip(p.astype(np.float64), _EPS, 1 - _EPS)
    logit = np.log(q / (1 - q)) + rng.normal(0.0, SCORE_JITTER, q.shape)
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


def standin_candidates(record: ImageRecord, source: SourceImage, conf_floor: float, *, seed: int = 0,
                       n_rows: int = M6_HEAD_ROWS, imgsz: int = M6_IMGSZ) -> tuple[Candidates, int]:
    """The cached candidates of ``record``: a stand-in head (:func:`standin_head`, seeded by ``seed`` and the image
    id) filtered at ``conf_floor`` as YOLOv5 filters, then capped. Also returns the rows above the floor."""
    rng = np.random.default_rng([int(seed), zlib.crc32(record.image_id.encode("utf-8"))])
    boxes, scores, obj = standin_head(source, record.width, record.height, rng, n_rows, imgsz)
    floor = np.float32(conf_floor)
    keep = (obj > floor) & ((scores * obj[:, None]).max(1) > floor)
    n_above = int(keep.sum())
    capped = cap_candidates(boxes[keep], scores[keep], obj[keep])
    return Candidates(record.image_id, record.width, record.height, (imgsz, imgsz), *capped,
                      float(conf_floor), False), n_above


@dataclass(frozen=True)
class StandinCache:
    """What :func:`write_standin_cache` wrote: the cache folder, images, and mean rows per image of the stand-in
    head, above the confidence floor, and cached (after the ``MAX_NMS`` cap)."""

    folder: str
    images: int
    head_rows: float
    rows_above_floor: float
    rows_cached: float


@dataclass(frozen=True)
class _Job:
    folder: Path
    key: str
    conf_floor: float
    seed: int
    n_rows: int
    imgsz: int


_WORKER: dict = {}


def _init_worker(sources: Sequence[SourceImage], job: _Job) -> None:
    _WORKER.update(sources=sources, job=job)


def _write_one(record: ImageRecord) -> tuple[int, int]:
    """Write one image's stand-in cache file; returns (rows above the floor, rows cached)."""
    sources, job = _WORKER["sources"], _WORKER["job"]
    cands, n_above = standin_candidates(record, pick_source(sources, record), job.conf_floor, seed=job.seed,
                                        n_rows=job.n_rows, imgsz=job.imgsz)
    image_sha = hashlib.sha256(Path(record.image_path).read_bytes()).hexdigest()
    save_candidates(cands, job.folder / f"{record.image_id}.npz", job.key, image_sha)
    return n_above, len(cands)


def write_standin_cache(weights: str | Path, records: Iterable[ImageRecord], sources: Sequence[SourceImage],
                        cache_dir: str | Path, conf_floor: float, *, imgsz: int = M6_IMGSZ,
                        n_rows: int = M6_HEAD_ROWS, seed: int = 0, workers: int = 1, progress: bool = True
                        ) -> StandinCache:
    """Write stand-in candidates of every record where ``collect_candidates`` / ``detect`` with ``weights`` at
    ``imgsz`` and ``conf_floor`` look for them under ``cache_dir``; ``workers`` processes share the images."""
    records = list(records)
    if not records:
        raise ValueError("no image to write stand-in candidates for")
    sha = weights_sha256(weights)
    folder = cache_folder(cache_dir, weights, imgsz, conf_floor, sha)
    folder.mkdir(parents=True, exist_ok=True)
    job = _Job(folder, cache_key(sha, imgsz, conf_floor), float(conf_floor), int(seed), int(n_rows), int(imgsz))
    bar = tqdm(total=len(records), desc=f"stand-in candidates (floor {conf_floor:g})", unit="img",
               disable=not progress)
    counts = []
    if workers <= 1:
        _init_worker(sources, job)
        try:
            for r in records:
                counts.append(_write_one(r))
                bar.update(1)
        finally:
            _WORKER.clear()
    else:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the caller's state is copied
        with ctx.Pool(workers, _init_worker, (sources, job)) as pool:
            for c in pool.imap_unordered(_write_one, records, chunksize=8):
                counts.append(c)
                bar.update(1)
    bar.close()
    above, cached = np.array(counts, dtype=np.float64).T
    return StandinCache(os.fspath(folder), len(records), float(n_rows), float(above.mean()), float(cached.mean()))
