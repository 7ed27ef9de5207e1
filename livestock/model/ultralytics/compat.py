"""Ultralytics (the ``ultralytics`` pip package, 8.4) made to run offline and to leave the user's machine alone.

Every fix lives in :func:`ensure_ultralytics`; the Ultralytics engine reaches the package only through it.

Left to itself, Ultralytics reaches the network in several places that matter here (no network on these machines,
and a training run must never change the user's environment or report on it):

- at import it resolves two DNS names to decide whether it is online (``ONLINE``), and creates or rewrites a
  settings file in the user's config folder (``~/.config/Ultralytics/settings.json`` on Linux);
- it downloads ``Arial.ttf`` / ``Arial.Unicode.ttf`` when it checks a dataset and when it plots;
- before a GPU training run its AMP check downloads ``yolo26n.pt`` and compares FP32 with FP16 predictions;
- it pip-installs missing requirements (``YOLO_AUTOINSTALL``), sends usage events (settings ``sync``), and
  streams training runs to Ultralytics Platform when an API key is set.

Security: Ultralytics checkpoints are Python pickles, and loading one runs code from the file; its loader sets
``weights_only=False`` itself. Load only weight files you trust (the ones you name, or that this package trained).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from livestock.fileio import atomic_link_or_copy

_READY = False
# Read by Ultralytics once, when ``ultralytics.utils`` is first imported.
OFFLINE_ENVIRONMENT: dict[str, str] = {
    "YOLO_OFFLINE": "1",  # ONLINE = False without the DNS probe: no events, no requirement auto-updates
    "YOLO_AUTOINSTALL": "false",  # report a missing requirement instead of pip-installing it
}
# Settings that would send data away: usage events (sync) and the experiment-tracker integrations a training run
# turns on by itself when their package happens to be installed.
OFFLINE_SETTINGS: dict[str, bool] = {
    "sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False, "raytune": False,
    "tensorboard": False, "wandb": False,
}
FONT_NAMES: tuple[str, ...] = ("Arial.ttf", "Arial.Unicode.ttf")  # the fonts Ultralytics' check_font asks for


def ultralytics_config_dir() -> Path:
    """The folder given to Ultralytics as ``YOLO_CONFIG_DIR`` (ours unless the user set one); Ultralytics keeps its
    settings and fonts in the ``Ultralytics`` folder under it."""
    env = os.environ.get("YOLO_CONFIG_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "livestock" / "ultralytics"


def set_ultralytics_environment() -> None:
    """Set the environment variables Ultralytics reads at import (config folder, offline, no auto-install), where
    the user has not set them. Imports nothing: call it before anything imports ``ultralytics`` (``yolov5`` does)."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ultralytics_config_dir()))
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


@contextmanager
def threads_kept() -> Iterator[None]:
    """Load torch, run the block (an engine's imports), then put ``OMP_NUM_THREADS`` back as it was. Both engines'
    imports set it (``ultralytics`` to 1 where it is unset, ``yolov5`` to ``cpu_count - 1``); torch loaded first
    keeps the threads it would have had (OpenMP reads the variable when torch loads), and restoring the variable
    keeps processes started afterwards (notebook kernels, search workers, DDP ranks) at the user's count too."""
    import torch  # noqa: F401 - loaded before the engines' imports set the variable

    omp_threads = os.environ.get("OMP_NUM_THREADS")
    try:
        yield
    finally:
        if omp_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp_threads


def install_offline_fonts(folder: Path) -> None:
    """Put matplotlib's DejaVuSans in ``folder`` under the names both engines download Arial by (``FONT_NAMES``):
    a font with the same role, found locally, so their font checks never reach for the network."""
    import matplotlib

    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FONT_NAMES:
        dst = folder / name
        if not dst.exists():
            atomic_link_or_copy(src, dst)


def _check_amp_offline(model) -> bool:
    """Ultralytics' AMP decision without its check run: off on CPU and MPS (as Ultralytics decides there), on for
    accelerators. Its check downloads yolo26n.pt to compare FP32 with FP16 predictions; offline that fails. The
    decision is logged (``AMP: on`` / ``AMP: off``), as YOLOv5's is, so that a training log records it."""
    from ultralytics.utils import LOGGER, colorstr

    device = next(model.parameters()).device
    if device.type in ("cpu", "mps"):
        LOGGER.info(f"{colorstr('AMP: ')}off on {device.type} (Ultralytics uses AMP on accelerators only)")
        return False
    LOGGER.info(f"{colorstr('AMP: ')}on for {device} (Ultralytics' comparison with a downloaded yolo26n.pt is "
                "skipped)")
    return True


def ensure_ultralytics() -> None:
    """Make Ultralytics offline-safe, once, before it is used.

    1. Environment (:func:`set_ultralytics_environment`): ``YOLO_CONFIG_DIR`` points at our cache folder, so its
       settings file is ours, not the user's; ``YOLO_OFFLINE`` and ``YOLO_AUTOINSTALL=false``.
    2. Fonts: DejaVuSans placed as ``Arial.ttf`` / ``Arial.Unicode.ttf`` in the config folder Ultralytics uses.
    3. Settings: usage events and tracker integrations off (:data:`OFFLINE_SETTINGS`) - saved in our settings
       file, or only in memory when Ultralytics was imported earlier with the user's own folder (``yolov5``
       imports it), so the user's file is never rewritten.
    4. The online state and auto-install flag its modules copied at import are switched off, its usage-event
       sender disabled, and its Platform training callbacks (which upload when an API key is set) removed.
    5. ``check_amp``: no download; AMP stays on for GPU training and off on the CPU, as Ultralytics decides there.
    6. Threads (:func:`threads_kept`): importing ``ultralytics`` sets ``OMP_NUM_THREADS=1`` where it is unset;
       torch loaded after it computes with one thread (a 2-core machine trains YOLO11n at half speed), and so would
       every process started afterwards. torch is loaded first and the variable put back.
    """
    global _READY
    if _READY:
        return
    set_ultralytics_environment()

    with threads_kept():  # 6. above
        import ultralytics.engine.trainer
        import ultralytics.utils
        import ultralytics.utils.callbacks.platform
        import ultralytics.utils.checks
        import ultralytics.utils.events

    uu = ultralytics.utils
    config = Path(uu.USER_CONFIG_DIR)
    install_offline_fonts(config)

    settings = uu.SETTINGS
    if config.resolve().is_relative_to(ultralytics_config_dir().resolve()):
        settings.update(OFFLINE_SETTINGS)  # our own file: subprocesses (DDP workers) read it too
    else:
        dict.update(settings, OFFLINE_SETTINGS)  # JSONDict.update would rewrite the user's file

    for module in (uu, ultralytics.utils.checks, ultralytics.utils.events):
        if hasattr(module, "ONLINE"):
            module.ONLINE = False
    uu.AUTOINSTALL = False
    ultralytics.utils.checks.AUTOINSTALL = False
    ultralytics.utils.events.events.enabled = False
    ultralytics.utils.callbacks.platform.callbacks = {}  # add_integration_callbacks reads this dict per trainer

    ultralytics.utils.checks.check_amp = _check_amp_offline
    ultralytics.engine.trainer.check_amp = _check_amp_offline  # the trainer's own reference
    _READY = True
