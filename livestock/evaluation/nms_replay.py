"""NMS replayed on cached raw candidates, exactly as each engine's own NMS would run on the network's output.

What the detector cache (:mod:`livestock.evaluation.detect`) stores is every head row above a loose confidence
floor. Any NMS setting at or above the floor is computed from it, without the network, and gives **exactly** what
``yolov5.utils.general.non_max_suppression`` gives on the network's output at that setting:

- YOLOv5 keeps rows with ``obj > conf``, multiplies ``conf = obj * cls``, keeps the best class (or, multi-label,
  every class) with ``conf > conf_thres``, sorts by confidence (``argsort(descending=True)``), caps at
  ``max_nms = 30000`` rows, runs ``torchvision.ops.nms`` on boxes shifted by ``class * 7680`` and keeps the
  first ``max_det``. :func:`nms_from_candidates` performs the same steps, with the same tensor operations on the
  same rows in the same order, so the floats and the order match bit for bit.
- Rows below the floor cannot matter at any ``conf >= floor``: they fail YOLOv5's first filter.

For a grid of settings (:func:`grid_detections`) NMS runs **once per IoU** on the loosest candidate set, and every
confidence is a filter on that result. This is exact because, with ``cls <= 1``, ``conf = obj * cls <= obj``
(also after float rounding), so the rows surviving ``conf`` form a **prefix** of the loose set sorted by
confidence, and greedy NMS over a prefix keeps exactly the kept rows of the whole set that lie in the prefix
(a row's fate depends only on the rows before it). The two caps are handled in the right place: ``max_nms`` cuts
the sorted loose set before NMS (the prefix at any conf is then cut the same way) and ``max_det`` is applied
after the confidence filter, never before. One detail remains: YOLOv5's sort is not stable, so rows of *equal*
confidence may come out in an order that depends on the set sorted. For every (image, conf) the grid therefore
computes YOLOv5's own order of that set and compares it with the prefix; where they differ (ties reordered), it
replays NMS on YOLOv5's order from the first differing row on, seeded with the rows the shared NMS kept before it
(see ``_GridImage``). Every setting is thus exact; the equality tests check it.
(The reference is YOLOv5's NMS on the CPU; on a GPU YOLOv5 may order tied confidences differently again.)

Candidates of the Ultralytics engine (``Candidates.postprocess == "ultralytics"``) are replayed with Ultralytics'
rules, which differ from YOLOv5's in two details: its ``non_max_suppression`` sorts the rows itself only when more
than ``max_nms`` pass the confidence filter, and otherwise hands them in row order to ``torchvision.ops.nms``,
whose own sort is stable, so tied confidences keep their row order (the prefix property then holds without
exception); and its ``scale_boxes`` undoes the letterbox with the padding rounded as ``LetterBox`` rounded it
and a gain per axis from the rounded resized size. Filters, the class offset, caps and ``max_det`` are the same.
Neither engine's NMS time limit is replayed (they give up on a batch after a few seconds; the replay never does).

One departure from the engines' output, for both: a box whose corners are inverted (x2 < x1 or y2 < y1) is dropped
from the detections (:func:`_to_detections`). YOLO26's heads have no DFL (``reg_max`` 1), so a box's four side
distances are raw regressions and a weak model can predict a negative width or height; Ultralytics passes such a
box on (a thirty-epoch YOLO26n's NMS-free head gave one among its 300 rows on a synthetic test frame: y1 785, y2 689).
It has no extent, so it overlaps nothing: it never suppresses or is suppressed in NMS (its IoU with any box is 0),
and it can only be a false positive. What remains is exactly the engine's output less those rows. YOLOv5's and
YOLO11's boxes cannot be inverted (their widths and heights are non-negative by construction).
"""
from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from livestock.model.engine import Candidates
from livestock.records import Detections

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_CONF = 0.001  # the original entry's inference setting: conf 0.001, NMS IoU 0.68
DEFAULT_IOU = 0.68
DEFAULT_MAX_DET = 300
# Fixed settings inside yolov5.utils.general.non_max_suppression (7.0.x); local variables there, so restated here.
MAX_NMS = 30000
MAX_WH = 7680


def _check_setting(cands: Candidates, conf: float, iou: float) -> None:
    if not 0.0 <= iou <= 1.0:
        raise ValueError(f"NMS IoU must be in [0, 1], got {iou}")
    if not cands.conf_floor <= conf <= 1.0:
        raise ValueError(f"{cands.image_id}: conf {conf} is below the cache's floor {cands.conf_floor} "
                         "(collect candidates with a lower conf_floor)")


def _candidate_matrix(cands: Candidates, multi_label: bool) -> tuple["torch.Tensor", "torch.Tensor"]:
    """The detections matrix ``(m, 6)`` [x1, y1, x2, y2, conf, cls] over all cached rows, in the row order
    YOLOv5's ``non_max_suppression`` builds it (anchor order; multi-label: (anchor, class) row-major), and each
    row's objectness (1 for heads without one). At a setting ``conf`` NMS works on the rows with
    ``obj > conf`` and ``conf > conf``, in this order."""
    import torch

    scores = torch.from_numpy(np.ascontiguousarray(cands.scores, dtype=np.float32))
    if cands.objectness is None:
        obj = torch.ones(len(cands), dtype=torch.float32)
    else:
        obj = torch.from_numpy(np.ascontiguousarray(cands.objectness, dtype=np.float32))
        scores = scores * obj[:, None]  # conf = obj_conf * cls_conf, the same float32 product YOLOv5 takes
    box = torch.from_numpy(np.ascontiguousarray(cands.boxes, dtype=np.float32))
    if multi_label and scores.shape[1] > 1 and not cands.end_to_end:
        i, j = (scores > cands.conf_floor).nonzero(as_tuple=False).T
        return torch.cat((box[i], scores[i, j, None], j[:, None].float()), 1), obj[i]
    conf, j = scores.max(1, keepdim=True)
    return torch.cat((box, conf, j.float()), 1), obj


def _nms_order(mat: "torch.Tensor", obj: "torch.Tensor", conf: float, end_to_end: bool,
               postprocess: str = "yolov5") -> "torch.Tensor":
    """Indices into ``mat`` of the rows NMS sees at ``conf``, in YOLOv5's order: the rows it keeps, sorted with
    its own (unstable) ``argsort(descending=True)`` on the very same values, cut at ``max_nms``. Ultralytics sorts
    so only past ``max_nms``; below, ``torchvision.ops.nms`` orders the rows with a stable sort, reproduced here.
    An end-to-end head's rows keep the head's own order (it already ranked them)."""
    import torch

    sel = ((obj > conf) & (mat[:, 4] > conf)).nonzero(as_tuple=False).view(-1)
    if end_to_end:
        return sel
    x = mat[sel]
    if postprocess == "ultralytics" and len(sel) <= MAX_NMS:
        return sel[torch.sort(x[:, 4], descending=True, stable=True)[1]]
    return sel[x[:, 4].argsort(descending=True)[:MAX_NMS]]


def _nms(rows: "torch.Tensor", iou: float, agnostic: bool, end_to_end: bool) -> "torch.Tensor":
    import torch
    import torchvision

    if end_to_end:  # NMS-free head: its rows are already one per object
        return torch.arange(len(rows))
    c = rows[:, 5:6] * (0 if agnostic else MAX_WH)  # class offset: batched NMS as YOLOv5 does it
    return torchvision.ops.nms(rows[:, :4] + c, rows[:, 4], iou)


def scale_boxes_to_image(input_shape: tuple[int, int], boxes: "torch.Tensor", image_hw: tuple[int, int],
                         postprocess: str = "yolov5") -> "torch.Tensor":
    """Corner boxes in letterboxed-input pixels -> pixels of the original image, clipped to it (the same float
    operations as YOLOv5's ``scale_boxes``, or Ultralytics' with ``postprocess="ultralytics"``, so detections match
    the engine's own predictions exactly)."""
    if postprocess == "ultralytics":
        return _scale_boxes_ultralytics(input_shape, boxes, image_hw)
    gain = min(input_shape[0] / image_hw[0], input_shape[1] / image_hw[1])
    pad = (input_shape[1] - image_hw[1] * gain) / 2, (input_shape[0] - image_hw[0] * gain) / 2
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., :4] /= gain
    boxes[..., 0].clamp_(0, image_hw[1])
    boxes[..., 1].clamp_(0, image_hw[0])
    boxes[..., 2].clamp_(0, image_hw[1])
    boxes[..., 3].clamp_(0, image_hw[0])
    return boxes


def _scale_boxes_ultralytics(input_shape: tuple[int, int], boxes: "torch.Tensor", image_hw: tuple[int, int]
                             ) -> "torch.Tensor":
    # Ultralytics' scale_boxes: LetterBox's rounded resized size gives one gain per axis, its rounded padding the
    # offset; the same operations in the same order, so the floats agree.
    gain = min(input_shape[0] / image_hw[0], input_shape[1] / image_hw[1])
    new_h, new_w = (max(round(x * gain), 1) for x in image_hw)
    gain_y, gain_x = new_h / image_hw[0], new_w / image_hw[1]
    pad_x, pad_y = round((input_shape[1] - new_w) / 2 - 0.1), round((input_shape[0] - new_h) / 2 - 0.1)
    boxes[..., 0] -= pad_x
    boxes[..., 1] -= pad_y
    boxes[..., 2] -= pad_x
    boxes[..., 3] -= pad_y
    boxes[..., 0] /= gain_x
    boxes[..., 1] /= gain_y
    boxes[..., 2] /= gain_x
    boxes[..., 3] /= gain_y
    boxes[..., 0].clamp_(0, image_hw[1])
    boxes[..., 1].clamp_(0, image_hw[0])
    boxes[..., 2].clamp_(0, image_hw[1])
    boxes[..., 3].clamp_(0, image_hw[0])
    return boxes


def _to_detections(cands: Candidates, rows: "torch.Tensor") -> Detections:
    boxes = scale_boxes_to_image(cands.input_shape, rows[:, :4].clone(), (cands.height, cands.width),
                                 cands.postprocess)
    upright = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])  # inverted boxes: see the module docstring
    return Detections(cands.image_id, cands.width, cands.height, boxes[upright].double().numpy(),
                      rows[upright, 4].double().numpy(), rows[upright, 5].long().numpy())


def nms_from_candidates(cands: Candidates, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
                        max_det: int = DEFAULT_MAX_DET, agnostic: bool = False, multi_label: bool = False
                        ) -> Detections:
    """The detections YOLOv5's ``non_max_suppression(pred, conf, iou, agnostic=..., multi_label=...,
    max_det=...)`` gives for this image, scaled back to the original image (pixel corners, clipped)."""
    _check_setting(cands, conf, iou)
    mat, obj = _candidate_matrix(cands, multi_label)
    x = mat[_nms_order(mat, obj, conf, cands.end_to_end, cands.postprocess)]
    keep = _nms(x, iou, agnostic, cands.end_to_end)[:max_det]
    return _to_detections(cands, x[keep])


def detections_for_setting(cache: Sequence[Candidates], conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
                           max_det: int = DEFAULT_MAX_DET, agnostic: bool = False, multi_label: bool = False
                           ) -> list[Detections]:
    """:func:`nms_from_candidates` for every image of the cache, in order."""
    return [nms_from_candidates(c, conf, iou, max_det, agnostic, multi_label) for c in cache]


@dataclass
class _OwnOrder:
    """YOLOv5's own order of the rows NMS sees at one confidence, where it differs from the prefix of the stably
    sorted loose set: ``yolo`` (row indices) and the positions that differ. When the difference is only tied rows
    in another order (the same rows in both), also the position spans of those tie groups and, for each differing
    position of the prefix, the position of its row in YOLOv5's order."""

    yolo: "torch.Tensor"
    differs: "torch.Tensor"
    tie_spans: list[tuple[int, int]] | None = None
    moved_to: "torch.Tensor | None" = None

    @property
    def first(self) -> int:
        """The first position where the orders differ."""
        return int(self.differs[0])

    def reorder(self, kept: "torch.Tensor") -> "torch.Tensor":
        """Kept positions of the prefix (ascending) in the order their rows have in YOLOv5's order."""
        import torch

        key = kept.clone()
        i = torch.searchsorted(self.differs, kept).clamp_(max=len(self.differs) - 1)
        hit = self.differs[i] == kept
        key[hit] = self.moved_to[i[hit]]
        return kept[key.argsort()]


class _GridImage:
    """One image prepared for many settings: the loose rows sorted once (stable, so ties keep YOLOv5's row
    order) and cut at max_nms; for each confidence, the length of the prefix NMS sees, or where YOLOv5's unstable
    sort ordered tied confidences differently, that order (:class:`_OwnOrder`). Such a setting needs no whole NMS:

    Greedy NMS keeps a row when no earlier *kept* row overlaps it, so a row's fate depends only on the *set* of
    rows kept before it, and suppressed rows never act again.

    - For each reordered tie group, NMS over the rows the shared NMS kept before the group followed by the group in
      YOLOv5's order tells which of its rows YOLOv5 keeps. When that is the same set as in the prefix for every
      group (tied rows that do not overlap, or overlap without changing the outcome), every later decision is the
      same too: the kept rows are the shared NMS's, output in YOLOv5's order.
    - Otherwise NMS is replayed on YOLOv5's order from the first group whose kept set changes, seeded with the
      rows kept before it (in YOLOv5's order; all of them kept whatever their order, as no two kept rows overlap):
      NMS over those followed by YOLOv5's remaining rows (still in descending confidence, which torchvision's
      stable sort keeps) equals NMS over YOLOv5's whole order. The same replay, from the first differing row,
      serves when YOLOv5's set differs from the prefix (tied rows cut differently at ``max_nms``)."""

    def __init__(self, cands: Candidates, confs: Iterable[float], multi_label: bool) -> None:
        import torch

        self.cands = cands
        self.mat, obj = _candidate_matrix(cands, multi_label)
        self.end_to_end = cands.end_to_end
        order = (torch.arange(len(self.mat)) if cands.end_to_end
                 else torch.sort(self.mat[:, 4], descending=True, stable=True)[1][:MAX_NMS])
        self.order, self.sorted = order, self.mat[order]
        self.prefix: dict[float, int] = {}
        self.own_order: dict[float, _OwnOrder] = {}
        for c in confs:
            _check_setting(cands, c, 0.0)
            yolo = _nms_order(self.mat, obj, c, cands.end_to_end, cands.postprocess)
            differs = (yolo != order[: len(yolo)]).nonzero().view(-1)
            if len(differs) == 0:
                self.prefix[c] = len(yolo)
                continue
            own = self.own_order[c] = _OwnOrder(yolo, differs)
            y_rows, y_index = yolo[differs].sort()
            if torch.equal(y_rows, order[differs].sort()[0]):  # the same rows, tied ones in another order
                conf = self.sorted[differs, 4]
                own.tie_spans = sorted((int(differs[conf == v].min()), int(differs[conf == v].max()))
                                       for v in conf.unique())
                own.moved_to = differs[y_index[torch.searchsorted(y_rows, order[differs])]]

    def _first_changed_group(self, own: _OwnOrder, keep: "torch.Tensor", iou: float, agnostic: bool) -> int | None:
        """The start of the first tie group whose kept rows YOLOv5's order changes, or None when none does."""
        import torch

        for lo, hi in own.tie_spans:  # in ascending position
            group = self.mat[own.yolo[lo: hi + 1]]
            seeds = self.sorted[keep[keep < lo]]
            # Only kept rows whose box meets a group row's can suppress it (IoU > threshold >= 0 needs a positive
            # intersection, tested on the same float32 offset boxes the NMS kernel gets); the others change nothing.
            offset = 0 if agnostic else MAX_WH
            a = seeds[:, None, :4] + seeds[:, None, 5:6] * offset
            b = group[None, :, :4] + group[None, :, 5:6] * offset
            meets = ((torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0]) > 0)
                     & (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1]) > 0)).any(1)
            seeds = seeds[meets]
            kept = _nms(torch.cat((seeds, group)), iou, agnostic, self.end_to_end)
            yolo_kept = own.yolo[lo + kept[kept >= len(seeds)] - len(seeds)]
            prefix_kept = self.order[keep[(keep >= lo) & (keep <= hi)]]
            if not torch.equal(yolo_kept.sort()[0], prefix_kept.sort()[0]):
                return lo
        return None

    def detections(self, confs: Sequence[float], iou: float, max_det: int, agnostic: bool,
                   stats: "GridStats | None" = None) -> list[Detections]:
        import torch

        out = []
        keep = _nms(self.sorted, iou, agnostic, self.end_to_end)
        for c in confs:
            own = self.own_order.get(c)
            if own is None:
                rows = self.sorted[keep[keep < self.prefix[c]][:max_det]]
            else:
                start = own.first if own.tie_spans is None else self._first_changed_group(own, keep, iou, agnostic)
                if start is None:
                    rows = self.sorted[own.reorder(keep[keep < len(own.yolo)])[:max_det]]
                    if stats is not None:
                        stats.reordered_settings += 1
                else:
                    seeds = keep[keep < start] if own.tie_spans is None else own.reorder(keep[keep < start])
                    x = torch.cat((self.sorted[seeds], self.mat[own.yolo[start:]]))
                    rows = x[_nms(x, iou, agnostic, self.end_to_end)[:max_det]]
                    if stats is not None:
                        stats.replayed_settings += 1
                        stats.replayed_rows += len(own.yolo) - start
            out.append(_to_detections(self.cands, rows))
        return out


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def _release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Each image's grid work allocates and frees megabytes of tensors while its few detections stay alive between
    them; glibc keeps free pages that lie below live chunks, so over a fold on disk at YOLOv5m6@1280 volume (30,000
    candidates an image) the process grew by about 2 MB an image while it held about 0.15 MB of detections."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@dataclass
class GridStats:
    """How the grid was computed: NMS calls on the loose set (one per image and IoU); image-settings where
    YOLOv5's unstable sort ordered tied confidences differently from the prefix, of which ``reordered_settings``
    only needed the shared result in YOLOv5's order and ``replayed_settings`` ran NMS from the first differing row
    (``replayed_rows`` rows in all, against ``own_order_rows`` that whole NMS calls would have taken)."""

    images: int = 0
    settings: int = 0
    shared_nms_calls: int = 0
    own_order_settings: int = 0
    own_order_rows: int = 0
    reordered_settings: int = 0
    replayed_settings: int = 0
    replayed_rows: int = 0


def grid_detections(cache: Sequence[Candidates], settings: Iterable[tuple[float, float]],
                    max_det: int = DEFAULT_MAX_DET, agnostic: bool = False, multi_label: bool = False,
                    progress: bool = True, stats: GridStats | None = None
                    ) -> Iterator[tuple[float, float, list[Detections]]]:
    """Yield ``(conf, iou, detections of every image)`` for each ``(conf, iou)`` setting, each equal to
    :func:`detections_for_setting` at that setting, with one NMS per image and IoU value (see module docstring).
    Settings are grouped by IoU (in order of first appearance), confidences in the order given."""
    from tqdm.auto import tqdm

    by_iou: dict[float, list[float]] = {}
    for conf, iou in settings:
        conf, iou = float(conf), float(iou)
        if conf not in by_iou.setdefault(iou, []):
            by_iou[iou].append(conf)
    if not by_iou:
        return
    for iou in by_iou:
        if not 0.0 <= iou <= 1.0:
            raise ValueError(f"NMS IoU must be in [0, 1], got {iou}")
    all_confs = sorted({c for cs in by_iou.values() for c in cs})
    # Candidates on disk are prepared again for each IoU (a sort per image) rather than all held at once: memory
    # then holds one image's candidates and one IoU's detections, whatever the size of the fold.
    on_disk = getattr(cache, "on_disk", False)  # read from disk per image (detect.CandidateFiles)
    prepared: Sequence[_GridImage] | None = None
    if not on_disk:
        prepared = [_GridImage(c, all_confs, multi_label)
                    for c in tqdm(cache, desc="prepare grid", unit="img", disable=not progress)]
    if stats is not None:
        stats.images = len(cache)
        stats.settings = sum(len(cs) for cs in by_iou.values())
    bar = tqdm(total=len(by_iou) * len(cache), desc="NMS per IoU", unit="img", disable=not progress)
    for iou, confs in by_iou.items():
        per_conf: list[list[Detections]] = [[] for _ in confs]
        images = prepared if prepared is not None else (_GridImage(c, all_confs, multi_label) for c in cache)
        for img in images:
            for k, dets in enumerate(img.detections(confs, iou, max_det, agnostic, stats)):
                per_conf[k].append(dets)
            if stats is not None:
                stats.shared_nms_calls += 1
                stats.own_order_settings += sum(c in img.own_order for c in confs)
                stats.own_order_rows += sum(len(img.own_order[c].yolo) for c in confs if c in img.own_order)
            if on_disk:
                _release_freed_memory()  # else the fold's freed tensors stay in the process (see the function)
            bar.update(1)
        for conf, dets in zip(confs, per_conf):
            yield conf, iou, dets
    bar.close()
