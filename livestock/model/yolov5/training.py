"""YOLOv5 training and validation (``yolov5.train`` / ``yolov5.val``) with per-epoch progress, per-class tables,
run folders shared by distributed ranks, and resume."""
from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from livestock.data.yolo_format import load_data_yaml, yaml_class_names
from livestock.fileio import atomic_checkpoints, atomic_write_csv, atomic_write_text
from livestock.model.engine import (METRIC_COLUMNS, EpochCallback, TrainResult, TrainSettings, ValSettings,
                                    distributed_rank, epochs_in_results, is_main_process, keep_results_rows,
                                    parse_device)
from livestock.model.yolov5.compat import (DEFAULT_HYP, OPTIMIZERS, PASSTHROUGH_OPTIONS, check_weight_size,
                                           ensure_yolov5, load_checkpoint, load_hyp, model_cfg, resolve_weights)
from livestock.progress import emit
from livestock.provenance import require_current

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

RANK_WAIT_S = 300.0  # how long a distributed rank waits for rank 0 to name the run folder


# ================================================================ datasets


def _data_yaml_for_yolov5(data_yaml: str | os.PathLike, run_dir: Path) -> str:
    """The yaml path to hand to YOLOv5: the user's file when already absolute, else a resolved copy in the run."""
    import yaml

    data, changed = load_data_yaml(data_yaml)
    if not changed:
        return str(Path(data_yaml).resolve())
    return str(atomic_write_text(run_dir / "data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True)))


def _run_dir(project: str | os.PathLike, name: str, exist_ok: bool) -> Path:
    """``project/name``; when it exists and ``exist_ok`` is False, ``name2``, ``name3``, ... as YOLOv5 does.

    Under ``torch.distributed.run`` every rank calls this, and each would pick its own increment: rank 0 picks the
    folder and leaves its path in a marker file named after the run's id, where the other ranks wait for it."""
    import time

    ensure_yolov5()
    from yolov5.utils.general import increment_path

    marker = _run_marker(project, name)
    if marker is not None and not is_main_process():
        deadline = time.monotonic() + RANK_WAIT_S
        while not marker.is_file():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{marker}: rank 0 did not name the run folder within {RANK_WAIT_S:g} s")
            time.sleep(0.2)
        return Path(marker.read_text(encoding="utf-8").strip())
    save_dir = Path(increment_path(Path(project) / name, exist_ok=exist_ok)).resolve()
    save_dir.mkdir(parents=True, exist_ok=True)
    return save_dir


def _run_marker(project: str | os.PathLike, name: str) -> Path | None:
    """Where rank 0 of a distributed run names its run folder (None outside ``torch.distributed.run``)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return Path(project) / f".run-{run_id}-{name}" if run_id and distributed_rank() >= 0 else None


def _publish_run_dir(project: str | os.PathLike, name: str, save_dir: Path) -> None:
    """Rank 0, once the run folder's files are written: tell the other ranks where it is."""
    marker = _run_marker(project, name)
    if marker is not None and is_main_process():
        atomic_write_text(marker, str(save_dir))


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


@contextlib.contextmanager
def _process_group_ended() -> Iterator[None]:
    """End the distributed process group that ``yolov5.train.main`` starts under ``torch.distributed.run`` and never
    ends. Left open, PyTorch warns at exit that a rank may leave before its last NCCL operation is done, and a
    second ``train()`` in the same process fails to start a group again. Only a group started inside the block
    is ended (one the caller made is theirs), and only after a normal return: ``torch.distributed.run`` stops the
    ranks of a failed run itself."""
    import torch.distributed as dist

    started_before = dist.is_available() and dist.is_initialized()
    yield
    if not started_before and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _ValCapture:
    """Per-class precision, recall and APs of YOLOv5's validation, which ``val.run`` computes but only prints.

    It listens to two of YOLOv5's validation callbacks (start: reset; batch end: count images and labelled
    instances per class) and, while active, wraps ``yolov5.val.ap_per_class`` to keep its result. The last
    validation of a run wins: in training that is the final validation of ``best.pt``."""

    def __init__(self, names: dict[int, str], epochs: int = 0, on_epoch: EpochCallback | None = None) -> None:
        self.names = names
        self.epochs = epochs
        self.on_epoch = on_epoch
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

    def on_fit_epoch_end(self, log_vals, epoch, best_fitness, fi) -> None:
        # log_vals: train box / obj / cls loss, then P, R, mAP@0.5, mAP@0.5:0.95 of this epoch's validation, ...
        metrics = {"loss": float(sum(log_vals[:3])), "P": float(log_vals[3]), "R": float(log_vals[4]),
                   "mAP@0.5": float(log_vals[5]), "mAP@0.5:0.95": float(log_vals[6])}
        emit("epoch", epoch=int(epoch) + 1, epochs=self.epochs, **metrics)
        if self.on_epoch is not None:
            self.on_epoch(int(epoch) + 1, self.epochs, metrics)

    def callbacks(self):
        from yolov5.utils.callbacks import Callbacks

        cb = Callbacks()
        cb.register_action("on_val_start", name="livestock", callback=self.on_val_start)
        cb.register_action("on_val_batch_end", name="livestock", callback=self.on_val_batch_end)
        cb.register_action("on_fit_epoch_end", name="livestock", callback=self.on_fit_epoch_end)
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


# ================================================================ training


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


def train(data_yaml: str | os.PathLike, settings: TrainSettings | None = None, **values: object) -> TrainResult | None:
    """Train YOLOv5 (``yolov5.train``) with ``settings`` (:class:`~livestock.model.engine.TrainSettings`; ``values``
    override its fields, e.g. ``train(data, epochs=30, freeze=[10])``) and return the run folder, weights and final
    per-class metrics.

    - ``model``: yolov5n/s/m/l/x, P6 yolov5n6/s6/m6/l6/x6, or a yaml path (default ``yolov5n`` from scratch).
    - ``weights``: a pretrained name (``yolov5m6.pt``) is looked up in ``trained_model/`` and downloaded there if
      possible (see :func:`resolve_weights`).
    - ``hyp``: also YOLOv5's own names (``hyp.scratch-low``); ``optimizer``: one of :data:`OPTIMIZERS`.
    - ``options``: :data:`PASSTHROUGH_OPTIONS` (e.g. ``freeze=[10]``, ``rect=True``).
    - ``resume``: continue from ``project/name/weights/last.pt`` with the optimiser, EMA and LR schedule as they
      were; the run's own settings apply, not the other fields.

    Multi-GPU (DDP) runs go through ``python -m torch.distributed.run``; there every process calls this, and
    only rank 0 returns a result (the others return None).
    """
    ensure_yolov5()
    s = TrainSettings.of(settings, **values)
    s.check(PASSTHROUGH_OPTIONS, OPTIMIZERS)
    hyp = DEFAULT_HYP if s.hyp is None else s.hyp
    epochs = s.epochs
    data, _ = load_data_yaml(data_yaml)
    if not s.resume:  # a split, plus set or evolved hyp made from other data than the current fails here, named
        require_current(data_yaml, hyp if isinstance(hyp, (str, os.PathLike)) else None)
    hyp_values = load_hyp(hyp)
    start = resolve_weights(s.weights)
    if start and not s.resume:
        load_checkpoint(start)  # a corrupt or foreign file fails here, named, before a run folder is made
    cfg = str(model_cfg(s.model or "yolov5n")) if (s.model or not start) else ""
    device = parse_device(s.device).engine_string()

    import yaml
    import yolov5.train

    if s.resume:
        save_dir = Path(s.project, s.name).resolve()
        opt, epochs = _resume_opt(save_dir)
        hyp_values = load_hyp(save_dir / "hyp.yaml")
    else:
        save_dir = _run_dir(s.project, s.name, s.exist_ok)
        hyp_file = save_dir / "hyp.yaml"
        if is_main_process():  # the other ranks read what rank 0 wrote
            atomic_write_text(hyp_file, yaml.safe_dump(hyp_values, sort_keys=False))
        opt = _new_run_opt(
            data_yaml, save_dir, cfg=cfg, weights=start, hyp=str(hyp_file), imgsz=int(s.imgsz), epochs=int(epochs),
            batch_size=int(s.batch_size), device=device, workers=int(s.workers),
            cos_lr=not s.linear_lr, optimizer=s.optimizer, seed=int(s.seed), patience=int(s.patience),
            cache=s.cache, noplots=not s.plots, **s.options,
        )
        _publish_run_dir(s.project, s.name, save_dir)
    capture = _ValCapture(yaml_class_names(data), int(epochs), s.on_epoch)
    # A fresh Callbacks object per run: YOLOv5's `run()` reuses one default instance, so every earlier run's
    # loggers would keep writing into their old folders (and slow down) when training several times in a process.
    with _yolov5_output(s.verbose), capture.active(), atomic_checkpoints(), _process_group_ended():
        yolov5.train.main(opt, callbacks=capture.callbacks())
    if not is_main_process():
        return None
    best, last = save_dir / "weights" / "best.pt", save_dir / "weights" / "last.pt"
    if not best.is_file():
        best = last
    report = check_weight_size(best, s.max_weight_mb, s.fail_on_oversize)
    epochs_run = epochs_in_results(save_dir / "results.csv")
    return TrainResult(save_dir=save_dir, best=best, last=last, data_yaml=Path(data_yaml), imgsz=int(s.imgsz),
                       metrics=capture.table(),
                       weight_mb=report["file_mb"], size_report=report, hyp=hyp_values, epochs_run=epochs_run)


def _new_run_opt(data_yaml: str | os.PathLike, save_dir: Path, **settings) -> argparse.Namespace:
    """YOLOv5's options for a new run in ``save_dir`` (the data yaml resolved for it by rank 0)."""
    data = _data_yaml_for_yolov5(data_yaml, save_dir) if is_main_process() else str(save_dir / "data.yaml")
    if not is_main_process() and not Path(data).is_file():
        data = str(Path(data_yaml).resolve())  # rank 0 found the user's file usable as it is
    return _yolov5_train_opt(data=data, project=str(save_dir.parent), name=save_dir.name, exist_ok=True, **settings)


def _resume_opt(save_dir: Path) -> tuple[argparse.Namespace, int]:
    """YOLOv5's options to resume the run in ``save_dir``, and its total epochs."""
    import yaml

    last = save_dir / "weights" / "last.pt"
    if not last.is_file() or not (save_dir / "opt.yaml").is_file():
        raise FileNotFoundError(f"{last}: no interrupted training to resume in {save_dir}")
    ckpt = load_checkpoint(last)
    if ckpt.get("optimizer") is None:
        raise ValueError(f"{last}: this training finished (its optimiser state was stripped); nothing to resume")
    epochs = int(yaml.safe_load((save_dir / "opt.yaml").read_text(encoding="utf-8"))["epochs"])
    keep_results_rows(save_dir / "results.csv", int(ckpt["epoch"]) + 1)  # epochs 0 .. the one last.pt holds
    return _yolov5_train_opt(resume=str(last)), epochs


def can_resume(save_dir: str | os.PathLike) -> bool:
    """True when ``save_dir`` holds a training that stopped before its end, which ``train(..., resume=True)``
    continues: a ``weights/last.pt`` that still carries its optimiser state (a finished run's is stripped)."""
    save_dir = Path(save_dir)
    last = save_dir / "weights" / "last.pt"
    if not last.is_file() or not (save_dir / "opt.yaml").is_file():
        return False
    return load_checkpoint(last).get("optimizer") is not None


# ================================================================ validation


def validate(weights: str | os.PathLike, data_yaml: str | os.PathLike, settings: ValSettings | None = None,
             **values: object) -> pd.DataFrame:
    """Validate weights (``yolov5.val``) on a split of a dataset yaml with ``settings``
    (:class:`~livestock.model.engine.ValSettings`; ``values`` override its fields; ``iou`` defaults to YOLOv5's
    0.6); per-class table as the error analysis shows it: index ``all`` and each class, columns images, instances,
    P, R, mAP@0.5, mAP@0.5:0.95.

    The run folder (``project/name``, incremented unless ``exist_ok``) gets YOLOv5's plots and ``per_class.csv``;
    with ``save_txt`` also ``labels/<image stem>.txt`` (class, normalised x y w h, confidence). Its path is in
    ``table.attrs['save_dir']``. Loading ``.pt`` weights runs pickled code: validate only weights you trust.
    """
    ensure_yolov5()
    s = ValSettings.of(settings, **values)
    weights, data, batch_size = s.checked(weights, data_yaml)

    import yolov5.val

    save_dir = _run_dir(s.project, s.name, s.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    capture = _ValCapture(yaml_class_names(data))
    with _yolov5_output(s.verbose), capture.active():
        yolov5.val.run(
            data=_data_yaml_for_yolov5(data_yaml, save_dir), weights=str(weights.resolve()), batch_size=batch_size,
            imgsz=int(s.imgsz), conf_thres=s.conf, iou_thres=0.6 if s.iou is None else s.iou, task=s.split,
            device=parse_device(s.device).engine_string(), workers=s.workers, save_txt=s.save_txt,
            save_conf=s.save_txt, project=str(save_dir.parent), name=save_dir.name, exist_ok=True, half=s.half,
            plots=s.plots, callbacks=capture.callbacks(),
        )
    table = capture.table()
    atomic_write_csv(table, save_dir / "per_class.csv", index=True)
    table.attrs["save_dir"] = str(save_dir)
    return table
