"""YOLOv5 engine: the `yolov5` pip package (7.0.14) made to run on current numpy / torch / Pillow /
setuptools, offline, plus training, validation and checkpoint loading.

Every compatibility fix lives in :func:`ensure_yolov5`; every other module reaches YOLOv5 through it.

Security: YOLOv5 checkpoints are Python pickles, and loading one runs code from the file. The fix for
torch >= 2.6 (``weights_only=True`` by default) turns that safety off for YOLOv5's own loaders, so this
package only ever loads checkpoint files that the user names (or that its own training wrote).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

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
    """Apply the four compatibility fixes, once, before anything from ``yolov5`` is imported.

    1. ``import pkg_resources`` (removed in setuptools 81): needs ``setuptools<81``, checked here with a clear error.
    2. ``numpy.trapz`` (removed in numpy 2.4): aliased to ``numpy.trapezoid``, which computes the same integral.
    3. ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, which cannot load YOLOv5's pickled
       checkpoints: YOLOv5's own loaders get ``weights_only=False`` (see the module docstring on trust).
    4. Fonts: ``YOLOV5_CONFIG_DIR`` points at a folder holding a local font, and Pillow >= 10's removed
       ``FreeTypeFont.getsize`` (used by YOLOv5's plotting threads) is provided again from ``getbbox``.
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
    _READY = True
