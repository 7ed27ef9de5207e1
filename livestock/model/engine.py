"""The seam between the pipeline's stages and a detection engine.

Stages never import an engine package (``yolov5``, ``ultralytics``); they ask :func:`get_engine` for one by name
and talk to it through :class:`Engine`: train, validate, load a :class:`Detector` that yields raw candidates,
export to ONNX. What an engine gives back is engine-neutral: a per-class metrics table, and :class:`Candidates`.

The raw-candidate type has to describe three kinds of detection head without losing what the exact NMS replay
(:mod:`livestock.evaluation.detect`) needs:

- **objectness x class** (YOLOv5): per anchor a box, an objectness and class probabilities; a detection's
  confidence is ``objectness * class``, and the candidates above a confidence are a prefix of them sorted by it;
- **class only** (anchor-free heads such as YOLO11, or YOLO26's one-to-many head): a box and class scores, no
  objectness; confidence is the class score and NMS follows exactly as above with the objectness taken as 1;
- **end-to-end** (YOLO26's one-to-one head): the head's own top-k detections, already free of duplicates; a
  confidence threshold is the only setting, no NMS runs on them.

Boxes are corner coordinates ``(x1, y1, x2, y2)`` in pixels of the letterboxed network input of shape
``input_shape``; mapping them back to the original image happens once, after NMS.

Engines differ in small details of that NMS and mapping (the order NMS sees tied confidences, how letterbox padding
is undone); ``Candidates.postprocess`` names the engine whose rules the replay follows (see
:mod:`livestock.evaluation.detect`).

Test-time augmentation (TTA) is each engine's own augmented forward (YOLOv5's and Ultralytics' ``augment=True``:
the input at scales 1, 0.83 and 0.67, the 0.83 view flipped left-right, every view's rows mapped back to the input
and concatenated, the tails of the first and last view clipped). Its rows are candidates like any others, in the
order the engine concatenates them; ``Candidates.views`` says which view gave each row, so the views can also be
fused another way than by one NMS over all of them (:mod:`livestock.evaluation.fusion`).
"""
from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Collection, Iterator, Mapping, Protocol, Sequence

import numpy as np

from livestock.data.yolo_format import load_data_yaml
from livestock.model.onnx_file import onnx_engine

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

# engine name -> module implementing it (imported only when asked for: each pulls in a large package)
ENGINES: dict[str, str] = {"yolov5": "livestock.model.yolov5", "ultralytics": "livestock.model.ultralytics"}
DEFAULT_ENGINE = "yolov5"
CONTEST_MAX_WEIGHT_MB = 100.0  # the contest's limit on the submitted weight file; MB = 10**6 bytes
POSTPROCESS_RULES: tuple[str, ...] = ("yolov5", "ultralytics")  # see Candidates.postprocess
# The per-class table every engine's validation returns: index ``all`` and the class names, these columns.
METRIC_COLUMNS: tuple[str, ...] = ("images", "instances", "P", "R", "mAP@0.5", "mAP@0.5:0.95")
EpochCallback = Callable[[int, int, dict], None]  # (epoch from 1, epochs, metrics of that epoch's validation)


class WeightSizeError(ValueError):
    """The trained weight file is larger than the size limit (the contest's 100 MB by default)."""


def enforce_weight_size(report: dict, max_weight_mb: float, fail_on_oversize: bool, hint: str = "") -> dict:
    """An engine's ``checkpoint_size_report`` checked against ``max_weight_mb``: over the limit is a warning, or a
    :class:`WeightSizeError` with ``fail_on_oversize`` (the file stays on disk either way). Returns ``report``."""
    import warnings

    if not report["within_limit"]:
        msg = (f"{report['path']}: stripped FP16 weights are {report['stripped_fp16_mb']:.1f} MB, over the "
               f"{max_weight_mb:g} MB limit ({hint or 'choose a smaller model'})")
        if fail_on_oversize:
            raise WeightSizeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return report


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for by name, are not on disk, and could not be downloaded."""


@dataclass(frozen=True)
class Candidates:
    """A detection head's raw output for one image, above a confidence floor (see the module docstring).

    ``boxes``: ``(n, 4)`` float32 corners in network-input pixels; ``scores``: ``(n, classes)`` float32 class
    scores; ``objectness``: ``(n,)`` float32, or None for heads without one; ``end_to_end``: the rows are final
    detections (one class score set per row, NMS-free). ``width`` / ``height``: the original image.
    ``postprocess``: whose NMS order and box mapping the replay reproduces, one of :data:`POSTPROCESS_RULES`.
    ``n_views``: forward passes behind the rows (1, or :data:`TTA_VIEWS` for an augmented forward); ``views``:
    ``(n,)`` each row's view, ascending in row order, or None for one pass."""

    image_id: str
    width: int
    height: int
    input_shape: tuple[int, int]  # (height, width) of the letterboxed network input
    boxes: np.ndarray
    scores: np.ndarray
    objectness: np.ndarray | None
    conf_floor: float
    end_to_end: bool = False
    postprocess: str = "yolov5"
    views: np.ndarray | None = None
    n_views: int = 1

    def __post_init__(self) -> None:
        if self.postprocess not in POSTPROCESS_RULES:
            raise ValueError(f"{self.image_id}: postprocess {self.postprocess!r} is not one of {POSTPROCESS_RULES}")
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or self.scores.ndim != 2 or len(self.scores) != n:
            raise ValueError(f"{self.image_id}: boxes {self.boxes.shape} and scores {self.scores.shape} do not match")
        if self.objectness is not None and self.objectness.shape != (n,):
            raise ValueError(f"{self.image_id}: objectness {self.objectness.shape} for {n} boxes")
        if (self.views is None) != (self.n_views == 1):
            raise ValueError(f"{self.image_id}: {self.n_views} views need a view index per row (and one view none)")
        if self.views is not None and (self.views.shape != (n,) or (n and (self.views.min() < 0 or self.views.max()
                                                                           >= self.n_views))):
            raise ValueError(f"{self.image_id}: view index {self.views.shape} for {n} boxes and {self.n_views} views")

    def view(self, k: int) -> "Candidates":
        """The rows of augmented view ``k`` alone, in their order: the candidates that view's forward pass gave, as
        one pass gives them (the rows of a view are contiguous and its NMS sees no other view's rows)."""
        if not 0 <= k < self.n_views:
            raise ValueError(f"{self.image_id}: no view {k} among {self.n_views}")
        if self.views is None:
            return self
        keep = self.views == k
        return Candidates(self.image_id, self.width, self.height, self.input_shape, self.boxes[keep],
                          self.scores[keep], None if self.objectness is None else self.objectness[keep],
                          self.conf_floor, self.end_to_end, self.postprocess)

    @property
    def n_classes(self) -> int:
        """Number of classes the head scores."""
        return int(self.scores.shape[1])

    def confidences(self) -> np.ndarray:
        """Each row's best confidence (objectness x class score where the head has an objectness), float32."""
        scores = self.scores if self.objectness is None else self.scores * self.objectness[:, None]
        return scores.max(1) if len(scores) else np.zeros(0, np.float32)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


class Detector(Protocol):
    """A loaded model that turns images into :class:`Candidates`, letterboxing them as its engine does. A detector
    may say whose post-processing rules its candidates follow in a ``postprocess`` attribute (default
    ``"yolov5"``; see :class:`Candidates`)."""

    n_classes: int
    max_batch: int | None  # a fixed batch size of an exported model, else None
    n_views: int  # forward passes per image: 1, or TTA_VIEWS for the engine's augmented forward

    def letterbox(self, image_bgr: np.ndarray) -> np.ndarray:
        """The network input of one BGR image: CHW RGB uint8, letterboxed to the detector's size."""

    def candidates(self, batch: np.ndarray, conf_floor: float) -> list[tuple[np.ndarray, np.ndarray,
                                                                             np.ndarray | None, bool,
                                                                             np.ndarray | None]]:
        """For a uint8 batch ``(b, 3, h, w)``: per image ``(boxes, scores, objectness, end_to_end, views)`` above
        the floor, in the head's own row order (see :class:`Candidates`); ``views`` is None for one pass."""


TTA_VIEWS = 3  # views of both engines' augmented forward: scales 1, 0.83 (flipped left-right) and 0.67


@contextlib.contextmanager
def counting_head_rows(head: "torch.nn.Module", dim: int) -> Iterator[list[int]]:
    """While open, the rows ``head`` outputs at each call (its first output's size along ``dim``): one entry per
    view of an augmented forward, which runs the head once per view."""
    counts: list[int] = []
    handle = head.register_forward_hook(lambda _module, _inputs, out: counts.append(int(out[0].shape[dim])))
    try:
        yield counts
    finally:
        handle.remove()


def augmented_view_index(counts: Sequence[int], clip: Callable[[list], list]) -> np.ndarray:
    """Each row's view in an augmented forward's concatenated output, from the rows each view's head gave
    (``counts``) and the engine's own tail clipping (``clip``, its ``_clip_augmented``) applied to rows of view
    numbers instead of predictions: the index then follows exactly what the engine cuts."""
    import torch

    parts = clip([torch.full((1, int(n)), k, dtype=torch.int64) for k, n in enumerate(counts)])
    return torch.cat(parts, -1)[0].numpy().astype(np.int8)


def join_views(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """One image's candidates of each view ``(boxes, scores, objectness)``, in view order, as one set in that row
    order (the order the engine concatenates the views in) with each row's view."""
    boxes = np.concatenate([b for b, _s, _o in parts])
    scores = np.concatenate([s for _b, s, _o in parts])
    obj = None if parts[0][2] is None else np.concatenate([o for _b, _s, o in parts])
    views = np.concatenate([np.full(len(b), k, np.int8) for k, (b, _s, _o) in enumerate(parts)])
    return boxes, scores, obj, views


def augmented_candidates(pred: "torch.Tensor", counts: Sequence[int], clip: Callable[[list], list], n_views: int,
                         n_rows: int, view_rows: Callable[["torch.Tensor", "torch.Tensor"], tuple]) -> list[tuple]:
    """Each image's candidates of an augmented (TTA) forward as ``(boxes, scores, objectness, False, view)``: every
    view's rows decoded and filtered alone by the engine's ``view_rows(image_output, row_mask)`` -- the same rows as
    the whole, each labelled with its view. ``counts`` and ``clip`` as in :func:`augmented_view_index`; ``n_rows`` is
    the output's row count. Views or rows other than the model's are a RuntimeError."""
    import torch

    views = torch.from_numpy(augmented_view_index(counts, clip))
    if len(counts) != n_views or len(views) != n_rows:
        raise RuntimeError(f"augmented forward gave {len(counts)} views and {n_rows} rows, expected "
                           f"{n_views} views and {len(views)} rows")
    out = []
    for p in pred:
        boxes, scores, obj, view = join_views([view_rows(p, views == k) for k in range(n_views)])
        out.append((boxes, scores, obj, False, view))
    return out


class Engine(Protocol):
    """What a detection engine offers the stages (a module implementing these names)."""

    NAME: str
    MODEL_NAMES: tuple[str, ...]
    DEFAULT_MODEL: str
    DEFAULT_HYP: str
    OPTIMIZERS: tuple[str, ...]  # what TrainSettings.optimizer may be
    PASSTHROUGH_OPTIONS: frozenset[str]  # TrainSettings.options the engine's trainer takes

    def train(self, data_yaml: str | os.PathLike, settings: TrainSettings | None = None, **values: object) -> object:
        """Train with ``settings`` (:class:`TrainSettings`; ``values`` override its fields) and return a result with
        ``best``, ``save_dir`` and a per-class ``metrics`` table. With ``resume=True``, continue the interrupted run
        in ``project/name`` from its ``weights/last.pt`` (optimiser, EMA, LR schedule and epoch counter as they
        were; the run's own settings apply); a run with nothing left to resume is an error naming its ``last.pt``.
        Checkpoints are written atomically (:func:`livestock.fileio.atomic_checkpoints`), so a kill leaves the
        previous ``last.pt`` whole."""

    def can_resume(self, save_dir: str | os.PathLike) -> bool:
        """True when ``save_dir`` holds a training that stopped before its end, which ``train(resume=True)``
        continues; a ``last.pt`` that cannot be read is a ValueError naming it."""

    def validate(self, weights: str | os.PathLike, data_yaml: str | os.PathLike, settings: ValSettings | None = None,
                 **values: object) -> "pd.DataFrame":
        """Validation with ``settings`` (:class:`ValSettings`; ``values`` override its fields). Per-class table:
        index ``all`` and class names; images, instances, P, R, mAP columns."""

    def load_detector(self, weights: Path, imgsz: int, device: "torch.device", n_classes: int,
                      augment: bool = False) -> Detector:
        """A :class:`Detector` over a checkpoint or an exported ONNX file; with ``augment``, the engine's augmented
        forward (TTA), refused with one line where the engine has none for the model."""

    def load_hyp(self, hyp: str | os.PathLike | dict) -> dict:
        """The engine's hyper-parameters from a dict, a path or a shipped name, validated."""

    def checkpoint_size_report(self, path: str | os.PathLike, limit_mb: float = CONTEST_MAX_WEIGHT_MB) -> dict:
        """The checkpoint's size as it would be submitted (stripped, FP16) against the contest's limit."""

    def export_onnx(self, weights: str | os.PathLike, imgsz: int, out_path: str | os.PathLike) -> Path:
        """A fixed-shape ONNX file of the weights, with the engine's name in its metadata."""

    def load_checkpoint(self, path: str | os.PathLike) -> dict:
        """The checkpoint dict on the CPU (``model``, and ``ema`` while training); a pickle: trusted files only.
        ValueError naming the file when it is unreadable or not this engine's."""

    def load_model(self, weights: str | os.PathLike, fuse: bool = True, device: str = "cpu") -> "torch.nn.Module":
        """The FP32 eval-mode model of a checkpoint on ``device``; with ``fuse``, the module the engine's own
        inference runs (BatchNorm folded into the convolutions, its default head selected). ValueError naming the
        file when it is unreadable or not this engine's."""

    def random_init_checkpoint(self, model_name: str, path: str | os.PathLike, nc: int = 2, seed: int = 0) -> Path:
        """Write a checkpoint of an untrained ``model_name`` (one of ``MODEL_NAMES``) with ``nc`` classes, named as
        the contest's (pig, cow), weights from a fixed ``seed``, atomically; returns ``path``. Enough to time a
        model or check an export, meaningless for accuracy; the engine's loaders and exporter take it."""


def get_engine(name: str = DEFAULT_ENGINE) -> ModuleType:
    """The module implementing engine ``name`` (see :data:`ENGINES`)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])


def engine_of_model(name: str) -> str:
    """The engine whose ``MODEL_NAMES`` hold the architecture ``name`` (``yolov5m6``: yolov5, ``yolo11n`` and
    ``yolo26m``: ultralytics); a ValueError listing every engine's names otherwise. Cheap: it imports the engine
    modules of this package, which load their engine's own package (``yolov5``, ``ultralytics``) only when used."""
    for engine in ENGINES:
        if name in get_engine(engine).MODEL_NAMES:
            return engine
    known = "; ".join(f"{engine}: {', '.join(get_engine(engine).MODEL_NAMES)}" for engine in ENGINES)
    raise ValueError(f"unknown model {name!r}; known models ({known})")


def engine_of_weights(weights: str | os.PathLike) -> str:
    """The engine that wrote a weight file: from an ONNX file's ``engine`` metadata (else Ultralytics' exporter's
    own metadata; exports without either are YOLOv5's), from a checkpoint's pickled classes otherwise (read
    without unpickling: a checkpoint whose model classes come from ``ultralytics`` is Ultralytics')."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights not found")
    if path.suffix.lower() == ".onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf's DecodeError on a truncated or foreign file
            raise ValueError(f"{path}: not a valid ONNX model (corrupt or truncated file?): {e}") from e
        return onnx_engine({p.key: p.value for p in model.metadata_props})
    return "ultralytics" if any(m.split(".")[0] == "ultralytics" for m in _pickled_modules(path)) else "yolov5"


def _pickled_modules(path: Path) -> set[str]:
    """The modules of the classes a ``torch.save`` zip file refers to, read from its pickle's opcodes without
    running them (empty for a file that is not such an archive)."""
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            data = z.read(name) if name else b""
    except (zipfile.BadZipFile, OSError):
        return set()
    modules: set[str] = set()
    strings: list[str] = []  # strings pushed so far: STACK_GLOBAL (protocol 4) takes the last two, module and name
    memo: dict[int, str | None] = {}
    top: str | None = None  # the top of the stack when the last opcode pushed a string
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name == "MEMOIZE":
                memo[len(memo)] = top
                continue
            if op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = top
                continue
            top = None
            if op.name == "GLOBAL":  # protocol 2 (torch.save's default): "module name"
                modules.add(str(arg).split(" ")[0])
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                top = str(arg)
            elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                top = memo.get(int(arg))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                modules.add(strings[-2])
            if top is not None:
                strings.append(top)
    except ValueError:  # a truncated pickle: what was read so far decides
        pass
    return modules


def stored_precision(weights: str | os.PathLike) -> str:
    """The precision a checkpoint of either engine stores its weights in, ``fp16`` or ``fp32`` (its EMA where it
    has one, which is what the engines load). Loads the file (a pickle): only for files you trust."""
    ckpt = get_engine(engine_of_weights(weights)).load_checkpoint(weights)
    module = ckpt.get("ema") or ckpt["model"]
    return str(next(module.parameters()).dtype).replace("torch.float", "fp")


def model_names_and_stride(model: "torch.nn.Module") -> tuple[dict[int, str], int]:
    """A loaded detection model's class names (index -> name) and its largest stride. Both engines' models carry
    ``names``, ``stride`` and their architecture ``yaml``; a model saved without names gets ``class<i>``."""
    names = getattr(model, "names", None)
    if not names:
        nc = int(model.yaml.get("nc", 0)) if isinstance(model.yaml, dict) else 0
        names = [f"class{i}" for i in range(nc)]
    names = names if isinstance(names, dict) else dict(enumerate(names))
    return {int(k): str(v) for k, v in names.items()}, int(max(model.stride))


def save_model_checkpoint(model: "torch.nn.Module", path: str | os.PathLike, half: bool = True) -> Path:
    """Write ``model`` as a checkpoint both engines load (``{"model": module, "epoch": -1}``: the form of a
    stripped checkpoint, which their loaders, exporters and ``livestock`` commands take), atomically; returns the
    path. Stored FP16 by default, as both engines store trained weights (computation is FP32 after loading); the
    caller's model is left as it was."""
    import copy
    import io

    import torch

    from livestock.fileio import atomic_write_bytes

    module = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save({"model": module.half() if half else module.float(), "epoch": -1}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------- training settings


@dataclass(frozen=True)
class TrainSettings:
    """One training run's settings, the same for every engine's ``train`` and for the stages that train (search,
    evolution, experiments, pretraining), so each is named, defaulted and checked in one place.

    - ``model``: architecture by name or yaml path (None: the engine's smallest from scratch, or with ``weights``
      the checkpoint's own architecture). ``weights``: None (from scratch), a checkpoint path or a pretrained name
      (the engine's ``resolve_weights``). Checkpoints are pickles: loading one runs code, trusted files only.
    - ``hyp``: dict, yaml path or shipped name (None: the engine's ``DEFAULT_HYP``).
    - ``linear_lr``: linear LR decay from lr0 to lr0*lrf (the original's ``--linear-lr``); False: cosine.
    - ``project``/``name``: the run folder ``project/name``; if it exists and ``exist_ok`` is False a new one,
      ``name2``, ``name3``, ..., is made; with ``exist_ok`` the folder is reused.
    - ``device``: ``auto`` (GPU 0 if CUDA is available, else CPU), ``cpu``, ``0``, ``0,1``.
    - ``best.pt`` is checked against ``max_weight_mb``: a warning, or :class:`WeightSizeError` with
      ``fail_on_oversize`` (the weights stay on disk). ``verbose=False`` keeps progress bars and warnings but not
      the engine's INFO log.
    - ``on_epoch(epoch, epochs, metrics)`` after each epoch's validation (epoch from 1; metrics: loss, P, R,
      mAP@0.5, mAP@0.5:0.95); every epoch is also a ``livestock.progress`` event.
    - ``resume``: continue the interrupted run in ``project/name`` from its ``weights/last.pt``; the run's own
      settings apply, not these (the engine's ``train`` says which it still takes from here).
    - ``options``: the engine's other train options (its ``PASSTHROUGH_OPTIONS``, e.g. ``freeze=[10]``).
    """

    model: str | None = None
    weights: str | os.PathLike | None = None
    hyp: str | os.PathLike | dict | None = None
    imgsz: int = 640
    epochs: int = 100
    batch_size: int = 16
    device: str = "auto"
    workers: int = 8  # data-loader workers
    project: str | os.PathLike = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    linear_lr: bool = True
    optimizer: str = "SGD"
    seed: int = 0
    patience: int = 100  # early-stopping patience in epochs
    cache: str | None = None  # None, "ram" or "disk"
    max_weight_mb: float = CONTEST_MAX_WEIGHT_MB
    fail_on_oversize: bool = False
    plots: bool = True
    verbose: bool = False
    on_epoch: EpochCallback | None = None
    resume: bool = False
    options: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: "TrainSettings | None" = None, **values: object) -> "TrainSettings":
        """``settings`` (default: all defaults) with ``values`` applied; a name that is not a field is an engine
        option and joins ``options``."""
        base = settings or cls()
        names = {f.name for f in fields(cls)} - {"options"}
        extra = {k: v for k, v in values.items() if k not in names and k != "options"}
        options = {**base.options, **dict(values.get("options") or {}), **extra}  # type: ignore[arg-type]
        return replace(base, **{k: v for k, v in values.items() if k in names}, options=options)

    def check(self, passthrough: Collection[str], optimizers: Collection[str]) -> None:
        """ValueError on what no engine run can take: options outside the engine's ``passthrough``, an optimiser
        outside ``optimizers``, a cache other than None / ram / disk, or sizes below their minimum."""
        unknown = set(self.options) - set(passthrough)
        if unknown:
            raise ValueError(f"unsupported train options {sorted(unknown)}; allowed: {sorted(passthrough)}")
        if self.optimizer not in optimizers:
            raise ValueError(f"optimizer must be one of {', '.join(optimizers)}, not {self.optimizer!r}")
        if self.cache not in (None, "ram", "disk"):
            raise ValueError(f"cache must be None, 'ram' or 'disk', not {self.cache!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.imgsz < 32:
            raise ValueError(f"need epochs >= 1, batch_size >= 1 and imgsz >= 32 "
                             f"(got {self.epochs}, {self.batch_size}, {self.imgsz})")
        freeze = self.options.get("freeze")
        if freeze is not None and any(int(f) < 0 for f in (freeze if isinstance(freeze, (list, tuple)) else [freeze])):
            raise ValueError(f"freeze {freeze}: a layer count or layer indices, each >= 0")


@dataclass(frozen=True)
class ValSettings:
    """One validation's settings, the same for every engine's ``validate``.

    ``iou``: the NMS IoU (None: the engine's own default). ``batch_size`` None: :func:`validation_batch` of
    ``imgsz``. The run folder ``project/name`` is incremented unless ``exist_ok``; ``save_txt`` also writes
    ``labels/<stem>.txt`` with confidences. ``half`` applies on CUDA only.
    """

    imgsz: int = 640
    conf: float = 0.001
    iou: float | None = None
    device: str = "auto"
    split: str = "val"
    batch_size: int | None = None
    workers: int = 8
    project: str | os.PathLike = "runs/val"
    name: str = "exp"
    exist_ok: bool = False
    half: bool = True
    plots: bool = True
    save_txt: bool = False
    verbose: bool = False

    @classmethod
    def of(cls, settings: "ValSettings | None" = None, **values: object) -> "ValSettings":
        """``settings`` (default: all defaults) with ``values`` applied; an unknown name is a TypeError."""
        return replace(settings or cls(), **values)

    def checked(self, weights: str | os.PathLike, data_yaml: str | os.PathLike) -> tuple[Path, dict, int]:
        """The weights path, the dataset yaml's content and the batch size, after the checks every engine makes:
        FileNotFoundError for missing weights, ValueError for thresholds or sizes no validation can take, or a split
        that is not train / val / test or that the yaml does not name."""
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"{path}: weights not found")
        if not 0 <= self.conf <= 1 or (self.iou is not None and not 0 < self.iou <= 1):
            raise ValueError(f"conf {self.conf} / iou {self.iou}: conf must lie in [0, 1] and iou in (0, 1]")
        if self.imgsz < 32 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError(f"need imgsz >= 32 and batch >= 1 (got {self.imgsz}, {self.batch_size})")
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, not {self.split!r}")
        data, _ = load_data_yaml(data_yaml)
        if not data.get(self.split):
            raise ValueError(f"{data_yaml}: no '{self.split}' entry")
        return path, data, self.batch_size or validation_batch(self.imgsz)


# ---------------------------------------------------------------- training results


def fitness_yolov5(metrics: pd.DataFrame) -> float:
    """YOLOv5's fitness of a per-class table: 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95 of the ``all`` row."""
    return 0.1 * float(metrics.loc["all", "mAP@0.5"]) + 0.9 * float(metrics.loc["all", "mAP@0.5:0.95"])


@dataclass
class TrainResult:
    """What a training run leaves: its folder, weights and final validation (of ``best.pt``)."""

    save_dir: Path
    best: Path  # stripped FP16 checkpoint with the best fitness
    last: Path
    data_yaml: Path  # the dataset it was trained and validated on
    imgsz: int
    metrics: pd.DataFrame  # per-class table (see validate), from the final validation of best.pt
    weight_mb: float  # best.pt's stripped FP16 size (MB = 10**6 bytes)
    size_report: dict
    hyp: dict
    epochs_run: int

    @property
    def map50(self) -> float:
        """The final validation mAP@0.5 (``all`` row)."""
        return float(self.metrics.loc["all", "mAP@0.5"])

    @property
    def map50_95(self) -> float:
        """The final validation mAP@0.5:0.95 (``all`` row)."""
        return float(self.metrics.loc["all", "mAP@0.5:0.95"])

    @property
    def fitness(self) -> float:
        """YOLOv5's fitness of the final validation (:func:`fitness_yolov5`)."""
        return fitness_yolov5(self.metrics)

    def summary(self) -> str:
        """The run folder, best weights with their size against the limit, epochs and the per-class table."""
        limit = self.size_report["limit_mb"]
        flag = "within" if self.size_report["within_limit"] else "OVER"
        return (f"run folder: {self.save_dir}\nbest weights: {self.best} ({self.weight_mb:.1f} MB, {flag} the "
                f"{limit:g} MB limit)\nepochs run: {self.epochs_run}\n{self.metrics.round(4).to_string()}")


def epochs_in_results(results_csv: str | os.PathLike) -> int:
    """Epochs a run's ``results.csv`` holds: one row each after its header (0 without the file). Both engines
    write one row per finished epoch."""
    path = Path(results_csv)
    if not path.is_file():
        return 0
    return max(len([ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]) - 1, 0)


def keep_results_rows(results_csv: str | os.PathLike, epochs: int) -> None:
    """Keep the header and the first ``epochs`` rows of a run's ``results.csv`` (rewritten atomically).

    Both engines append an epoch's row before they save that epoch's ``last.pt``: a run killed in between would
    get the epoch twice when it resumes. Resuming keeps the rows of the epochs ``last.pt`` holds; the resumed run
    appends the rest."""
    from livestock.fileio import atomic_write_text

    path = Path(results_csv)
    if not path.is_file():
        return
    rows = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if len(rows) > epochs + 1:
        atomic_write_text(path, "".join(rows[: epochs + 1]))


def validation_batch(imgsz: int) -> int:
    """A validation batch that fits a 16 GB GPU at any size: YOLOv5's 32 at 640 px and below, fewer images as
    the pixels per image grow (8 at 1280)."""
    return max(1, min(32, int(32 * (640 / max(int(imgsz), 1)) ** 2)))



# ---------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device request: ``cpu``, ``mps`` or CUDA with one or more GPU indices."""

    kind: str  # "cpu" | "cuda" | "mps"
    indices: tuple[int, ...] = ()

    def torch(self) -> "torch.device":
        """The torch device this process computes on (the first GPU of a list)."""
        import torch

        return torch.device(f"cuda:{self.indices[0]}" if self.kind == "cuda" else self.kind)

    def engine_string(self) -> str:
        """The form YOLOv5 and Ultralytics take: ``cpu``, ``mps``, ``0`` or ``0,1``."""
        return ",".join(map(str, self.indices)) if self.kind == "cuda" else self.kind


def parse_device(device: str | None = "auto") -> DeviceSpec:
    """Parse ``auto`` (GPU 0 when CUDA is available, else CPU), ``cpu``, ``mps``, ``cuda``, ``cuda:N``, ``N`` or
    ``N,M,...``; a CUDA request where CUDA is missing is a ValueError."""
    import torch

    text = (device or "auto").strip().lower().replace(" ", "")
    if text == "auto":
        return DeviceSpec("cuda", (0,)) if torch.cuda.is_available() else DeviceSpec("cpu")
    if text in ("cpu", "mps"):
        return DeviceSpec(text)
    if text == "cuda":
        text = "0"
    text = text.removeprefix("cuda:")
    parts = text.split(",")
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, mps, cuda, cuda:N, N or N,M")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    indices = tuple(int(p) for p in parts)
    if max(indices) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) here")
    return DeviceSpec("cuda", indices)


def distributed_rank() -> int:
    """This process's global rank under ``torch.distributed.run`` (``RANK``), -1 when not distributed."""
    return int(os.environ.get("RANK", -1))


def is_main_process() -> bool:
    """True in a single-process run and in rank 0 of a distributed one: the process that writes outputs."""
    return distributed_rank() in (-1, 0)

