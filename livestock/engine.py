"""YOLOv5 engine: the `yolov5` pip package (7.0.14) made to run on current numpy / torch / Pillow /
setuptools, offline, plus training, validation and checkpoint loading.

Every compatibility fix lives in :func:`ensure_yolov5`; every other module reaches YOLOv5 through it.

Security: YOLOv5 checkpoints are Python pickles, and loading one runs code from the file. The fix for
torch >= 2.6 (``weights_only=True`` by default) turns that safety off for YOLOv5's own loaders, so this
package only ever loads checkpoint files that the user names (or that its own training wrote).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_READY = False


def yolov5_config_dir() -> Path:
    """Where YOLOv5 looks for fonts and settings (``YOLOV5_CONFIG_DIR``); ours unless the user set one."""
    env = os.environ.get("YOLOV5_CONFIG_DIR")
    return Path(env) if env else Path.home() / ".cache" / "livestock" / "yolov5"


def _install_offline_fonts(config_dir: Path) -> None:
    # YOLOv5 downloads Arial.ttf when it checks a dataset and when it plots; there is no network here.
    # Matplotlib ships DejaVuSans, a font with the same role, so we place it under the names YOLOv5 asks for.
    import matplotlib

    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        dst = config_dir / name
        if not dst.exists():
            tmp = dst.with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)


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
    """
    global _READY
    if _READY:
        return
    try:
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
    _install_offline_fonts(config_dir)

    from PIL import ImageFont

    if not hasattr(ImageFont.FreeTypeFont, "getsize"):
        def getsize(self, text, *args, **kwargs):  # width, height as Pillow < 10 returned them
            left, top, right, bottom = self.getbbox(text, *args, **kwargs)
            return right - left, bottom - top

        ImageFont.FreeTypeFont.getsize = getsize  # type: ignore[attr-defined]

    import torch
    import yolov5.models.experimental
    import yolov5.train
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
    _READY = True


def _check_amp_offline(model) -> bool:
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

CONTEST_MAX_WEIGHT_MB = 100.0  # the contest's limit on the submitted weight file; MB = 10**6 bytes, as YOLOv5 prints
MODEL_NAMES: tuple[str, ...] = tuple(f"yolov5{size}{p6}" for p6 in ("", "6") for size in "nsmlx")
PRETRAINED_URL = "https://github.com/ultralytics/yolov5/releases/download/v7.0/{name}"
DOWNLOAD_TIMEOUT_S = 15.0
DEFAULT_HYP = "hyp_scratch_cpu"
PACKAGE_HYP_DIR = Path(__file__).resolve().parent / "hyp"
# Every key YOLOv5 7.0's train.py reads from a hyp file (``anchors`` is optional and may be added).
HYP_KEYS: tuple[str, ...] = (
    "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
    "box", "cls", "cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "fl_gamma",
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
    "flipud", "fliplr", "mosaic", "mixup", "copy_paste",
)
OPTIONAL_HYP_KEYS: tuple[str, ...] = ("anchors",)
METRIC_COLUMNS: tuple[str, ...] = ("images", "instances", "P", "R", "mAP@0.5", "mAP@0.5:0.95")
# YOLOv5 train options that pass through ``train(**options)`` unchanged; the others have their own arguments
# or would break the run-folder contract (resume, evolve).
PASSTHROUGH_OPTIONS = frozenset({
    "rect", "image_weights", "multi_scale", "single_cls", "sync_bn", "quad", "label_smoothing", "freeze",
    "save_period", "noautoanchor", "nosave",
})


class WeightSizeError(ValueError):
    """The trained weight file is larger than the size limit (the contest's 100 MB by default)."""


class PretrainedWeightsError(FileNotFoundError):
    """Pretrained weights were asked for by name, are not on disk, and could not be downloaded."""


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
    name = Path(str(model)).name
    stem = name[:-5] if name.endswith(".yaml") else name
    if str(model) in (stem, name) and stem in MODEL_NAMES:
        pkg = yolov5_package_dir() / "models"
        for candidate in (pkg / f"{stem}.yaml", pkg / "hub" / f"{stem}.yaml"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{stem}.yaml not found under {pkg} (is yolov5 7.0.14 installed?)")
    path = Path(model)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    raise ValueError(f"unknown model {str(model)!r}: use one of {', '.join(MODEL_NAMES)} or a model yaml path")


def resolve_device(device: str | None = "auto") -> str:
    """YOLOv5's device string: ``auto`` is GPU 0 when CUDA is available, else ``cpu``; ``cuda``/``cuda:N`` -> ``N``;
    anything else (``cpu``, ``0``, ``0,1``, ``mps``) passes through."""
    d = (device or "auto").strip().lower()
    if d == "auto":
        import torch

        return "0" if torch.cuda.is_available() else "cpu"
    if d == "cuda":
        return "0"
    return d.replace("cuda:", "")


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
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    try:
        with response, open(tmp, "wb") as f, tqdm(total=total or None, unit="B", unit_scale=True,
                                                  desc=f"download {dst.name}") as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
        if tmp.stat().st_size < 100_000 or (total and tmp.stat().st_size != total):
            raise OSError(f"incomplete download of {url} ({tmp.stat().st_size} bytes)")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def resolve_weights(weights: str | os.PathLike | None, download_dir: str | os.PathLike | None = None,
                    timeout_s: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Absolute path of the starting weights, or ``''`` to train from scratch (``weights`` None or empty).

    A path that exists is used as is. A bare pretrained name (``yolov5m6.pt`` or ``yolov5m6``) is looked up in
    the working directory and in ``download_dir`` (default ``trained_model/``), and only then downloaded from
    the YOLOv5 v7.0 release into ``download_dir`` with a short timeout. Anything else that does not exist is a
    :class:`FileNotFoundError`; a failed download is a :class:`PretrainedWeightsError` that says what to do.
    Absolute paths also keep YOLOv5 from taking a relative name for a Hugging Face repository id.
    """
    from livestock.paths import TRAINED_MODEL_DIR

    if weights is None or str(weights).strip() in ("", "''", '""'):
        return ""
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path.resolve())
    name = path.name if path.suffix else f"{path.name}.pt"
    if str(weights) not in (path.name,) or name[:-3] not in MODEL_NAMES:
        raise FileNotFoundError(f"{path}: weights file not found")
    folder = Path(download_dir) if download_dir is not None else TRAINED_MODEL_DIR
    local = folder / name
    if local.is_file():
        return str(local.resolve())
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
    import yaml

    if isinstance(hyp, dict):
        source, values = "hyp", dict(hyp)
    else:
        path = hyp_path(hyp)
        source = str(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of hyper-parameters")
    missing = [k for k in HYP_KEYS if k not in values]
    unknown = [k for k in values if k not in HYP_KEYS and k not in OPTIONAL_HYP_KEYS]
    if missing or unknown:
        raise ValueError(f"{source}: " + "; ".join(
            ([f"missing keys {missing}"] if missing else []) + ([f"unknown keys {unknown}"] if unknown else [])))
    bad = [k for k, v in values.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        raise ValueError(f"{source}: non-numeric values for {bad}")
    return {k: float(values[k]) for k in HYP_KEYS} | {k: values[k] for k in OPTIONAL_HYP_KEYS if k in values}


# ================================================================ datasets


def load_data_yaml(data_yaml: str | os.PathLike) -> tuple[dict, bool]:
    """A YOLOv5 dataset file with every ``train``/``val``/``test`` entry made absolute, and whether YOLOv5 would
    read the file differently. Relative entries resolve against ``path``, and a missing or relative ``path``
    against the yaml's own folder, where YOLOv5 would take its own package folder."""
    import yaml

    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise FileNotFoundError(f"{data_yaml}: dataset yaml not found (run `livestock split` or `livestock prepare`)")
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{data_yaml}: not valid YAML: {e}") from e
    if not isinstance(data, dict) or any(k not in data for k in ("train", "val", "names")):
        raise ValueError(f"{data_yaml}: a YOLOv5 dataset yaml needs 'train', 'val' and 'names'")
    root = Path(data.get("path") or ".")
    root_is_ours = not root.is_absolute()
    if root_is_ours:
        root = (data_yaml.parent / root).resolve()
    data["path"] = str(root)
    changed = False

    def absolute(entry: str) -> str:
        p = Path(entry)
        return str(p if p.is_absolute() else (root / p).resolve())

    for key in ("train", "val", "test"):
        entry = data.get(key)
        if not entry:
            continue
        new = absolute(entry) if isinstance(entry, str) else [absolute(e) for e in entry]
        changed |= root_is_ours and new != entry
        data[key] = new
        for p in [new] if isinstance(new, str) else new:
            if not Path(p).exists():
                raise FileNotFoundError(f"{data_yaml}: {key} entry {p} does not exist")
    return data, changed


def _data_yaml_for_yolov5(data_yaml: str | os.PathLike, run_dir: Path) -> str:
    """The yaml path to hand to YOLOv5: the user's file when already absolute, else a resolved copy in the run."""
    import yaml

    from livestock.records import atomic_write_text

    data, changed = load_data_yaml(data_yaml)
    if not changed:
        return str(Path(data_yaml).resolve())
    return str(atomic_write_text(run_dir / "data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True)))


def _run_dir(project: str | os.PathLike, name: str, exist_ok: bool) -> Path:
    """``project/name``; when it exists and ``exist_ok`` is False, ``name2``, ``name3``, ... as YOLOv5 does."""
    ensure_yolov5()
    from yolov5.utils.general import increment_path

    return Path(increment_path(Path(project) / name, exist_ok=exist_ok)).resolve()


# ================================================================ quiet runs, per-class metrics


@contextlib.contextmanager
def _yolov5_output(verbose: bool) -> Iterator[None]:
    """Without ``verbose``: only YOLOv5's warnings and its tqdm bars, not its INFO log (arguments, model summary,
    per-epoch tables) nor torch's per-batch AMP deprecation notices. Restored afterwards."""
    import logging
    import warnings

    ensure_yolov5()
    from yolov5.utils.general import LOGGER

    loggers = [LOGGER, logging.getLogger("ultralytics")]  # the latter notes its skipped requirements check
    levels = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\..*deprecated", category=FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _ValCapture:
    """Per-class precision, recall and APs of YOLOv5's validation, which ``val.run`` computes but only prints.

    It listens to two of YOLOv5's validation callbacks (start: reset; batch end: count images and labelled
    instances per class) and, while active, wraps ``yolov5.val.ap_per_class`` to keep its result. The last
    validation of a run wins: in training that is the final validation of ``best.pt``."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self.reset()

    def reset(self) -> None:
        self.images = 0
        self.instances = {c: 0 for c in self.names}
        self.images_with = {c: 0 for c in self.names}
        self.ap_result: tuple | None = None

    def on_val_start(self) -> None:
        self.reset()

    def on_val_batch_end(self, batch_i, im, targets, paths, shapes, preds) -> None:
        t = targets[:, :2].detach().cpu().numpy().astype(int)  # image index in batch, class
        self.images += int(im.shape[0])
        for c in self.names:
            rows = t[t[:, 1] == c]
            self.instances[c] += len(rows)
            self.images_with[c] += len(set(rows[:, 0].tolist()))

    def callbacks(self):
        from yolov5.utils.callbacks import Callbacks

        cb = Callbacks()
        cb.register_action("on_val_start", name="livestock", callback=self.on_val_start)
        cb.register_action("on_val_batch_end", name="livestock", callback=self.on_val_batch_end)
        return cb

    @contextlib.contextmanager
    def active(self) -> Iterator["_ValCapture"]:
        import yolov5.val

        original = yolov5.val.ap_per_class

        def ap_per_class(*args, **kwargs):
            self.ap_result = original(*args, **kwargs)
            return self.ap_result

        yolov5.val.ap_per_class = ap_per_class
        try:
            yield self
        finally:
            yolov5.val.ap_per_class = original

    def table(self) -> pd.DataFrame:
        """Rows ``all`` and one per class: images (holding the class), instances, P, R, mAP@0.5, mAP@0.5:0.95.
        ``all`` averages over classes with labels, as YOLOv5 prints it; a class without labels gets NaN."""
        import numpy as np
        import pandas as pd

        per = {c: (0.0, 0.0, 0.0, 0.0) if self.instances[c] else (np.nan,) * 4 for c in self.names}
        if self.ap_result is not None:  # YOLOv5 skips the computation when nothing at all was detected correctly
            _tp, _fp, p, r, _f1, ap, classes = self.ap_result
            for i, c in enumerate(classes):
                per[int(c)] = (float(p[i]), float(r[i]), float(ap[i, 0]), float(ap[i].mean()))
        labelled = [per[c] for c in self.names if self.instances[c]]
        mean = tuple(float(np.mean(col)) for col in zip(*labelled)) if labelled else (np.nan,) * 4
        rows = [("all", self.images, sum(self.instances.values()), *mean)]
        rows += [(self.names[c], self.images_with[c], self.instances[c], *per[c]) for c in self.names]
        df = pd.DataFrame(rows, columns=["class", *METRIC_COLUMNS]).set_index("class")
        return df.astype({"images": int, "instances": int})


def _names(data: dict) -> dict[int, str]:
    names = data["names"]
    return dict(enumerate(names)) if isinstance(names, (list, tuple)) else {int(k): str(v) for k, v in names.items()}


def fitness_yolov5(metrics: pd.DataFrame) -> float:
    """YOLOv5's fitness of a per-class table: 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95 of the ``all`` row."""
    return 0.1 * float(metrics.loc["all", "mAP@0.5"]) + 0.9 * float(metrics.loc["all", "mAP@0.5:0.95"])


# ================================================================ checkpoints


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a YOLOv5 checkpoint dict on the CPU. It is a pickle: loading it runs code from the file, so only
    call this on files you trust (the ones you name, or that this package's training wrote)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ensure_yolov5()  # model classes importable, also as the bare `models.yolo` that release checkpoints name
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("model") is None:
        raise ValueError(f"{path}: not a YOLOv5 checkpoint (expected a dict with a 'model' entry)")
    return ckpt


def checkpoint_size_report(path: str | os.PathLike, limit_mb: float = CONTEST_MAX_WEIGHT_MB) -> dict:
    """Size of any YOLOv5 checkpoint against a limit (the contest's 100 MB; MB = 10**6 bytes, which is stricter
    than MiB). ``stripped_fp16_mb`` is the exact size the file has after YOLOv5's ``strip_optimizer`` (EMA
    weights kept, FP16, no optimizer state), measured by saving that form to a temporary file of the same name: the size of the
    file you would submit. Loads the checkpoint (a pickle): only for files you trust."""
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
    import warnings

    report = checkpoint_size_report(path, limit_mb=max_weight_mb)
    if not report["within_limit"]:
        msg = (f"{path}: stripped FP16 weights are {report['stripped_fp16_mb']:.1f} MB, over the "
               f"{max_weight_mb:g} MB limit (choose a smaller model, e.g. yolov5m6 is about 68 MB)")
        if fail_on_oversize:
            raise WeightSizeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return report


# ================================================================ training


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
        return float(self.metrics.loc["all", "mAP@0.5"])

    @property
    def map50_95(self) -> float:
        return float(self.metrics.loc["all", "mAP@0.5:0.95"])

    @property
    def fitness(self) -> float:
        return fitness_yolov5(self.metrics)

    def summary(self) -> str:
        limit = self.size_report["limit_mb"]
        flag = "within" if self.size_report["within_limit"] else "OVER"
        return (f"run folder: {self.save_dir}\nbest weights: {self.best} ({self.weight_mb:.1f} MB, {flag} the "
                f"{limit:g} MB limit)\nepochs run: {self.epochs_run}\n{self.metrics.round(4).to_string()}")


def _yolov5_train_opt(**settings):
    """YOLOv5's own option namespace with its defaults, then ``settings``. The command line of the current
    process is hidden from YOLOv5's parser (pytest's or Jupyter's arguments are not YOLOv5's)."""
    import sys

    import yolov5.train

    argv = sys.argv
    sys.argv = argv[:1]
    try:
        opt = yolov5.train.parse_opt(known=True)
    finally:
        sys.argv = argv
    for key, value in settings.items():
        if not hasattr(opt, key):
            raise ValueError(f"unknown YOLOv5 train option {key!r}")
        setattr(opt, key, value)
    return opt


def train(
    data_yaml: str | os.PathLike,
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    hyp: str | os.PathLike | dict = DEFAULT_HYP,
    imgsz: int = 640,
    epochs: int = 100,
    batch_size: int = 16,
    device: str = "auto",
    workers: int = 8,
    project: str | os.PathLike = "runs/train",
    name: str = "exp",
    exist_ok: bool = False,
    linear_lr: bool = True,
    optimizer: str = "SGD",
    seed: int = 0,
    patience: int = 100,
    cache: str | None = None,
    max_weight_mb: float = CONTEST_MAX_WEIGHT_MB,
    fail_on_oversize: bool = False,
    plots: bool = True,
    verbose: bool = False,
    **options,
) -> TrainResult | None:
    """Train YOLOv5 (``yolov5.train``) and return the run folder, weights and final per-class metrics.

    - ``model``: architecture by name (yolov5n/s/m/l/x, P6 yolov5n6/s6/m6/l6/x6) or yaml path. Default:
      ``yolov5n`` from scratch; with ``weights`` and no ``model``, the checkpoint's own architecture.
    - ``weights``: None (from scratch), a checkpoint path, or a pretrained name (``yolov5m6.pt``), looked up in
      ``trained_model/`` and downloaded there if possible (see :func:`resolve_weights`). Checkpoints are pickles:
      loading one runs code, so start only from files you trust.
    - ``hyp``: dict, yaml path, or a shipped name (``hyp_scratch_cpu``, ``experiment_hyp_v1``, ``hyp.scratch-low``).
    - ``linear_lr``: linear LR decay from lr0 to lr0*lrf (the original's ``--linear-lr``); False: cosine.
    - ``project``/``name``: the run folder ``project/name``. If it exists and ``exist_ok`` is False a new one,
      ``name2``, ``name3``, ..., is made (YOLOv5's rule); with ``exist_ok`` the folder is reused and its files
      overwritten.
    - ``device``: ``auto`` (GPU 0 if CUDA is available, else CPU), ``cpu``, ``0``, ``0,1``.
    - ``options``: other YOLOv5 train options, see :data:`PASSTHROUGH_OPTIONS` (e.g. ``freeze=[10]``, ``rect=True``).
    - After training, ``best.pt`` (stripped, FP16) is checked against ``max_weight_mb``: over the limit is a
      warning, or a :class:`WeightSizeError` with ``fail_on_oversize`` (the weights stay on disk).
    - ``verbose=False`` keeps YOLOv5's progress bars and warnings but not its INFO log.

    Multi-GPU (DDP) runs go through ``python -m torch.distributed.run``; there every process calls this, and
    only rank 0 returns a result (the others return None).
    """
    ensure_yolov5()
    unknown = set(options) - PASSTHROUGH_OPTIONS
    if unknown:
        raise ValueError(f"unsupported train options {sorted(unknown)}; allowed: {sorted(PASSTHROUGH_OPTIONS)}")
    if optimizer not in ("SGD", "Adam", "AdamW"):
        raise ValueError(f"optimizer must be SGD, Adam or AdamW, not {optimizer!r}")
    if epochs < 1 or batch_size < 1 or imgsz < 32:
        raise ValueError(f"need epochs >= 1, batch_size >= 1 and imgsz >= 32 (got {epochs}, {batch_size}, {imgsz})")
    data, _ = load_data_yaml(data_yaml)
    hyp_values = load_hyp(hyp)
    start = resolve_weights(weights)
    cfg = str(model_cfg(model or "yolov5n")) if (model or not start) else ""

    import yaml
    import yolov5.train

    from livestock.records import atomic_write_text

    save_dir = _run_dir(project, name, exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    hyp_file = atomic_write_text(save_dir / "hyp.yaml", yaml.safe_dump(hyp_values, sort_keys=False))
    opt = _yolov5_train_opt(
        data=_data_yaml_for_yolov5(data_yaml, save_dir), cfg=cfg, weights=start, hyp=str(hyp_file),
        imgsz=int(imgsz), epochs=int(epochs), batch_size=int(batch_size), device=resolve_device(device),
        workers=int(workers), project=str(save_dir.parent), name=save_dir.name, exist_ok=True,
        cos_lr=not linear_lr, optimizer=optimizer, seed=int(seed), patience=int(patience), cache=cache,
        noplots=not plots, **options,
    )
    capture = _ValCapture(_names(data))
    # A fresh Callbacks object per run: YOLOv5's `run()` reuses one default instance, so every earlier run's
    # loggers would keep writing into their old folders (and slow down) when training several times in a process.
    with _yolov5_output(verbose), capture.active():
        yolov5.train.main(opt, callbacks=capture.callbacks())
    if int(os.getenv("RANK", -1)) > 0:
        return None
    best, last = save_dir / "weights" / "best.pt", save_dir / "weights" / "last.pt"
    if not best.is_file():
        best = last
    report = check_weight_size(best, max_weight_mb, fail_on_oversize)
    epochs_run = _epochs_in_results(save_dir / "results.csv")
    return TrainResult(save_dir=save_dir, best=best, last=last, data_yaml=Path(data_yaml), imgsz=int(imgsz),
                       metrics=capture.table(),
                       weight_mb=report["file_mb"], size_report=report, hyp=hyp_values, epochs_run=epochs_run)


def _epochs_in_results(results_csv: Path) -> int:
    if not results_csv.is_file():
        return 0
    lines = [ln for ln in results_csv.read_text().splitlines() if ln.strip()]
    return max(len(lines) - 1, 0)


# ================================================================ validation


def validate(
    weights: str | os.PathLike,
    data_yaml: str | os.PathLike,
    imgsz: int = 640,
    conf: float = 0.001,
    iou: float = 0.6,
    device: str = "auto",
    split: str = "val",
    batch_size: int = 32,
    workers: int = 8,
    project: str | os.PathLike = "runs/val",
    name: str = "exp",
    exist_ok: bool = False,
    half: bool = True,
    plots: bool = True,
    save_txt: bool = False,
    verbose: bool = False,
) -> pd.DataFrame:
    """Validate weights (``yolov5.val``) on a split of a dataset yaml; per-class table as the error analysis
    shows it: index ``all`` and each class, columns images, instances, P, R, mAP@0.5, mAP@0.5:0.95.

    The run folder (``project/name``, incremented unless ``exist_ok``) gets YOLOv5's plots and ``per_class.csv``;
    with ``save_txt`` also ``labels/<image stem>.txt`` (class, normalised x y w h, confidence). Its path is in
    ``table.attrs['save_dir']``. ``half`` applies on CUDA only. Loading ``.pt`` weights runs pickled code:
    validate only weights you trust.
    """
    ensure_yolov5()
    weights = Path(weights)
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: weights not found")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, not {split!r}")
    data, _ = load_data_yaml(data_yaml)
    if not data.get(split):
        raise ValueError(f"{data_yaml}: no '{split}' entry")

    import yolov5.val

    from livestock.records import atomic_write_csv

    save_dir = _run_dir(project, name, exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    capture = _ValCapture(_names(data))
    with _yolov5_output(verbose), capture.active():
        yolov5.val.run(
            data=_data_yaml_for_yolov5(data_yaml, save_dir), weights=str(weights.resolve()), batch_size=batch_size,
            imgsz=int(imgsz), conf_thres=conf, iou_thres=iou, task=split, device=resolve_device(device),
            workers=workers, save_txt=save_txt, save_conf=save_txt, project=str(save_dir.parent),
            name=save_dir.name, exist_ok=True, half=half, plots=plots, callbacks=capture.callbacks(),
        )
    table = capture.table()
    atomic_write_csv(table, save_dir / "per_class.csv", index=True)
    table.attrs["save_dir"] = str(save_dir)
    return table


# ================================================================ command line


def cli_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset yaml (e.g. data/splits/multilabel/data.yaml)")
    p.add_argument("--model", default=None, help=f"architecture: {', '.join(MODEL_NAMES)} or a yaml "
                                                "(default yolov5n from scratch, else the checkpoint's own)")
    p.add_argument("--weights", default="", help="'' = from scratch; a checkpoint path; or a pretrained name "
                                                 "(yolov5m6.pt: trained_model/ or download)")
    p.add_argument("--hyp", default=DEFAULT_HYP, help="hyp yaml path or shipped name (default %(default)s)")
    p.add_argument("--img", "--imgsz", dest="imgsz", type=int, default=640)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu, 0, 0,1 (default %(default)s)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of making name2, name3, ...")
    p.add_argument("--linear-lr", action=argparse.BooleanOptionalAction, default=True,
                   help="linear LR decay (default); --no-linear-lr for cosine")
    p.add_argument("--optimizer", choices=["SGD", "Adam", "AdamW"], default="SGD")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=100, help="early-stopping patience in epochs")
    p.add_argument("--cache", choices=["ram", "disk"], default=None, help="cache images in ram or on disk")
    p.add_argument("--freeze", type=int, nargs="+", default=[0], help="freeze the first N layers (10: backbone)")
    p.add_argument("--max-weight-mb", type=float, default=CONTEST_MAX_WEIGHT_MB)
    p.add_argument("--fail-on-oversize", action="store_true", help="error (exit 1) when best.pt exceeds the limit")
    p.add_argument("--verbose", action="store_true", help="YOLOv5's full log")


def cli_train(args: argparse.Namespace) -> int:
    result = train(
        args.data, model=args.model, weights=args.weights or None, hyp=args.hyp, imgsz=args.imgsz,
        epochs=args.epochs, batch_size=args.batch_size, device=args.device, workers=args.workers,
        project=args.project, name=args.name, exist_ok=args.exist_ok, linear_lr=args.linear_lr,
        optimizer=args.optimizer, seed=args.seed, patience=args.patience, cache=args.cache, freeze=args.freeze,
        max_weight_mb=args.max_weight_mb, fail_on_oversize=args.fail_on_oversize, verbose=args.verbose,
    )
    if result is not None:
        print(result.summary())
    return 0


def cli_val_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="checkpoint (.pt) or exported model (.onnx)")
    p.add_argument("--data", required=True, help="dataset yaml")
    p.add_argument("--img", "--imgsz", dest="imgsz", type=int, default=640)
    p.add_argument("--conf", type=float, default=0.001, help="confidence threshold (default %(default)s)")
    p.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold (default %(default)s)")
    p.add_argument("--split", choices=["train", "val", "test"], default="val")
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--project", default="runs/val")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--save-txt", action="store_true", help="also write labels/<stem>.txt with confidences")
    p.add_argument("--verbose", action="store_true")


def cli_val(args: argparse.Namespace) -> int:
    table = validate(
        args.weights, args.data, imgsz=args.imgsz, conf=args.conf, iou=args.iou, device=args.device,
        split=args.split, batch_size=args.batch_size, workers=args.workers, project=args.project, name=args.name,
        exist_ok=args.exist_ok, save_txt=args.save_txt, verbose=args.verbose,
    )
    print(table.round(4).to_string())
    print(f"saved to {table.attrs['save_dir']}")
    return 0
