"""Barn-pretrained weights: the generator's shifted style (the barn style is pinned by tests/test_synth_golden.py),
``livestock pretrain`` at toy scale with either engine (weights, manifest, resume after a kill), the manifest check,
and the main job's ``weights="auto"``."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from killed_training import kill_when, repo_env
from livestock.cli import main as cli_main
from livestock.data.synth import generate_synthetic_dataset, render_image
from livestock.data.synth.dataset import PREVIEW_FRAMES, style_preview
from livestock.data.synth.style import STYLES
from livestock.fileio import file_sha256
from livestock.model.pretrain import (MANIFEST_KIND, PretrainSettings, data_sha256, pretrain,
                                      pretrained_weights_path, resolve_start_weights, verify_pretrained)
from livestock import paths
from livestock.paths import TRAIN_ZIPS
from livestock.pipeline import PipelineConfig, start_weights

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = Path("runs/pretrain/yolov5n_64")
FRAMES = [(label, number, size) for number in range(1, 9)
          for label, size in (("cow", (1920, 1080)), ("pig", (1920, 1080)), ("pig", (1280, 960)))]
# The toy pretraining: a dozen frames at a quarter of the real size, YOLOv5n at 64 px, 2 epochs.
TOY = dict(frames=12, image_scale=0.25, imgsz=64, epochs=2, batch=8, device="cpu", workers=0)


def _render(style: str, seed: int = 0) -> list[tuple[np.ndarray, object]]:
    return [render_image(label, n, "train", seed, size, 0.0, 0.2, style=style) for label, n, size in FRAMES]


def _box_sizes(frames) -> np.ndarray:
    """Each box's sqrt(area) over its frame's."""
    return np.array([np.sqrt((x2 - x1) * (y2 - y1) / (r.width * r.height))
                     for _, r in frames for x1, y1, x2, y2 in r.boxes])


# ---------------------------------------------------------------- the shifted style


def test_barn_is_the_default_style():
    default = render_image("pig", 5, "train", 2, (1280, 960), image_scale=0.2)
    barn = render_image("pig", 5, "train", 2, (1280, 960), image_scale=0.2, style="barn")
    assert default[1].jpeg == barn[1].jpeg and default[1].boxes == barn[1].boxes


@pytest.mark.parametrize("seed", [0, 5])
def test_shifted_style_differs_measurably_for_the_same_seed_and_numbers(seed):
    barn, shifted = _render("barn", seed), _render("shifted", seed)
    # colours: per channel, the total-variation distance between the pixel histograms of the two sets
    hist = {name: np.mean([[np.histogram(img[..., c], bins=16, range=(0, 256))[0] / img[..., c].size
                            for c in range(3)] for img, _ in frames], axis=0)
            for name, frames in (("barn", barn), ("shifted", shifted))}
    distance = 0.5 * np.abs(hist["barn"] - hist["shifted"]).sum(axis=1)
    assert (distance > 0.2).all(), distance
    # lighting: frame brightness varies far more (exposure, contrast, colour casts, night frames)
    bright_barn, bright_shifted = (np.array([img.mean() for img, _ in f]) for f in (barn, shifted))
    assert bright_shifted.std() > 1.3 * bright_barn.std(), (bright_barn.std(), bright_shifted.std())
    # animal sizes: a wider view, smaller animals on the whole (over 10 % in the geometric mean), another
    # distribution (two-sample Kolmogorov-Smirnov statistic)
    size_barn, size_shifted = _box_sizes(barn), _box_sizes(shifted)
    assert np.log(size_shifted).mean() - np.log(size_barn).mean() < -0.1
    grid = np.sort(np.concatenate([size_barn, size_shifted]))
    cdf = [np.searchsorted(np.sort(s), grid, side="right") / len(s) for s in (size_barn, size_shifted)]
    assert np.abs(cdf[0] - cdf[1]).max() > 0.15


def test_no_shifted_frame_equals_a_barn_frame():
    barn = {hashlib.sha256(img.tobytes()).hexdigest() for img, _ in _render("barn") + _render("barn", 101)}
    shifted = {hashlib.sha256(img.tobytes()).hexdigest() for img, _ in _render("shifted") + _render("shifted", 101)}
    assert len(shifted) == 2 * len(FRAMES) and not barn & shifted


def test_shifted_labels_do_not_depend_on_rendering():
    for label, number, size in FRAMES[:6]:
        _, full = render_image(label, number, "train", 7, size, 0.0, 0.2, style="shifted")
        _, labels = render_image(label, number, "train", 7, size, 0.0, 0.2, labels_only=True, style="shifted")
        assert full.boxes == labels.boxes and full.behaviours == labels.behaviours


def test_unknown_style_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic style 'barnyard'"):
        render_image("cow", 1, style="barnyard")
    with pytest.raises(ValueError, match="unknown synthetic style"):
        generate_synthetic_dataset(tmp_path / "d", tmp_path / "t", n_train=2, n_test=0, style="barnyard")
    assert not (tmp_path / "d").exists()
    with pytest.raises(ValueError, match="barn is the main job's own distribution"):
        PretrainSettings(style="barn")


def test_each_engine_pretrains_its_own_default_model():
    assert PretrainSettings().model == "yolov5n"
    settings = PretrainSettings(engine="ultralytics")
    assert settings.model == "yolo11n" and settings.run_dir().name == "yolo11n_320"
    assert settings.command().startswith("livestock pretrain --engine ultralytics --model yolo11n --imgsz 320 ")
    assert PretrainSettings(engine="ultralytics", model="yolo26n").weights_path().name == "pretrained_yolo26n_320.pt"
    with pytest.raises(ValueError, match="unknown engine 'yolov9'"):
        PretrainSettings(engine="yolov9")


@pytest.mark.parametrize("setting, message", [
    (dict(model="yolo11n"), "--model 'yolo11n': not a yolov5 model"), (dict(device="bogus"), "bogus"),
    (dict(image_scale=5.0), "--image-scale 5.0: must be in (0, 1] and give frames of at least 16 px"),
])
def test_settings_that_cannot_work_are_refused_before_any_frame(setting, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PretrainSettings(**setting)


def test_every_bad_number_is_named_by_its_option_in_one_line(tmp_path, capsys):
    """The command says everything that is wrong at once, as the user typed it, and renders nothing."""
    args = ["pretrain", "--imgsz", "16", "--epochs", "0", "--batch", "0", "--seed", "-1", "--frames", "3",
            "--image-scale", "0.01", "--workers", "-1", "--data-dir", str(tmp_path / "data")]
    assert cli_main(args) == 1
    assert capsys.readouterr().err == (
        "livestock pretrain: error: --imgsz 16: must be 32 or more; --epochs 0: must be 1 or more; --batch 0: must "
        "be 1 or more; --seed -1: must be 0 or more; --frames 3: must be 10 or more (a 10-fold split); "
        "--image-scale 0.01: must be in (0, 1] and give frames of at least 16 px; --workers -1: must be 0 or more\n")
    assert not (tmp_path / "data").exists()


def test_the_loader_workers_are_part_of_the_weights():
    """Each loader worker draws its augmentations from its own seeded stream: another count is another training.
    The default (2) stays out of the key, so the records of weights made before it was counted still match."""
    default, one = PretrainSettings(), PretrainSettings(workers=1)
    assert "workers" not in default.result() and "--workers" not in default.command()
    assert one.result() == {**default.result(), "workers": 1}
    assert one.command() == default.command() + " --workers 1"


def test_preview_shows_six_frames_of_each_style(tmp_path):
    assert cli_main(["synth", "--preview", str(tmp_path / "styles.png")]) == 0
    img = cv2.imread(str(tmp_path / "styles.png"))
    tile_w = 240
    assert img.shape[1] == len(PREVIEW_FRAMES) * tile_w == 6 * tile_w
    assert img.shape[0] == len(STYLES) * (20 + tile_w * 9 // 16)
    assert style_preview(tmp_path / "again.png").read_bytes() == (tmp_path / "styles.png").read_bytes()


# ---------------------------------------------------------------- manifests and the main job's starting weights


def _fake_pretrained(folder: Path, model: str = "yolov5n", imgsz: int = 320) -> Path:
    """A weights file and a manifest that describes it (what `livestock pretrain` writes, in short)."""
    weights = pretrained_weights_path(model, imgsz, folder)
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(os.urandom(4096))
    manifest = {"kind": MANIFEST_KIND, "weights_sha256": file_sha256(weights), "command": "livestock pretrain",
                "epochs_run": 100, "data": {"frames": 2000, "style": "shifted"}, "val": {"mAP@0.75": 0.5}}
    weights.with_suffix(".json").write_text(json.dumps(manifest))
    return weights


def test_verify_pretrained_fails_on_a_modified_file(tmp_path):
    weights = _fake_pretrained(tmp_path)
    assert verify_pretrained(weights)["weights_sha256"] == file_sha256(weights)
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{weights.name}: its sha256 .* differs from the one in "
                                         rf"{weights.with_suffix('.json').name}"):
        verify_pretrained(weights)
    weights.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest"):
        verify_pretrained(weights)


def test_auto_weights_are_the_verified_pretrained_file_else_scratch(tmp_path):
    assert PipelineConfig().weights == "auto"
    weights, line = resolve_start_weights("auto", "yolov5n", 320, tmp_path)
    assert weights == "" and "from scratch" in line
    made = _fake_pretrained(tmp_path)
    weights, line = start_weights(PipelineConfig(), folder=tmp_path)
    assert weights == str(made.resolve()) and "manifest verified" in line and "val mAP@0.75 0.500" in line
    # another model or size has its own file: none here, so from scratch
    assert start_weights(PipelineConfig(imgsz=128), folder=tmp_path)[0] == ""
    assert start_weights(PipelineConfig(weights=""), folder=tmp_path)[0] == ""
    made.write_bytes(b"replaced")
    for cfg in (PipelineConfig(), PipelineConfig(weights=str(made))):
        with pytest.raises(ValueError, match=made.name):
            start_weights(cfg, folder=tmp_path)


def test_auto_looks_in_the_working_folder_then_in_the_repository(tmp_path, monkeypatch):
    # A job's own folder (livestock pipeline --workdir) has no trained_model/pretrained_*: the committed file is used,
    # by the pipeline and by `livestock compare` alike; weights pretrained in the working folder come first.
    repo, work = tmp_path / "repo", tmp_path / "work"
    committed = _fake_pretrained(repo / "trained_model")
    work.mkdir()
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    monkeypatch.chdir(work)
    assert resolve_start_weights("auto", "yolov5n", 320)[0] == str(committed.resolve())
    assert start_weights(PipelineConfig())[0] == str(committed.resolve())
    own = _fake_pretrained(work / "trained_model")
    assert resolve_start_weights("auto", "yolov5n", 320)[0] == str(own.resolve())
    weights, line = resolve_start_weights("auto", "yolov5n", 128)
    assert weights == "" and line.startswith("from scratch (auto: no pretrained weights trained_model/"
                                             "pretrained_yolov5n_128.pt or ") and str(repo) in line


def test_training_commands_take_auto_weights(tmp_path, monkeypatch, capsys):
    """`livestock train`, `evolve` and `search --weights auto` start from the pretrained file, as the pipeline does,
    and say so first; `--weights ''` stays from scratch."""
    from livestock.model import evolve, search
    from livestock.model.engine import get_engine

    repo = tmp_path / "repo"
    committed = _fake_pretrained(repo / "trained_model")
    monkeypatch.setattr(paths, "REPO_ROOT", repo)
    monkeypatch.chdir(tmp_path)
    seen = {}

    class Stop(Exception):
        pass

    def record(name):
        def stop(*args, **kwargs):
            seen[name] = kwargs["weights"]
            raise Stop
        return stop

    monkeypatch.setattr(get_engine("yolov5"), "train", record("train"))
    monkeypatch.setattr(evolve, "evolve", record("evolve"))
    monkeypatch.setattr(search, "training_objective", record("search"))
    for command in (["train", "--data", "d.yaml"], ["evolve", "--data", "d.yaml"],
                    ["search", "--data", "d.yaml", "--trials", "1"]):
        for weights in ("auto", ""):
            with pytest.raises(Stop):
                cli_main([*command, "--img", "320", "--weights", weights])
            expected = str(committed.resolve()) if weights else None
            assert seen[command[0]] == expected, (command, weights)
            printed = capsys.readouterr().out
            assert (f"start weights: {committed}" in printed) == bool(weights), printed


# ---------------------------------------------------------------- livestock pretrain at toy scale


@pytest.fixture(scope="module")
def toy_pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    settings = PretrainSettings(data_dir=str(root / "data"), project=str(root / "runs"), out=str(root / "out"), **TOY)
    lines: list[str] = []
    manifest = pretrain(settings, say=lines.append)
    return settings, manifest, lines


@pytest.mark.slow
def test_pretrain_writes_weights_and_a_manifest_that_matches_them(toy_pretrained):
    settings, manifest, _ = toy_pretrained
    weights = Path(settings.out) / "pretrained_yolov5n_64.pt"
    assert settings.weights_path() == weights and weights.is_file()
    assert verify_pretrained(weights) == manifest
    assert manifest["weights_sha256"] == file_sha256(weights) and manifest["weights_bytes"] < 100e6
    assert manifest["command"] == ("livestock pretrain --engine yolov5 --model yolov5n --imgsz 64 --epochs 2 --batch 8 "
                                   f"--seed 101 --frames 12 --image-scale 0.25 --style shifted --workers 0 --data-dir "
                                   f"{settings.data_dir} --project {settings.project} --out {settings.out}")
    assert manifest["epochs"] == manifest["epochs_run"] == 2 and manifest["seed"] == 101
    data = manifest["data"]
    assert data["frames"] == sum(data["images"].values()) == 12
    assert data["train_images"] + data["val_images"] == 12 and data["val_images"] >= 1
    assert data["generator"] == {"style": "shifted", "seed": 101, "n_train": 12, "n_test": 0,
                                 "missing_cow_rate": 0.0, "image_scale": 0.25}
    assert data["style_settings"]["name"] == "shifted"
    zips = settings.data_root() / "zips"
    hashes = {name: file_sha256(zips / name) for name in TRAIN_ZIPS.values()}
    assert data["zips_sha256"] == hashes and data["data_sha256"] == data_sha256(hashes)
    # every animal is labelled: no left-out boxes in the pretraining set
    truth = pd.read_csv(zips / "synth_truth.csv")
    assert len(truth) == sum(data["boxes"].values()) and truth["labelled"].all()
    assert set(manifest["val"]) == {"images", "instances", "mAP@0.5", "mAP@0.5:0.95", "mAP@0.75"}
    assert all(0.0 <= manifest["val"][k] <= 1.0 for k in ("mAP@0.5", "mAP@0.5:0.95", "mAP@0.75"))
    assert manifest["wall_time_s"]["total"] > 0 and manifest["sessions"] == 1
    assert manifest["machine"]["cpu_count"] == os.cpu_count() and manifest["machine"]["device"] == "cpu"
    assert manifest["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # e.g. "AVX2"


@pytest.mark.slow
def test_pretrain_again_is_up_to_date_and_other_settings_are_refused(toy_pretrained):
    settings, manifest, _ = toy_pretrained
    lines: list[str] = []
    assert pretrain(settings, say=lines.append) == manifest
    assert len(lines) == 1 and "is up to date" in lines[0]
    other = PretrainSettings(**{**TOY, "epochs": 3}, data_dir=settings.data_dir, project=settings.project,
                             out=settings.out)
    with pytest.raises(ValueError, match=r"holds a pretraining with other settings .*'epochs': \(2, 3\)"):
        pretrain(other, say=lines.append)


def _complete(checkpoint: Path) -> bool:
    """A PyTorch checkpoint is a zip archive: readable once its central directory, written last, is there."""
    try:
        with zipfile.ZipFile(checkpoint) as z:
            return z.testzip() is None
    except (OSError, EOFError, zipfile.BadZipFile):  # still being written
        return False


def _pretrain_command(epochs: int) -> list[str]:
    return [sys.executable, "-m", "livestock.cli", "pretrain", "--frames", "12", "--image-scale", "0.25", "--imgsz",
            "64", "--epochs", str(epochs), "--batch", "8", "--device", "cpu", "--workers", "0"]


def _finish(command: list[str], cwd: Path, epochs: int) -> tuple[str, dict]:
    """Run ``command`` again to its end: (its output, the manifest); every epoch is in results.csv once."""
    done = subprocess.run(command, cwd=cwd, env=repo_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = pd.read_csv(cwd / RUN_DIR / "results.csv", skipinitialspace=True)
    results.columns = results.columns.str.strip()
    assert results["epoch"].tolist() == list(range(epochs))
    manifest = verify_pretrained(cwd / "trained_model/pretrained_yolov5n_64.pt")
    assert manifest["epochs_run"] == epochs and manifest["sessions"] == 2
    return done.stdout, manifest


@pytest.mark.slow
def test_interrupted_pretraining_resumes_and_runs_every_epoch_once(tmp_path):
    command = _pretrain_command(epochs=3)
    last = tmp_path / RUN_DIR / "weights/last.pt"
    # killed once the first epoch's checkpoint is wholly written
    kill_when(command, lambda: _complete(last), cwd=tmp_path)
    assert not (tmp_path / "trained_model/pretrained_yolov5n_64.pt").exists()
    out, _ = _finish(command, tmp_path, epochs=3)
    assert "holds the 12 shifted frames already" in out and "is prepared and split already" in out
    assert "[pretrain] train: resuming" in out, out
    state = json.loads((tmp_path / RUN_DIR / "pretrain_state.json").read_text())
    assert state["sessions"][0]["seconds"]["train"] > 0  # the killed session's finished epoch is counted


@pytest.mark.slow
def test_a_damaged_checkpoint_stops_the_pretraining_with_its_name_and_keeps_it(tmp_path):
    """The engine writes last.pt atomically, so a kill leaves a whole one; a last.pt damaged otherwise is named in
    one line, the command exits non-zero and the file stays for the user to look at."""
    command = _pretrain_command(epochs=3)
    last = tmp_path / RUN_DIR / "weights/last.pt"
    kill_when(command, lambda: _complete(last), cwd=tmp_path)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    done = subprocess.run(command, cwd=tmp_path, env=repo_env(), capture_output=True, text=True)
    assert done.returncode != 0
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"livestock pretrain: error: {RUN_DIR}/weights/last.pt: not a readable PyTorch checkpoint")
    assert error.endswith(f"the pretraining cannot continue from it: delete {RUN_DIR} to start again"), error
    assert last.read_bytes() == data[: len(data) // 2]




@pytest.mark.slow
def test_ultralytics_pretraining_resumes_after_a_kill(tmp_path):
    """The same command with the Ultralytics engine: killed once its first last.pt is written, run again, it resumes
    (every epoch once in results.csv) and writes weights that are Ultralytics' with a manifest that names them."""
    from livestock.model.engine import engine_of_weights

    command = [*_pretrain_command(epochs=3), "--engine", "ultralytics"]
    run_dir = Path("runs/pretrain/yolo11n_64")
    last = tmp_path / run_dir / "weights/last.pt"
    kill_when(command, lambda: _complete(last), cwd=tmp_path)
    assert not (tmp_path / "trained_model/pretrained_yolo11n_64.pt").exists()
    done = subprocess.run(command, cwd=tmp_path, env=repo_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "[pretrain] train: resuming" in done.stdout, done.stdout
    results = pd.read_csv(tmp_path / run_dir / "results.csv")
    assert results["epoch"].tolist() == [1, 2, 3]  # Ultralytics counts epochs from 1
    weights = tmp_path / "trained_model/pretrained_yolo11n_64.pt"
    manifest = verify_pretrained(weights)
    assert manifest["engine"] == "ultralytics" and manifest["model"] == "yolo11n"
    assert manifest["epochs_run"] == 3 and manifest["sessions"] == 2
    assert manifest["hyp"] == "ultralytics_scratch_cpu" and manifest["machine"]["ultralytics"]
    assert manifest["command"].startswith("livestock pretrain --engine ultralytics --model yolo11n --imgsz 64 ")
    assert engine_of_weights(weights) == "ultralytics"


# ---------------------------------------------------------------- the committed weights

COMMITTED = REPO / "trained_model" / "pretrained_yolov5n_320.pt"


# One file per engine, each made by the command docs/pretrained_weights.md gives, on the same frames: a YOLO11n epoch
# takes three times a YOLOv5n one on this CPU, so it had 30 (docs/pretrained_weights.md).
@pytest.mark.parametrize("engine, model, epochs", [("yolov5", "yolov5n", 60), ("ultralytics", "yolo11n", 30)])
def test_the_committed_pretrained_weights_match_their_manifest(engine, model, epochs):
    from livestock.model.engine import engine_of_weights

    committed = REPO / "trained_model" / f"pretrained_{model}_320.pt"
    manifest = verify_pretrained(committed)  # the sha256 of the file against the manifest beside it
    assert manifest["weights_sha256"] == file_sha256(committed)
    assert manifest["command"] == (f"livestock pretrain --engine {engine} --model {model} --imgsz 320 "
                                   f"--epochs {epochs} --batch 16 --seed 101 --frames 2000 --image-scale 0.25 "
                                   "--style shifted")
    assert manifest["epochs_run"] == manifest["epochs"] == epochs
    data = manifest["data"]
    assert data["frames"] == 2000 and data["generator"]["style"] == "shifted" and data["generator"]["seed"] == 101
    assert data["data_sha256"] == data_sha256(data["zips_sha256"])
    assert data["data_sha256"] == verify_pretrained(COMMITTED)["data"]["data_sha256"]  # both files: the same frames
    assert committed.stat().st_size == manifest["weights_bytes"] < 10e6
    assert engine_of_weights(committed) == engine
    # a main job with this engine starts from exactly this file by default
    assert start_weights(PipelineConfig(engine=engine))[0] == str(committed.resolve())


# Two epochs on the 40 shared synthetic frames at the committed weights' size, scored on the 12 test frames with
# the contest metric: the same budget, once from the committed weights and once from scratch.
FINE_TUNE = dict(model="yolov5n", hyp="hyp_scratch_cpu", imgsz=320, epochs=2, batch_size=16, device="cpu", workers=0,
                 seed=0, plots=False, exist_ok=True)


@pytest.mark.slow
def test_fine_tuning_from_the_committed_weights_beats_scratch_on_the_same_budget(synth_data, tmp_path):
    from livestock.data.yolo_format import prepare_dataset
    from livestock.evaluation.inference import score_answer, write_answer
    from livestock.model.yolov5.training import train

    train_set = prepare_dataset(synth_data.train_dir, tmp_path / "prepared", progress=False)
    test_set = prepare_dataset(synth_data.test_dir, tmp_path / "prepared_test", images_only=True, progress=False)
    scores = {}
    for start, weights in (("pretrained", str(COMMITTED)), ("scratch", "")):
        result = train(train_set.data_yaml, weights=weights, project=tmp_path / "runs", name=start, **FINE_TUNE)
        answer = write_answer(result.best, test_set.records, tmp_path / f"{start}.csv", imgsz=320, conf=0.001,
                              iou=0.6, device="cpu")
        assert len(answer) > 0
        scores[start] = score_answer(synth_data.answer_csv, tmp_path / f"{start}.csv")["map_75"]
    # Two CPU epochs from scratch learn next to nothing; the pretrained start already finds the barn animals.
    # Measured (2026-11-30, this 2-core CPU): 0.947 fine-tuned, 0.00000 from scratch.
    assert scores["scratch"] < 0.01 and scores["pretrained"] > 0.8, scores
