"""What a search trial runs: the objective seam (``objective(hyp, reporter) -> fitness``) and the real objective,
a short training run scored by the contest metric through the same path as the final score."""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna

from livestock.data.yolo_format import load_data_yaml
from livestock.model.engine import DEFAULT_ENGINE, TrainSettings, fitness_yolov5, get_engine, parse_device

FITNESS_KINDS = ("yolov5", "contest")
CONTEST_IOU = 0.75


class TrialReporter:
    """What an objective sees of its trial: its number, per-epoch reports (which may prune it) and extra results."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial

    @property
    def number(self) -> int:
        """The trial's number in the study (unique across workers; names its run folder)."""
        return self._trial.number

    def report(self, epoch: int, fitness: float) -> None:
        """Report ``fitness`` after ``epoch``; raises ``optuna.TrialPruned`` when the study's pruner says stop."""
        self._trial.report(float(fitness), step=int(epoch))
        if self._trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} at fitness {fitness:.5g}")

    def record(self, **values: Any) -> None:
        """Keep extra results (metrics, epochs run) with the trial; they become columns of ``trials.csv``."""
        for key, value in values.items():
            self._trial.set_user_attr(key, value.item() if isinstance(value, np.generic) else value)


# The objective seam: the full hyp dict (base hyp with the trial's keys applied) and the trial's reporter -> fitness
# (higher is better). Objectives given to several worker processes must be picklable (a module-level function or an
# instance of a module-level class such as TrainingObjective).
Objective = Callable[[dict[str, float], TrialReporter], float]


# ---------------------------------------------------------------- the real objective: train, score


# The training settings a trial takes from its caller (TrainSettings fields); the others are the objective's own
# (epochs, the folder) or fixed per trial (name, exist_ok, plots, on_epoch).
TRIAL_SETTINGS = ("model", "weights", "imgsz", "batch_size", "device", "workers", "optimizer", "linear_lr", "seed",
                  "verbose")


@dataclass(frozen=True)
class TrainingObjective:
    """Train on ``data_yaml`` with the trial's hyp (the engine's ``train`` with ``training``) and score the best
    weights: ``contest`` = mAP@0.75 by the contest metric on the validation split, ``yolov5`` = YOLOv5's fitness."""

    data_yaml: str
    training: TrainSettings  # every trial's settings; the trial adds its hyp, run name and epoch callback
    fitness: str = "contest"
    keep_weights: bool = False  # a yolov5m6 checkpoint is ~68 MB: by default a scored trial drops its weights
    engine: str = DEFAULT_ENGINE

    def __call__(self, hyp: dict[str, float], reporter: TrialReporter) -> float:
        engine = get_engine(self.engine)

        def on_epoch(epoch: int, epochs: int, metrics: dict) -> None:
            # Intermediate values for the pruner: the engine's own validation mAP@0.5:0.95 of each epoch but the
            # last, whose value is the trial's fitness (a pruner compares trials at the same epoch only).
            if epoch < epochs:
                reporter.report(epoch, metrics["mAP@0.5:0.95"])

        result = engine.train(self.data_yaml, self.training, hyp=hyp, name=f"trial_{reporter.number:03d}",
                              exist_ok=True, plots=False, on_epoch=on_epoch)
        map75 = math.nan
        if self.fitness == "contest":
            map75 = contest_fitness(result.best, self.data_yaml, imgsz=self.training.imgsz,
                                    device=self.training.device)
        score = map75 if self.fitness == "contest" else fitness_yolov5(result.metrics)
        row = result.metrics.loc["all"]
        reporter.record(**{k: float(row[k]) for k in ("P", "R", "mAP@0.5", "mAP@0.5:0.95")}, **{"mAP@0.75": map75},
                        epochs_run=int(result.epochs_run))
        if not self.keep_weights:
            shutil.rmtree(result.save_dir / "weights", ignore_errors=True)
        self.report_final_fitness(reporter, score)
        return score

    def report_final_fitness(self, reporter: TrialReporter, score: float) -> None:
        """Report the trial's fitness as its last epoch's value (earlier epochs report the engine's validation)."""
        reporter.report(self.training.epochs, score)

    def describe(self) -> dict[str, Any]:
        """The settings every worker of one study must share (paths may differ between machines)."""
        t = self.training
        return {"kind": "training", "epochs": t.epochs, "imgsz": t.imgsz, "batch": t.batch_size, "model": t.model,
                "weights": Path(t.weights).name if t.weights else None, "fitness": self.fitness,
                "optimizer": t.optimizer, "linear_lr": t.linear_lr, "engine": self.engine}


def training_objective(data_yaml: str | os.PathLike, epochs: int, *, project: str | os.PathLike = "runs/search/search",
                       fitness: str = "contest", keep_weights: bool = False, engine: str = DEFAULT_ENGINE,
                       **training: Any) -> TrainingObjective:
    """The real objective: train ``epochs`` epochs on ``data_yaml`` (the mini set) with the trial's hyp, score the
    validation fold with the contest metric (``fitness="contest"``, mAP@0.75) or YOLOv5's fitness; each trial's run
    goes to ``project/trial_NNN``. ``training``: the trials' :data:`TRIAL_SETTINGS`, meaning what they mean in
    :class:`~livestock.model.engine.TrainSettings` (e.g. ``weights=``, ``batch_size=``). The base hyp comes from
    :func:`run_search`, which hands every trial its full hyp. Each epoch but the last reports the engine's
    validation mAP@0.5:0.95 to the pruner, the last the fitness."""
    unknown = sorted(set(training) - set(TRIAL_SETTINGS))
    if unknown:
        raise ValueError(f"a search trial takes no training setting {unknown}; it takes {', '.join(TRIAL_SETTINGS)}")
    if fitness not in FITNESS_KINDS:
        raise ValueError(f"fitness must be one of {FITNESS_KINDS}, not {fitness!r}")
    if epochs < 1:
        raise ValueError(f"need epochs >= 1 (got {epochs})")
    load_data_yaml(data_yaml)  # fail now, not after the first trial's training
    weights = training.pop("weights", None)
    settings = TrainSettings.of(epochs=int(epochs), project=str(project), weights=str(weights) if weights else None,
                                **training)
    trainer = get_engine(engine)
    settings.check(trainer.PASSTHROUGH_OPTIONS, trainer.OPTIMIZERS)  # sizes, optimiser, cache: before any trial
    parse_device(settings.device)
    return TrainingObjective(data_yaml=str(data_yaml), training=settings, fitness=fitness,
                             keep_weights=bool(keep_weights), engine=get_engine(engine).NAME)


def contest_fitness(weights: str | os.PathLike, data_yaml: str | os.PathLike, imgsz: int = 640,
                    device: str = "auto", iou_threshold: float = CONTEST_IOU) -> float:
    """The contest's metric (mAP at IoU ``iou_threshold``, 0.75) of ``weights`` on the validation split of
    ``data_yaml``, by the same detection -> NMS -> metric path as the final score
    (:func:`livestock.evaluation.inference.split_map`), so the best generation is the best by the reported number."""
    from livestock.evaluation.inference import split_map

    return split_map(weights, data_yaml, imgsz=imgsz, device=device, metric_iou=iou_threshold)
