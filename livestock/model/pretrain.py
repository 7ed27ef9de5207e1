"""Barn-pretrained starting weights, the stand-in for COCO weights: ``livestock pretrain``.

The original entry fine-tuned COCO-pretrained YOLOv5m6; COCO weights cannot be fetched here, and pretraining on
the main job's own data (or its test distribution) would be no stand-in at all. So the main job's model is trained
from scratch on a separate, larger synthetic set rendered in the generator's ``shifted`` style
(:mod:`livestock.data.synth.style`: other floors, walls, light, breeds, body shapes, animal sizes and camera tilt),
a related domain with the same task, as COCO is to barn CCTV. Its frames come from a seed of their own and
random streams of their own, so none equals a main-job frame; every animal is labelled (no left-out boxes).

One command does everything, and re-running it after an interruption continues where it stopped:

1. render the set (skipped when the zips on disk match the recorded generator settings and hashes);
2. prepare it and split it 90 / 10 (multilabel-stratified; skipped when done for these zips);
3. train (from scratch, the engine's CPU scratch hyp), resuming from ``last.pt`` when the run was interrupted;
4. validate ``best.pt`` on the pretraining val split (the engine's mAP@0.5, the contest mAP@0.75), then write
   ``trained_model/pretrained_<model>_<imgsz>.json`` (the manifest: command, settings, data hashes, epochs, wall
   time, machine, validation scores, the weights' sha256) and the weights beside it.

The main job starts from that file by default (:func:`resolve_start_weights`, after :func:`verify_pretrained`).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from livestock import paths
from livestock.data.split import stratified_split, write_split
from livestock.data.synth import generate_synthetic_dataset
from livestock.data.synth.dataset import IMAGE_SCALE_RULE, image_scale_ok, refuse_settings
from livestock.data.synth.style import STYLES, get_style
from livestock.data.yolo_format import prepare_dataset
from livestock.evaluation.inference import split_map
from livestock.fileio import atomic_write_bytes, atomic_write_text, file_sha256
from livestock.model.engine import DEFAULT_ENGINE, ENGINES, epochs_in_results, get_engine, parse_device
from livestock.model.engine_files import check_model
from livestock.model.run_record import RunRecord

MANIFEST_KIND = "livestock-pretrained-weights"
AUTO = "auto"  # the pipeline's weights setting: the pretrained file for its model and size when present
PRETRAIN_STYLES = tuple(s for s in STYLES if s != "barn")  # the barn style is the main job's own distribution
DEFAULT_SEED = 101  # the main job's data use seed 0; the shifted style's streams differ from the barn's anyway
DEFAULT_FRAMES = 2000
DEFAULT_EPOCHS = 60
VAL_FOLDS = 10  # fold 0 of 10 is the validation split: 90 / 10
FULL_WIDTH = 1280  # the narrower calibrated frame width: the default image scale keeps every frame >= imgsz wide
STATE_FILE = "pretrain_state.json"
Say = Callable[[str], None]


@dataclass(frozen=True)
class PretrainSettings:
    """What ``livestock pretrain`` makes and where; the first group defines the result (and its command line)."""

    engine: str = DEFAULT_ENGINE
    model: str | None = None  # None: the engine's default model (yolov5n, yolo11n)
    imgsz: int = 320
    epochs: int = DEFAULT_EPOCHS
    batch: int = 16
    seed: int = DEFAULT_SEED
    frames: int = DEFAULT_FRAMES
    image_scale: float | None = None  # None: imgsz / 1280 (frames at least as wide as the training size), at most 1
    style: str = "shifted"
    workers: int = 2  # data-loader workers: each draws its augmentations from its own seeded stream
    # where and on what: not part of the result
    device: str = "auto"
    data_dir: str = str(paths.DATA_DIR / "pretrain")
    project: str = str(paths.RUNS_DIR / "pretrain")
    out: str = str(paths.TRAINED_MODEL_DIR)

    def __post_init__(self) -> None:
        # Every engine resumes an interrupted training (``can_resume``, ``train(resume=True)``): a pretraining of
        # hours must survive the end of a session.
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if not self.model:
            object.__setattr__(self, "model", get_engine(self.engine).DEFAULT_MODEL)  # frozen: set once, here
        if self.style not in PRETRAIN_STYLES:
            raise ValueError(f"pretraining style must be one of {PRETRAIN_STYLES} (barn is the main job's own "
                             f"distribution), not {self.style!r}")
        # Every number no pretraining can take, in one line that names the options typed (the fields are the
        # options' names: ``command``), before a folder is made or a frame rendered (2,000 frames take minutes).
        rules = [("imgsz", self.imgsz, self.imgsz >= 32, "32 or more"),
                 ("epochs", self.epochs, self.epochs >= 1, "1 or more"),
                 ("batch", self.batch, self.batch >= 1, "1 or more"),
                 ("seed", self.seed, self.seed >= 0, "0 or more"),
                 ("frames", self.frames, self.frames >= VAL_FOLDS, f"{VAL_FOLDS} or more (a {VAL_FOLDS}-fold split)"),
                 # None: imgsz / 1280, which any imgsz of 32 or more makes a scale the generator takes
                 ("image_scale", self.image_scale, self.image_scale is None or image_scale_ok(self.image_scale),
                  IMAGE_SCALE_RULE),
                 ("workers", self.workers, self.workers >= 0, "0 or more")]
        refuse_settings(rules, lambda key: f"--{key.replace('_', '-')}")
        check_model(self.model, self.engine, get_engine(self.engine).MODEL_NAMES)
        parse_device(self.device)

    @property
    def scale(self) -> float:
        """The generator's image scale: the one given, else imgsz / 1280 (at most 1)."""
        return float(self.image_scale) if self.image_scale is not None else min(1.0, self.imgsz / FULL_WIDTH)

    @property
    def model_name(self) -> str:
        """The model's short name (a yaml path's stem)."""
        return Path(str(self.model)).stem

    def generator(self) -> dict:
        """The generator's arguments: the pretraining data depend on these and on nothing else."""
        return {"style": self.style, "seed": self.seed, "n_train": self.frames, "n_test": 0,
                "missing_cow_rate": 0.0, "image_scale": self.scale}

    def result(self) -> dict:
        """Every setting the weights depend on: a run folder made with others is not continued. The loader workers
        join only where they are not the default 2, so records made before they were counted stay valid."""
        loader = {} if self.workers == PretrainSettings.workers else {"workers": self.workers}
        return {"engine": self.engine, "model": self.model, "imgsz": self.imgsz, "epochs": self.epochs,
                "batch": self.batch, **loader, **self.generator()}

    def command(self) -> str:
        """The command line that re-makes these weights, every setting of the result spelt out."""
        words = ["livestock", "pretrain", "--engine", self.engine, "--model", self.model, "--imgsz", str(self.imgsz),
                 "--epochs", str(self.epochs), "--batch", str(self.batch), "--seed", str(self.seed),
                 "--frames", str(self.frames), "--image-scale", f"{self.scale:g}", "--style", self.style]
        defaults = PretrainSettings()
        for name in ("workers", "data_dir", "project", "out"):
            if getattr(self, name) != getattr(defaults, name):
                words += [f"--{name.replace('_', '-')}", str(getattr(self, name))]
        return " ".join(words)

    def data_root(self) -> Path:
        """This set's folder: one per style, seed, size and scale, so sets of other settings stay apart."""
        return Path(self.data_dir) / f"{self.style}_seed{self.seed}_{self.frames}x{self.scale:g}"

    def run_dir(self) -> Path:
        """The training run's folder."""
        return Path(self.project) / f"{self.model_name}_{self.imgsz}"

    def weights_path(self) -> Path:
        """Where the pretrained weights go (the manifest beside them, ``.json``)."""
        return pretrained_weights_path(self.model, self.imgsz, self.out)


# ---------------------------------------------------------------- the committed file and its manifest


def pretrained_weights_path(model: str, imgsz: int, folder: str | os.PathLike = paths.TRAINED_MODEL_DIR) -> Path:
    """``folder/pretrained_<model>_<imgsz>.pt``: where the pretrained weights of a model and size live."""
    return Path(folder) / f"pretrained_{Path(model).stem}_{int(imgsz)}.pt"


def verify_pretrained(weights: str | os.PathLike) -> dict:
    """The manifest of a pretrained weight file (``.json`` beside it), after checking that it describes this very
    file; a missing manifest or a hash that differs is one error naming the file."""
    weights = Path(weights)
    manifest_path = weights.with_suffix(".json")
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: pretrained weights not found")
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{weights}: no manifest {manifest_path.name} beside it; re-make both with "
                                "`livestock pretrain`, or start from scratch with --weights ''")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{manifest_path}: not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise ValueError(f"{manifest_path}: not a pretrained-weights manifest (kind {MANIFEST_KIND!r})")
    digest = file_sha256(weights)
    if manifest.get("weights_sha256") != digest:
        raise ValueError(f"{weights}: its sha256 {digest[:16]}... differs from the one in {manifest_path.name} "
                         f"({str(manifest.get('weights_sha256'))[:16]}...): the file was changed or replaced; "
                         f"re-make it with `{manifest.get('command', 'livestock pretrain')}`")
    return manifest


def resolve_start_weights(weights: str, model: str, imgsz: int, folder: str | os.PathLike | None = None,
                          engine: str = DEFAULT_ENGINE) -> tuple[str, str]:
    """(the weights a training starts from, '' for scratch; a line saying which and why).

    ``auto``: the pretrained file of ``model`` (``''``: the engine's default) at ``imgsz`` in ``folder`` when it
    exists (its manifest verified), else from scratch. ``folder`` None looks in the working folder's
    ``trained_model/`` (weights pretrained there) and then in the repository's (the committed file), so a command
    run in a job's own folder (``livestock pipeline --workdir``) finds the committed weights. A ``pretrained_*.pt``
    path is verified too; other values pass as they are.
    """
    if weights == AUTO:
        folders = ([Path(folder)] if folder is not None else
                   [paths.TRAINED_MODEL_DIR, paths.REPO_ROOT / paths.TRAINED_MODEL_DIR])
        name = model or get_engine(engine).DEFAULT_MODEL
        candidates = [pretrained_weights_path(name, imgsz, f) for f in folders]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return "", f"from scratch (auto: no pretrained weights {' or '.join(map(str, candidates))})"
    else:
        path = Path(weights) if weights else None
        if path is None or not (path.name.startswith("pretrained_") and path.is_file()):
            return weights, f"{weights}" if weights else "from scratch (--weights '')"
    manifest = verify_pretrained(path)
    data, score = manifest.get("data", {}), manifest.get("val", {}).get("mAP@0.75")
    about = (f"pretrained on {data.get('frames')} {data.get('style')} frames for {manifest.get('epochs_run')} epochs, "
             f"val mAP@0.75 {score:.3f}" if isinstance(score, float) else "pretrained")
    return str(path.resolve()), f"{path} ({about}; manifest verified); --weights '' trains from scratch"


def command_start_weights(weights: str, model: str | None, imgsz: int, engine: str = DEFAULT_ENGINE) -> str | None:
    """A training command's ``--weights`` resolved (:func:`resolve_start_weights`), None for scratch. Which start it
    is gets printed first whenever weights were given: ``auto`` may mean from scratch."""
    resolved, about = resolve_start_weights(weights, model or "", imgsz, engine=engine)
    if weights:
        print(f"start weights: {about}", flush=True)
    return resolved or None


# ---------------------------------------------------------------- the steps


def _zip_hashes(folder: Path) -> dict[str, str]:
    return {z: file_sha256(folder / z) for z in sorted(paths.TRAIN_ZIPS.values()) if (folder / z).is_file()}


def data_sha256(zip_hashes: dict[str, str]) -> str:
    """One hash of the four training zips: sha256 over their ``name sha256`` lines in name order."""
    return hashlib.sha256("".join(f"{n} {h}\n" for n, h in sorted(zip_hashes.items())).encode()).hexdigest()


def _generate(settings: PretrainSettings, root: Path, say: Say) -> dict:
    """Render the pretraining zips unless the ones on disk were made with these settings; their record."""
    record_path = root / "generated.json"
    zips = root / "zips"
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("generator") == settings.generator() and _zip_hashes(zips) == record.get("zips"):
            say(f"data: {zips} holds the {settings.frames} {settings.style} frames already (hashes match)")
            return record
    say(f"data: rendering {settings.frames} {settings.style} frames to {zips} ...")
    # The generator always writes test zips too; the pretraining set has no test part, so they stay empty.
    gen = settings.generator()
    summary = generate_synthetic_dataset(zips, root / "no_test", n_train=gen["n_train"], n_test=gen["n_test"],
                                         seed=gen["seed"], missing_cow_rate=gen["missing_cow_rate"],
                                         image_scale=gen["image_scale"], style=gen["style"], progress=True)
    record = {"generator": gen, "zips": _zip_hashes(zips), "images": summary.train_images,
              "boxes": summary.train_true_boxes, "seconds": round(summary.seconds, 1)}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record


def _prepare(settings: PretrainSettings, root: Path, data_hash: str, say: Say) -> tuple[Path, dict]:
    """Prepare and split the zips (90 / 10) unless done for these very zips; the split's data.yaml and counts."""
    record_path = root / "prepared.json"
    split_dir = root / "split"
    wanted = {"data_sha256": data_hash, "folds": VAL_FOLDS, "split_seed": settings.seed}
    if record_path.is_file() and (split_dir / "data.yaml").is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if {k: record.get(k) for k in wanted} == wanted:
            say(f"data: {split_dir} is prepared and split already")
            return split_dir / "data.yaml", record
    say("data: preparing and splitting ...")
    prepared = prepare_dataset(root / "zips", root / "prepared", progress=True)
    manifest = stratified_split(prepared.records, n_splits=VAL_FOLDS, seed=settings.seed)
    rows = write_split(manifest, split_dir, "multilabel")
    record = {**wanted, "train_images": int((rows["split"] == "train").sum()),
              "val_images": int((rows["split"] == "val").sum())}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return split_dir / "data.yaml", record


def _train(settings: PretrainSettings, engine, data_yaml: Path, state: RunRecord, say: Say) -> Path:
    """Train, continue an interrupted training, or find a finished one; the best weights."""
    run_dir = settings.run_dir()
    best, results = run_dir / "weights" / "best.pt", run_dir / "results.csv"
    try:
        resume = engine.can_resume(run_dir)
    except ValueError as e:  # the engine writes last.pt atomically, so a kill cannot cut it short: damaged later
        raise ValueError(f"{e}; the pretraining cannot continue from it: delete {run_dir} to start again") from e
    if not resume and best.is_file():
        say(f"train: {run_dir} finished already ({epochs_in_results(results)} epochs)")
        return best
    if resume:
        say(f"train: resuming {run_dir} after epoch {epochs_in_results(results)} of {settings.epochs}")
    else:
        # a run killed before its first last.pt may have left a results row: a fresh start must not append to it
        results.unlink(missing_ok=True)
        say(f"train: {settings.model} from scratch at {settings.imgsz} px, {settings.epochs} epochs -> {run_dir}")
    started = time.perf_counter()
    first = epochs_in_results(results)

    def on_epoch(epoch: int, epochs: int, metrics: dict) -> None:
        state.add("train")
        per_epoch = (time.perf_counter() - started) / max(epoch - first, 1)
        left = per_epoch * (epochs - epoch)
        say(f"train: epoch {epoch}/{epochs}  loss {metrics['loss']:.4f}  val mAP@0.5 {metrics['mAP@0.5']:.3f}  "
            f"mAP@0.5:0.95 {metrics['mAP@0.5:0.95']:.3f}  | {per_epoch:.0f} s/epoch, ~{left / 60:.0f} min left")

    result = engine.train(data_yaml, model=settings.model, weights=None, hyp=engine.DEFAULT_HYP,
                          imgsz=settings.imgsz, epochs=settings.epochs, batch_size=settings.batch,
                          device=settings.device, workers=settings.workers, project=settings.project,
                          name=run_dir.name, exist_ok=True, seed=settings.seed, plots=False, on_epoch=on_epoch,
                          resume=resume)
    state.add("train")
    return result.best


def _up_to_date(settings: PretrainSettings) -> dict | None:
    """The manifest when the weights file was made by this command from the run's finished best weights."""
    out, best = settings.weights_path(), settings.run_dir() / "weights" / "best.pt"
    if not (out.is_file() and out.with_suffix(".json").is_file() and best.is_file()):
        return None
    try:
        manifest = verify_pretrained(out)
    except ValueError:
        return None  # made again below, and the file rewritten
    if manifest.get("command") != settings.command() or manifest["weights_sha256"] != file_sha256(best):
        return None
    return manifest


def pretrain(settings: PretrainSettings, say: Say = print) -> dict:
    """Make (or finish making) the pretrained weights and their manifest; returns the manifest."""
    engine = get_engine(settings.engine)
    done = _up_to_date(settings)
    if done is not None:
        say(f"{settings.weights_path()} is up to date: its manifest names this command and the run's best weights")
        return done
    root = settings.data_root()
    settings.run_dir().mkdir(parents=True, exist_ok=True)
    state = RunRecord(settings.run_dir() / STATE_FILE, settings.result(), device=settings.device,
                      engine=settings.engine, what="pretraining",
                      hint="remove the folder or choose another --project")
    generated = _generate(settings, root, say)
    state.add("generate")
    data_hash = data_sha256(generated["zips"])
    data_yaml, prepared = _prepare(settings, root, data_hash, say)
    state.add("prepare")
    best = _train(settings, engine, data_yaml, state, say)

    say("evaluate: validating the best weights on the pretraining val split ...")
    table = engine.validate(best, data_yaml, imgsz=settings.imgsz, device=settings.device,
                            project=settings.run_dir(), name="val", exist_ok=True, plots=False)
    map75 = split_map(best, data_yaml, split="val", imgsz=settings.imgsz, device=settings.device)
    state.add("evaluate")
    weights_bytes = best.read_bytes()
    style = get_style(settings.style)
    manifest = {
        "kind": MANIFEST_KIND,
        "weights": settings.weights_path().name,
        "weights_sha256": hashlib.sha256(weights_bytes).hexdigest(),
        "weights_bytes": len(weights_bytes),
        "command": settings.command(),
        "engine": settings.engine, "model": settings.model, "imgsz": settings.imgsz, "batch": settings.batch,
        "seed": settings.seed, "epochs": settings.epochs,
        "epochs_run": epochs_in_results(settings.run_dir() / "results.csv"),
        "hyp": engine.DEFAULT_HYP, "hyp_values": engine.load_hyp(engine.DEFAULT_HYP),
        "data": {"style": settings.style, "frames": settings.frames, "generator": settings.generator(),
                 "style_settings": dataclasses.asdict(style), "images": generated["images"],
                 "boxes": generated["boxes"], "train_images": prepared["train_images"],
                 "val_images": prepared["val_images"], "split": f"fold 0 of {VAL_FOLDS}, multilabel-stratified",
                 "zips_sha256": generated["zips"], "data_sha256": data_hash},
        "val": {"images": int(table.loc["all", "images"]), "instances": int(table.loc["all", "instances"]),
                "mAP@0.5": float(table.loc["all", "mAP@0.5"]), "mAP@0.5:0.95": float(table.loc["all", "mAP@0.5:0.95"]),
                "mAP@0.75": map75},
        "wall_time_s": state.totals(),
        "sessions": state.sessions,
        "machine": state.session["machine"],
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out = settings.weights_path()
    text = json.dumps(manifest, indent=2) + "\n"
    manifest = json.loads(text)  # as it reads back from the file (tuples become lists)
    # The manifest first: until the weights land beside it, `auto` finds no weights and trains from scratch.
    atomic_write_text(out.with_suffix(".json"), text)
    atomic_write_bytes(out, weights_bytes)
    say(f"wrote {out} ({len(weights_bytes) / 1e6:.1f} MB) and {out.with_suffix('.json').name}: val mAP@0.5 "
        f"{manifest['val']['mAP@0.5']:.3f}, mAP@0.75 {map75:.3f}, {manifest['wall_time_s']['total'] / 60:.1f} min "
        f"over {manifest['sessions']} session(s)")
    return manifest


# ---------------------------------------------------------------- CLI


def cli_pretrain_args(p: argparse.ArgumentParser) -> None:
    """The ``livestock pretrain`` options."""
    d = PretrainSettings()
    p.description = ("Pretrain the main job's model on a larger synthetic set in a shifted style (the stand-in for "
                     "COCO weights) and write trained_model/pretrained_<model>_<imgsz>.pt with its manifest. Run the "
                     "same command again after an interruption: it continues from the last finished epoch.")
    p.add_argument("--engine", choices=list(ENGINES), default=d.engine, help="detection engine (%(default)s)")
    p.add_argument("--model", default=None, help="architecture (default: the engine's own, yolov5n or yolo11n)")
    p.add_argument("--imgsz", "--img", dest="imgsz", type=int, default=d.imgsz, help="training size (%(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (%(default)s)")
    p.add_argument("--batch", "--batch-size", dest="batch", type=int, default=d.batch, help="batch size (%(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data, the split and the training "
                                                            "(%(default)s; the main job's data use 0)")
    p.add_argument("--frames", type=int, default=d.frames, help="synthetic frames, 90 %% train / 10 %% val "
                                                                "(%(default)s)")
    p.add_argument("--image-scale", type=float, default=None,
                   help="frame size factor of the generator (default: imgsz / 1280, frames at least imgsz wide)")
    p.add_argument("--style", choices=list(PRETRAIN_STYLES), default=d.style, help="generator style (%(default)s)")
    p.add_argument("--device", default=d.device, help="auto, cpu, 0, 0,1 (%(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loader workers (%(default)s)")
    p.add_argument("--data-dir", default=d.data_dir, help="where the set is rendered and prepared (%(default)s)")
    p.add_argument("--project", default=d.project, help="where the training run goes (%(default)s)")
    p.add_argument("--out", default=d.out, help="where the weights and manifest go (%(default)s)")


def cli_pretrain(args: argparse.Namespace) -> int:
    """``livestock pretrain``: make or finish the pretrained weights and print where they are."""
    settings = PretrainSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainSettings)})

    def say(line: str) -> None:
        print(f"[pretrain] {line}", flush=True)

    say(f"command: {settings.command()}")
    pretrain(settings, say=say)
    return 0
