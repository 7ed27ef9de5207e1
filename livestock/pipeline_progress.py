"""What the main job prints while a stage runs: one line per progress event (a training epoch, a finished search
trial, images done), each with an estimate of the time left for the whole job.

The estimate is deliberately simple; every number in it is measured in this job or stated here.

- **Training stages** (``evolve``, ``train``, ``expand``) take ``overheads + image-epochs x seconds per
  image-epoch``. An *image-epoch* is one image passing once through an epoch's training or validation:
  ``evolve`` = trials x evolve_epochs x (mini train + mini val images), ``train`` = epochs x (multilabel train + val
  images), ``expand`` = epochs x (each set's training images + val images), summed over gold and each silver set.
  Image counts come from the split lists once they exist (``data/splits/*/train.txt``, ``val.txt``,
  ``data/silver/*/train.txt``), until then from the number of images (``data/prepared/records.jsonl``, before that
  the settings' ``n_train``) and the split's fold shares (mini 2/5 + 1/5, multilabel 4/5 + 1/5).
- **Seconds per image-epoch** are measured from the epochs seen so far in this job: the time between two
  consecutive epochs of one training run over that epoch's image-epochs, pooled. Before the first such pair the
  prior is :data:`PRIOR_S_PER_IMAGE_EPOCH` (YOLOv5n at 320 px on 2 CPU cores), scaled up by image area above
  320 px (not down below it: there data loading and NMS, not the network, take the time) and by the model's GFLOPs.
- **Overheads** (notebook start and imports per training stage, :data:`STAGE_OVERHEAD_S`; model set-up, final
  validation and a trial's scoring per training run, :data:`RUN_OVERHEAD_S`) and the **other stages**
  (:data:`STAGE_PRIORS`: a fixed part and a part per image) are priors fitted to the default run on 2 CPU cores.
- Once notebook stages other than training have finished, every prior (not the measured rate) is scaled by how
  long those took against their priors: a busy machine is slow everywhere. A GPU speeds up training far more
  than the rest, which the measured rate catches after a run's second epoch.
- A stage that is running counts with what is left of its estimate, but a training stage never with less than
  its remaining image-epochs; finished stages count nothing.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from livestock import paths

TRAINING_STAGES = ("evolve", "train", "expand")
IN_PROCESS_STAGES = ("synth", "prepare")
# The default run of the README: 30 epochs of YOLOv5n from scratch at 320 px on 240 training + 60 validation
# images took 667 s on 2 CPU cores, of which about 0.07 s per image-epoch once overheads are set aside.
PRIOR_S_PER_IMAGE_EPOCH = 0.07
PRIOR_IMGSZ = 320
STAGE_OVERHEAD_S = 8.0  # a training notebook's kernel start and imports, and its closing validation
RUN_OVERHEAD_S = 10.0  # one training run's model and data set-up, final validation, and a trial's scoring
# GFLOPs at 640 px of the YOLOv5 v7.0 release models (YOLOv5's README); the prior scales with the model's share.
MODEL_GFLOPS = {"yolov5n": 4.5, "yolov5s": 16.5, "yolov5m": 49.0, "yolov5l": 109.1, "yolov5x": 205.7,
                "yolov5n6": 4.6, "yolov5s6": 16.8, "yolov5m6": 50.0, "yolov5l6": 111.4, "yolov5x6": 209.8}


@dataclass(frozen=True)
class StagePrior:
    """Seconds a non-training stage is expected to take: ``fixed + per_image * images`` (which images: ``over``)."""

    fixed: float
    per_image: float
    over: str  # "all": every training image (+ test images for synth / prepare), "val", "train", "val+test"


# Fitted to the default run of the README (300 training and 80 test images, 2 CPU cores): synth, prepare, EDA and
# the three splits 23 s together, error analysis 12 s, silver sets 13 s, tuning and inference 59 s.
STAGE_PRIORS: dict[str, StagePrior] = {
    "synth": StagePrior(0.5, 0.02, "all+test"),
    "prepare": StagePrior(0.5, 0.005, "all+test"),
    "eda": StagePrior(5.0, 0.005, "all"),
    "split_multilabel": StagePrior(1.7, 0.001, "all"),
    "split_full": StagePrior(1.7, 0.001, "all"),
    "split_mini": StagePrior(1.7, 0.001, "all"),
    "analysis": StagePrior(5.0, 0.12, "val"),
    "silver": StagePrior(5.0, 0.033, "train"),
    "inference": StagePrior(6.0, 0.38, "val+test"),
}
DEFAULT_PRIOR = StagePrior(5.0, 0.0, "all")
MIN_THROTTLE_S = 10.0  # images / settings events: at most one line per task this often (and the last one)


def format_duration(seconds: float) -> str:
    """``45s``, ``9m``, ``1h05m``: whole units, rounded (an estimate has no finer grain)."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    m = int(round(s / 60))
    if m < 60:
        return f"{m}m"
    return f"{m // 60}h{m % 60:02d}m"


def format_elapsed(seconds: float) -> str:
    """``58 s``, ``14m 58s``, ``1h 02m 03s``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"


def _lines(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


@dataclass
class DataSizes:
    """Image counts the work model needs, from the files once they exist, else from the settings."""

    images: int  # labelled training images (all folds)
    test: int
    mini: tuple[int, int]  # (train, val)
    multilabel: tuple[int, int]
    silver: dict[str, int]  # plus set -> training entries

    @classmethod
    def read(cls, work: Path, n_train: int, n_test: int, silver_modes: Sequence[str]) -> "DataSizes":
        """Count what is on disk under ``work``; fill the rest from ``n_train`` / ``n_test`` and the fold shares."""
        images = _lines(work / paths.PREPARED_DIR / "records.jsonl") or n_train
        test = _lines(work / paths.PREPARED_TEST_DIR / "records.jsonl") or n_test

        def split(name: str, train_share: float, val_share: float) -> tuple[int, int]:
            folder = work / paths.SPLITS_DIR / name
            train, val = _lines(folder / "train.txt"), _lines(folder / "val.txt")
            return (train if train is not None else round(images * train_share),
                    val if val is not None else round(images * val_share))

        multilabel = split("multilabel", 4 / 5, 1 / 5)
        # A plus set has at least the gold training images (replace adds second copies, known once written).
        silver = {m: _lines(work / paths.DATA_DIR / "silver" / m / "train.txt") or multilabel[0] for m in silver_modes}
        return cls(images=images, test=test, mini=split("mini", 2 / 5, 1 / 5), multilabel=multilabel, silver=silver)


@dataclass(frozen=True)
class JobSettings:
    """The settings the work model reads (a subset of ``livestock.pipeline.PipelineConfig``)."""

    n_train: int
    n_test: int
    model: str
    imgsz: int
    evolve_trials: int
    evolve_epochs: int
    epochs: int
    silver_modes: tuple[str, ...]


@dataclass
class _StageState:
    started: float | None = None
    finished: float | None = None
    # training stages
    epochs_seen: int = 0  # epoch events in this stage
    ie_done: float = 0.0  # image-epochs done by the latest epoch event
    last_epoch_time: float | None = None
    epoch: int = 0  # the latest epoch event's epoch within its run (0: none yet in this run)
    trials_done: int | None = None  # evolve: finished trials the study counts (None before the first trial event)
    trials_requested: int | None = None
    run_index: int = 0  # expand: which set's training is running (0: gold)
    throttle: dict[str, float] = field(default_factory=dict)  # images task -> time of its last printed line


class JobEstimate:
    """The work model of one pipeline call: feed it stage starts and ends and the stages' progress events, ask it
    for the time left (see the module docstring)."""

    def __init__(self, settings: JobSettings, work: Path, stages: Sequence[str],
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.work = Path(work)
        self.stages = list(stages)
        self.clock = clock
        self.state = {s: _StageState() for s in self.stages}
        self.epoch_seconds = 0.0  # measured: seconds of epochs that followed an epoch of the same run ...
        self.epoch_work = 0.0  # ... and their image-epochs
        self.sizes = self._read_sizes()

    # ---------------------------------------------------------------- work

    def _read_sizes(self) -> DataSizes:
        s = self.settings
        return DataSizes.read(self.work, s.n_train, s.n_test, s.silver_modes)

    def _runs(self, stage: str) -> int:
        """Training runs of a training stage: one per trial, one, or one per compared set."""
        return {"evolve": self.settings.evolve_trials, "train": 1}.get(stage, 1 + len(self.settings.silver_modes))

    def _per_epoch(self, stage: str, run: int = 0) -> int:
        """Image-epochs of one epoch of ``stage`` (of its ``run``-th training for expand: gold, then each set)."""
        z = self.sizes
        if stage == "evolve":
            return sum(z.mini)
        if stage == "train":
            return sum(z.multilabel)
        if stage == "expand":
            sets = [z.multilabel[0], *(z.silver[m] for m in self.settings.silver_modes)]
            return sets[min(run, len(sets) - 1)] + z.multilabel[1]
        raise ValueError(f"{stage} is not a training stage")

    def training_work(self, stage: str) -> float:
        """All image-epochs of a training stage, by the settings and the current image counts."""
        s = self.settings
        if stage == "evolve":
            return s.evolve_trials * s.evolve_epochs * self._per_epoch("evolve")
        if stage == "train":
            return s.epochs * self._per_epoch("train")
        return s.epochs * sum(self._per_epoch("expand", i) for i in range(self._runs("expand")))

    def _remaining_work(self, stage: str) -> float:
        st, s = self.state[stage], self.settings
        if stage == "evolve" and st.trials_done is not None:
            trials_left = max((st.trials_requested or s.evolve_trials) - st.trials_done, 0)
            return max(trials_left * s.evolve_epochs - st.epoch, 0) * self._per_epoch("evolve")
        if stage == "expand":
            later = sum(s.epochs * self._per_epoch("expand", i) for i in range(st.run_index + 1, self._runs("expand")))
            return later + max(s.epochs - st.epoch, 0) * self._per_epoch("expand", st.run_index)
        return max(self.training_work(stage) - st.ie_done, 0.0)

    def prior_rate(self) -> float:
        """Seconds per image-epoch before any epoch of this job was measured (scaled by :meth:`speed_factor`)."""
        gflops = MODEL_GFLOPS.get(Path(self.settings.model).stem, MODEL_GFLOPS["yolov5n"])
        area = (max(self.settings.imgsz, PRIOR_IMGSZ) / PRIOR_IMGSZ) ** 2
        return PRIOR_S_PER_IMAGE_EPOCH * area * gflops / MODEL_GFLOPS["yolov5n"] * self.speed_factor()

    def rate(self) -> tuple[float, bool]:
        """(seconds per image-epoch, measured?): from consecutive epochs seen so far, else the prior."""
        if self.epoch_work > 0:
            return self.epoch_seconds / self.epoch_work, True
        return self.prior_rate(), False

    def stage_prior(self, stage: str) -> float:
        """Prior seconds of a stage other than training (:data:`STAGE_PRIORS`) for the current image counts."""
        p = STAGE_PRIORS.get(stage, DEFAULT_PRIOR)
        if stage == "synth" and all((self.work / paths.DATA_DIR / z).is_file() for z in paths.TRAIN_ZIPS.values()):
            return p.fixed  # the zips are there: the stage only looks at them
        z = self.sizes
        images = {"all": z.images, "all+test": z.images + z.test, "val": z.multilabel[1], "train": z.multilabel[0],
                  "val+test": z.multilabel[1] + z.test}[p.over]
        return p.fixed + p.per_image * images

    def speed_factor(self) -> float:
        """Measured over prior seconds of the finished notebook stages other than training (1 before any)."""
        measured = prior = 0.0
        for name, st in self.state.items():
            # synth and prepare skip work already on disk, so their times say little about this machine
            if name in (*TRAINING_STAGES, *IN_PROCESS_STAGES) or st.finished is None or st.started is None:
                continue
            measured += st.finished - st.started
            prior += self.stage_prior(name)
        return measured / prior if prior > 0 else 1.0

    def expected_s(self, stage: str) -> float:
        """The whole stage's expected seconds with what is known now."""
        factor = self.speed_factor()
        if stage in TRAINING_STAGES:
            overheads = (STAGE_OVERHEAD_S + self._runs(stage) * RUN_OVERHEAD_S) * factor
            return overheads + self.training_work(stage) * self.rate()[0]
        return self.stage_prior(stage) * factor

    def left_s(self, now: float | None = None) -> float:
        """Estimated seconds until the last stage of this call ends."""
        now = self.clock() if now is None else now
        left = 0.0
        for name in self.stages:
            st = self.state[name]
            if st.finished is not None:
                continue
            expected = self.expected_s(name)
            if st.started is None:
                left += expected
                continue
            rest = max(expected - (now - st.started), 0.0)
            if name in TRAINING_STAGES:
                rest = max(rest, self._remaining_work(name) * self.rate()[0])
            left += rest
        return left

    def eta(self, now: float | None = None) -> str:
        """``job ~9m left``."""
        return f"job ~{format_duration(self.left_s(now))} left"

    # ---------------------------------------------------------------- stage starts and ends

    def start_stage(self, stage: str, now: float | None = None) -> None:
        """Mark ``stage`` started (and re-read the image counts: the previous stage may have written them)."""
        self.sizes = self._read_sizes()
        self.state[stage].started = self.clock() if now is None else now

    def finish_stage(self, stage: str, now: float | None = None) -> float:
        """Mark ``stage`` finished; its seconds."""
        st = self.state[stage]
        st.finished = self.clock() if now is None else now
        return st.finished - (st.started if st.started is not None else st.finished)

    # ---------------------------------------------------------------- progress events

    def handle(self, stage: str, event: Mapping[str, Any]) -> str | None:
        """Account for one progress event of ``stage``; the line to print for it (without the estimate), or None
        for an event that is not shown (throttled, or of a kind this model does not know)."""
        kind = event.get("kind")
        t = float(event.get("time", self.clock()))
        st = self.state[stage]
        if kind == "epoch":
            return self._epoch(stage, st, event, t)
        if kind == "trial":
            st.trials_done = int(event["done"])
            st.trials_requested = int(event["requested"])
            st.epoch = 0  # the next epoch starts a new run
            text = f"trial {st.trials_done}/{st.trials_requested} done (#{event.get('number')}"
            text += f", {str(event['state']).lower()})" if event.get("state", "COMPLETE") != "COMPLETE" else ")"
            if event.get("fitness") is not None:
                text += f"  fitness {float(event['fitness']):.5f}"
            if event.get("best") is not None:
                text += f"  best {float(event['best']):.5f}"
            return text
        if kind in ("images", "settings"):
            task, done, total = str(event.get("task", kind)), int(event["done"]), int(event["total"])
            last = st.throttle.get(task)
            if 0 < done < total and last is not None and t - last < MIN_THROTTLE_S:
                return None
            st.throttle[task] = t
            return f"{task}: {done}/{total} {kind}"
        return None

    def _epoch(self, stage: str, st: _StageState, event: Mapping[str, Any], t: float) -> str:
        epoch, epochs = int(event["epoch"]), int(event["epochs"])
        if stage == "expand" and st.epochs_seen and epoch <= st.epoch:
            st.run_index += 1  # a new training run of the comparison (gold first, then each plus set)
        if stage in TRAINING_STAGES:
            work = self._per_epoch(stage, st.run_index)
            if st.epoch and epoch == st.epoch + 1 and st.last_epoch_time is not None:
                self.epoch_seconds += t - st.last_epoch_time  # the epoch after another of the same run
                self.epoch_work += work
            st.ie_done += work
        st.epochs_seen += 1
        st.epoch = epoch
        st.last_epoch_time = t
        where = ""
        if stage == "evolve":
            where = f"trial {(st.trials_done or 0) + 1}/{st.trials_requested or self.settings.evolve_trials}  "
        elif stage == "expand":
            names = ["gold", *(f"gold+silver ({m})" for m in self.settings.silver_modes)]
            where = f"{names[min(st.run_index, len(names) - 1)]}  "
        return (f"{where}epoch {epoch}/{epochs}  loss {_num(event.get('loss'), 4)}  "
                f"val mAP@0.5 {_num(event.get('mAP@0.5'), 3)}  mAP@0.5:0.95 {_num(event.get('mAP@0.5:0.95'), 3)}")


def _num(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"
