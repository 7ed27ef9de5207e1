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
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence, Union

import numpy as np

from livestock.records import CLASS_NAMES, Detections, ImageRecord, atomic_write_bytes, load_records

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
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
WEIGHT_SUFFIXES = (".pt", ".onnx")
CACHE_FORMAT = 1

ImageSource = Union[str, Path, ImageRecord]


# ---------------------------------------------------------------- containers


@dataclass(frozen=True)
class Candidates:
    """The raw head output of one image above the confidence floor.

    ``rows``: ``(n, 5 + nc)`` float32, in the head's anchor order: centre x, centre y, width, height (pixels of
    the letterboxed network input of shape ``input_shape`` = (height, width)), objectness, class probabilities.
    ``width`` / ``height``: the original image, where the detections are reported."""

    image_id: str
    width: int
    height: int
    input_shape: tuple[int, int]
    rows: np.ndarray
    conf_floor: float

    @property
    def n_classes(self) -> int:
        return int(self.rows.shape[1]) - 5

    def __len__(self) -> int:
        return int(self.rows.shape[0])


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


def select_device(device: str = "auto") -> "torch.device":
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or a bare GPU index ``N``."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device.isdigit():
        device = f"cuda:{device}"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    return dev


class _Detector:
    """A YOLOv5 model behind ``DetectMultiBackend`` (PyTorch ``.pt`` or ONNX Runtime ``.onnx``) with the
    letterbox settings ``detect.py`` would use for it."""

    def __init__(self, weights: Path, imgsz: int, device: str) -> None:
        from livestock.model.yolov5_engine import ensure_yolov5

        ensure_yolov5()
        import torch
        from yolov5.models.common import DetectMultiBackend
        from yolov5.utils.general import check_img_size

        self.device = select_device(device)
        if weights.suffix.lower() == ".onnx":
            from livestock.model.onnx_file import load_onnx

            load_onnx(weights)  # a truncated or foreign file: an error naming it, before ONNX Runtime's own
        self.model = DetectMultiBackend(str(weights), device=self.device, fp16=False)
        if self.model.onnx:
            # An FP16 export wants FP16 input; DetectMultiBackend casts the input when its fp16 flag is set.
            self.model.fp16 = self.model.session.get_inputs()[0].type == "tensor(float16)"
        self.stride = int(self.model.stride)
        self.pt = bool(self.model.pt)
        names = self.model.names
        self.n_classes = len(names)
        if self.n_classes != len(CLASS_NAMES):
            raise ValueError(f"{weights}: the model predicts {self.n_classes} classes, expected {len(CLASS_NAMES)} "
                             f"{CLASS_NAMES}")
        self.max_batch: int | None = None
        if self.pt:
            self.imgsz: tuple[int, int] = tuple(check_img_size([imgsz, imgsz], s=self.stride))  # type: ignore
            self.auto = True  # minimal rectangle, as detect.py does for PyTorch weights
        else:
            shape = self.model.session.get_inputs()[0].shape  # [batch, 3, height, width], ints when fixed
            b, h, w = shape[0], shape[2], shape[3]
            self.max_batch = b if isinstance(b, int) else None
            if isinstance(h, int) and isinstance(w, int):
                if (h, w) != (imgsz, imgsz):
                    raise ValueError(f"{weights}: exported for input {w}x{h}, asked for --imgsz {imgsz}")
                self.imgsz = (h, w)
            else:
                self.imgsz = tuple(check_img_size([imgsz, imgsz], s=self.stride))  # type: ignore
            self.auto = False  # fixed-shape input, as detect.py does for exported models
        self._torch = torch

    def letterbox(self, im: np.ndarray) -> np.ndarray:
        from yolov5.utils.augmentations import letterbox

        out = letterbox(im, self.imgsz, stride=self.stride, auto=self.auto)[0]
        return np.ascontiguousarray(out.transpose((2, 0, 1))[::-1])  # HWC BGR -> CHW RGB

    def raw(self, batch: np.ndarray) -> "torch.Tensor":
        """Head output ``(b, anchors, 5 + nc)`` in float32 on the CPU, for uint8 CHW input ``(b, 3, h, w)``."""
        torch = self._torch
        with torch.inference_mode():
            im = torch.from_numpy(batch).to(self.model.device)
            im = im.half() if self.model.fp16 else im.float()
            im /= 255
            pred = self.model(im)
        if isinstance(pred, (list, tuple)):
            pred = pred[0]
        if pred.shape[-1] != 5 + self.n_classes:
            raise ValueError(f"unexpected head output of shape {tuple(pred.shape)} (a segmentation model?)")
        return pred.float().cpu()


# ---------------------------------------------------------------- the cache


def cache_folder(cache_dir: str | Path, weights: str | Path, imgsz: int, conf_floor: float,
                 sha: str | None = None) -> Path:
    """Where the candidates of ``weights`` at ``imgsz`` and ``conf_floor`` lie under ``cache_dir``."""
    sha = sha or weights_sha256(weights)
    return Path(cache_dir) / f"{Path(weights).stem}-{sha[:16]}" / f"imgsz{int(imgsz)}-floor{conf_floor:g}"


def _cache_key(sha: str, imgsz: int, conf_floor: float) -> str:
    return f"{sha}|imgsz={int(imgsz)}|floor={conf_floor!r}|format={CACHE_FORMAT}"


def save_candidates(cands: Candidates, path: str | Path, key: str = "", image_sha256: str = "") -> Path:
    """One image's candidates as ``.npz`` (rows + a JSON header), written atomically."""
    meta = {"format": CACHE_FORMAT, "key": key, "image_sha256": image_sha256, "image_id": cands.image_id,
            "width": cands.width, "height": cands.height, "input_shape": list(cands.input_shape),
            "conf_floor": cands.conf_floor}
    buf = io.BytesIO()
    np.savez(buf, rows=np.ascontiguousarray(cands.rows, dtype=np.float32), meta=np.array(json.dumps(meta)))
    return atomic_write_bytes(path, buf.getvalue())


def load_candidates(path: str | Path) -> tuple[Candidates, dict]:
    """Read a file written by :func:`save_candidates`; returns the candidates and the header."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            rows = np.asarray(z["rows"], dtype=np.float32)
        cands = Candidates(meta["image_id"], int(meta["width"]), int(meta["height"]),
                           (int(meta["input_shape"][0]), int(meta["input_shape"][1])), rows,
                           float(meta["conf_floor"]))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable candidate file ({e})") from e
    if rows.ndim != 2 or rows.shape[1] < 6:
        raise ValueError(f"{path}: candidate rows have shape {rows.shape}, expected (n, 5 + classes)")
    return cands, meta


def _filter_rows(pred: "torch.Tensor", conf_floor: float) -> np.ndarray:
    # Same float32 arithmetic and comparisons as non_max_suppression: obj > floor, then obj * cls > floor.
    obj = pred[:, 4]
    best = (pred[:, 5:] * pred[:, 4:5]).max(1).values
    return pred[(obj > conf_floor) & (best > conf_floor)].numpy().astype(np.float32, copy=True)


def collect_candidates(weights: str | Path, images: str | Path | Sequence[ImageSource], imgsz: int = DEFAULT_IMGSZ,
                       *, conf_floor: float = DEFAULT_CONF_FLOOR, device: str = "auto",
                       cache_dir: str | Path | None = None, batch: int = 1, progress: bool = True
                       ) -> list[Candidates]:
    """Run ``weights`` once on each image and return its raw candidates above ``conf_floor``, in image order.

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
    key = _cache_key(sha, imgsz, conf_floor)
    folder = cache_folder(cache_dir, wpath, imgsz, conf_floor, sha) if cache_dir is not None else None

    results: list[Candidates | None] = [None] * len(items)
    detector: _Detector | None = None
    pending: list[tuple[int, tuple[int, int], str, np.ndarray]] = []  # (index, (h0, w0), image sha, CHW input)

    def flush() -> None:
        if not pending:
            return
        pred = detector.raw(np.stack([p[3] for p in pending]))  # type: ignore[union-attr]
        for k, (i, (h0, w0), img_sha, chw) in enumerate(pending):
            cands = Candidates(items[i].image_id, w0, h0, (int(chw.shape[1]), int(chw.shape[2])),
                               _filter_rows(pred[k], conf_floor), float(conf_floor))
            if folder is not None:
                save_candidates(cands, folder / f"{cands.image_id}.npz", key, img_sha)
            results[i] = cands
        pending.clear()

    n_cached = 0
    bar = tqdm(items, desc="detect", unit="img", disable=not progress)
    for i, item in enumerate(bar):
        if folder is not None:
            cached = _load_cached(folder / f"{item.image_id}.npz", key, item)
            if cached is not None:
                results[i] = cached
                n_cached += 1
                bar.set_postfix(cached=n_cached, refresh=False)  # shown with the next update, not one line per hit
                continue
        if detector is None:
            detector = _Detector(wpath, imgsz, device)
        im0, img_sha = _read_image(item)
        chw = detector.letterbox(im0)
        limit = min(batch, detector.max_batch or batch)
        if pending and (pending[0][3].shape != chw.shape or len(pending) >= limit):
            flush()
        pending.append((i, im0.shape[:2], img_sha, chw))
        if len(pending) >= limit:
            flush()
    flush()
    return [r for r in results if r is not None]


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
    """YOLOv5's detections matrix ``(m, 6)`` [x1, y1, x2, y2, conf, cls] over all cached rows, in the row order
    non_max_suppression builds it (anchor order; multi-label: (anchor, class) row-major), and each row's
    objectness. At a setting ``conf`` YOLOv5 works on the rows with ``obj > conf`` and ``conf > conf``, in
    this order."""
    import torch
    from yolov5.utils.general import xywh2xyxy

    x = torch.from_numpy(np.ascontiguousarray(cands.rows, dtype=np.float32)).clone()
    nc = x.shape[1] - 5
    obj = x[:, 4].clone()
    x[:, 5:] *= x[:, 4:5]  # conf = obj_conf * cls_conf
    box = xywh2xyxy(x[:, :4])
    if multi_label and nc > 1:
        i, j = (x[:, 5:] > cands.conf_floor).nonzero(as_tuple=False).T
        return torch.cat((box[i], x[i, 5 + j, None], j[:, None].float()), 1), obj[i]
    conf, j = x[:, 5:].max(1, keepdim=True)
    return torch.cat((box, conf, j.float()), 1), obj


def _yolov5_order(mat: "torch.Tensor", obj: "torch.Tensor", conf: float) -> "torch.Tensor":
    """Indices into ``mat`` of the rows YOLOv5 passes to NMS at ``conf``, in its order: the rows it keeps,
    sorted with its own (unstable) ``argsort(descending=True)`` on the very same values, cut at ``max_nms``."""
    sel = ((obj > conf) & (mat[:, 4] > conf)).nonzero(as_tuple=False).view(-1)
    x = mat[sel]
    return sel[x[:, 4].argsort(descending=True)[:MAX_NMS]]


def _nms(rows: "torch.Tensor", iou: float, agnostic: bool) -> "torch.Tensor":
    import torchvision

    c = rows[:, 5:6] * (0 if agnostic else MAX_WH)  # class offset: batched NMS as YOLOv5 does it
    return torchvision.ops.nms(rows[:, :4] + c, rows[:, 4], iou)


def _to_detections(cands: Candidates, rows: "torch.Tensor") -> Detections:
    from yolov5.utils.general import scale_boxes

    boxes = scale_boxes(cands.input_shape, rows[:, :4].clone(), (cands.height, cands.width))
    return Detections(cands.image_id, cands.width, cands.height, boxes.double().numpy(),
                      rows[:, 4].double().numpy(), rows[:, 5].long().numpy())


def nms_from_candidates(cands: Candidates, conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU,
                        max_det: int = DEFAULT_MAX_DET, agnostic: bool = False, multi_label: bool = False
                        ) -> Detections:
    """The detections YOLOv5's ``non_max_suppression(pred, conf, iou, agnostic=..., multi_label=...,
    max_det=...)`` gives for this image, scaled back to the original image (pixel corners, clipped)."""
    from livestock.model.yolov5_engine import ensure_yolov5

    ensure_yolov5()
    _check_setting(cands, conf, iou)
    mat, obj = _candidate_matrix(cands, multi_label)
    x = mat[_yolov5_order(mat, obj, conf)]
    keep = _nms(x, iou, agnostic)[:max_det]
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
        order = torch.sort(mat[:, 4], descending=True, stable=True)[1][:MAX_NMS]
        self.sorted = mat[order]
        self.prefix: dict[float, int] = {}
        self.own_order: dict[float, torch.Tensor] = {}  # conf -> rows in YOLOv5's order, where not the prefix
        for c in confs:
            _check_setting(cands, c, 0.0)
            yolo = _yolov5_order(mat, obj, c)
            if torch.equal(yolo, order[: len(yolo)]):
                self.prefix[c] = len(yolo)
            else:
                self.own_order[c] = mat[yolo]

    def detections(self, confs: Sequence[float], iou: float, max_det: int, agnostic: bool) -> list[Detections]:
        out = []
        keep = _nms(self.sorted, iou, agnostic) if any(c in self.prefix for c in confs) else None
        for c in confs:
            if c in self.prefix:
                k = keep[keep < self.prefix[c]][:max_det]  # type: ignore[index]
                rows = self.sorted[k]
            else:
                x = self.own_order[c]
                rows = x[_nms(x, iou, agnostic)[:max_det]]
            out.append(_to_detections(self.cands, rows))
        return out


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
    from livestock.model.yolov5_engine import ensure_yolov5
    from tqdm.auto import tqdm

    ensure_yolov5()
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
    prepared = [_GridImage(c, all_confs, multi_label)
                for c in tqdm(cache, desc="prepare grid", unit="img", disable=not progress)]
    if stats is not None:
        stats.images = len(prepared)
        stats.settings = sum(len(cs) for cs in by_iou.values())
    bar = tqdm(total=len(by_iou) * len(prepared), desc="NMS per IoU", unit="img", disable=not progress)
    for iou, confs in by_iou.items():
        per_conf: list[list[Detections]] = [[] for _ in confs]
        for img in prepared:
            for k, dets in enumerate(img.detections(confs, iou, max_det, agnostic)):
                per_conf[k].append(dets)
            if stats is not None:
                stats.shared_nms_calls += any(c in img.prefix for c in confs)
                stats.own_order_settings += sum(c in img.own_order for c in confs)
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
    ``conf_floor`` (default ``min(1e-4, conf)``) and cached under ``cache_dir`` when given, so another setting
    later costs no network pass."""
    floor = min(DEFAULT_CONF_FLOOR, conf) if conf_floor is None else conf_floor
    cache = collect_candidates(weights, images, imgsz, conf_floor=floor, device=device, cache_dir=cache_dir,
                               batch=batch, progress=progress)
    return detections_for_setting(cache, conf, iou, max_det, agnostic, multi_label)


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
    return None if value.strip().lower() in ("", "none") else value


def cli_detect_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True,
                        help="images: a folder, a .txt list, a prepared records.jsonl, or one image")
    add_detector_args(parser)
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF, help="confidence threshold (0.001)")
    parser.add_argument("--iou", type=float, default=DEFAULT_IOU, help="NMS IoU threshold (0.68)")
    parser.add_argument("--out", default="runs/detect/detections.csv", help="detections CSV (pixel corners)")


def cli_detect(args: argparse.Namespace) -> int:
    from livestock.evaluation.submission import save_detections

    floor = min(args.conf_floor, args.conf)
    dets = detect(args.weights, args.source, args.imgsz, args.conf, args.iou, max_det=args.max_det,
                  agnostic=args.agnostic, multi_label=args.multi_label, device=args.device,
                  cache_dir=cache_dir_arg(args.cache_dir), batch=args.batch, conf_floor=floor)
    out = save_detections(dets, args.out)
    print(f"{len(dets)} images, {sum(len(d) for d in dets)} detections (conf {args.conf:g}, NMS IoU {args.iou:g}) "
          f"-> {out}")
    return 0
