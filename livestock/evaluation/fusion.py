"""The views of test-time augmentation (TTA) made into one image's detections: by one NMS, or by weighted boxes
fusion (WBF) of each view's NMS.

With TTA the engine runs its augmented forward (three views of each image: scales 1, 0.83 flipped left-right and
0.67; see :mod:`livestock.model.engine`) and the candidate cache holds the rows of every view, each labelled with
its view (``Candidates.views``). Two ways to one set of detections, the ``fusion`` of a setting:

- ``nms``: one NMS over the rows of all views, in the order the engine concatenates them. That is the engine's own
  augmented inference (YOLOv5's ``detect.py --augment``), and the exact replay of
  :mod:`livestock.evaluation.nms_replay` serves it like any other candidates, one NMS per IoU for a whole grid.
- ``wbf``: each view's rows alone through the same NMS at (conf, IoU), which is exactly that view's own pass, then
  ``ensemble_boxes.weighted_boxes_fusion`` across the views: boxes of one class from different views that overlap
  by more than ``iou_thr`` become one box, its corners the confidence-weighted mean of theirs, its confidence their
  mean times the boxes in the cluster over the number of views, at most 1 (``conf_type="avg"``; a box only one of
  three views found keeps a third of its confidence). Each view's NMS comes from the grid's shared NMS per IoU; WBF
  itself runs once per image and setting (pure Python clustering: the costly part of a TTA grid).

WBF's own settings here: ``iou_thr`` is the setting's NMS IoU; ``skip_box_thr`` is 0; every view weighs 1;
``conf_type`` is ``"avg"``. ``iou_thr`` is tied to the NMS IoU rather than made a grid dimension of its own: both
decide when two boxes of one class are one animal (above it NMS drops the weaker, WBF merges them), so one
threshold keeps one meaning across the views and within each, the grid's 21 IoU values scan it anyway, and a
dimension of its own would multiply the WBF cells, the slow ones, by its number of values. ``skip_box_thr`` is 0
because each view's NMS has already kept only boxes above the confidence threshold: WBF drops nothing more, except
the zero-area boxes it always skips (a box clipped to a line at the image edge). Boxes reach WBF as corners
normalised by the image's width and height (in [0, 1], as it requires; each view's boxes are clipped to the image
already) and come back in pixels; an image keeps its ``max_det`` most confident fused boxes, as at every setting.

With ``agnostic``, each view's NMS is class-agnostic; WBF fuses within a class (it has no class-agnostic mode).
"""
from __future__ import annotations

import warnings
from typing import Iterable, Iterator, Sequence

import numpy as np

from livestock.evaluation.nms_replay import (DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET, GridStats, grid_detections,
                                             nms_from_candidates)
from livestock.model.engine import Candidates
from livestock.records import Detections

FUSIONS: tuple[str, ...] = ("nms", "wbf")
WBF_SKIP_BOX_THR = 0.0  # each view's NMS has applied the confidence threshold already
WBF_CONF_TYPE = "avg"  # mean confidence of a cluster, scaled by the share of views in it


def check_fusion(tta: bool, fusion: str) -> None:
    """Refuse a setting that does not exist: an unknown fusion, or WBF without TTA (one pass has no views)."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    if fusion == "wbf" and not tta:
        raise ValueError("fusion wbf fuses the views of test-time augmentation: it needs TTA on")


def setting_name(tta: bool, fusion: str) -> str:
    """How a setting's detections are made, in words: ``one pass``, ``TTA + NMS`` or ``TTA + WBF``."""
    check_fusion(tta, fusion)
    return f"TTA + {fusion.upper()}" if tta else "one pass"


def fuse_views(per_view: Sequence[Detections], iou: float, max_det: int = DEFAULT_MAX_DET) -> Detections:
    """One image's detections of each view (pixel corners, clipped to the image) fused by
    ``ensemble_boxes.weighted_boxes_fusion`` at ``iou_thr=iou`` (see the module docstring for its settings); the
    ``max_det`` most confident fused boxes, highest confidence first, in pixels."""
    from ensemble_boxes import weighted_boxes_fusion

    first = per_view[0]
    if any((d.image_id, d.width, d.height) != (first.image_id, first.width, first.height) for d in per_view):
        raise ValueError(f"{first.image_id}: the views to fuse are not all of this image")
    scale = np.array([first.width, first.height, first.width, first.height], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a warning per zero-area box it skips (a box clipped at the image edge)
        boxes, scores, labels = weighted_boxes_fusion(
            [d.boxes / scale for d in per_view], [d.scores for d in per_view], [d.class_ids for d in per_view],
            iou_thr=iou, skip_box_thr=WBF_SKIP_BOX_THR, conf_type=WBF_CONF_TYPE)
    boxes, scores, labels = boxes[:max_det], scores[:max_det], labels[:max_det]  # WBF sorts by confidence
    return Detections(first.image_id, first.width, first.height, np.asarray(boxes, np.float64).reshape(-1, 4) * scale,
                      scores, np.asarray(labels).astype(np.int64))


def _views_of(cands: Candidates) -> int:
    if cands.n_views < 2:
        raise ValueError(f"{cands.image_id}: candidates of one pass have no views to fuse (collect them with TTA)")
    return cands.n_views


def detections_at(cands: Candidates, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU, fusion: str = "nms",
                  max_det: int = DEFAULT_MAX_DET, agnostic: bool = False, multi_label: bool = False) -> Detections:
    """One image's detections at one setting: NMS over all its rows (one pass, or every TTA view: the engine's own
    augmented inference), or with ``fusion="wbf"`` each view's NMS fused by :func:`fuse_views`."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    if fusion == "nms":
        return nms_from_candidates(cands, conf, iou, max_det, agnostic, multi_label)
    return fuse_views([nms_from_candidates(cands.view(k), conf, iou, max_det, agnostic, multi_label)
                       for k in range(_views_of(cands))], iou, max_det)


class ViewCandidates(Sequence[Candidates]):
    """View ``k`` of every image of a cache of TTA candidates, read as the cache is (from disk when it is there)."""

    def __init__(self, cache: Sequence[Candidates], k: int) -> None:
        self.cache, self.k = cache, k
        self.on_disk = getattr(cache, "on_disk", False)  # grid_detections prepares images per IoU when on disk

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return ViewCandidates(self.cache[i], self.k)
        cands = self.cache[i]
        _views_of(cands)
        return cands.view(self.k)


def grid_fused_detections(cache: Sequence[Candidates], settings: Iterable[tuple[float, float]], fusion: str = "nms",
                          max_det: int = DEFAULT_MAX_DET, agnostic: bool = False, multi_label: bool = False,
                          progress: bool = True, stats: GridStats | None = None
                          ) -> Iterator[tuple[float, float, list[Detections]]]:
    """:func:`~livestock.evaluation.nms_replay.grid_detections` for ``fusion="nms"``; for ``"wbf"`` the same grid
    on each view's rows alone (one shared NMS per view, image and IoU), each setting's views fused image by image.
    Yields ``(conf, iou, detections of every image)``, each equal to :func:`detections_at` at that setting, in the
    order :func:`grid_detections` gives."""
    settings = list(settings)
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
    if fusion == "nms":
        yield from grid_detections(cache, settings, max_det, agnostic, multi_label, progress, stats)
        return
    if len(cache) == 0:
        return
    n_views = _views_of(cache[0])
    views = [grid_detections(ViewCandidates(cache, k), settings, max_det, agnostic, multi_label, progress and k == 0,
                             stats) for k in range(n_views)]
    for cells in zip(*views):  # every view's grid gives the same settings in the same order
        conf, iou = cells[0][0], cells[0][1]
        yield conf, iou, [fuse_views([cell[2][i] for cell in cells], iou, max_det) for i in range(len(cache))]
