"""The main job: the whole pipeline on the embedded synthetic data, by executing the same notebooks a
user opens, in order, and keeping the executed copies (with their tables and plots) under
``runs/pipeline/``.

synth -> prepare -> EDA -> splits (multilabel, full, mini) -> evolution on mini -> training ->
error analysis -> silver (pseudo-label) sets [-> gold vs gold+silver training, with --expand] ->
threshold tuning on validation -> inference on the test zips -> answer.csv -> score.

Each notebook reads the previous stage's files from disk, so a stage can be re-run alone
(``livestock pipeline --only train``) and the job resumes where it stopped (``--from train``).

While a stage runs, its progress events (:mod:`livestock.progress`: training epochs, search trials, images done)
arrive in ``runs/pipeline/progress/<stage>.jsonl`` and are printed as they come, each line with an estimate of
the time left for the whole job (:mod:`livestock.pipeline_progress`). Every printed line also goes to
``runs/pipeline/log.txt``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from livestock import paths
from livestock.pipeline_progress import JobEstimate, JobSettings, format_elapsed
from livestock.progress import PROGRESS_ENV, follow_events


def repo_root() -> Path:
    """The repository that holds the notebooks (they ship beside the package, not inside it)."""
    root = paths.REPO_ROOT
    if not (root / "YOLOv5_inference.ipynb").is_file():
        raise FileNotFoundError(
            f"{root}: notebooks not found; the pipeline runs from a clone of the repository (pip install -e .)"
        )
    return root


def run_notebook(notebook: str | Path, output: str | Path, parameters: dict[str, Any], cwd: str | Path,
                 timeout_s: int | None = None) -> Path:
    """Execute ``notebook`` headless with papermill, writing the executed copy (outputs kept) to ``output``."""
    import papermill

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    extra = {"kernel_manager_class": _local_kernel_manager()} if os.name == "posix" else {}
    papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters, cwd=str(cwd), kernel_name="python3",
        progress_bar=False, log_output=False, execution_timeout=timeout_s, **extra,
    )
    return output


def _local_kernel_manager() -> type:
    """A kernel manager that talks to its kernel over Unix sockets instead of TCP on localhost: nothing
    listens on a port, and the kernel has no reason to warn about unencrypted TCP on every notebook."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IpcKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self) -> str:
            return "ipc"

    return IpcKernelManager


@contextlib.contextmanager
def kernel_environment(progress_file: Path) -> Iterator[None]:
    """While open, notebook kernels started by this process (they inherit ``os.environ`` at launch) import the
    package from this repository, whatever the virtual environment has installed, and send their progress events
    to ``progress_file``."""
    saved = {k: os.environ.get(k) for k in (PROGRESS_ENV, "PYTHONPATH")}
    os.environ[PROGRESS_ENV] = str(progress_file)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(repo_root()), *filter(None, [saved["PYTHONPATH"]])])
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------- settings

# Option groups of `livestock pipeline --help`, in order.
GROUPS = {
    "data": "synthetic data (used only when data/ holds no AI Hub zips of its own)",
    "model": "model and hardware (every training, detection and scoring stage)",
    "evolution": "hyper-parameter search on the mini set (exp/YOLOv5_hyp_evolution.ipynb)",
    "training": "training on the multilabel split, silver sets, gold vs gold+silver",
    "inference": "thresholds of the answer file (YOLOv5_inference.ipynb)",
}


def _setting(default: Any, group: str, help: str) -> Any:
    """A PipelineConfig field with its --help text and option group: the one place an option is described."""
    return field(default=default, metadata={"group": group, "help": help})


@dataclass
class PipelineConfig:
    """Settings of the main job. The defaults are the 2-core CPU demo on synthetic data; the Colab run of
    the original uses model=yolov5m6, weights=yolov5m6.pt, imgsz=1280, batch=10, epochs=20, real zips."""

    n_train: int = _setting(300, "data", "synthetic training images to render (the real set: 16,455)")
    n_test: int = _setting(80, "data", "synthetic test images, with their answer file data_test/answer.csv")
    seed: int = _setting(0, "data", "seed of the synthetic data (the test set is the one of seed 0)")
    missing_cow_rate: float = _setting(0.15, "data", "share of synthetic cow boxes left out of the labels, as the "
                                                     "real cow labels miss some")
    engine: str = _setting("yolov5", "model", "detection engine: yolov5 (the original's) or ultralytics (YOLOv8 / "
                                              "YOLO11 / YOLO26)")
    model: str = _setting("", "model", "architecture, '' for the engine's smallest: yolov5n/s/m/l/x or P6 "
                                       "yolov5n6 ... yolov5x6 (the original: yolov5m6); with --engine ultralytics "
                                       "yolo11n ... yolo26x")
    weights: str = _setting("auto", "model", "auto: the barn-pretrained trained_model/pretrained_<model>_<imgsz>.pt "
                                             "of the working folder, else of the repository, when it is there (its "
                                             "manifest verified), else from scratch; '' trains "
                                             "from scratch; a checkpoint path or pretrained name (the original: "
                                             "yolov5m6.pt, COCO-pretrained). Checkpoints are pickles: only weights "
                                             "you trust")
    imgsz: int = _setting(320, "model", "image size in pixels for training and detection (the original: 1280)")
    batch: int = _setting(16, "model", "training batch size (the original: 10)")
    device: str = _setting("auto", "model", "auto (GPU 0 when there is one, else CPU), cpu, 0, 0,1")
    workers: int = _setting(2, "model", "data-loader worker processes per training run")
    evolve_sampler: str = _setting("ga", "evolution", "ga: YOLOv5's genetic algorithm (the original's); tpe, "
                                                      "cmaes or random")
    evolve_trials: int = _setting(3, "evolution", "trials (generations) of the search (the original: 7)")
    evolve_epochs: int = _setting(3, "evolution", "training epochs per trial (the original: 7)")
    evolve_keys: str = _setting("lr0,lrf,momentum", "evolution", "hyp keys searched; every other key keeps its "
                                                                  "value in --base-hyp (the original's keys)")
    base_hyp: str = _setting("", "evolution",
                             "hyp yaml the search starts from; '' for the engine's CPU scratch hyp "
                             "(hyp/hyp_scratch_cpu.yaml for yolov5). The original started from YOLOv5's fine-tuning "
                             "hyp, which evolved into hyp/experiment_hyp_v1.yaml")
    train_seed: int = _setting(0, "training", "seed of every training (search trials, the split model, gold vs "
                                              "gold+silver): another value repeats the job's training on the same "
                                              "data")
    epochs: int = _setting(30, "training", "training epochs on the multilabel split, and per set with --expand "
                                           "(the original: 20)")
    silver_modes: str = _setting("replace,union", "training",
                                 "silver (pseudo-label) sets to build: replace (the original's rule: predictions "
                                 "label a second copy of each cow image) and/or union (gold boxes plus unmatched "
                                 "predictions)")
    expand: bool = _setting(False, "training", "also train gold vs gold+silver under the same budget, one training "
                                               "run per set (the original's expand experiment)")
    tune: bool = _setting(True, "inference", "tune NMS IoU x confidence on the validation fold before detecting "
                                             "the test set; --no-tune uses --conf and --iou")
    conf: float = _setting(0.001, "inference", "confidence threshold without tuning (the original's submission: "
                                               "0.001)")
    iou: float = _setting(0.68, "inference", "NMS IoU threshold without tuning (the original's submission: 0.68)")
    tta: bool = _setting(False, "inference", "test-time augmentation (the engine's flips and scales): tuning scores "
                                             "it as grid dimensions (TTA on, its views fused by NMS or by WBF) and "
                                             "the test set gets the best cell; with --no-tune, detect with TTA and "
                                             "--fusion")
    fusion: str = _setting("nms", "inference", "with --tta --no-tune: how the TTA views are fused: nms (the engine's "
                                               "own augmented inference) or wbf (weighted boxes fusion)")


def check_config(cfg: PipelineConfig, work: Path | None = None) -> None:
    """ValueError (FileNotFoundError for weights) on a setting no stage can take, before the first stage runs: a typo
    would otherwise surface only in the stage that reads it, after the data stages (minutes at full size)."""
    from livestock.evaluation.silver import MODES
    from livestock.model.engine import ENGINES, get_engine, parse_device
    from livestock.model.engine_files import check_model, find_start_weights
    from livestock.model.genetic import parse_keys
    from livestock.model.pretrain import AUTO
    from livestock.model.search import SAMPLERS

    if cfg.engine not in ENGINES:
        raise ValueError(f"--engine {cfg.engine!r}: choose one of {', '.join(ENGINES)}")
    engine = get_engine(cfg.engine)
    if cfg.model:
        check_model(cfg.model, cfg.engine, engine.MODEL_NAMES)
    parse_device(cfg.device)
    low = [f"--{name.replace('_', '-')} {value}" for name, value in
           (("batch", cfg.batch), ("epochs", cfg.epochs), ("evolve_trials", cfg.evolve_trials),
            ("evolve_epochs", cfg.evolve_epochs)) if value < 1]
    if low or cfg.imgsz < 32 or cfg.workers < 0:
        raise ValueError(f"{', '.join(low) or f'--imgsz {cfg.imgsz} / --workers {cfg.workers}'}: batch, epochs and "
                         f"trials must be at least 1, --imgsz at least 32, --workers at least 0")
    if not (0 <= cfg.conf <= 1 and 0 < cfg.iou <= 1):
        raise ValueError(f"--conf {cfg.conf} / --iou {cfg.iou}: conf must lie in [0, 1] and iou in (0, 1]")
    if cfg.evolve_sampler not in SAMPLERS:
        raise ValueError(f"--evolve-sampler {cfg.evolve_sampler!r}: choose one of {', '.join(SAMPLERS)}")
    modes = [m.strip() for m in cfg.silver_modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        raise ValueError(f"--silver-modes {cfg.silver_modes!r}: one or more of {', '.join(MODES)}")
    parse_keys(cfg.evolve_keys, engine.HYP_KEYS)
    if cfg.weights != AUTO and not (work is not None and cfg.weights and (work / cfg.weights).is_file()):
        try:  # the training stages' own rule: a file, or a pretrained name they find or fetch later
            find_start_weights(cfg.weights, engine.MODEL_NAMES)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{cfg.weights}: start weights not found (--weights: a checkpoint path, a "
                                    f"pretrained name such as {engine.MODEL_NAMES[0]}.pt, auto, or '' for scratch)"
                                    ) from e


def _stages(cfg: PipelineConfig, work: Path) -> list[tuple[str, str | None, Callable[[], Any] | dict]]:
    """(name, notebook or None, parameters or a callable doing the step in-process)."""
    evolve_dir = f"{paths.RUNS_DIR}/evolve/mini"
    weights_out = f"{paths.TRAINED_MODEL_DIR}/multilabel_best.pt"
    base_hyp = cfg.base_hyp  # '' -> the engine's own CPU scratch hyp, shipped with the package
    if base_hyp and not Path(base_hyp).is_absolute() and not (work / base_hyp).is_file():
        base_hyp = str(repo_root() / base_hyp)  # the hyp files ship with the repository
    common = {"ROOT": str(work)}
    model = {**common, "DEVICE": cfg.device, "IMGSZ": cfg.imgsz}
    # What every training notebook (evolution, the split model, gold vs silver) shares.
    training = {**model, "ENGINE": cfg.engine, "MODEL": cfg.model, "WEIGHTS": cfg.weights, "BATCH": cfg.batch,
                "WORKERS": cfg.workers, "SEED": cfg.train_seed}
    evolved_hyp = f"{evolve_dir}/best_hyp.yaml"
    return [
        ("synth", None, lambda: _synth_if_missing(cfg, work)),
        ("prepare", None, lambda: _prepare(work)),
        ("eda", "EDA/EDA.ipynb", {**common}),
        ("split_multilabel", "EDA/Make_Dataset_Multilabel.ipynb", {**common}),
        ("split_full", "EDA/Make_Dataset_Full.ipynb", {**common}),
        ("split_mini", "EDA/Make_Dataset_Mini.ipynb", {**common}),
        ("evolve", "exp/YOLOv5_hyp_evolution.ipynb", {
            **training, "EPOCHS": cfg.evolve_epochs, "TRIALS": cfg.evolve_trials, "SAMPLER": cfg.evolve_sampler,
            "KEYS": cfg.evolve_keys, "BASE_HYP": base_hyp, "OUT_DIR": evolve_dir,
        }),
        ("train", "train/YOLOv5_MultiLabelSplit.ipynb", {
            **training, "EPOCHS": cfg.epochs, "HYP": evolved_hyp, "OUT_WEIGHTS": weights_out,
        }),
        ("analysis", "EDA/Data_Checking.ipynb", {**model, "WEIGHTS": weights_out}),
        ("silver", "EDA/Data_Augmentation.ipynb", {**model, "WEIGHTS": weights_out, "MODES": cfg.silver_modes}),
        *([("expand", "train/YOLOv5_ExpandDataset_hp_tune.ipynb", {
            **training, "EPOCHS": cfg.epochs, "HYP": evolved_hyp, "MODES": cfg.silver_modes, "CONF": cfg.conf,
            "IOU": cfg.iou,
        })] if cfg.expand else []),
        ("inference", "YOLOv5_inference.ipynb", {
            **model, "WEIGHTS": weights_out, "TUNE": cfg.tune, "CONF": cfg.conf, "IOU": cfg.iou, "TTA": cfg.tta,
            "FUSION": cfg.fusion, "ANSWER_OUT": "answer.csv",
        }),
    ]


def stage_names(cfg: PipelineConfig) -> list[str]:
    """The stages of a full run with these settings, in order."""
    return [name for name, _, _ in _stages(cfg, Path("."))]


def start_weights(cfg: PipelineConfig, folder: str | Path | None = None) -> tuple[str, str]:
    """The weights the training stages start from ('' for scratch) and a line saying which and why: ``auto`` is
    the pretrained file for the model and image size in ``folder`` (default: as
    :func:`~livestock.model.pretrain.resolve_start_weights` looks for it)."""
    from livestock.model.pretrain import resolve_start_weights

    return resolve_start_weights(cfg.weights, cfg.model, cfg.imgsz, folder, engine=cfg.engine)


def _synth_if_missing(cfg: PipelineConfig, root: Path) -> None:
    from livestock.data.synth import generate_synthetic_dataset

    data_dir, test_dir = root / paths.DATA_DIR, root / paths.TEST_DIR
    if all((data_dir / z).is_file() for z in paths.TRAIN_ZIPS.values()):
        print(f"[synth] {data_dir} already holds the four training zips: using them")
        return
    generate_synthetic_dataset(data_dir, test_dir, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed,
                               missing_cow_rate=cfg.missing_cow_rate, progress=True)


def _prepare(root: Path) -> None:
    from livestock.data.yolo_format import prepare_dataset

    prepare_dataset(root / paths.DATA_DIR, root / paths.PREPARED_DIR, progress=True)
    if any((root / paths.TEST_DIR / z).is_file() for z in paths.TEST_ZIPS.values()):
        prepare_dataset(root / paths.TEST_DIR, root / paths.PREPARED_TEST_DIR, images_only=True, progress=True)


# ---------------------------------------------------------------- the run


class _Terminal:
    """Prints the job's lines (from the main thread and the progress thread alike) and keeps them in a log file."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.lock = threading.Lock()
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("", encoding="utf-8")

    def say(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(line + "\n")


def _job_settings(cfg: PipelineConfig) -> JobSettings:
    return JobSettings(n_train=cfg.n_train, n_test=cfg.n_test, model=cfg.model, imgsz=cfg.imgsz,
                       evolve_trials=cfg.evolve_trials, evolve_epochs=cfg.evolve_epochs, epochs=cfg.epochs,
                       silver_modes=tuple(m.strip() for m in cfg.silver_modes.split(",") if m.strip()))


def run_pipeline(cfg: PipelineConfig, workdir: str | Path | None = None, only: list[str] | None = None,
                 start_from: str | None = None) -> dict:
    """Run the stages in ``workdir`` (default: the repository itself: data/, runs/, trained_model/, answer.csv),
    printing each stage's progress and the time left; returns the summary also written to runs/pipeline/summary.json."""
    t_job = time.perf_counter()
    from livestock.evaluation.fusion import check_fusion

    check_fusion(cfg.tta, cfg.fusion)  # refused here, not in the inference notebook at the end of the job
    root = repo_root()
    work = Path(workdir).resolve() if workdir else root
    check_config(cfg, work)
    work.mkdir(parents=True, exist_ok=True)
    weights, weights_line = start_weights(cfg)  # a pretrained file that fails its manifest stops the job here
    cfg = replace(cfg, weights=weights)
    stages = _stages(cfg, work)
    names = [s[0] for s in stages]
    for n in (only or []) + ([start_from] if start_from else []):
        if n == "expand" and not cfg.expand:
            raise ValueError("the expand stage (gold vs gold+silver training) runs only with --expand")
        if n not in names:
            raise ValueError(f"unknown stage {n!r}; stages: {', '.join(names)}")
    if start_from:
        stages = stages[names.index(start_from):]
    if only:
        stages = [s for s in stages if s[0] in only]
    out_dir = work / paths.RUNS_DIR / "pipeline"
    term = _Terminal(out_dir / "log.txt")
    term.say(f"[pipeline] starting weights: {weights_line}")
    estimate = JobEstimate(_job_settings(cfg), work, [s[0] for s in stages])
    timings: dict[str, float] = {}
    started_at: dict[str, float] = {}
    for i, (name, notebook, step) in enumerate(stages, 1):
        progress_file = out_dir / "progress" / f"{name}.jsonl"
        progress_file.parent.mkdir(parents=True, exist_ok=True)
        progress_file.write_text("", encoding="utf-8")  # this run's events only
        started_at[name] = time.time()
        estimate.start_stage(name, started_at[name])
        term.say(f"[pipeline] {name} ... (stage {i}/{len(stages)}; {estimate.eta()})")

        def show(event: dict, name: str = name) -> None:
            text = estimate.handle(name, event)
            if text is not None:
                term.say(f"[pipeline] {name}  {text}  | {estimate.eta()}")

        with kernel_environment(progress_file), follow_events(progress_file, show):
            if notebook is None:
                step()
            else:
                run_notebook(root / notebook, out_dir / notebook, step, cwd=work)
        timings[name] = estimate.finish_stage(name)
        if notebook is not None:
            term.say(f"[pipeline] {name}: executed copy at {out_dir / notebook}")
        term.say(f"[pipeline] {name} done in {timings[name]:.0f} s  | {estimate.eta()}")
    from livestock.model.run_record import machine_info

    # The machine goes with the score: the same job trains another model on another CPU instruction set.
    summary: dict[str, Any] = {"config": asdict(cfg), "stages": list(timings), "timings_s": timings,
                               "machine": machine_info(cfg.device, cfg.engine)}
    summary.update(_score_of_this_run(work, started_at.get("inference")))
    from livestock.fileio import atomic_write_text

    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
    if summary["score"] is not None:
        s = summary["score"]
        test_set = s.get("test_set", "test set")  # "synthetic test set" or "your test set"
        term.say(f"[pipeline] {test_set}: mAP@0.75 = {s['map_75']!r} (mAP@0.5 {s.get('map_50', float('nan')):.4f}, "
                 f"mAP@0.5:0.95 {s.get('map_50_95', float('nan')):.4f}; tta={s.get('tta')} fusion={s.get('fusion')} "
                 f"conf={s.get('conf')} iou={s.get('iou')})")
    else:
        term.say(f"[pipeline] no score: {summary['score_note']}")
    term.say(f"[pipeline] finished in {format_elapsed(time.perf_counter() - t_job)}")
    return summary


def _score_of_this_run(work: Path, inference_started: float | None) -> dict[str, Any]:
    """``score`` (and ``score_note`` when there is none): the test score written by the inference stage of this
    call, never one left on disk by an earlier run, which may belong to other weights or settings."""
    score_file = work / paths.RUNS_DIR / "inference" / "score.json"
    if inference_started is None:
        return {"score": None, "score_note": "the inference stage did not run in this call; its last score, if any, "
                                             f"is in {score_file}"}
    if not score_file.is_file() or score_file.stat().st_mtime < inference_started:
        return {"score": None, "score_note": "the inference stage wrote no score: no ground truth for these test "
                                             f"images ({paths.TEST_ANSWER} missing, or written for other zips)"}
    return {"score": json.loads(score_file.read_text())}


# ---------------------------------------------------------------- command line


def cli_pipeline_args(p: argparse.ArgumentParser) -> None:
    """Options of ``livestock pipeline``: every PipelineConfig field, by group, with its help text and default."""
    stages = stage_names(PipelineConfig(expand=True))
    p.epilog = (f"stages, in order: {', '.join(stages)} (expand only with --expand). Every line printed also goes to "
                "runs/pipeline/log.txt; the executed notebooks and summary.json go to runs/pipeline/.")
    groups = {name: p.add_argument_group(name, text) for name, text in GROUPS.items()}
    for f in fields(PipelineConfig):
        flag = "--" + f.name.replace("_", "-")
        group = groups[f.metadata["group"]]
        if isinstance(f.default, bool):
            action = group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                        help=f.metadata["help"])
        else:
            action = group.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata["help"])
        if "%(default)" not in action.help:  # BooleanOptionalAction adds it itself on some Python versions
            action.help += " (default: %(default)r)"
    run = p.add_argument_group("run", "where the job runs and which stages")
    run.add_argument("--workdir", default=None, help="where data/, runs/, trained_model/ and answer.csv go "
                                                     "(default: the repository)")
    run.add_argument("--only", default="", metavar="STAGES",
                     help="comma-separated stages to run, and nothing else (e.g. eda,inference)")
    run.add_argument("--from", dest="start_from", default=None, metavar="STAGE",
                     help="resume: skip the stages before STAGE, run it and every later one")


def cli_pipeline(args: argparse.Namespace) -> int:
    """``livestock pipeline``: run the job with the options given."""
    config = {k: v for k, v in vars(args).items() if k in PipelineConfig.__dataclass_fields__}
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    run_pipeline(PipelineConfig(**config), workdir=args.workdir, only=only, start_from=args.start_from)
    return 0
