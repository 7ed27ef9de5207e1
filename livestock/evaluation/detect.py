"""Detection with a raw-candidate cache.

The detector runs once per image. What it stores is not the final boxes but the **raw candidates**: every row of
the YOLOv5 head output (centre x, centre y, width, height in network-input pixels, objectness, class
probabilities; the engine's equivalent for heads without objectness or with an end-to-end output) whose
objectness and best ``obj * cls`` confidence exceed a loose floor (1e-4 by default). Any NMS setting at or above
the floor is then computed from the cache, without the network, and gives **exactly** what the engine's own NMS
gives on the network's output at that setting (:mod:`livestock.evaluation.nms_replay`).

Letterboxing follows YOLOv5's ``detect.py`` (``LoadImages``): BGR decode with ``cv2.imdecode``, ``letterbox``
to ``imgsz`` with the model's stride, a minimal rectangle (``auto``) for PyTorch weights and the exported fixed
shape for ONNX; boxes go back to the original image with ``scale_boxes`` (which clips). Boxes are not rounded
to whole pixels (``detect.py`` rounds for drawing; ``val.py`` does not).

With ``tta`` the detector runs the engine's augmented forward (test-time augmentation: three scaled views, one
flipped, see :mod:`livestock.model.engine`) instead. Its rows are candidates like any others, each labelled with
its view, capped per view, and stored in a cache of their own: NMS over all of them equals the engine's own
augmented inference, and each view's rows alone equal that view's pass (:mod:`livestock.evaluation.fusion`).

Cache layout: ``<cache_dir>/<weights stem>-<weights sha256[:16]>/imgsz<S>-floor<F>[-tta]/<image id>.npz``, one file
per image written atomically. Each file also records the weights hash, image size, TTA and the SHA-256 of the image
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
from typing import Iterator, Sequence, Union

import numpy as np

from livestock.data.yolo_format import IMAGE_SUFFIXES
from livestock.fileio import atomic_write_bytes, file_sha256
from livestock.evaluation.fusion import FUSIONS, check_fusion, detections_at, setting_name
from livestock.evaluation.nms_replay import DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET, MAX_NMS
from livestock.model.engine import Candidates, Detector, engine_of_weights, get_engine, parse_device
from livestock.progress import emit
from livestock.records import CLASS_NAMES, Detections, ImageRecord, load_records

DEFAULT_IMGSZ = 640
DEFAULT_CONF_FLOOR = 1e-4  # the loosest confidence the cache can serve
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
    # Every image is read sooner or later (a cached one too, to check its bytes): a missing one fails now, before
    # the model loads and the images before it are run.
    missing = [item.path for item in out if not item.path.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        if isinstance(source, (str, Path)) and Path(source).suffix in (".txt", ".jsonl"):
            raise FileNotFoundError(f"{source}: names a missing image {missing[0]}{more}")
        raise FileNotFoundError(f"{missing[0]}: image not found{more}")
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
        raise ValueError(f"{item.path}: image is {w}x{h} but its record says "
                         f"{item.expected_size[0]}x{item.expected_size[1]}")
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
    return file_sha256(*(p for p in (path, Path(str(path) + ".data")) if p.is_file()))


def _check_weights(weights: str | Path) -> Path:
    path = Path(weights)
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: weights must be a YOLOv5 checkpoint (.pt) or an exported model (.onnx)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights not found")
    return path.resolve()  # absolute: YOLOv5 would otherwise take a bare name for a Hugging Face repository


# ---------------------------------------------------------------- the cache


def cache_folder(cache_dir: str | Path, weights: str | Path, imgsz: int, conf_floor: float,
                 sha: str | None = None, tta: bool = False) -> Path:
    """Where the candidates of ``weights`` at ``imgsz`` and ``conf_floor`` (augmented with ``tta``) lie under
    ``cache_dir``."""
    sha = sha or weights_sha256(weights)
    return (Path(cache_dir) / f"{Path(weights).stem}-{sha[:16]}"
            / f"imgsz{int(imgsz)}-floor{conf_floor:g}{'-tta' if tta else ''}")


def cache_key(sha: str, imgsz: int, conf_floor: float, tta: bool = False) -> str:
    """The key a cache file must carry to serve weights of SHA-256 ``sha`` at ``imgsz`` and ``conf_floor``, with or
    without ``tta`` (one-pass keys are those of caches written before TTA existed, which stay valid)."""
    return f"{sha}|imgsz={int(imgsz)}|floor={conf_floor!r}|format={CACHE_FORMAT}{'|tta' if tta else ''}"


def save_candidates(cands: Candidates, path: str | Path, key: str = "", image_sha256: str = "") -> Path:
    """One image's candidates as ``.npz`` (boxes, scores, objectness, TTA views + a JSON header), written
    atomically."""
    meta = {"format": CACHE_FORMAT, "key": key, "image_sha256": image_sha256, "image_id": cands.image_id,
            "width": cands.width, "height": cands.height, "input_shape": list(cands.input_shape),
            "conf_floor": cands.conf_floor, "end_to_end": cands.end_to_end,
            "has_objectness": cands.objectness is not None, "postprocess": cands.postprocess,
            "n_views": cands.n_views}
    arrays = {"boxes": np.ascontiguousarray(cands.boxes, dtype=np.float32),
              "scores": np.ascontiguousarray(cands.scores, dtype=np.float32)}
    if cands.objectness is not None:
        arrays["objectness"] = np.ascontiguousarray(cands.objectness, dtype=np.float32)
    if cands.views is not None:
        arrays["views"] = np.ascontiguousarray(cands.views, dtype=np.int8)
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
            n_views = int(meta.get("n_views", 1))  # files from before TTA hold one pass
            cands = Candidates(meta["image_id"], int(meta["width"]), int(meta["height"]),
                               (int(meta["input_shape"][0]), int(meta["input_shape"][1])),
                               np.asarray(z["boxes"], dtype=np.float32), np.asarray(z["scores"], dtype=np.float32),
                               obj, float(meta["conf_floor"]), bool(meta["end_to_end"]),
                               str(meta.get("postprocess", "yolov5")),
                               np.asarray(z["views"], dtype=np.int8) if n_views > 1 else None, n_views)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable candidate file ({e})") from e
    return cands, meta


def load_detector(weights: str | Path, imgsz: int, device: str = "auto", tta: bool = False) -> Detector:
    """The detector of the engine that wrote ``weights`` (a checkpoint or an ONNX export) on ``device``; with
    ``tta``, its augmented forward (refused with one line where the engine has none for these weights)."""
    path = _check_weights(weights)
    engine = get_engine(engine_of_weights(path))
    return engine.load_detector(path, imgsz, parse_device(device).torch(), len(CLASS_NAMES), augment=tta)


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


def cap_views(boxes: np.ndarray, scores: np.ndarray, objectness: np.ndarray | None, views: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """:func:`cap_candidates` applied to each TTA view's rows alone (to all rows without views), in row order.

    Exact for NMS over every view's rows and for each view's own NMS: a row among the ``max_nms`` most confident of
    all views is among the ``max_nms`` most confident of its own view, and each view's own NMS needs no more."""
    if views is None:
        return (*cap_candidates(boxes, scores, objectness), None)
    if len(boxes) <= MAX_NMS:  # no view holds more rows than the cap
        return boxes, scores, objectness, views
    parts = [(k, cap_candidates(boxes[views == k], scores[views == k],
                                None if objectness is None else objectness[views == k]))
             for k in np.unique(views)]  # views are contiguous and ascending: concatenating keeps the row order
    return (np.concatenate([b for _k, (b, _s, _o) in parts]), np.concatenate([s for _k, (_b, s, _o) in parts]),
            None if objectness is None else np.concatenate([o for _k, (_b, _s, o) in parts]),
            np.concatenate([np.full(len(b), k, np.int8) for k, (b, _s, _o) in parts]))


def iter_candidates(weights: str | Path, images: str | Path | Sequence[ImageSource], imgsz: int = DEFAULT_IMGSZ,
                    *, conf_floor: float = DEFAULT_CONF_FLOOR, device: str = "auto",
                    cache_dir: str | Path | None = None, batch: int = 1, progress: bool = True, tta: bool = False
                    ) -> Iterator[Candidates]:
    """Run ``weights`` once on each image and yield its raw candidates above ``conf_floor`` (at most
    :data:`MAX_NMS` rows, see :func:`cap_candidates`), in image order, holding only one batch in memory.

    With ``cache_dir`` each image's candidates are stored on disk and reused by later calls with the same weights
    file (by content), ``imgsz``, ``conf_floor`` and ``tta`` for the same image bytes; the network is not even
    loaded when every image is cached. ``batch`` groups consecutive images of the same letterboxed shape (ONNX
    models exported with a fixed batch of 1 always run one image at a time). ``tta``: the engine's augmented
    forward, each row labelled with its view and at most :data:`MAX_NMS` rows a view (see :func:`cap_views`)."""
    from tqdm.auto import tqdm

    if not 0.0 <= conf_floor < 1.0:
        raise ValueError(f"conf_floor must be in [0, 1), got {conf_floor}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    wpath = _check_weights(weights)
    items = resolve_images(images)
    sha = weights_sha256(wpath)
    key = cache_key(sha, imgsz, conf_floor, tta)
    folder = cache_folder(cache_dir, wpath, imgsz, conf_floor, sha, tta) if cache_dir is not None else None

    detector = None
    pending: list[tuple[int, tuple[int, int], str, np.ndarray]] = []  # (index, (h0, w0), image sha, CHW input)

    def flush() -> Iterator[Candidates]:
        found = detector.candidates(np.stack([p[3] for p in pending]), conf_floor)
        rules = getattr(detector, "postprocess", "yolov5")
        for (i, (h0, w0), img_sha, chw), (boxes, scores, obj, end_to_end, views) in zip(pending, found):
            boxes, scores, obj, views = cap_views(boxes, scores, obj, views)
            cands = Candidates(items[i].image_id, w0, h0, (int(chw.shape[1]), int(chw.shape[2])), boxes, scores,
                               obj, float(conf_floor), end_to_end, rules, views, detector.n_views)
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
            detector = load_detector(wpath, imgsz, device, tta=tta)
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

    on_disk = True  # grid_detections then prepares each image again per IoU instead of holding them all

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
                       in_memory: bool = True, tta: bool = False) -> Sequence[Candidates]:
    """Every image's candidates (:func:`iter_candidates`, augmented with ``tta``), in image order: held in memory,
    or with ``in_memory`` False and a ``cache_dir``, as :class:`CandidateFiles` read from the cache when used."""
    if in_memory or cache_dir is None:
        return list(iter_candidates(weights, images, imgsz, conf_floor=conf_floor, device=device,
                                    cache_dir=cache_dir, batch=batch, progress=progress, tta=tta))
    folder = cache_folder(cache_dir, weights, imgsz, conf_floor, tta=tta)
    ids = [c.image_id for c in iter_candidates(weights, images, imgsz, conf_floor=conf_floor, device=device,
                                               cache_dir=cache_dir, batch=batch, progress=progress, tta=tta)]
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


# ---------------------------------------------------------------- one call


def detect(weights: str | Path, images: str | Path | Sequence[ImageSource], imgsz: int = DEFAULT_IMGSZ,
           conf: float = DEFAULT_CONF, iou: float = DEFAULT_IOU, *, max_det: int = DEFAULT_MAX_DET,
           agnostic: bool = False, multi_label: bool = False, device: str = "auto",
           cache_dir: str | Path | None = None, batch: int = 1, conf_floor: float | None = None,
           progress: bool = True, tta: bool = False, fusion: str = "nms") -> list[Detections]:
    """Detections of ``weights`` on ``images`` at one setting (pixel corners of the original images, each
    image's boxes highest confidence first), as the engine would give them: one pass, or with ``tta`` its augmented
    forward, the views fused by one NMS (``fusion="nms"``, the engine's own augmented inference) or by weighted
    boxes fusion of each view's NMS (``"wbf"``, see :mod:`livestock.evaluation.fusion`). Candidates are collected
    at ``conf_floor`` (default: ``conf`` itself), cached under ``cache_dir`` when given, and dropped once each
    image's detections are done, so memory holds detections only."""
    check_fusion(tta, fusion)
    floor = conf if conf_floor is None else conf_floor
    return [detections_at(c, conf, iou, fusion, max_det, agnostic, multi_label)
            for c in iter_candidates(weights, images, imgsz, conf_floor=floor, device=device, cache_dir=cache_dir,
                                     batch=batch, progress=progress, tta=tta)]


# ---------------------------------------------------------------- CLI: livestock detect


def add_detector_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``detect`` and ``tune``: the model, the input size, the device and the cache."""
    parser.add_argument("--weights", required=True,
                        help="either engine's .pt checkpoint (only files you trust) or .onnx")
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


def check_detector_args(args: argparse.Namespace) -> None:
    """The options of :func:`add_detector_args` (and a ``conf`` / ``iou`` where the command has them) that no
    detection can take: a ValueError naming the option, before the model loads and any image is read."""
    if args.imgsz < 32 or args.batch < 1 or args.max_det < 1:
        raise ValueError(f"need --imgsz >= 32, --batch >= 1 and --max-det >= 1 "
                         f"(got {args.imgsz}, {args.batch}, {args.max_det})")
    if not 0 <= args.conf_floor < 1:
        raise ValueError(f"--conf-floor {args.conf_floor}: must lie in [0, 1)")
    conf, iou = getattr(args, "conf", None), getattr(args, "iou", None)
    if (conf is not None and not 0 <= conf <= 1) or (iou is not None and not 0 < iou <= 1):
        raise ValueError(f"--conf {conf} / --iou {iou}: conf must lie in [0, 1] and iou in (0, 1]")


def cli_detect_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock detect`` to ``parser``."""
    parser.add_argument("--source", required=True,
                        help="images: a folder, a .txt list, a prepared records.jsonl, or one image")
    add_detector_args(parser)
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF, help="confidence threshold (0.001)")
    parser.add_argument("--iou", type=float, default=DEFAULT_IOU, help="NMS IoU threshold (0.68)")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: the engine's augmented forward (scales 1, 0.83 flipped, "
                             "0.67); PyTorch checkpoints only")
    parser.add_argument("--fusion", choices=FUSIONS, default="nms",
                        help="how TTA views are fused: nms (one NMS over all views, the engine's own) or wbf "
                             "(weighted boxes fusion of each view's NMS; needs --tta) (nms)")
    parser.add_argument("--out", default="runs/detect/detections.csv", help="detections CSV (pixel corners)")


def cli_detect(args: argparse.Namespace) -> int:
    """Run ``livestock detect`` with parsed ``args``; returns the exit code."""
    from livestock.evaluation.submission import save_detections

    check_detector_args(args)
    if Path(args.out).parent.is_file():  # found now, not after the whole detection
        raise ValueError(f"{args.out}: its folder {Path(args.out).parent} is a file")
    floor = min(args.conf_floor, args.conf)
    dets = detect(args.weights, args.source, args.imgsz, args.conf, args.iou, max_det=args.max_det,
                  agnostic=args.agnostic, multi_label=args.multi_label, device=args.device,
                  cache_dir=cache_dir_arg(args.cache_dir), batch=args.batch, conf_floor=floor, tta=args.tta,
                  fusion=args.fusion)
    out = save_detections(dets, args.out)
    print(f"{len(dets)} images, {sum(len(d) for d in dets)} detections (conf {args.conf:g}, NMS IoU {args.iou:g}, "
          f"{setting_name(args.tta, args.fusion)}) -> {out}")
    return 0
