"""Ultralytics training, resume and validation: per-epoch progress, per-class tables in YOLOv5's form, and
checkpoints that survive a kill.

Resume is Ultralytics' own (``resume=`` with the run's ``last.pt``): the trainer rebuilds the run from the
arguments stored in the checkpoint, loads the optimiser, EMA and scaler state, and starts at the epoch after the
one ``last.pt`` holds, with the LR scheduler set to it. Around it this module makes ``last.pt`` and ``best.pt``
writes atomic (:func:`livestock.fileio.atomic_checkpoints`), and keeps one ``results.csv`` row per epoch: the
trainer appends an epoch's row before it saves that epoch's checkpoint, and keeps the file when it resumes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from livestock.data.yolo_format import load_data_yaml, yaml_class_names
from livestock.fileio import atomic_checkpoints, atomic_write_csv, atomic_write_text
from livestock.model.engine import (METRIC_COLUMNS, EpochCallback, TrainResult, TrainSettings, ValSettings,
                                    epochs_in_results, keep_results_rows, parse_device)
from livestock.model.ultralytics.adapter import (DEFAULT_HYP, DEFAULT_MODEL, OPTIMIZERS, PASSTHROUGH_OPTIONS,
                                                 _check_onnx_variant, _choose_variant, _has_one2one, _nms_arg,
                                                 _ultralytics_scope, check_weight_size, load_checkpoint, load_hyp,
                                                 model_cfg, resolve_weights)
from livestock.model.ultralytics.compat import ensure_ultralytics
from livestock.progress import emit
from livestock.provenance import require_current

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


# ================================================================ runs, datasets, per-class metrics


def _run_dir(project: str | os.PathLike, name: str, exist_ok: bool) -> Path:
    """``project/name``; when it exists and ``exist_ok`` is False, ``name2``, ``name3``, ... (YOLOv5's rule, so both
    engines number runs alike)."""
    ensure_ultralytics()
    from ultralytics.utils.files import increment_path

    return Path(increment_path(Path(project) / name, exist_ok=exist_ok, sep="")).resolve()


def _data_yaml_for_ultralytics(data_yaml: str | os.PathLike, run_dir: Path) -> str:
    """A copy of the dataset yaml with absolute paths in the run folder: Ultralytics takes a relative ``path``
    from its own datasets folder, not from the yaml's, so the copy is always made."""
    import yaml

    data, _ = load_data_yaml(data_yaml)
    return str(atomic_write_text(run_dir / "data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True)))


def _metrics_table(validator, names: dict[int, str]) -> pd.DataFrame:
    """The per-class table of one Ultralytics validation, in YOLOv5's form (see :func:`validate`)."""
    import numpy as np
    import pandas as pd

    m = validator.metrics
    nc = len(names)
    nt_class = np.zeros(nc, int) if m.nt_per_class is None else np.asarray(m.nt_per_class)
    nt_image = np.zeros(nc, int) if m.nt_per_image is None else np.asarray(m.nt_per_image)
    per = {c: (0.0,) * 4 if nt_class[c] else (np.nan,) * 4 for c in names}
    for i, c in enumerate(m.ap_class_index):
        per[int(c)] = tuple(float(v) for v in m.class_result(i))
    labelled = [per[c] for c in names if nt_class[c]]
    mean = tuple(float(np.mean(col)) for col in zip(*labelled)) if labelled else (np.nan,) * 4
    rows = [("all", int(validator.seen), int(nt_class.sum()), *mean)]
    rows += [(names[c], int(nt_image[c]), int(nt_class[c]), *per[c]) for c in names]
    df = pd.DataFrame(rows, columns=["class", *METRIC_COLUMNS]).set_index("class")
    return df.astype({"images": int, "instances": int})


class _RunCapture:
    """Ultralytics callbacks that report each training epoch (``on_epoch`` and a progress event) and keep the
    per-class table of the last validation that ran outside the epoch loop (the final one of ``best.pt``, or a
    plain validation)."""

    def __init__(self, names: dict[int, str], epochs: int = 0, on_epoch: EpochCallback | None = None) -> None:
        self.names, self.epochs, self.on_epoch = names, epochs, on_epoch
        self.epochs_run = 0
        self.final: pd.DataFrame | None = None
        self._last_val_in_loop = True

    def on_val_end(self, validator) -> None:
        self._last_val_in_loop = bool(validator.training)
        if not validator.training:
            self.final = _metrics_table(validator, self.names)

    def on_fit_epoch_end(self, trainer) -> None:
        if not self._last_val_in_loop:  # the trainer reports its final validation of best.pt as an extra epoch
            return
        m = trainer.metrics
        metrics = {"loss": float(sum(float(v) for v in (trainer.tloss or {}).values())),
                   "P": float(m["metrics/precision(B)"]), "R": float(m["metrics/recall(B)"]),
                   "mAP@0.5": float(m["metrics/mAP50(B)"]), "mAP@0.5:0.95": float(m["metrics/mAP50-95(B)"])}
        self.epochs_run = int(trainer.epoch) + 1
        emit("epoch", epoch=self.epochs_run, epochs=self.epochs, **metrics)
        if self.on_epoch is not None:
            self.on_epoch(self.epochs_run, self.epochs, metrics)

    def attach(self, model) -> None:
        model.add_callback("on_val_end", self.on_val_end)
        model.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)


# ================================================================ training


def train(data_yaml: str | os.PathLike, settings: TrainSettings | None = None, variant: str | None = None,
          **values: object) -> TrainResult:
    """Train an Ultralytics detector with ``settings`` (:class:`~livestock.model.engine.TrainSettings`; ``values``
    override its fields) and return the run folder, weights and final per-class metrics.

    - ``model``: :data:`~livestock.model.ultralytics.adapter.MODEL_NAMES` (e.g. ``yolo11n``, ``yolo26s``,
      ``yolov8m-p6``) or a yaml path; default ``yolo11n`` from scratch.
    - ``weights``: a pretrained name (``yolo11n.pt``) is found in the working directory or ``trained_model/``
      (``resolve_weights``; never downloaded). With ``model`` as well, the matching weights are transferred into
      the new architecture.
    - ``hyp``: keys ``HYP_KEYS``; ``optimizer``: one of ``OPTIMIZERS``; ``options``: ``PASSTHROUGH_OPTIONS``
      (e.g. ``close_mosaic=0``).
    - ``variant``: the head every validation uses (YOLO26: ``one2one`` by default; see the adapter's docstring).
    - Ultralytics runs multi-GPU training in subprocesses of its own, whose epochs are not reported to
      ``on_epoch`` (and whose checkpoint writes are Ultralytics' own, in place).
    - ``resume``: continue from ``project/name/weights/last.pt`` (optimiser, EMA, LR schedule and epoch counter as
      they were). The run's own settings apply, except ``device`` and ``workers``: those are this machine's. A run
      without ``last.pt``, or with nothing left to run, is an error naming the file (:func:`can_resume` tells
      beforehand).
    """
    ensure_ultralytics()
    s = TrainSettings.of(settings, **values)
    s.check(PASSTHROUGH_OPTIONS, OPTIMIZERS)
    import yaml
    from ultralytics import YOLO

    engine_device = parse_device(s.device).engine_string()
    epochs, imgsz, batch_size = s.epochs, s.imgsz, s.batch_size
    if s.resume:
        save_dir = Path(s.project, s.name).resolve()
        last = save_dir / "weights" / "last.pt"
        ckpt = _resume_checkpoint(last)
        run_args = ckpt["train_args"]
        epochs, imgsz, batch_size = int(run_args["epochs"]), int(run_args["imgsz"]), int(run_args["batch"])
        hyp_values = load_hyp(save_dir / "hyp.yaml")
        chosen = "one2one" if run_args.get("nms") is False else "one2many"  # as train() below passed it
        val_data = run_args["data"]  # the run's own copy of the dataset yaml
        names = {int(k): str(v) for k, v in ckpt["ema"].names.items()}
        keep_results_rows(save_dir / "results.csv", int(ckpt["epoch"]) + 1)
        del ckpt  # the trainer loads it again; the model and optimiser state need not stay twice in memory
        with _ultralytics_scope(s.verbose):
            yolo = YOLO(str(last))
        run: dict = {"resume": True, "device": engine_device, "workers": int(s.workers)}
    else:
        hyp = DEFAULT_HYP if s.hyp is None else s.hyp
        data, _ = load_data_yaml(data_yaml)
        # a split, plus set or evolved hyp made from other data than the current fails here, named
        require_current(data_yaml, hyp if isinstance(hyp, (str, os.PathLike)) else None)
        hyp_values = load_hyp(hyp)
        start = resolve_weights(s.weights)
        if start and Path(start).suffix == ".pt":
            load_checkpoint(start)  # a corrupt or foreign file fails here, named, not inside Ultralytics
        with _ultralytics_scope(s.verbose):
            yolo = YOLO(model_cfg(s.model or DEFAULT_MODEL)) if (s.model or not start) else YOLO(start)
            if s.model and start:
                yolo.load(start)
        chosen = _choose_variant(_has_one2one(yolo.model), variant, str(s.model or start))
        save_dir = _run_dir(s.project, s.name, s.exist_ok)
        save_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(save_dir / "hyp.yaml", yaml.safe_dump(hyp_values, sort_keys=False))
        val_data = _data_yaml_for_ultralytics(data_yaml, save_dir)
        names = yaml_class_names(data)
        run = dict(
            data=val_data, imgsz=int(imgsz), epochs=int(epochs), batch=int(batch_size), device=engine_device,
            workers=int(s.workers), project=str(save_dir.parent), name=save_dir.name, exist_ok=True,
            cos_lr=not s.linear_lr, optimizer=s.optimizer, seed=int(s.seed), patience=int(s.patience),
            cache=s.cache or False, plots=s.plots, verbose=s.verbose, nms=_nms_arg(chosen), **hyp_values, **s.options,
        )
    capture = _RunCapture(names, int(epochs), s.on_epoch)
    capture.attach(yolo)
    with _ultralytics_scope(s.verbose), atomic_checkpoints():
        yolo.train(**run)
    best, last = save_dir / "weights" / "best.pt", save_dir / "weights" / "last.pt"
    if not best.is_file():
        best = last
    table = capture.final
    if table is None:  # multi-GPU: the final validation ran in Ultralytics' worker process
        table = validate(best, val_data, imgsz=imgsz, device=s.device, batch_size=batch_size, workers=s.workers,
                         project=save_dir, name="final_val", exist_ok=True, plots=False, variant=chosen)
    report = check_weight_size(best, s.max_weight_mb, s.fail_on_oversize)
    return TrainResult(save_dir=save_dir, best=best, last=last, data_yaml=Path(data_yaml), imgsz=int(imgsz),
                       metrics=table, weight_mb=report["file_mb"], size_report=report, hyp=hyp_values,
                       epochs_run=capture.epochs_run or epochs_in_results(save_dir / "results.csv"))


def _resume_problem(last: Path, ckpt: dict) -> str | None:
    """Why the run whose ``last.pt`` is ``ckpt`` cannot resume, or None when it can."""
    if ckpt.get("optimizer") is None:  # Ultralytics strips last.pt once the training is done
        return f"{last}: this training finished (its optimiser state was stripped); nothing to resume"
    epochs = int(ckpt["train_args"]["epochs"])
    if int(ckpt["epoch"]) + 1 >= epochs:  # stopped between its last epoch's save and the final stripping
        return f"{last}: all {epochs} epochs of this training ran; nothing to resume"
    return None


def _resume_checkpoint(last: Path) -> dict:
    """The checkpoint of an interrupted run to resume from; an error naming ``last`` when there is none."""
    if not last.is_file():
        raise FileNotFoundError(f"{last}: no interrupted training to resume in {last.parent.parent}")
    ckpt = load_checkpoint(last)
    problem = _resume_problem(last, ckpt)
    if problem is not None:
        raise ValueError(problem)
    return ckpt


def can_resume(save_dir: str | os.PathLike) -> bool:
    """True when ``save_dir`` holds a training that stopped before its end, which ``train(..., resume=True)``
    continues: a ``weights/last.pt`` that still carries its optimiser state (a finished run's is stripped) with
    epochs left to run. A ``last.pt`` that cannot be read is a ValueError naming it."""
    last = Path(save_dir) / "weights" / "last.pt"
    return last.is_file() and _resume_problem(last, load_checkpoint(last)) is None


# ================================================================ validation


def validate(weights: str | os.PathLike, data_yaml: str | os.PathLike, settings: ValSettings | None = None,
             variant: str | None = None, **values: object) -> pd.DataFrame:
    """Validate weights (``.pt`` or an ``.onnx`` export of this engine) on a split of a dataset yaml with
    Ultralytics' validator and ``settings`` (:class:`~livestock.model.engine.ValSettings`; ``values`` override its
    fields; ``iou`` defaults to Ultralytics' own 0.7, YOLOv5's is 0.6); per-class table as YOLOv5's
    :func:`~livestock.model.yolov5.training.validate` gives it: index ``all`` and each class, columns images,
    instances, P, R, mAP@0.5, mAP@0.5:0.95.

    The run folder gets Ultralytics' plots and ``per_class.csv`` (and with ``save_txt`` ``labels/<stem>.txt`` with
    confidences); its path is in ``table.attrs['save_dir']``. ``variant``: the head (see the module docstring; an
    ONNX file holds the one it was exported with). Loading ``.pt`` weights runs pickled code: trusted files only.
    """
    ensure_ultralytics()
    s = ValSettings.of(settings, **values)
    weights, data, batch_size = s.checked(weights, data_yaml)
    from ultralytics import YOLO

    spec = parse_device(s.device)
    nms: bool | None = None
    if weights.suffix.lower() == ".onnx":
        _check_onnx_variant(weights, variant)
    else:
        nms = _nms_arg(_choose_variant(_has_one2one(load_checkpoint(weights)["model"]), variant, str(weights)))
    save_dir = _run_dir(s.project, s.name, s.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    capture = _RunCapture(yaml_class_names(data))
    with _ultralytics_scope(s.verbose):
        yolo = YOLO(str(weights.resolve()), task="detect")
        capture.attach(yolo)
        yolo.val(data=_data_yaml_for_ultralytics(data_yaml, save_dir), imgsz=int(s.imgsz), conf=s.conf,
                 iou=0.7 if s.iou is None else s.iou, split=s.split, batch=int(batch_size), workers=int(s.workers),
                 device=spec.engine_string(), project=str(save_dir.parent), name=save_dir.name, exist_ok=True,
                 quantize=16 if s.half and spec.kind == "cuda" else None, plots=s.plots, save_txt=s.save_txt,
                 save_conf=s.save_txt, verbose=s.verbose, nms=nms)
    table = capture.final
    atomic_write_csv(table, save_dir / "per_class.csv", index=True)
    table.attrs["save_dir"] = str(save_dir)
    return table


