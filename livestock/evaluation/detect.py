"""Detection with a raw-candidate cache.

The detector runs once per image. What it stores is not the final boxes but the **raw candidates**: every row of
the YOLOv5 head output (centre x, centre y, width, height in network-input pixels, objectness, class
probabilities) whose objectness and best ``obj * cls`` confidence exceed a loose floor (1e-4 by default). Any
NMS setting at or above the floor is then computed from the cache, without the network, and gives **exactly**
what ``yolov5.utils.general.non_max_suppression`` gives on the network's output at that setting:

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
runs NMS on YOLOv5's order for that setting instead. Every setting is thus exact; the equality tests check it.
(The reference is YOLOv5's NMS on the CPU; on a GPU YOLOv5 may order tied confidences differently again.)

Candidates of the Ultralytics engine (``Candidates.postprocess == "ultralytics"``) are replayed with Ultralytics'
rules, which differ from YOLOv5's in two details: its ``non_max_suppression`` sorts the rows itself only when more
than ``max_nms`` pass the confidence filter, and otherwise hands them in row order to ``torchvision.ops.nms``,
whose own sort is stable, so tied confidences keep their row order (the prefix property then holds without
exception); and its ``scale_boxes`` undoes the letterbox with the padding rounded as ``LetterBox`` rounded it
and a gain per axis from the rounded resized size. Filters, the class offset, caps and ``max_det`` are the same.
Neither engine's NMS time limit is replayed (they give up on a batch after a few seconds; the replay never does).

Letterboxing follows YOLOv5's ``detect.py`` (``LoadImages``): BGR decode with ``cv2.imdecode``, ``letterbox``
to ``imgsz`` with the model's stride, a minimal rectangle (``auto``) for PyTorch weights and the exported fixed
shape for ONNX; boxes go back to the original image with ``scale_boxes`` (which clips). Boxes are not rounded
to whole pixels (``detect.py`` rounds for drawing; ``val.py`` does not).

Cache layout: ``<cache_dir>/<weights stem>-<weights sha256[:16]>/imgsz<S>-floor<F>/<image id>.npz``, one file
per image written atomically. Each file also records the weights hash, image size and the SHA-256 of the image
bytes; a file whose key or image no longer matches is ignored and recomputed, so a stale cache is never used.
An interrupted run resumes: cached images are skipped.

Security: ``.pt`` checkpoints are pickles and loading one runs code; load only weights you trust.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence, Union

import numpy as np

from livestock.data.yolo_format import IMAGE_SUFFIXES
from livestock.fileio import atomic_write_bytes
from livestock.model.engine import Candidates, Detector, engine_of_weights, get_engine, parse_device
from livestock.progress import emit
from livestock.records import CLASS_NAMES, Detections, ImageRecord, load_records

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_IMGSZ = 640
DEFAULT_CONF = 0.001  # the original entry's inference setting: conf 0.001, NMS IoU 0.68
DEFAULT_IOU = 0.68
DEFAULT_MAX_DET = 300
DEFAULT_CONF_FLOOR = 1e-4  # the loosest confidence the cache can serve
# Fixed settings inside yolov5.utils.general.non_max_suppression (7.0.x); local variables there, so restated here.
MAX_NMS = 30000
MAX_WH = 7680
WEIGHT_SUFFIXES = (".pt", ".onnx")
CACHE_FORMAT = 2  # 2: boxes / scores / objectness arrays (engine-neutral)

ImageSource = Union[str, Path, ImageRecord]


# ---------------------------------------------------------------- containers


@dataclass(frozen=True)
class _ImageItem:
    image_id: str
    path: Path
    expected_size: tuple[int, int] | None  # (width, height) from a prepared record


# ---------------------------------------------------------------- inputs


def resolve_images(source: str | Path | Sequence[ImageSource]) -> list[_ImageItem]:
    """The images to run on: a folder (its image files, sorted), a ``.txt`` list (one path a line, relative to
    the list's folder), a prepared ``records.jsonl``, one image file, or a sequence of paths / ``ImageRecord``."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            items: Sequence[ImageSource] = files
        elif not path.exists():
            raise FileNotFoundError(f"{path}: image source not found")
        elif path.suffix == ".jsonl":
            items = load_records(path)
        elif path.suffix == ".txt":
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            # Relative entries are taken from the list's folder (YOLOv5's rule), else from the working folder.
            items = [Path(ln) if Path(ln).is_absolute() or not (path.parent / ln).exists() else path.parent / ln
                     for ln in lines]
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            items = [path]
        else:
            raise ValueError(f"{path}: not a folder, image list (.txt), records file (.jsonl) or image")
    else:
        items = list(source)
    if not items:
        raise ValueError(f"{source if isinstance(source, (str, Path)) else 'image list'}: no images to run on")
    out: list[_ImageItem] = []
    seen: dict[str, Path] = {}
    for it in items:
        if isinstance(it, ImageRecord):
            item = _ImageItem(it.image_id, Path(it.image_path), (int(it.width), int(it.height)))
        else:
            p = Path(it)
            item = _ImageItem(p.name, p, None)
        if item.image_id in seen and seen[item.image_id] != item.path:
            raise ValueError(f"{item.path}: image id {item.image_id!r} also names {seen[item.image_id]}")
        seen[item.image_id] = item.path
        out.append(item)
    return out


def _read_image(item: _ImageItem) -> tuple[np.ndarray, str]:
    """BGR pixels decoded as YOLOv5 decodes them (its ``cv2.imread`` is ``imdecode`` of the file bytes) and the
    SHA-256 of those bytes."""
    import cv2

    if not item.path.is_file():
        raise FileNotFoundError(f"{item.path}: image not found")
    data = item.path.read_bytes()
    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if im is None:
        raise ValueError(f"{item.path}: cannot decode image")
    h, w = im.shape[:2]
    if item.expected_size is not None and item.expected_size != (w, h):
        raise ValueError(f"{item.path}: image is {w}x{h} but its record says {item.expected_size[0]}x{item.expected_size[1]}")
    return im, hashlib.sha256(data).hexdigest()


def _image_sha256(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- weights


def weights_sha256(weights: str | Path) -> str:
    """SHA-256 of the weights file, and of an ONNX model's external ``<file>.data`` when there is one."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights not found")
    h = hashlib.sha256()
    for p in (path, Path(str(path) + ".data")):
        if p.is_file():
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def _check_weights(weights: str | Path) -> Path:
    path = Path(weights)
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: weights must be a YOLOv5 checkpoint (.pt) or an exported model (.onnx)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights not found")
    return path.resolve()  # absolute: YOLOv5 would otherwise take a bare name for a Hugging Face repository


# ---------------------------------------------------------------- the cache


def cache_folder(cache_dir: str | Path, weights: str | Path, imgsz: int, conf_floor: float,
                 sha: str | None = None) -> Path:
    """Where the candidates of ``weights`` at ``imgsz`` and ``conf_floor`` lie under ``cache_dir``."""
    sha = sha or weights_sha256(weights)
    return Path(cache_dir) / f"{Path(weights).stem}-{sha[:16]}" / f"imgsz{int(imgsz)}-floor{conf_floor:g}"


def cache_key(sha: str, imgsz: int, conf_floor: float) -> str:
    """The key a cache file must carry to serve weights of SHA-256 ``sha`` at ``imgsz`` and ``conf_floor``."""
    return f"{sha}|imgsz={int(imgsz)}|floor={conf_floor!r}|format={CACHE_FORMAT}"


def save_candidates(cands: Candidates, path: str | Path, key: str = "", image_sha256: str = "") -> Path:
    """One image's candidates as ``.npz`` (boxes, scores, objectness + a JSON header), written atomically."""
    meta = {"format": CACHE_FORMAT, "key": key, "image_sha256": image_sha256, "image_id": cands.image_id,
            "width": cands.width, "height": cands.height, "input_shape": list(cands.input_shape),
            "conf_floor": cands.conf_floor, "end_to_end": cands.end_to_end,
            "has_objectness": cands.objectness is not None, "postprocess": cands.postprocess}
    arrays = {"boxes": np.ascontiguousarray(cands.boxes, dtype=np.float32),
              "scores": np.ascontiguousarray(cands.scores, dtype=np.float32)}
    if cands.objectness is not None:
        arrays["objectness"] = np.ascontiguousarray(cands.objectness, dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def load_candidates(path: str | Path) -> tuple[Candidates, dict]:
    """Read a file written by :func:`save_candidates`; returns the candidates and the header."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != CACHE_FORMAT:
                raise ValueError(f"cache format {meta.get('format')}, expected {CACHE_FORMAT}")
            obj = np.asarray(z["objectness"], dtype=np.float32) if meta["has_objectness"] else None
            cands = Candidates(meta["image_id"], int(meta["width"]), int(meta["height"]),
                               (int(meta["input_shape"][0]), int(meta["input_shape"][1])),
                               np.asarray(z["boxes"], dtype=np.float32), np.asarray(z["scores"], dtype=np.float32),
                               obj, float(meta["conf_floor"]), bool(meta["end_to_end"]),
                               str(meta.get("postprocess", "yolov5")))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable candidate file ({e})") from e
    return cands, meta


def load_detector(weights: str | Path, imgsz: int, device: str = "auto") -> Detector:
    """The detector of the engine that wrote ``weights`` (a checkpoint or an ONNX export) on ``device``."""
    path = _check_weights(weights)
    engine = get_engine(engine_of_weights(path))
    return engine.load_detector(path, imgsz, parse_device(device).torch(), len(CLASS_NAMES))


def cap_candidates(boxes: np.ndarray, scores: np.ndarray, objectness: np.ndarray | None, max_rows: int = MAX_NMS
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The ``max_rows`` rows of highest confidence, in their original (head) order.

    Exact for every setting: NMS at a confidence ``c`` sees at most the ``max_nms`` (30,000) most confident rows
    above ``c``, and since a row's confidence never exceeds its objectness those are always among the 30,000 most
    confident rows overall (multi-label too: a class's confidence never exceeds its row's best). YOLOv5m6 at
    1280 px has 102,000 anchors per image; the cap bounds the cache to 30,000 of them."""
    if len(boxes) <= max_rows:
        return boxes, scores, objectness
    conf = scores if objectness is None else scores * objectness[:, None]
    order = np.argsort(-conf.max(1), kind="stable")[:max_rows]
    keep = np.sort(order)  # head order: the NMS replay depends on it for tied confidences
    return boxes[keep], scores[keep], None if objectness is None else objectness[keep]


def iter_candidates(weights: str | Path, images: str | Path | Sequence[ImageSource], imgsz: int = DEFAULT_IMGSZ,
                    *, conf_floor: float = DEFAULT_CONF_FLOOR, device: str = "auto",
                    cache_dir: str | Path | None = None, batch: int = 1, progress: bool = True
                    ) -> Iterator[Candidates]:
    """Run ``weights`` once on each image and yield its raw candidates above ``conf_floor`` (at most
    :data:`MAX_NMS` rows, see :func:`cap_candidates`), in image order, holding only one batch in memory.

    With ``cache_dir`` each image's candidates are stored on disk and reused by later calls with the same weights
    file (by content), ``imgsz`` and ``conf_floor`` for the same image bytes; the network is not even loaded when
    every image is cached. ``batch`` groups consecutive images of the same letterboxed shape (ONNX models
    exported with a fixed batch of 1 always run one image at a time)."""
    from tqdm.auto import tqdm

    if not 0.0 <= conf_floor < 1.0:
        raise ValueError(f"conf_floor must be in [0, 1), got {conf_floor}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    wpath = _check_weights(weights)
    items = resolve_images(images)
    sha = weights_sha256(wpath)
    key = cache_key(sha, imgsz, conf_floor)
    folder = cache_folder(cache_dir, wpath, imgsz, conf_floor, sha) if cache_dir is not None else None

    detector = None
    pending: list[tuple[int, tuple[int, int], str, np.ndarray]] = []  # (index, (h0, w0), image sha, CHW input)

    def flush() -> Iterator[Candidates]:
        found = detector.candidates(np.stack([p[3] for p in pending]), conf_floor)
        rules = getattr(detector, "postprocess", "yolov5")
        for (i, (h0, w0), img_sha, chw), (boxes, scores, obj, end_to_end) in zip(pending, found):
            cands = Candidates(items[i].image_id, w0, h0, (int(chw.shape[1]), int(chw.shape[2])),
                               *cap_candidates(boxes, scores, obj), float(conf_floor), end_to_end, rules)
            if folder is not None:
                save_candidates(cands, folder / f"{cands.image_id}.npz", key, img_sha)
            yield cands
        pending.clear()

    n_cached = 0
    bar = tqdm(items, desc="detect", unit="img", disable=not progress)
    for i, item in enumerate(bar):
        cached = _load_cached(folder / f"{item.image_id}.npz", key, item) if folder is not None else None
        if cached is not None:
            if pending:  # keep image order: what is waiting for the network comes first
                yield from flush()
            n_cached += 1
            bar.set_postfix(cached=n_cached, refresh=False)  # shown with the next update, not one line per hit
            yield cached
            continue
        if detector is None:
            detector = load_detector(wpath, imgsz, device)
        im0, img_sha = _read_image(item)
        chw = detector.letterbox(im0)
        limit = min(batch, detector.max_batch or batch)
        if pending and (pending[0][3].shape != chw.shape or len(pending) >= limit):
            yield from flush()
        pending.append((i, im0.shape[:2], img_sha, chw))
        if len(pending) >= limit:
            yield from flush()
        if i % 50 == 0 or i == len(items) - 1:
            emit("images", task="detect", done=i + 1, total=len(items))
    if pending:
        yield from flush()


class CandidateFiles(Sequence[Candidates]):
    """Candidates that stay on disk (one ``.npz`` per image, see :func:`save_candidates`) and are read one at a time,
    so a whole validation fold at YOLOv5m6@1280 volume never sits in memory at once."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def image_ids(self) -> list[str]:
        """The image ids, from the file names (without reading the files)."""
        return [p.name[: -len(".npz")] for p in self.paths]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return CandidateFiles(self.paths[i])
        return load_candidates(self.paths[i])[0]


def collect_candidates(weights: str | Path, images: str | Path | Sequence[ImageSource], imgsz: int = DEFAULT_IMGSZ,
                       *, conf_floor: float = DEFAULT_CONF_FLOOR, device: str = "auto",
                       cache_dir: str | Path | None = None, batch: int = 1, progress: bool = True,
                       in_memory: bool = True) -> Sequence[Candidates]:
    """Every image's candidates (:func:`iter_candidates`), in image order: held in memory, or with ``in_memory``
    False and a ``cache_dir``, as :class:`CandidateFiles` read from the cache when used."""
    if in_memory or cache_dir is None:
        return list(iter_candidates(weights, images, imgsz, conf_floor=conf_floor, device=device,
                                    cache_dir=cache_dir, batch=batch, progress=progress))
    folder = cache_folder(cache_dir, weights, imgsz, conf_floor)
    ids = [c.image_id for c in iter_candidates(weights, images, imgsz, conf_floor=conf_floor, device=device,
                                               cache_dir=cache_dir, batch=batch, progress=progress)]
    return CandidateFiles([folder / f"{image_id}.npz" for image_id in ids])


def _load_cached(path: Path, key: str, item: _ImageItem) -> Candidates | None:
    """The cached candidates of ``item`` when the file exists and matches key, image id and image bytes."""
    if not path.is_file():
        return None
    try:
        cands, meta = load_candidates(path)
    except ValueError:
        return None  # unreadable (e.g. written by something else): recompute and overwrite
    if meta.get("key") != key or cands.image_id != item.image_id:
        return None
    if meta.get("image_sha256") != _image_sha256(item.path):
        return None
    if item.expected_size is not None and item.expected_size != (cands.width, cands.height):
        raise ValueError(f"{item.path}: image is {cands.width}x{cands.height} but its record says "
                         f"{item.expected_size[0]}x{item.expected_size[1]}")
    return cands


# ---------------------------------------------------------------- NMS from candidates


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
    return Detections(cands.image_id, cands.width, cands.height, boxes.double().numpy(),
                      rows[:, 4].double().numpy(), rows[:, 5].long().numpy())


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


class _GridImage:
    """One image prepared for many settings: the loose rows sorted once (stable, so ties keep YOLOv5's row
    order), cut at max_nms, and for each confidence either the prefix length (YOLOv5's order equals the prefix)
    or YOLOv5's own order (ties came out differently)."""

    def __init__(self, cands: Candidates, confs: Iterable[float], multi_label: bool) -> None:
        import torch

        self.cands = cands
        mat, obj = _candidate_matrix(cands, multi_label)
        self.end_to_end = cands.end_to_end
        order = (torch.arange(len(mat)) if cands.end_to_end
                 else torch.sort(mat[:, 4], descending=True, stable=True)[1][:MAX_NMS])
        self.sorted = mat[order]
        self.prefix: dict[float, int] = {}
        self.own_order: dict[float, torch.Tensor] = {}  # conf -> rows in YOLOv5's order, where not the prefix
        for c in confs:
            _check_setting(cands, c, 0.0)
            yolo = _nms_order(mat, obj, c, cands.end_to_end, cands.postprocess)
            if torch.equal(yolo, order[: len(yolo)]):
                self.prefix[c] = len(yolo)
            else:
                self.own_order[c] = mat[yolo]

    def detections(self, confs: Sequence[float], iou: float, max_det: int, agnostic: bool) -> list[Detections]:
        out = []
        keep = _nms(self.sorted, iou, agnostic, self.end_to_end) if any(c in self.prefix for c in confs) else None
        for c in confs:
            if c in self.prefix:
                k = keep[keep < self.prefix[c]][:max_det]  # type: ignore[index]
                rows = self.sorted[k]
            else:
                x = self.own_order[c]
                rows = x[_nms(x, iou, agnostic, self.end_to_end)[:max_det]]
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
    """How the grid was computed: NMS calls on the loose set (one per image and IoU) and settings that had to
    run their own NMS because YOLOv5's unstable sort ordered tied confidences differently from the prefix."""

    images: int = 0
    settings: int = 0
    shared_nms_calls: int = 0
    own_order_settings: int = 0


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
    on_disk = isinstance(cache, CandidateFiles)
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
            for k, dets in enumerate(img.detections(confs, iou, max_det, agnostic)):
                per_conf[k].append(dets)
            if stats is not None:
                stats.shared_nms_calls += any(c in img.prefix for c in confs)
                stats.own_order_settings += sum(c in img.own_order for c in confs)
            if on_disk:
                _release_freed_memory()  # else the fold's freed tensors stay in the process (see the function)
            bar.update(1)
        for conf, dets in zip(confs, per_conf):
            yield conf, iou, dets
    bar.close()


# ---------------------------------------------------------------- one call


def detect(weights: str | Path, images: str | Path | Sequence[ImageSource], imgsz: int = DEFAULT_IMGSZ,
           conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU, *, max_det: int = DEFAULT_MAX_DET,
           agnostic: bool = False, multi_label: bool = False, device: str = "auto",
           cache_dir: str | Path | None = None, batch: int = 1, conf_floor: float | None = None,
           progress: bool = True) -> list[Detections]:
    """Detections of ``weights`` on ``images`` at one NMS setting (pixel corners of the original images, each
    image's boxes highest confidence first), as YOLOv5 would give them. Candidates are collected at
    ``conf_floor`` (default: ``conf`` itself), cached under ``cache_dir`` when given, and dropped once each image's
    NMS is done, so memory holds detections only."""
    floor = conf if conf_floor is None else conf_floor
    return [nms_from_candidates(c, conf, iou, max_det, agnostic, multi_label)
            for c in iter_candidates(weights, images, imgsz, conf_floor=floor, device=device, cache_dir=cache_dir,
                                     batch=batch, progress=progress)]


# ---------------------------------------------------------------- CLI: livestock detect


def add_detector_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``detect`` and ``tune``: the model, the input size, the device and the cache."""
    parser.add_argument("--weights", required=True, help="YOLOv5 .pt checkpoint (only files you trust) or .onnx")
    parser.add_argument("--imgsz", type=int, default=DEFAULT_IMGSZ, help="inference size in pixels (640)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or N (auto)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward pass (1)")
    parser.add_argument("--cache-dir", default="runs/cache",
                        help="raw-candidate cache folder (runs/cache); 'none' to keep nothing on disk")
    parser.add_argument("--conf-floor", type=float, default=DEFAULT_CONF_FLOOR,
                        help="loosest confidence the cache keeps (1e-4)")
    parser.add_argument("--max-det", type=int, default=DEFAULT_MAX_DET, help="detections kept per image (300)")
    parser.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--multi-label", action="store_true", help="one detection per class above conf per box")


def cache_dir_arg(value: str) -> str | None:
    """``--cache-dir`` as a folder, or None for ``none`` / empty (keep nothing on disk)."""
    return None if value.strip().lower() in ("", "none") else value


def cli_detect_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock detect`` to ``parser``."""
    parser.add_argument("--source", required=True,
                        help="images: a folder, a .txt list, a prepared records.jsonl, or one image")
    add_detector_args(parser)
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF, help="confidence threshold (0.001)")
    parser.add_argument("--iou", type=float, default=DEFAULT_IOU, help="NMS IoU threshold (0.68)")
    parser.add_argument("--out", default="runs/detect/detections.csv", help="detections CSV (pixel corners)")


def cli_detect(args: argparse.Namespace) -> int:
    """Run ``livestock detect`` with parsed ``args``; returns the exit code."""
    from livestock.evaluation.submission import save_detections

    floor = min(args.conf_floor, args.conf)
    dets = detect(args.weights, args.source, args.imgsz, args.conf, args.iou, max_det=args.max_det,
                  agnostic=args.agnostic, multi_label=args.multi_label, device=args.device,
                  cache_dir=cache_dir_arg(args.cache_dir), batch=args.batch, conf_floor=floor)
    out = save_detections(dets, args.out)
    print(f"{len(dets)} images, {sum(len(d) for d in dets)} detections (conf {args.conf:g}, NMS IoU {args.iou:g}) "
          f"-> {out}")
    return 0
