"""Ultralytics engine: YOLOv8, YOLO11 and YOLO26 through the ``ultralytics`` pip package (8.4), with the same
interface as :mod:`livestock.model.yolov5`. This module: model names, weights, hyp files and checkpoints, the
detector that yields raw candidates, ONNX export; training, resume and validation are in
:mod:`livestock.model.ultralytics.training`. Every call goes through
:func:`~livestock.model.ultralytics.compat.ensure_ultralytics` (offline, no downloads, no telemetry, the user's
settings file untouched).

Detection heads and variants. YOLOv8 / YOLO11 have one anchor-free head: per anchor a box and class scores, no
objectness; NMS follows. YOLO26 carries two heads trained together: the one-to-one head gives the model's own
top-k detections (``max_det`` = 300, NMS-free) and the one-to-many head gives dense rows for NMS like YOLO11's.
``variant`` chooses between them wherever a model is run (training's validations, validation,
:func:`load_detector`, :func:`export_onnx`):

- ``"one2one"``: the NMS-free head (YOLO26 only); candidates are ``end_to_end`` rows, a confidence threshold is the
  only setting. The default for models that have it.
- ``"one2many"``: the dense head with NMS; the default (and only choice) for YOLOv8 / YOLO11.

Ultralytics 8.4 itself runs YOLO26 with the one-to-many head unless given ``nms=False``; this engine defaults to
the NMS-free head, which is what YOLO26 was made for, and says ``variant="one2many"`` where the other is wanted. An
ONNX export holds one head; its detector takes the one exported.

Raw candidates equal Ultralytics' own ``predict`` (its ``LetterBox``, ``non_max_suppression`` and ``scale_boxes``)
when replayed by :mod:`livestock.evaluation.detect` with the ``ultralytics`` post-processing rules
(``Candidates.postprocess``): see :func:`head_rows_to_candidates` and that module.

Security: Ultralytics checkpoints are Python pickles, and loading one runs code from the file. Load only weight
files you trust (the ones you name, or that this package trained).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from livestock.model.engine import (CONTEST_MAX_WEIGHT_MB, TTA_VIEWS, PretrainedWeightsError, augmented_candidates,
                                    counting_head_rows, enforce_weight_size, save_model_checkpoint)
from livestock.model.engine_files import find_start_weights, model_yaml_path, read_hyp, shipped_model_name
from livestock.model.onnx_file import load_onnx, save_onnx, set_onnx_metadata, weights_in_scratch
from livestock.model.ultralytics.compat import ensure_ultralytics
from livestock.records import CLASS_NAMES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

NAME = "ultralytics"
MODEL_NAMES: tuple[str, ...] = (
    *(f"yolov8{s}" for s in "nsmlx"), *(f"yolov8{s}-p6" for s in "nsmlx"),
    *(f"yolo11{s}" for s in "nsmlx"),
    *(f"yolo26{s}" for s in "nsmlx"), *(f"yolo26{s}-p6" for s in "nsmlx"),
)
DEFAULT_MODEL = "yolo11n"
DEFAULT_HYP = "ultralytics_scratch_cpu"
PACKAGE_HYP_DIR = Path(__file__).resolve().parents[2] / "hyp"
# The keys of Ultralytics' default cfg that act on a detection run's optimisation, loss and augmentation.
HYP_KEYS: tuple[str, ...] = (
    "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
    "box", "cls", "cls_pw", "dfl",
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
    "flipud", "fliplr", "bgr", "mosaic", "mixup", "cutmix", "copy_paste",
)
VARIANTS: tuple[str, ...] = ("one2one", "one2many")
OPTIMIZERS: tuple[str, ...] = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "auto")
# Ultralytics train options that pass through ``train(**options)``; the others have their own arguments (imgsz, epochs,
# resume, ...) or would break the run-folder contract (save_dir).
PASSTHROUGH_OPTIONS = frozenset({
    "rect", "multi_scale", "single_cls", "freeze", "save_period", "close_mosaic", "amp", "fraction", "nbs",
    "deterministic", "time", "max_det", "compile",
})
PRETRAINED_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0/{name}"
ONNX_OPSET = 18  # as the YOLOv5 export path writes
ONE2ONE_MAX_DET = 300  # the NMS-free head's top-k: Ultralytics' max_det default, which its predictor uses


# ================================================================ models, weights, hyper-parameters


def model_cfg(model: str | os.PathLike) -> str:
    """What to hand Ultralytics for an architecture: a name from :data:`MODEL_NAMES` (with or without ``.yaml``)
    as ``<name>.yaml``, which Ultralytics resolves to its shipped yaml and scale; a yaml path as an absolute path."""
    stem = shipped_model_name(model, MODEL_NAMES)
    if stem:
        return f"{stem}.yaml"
    return str(model_yaml_path(model, MODEL_NAMES))


def resolve_weights(weights: str | os.PathLike | None, download_dir: str | os.PathLike | None = None) -> str:
    """Absolute path of the starting weights, or ``''`` to train from scratch (``weights`` None or empty).

    A path that exists is used as is. A bare pretrained name (``yolo11n.pt`` or ``yolo11n``) is looked up in the
    working directory and in ``download_dir`` (default ``trained_model/``); it is never downloaded (Ultralytics
    would fetch it from its assets release): absent, it is a :class:`PretrainedWeightsError` saying what to do."""
    found, local = find_start_weights(weights, MODEL_NAMES, download_dir)
    if local is None:
        return found
    name = local.name
    url = PRETRAINED_URL.format(name=name)
    raise PretrainedWeightsError(
        f"{name}: pretrained weights not found (looked for ./{name} and {local}); this engine does not download. "
        f"Put the file at {local} (it is published at {url}), or train from scratch: weights=None with "
        f"model='{name[:-3]}'.")


def hyp_path(hyp: str | os.PathLike) -> Path:
    """A hyp file: an existing path, or the name of one shipped with the package (``ultralytics_scratch_cpu``)."""
    path = Path(hyp)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if str(hyp) in (stem, path.name) and (PACKAGE_HYP_DIR / f"{stem}.yaml").is_file():
        return PACKAGE_HYP_DIR / f"{stem}.yaml"
    raise FileNotFoundError(f"{hyp}: hyp file not found (a path, or the shipped {DEFAULT_HYP})")


def load_hyp(hyp: str | os.PathLike | dict) -> dict:
    """Hyper-parameters as a dict with every key of :data:`HYP_KEYS`, from a dict, a path or a shipped name.
    Missing, unknown (a typo would otherwise be ignored silently) or non-numeric keys are errors naming the file."""
    return read_hyp(hyp, hyp_path, HYP_KEYS)


def _has_one2one(model) -> bool:
    """Whether an Ultralytics ``DetectionModel`` carries YOLO26's one-to-one (NMS-free) head."""
    return getattr(model.model[-1], "one2one_cv2", None) is not None  # fusing for one2many drops it


def _choose_variant(has_one2one: bool, variant: str | None, where: str) -> str:
    if variant is None:
        return "one2one" if has_one2one else "one2many"
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if variant == "one2one" and not has_one2one:
        raise ValueError(f"{where}: no one-to-one (NMS-free) head in this model; only YOLO26 has one")
    return variant


def _nms_arg(variant: str) -> bool | None:
    # Ultralytics' switch: nms=False selects the NMS-free head, None (its default) the dense head with NMS.
    return False if variant == "one2one" else None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load an Ultralytics checkpoint dict on the CPU. It is a pickle: loading it runs code from the file, so only
    call this on files you trust (the ones you name, or that this package's training wrote)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ensure_ultralytics()
    from ultralytics.utils.patches import torch_load

    try:
        ckpt = torch_load(path, map_location="cpu")
    except Exception as e:  # torch's unpickling errors on a truncated or foreign file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated file?): {e}") from e
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else None
    if model is None or not hasattr(model, "yaml") or type(model).__module__.split(".")[0] != "ultralytics":
        raise ValueError(f"{path}: not an Ultralytics checkpoint (expected a dict with an Ultralytics 'model')")
    return ckpt


def load_model(weights: str | os.PathLike, fuse: bool = True, device: str = "cpu",
               variant: str | None = None) -> "torch.nn.Module":
    """The FP32 eval-mode model of a checkpoint on ``device`` (``ema`` if present, else ``model``).

    With ``fuse``, the module Ultralytics' predictor runs (behind :func:`_inference_backend`): BatchNorm folded
    into the convolutions, ``variant``'s head selected (default as :func:`load_detector`: YOLO26's NMS-free one).
    ValueError naming the file when it is unreadable or not an Ultralytics checkpoint. A pickle: trusted files."""
    import torch

    path = Path(weights)
    ckpt = load_checkpoint(path)
    model = ckpt.get("ema") or ckpt["model"]
    if not fuse:
        return model.float().eval().to(torch.device(device))
    chosen = _choose_variant(_has_one2one(model), variant, str(path))
    return _inference_backend(path, torch.device(device), end2end=chosen == "one2one").model.eval()


def random_init_checkpoint(model_name: str, path: str | os.PathLike, nc: int = 2, seed: int = 0) -> Path:
    """Write a checkpoint of an untrained ``model_name`` (a name of :data:`MODEL_NAMES` or a model yaml) to
    ``path``, atomically, in the stripped form Ultralytics saves trained weights in (FP16); returns it.

    Built from the architecture's yaml (:func:`model_cfg`) with ``nc`` classes named as the contest's, weights
    from a fixed ``seed`` (the caller's random state is left as it was): enough to time a model or check an
    export, meaningless for accuracy. Ultralytics' loaders, :func:`load_checkpoint`, :func:`export_onnx` and
    :func:`load_detector` take it."""
    ensure_ultralytics()
    import torch
    from ultralytics.nn.tasks import DetectionModel

    cfg = model_cfg(model_name)
    with torch.random.fork_rng(devices=[]), _ultralytics_scope(False):
        torch.manual_seed(seed)
        model = DetectionModel(cfg, ch=3, nc=nc, verbose=False)
    model.names = {i: (CLASS_NAMES[i] if i < len(CLASS_NAMES) else f"class{i}") for i in range(nc)}
    return save_model_checkpoint(model.eval(), path)


def checkpoint_size_report(path: str | os.PathLike, limit_mb: float = CONTEST_MAX_WEIGHT_MB) -> dict:
    """Size of an Ultralytics checkpoint against a limit (MB = 10**6 bytes), in the form YOLOv5's report has.
    Ultralytics saves ``best.pt`` stripped (FP16, no optimizer) already, so the file size is the submitted size;
    for an unstripped file ``stripped_fp16_mb`` is estimated as 2 bytes per parameter. Loads the file (a pickle)."""
    import torch

    path = Path(path)
    ckpt = load_checkpoint(path)
    model = ckpt.get("ema") or ckpt["model"]
    params = list(model.parameters())
    stripped = ckpt.get("optimizer") is None and ckpt.get("ema") is None and all(
        p.dtype == torch.float16 for p in params if p.is_floating_point())
    file_mb = path.stat().st_size / 1e6
    size_mb = file_mb if stripped else sum(p.numel() for p in params) * 2 / 1e6
    return {"path": str(path), "file_mb": file_mb, "stripped_fp16_mb": size_mb,
            "parameters": int(sum(p.numel() for p in params)), "is_stripped_fp16": bool(stripped),
            "epoch": ckpt.get("epoch"), "limit_mb": float(limit_mb), "within_limit": bool(size_mb <= limit_mb)}


def check_weight_size(path: str | os.PathLike, max_weight_mb: float = CONTEST_MAX_WEIGHT_MB,
                      fail_on_oversize: bool = False) -> dict:
    """:func:`checkpoint_size_report`, plus a warning (or a :class:`WeightSizeError`) over ``max_weight_mb``."""
    return enforce_weight_size(checkpoint_size_report(path, limit_mb=max_weight_mb), max_weight_mb, fail_on_oversize)


# ================================================================ quiet output


@contextlib.contextmanager
def _ultralytics_scope(verbose: bool) -> Iterator[None]:
    """Around every call into Ultralytics: without ``verbose`` its INFO log hidden (its warnings still shown);
    torch's thread count kept during the call; and torch's process-wide settings as they were before, restored
    afterwards.

    On a CPU, Ultralytics' ``select_device`` sets torch's thread count to its ``NUM_THREADS``, ``cpu_count - 1``
    (one thread on a 2-core machine, where YOLOv5 and torch's default use two): an Ultralytics training would
    compute with another thread count than a YOLOv5 one beside it, and take longer for that alone. Its
    ``NUM_THREADS`` is set to this process's count for the call. A seeded training also switches on deterministic
    algorithms for the whole process and leaves them so: a YOLOv5 training later in the same process (a notebook
    comparing engines) would give other numbers than alone."""
    import logging

    import torch
    from ultralytics.utils import torch_utils

    logger = logging.getLogger("ultralytics")
    level = logger.level
    threads = torch.get_num_threads()
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    fill = torch.utils.deterministic.fill_uninitialized_memory
    ultralytics_threads = torch_utils.NUM_THREADS
    torch_utils.NUM_THREADS = threads
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        torch_utils.NUM_THREADS = ultralytics_threads
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        torch.utils.deterministic.fill_uninitialized_memory = fill


# ================================================================ detection: raw candidates


def head_rows_to_candidates(pred: "torch.Tensor", conf_floor: float) -> tuple:
    """``(boxes, scores, None)`` of one image's dense head output ``(4 + nc, anchors)`` (centre xywh, class
    scores) above ``conf_floor``.

    The filter is Ultralytics' own first step of ``non_max_suppression`` (``amax(scores) > conf``) and boxes go to
    corners with its ``xywh2xyxy`` on the same float32 rows, so the NMS replay on these arrays matches it bit for
    bit. There is no objectness (the replay takes it as 1)."""
    ensure_ultralytics()
    from ultralytics.utils.ops import xywh2xyxy

    nc = pred.shape[0] - 4
    kept = pred.transpose(-1, -2)[pred[4:4 + nc].amax(0) > conf_floor]
    boxes = xywh2xyxy(kept[:, :4])
    return (boxes.numpy().astype("float32", copy=True), kept[:, 4:4 + nc].numpy().astype("float32", copy=True),
            None)


def end_to_end_rows_to_candidates(pred: "torch.Tensor", conf_floor: float, n_classes: int) -> tuple:
    """``(boxes, scores, None)`` of one image's NMS-free output ``(k, 6)`` (x1, y1, x2, y2, confidence, class)
    with confidence above ``conf_floor`` (Ultralytics' own filter), in the head's order. ``scores`` holds each
    row's confidence at its class and 0 elsewhere, so its max is the confidence and its argmax the class."""
    import numpy as np

    kept = pred[pred[:, 4] > conf_floor].numpy()
    scores = np.zeros((len(kept), n_classes), np.float32)
    scores[np.arange(len(kept)), kept[:, 5].astype(int)] = kept[:, 4]
    return kept[:, :4].astype("float32", copy=True), scores, None


def _inference_backend(weights: Path, device: "torch.device", end2end: bool | None):
    """Ultralytics' ``AutoBackend`` over a checkpoint (FP32, fused) or an ONNX export, as its predictor runs it.

    ``end2end`` selects YOLO26's head of a checkpoint before fusing (True: the NMS-free one, whose top-k is then
    set as the predictor sets it before a run: 300, its ``max_det`` default, classes not merged; False: the dense
    one); None for an export, which holds one head."""
    ensure_ultralytics()
    from ultralytics.nn.autobackend import AutoBackend

    with _ultralytics_scope(False):
        backend = AutoBackend(str(weights), device=device, fp16=False, fuse=True, verbose=False, end2end=end2end)
    if backend.format == "pt" and end2end:
        backend.model.set_head_attr(max_det=ONE2ONE_MAX_DET, agnostic_nms=False)
    return backend


class UltralyticsDetector:
    """An Ultralytics model behind its own ``AutoBackend`` (PyTorch ``.pt``, fused as its predictor runs it, or
    ONNX Runtime for an ``.onnx`` export) with the letterbox its predictor uses: a minimal rectangle for PyTorch
    weights, the exported fixed shape for ONNX. Loading a ``.pt`` runs pickled code: only for files you trust.

    ``augment``: Ultralytics' augmented forward (``predict(augment=True)``), which it has for the dense head of a
    PyTorch model only: YOLO26's NMS-free head and ONNX exports are refused (Ultralytics itself would silently run
    one pass instead)."""

    postprocess = "ultralytics"  # the NMS order and box mapping the replay follows (Candidates.postprocess)

    def __init__(self, weights: Path, imgsz: int, device: "torch.device", n_classes: int,
                 variant: str | None = None, augment: bool = False) -> None:
        ensure_ultralytics()
        from ultralytics.utils.checks import check_imgsz

        onnx = weights.suffix.lower() == ".onnx"
        if augment and onnx:
            raise ValueError(f"{weights}: test-time augmentation runs Ultralytics' augmented forward of the PyTorch "
                             "model; an exported model runs one pass: use the .pt checkpoint, or TTA off")
        self.augment = augment
        self.n_views = TTA_VIEWS if augment else 1
        if onnx:
            load_onnx(weights)  # a truncated or foreign file: an error naming it, before ONNX Runtime's own
            self.variant = _check_onnx_variant(weights, variant)
        else:
            self.variant = _choose_variant(_has_one2one(load_checkpoint(weights)["model"]), variant, str(weights))
        self.model = _inference_backend(weights, device, end2end=None if onnx else self.variant == "one2one")
        self.end_to_end = bool(self.model.end2end)
        if augment:
            from ultralytics.nn.modules.head import Detect

            # Ultralytics' own condition (DetectionModel._predict_augment), under which it falls back to one pass
            if self.end_to_end or type(self.model.model.model[-1]) is not Detect:
                raise ValueError(f"{weights}: Ultralytics has no augmented forward for this head "
                                 f"({self.variant}); TTA needs the dense head with NMS (variant one2many)")
        self.stride = int(self.model.stride)
        self.n_classes = len(self.model.names)
        if self.n_classes != n_classes:
            raise ValueError(f"{weights}: the model predicts {self.n_classes} classes, expected {n_classes}")
        self.max_batch: int | None = None
        self.auto = not onnx
        if onnx:
            b, _, h, w = self.model.session.get_inputs()[0].shape
            self.max_batch = b if isinstance(b, int) else None
            if (h, w) != (imgsz, imgsz):
                raise ValueError(f"{weights}: exported for input {w}x{h}, asked for --imgsz {imgsz}")
            self.imgsz: tuple[int, int] = (h, w)
        else:
            self.imgsz = tuple(check_imgsz(imgsz, stride=self.stride, min_dim=2))  # type: ignore[assignment]

    def letterbox(self, image_bgr: "np.ndarray") -> "np.ndarray":
        """The network input of one BGR image: CHW RGB uint8, letterboxed as Ultralytics' predictor does."""
        import numpy as np
        from ultralytics.data.augment import LetterBox

        out = LetterBox(self.imgsz, auto=self.auto, stride=self.stride)(image=image_bgr)
        return np.ascontiguousarray(out.transpose((2, 0, 1))[::-1])  # HWC BGR -> CHW RGB

    def candidates(self, batch: "np.ndarray", conf_floor: float) -> list[tuple]:
        """Per image of a uint8 batch ``(b, 3, h, w)``: ``(boxes, scores, None, end_to_end, views)``, ``views``
        each row's view of the augmented forward (None without ``augment``)."""
        import torch

        with torch.inference_mode():
            im = torch.from_numpy(batch).to(self.model.device).float().div_(255)
            if self.augment:
                net = self.model.model  # the DetectionModel behind AutoBackend
                with counting_head_rows(net.model[-1], dim=-1) as counts:
                    pred = self.model(im, augment=True)
            else:
                pred = self.model(im)
        if isinstance(pred, (list, tuple)):
            pred = pred[0]
        pred = pred.float().cpu()
        if self.end_to_end:
            return [(*end_to_end_rows_to_candidates(p, conf_floor, self.n_classes), True, None) for p in pred]
        if pred.shape[1] != 4 + self.n_classes:
            raise ValueError(f"unexpected head output of shape {tuple(pred.shape)} (a segmentation model?)")
        if not self.augment:
            return [(*head_rows_to_candidates(p, conf_floor), False, None) for p in pred]
        # rows along axis 2 of Ultralytics' (images, 4 + classes, rows) output
        return augmented_candidates(pred, counts, net._clip_augmented, self.n_views, pred.shape[2],
                                    lambda p, rows: head_rows_to_candidates(p[:, rows], conf_floor))


def load_detector(weights: Path, imgsz: int, device: "torch.device", n_classes: int,
                  variant: str | None = None, augment: bool = False) -> UltralyticsDetector:
    """An :class:`UltralyticsDetector` for a checkpoint or an ONNX export of this engine (``augment``: TTA, for
    the dense head of a checkpoint only)."""
    return UltralyticsDetector(Path(weights), imgsz, device, n_classes, variant, augment)


# ================================================================ ONNX export


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _check_onnx_variant(path: Path, variant: str | None) -> str:
    """The head an ONNX export of this engine holds (Ultralytics records ``end2end`` in its metadata); asking for
    the other one is an error (an export holds one head)."""
    held = "one2one" if _onnx_metadata(path).get("end2end") == "True" else "one2many"
    if variant is not None and variant != held:
        raise ValueError(f"{path}: exported with the {held} head, not {variant}")
    return held


def export_onnx(weights: str | os.PathLike, imgsz: int, out_path: str | os.PathLike,
                variant: str | None = None) -> Path:
    """ONNX FP32 with a fixed ``(1, 3, imgsz, imgsz)`` input, opset 18, through Ultralytics' own exporter, saved
    as one file with the metadata key ``engine=ultralytics`` (and ``variant``). Ultralytics writes the export beside
    the weights; it runs on a link in a scratch folder instead, so the user's weights folder is left alone. An
    ``imgsz`` that is not a multiple of the model's stride is a ValueError naming the weights."""
    import onnx

    ensure_ultralytics()
    from ultralytics import YOLO

    weights = Path(weights).resolve()
    out_path = Path(out_path)
    model = load_checkpoint(weights)["model"]
    chosen = _choose_variant(_has_one2one(model), variant, str(weights))
    stride = int(max(model.stride))
    if int(imgsz) % stride:  # Ultralytics' exporter would round the size up and export another one
        raise ValueError(f"{weights}: imgsz {imgsz} is not a multiple of the model's stride {stride}")
    with weights_in_scratch(weights, out_path) as link:
        with _ultralytics_scope(False):
            produced = YOLO(str(link)).export(format="onnx", imgsz=int(imgsz), opset=ONNX_OPSET, dynamic=False,
                                              simplify=False, batch=1, device="cpu", nms=_nms_arg(chosen))
        if not produced or not Path(produced).is_file():
            raise RuntimeError(f"{weights}: ONNX export failed (no file written)")
        model = onnx.load(str(produced))
    set_onnx_metadata(model, engine=NAME, variant=chosen, precision="fp32")
    return save_onnx(model, out_path)
