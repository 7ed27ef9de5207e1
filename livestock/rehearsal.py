"""Full-scale rehearsal: the data and evaluation stages at the real dataset's size, each one timed and measured.

``livestock rehearsal`` generates the synthetic set at the real size and proportions (16,455 training frames,
12,152 cow and 4,303 pig, and 2,058 test frames, at the real frame sizes; ``--scale`` shrinks the counts), then
runs, each in a fresh Python process of its own:

====================  ======================================================================================
stage                 what it runs
====================  ======================================================================================
``generate``          the synthetic AI Hub zips, rendered by ``--workers`` processes (2: both cores)
``prepare``           zips -> YOLO format (training and test sets)
``eda``               every EDA table and plot
``split``             the multilabel, full and mini sets
``detect_test``       the model on every test frame (conf 0.001, NMS IoU 0.68), ``answer.csv`` and its score
``tune``              the 210-setting NMS IoU x confidence grid on the multilabel validation fold
``silver``            silver labels on every cow frame of the multilabel training folds, as the main job
``m6_cache``          stand-in YOLOv5m6@1280 candidates (:mod:`livestock.evaluation.standin`) for ``--m6-images``
                      validation frames (cache floor 1e-4, as tuning uses) and the cow training frames (floor
                      0.05, as silver labelling uses)
``m6_tune``           tuning on those validation frames' candidates at the grid's largest NMS IoU (0.70, which
                      keeps the most boxes) and all its 10 confidences
``m6_silver``         the same silver labels as ``silver``, from those candidates
====================  ======================================================================================

The model is the main job's (``--weights``, default ``trained_model/multilabel_best.pt``) at its image size
(``--imgsz``, default 320). Per stage, ``summary.json`` and ``summary.md`` record the wall ``seconds`` (the whole
process, interpreter start included), ``peak_rss_mb`` (the stage process's peak resident memory, or that of its
largest worker process: ``ru_maxrss`` of the rusage ``os.wait4`` returns for it, in KiB on Linux) and ``disk_mb``
(the files the stage wrote, each counted once).

Tuning keeps one NMS IoU's detections of every image and confidence at a time and scores them before moving to the
next IoU (:func:`livestock.evaluation.nms_replay.grid_detections`), so the 10 settings of one IoU reach the same
peak memory as the 210-setting grid, and the grid costs 21 such passes. At m6 volume each pass runs NMS over up to
30,000 rows per image (tied confidences that YOLOv5 sorts the other way add little: see
``livestock.evaluation.nms_replay._GridImage``), so the whole fold takes long on 2 cores: ``m6_tune`` measures
``--m6-images`` frames (50,
spread evenly over the fold; 0 for all) and reports ``extrapolated_seconds`` = measured pass x 21 IoU values x fold /
measured frames. What the pass holds grows with the frames (each frame's detections at every confidence of the
IoU), so a first pass on half those frames and the measured pass, each with its own peak resident memory (sampled
from ``/proc/self/statm``), give the growth per frame, and ``extrapolated_peak_rss_mb`` = the measured pass's peak +
that growth x the frames not measured (or the stage's peak, when higher). ``m6_silver`` runs on every cow frame and
is measured as is.

The rehearsal resumes: a stage that finished leaves ``stages/<stage>.json`` with its figures, and a re-run skips
it (keeping those figures) while its outputs are present and its settings unchanged; once a stage runs again,
every later stage does too. ``--redo`` runs every stage again from empty outputs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from livestock import paths
from livestock.data.eda import load_prepared_records, run_eda
from livestock.data.split import make_all_splits, pick_evenly, split_records
from livestock.data.synth import TEST_IMAGES, TRAIN_IMAGES, generate_synthetic_dataset, split_by_class_ratio
from livestock.data.yolo_format import prepare_dataset
from livestock.evaluation.detect import DEFAULT_CONF_FLOOR, cache_folder, collect_candidates, weights_sha256
from livestock.evaluation.inference import score_answer, write_answer
from livestock.evaluation.silver import DEFAULT_CONF as SILVER_CONF
from livestock.evaluation.silver import build_silver_sets, training_targets
from livestock.evaluation.standin import M6_HEAD_ROWS, M6_IMGSZ, sample_head, write_standin_cache
from livestock.evaluation.submission import records_to_answer
from livestock.evaluation.tune import (DEFAULT_CONFS, DEFAULT_IOUS, ORIGINAL_SETTING, grid_settings, run_tuning,
                                       tune_thresholds, write_tuning)
from livestock.fileio import atomic_write_text
from livestock.model.engine import engine_of_weights, get_engine
from livestock.provenance import record_path

REAL_TRAIN_FRAMES = sum(TRAIN_IMAGES.values())  # 16,455
REAL_TEST_FRAMES = sum(TEST_IMAGES.values()) + 1  # 2,058: the answer file's 2,057 and one frame without a box
MIN_TRAIN_FRAMES = 20  # five folds of at least a few images each
DEFAULT_OUT = paths.RUNS_DIR / "rehearsal"
DEFAULT_WEIGHTS = paths.TRAINED_MODEL_DIR / "multilabel_best.pt"
SOURCE_IMAGES = 64  # validation images the stand-in's score distribution is sampled from
M6_TUNE_IOU = max(DEFAULT_IOUS)  # the grid's largest NMS IoU: the one that keeps the most detections
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Targets of the full-size run on the 2-core machine.
TARGETS = {"whole_rehearsal_seconds": 40 * 60, "prepare_and_splits_seconds": 60,
           "m6_tune_peak_rss_mb": 4096, "m6_silver_peak_rss_mb": 4096}


@dataclass(frozen=True)
class RehearsalConfig:
    """Settings of a rehearsal; every path lies under ``out``."""

    out: Path = DEFAULT_OUT
    scale: float = 1.0
    weights: Path = DEFAULT_WEIGHTS
    imgsz: int = 320
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    m6_images: int = 50  # validation frames m6_tune measures; 0: the whole fold

    @property
    def train_counts(self) -> dict[str, int]:
        """Training frames per class: the real set's, times ``scale``."""
        return split_by_class_ratio(int(round(REAL_TRAIN_FRAMES * self.scale)), "train")

    @property
    def test_counts(self) -> dict[str, int]:
        """Test frames per class: the real set's, times ``scale``."""
        return split_by_class_ratio(max(2, int(round(REAL_TEST_FRAMES * self.scale))), "test")

    def path(self, name: str) -> Path:
        """A named place under ``out`` (see ``_PLACES``)."""
        return self.out / _PLACES[name]

    def argv(self) -> list[str]:
        """The command-line options that recreate this configuration."""
        return ["--out", str(self.out), "--scale", repr(self.scale), "--weights", str(self.weights),
                "--imgsz", str(self.imgsz), "--seed", str(self.seed), "--workers", str(self.workers),
                "--device", self.device, "--m6-images", str(self.m6_images)]


# The real layout under ``out``: data/ holds the zips, the truth file, prepared/ and splits/, as in the main job.
_PLACES = {
    "data": "data", "test_data": "data_test", "prepared": "data/prepared", "prepared_test": "data/prepared_test",
    "splits": "data/splits", "eda": "eda", "detect_test": "detect_test", "tune": "tune", "silver": "silver",
    "m6_cache": "m6/cache", "m6_tune": "m6/tune", "m6_silver": "m6/silver", "stages": "stages",
}


# ---------------------------------------------------------------- the stages (each runs in its own process)


def _generate(cfg: RehearsalConfig) -> dict:
    s = generate_synthetic_dataset(cfg.path("data"), cfg.path("test_data"), train_counts=cfg.train_counts,
                                   test_counts=cfg.test_counts, seed=cfg.seed, workers=cfg.workers)
    return {"images": s.n_images, "train_images": s.train_images, "test_images": s.test_images,
            "workers": cfg.workers}


def _prepare(cfg: RehearsalConfig) -> dict:
    train = prepare_dataset(cfg.path("data"), cfg.path("prepared"))
    test = prepare_dataset(cfg.path("test_data"), cfg.path("prepared_test"), images_only=True)
    return {"images": len(train.records) + len(test.records), "train_images": len(train.records),
            "test_images": len(test.records)}


def _eda(cfg: RehearsalConfig) -> dict:
    result = run_eda(cfg.path("prepared"), cfg.path("eda"))
    return {"images": result["records"], "files": len(result["files"])}


def _split(cfg: RehearsalConfig) -> dict:
    sets = make_all_splits(cfg.path("prepared"), cfg.path("splits"))
    return {"images": int((sets["full"]["split"] == "train").sum()),
            **{f"{name}_{part}": int((rows["split"] == part).sum()) for name, rows in sets.items()
               for part in ("train", "val")}}


def _detect_test(cfg: RehearsalConfig) -> dict:
    records = load_prepared_records(cfg.path("prepared_test"))
    answer = cfg.path("test_data") / paths.TEST_ANSWER.name
    out = cfg.path("detect_test")
    conf, iou = ORIGINAL_SETTING
    write_answer(cfg.weights, records, out / "answer.csv", imgsz=cfg.imgsz, conf=conf, iou=iou, device=cfg.device,
                 cache_dir=out / "cache", answer=answer)
    score = score_answer(answer, out / "answer.csv", out / "score.json", conf=conf, iou=iou,
                         weights=str(cfg.weights), imgsz=cfg.imgsz)
    return {"images": len(records), "map_75": score["map_75"]}


def _val_records(cfg: RehearsalConfig) -> list:
    return split_records(cfg.path("prepared"), cfg.path("splits") / "multilabel", "val")


def _m6_val_records(cfg: RehearsalConfig) -> tuple[list, list]:
    """The validation fold and the frames of it that the m6@1280 tuning pass measures."""
    fold = _val_records(cfg)
    return fold, (pick_evenly(fold, cfg.m6_images) if cfg.m6_images else fold)


def _tune(cfg: RehearsalConfig) -> dict:
    val = _val_records(cfg)
    table, _ = run_tuning(cfg.weights, val, cfg.path("tune"), imgsz=cfg.imgsz, device=cfg.device,
                          cache_dir=cfg.path("tune") / "cache")
    return {"images": len(val), "settings": len(table)}


def _cow_frames(cfg: RehearsalConfig) -> list:
    """The cow frames of the multilabel training folds: the images the main job's silver stage relabels (the full
    set's training list holds the validation fold too, which a silver set refuses to train on)."""
    return training_targets(cfg.path("prepared"), cfg.path("splits") / "multilabel")[1]


def _silver(cfg: RehearsalConfig, imgsz: int, out: Path, cache_dir: Path) -> dict:
    split_dir = cfg.path("splits") / "multilabel"
    cows = _cow_frames(cfg)
    written = build_silver_sets(cfg.weights, cfg.path("prepared"), split_dir, out, imgsz=imgsz, device=cfg.device,
                                cache_dir=cache_dir, truth_csv=cfg.path("data") / paths.SYNTH_TRUTH.name)
    return {"images": len(cows), "files": len(written)}


def _silver_stage(cfg: RehearsalConfig) -> dict:
    return _silver(cfg, cfg.imgsz, cfg.path("silver"), cfg.path("silver") / "cache")


def _m6_cache(cfg: RehearsalConfig) -> dict:
    fold, val = _m6_val_records(cfg)
    cows = _cow_frames(cfg)
    sources = sample_head(cfg.weights, pick_evenly(fold, SOURCE_IMAGES), cfg.imgsz, device=cfg.device)
    out: dict[str, Any] = {"images": len(val) + len(cows), "source_images": len(sources),
                           "source_rows": int(sum(len(s.objectness) for s in sources))}
    for name, records, floor in (("tune", val, DEFAULT_CONF_FLOOR), ("silver", cows, SILVER_CONF)):
        written = write_standin_cache(cfg.weights, records, sources, cfg.path("m6_cache"), floor, seed=cfg.seed,
                                      workers=cfg.workers)
        out[name] = {k: v for k, v in asdict(written).items() if k != "folder"}
    return out


def _require_cached(cfg: RehearsalConfig, records: list, floor: float) -> None:
    """Refuse to start when a stand-in file is missing: the real model would run at 1280 px in its place."""
    folder = cache_folder(cfg.path("m6_cache"), cfg.weights, M6_IMGSZ, floor)
    missing = [r.image_id for r in records if not (folder / f"{r.image_id}.npz").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: no stand-in candidates for {len(missing)} images (e.g. {missing[0]}); "
                                "run the m6_cache stage again (--redo)")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _ResidentPeak:
    """The largest resident set size (MB) of this process while the block runs, read from ``/proc/self/statm``
    every ``interval`` seconds: the peak of one step, which ``ru_maxrss`` (the peak since the start) cannot give."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _sample(self) -> None:
        with open("/proc/self/statm", encoding="ascii") as f:
            self.mb = max(self.mb, int(f.read().split()[1]) * _PAGE_SIZE / 2**20)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "_ResidentPeak":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _m6_tuning_pass(cfg: RehearsalConfig, records: list) -> tuple[pd.DataFrame, float]:
    """One NMS IoU (the grid's largest) with all ten confidences, scored, on the records' stand-in candidates;
    returns the score table and the pass's peak resident memory (MB)."""
    with _ResidentPeak() as peak:
        cache = collect_candidates(cfg.weights, records, M6_IMGSZ, conf_floor=DEFAULT_CONF_FLOOR,
                                   cache_dir=cfg.path("m6_cache"), in_memory=False, device=cfg.device)
        table = tune_thresholds(cache, records_to_answer(records), DEFAULT_CONFS, (M6_TUNE_IOU,),
                                extra_settings=())
    return table, peak.mb


def _m6_tune(cfg: RehearsalConfig) -> dict:
    fold, val = _m6_val_records(cfg)
    _require_cached(cfg, val, DEFAULT_CONF_FLOOR)
    out: dict[str, Any] = {"images": len(fold), "measured_images": len(val)}
    if len(val) < len(fold):
        # What a pass holds grows with its frames: a first pass on half the frames gives the growth per frame.
        half = pick_evenly(val, len(val) // 2)
        out.update(half_images=len(half), half_pass_rss_mb=_m6_tuning_pass(cfg, half)[1])
    start = time.perf_counter()
    table, pass_rss = _m6_tuning_pass(cfg, val)
    seconds = time.perf_counter() - start
    write_tuning(table, cfg.path("m6_tune"))  # the heatmap's plotting may set the stage's peak; it holds no frame
    passes = len(DEFAULT_IOUS)  # one pass per NMS IoU value of the full grid, each as costly as this one
    scale = len(fold) / len(val)
    per_frame = (max(0.0, (pass_rss - out["half_pass_rss_mb"]) / (len(val) - out["half_images"]))
                 if "half_images" in out else 0.0)
    out.update(measured_settings=len(table), grid_settings=len(grid_settings()), tuning_seconds=seconds,
               pass_rss_mb=pass_rss, rss_mb_per_frame=per_frame, extrapolated_seconds=seconds * passes * scale,
               extrapolated_peak_rss_mb=max(_peak_rss_mb(), pass_rss + per_frame * (len(fold) - len(val))),
               extrapolation=f"seconds: the measured pass (NMS IoU {M6_TUNE_IOU:g}, {len(DEFAULT_CONFS)} confidences, "
                             f"{len(val)} of {len(fold)} validation frames) x {passes} IoU values"
                             + (f" x {scale:.4g}; peak RSS: the pass's peak + the growth per frame between passes on "
                                f"{out['half_images']} and {len(val)} frames x the {len(fold) - len(val)} frames "
                                "not measured" if "half_images" in out else "; peak RSS: measured on the whole fold"))
    return out


def _m6_silver(cfg: RehearsalConfig) -> dict:
    cows = _cow_frames(cfg)
    _require_cached(cfg, cows, SILVER_CONF)
    return _silver(cfg, M6_IMGSZ, cfg.path("m6_silver"), cfg.path("m6_cache"))


@dataclass(frozen=True)
class Stage:
    """One measured step: what it runs, the files and folders it writes (relative to ``out``), whether its result
    rests on the model, and a few words on it."""

    name: str
    run: Callable[[RehearsalConfig], dict]
    outputs: tuple[str, ...]
    uses_model: bool
    about: str


_TRUTH = f"data/{paths.SYNTH_TRUTH.name}"
STAGES: tuple[Stage, ...] = (
    Stage("generate", _generate, (*(f"data/{z}" for z in paths.TRAIN_ZIPS.values()), _TRUTH,
                                  str(record_path(_TRUTH)), "data_test"), False, "synthetic AI Hub zips at real size"),
    Stage("prepare", _prepare, ("data/prepared", "data/prepared_test"), False, "zips -> YOLO format, train + test"),
    Stage("eda", _eda, ("eda",), False, "EDA tables and plots"),
    Stage("split", _split, ("data/splits",), False, "multilabel, full and mini sets"),
    Stage("detect_test", _detect_test, ("detect_test",), True, "detection on the test set, answer.csv, score"),
    Stage("tune", _tune, ("tune",), True, "210-setting NMS grid on the validation fold"),
    Stage("silver", _silver_stage, ("silver",), True, "silver labels on the cow training frames"),
    Stage("m6_cache", _m6_cache, ("m6/cache",), True, "stand-in m6@1280 candidates, validation + cow frames"),
    Stage("m6_tune", _m6_tune, ("m6/tune",), True, "tuning at m6@1280 volume, one NMS IoU, validation frames"),
    Stage("m6_silver", _m6_silver, ("m6/silver",), True, "silver labels at m6@1280 volume, cow frames"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def _stage(name: str) -> Stage:
    return STAGES[STAGE_NAMES.index(name)]


def _output_paths(cfg: RehearsalConfig, stage: Stage) -> list[Path]:
    return [cfg.out / entry for entry in stage.outputs]


def disk_mb(targets: list[Path]) -> float:
    """Size in MB (2**20 bytes) of the regular files under ``targets``, each file (inode) counted once and links
    not followed: a hard link or symlink to another stage's file costs this stage nothing."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for target in targets:
        walk = [(str(target.parent), [], [target.name])] if target.is_file() else os.walk(target)
        for folder, _dirs, files in walk:
            for name in files:
                st = os.lstat(os.path.join(folder, name))
                if (st.st_dev, st.st_ino) in seen or not os.path.isfile(os.path.join(folder, name)) \
                        or os.path.islink(os.path.join(folder, name)):
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total / 2**20


# ---------------------------------------------------------------- running and measuring


def _settings(cfg: RehearsalConfig, stage: Stage) -> dict:
    """What a stage's result depends on; a recorded stage with other settings runs again."""
    settings: dict[str, Any] = {"scale": cfg.scale, "seed": cfg.seed}
    if stage.uses_model:
        settings.update(weights_sha256=weights_sha256(cfg.weights), imgsz=cfg.imgsz)
    if stage.name in ("m6_cache", "m6_tune"):
        settings["m6_images"] = cfg.m6_images
    return settings


def _marker(cfg: RehearsalConfig, name: str) -> Path:
    return cfg.path("stages") / f"{name}.json"


def _done(cfg: RehearsalConfig, stage: Stage, settings: dict) -> dict | None:
    """The recorded figures of a finished stage whose outputs are all present and settings unchanged, else None."""
    marker = _marker(cfg, stage.name)
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    if record.get("settings") != settings or not all(p.exists() for p in _output_paths(cfg, stage)):
        return None
    return record


def _child_env() -> dict[str, str]:
    """The environment of a stage process: this one's, with this package importable whatever the working folder."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def measure_stage(cfg: RehearsalConfig, stage: Stage) -> dict:
    """Run one stage in a fresh Python process; returns its seconds, peak RSS, disk use and details."""
    details_file = cfg.path("stages") / f"{stage.name}.details.json"
    details_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "livestock.rehearsal", "--stage", stage.name, *cfg.argv()]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_child_env())
    try:
        # wait4, not wait: it hands back the child's own rusage (ru_maxrss: its peak, or its largest reaped child's)
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"rehearsal stage {stage.name} failed (exit code {proc.returncode}); see its output above")
    details = json.loads(details_file.read_text(encoding="utf-8"))
    details_file.unlink()
    return {"stage": stage.name, "about": stage.about, "seconds": round(seconds, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "disk_mb": round(disk_mb(_output_paths(cfg, stage)), 3),
            "details": details}


def _clear(cfg: RehearsalConfig, stage: Stage) -> None:
    """Remove a stage's outputs before it runs, so that it measures a full run (no cache of an earlier one)."""
    for p in _output_paths(cfg, stage):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def run_rehearsal(cfg: RehearsalConfig, redo: bool = False) -> dict:
    """Run (or resume) every stage and write ``summary.json`` and ``summary.md``; returns the summary."""
    if not cfg.weights.is_file():
        raise FileNotFoundError(f"{cfg.weights}: weights not found; run `make pipeline` first (it trains "
                                f"{DEFAULT_WEIGHTS}) or pass --weights")
    if sum(cfg.train_counts.values()) < MIN_TRAIN_FRAMES:
        raise ValueError(f"--scale {cfg.scale:g} gives {sum(cfg.train_counts.values())} training frames; the five "
                         f"folds need at least {MIN_TRAIN_FRAMES}")
    if cfg.imgsz < 32:
        raise ValueError(f"--imgsz {cfg.imgsz}: at least 32")
    if cfg.weights.suffix.lower() == ".pt":  # a corrupt or foreign file fails now, not after the data stages
        get_engine(engine_of_weights(cfg.weights)).load_checkpoint(cfg.weights)
    records: dict[str, dict] = {}
    upstream_ran = False
    for stage in STAGES:
        settings = _settings(cfg, stage)
        done = None if redo or upstream_ran else _done(cfg, stage, settings)
        if done is not None:
            print(f"[rehearsal] {stage.name}: done before ({done['seconds']:.1f} s), skipped", flush=True)
            records[stage.name] = done
            continue
        print(f"[rehearsal] {stage.name}: {stage.about} ...", flush=True)
        _marker(cfg, stage.name).unlink(missing_ok=True)
        _clear(cfg, stage)
        record = measure_stage(cfg, stage)
        record.update(settings=settings, finished=datetime.datetime.now().isoformat(timespec="seconds"))
        atomic_write_text(_marker(cfg, stage.name), json.dumps(record, indent=2) + "\n")
        records[stage.name] = record
        upstream_ran = True
        print(f"[rehearsal] {stage.name}: {record['seconds']:.1f} s, peak RSS {record['peak_rss_mb']:.0f} MB, "
              f"{record['disk_mb']:.1f} MB written", flush=True)
    summary = build_summary(cfg, records)
    atomic_write_text(cfg.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(cfg.out / "summary.md", summary_markdown(summary))
    return summary


def build_summary(cfg: RehearsalConfig, records: dict[str, dict]) -> dict:
    """The summary of a rehearsal: settings, every stage's figures, totals and the targets for the full size."""
    total = sum(r["seconds"] for r in records.values())
    prep_split = records["prepare"]["seconds"] + records["split"]["seconds"]
    tune = records["m6_tune"]["details"]
    whole_fold = tune["measured_images"] == tune["images"]
    measured = {"whole_rehearsal_seconds": (total, "measured"),
                "prepare_and_splits_seconds": (prep_split, "measured"),
                "m6_tune_peak_rss_mb": (records["m6_tune"]["peak_rss_mb"], "measured") if whole_fold else
                (tune["extrapolated_peak_rss_mb"],
                 f"extrapolated from {tune['measured_images']} of {tune['images']} validation frames"),
                "m6_silver_peak_rss_mb": (records["m6_silver"]["peak_rss_mb"], "measured")}
    targets = {k: {"limit": TARGETS[k], "value": round(v, 2), "how": how,
                   # the limits are for the real size; a scaled-down run says nothing about meeting them
                   "met": (v <= TARGETS[k]) if cfg.scale == 1.0 else None} for k, (v, how) in measured.items()}
    return {"settings": {"scale": cfg.scale, "weights": str(cfg.weights), "imgsz": cfg.imgsz, "seed": cfg.seed,
                         "workers": cfg.workers, "train_frames": cfg.train_counts, "test_frames": cfg.test_counts,
                         "m6_imgsz": M6_IMGSZ, "m6_head_rows": M6_HEAD_ROWS, "cpu_count": os.cpu_count()},
            "stages": records,
            "totals": {"seconds": round(total, 2), "prepare_and_splits_seconds": round(prep_split, 2)},
            "targets": targets}


def summary_markdown(summary: dict) -> str:
    """The summary as a Markdown table, one row per stage, then the totals and targets."""
    s = summary["settings"]
    lines = [f"# Rehearsal (scale {s['scale']:g}: {sum(s['train_frames'].values())} training and "
             f"{sum(s['test_frames'].values())} test frames; model {s['weights']} at {s['imgsz']} px)", "",
             "| stage | what | seconds | peak RSS (MB) | disk (MB) | images | measured images | extrapolated seconds "
             "| extrapolated peak RSS (MB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in summary["stages"].items():
        d = r["details"]
        seconds = f"{d['extrapolated_seconds']:.0f}" if "extrapolated_seconds" in d else ""
        rss = f"{d['extrapolated_peak_rss_mb']:.0f}" if "extrapolated_peak_rss_mb" in d else ""
        lines.append(f"| {name} | {r['about']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['disk_mb']:.2f} | "
                     f"{d.get('images', '')} | {d.get('measured_images', '')} | {seconds} | {rss} |")
    lines += ["", f"Total: {summary['totals']['seconds']:.1f} s; prepare + split: "
              f"{summary['totals']['prepare_and_splits_seconds']:.1f} s.", ""]
    for name, r in summary["stages"].items():
        if "extrapolation" in r["details"]:
            lines.append(f"{name} extrapolated: {r['details']['extrapolation']}.")
    lines += ["", "| target | limit | value | how | met |", "|---|---:|---:|---|---|"]
    for k, t in summary["targets"].items():
        met = "n/a (scaled run)" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {k} | {t['limit']} | {t['value']} | {t['how']} | {met} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- CLI


def cli_rehearsal_args(parser: argparse.ArgumentParser) -> None:
    """The ``livestock rehearsal`` options."""
    parser.add_argument("--scale", type=float, default=1.0,
                        help="share of the real frame counts (16,455 training, 2,058 test; default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="the main job's model (default: %(default)s; only weights you trust)")
    parser.add_argument("--imgsz", type=int, default=320, help="its inference size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic set seed (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for generation and stand-in candidates (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: %(default)s)")
    parser.add_argument("--m6-images", type=int, default=50,
                        help="validation frames the m6@1280 tuning pass measures, its time and memory scaled to "
                             "the fold (default: %(default)s; 0: the whole fold, hours at full scale)")
    parser.add_argument("--redo", action="store_true", help="run every stage again, from empty outputs")


def _config(args: argparse.Namespace) -> RehearsalConfig:
    if not 0.0 < args.scale <= 1.0:
        raise ValueError(f"--scale must be in (0, 1], got {args.scale}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.m6_images < 0:
        raise ValueError(f"--m6-images must be >= 0, got {args.m6_images}")
    return RehearsalConfig(out=args.out, scale=args.scale, weights=args.weights, imgsz=args.imgsz, seed=args.seed,
                           workers=args.workers, device=args.device, m6_images=args.m6_images)


def cli_rehearsal(args: argparse.Namespace) -> int:
    """``livestock rehearsal``: run or resume the rehearsal and print its table."""
    summary = run_rehearsal(_config(args), redo=args.redo)
    print(summary_markdown(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """One stage in this process (``--stage NAME``): how :func:`measure_stage` runs each stage."""
    parser = argparse.ArgumentParser(prog="python -m livestock.rehearsal")
    cli_rehearsal_args(parser)
    parser.add_argument("--stage", required=True, choices=STAGE_NAMES)
    args = parser.parse_args(argv)
    cfg = _config(args)
    details = _stage(args.stage).run(cfg)
    atomic_write_text(cfg.path("stages") / f"{args.stage}.details.json", json.dumps(details, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written and closed: skip the interpreter's teardown, whose freeing of torch's modules can raise
    # the process's peak by over 100 MB, which would be counted as the stage's.
    os._exit(code)
