"""YOLOv5 made to run here: the `yolov5` pip package (7.0.14) on current numpy / torch / Pillow / setuptools,
offline; model, weight and hyp-file resolution; checkpoint loading and the weight-size guard.

Every compatibility fix lives in :func:`ensure_yolov5`; every other module reaches YOLOv5 through it.

Security: YOLOv5 checkpoints are Python pickles, and loading one runs code from the file. The fix for
torch >= 2.6 (``weights_only=True`` by default) turns that safety off for YOLOv5's own loaders, so this
package only ever loads checkpoint files that the user names (or that its own training wrote).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from livestock.fileio import atomic_output
from livestock.model.engine import CONTEST_MAX_WEIGHT_MB, PretrainedWeightsError, enforce_weight_size
from livestock.model.engine_files import find_start_weights, model_yaml_path, read_hyp, shipped_model_name
from livestock.model.ultralytics.compat import install_offline_fonts, set_ultralytics_environment, threads_kept

if TYPE_CHECKING:  # pragma: no cover
    import torch

_READY = False


def yolov5_config_dir() -> Path:
    """Where YOLOv5 looks for fonts and settings (``YOLOV5_CONFIG_DIR``); ours unless the user set one."""
    env = os.environ.get("YOLOV5_CONFIG_DIR")
    return Path(env) if env else Path.home() / ".cache" / "livestock" / "yolov5"


def ensure_yolov5() -> None:
    """Apply the compatibility fixes, once, before anything from ``yolov5`` is imported.

    1. ``import pkg_resources`` (removed in setuptools 81): needs ``setuptools<81``, checked here with a clear error.
    2. ``numpy.trapz`` (removed in numpy 2.4): aliased to ``numpy.trapezoid``, which computes the same integral.
    3. ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, which cannot load YOLOv5's pickled
       checkpoints: YOLOv5's own loaders get ``weights_only=False`` (see the module docstring on trust).
    4. Fonts: ``YOLOV5_CONFIG_DIR`` points at a folder holding a local font, and Pillow >= 10's removed
       ``FreeTypeFont.getsize`` (used by YOLOv5's plotting threads) is provided again from ``getbbox``.
    5. AMP check offline: YOLOv5's ``check_amp`` is replaced by :func:`_check_amp_offline`, which keeps AMP on
       for CUDA models without downloading a reference model (see there why).
    6. Threads of later processes: importing ``yolov5`` sets ``OMP_NUM_THREADS`` to ``cpu_count - 1`` (at most 8),
       over the user's own value. Its own process keeps the threads it started with (OpenMP read the variable when
       torch loaded), so the change reaches only processes started afterwards: notebook kernels, search workers,
       rehearsal stages. Those would compute with another thread count than the user chose, and so train other bits,
       depending on whether something imported yolov5 before starting them. The variable is put back as it was
       (:func:`~livestock.model.ultralytics.compat.threads_kept`).
    7. Hugging Face Hub: YOLOv5 asks the Hub about every weights string (training and ``DetectMultiBackend``) before
       it looks on disk, in code that imports ``huggingface_hub.utils._errors``, a module huggingface_hub 0.25
       removed (a machine with a newer hub fails on every load). This package hands YOLOv5 the absolute path of a
       file that exists (:func:`resolve_weights`) or ``''`` (from scratch); for those the lookup is skipped, and
       any other string still goes to YOLOv5's own.
    """
    global _READY
    if _READY:
        return
    set_ultralytics_environment()  # importing yolov5 imports ultralytics, which reads its settings at import
    try:
        with warnings.catch_warnings():
            # setuptools 80 warns on this import that the module will go; it is pinned below 81 for yolov5, so
            # the warning would only repeat on every command what the pin already handles.
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            import pkg_resources  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "yolov5 7.0.14 needs `pkg_resources`, which setuptools >= 81 removed: pip install 'setuptools<81'"
        ) from e

    # YOLOv5's train entry point asks Ultralytics to check its requirements and pip-install what it finds
    # missing or outdated; a training call must never change the user's environment behind their back.
    os.environ.setdefault("ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS", "1")

    import numpy as np

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # type: ignore[attr-defined]

    config_dir = yolov5_config_dir()
    os.environ.setdefault("YOLOV5_CONFIG_DIR", str(config_dir))
    install_offline_fonts(config_dir)  # YOLOv5 downloads Arial.ttf to check a dataset and to plot

    from PIL import ImageFont

    if not hasattr(ImageFont.FreeTypeFont, "getsize"):
        def getsize(self, text, *args, **kwargs):  # width, height as Pillow < 10 returned them
            left, top, right, bottom = self.getbbox(text, *args, **kwargs)
            return right - left, bottom - top

        ImageFont.FreeTypeFont.getsize = getsize  # type: ignore[attr-defined]

    import torch

    with threads_kept():  # 6. above
        import yolov5.models.common
        import yolov5.models.experimental
        import yolov5.train
        import yolov5.utils.downloads
        import yolov5.utils.general

    _torch_load = torch.load

    def _load_trusted(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return _torch_load(*args, **kwargs)

    class _TorchWithTrustedLoad:
        """The ``torch`` module as YOLOv5's loaders see it: identical except that ``load`` unpickles."""

        load = staticmethod(_load_trusted)

        def __getattr__(self, name):
            return getattr(torch, name)

    shim = _TorchWithTrustedLoad()
    for module in (yolov5.models.experimental, yolov5.train, yolov5.utils.general):
        module.torch = shim
    # train.py imported the function by name, so both bindings are replaced.
    yolov5.utils.general.check_amp = _check_amp_offline
    yolov5.train.check_amp = _check_amp_offline
    from_hub = yolov5.utils.downloads.attempt_download_from_hub

    def _local_before_hub(repo_id, *args, **kwargs):
        if not str(repo_id) or Path(str(repo_id)).exists():
            return None  # YOLOv5's "not a Hub model": it goes on with the path as given
        return from_hub(repo_id, *args, **kwargs)

    # imported by name into each module that calls it
    for module in (yolov5.utils.downloads, yolov5.train, yolov5.models.common):
        module.attempt_download_from_hub = _local_before_hub
    _READY = True


def _check_amp_offline(model: "torch.nn.Module") -> bool:
    """YOLOv5's ``check_amp`` without its download: AMP on for a model on a CUDA device, off elsewhere.

    YOLOv5 7.0.14 compares the model's FP32 and AMP detections on its bundled ``bus.jpg``; when they differ (or
    the comparison raises) it compares again with ``yolov5n.pt``, which it downloads. Offline that download
    raises at once and YOLOv5 turns AMP off, so a pretrained model whose two outputs differ slightly would train
    in FP32 (more memory, slower) for a reason that has nothing to do with the GPU. The check exists for a few
    consumer GPUs whose AMP gave wrong results; online, YOLOv5 keeps AMP on everywhere else, so on CUDA it stays
    on here too. The decision is logged (``AMP: on`` / ``AMP: off``) so that a training log records it.
    """
    from yolov5.utils.general import LOGGER, colorstr

    device = next(model.parameters()).device
    if device.type != "cuda":  # YOLOv5 uses AMP on CUDA only
        LOGGER.info(f"{colorstr('AMP: ')}off on {device.type} (AMP is used on CUDA devices only)")
        return False
    LOGGER.info(f"{colorstr('AMP: ')}on for {device} (YOLOv5's comparison with a downloaded yolov5n.pt is skipped)")
    return True


# ================================================================ models, weights, hyper-parameters

MODEL_NAMES: tuple[str, ...] = tuple(f"yolov5{size}{p6}" for p6 in ("", "6") for size in "nsmlx")
PRETRAINED_URL = "https://github.com/ultralytics/yolov5/releases/download/v7.0/{name}"
DOWNLOAD_TIMEOUT_S = 15.0
DEFAULT_HYP = "hyp_scratch_cpu"
PACKAGE_HYP_DIR = Path(__file__).resolve().parents[2] / "hyp"
# Every key YOLOv5 7.0's train.py reads from a hyp file (``anchors`` is optional and may be added).
HYP_KEYS: tuple[str, ...] = (
    "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
    "box", "cls", "cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "fl_gamma",
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
    "flipud", "fliplr", "mosaic", "mixup", "copy_paste",
)
OPTIONAL_HYP_KEYS: tuple[str, ...] = ("anchors",)
OPTIMIZERS: tuple[str, ...] = ("SGD", "Adam", "AdamW")  # what yolov5.train's --optimizer takes
# YOLOv5 train options that pass through ``train(**options)`` unchanged; the others have their own arguments
# or would break the run-folder contract (resume, evolve).
PASSTHROUGH_OPTIONS = frozenset({
    "rect", "image_weights", "multi_scale", "single_cls", "sync_bn", "quad", "label_smoothing", "freeze",
    "save_period", "noautoanchor", "nosave",
})


def yolov5_package_dir() -> Path:
    """The installed ``yolov5`` package folder, found without importing it (the import is heavy)."""
    import importlib.util

    spec = importlib.util.find_spec("yolov5")
    if spec is None or not spec.origin:
        raise ImportError("the `yolov5` package is not installed: pip install yolov5==7.0.14")
    return Path(spec.origin).resolve().parent


def model_cfg(model: str | os.PathLike) -> Path:
    """Path of a model architecture yaml: a name (``yolov5n`` ... ``yolov5x``, P6 ``yolov5n6`` ... ``yolov5x6``,
    with or without ``.yaml``) resolves to the yaml shipped inside the yolov5 package; a path is taken as is."""
    stem = shipped_model_name(model, MODEL_NAMES)
    if stem:
        pkg = yolov5_package_dir() / "models"
        for candidate in (pkg / f"{stem}.yaml", pkg / "hub" / f"{stem}.yaml"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{stem}.yaml not found under {pkg} (is yolov5 7.0.14 installed?)")
    return model_yaml_path(model, MODEL_NAMES)


def _download(url: str, dst: Path, timeout_s: float) -> None:
    """Fetch ``url`` to ``dst`` (atomically) or raise. Connecting runs in a thread with a hard deadline, because
    a socket timeout does not bound name resolution; reading has a per-read timeout, so a stall cannot hang."""
    import threading
    import urllib.request

    from tqdm import tqdm

    box: dict = {}

    def connect() -> None:
        try:
            box["response"] = urllib.request.urlopen(url, timeout=timeout_s)  # noqa: S310 - fixed https URL
        except BaseException as e:  # handed to the caller below
            box["error"] = e

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TimeoutError(f"no answer from {url} within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    response = box["response"]
    total = int(response.headers.get("Content-Length") or 0)
    with atomic_output(dst) as tmp, response, open(tmp, "wb") as f, \
            tqdm(total=total or None, unit="B", unit_scale=True, desc=f"download {dst.name}") as bar:
        while chunk := response.read(1 << 20):
            f.write(chunk)
            bar.update(len(chunk))
        f.flush()
        if tmp.stat().st_size < 100_000 or (total and tmp.stat().st_size != total):
            raise OSError(f"incomplete download of {url} ({tmp.stat().st_size} bytes)")


def resolve_weights(weights: str | os.PathLike | None, download_dir: str | os.PathLike | None = None,
                    timeout_s: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Absolute path of the starting weights, or ``''`` to train from scratch (``weights`` None or empty).

    A path that exists is used as is. A bare pretrained name (``yolov5m6.pt`` or ``yolov5m6``) is looked up in
    the working directory and in ``download_dir`` (default ``trained_model/``), and only then downloaded from
    the YOLOv5 v7.0 release into ``download_dir`` with a short timeout. Anything else that does not exist is a
    :class:`FileNotFoundError`; a failed download is a :class:`PretrainedWeightsError` that says what to do.
    Absolute paths also keep YOLOv5 from taking a relative name for a Hugging Face repository id.
    """
    found, local = find_start_weights(weights, MODEL_NAMES, download_dir)
    if local is None:
        return found
    name = local.name
    url = PRETRAINED_URL.format(name=name)
    try:
        _download(url, local, timeout_s)
    except Exception as e:
        raise PretrainedWeightsError(
            f"{name}: pretrained weights not found (looked for ./{name} and {local}) and the download from "
            f"{url} failed ({type(e).__name__}: {e}). Either put the file at {local}, or train from scratch: "
            f"weights=None with model='{name[:-3]}' (CLI: --weights '' --model {name[:-3]})."
        ) from e
    return str(local.resolve())


def hyp_path(hyp: str | os.PathLike) -> Path:
    """A hyp file: an existing path, or the name of one shipped with the package (``experiment_hyp_v1``,
    ``hyp_scratch_cpu``) or with YOLOv5 (``hyp.scratch-low``, ``hyp.scratch-med``, ...)."""
    path = Path(hyp)
    if path.is_file():
        return path
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if str(hyp) in (stem, path.name):
        for candidate in (PACKAGE_HYP_DIR / f"{stem}.yaml", yolov5_package_dir() / "data" / "hyps" / f"{stem}.yaml"):
            if candidate.is_file():
                return candidate
    shipped = sorted(p.stem for p in PACKAGE_HYP_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"{hyp}: hyp file not found (a path, or one of {', '.join(shipped)}, hyp.scratch-low)")


def load_hyp(hyp: str | os.PathLike | dict) -> dict:
    """Hyper-parameters as a dict with every key YOLOv5 needs (see :data:`HYP_KEYS`), from a dict, a path or a
    shipped name. Missing, unknown (a typo would otherwise be ignored silently) or non-numeric keys are errors."""
    return read_hyp(hyp, hyp_path, HYP_KEYS, OPTIONAL_HYP_KEYS)


# ================================================================ checkpoints


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a YOLOv5 checkpoint dict on the CPU. It is a pickle: loading it runs code from the file, so only
    call this on files you trust (the ones you name, or that this package's training wrote)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ensure_yolov5()  # model classes importable, also as the bare `models.yolo` that release checkpoints name
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # EOFError, UnpicklingError, RuntimeError (zip), ...: whatever a truncated file raises
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (empty, truncated or another format?): "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("model") is None:
        raise ValueError(f"{path}: not a YOLOv5 checkpoint (expected a dict with a 'model' entry)")
    return ckpt


def checkpoint_size_report(path: str | os.PathLike, limit_mb: float = CONTEST_MAX_WEIGHT_MB) -> dict:
    """Size of any YOLOv5 checkpoint against a limit (the contest's 100 MB; MB = 10**6 bytes, which is stricter
    than MiB). ``stripped_fp16_mb`` is the exact size the file has after YOLOv5's ``strip_optimizer`` (EMA
    weights kept, FP16, no optimizer state), measured by saving that form to a temporary file of the same name: the
    size of the file you would submit. Loads the checkpoint (a pickle): only for files you trust."""
    import copy
    import tempfile

    import torch

    path = Path(path)
    ckpt = load_checkpoint(path)
    model = ckpt.get("ema") or ckpt["model"]
    params = list(model.parameters())
    already = (ckpt.get("optimizer") is None and ckpt.get("ema") is None
               and all(p.dtype == torch.float16 for p in params if p.is_floating_point()))
    stripped = dict(ckpt)
    stripped.update(model=copy.deepcopy(model).half(), optimizer=None, best_fitness=None, ema=None, updates=None,
                    epoch=-1)
    for p in stripped["model"].parameters():
        p.requires_grad = False
    # Saved under the same file name: torch's zip records carry the name, which shifts the size slightly.
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(stripped, Path(tmp) / path.name)
        stripped_mb = (Path(tmp) / path.name).stat().st_size / 1e6
    return {
        "path": str(path),
        "file_mb": path.stat().st_size / 1e6,
        "stripped_fp16_mb": stripped_mb,
        "parameters": int(sum(p.numel() for p in params)),
        "is_stripped_fp16": bool(already),
        "epoch": ckpt.get("epoch"),
        "limit_mb": float(limit_mb),
        "within_limit": bool(stripped_mb <= limit_mb),
    }


def check_weight_size(path: str | os.PathLike, max_weight_mb: float = CONTEST_MAX_WEIGHT_MB,
                      fail_on_oversize: bool = False) -> dict:
    """:func:`checkpoint_size_report`, plus a warning (or, with ``fail_on_oversize``, a :class:`WeightSizeError`)
    when the stripped FP16 weights exceed ``max_weight_mb``."""
    return enforce_weight_size(checkpoint_size_report(path, limit_mb=max_weight_mb), max_weight_mb,
                               fail_on_oversize, hint="choose a smaller model, e.g. yolov5m6 is about 68 MB")
