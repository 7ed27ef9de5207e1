"""The Ultralytics engine: the offline layer, hyp / model / weights resolution, training and validation (a short run
must clearly learn; the table has YOLOv5's format), resume after a kill (the same LR schedule and one results row
per epoch as a run without interruption), and raw candidates whose replay equals Ultralytics' own predictions at
every setting of a grid (YOLO11; YOLO26 with its NMS-free and its NMS head; ONNX)."""
from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from livestock.model.ultralytics import compat as C
from livestock.model.engine import parse_device
from livestock.model.ultralytics import adapter as U
from livestock.model.ultralytics import training as UT
from thread_probe import assert_threads_kept
from ultralytics_runs import TINY_HYP, network_blocked

# Ultralytics reads its config folder when first imported, and the yolov5 package imports it: point it at ours
# before any test of this session imports either, so no test writes the user's own settings file.
C.set_ultralytics_environment()

REPO = Path(__file__).resolve().parents[1]
CPU = parse_device("cpu").torch()
DETECT_IMGSZ = 256  # detection runs at 4x the training size: many more anchors, many more candidates to replay


# ---------------------------------------------------------------- shared tiny runs (tests/ultralytics_runs.py)


@pytest.fixture(autouse=True)
def ultralytics_threads_as_ours(monkeypatch):
    """The references here call Ultralytics directly, outside the engine, where its predict sets torch's thread count
    to its own (cpu_count - 1); a convolution's float rounding depends on the count, so they run with the count the
    engine keeps for its calls: this process's."""
    import torch

    monkeypatch.setattr("ultralytics.utils.torch_utils.NUM_THREADS", torch.get_num_threads())


@pytest.fixture(scope="module")
def toy(ultralytics_toy) -> Path:
    return ultralytics_toy


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[Path]:
    from candidate_helpers import write_frames

    return [Path(r.image_path) for r in write_frames(tmp_path_factory.mktemp("ultra_frames") / "frames", n=4)]


@pytest.fixture(scope="module")
def yolo11_run(tiny_yolo11_run):
    return tiny_yolo11_run


@pytest.fixture(scope="module")
def yolo26_run(tiny_yolo26_run):
    return tiny_yolo26_run


# ---------------------------------------------------------------- the offline layer


def test_offline_layer_fonts_settings_and_flags():
    C.ensure_ultralytics()
    import ultralytics.engine.trainer
    import ultralytics.utils as uu
    from ultralytics.utils import callbacks, checks, events

    config = Path(uu.USER_CONFIG_DIR)
    assert config.resolve().is_relative_to(C.ultralytics_config_dir().resolve())
    for name in C.FONT_NAMES:
        assert (config / name).is_file()
    with network_blocked() as attempts:
        assert Path(checks.check_font("Arial.ttf")) == config / "Arial.ttf"
        assert Path(checks.check_font("Arial.Unicode.ttf")) == config / "Arial.Unicode.ttf"
    assert attempts == []
    assert all(uu.SETTINGS[k] is False for k in C.OFFLINE_SETTINGS)
    assert json.loads(Path(uu.SETTINGS.file).read_text())["sync"] is False  # our own file, saved
    assert not uu.ONLINE and not checks.ONLINE and not checks.AUTOINSTALL and not events.events.enabled
    assert callbacks.platform.callbacks == {}
    assert ultralytics.engine.trainer.check_amp is C._check_amp_offline


def test_amp_check_stays_offline_and_logs_its_decision():
    import logging
    import types

    import torch
    from ultralytics.utils import LOGGER

    def on(device):  # just enough of a model: a torch.device of type cuda exists without a GPU
        return types.SimpleNamespace(parameters=lambda: iter([types.SimpleNamespace(device=torch.device(device))]))

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        with network_blocked() as attempts:
            assert C._check_amp_offline(torch.nn.Conv2d(3, 3, 1)) is False
            assert C._check_amp_offline(on("cuda:0")) is True  # AMP stays on for GPU training
            assert C._check_amp_offline(on("mps")) is False
    finally:
        LOGGER.removeHandler(handler)
    assert attempts == []
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", r) for r in records]  # colorstr's colours
    assert [r.split("AMP: ")[1].split(" (")[0] for r in plain] == ["off on cpu", "on for cuda:0", "off on mps"]


_PROBE = textwrap.dedent("""
    import json, os, sys
    if sys.argv[1] == "imported-first":
        import ultralytics.utils  # as the yolov5 package does, before our layer runs
    from livestock.model.ultralytics.compat import ensure_ultralytics
    ensure_ultralytics()
    import ultralytics.utils as uu
    print(json.dumps({"config": str(uu.USER_CONFIG_DIR), "sync": uu.SETTINGS["sync"],
                      "env": os.environ.get("YOLO_CONFIG_DIR")}))
""")


def _probe(tmp_path: Path, order: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
               PYTHONPATH=str(REPO), YOLO_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", _PROBE, order], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("user_threads", [None, "1"])
def test_threads_are_the_users_in_this_process_and_in_later_ones(user_threads):
    """Importing ultralytics sets OMP_NUM_THREADS=1 where it is unset. Through the offline layer, before torch is
    loaded, this process and a child started afterwards compute with the torch threads they would have had without
    it (the user's value, or torch's default), and the variable is left as the user had it."""
    fix = ("from livestock.model.ultralytics.compat import ensure_ultralytics\n"
           "assert 'torch' not in sys.modules and 'ultralytics' not in sys.modules\n"
           "ensure_ultralytics()")
    assert_threads_kept(fix, user_threads)


def test_settings_never_rewrite_the_users_file(tmp_path):
    """Fresh interpreters with their own home: ours first, Ultralytics' config folder is our cache folder and the
    user's is never created; Ultralytics imported first (with the user's folder), its file keeps its bytes."""
    ours = _probe(tmp_path, "ours-first")
    assert ours["sync"] is False
    assert Path(ours["config"]).is_relative_to(tmp_path / "home" / ".cache" / "livestock" / "ultralytics")
    assert not (tmp_path / "home" / ".config" / "Ultralytics").exists()

    user_file = tmp_path / "home" / ".config" / "Ultralytics" / "settings.json"
    user_file.parent.mkdir(parents=True)
    probe = _probe(tmp_path / "probe", "imported-first")  # writes its own settings file in its own home
    user_settings = json.loads(Path(probe["config"], "settings.json").read_text()) | {"sync": True}
    user_file.write_text(json.dumps(user_settings))
    before = user_file.read_bytes()
    first = _probe(tmp_path, "imported-first")
    assert Path(first["config"]) == user_file.parent
    assert first["sync"] is False and user_file.read_bytes() == before  # off in memory only
    assert (Path(first["config"]) / "Arial.ttf").is_file()  # fonts where Ultralytics looks, all the same


# ---------------------------------------------------------------- interface, hyp, models, weights


def test_engine_is_registered_with_yolov5s_interface():
    from livestock.model.engine import ENGINES, get_engine

    Y, E = get_engine("yolov5"), get_engine("ultralytics")
    assert ENGINES["ultralytics"] == "livestock.model.ultralytics"
    for engine in (Y, E):  # the interface every stage relies on
        for name in ("NAME", "MODEL_NAMES", "DEFAULT_MODEL", "DEFAULT_HYP", "HYP_KEYS", "load_hyp", "train",
                     "can_resume", "validate", "load_detector", "export_onnx", "load_checkpoint"):
            assert hasattr(engine, name), (engine.__name__, name)
    assert E.NAME == "ultralytics" and E.DEFAULT_MODEL in E.MODEL_NAMES and E.train is UT.train
    for fn in ("train", "can_resume", "validate", "load_detector", "load_hyp"):
        ours, theirs = inspect.signature(getattr(E, fn)).parameters, inspect.signature(getattr(Y, fn)).parameters
        for name, p in theirs.items():  # every YOLOv5 argument is accepted, with the same default
            assert name in ours, (fn, name)
            assert ours[name].default == p.default, (fn, name)
    # training and validation settings are one shared object each, not two parameter lists kept alike by hand
    for fn, kind in (("train", "TrainSettings"), ("validate", "ValSettings")):
        for engine in (Y, E):
            assert kind in str(inspect.signature(getattr(engine, fn)).parameters["settings"].annotation), (engine, fn)


def test_hyp_file_is_ultralytics_defaults():
    C.ensure_ultralytics()
    from ultralytics.cfg import DEFAULT_CFG_DICT

    hyp = U.load_hyp(U.DEFAULT_HYP)
    assert list(hyp) == list(U.HYP_KEYS)
    assert hyp == {k: pytest.approx(float(DEFAULT_CFG_DICT[k])) for k in U.HYP_KEYS}
    assert U.load_hyp(U.PACKAGE_HYP_DIR / "ultralytics_scratch_cpu.yaml") == hyp


def test_hyp_errors_name_the_file_and_key(tmp_path):
    base = U.load_hyp(U.DEFAULT_HYP)
    cases = {
        "missing": ({k: v for k, v in base.items() if k != "dfl"}, "missing keys \\['dfl'\\]"),
        "unknown": (base | {"obj": 1.0}, "unknown keys \\['obj'\\]"),  # a YOLOv5 key: not this engine's
        "text": (base | {"box": "high"}, "non-numeric values for \\['box'\\]"),
        "flag": (base | {"mosaic": True}, "non-numeric values for \\['mosaic'\\]"),
    }
    for name, (values, message) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        with pytest.raises(ValueError, match=f"{name}.yaml: {message}"):
            U.load_hyp(path)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping"):
        U.load_hyp(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("lr0: [1,\n")
    with pytest.raises(ValueError, match="broken.yaml: not valid YAML"):
        U.load_hyp(tmp_path / "broken.yaml")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        U.load_hyp("nowhere")
    with pytest.raises(ValueError, match="^hyp: missing keys"):
        U.load_hyp({"lr0": 0.01})


def test_model_names_are_the_shipped_detection_yamls():
    C.ensure_ultralytics()
    from ultralytics.nn.tasks import guess_model_scale, yaml_model_load

    for name in U.MODEL_NAMES:
        cfg = yaml_model_load(U.model_cfg(name))
        assert cfg["scale"] == guess_model_scale(name) and cfg["scale"] in cfg["scales"], name
        assert cfg["head"][-1][2] == "Detect", name
        assert bool(cfg.get("end2end")) == name.startswith("yolo26"), name  # only YOLO26 has an NMS-free head
    assert U.model_cfg("yolo26s-p6.yaml") == "yolo26s-p6.yaml"
    with pytest.raises(ValueError, match="unknown model 'yolo11n6'"):
        U.model_cfg("yolo11n6")  # no P6 YOLO11 is shipped


def test_pretrained_by_name_is_looked_up_locally_never_downloaded(tmp_path, monkeypatch):
    from livestock.model.engine import PretrainedWeightsError

    monkeypatch.chdir(tmp_path)
    assert U.resolve_weights(None) == "" and U.resolve_weights("") == ""
    with network_blocked() as attempts, pytest.raises(PretrainedWeightsError, match="does not download"):
        U.resolve_weights("yolo26s.pt")
    assert attempts == []
    (tmp_path / "trained_model").mkdir()
    (tmp_path / "trained_model" / "yolo26s.pt").write_bytes(b"x")
    assert U.resolve_weights("yolo26s") == str((tmp_path / "trained_model" / "yolo26s.pt").resolve())
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        U.resolve_weights(tmp_path / "missing.pt")


def test_table_format_is_yolov5s():
    """The per-class table is built as YOLOv5's: same index, columns and dtypes (here: nothing validated yet)."""
    from types import SimpleNamespace

    from livestock.model.yolov5.training import _ValCapture

    names = {0: "pig", 1: "cow"}
    theirs = _ValCapture(names).table()
    metrics = SimpleNamespace(nt_per_class=None, nt_per_image=None, ap_class_index=[])
    ours = UT._metrics_table(SimpleNamespace(metrics=metrics, seen=0), names)
    assert list(ours.index) == list(theirs.index) and ours.index.name == theirs.index.name
    assert list(ours.columns) == list(theirs.columns)
    assert (ours.dtypes == theirs.dtypes).all()
    assert ours.isna().equals(theirs.isna())


# ---------------------------------------------------------------- replay rules on built head outputs


def _built_prediction(n: int, seed: int, levels: int | None = None):
    """A dense head output ``(1, 4 + 2, n)`` on a 640x640 input: boxes in 40 clusters, class scores log-uniform
    over 1e-5..1; ``levels`` quantises them so that confidences tie exactly."""
    import torch

    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 600, (40, 2))
    k = rng.integers(0, 40, n)
    xy = centres[k] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(20, 90, (40, 2))[k] * rng.uniform(0.8, 1.25, (n, 2))
    cls = 10 ** rng.uniform(-5, 0, (n, 2))
    if levels:
        cls = np.ceil(cls * levels) / levels
    return torch.from_numpy(np.concatenate([xy, wh, cls], 1).astype(np.float32).T.copy())[None]


def _ultralytics_nms(pred, conf, iou, image_hw=(720, 1280), **kw):
    # Imported, torchvision runs Ultralytics' NMS, as in its predictor and validator (their AutoBackend.warmup
    # imports it); without it Ultralytics falls back to its own NMS, which can decide IoU ties differently.
    import torchvision  # noqa: F401
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    det = non_max_suppression(pred.clone(), conf, iou, **kw)[0]
    det[:, :4] = scale_boxes((640, 640), det[:, :4], image_hw)
    return det


def _assert_same(reference, dets) -> None:
    """Bit-for-bit equality of Ultralytics' rows (n, 6) and our Detections: order, boxes, confidences, classes;
    Ultralytics' inverted boxes (x2 < x1 or y2 < y1, which YOLO26 can predict) are the rows the replay drops."""
    reference = reference[(reference[:, 2] >= reference[:, 0]) & (reference[:, 3] >= reference[:, 1])]
    assert len(reference) == len(dets), f"{dets.image_id}: {len(reference)} from Ultralytics, {len(dets)} replayed"
    np.testing.assert_array_equal(reference[:, :4].double().numpy(), dets.boxes, err_msg=dets.image_id)
    np.testing.assert_array_equal(reference[:, 4].double().numpy(), dets.scores, err_msg=dets.image_id)
    np.testing.assert_array_equal(reference[:, 5].long().numpy(), dets.class_ids, err_msg=dets.image_id)


@pytest.mark.parametrize("case", ["max_nms_binds", "ties", "ties_multi_label", "ties_agnostic"])
def test_replay_equals_ultralytics_nms_with_caps_and_ties(case):
    from livestock.evaluation.detect import Candidates
    from livestock.evaluation.nms_replay import GridStats, grid_detections, nms_from_candidates

    C.ensure_ultralytics()
    pred = _built_prediction(40000 if case == "max_nms_binds" else 6000, seed=1,
                             levels=None if case == "max_nms_binds" else 40)
    cands = Candidates("built.jpg", 1280, 720, (640, 640), *U.head_rows_to_candidates(pred[0], 1e-4), 1e-4,
                       postprocess="ultralytics")
    kw = dict(multi_label=case == "ties_multi_label", agnostic=case == "ties_agnostic")
    if case == "max_nms_binds":
        assert (cands.confidences() > 1e-4).sum() > 30000
        settings = [(0.0001, 0.45), (0.001, 0.7), (0.3, 0.7)]
    else:
        assert len(np.unique(cands.confidences())) < len(cands) / 10  # many exact ties
        settings = [(c, t) for t in (0.45, 0.7) for c in (0.0001, 0.001, 0.02, 0.3)]
    for max_det in (300, 5000):
        stats = GridStats()
        for conf, iou, (dets,) in grid_detections([cands], settings, max_det=max_det, progress=False, stats=stats,
                                                  **kw):
            reference = _ultralytics_nms(pred, conf, iou, max_det=max_det, **kw)
            _assert_same(reference, dets)
            _assert_same(reference, nms_from_candidates(cands, conf, iou, max_det=max_det, **kw))
        if case != "max_nms_binds":  # ties keep their row order below max_nms: one shared NMS per IoU
            assert stats.own_order_settings == 0
        if case == "max_nms_binds":
            break


# ---------------------------------------------------------------- training and validation


@pytest.mark.slow
def test_training_learns_offline_and_reports_every_epoch(yolo11_run):
    result, epochs, events, attempts = yolo11_run
    assert attempts == []
    assert [e for e, _, _ in epochs] == list(range(1, 21)) and {n for _, n, _ in epochs} == {20}
    assert set(epochs[0][2]) == {"loss", "P", "R", "mAP@0.5", "mAP@0.5:0.95"}
    assert [(e["epoch"], e["epochs"]) for e in events if e["kind"] == "epoch"] == [(e, 20) for e in range(1, 21)]
    print("mAP@0.5 by epoch:", [round(m["mAP@0.5"], 3) for _, _, m in epochs])
    assert epochs[0][2]["mAP@0.5"] < 0.2 and result.map50 > 0.5  # it learned, from nothing
    assert result.epochs_run == 20 and result.best.name == "best.pt" and result.best.is_file()
    assert result.size_report["is_stripped_fp16"] and result.size_report["within_limit"]
    assert result.hyp == U.load_hyp(U.DEFAULT_HYP) | TINY_HYP
    assert yaml.safe_load((result.save_dir / "hyp.yaml").read_text()) == result.hyp
    from livestock.model.engine import engine_of_weights

    assert engine_of_weights(result.best) == "ultralytics"


@pytest.mark.slow
def test_trained_model_beats_untrained_and_validate_reproduces_the_table(yolo11_run, toy, tmp_path):
    import torch
    from ultralytics.nn.tasks import DetectionModel

    result = yolo11_run[0]
    torch.manual_seed(0)
    untrained = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    untrained.names = {0: "pig", 1: "cow"}
    torch.save({"model": untrained.half(), "epoch": -1}, tmp_path / "untrained.pt")
    kw = dict(imgsz=64, device="cpu", workers=0, project=tmp_path, plots=False)
    with network_blocked() as attempts:
        before = UT.validate(tmp_path / "untrained.pt", toy, name="untrained", **kw)
        after = UT.validate(result.best, toy, name="trained", **kw)
    assert attempts == []
    m0, m1 = before.loc["all", "mAP@0.5"], after.loc["all", "mAP@0.5"]
    print(f"mAP@0.5 untrained {m0:.4f} -> trained {m1:.4f}")
    assert m1 > m0 + 0.4
    print(after.round(4).to_string())
    assert after.loc["all", "images"] == 16 and after.loc["all", "instances"] == after.loc[["pig", "cow"],
                                                                                           "instances"].sum()
    cols = ["P", "R", "mAP@0.5", "mAP@0.5:0.95"]
    assert (after[["images", "instances"]] == result.metrics[["images", "instances"]]).all().all()
    assert np.allclose(after[cols], result.metrics[cols], atol=1e-6)  # the same validation as training's final one
    assert (tmp_path / "trained" / "per_class.csv").is_file()
    assert after.attrs["save_dir"] == str((tmp_path / "trained").resolve())


@pytest.mark.slow
def test_yolo26_trains_with_its_nms_free_head(yolo26_run, toy, tmp_path):
    result, epochs, _events, attempts = yolo26_run
    assert attempts == []
    print("mAP@0.5 by epoch:", [round(m["mAP@0.5"], 3) for _, _, m in epochs])
    assert result.map50 > 0.5
    ckpt = U.load_checkpoint(result.best)
    assert U._has_one2one(ckpt["model"])
    # training validated the one-to-one head (nms=False); the one-to-many head is there to validate as well
    dense = UT.validate(result.best, toy, imgsz=64, device="cpu", workers=0, project=tmp_path, plots=False,
                       variant="one2many")
    assert dense.loc["all", "mAP@0.5"] > 0.3
    assert UT.validate(result.best, toy, imgsz=64, device="cpu", workers=0, project=tmp_path, plots=False,
                      exist_ok=True).equals(result.metrics)


# ---------------------------------------------------------------- resume after a kill


def _results(run_dir: Path):
    import pandas as pd

    table = pd.read_csv(run_dir / "results.csv", skipinitialspace=True)
    table.columns = table.columns.str.strip()
    return table


@pytest.mark.slow
def test_resume_after_kill_keeps_the_lr_schedule_and_one_row_per_epoch(tmp_path):
    """A training killed mid-run (SIGKILL, no clean-up) resumes from last.pt with its optimiser and LR schedule:
    the resumed run's epochs and per-epoch learning rates equal those of the same run without interruption.
    Once finished, it has nothing left to resume: one line naming last.pt, exit 1."""
    from killed_training import kill_after_epochs, repo_env
    from toy_yolo import make_toy_yolo_dataset

    data = make_toy_yolo_dataset(tmp_path / "toy", n_train=32, n_val=8)
    base = [sys.executable, "-m", "livestock.cli", "train", "--engine", "ultralytics", "--data", str(data),
            "--model", "yolo11n", "--img", "64", "--epochs", "5", "--batch", "8", "--device", "cpu", "--workers", "0",
            "--project", str(tmp_path)]
    straight_run = subprocess.run(base + ["--name", "straight"], capture_output=True, text=True, env=repo_env())
    assert straight_run.returncode == 0, straight_run.stderr[-3000:]
    results = tmp_path / "killed" / "results.csv"
    assert kill_after_epochs(base + ["--name", "killed"], results, epochs=2, timeout_s=600) < 5
    assert UT.can_resume(tmp_path / "killed") and not UT.can_resume(tmp_path / "straight")
    assert not UT.can_resume(tmp_path / "nothing_here")
    resumed_run = subprocess.run(base + ["--name", "killed", "--resume"], capture_output=True, text=True,
                                 env=repo_env())
    assert resumed_run.returncode == 0, resumed_run.stderr[-3000:]
    assert "epochs run: 5" in resumed_run.stdout
    straight, resumed = _results(tmp_path / "straight"), _results(tmp_path / "killed")
    assert straight["epoch"].tolist() == resumed["epoch"].tolist() == [1, 2, 3, 4, 5]
    lr = [c for c in straight.columns if c.startswith("lr/")]
    assert len(lr) == 3  # Ultralytics' three parameter groups
    np.testing.assert_allclose(resumed[lr].to_numpy(), straight[lr].to_numpy(), rtol=0, atol=1e-12)
    assert len(set(straight["lr/pg0"])) == 5  # a schedule that changes every epoch: the comparison can fail
    assert not UT.can_resume(tmp_path / "killed")
    last = tmp_path / "killed" / "weights" / "last.pt"
    again = subprocess.run(base + ["--name", "killed", "--resume"], capture_output=True, text=True, env=repo_env())
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        f"livestock train: error: {last}: this training finished (its optimiser state was stripped); "
        "nothing to resume")


def test_resume_without_a_run_names_the_missing_checkpoint(tmp_path, toy):
    last = tmp_path / "never" / "weights" / "last.pt"
    with pytest.raises(FileNotFoundError, match=f"{last}: no interrupted training to resume"):
        UT.train(toy, project=tmp_path, name="never", device="cpu", resume=True)


def test_a_damaged_last_checkpoint_is_named(tmp_path):
    last = tmp_path / "run" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with pytest.raises(ValueError, match=f"{last}: not a readable PyTorch checkpoint"):
        UT.can_resume(tmp_path / "run")


# ---------------------------------------------------------------- raw candidates = Ultralytics' own predictions


CONFS = (0.0001, 0.001, 0.01, 0.1, 0.3)
IOUS = (0.3, 0.5, 0.7, 0.9)


def _predict(yolo, frames, conf, iou, **kw):
    """Ultralytics' own ``predict``, one image at a time (as collect_candidates runs here; a Python list would be
    one batch, letterboxed to the full square when shapes differ): ``[(image id, rows (n, 6))]``."""
    out = []
    for f in frames:
        (r,) = yolo.predict(str(f), imgsz=DETECT_IMGSZ, conf=conf, iou=iou, device="cpu", verbose=False, **kw)
        out.append((Path(r.path).name, r.boxes.data))
    return out


def _predict_multi_label(yolo, frames, conf, iou, max_det):
    """The predictor's own preprocessing and network, then NMS with ``multi_label`` (as Ultralytics' validator
    runs it) and its ``scale_boxes``: the predictor offers no multi-label switch."""
    import cv2
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    yolo.predict(str(frames[0]), imgsz=DETECT_IMGSZ, device="cpu", verbose=False)  # sets its predictor up
    p, out = yolo.predictor, []
    for f in frames:
        im0 = cv2.imread(str(f))
        im = p.preprocess([im0])
        det = non_max_suppression(p.inference(im), conf, iou, multi_label=True, max_det=max_det)[0]
        det[:, :4] = scale_boxes(im.shape[2:], det[:, :4], im0.shape)
        out.append((f.name, det))
    return out


def _check_grid(cache, reference_at, settings, **kw):
    from livestock.evaluation.nms_replay import detections_for_setting, grid_detections

    for conf, iou, dets in grid_detections(cache, settings, progress=False, **kw):
        reference = reference_at(conf, iou)
        assert [i for i, _ in reference] == [d.image_id for d in dets]
        for (_i, rows), d in zip(reference, dets):
            _assert_same(rows, d)
        for (_i, rows), d in zip(reference, detections_for_setting(cache, conf, iou, **kw)):
            _assert_same(rows, d)


def _shaped(best: Path, folder: Path, shift: float = 4.0) -> Path:
    """A copy of a trained checkpoint whose class logits are raised by ``shift``: confidences then spread from
    1e-4 to about 1 over most anchors, so NMS, its caps and the confidence filter all have work to do (a model
    trained at 64 px and run at 256 px is otherwise sure of a few rows and far below the floor elsewhere)."""
    import torch

    ckpt = U.load_checkpoint(best)
    head = ckpt["model"].model[-1]
    with torch.no_grad():
        for branch in (head.cv3, getattr(head, "one2one_cv3", None) or ()):
            for seq in branch:
                seq[-1].bias += shift
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, folder / "shaped.pt")
    return folder / "shaped.pt"


@pytest.fixture(scope="module")
def yolo11_shaped(yolo11_run, tmp_path_factory) -> Path:
    return _shaped(yolo11_run[0].best, tmp_path_factory.mktemp("yolo11_shaped"))


@pytest.fixture(scope="module")
def yolo26_shaped(yolo26_run, tmp_path_factory) -> Path:
    return _shaped(yolo26_run[0].best, tmp_path_factory.mktemp("yolo26_shaped"))


@pytest.fixture(scope="module")
def yolo11_cache(yolo11_shaped, frames):
    from livestock.evaluation.detect import collect_candidates

    with network_blocked() as attempts:
        cache = collect_candidates(yolo11_shaped, frames, DETECT_IMGSZ, device="cpu", progress=False)
    assert attempts == []
    return cache


@pytest.mark.slow
def test_yolo11_candidates_are_plentiful_and_overlapping(yolo11_cache, yolo11_shaped, yolo11_run, frames):
    """Guard on the fixture: the equality below is only worth something with many overlapping candidates."""
    from ultralytics import YOLO

    for c in yolo11_cache:
        assert c.postprocess == "ultralytics" and not c.end_to_end and c.objectness is None
        assert len(c) > 500 and (c.confidences() > 0.01).sum() > 50 and (c.confidences() > 0.3).sum() > 5
    kept = sum(len(rows) for _, rows in _predict(YOLO(yolo11_shaped), frames, 0.001, 0.9))
    assert kept < sum(int((c.confidences() > 0.001).sum()) for c in yolo11_cache)
    with pytest.raises(ValueError, match="no one-to-one"):  # only YOLO26 has an NMS-free head
        U.load_detector(yolo11_run[0].best, DETECT_IMGSZ, CPU, 2, variant="one2one")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["classwise", "agnostic", "multi_label"])
def test_yolo11_every_setting_equals_ultralytics_predict(yolo11_shaped, yolo11_cache, frames, mode):
    from ultralytics import YOLO

    yolo = YOLO(yolo11_shaped)
    settings = [(c, t) for t in IOUS for c in CONFS]
    if mode == "multi_label":
        _check_grid(yolo11_cache, lambda c, t: _predict_multi_label(yolo, frames, c, t, 100), settings,
                    max_det=100, multi_label=True)
    else:
        agnostic = mode == "agnostic"
        _check_grid(yolo11_cache, lambda c, t: _predict(yolo, frames, c, t, agnostic_nms=agnostic, max_det=100),
                    settings, max_det=100, agnostic=agnostic)


@pytest.mark.slow
def test_yolo26_nms_free_candidates_equal_ultralytics_at_every_confidence(yolo26_shaped, frames):
    from ultralytics import YOLO

    from livestock.evaluation.detect import collect_candidates

    best = yolo26_shaped
    cache = collect_candidates(best, frames, DETECT_IMGSZ, device="cpu", progress=False)
    for c in cache:
        assert c.end_to_end and c.objectness is None and len(c) > 100 and (c.confidences() > 0.1).sum() > 5
        np.testing.assert_array_equal(c.confidences(), c.scores.sum(1))  # one class a row
    yolo = YOLO(best)
    # NMS IoU plays no part in an end-to-end head: every IoU gives Ultralytics' rows at that confidence
    settings = [(c, t) for t in (0.3, 0.9) for c in CONFS]
    _check_grid(cache, lambda c, t: _predict(yolo, frames, c, t, nms=False), settings)
    _check_grid(cache, lambda c, t: _predict(yolo, frames, c, t, nms=False, max_det=20), settings[:5], max_det=20)


@pytest.mark.slow
def test_yolo26_one2many_variant_equals_ultralytics_with_nms(yolo26_shaped, frames):
    from ultralytics import YOLO

    from livestock.evaluation import detect as D
    from livestock.records import CLASS_NAMES

    best = yolo26_shaped
    det = U.load_detector(best, DETECT_IMGSZ, CPU, len(CLASS_NAMES), variant="one2many")
    assert det.variant == "one2many" and not det.end_to_end
    with pytest.MonkeyPatch.context() as mp:  # the pipeline's loader, handed this variant
        mp.setattr(D, "load_detector", lambda w, s, d, tta=False: det)
        cache = D.collect_candidates(best, frames, DETECT_IMGSZ, progress=False)
    assert not any(c.end_to_end for c in cache) and all(len(c) > 500 for c in cache)
    yolo = YOLO(best)
    settings = [(c, t) for t in (0.5, 0.7) for c in (0.001, 0.1)]
    _check_grid(cache, lambda c, t: _predict(yolo, frames, c, t, max_det=100), settings, max_det=100)


@pytest.mark.slow
def test_yolo11_tta_equals_ultralytics_augmented_predict(yolo11_shaped, frames):
    """Test-time augmentation: NMS over every view's candidates equals Ultralytics' ``predict(augment=True)`` at
    every setting of a grid, and each view's rows are that view's; YOLO26's NMS-free head and ONNX are refused."""
    from ultralytics import YOLO

    from livestock.evaluation.detect import collect_candidates
    from livestock.model.engine import TTA_VIEWS

    with network_blocked() as attempts:
        cache = collect_candidates(yolo11_shaped, frames, DETECT_IMGSZ, device="cpu", progress=False, tta=True)
    assert attempts == []
    one_pass = collect_candidates(yolo11_shaped, frames, DETECT_IMGSZ, device="cpu", progress=False)
    for c, one in zip(cache, one_pass):
        assert c.n_views == TTA_VIEWS and list(np.unique(c.views)) == [0, 1, 2] and np.all(np.diff(c.views) >= 0)
        # the first view is the one-pass forward less its clipped tail (Ultralytics drops the coarsest level's rows)
        first = c.view(0)
        assert 0 < len(first) <= len(one) and set(map(tuple, first.boxes)) <= set(map(tuple, one.boxes))
    yolo = YOLO(yolo11_shaped)
    settings = [(c, t) for t in IOUS for c in CONFS]
    _check_grid(cache, lambda c, t: _predict(yolo, frames, c, t, augment=True, max_det=100), settings, max_det=100)


@pytest.mark.slow
def test_tta_is_refused_where_ultralytics_has_no_augmented_forward(yolo26_shaped, tmp_path):
    from livestock.records import CLASS_NAMES

    with pytest.raises(ValueError, match="no augmented forward for this head \\(one2one\\)"):
        U.load_detector(yolo26_shaped, DETECT_IMGSZ, CPU, len(CLASS_NAMES), augment=True)
    det = U.load_detector(yolo26_shaped, DETECT_IMGSZ, CPU, len(CLASS_NAMES), variant="one2many", augment=True)
    assert det.n_views == 3 and not det.end_to_end
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"")
    with pytest.raises(ValueError, match="model.onnx: test-time augmentation .* use the .pt checkpoint"):
        U.load_detector(fake, DETECT_IMGSZ, CPU, len(CLASS_NAMES), augment=True)


@pytest.mark.slow
def test_same_detections_score_the_same_whichever_engine_wrote_them(yolo11_cache, yolo11_shaped, frames):
    """Scoring is engine-neutral: Ultralytics' own predictions and the replay give the same submission and score;
    and the same candidate rows replayed with YOLOv5's rules give the same detections where the two engines'
    box mappings coincide (no letterbox padding) and no confidences tie."""
    import dataclasses

    from ultralytics import YOLO

    from livestock.evaluation.nms_replay import detections_for_setting
    from livestock.evaluation.metrics import map_at
    from livestock.evaluation.submission import detections_to_submission
    from livestock.records import Detections

    ours = detections_for_setting(yolo11_cache, 0.001, 0.7)
    ref = [Detections(i, d.width, d.height, rows[:, :4].double().numpy(), rows[:, 4].double().numpy(),
                      rows[:, 5].long().numpy())
           for (i, rows), d in zip(_predict(YOLO(yolo11_shaped), frames, 0.001, 0.7), ours)]
    answer = detections_to_submission(ours).drop(columns="Conf").iloc[::3]  # a pretend answer: every third box
    submission = detections_to_submission(ours)
    assert submission.equals(detections_to_submission(ref))
    assert map_at(answer, submission, 0.5) == map_at(answer, detections_to_submission(ref), 0.5)

    square = [c for c in yolo11_cache if c.input_shape == (c.height, c.width)]
    assert square, "a frame without letterbox padding"
    as_yolov5 = [dataclasses.replace(c, postprocess="yolov5") for c in square]
    for a, b in zip(detections_for_setting(square, 0.001, 0.7), detections_for_setting(as_yolov5, 0.001, 0.7)):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)


# ---------------------------------------------------------------- ONNX


@pytest.mark.slow
def test_onnx_export_is_recognised_and_matches_pytorch(yolo11_shaped, yolo26_shaped, frames, tmp_path):
    import cv2
    from ultralytics import YOLO

    from livestock.evaluation.detect import collect_candidates
    from livestock.model.engine import engine_of_weights

    for best, head in ((yolo11_shaped, "one2many"), (yolo26_shaped, "one2one")):
        with network_blocked() as attempts:
            onnx_path = U.export_onnx(best, DETECT_IMGSZ, tmp_path / f"{head}.onnx")
        assert attempts == []
        meta = U._onnx_metadata(onnx_path)
        assert meta["engine"] == "ultralytics" and meta["variant"] == head and engine_of_weights(onnx_path) == U.NAME
        assert not (best.parent / "shaped.onnx").exists()  # the weights folder is left alone
        onnx_cache = collect_candidates(onnx_path, frames, DETECT_IMGSZ, progress=False)
        assert all(c.input_shape == (DETECT_IMGSZ, DETECT_IMGSZ) for c in onnx_cache)  # fixed shape, as exported
        pt = U.load_detector(best, DETECT_IMGSZ, CPU, 2)
        pt.auto = False  # PyTorch on the same fixed-shape input, for a like-for-like comparison
        for c in onnx_cache:
            im = pt.letterbox(cv2.imread(str(next(f for f in frames if f.name == c.image_id))))
            boxes, scores, _obj, e2e, _views = pt.candidates(im[None], 1e-4)[0]
            assert e2e == c.end_to_end == (head == "one2one")
            top_pt, top_onnx = np.sort(scores.max(1))[-20:], np.sort(c.confidences())[-20:]
            np.testing.assert_allclose(top_onnx, top_pt, atol=1e-3)
        # and the replay of the ONNX candidates equals Ultralytics' own predictions with the ONNX file
        yolo = YOLO(str(onnx_path), task="detect")
        kw = {"nms": False} if head == "one2one" else {}
        _check_grid(onnx_cache, lambda c, t: _predict(yolo, frames, c, t, **kw), [(0.001, 0.7), (0.1, 0.5)])
    with pytest.raises(ValueError, match="exported for input"):
        U.load_detector(tmp_path / "one2many.onnx", DETECT_IMGSZ * 2, CPU, 2)
    with pytest.raises(ValueError, match="exported with the one2many head, not one2one"):
        U.load_detector(tmp_path / "one2many.onnx", DETECT_IMGSZ, CPU, 2, variant="one2one")


@pytest.mark.slow
def test_engine_of_weights_tells_the_engines_apart(yolo11_shaped, frames, tmp_path):
    """Checkpoints by the classes their pickle names (read, not run); ONNX files by their metadata."""
    import onnx
    from candidate_helpers import make_checkpoint

    from livestock.model.engine import engine_of_weights

    assert engine_of_weights(yolo11_shaped) == "ultralytics"
    assert engine_of_weights(make_checkpoint(tmp_path / "yolov5n.pt", frames[:2])) == "yolov5"
    exported = U.export_onnx(yolo11_shaped, 64, tmp_path / "small.onnx")
    assert engine_of_weights(exported) == "ultralytics"
    model = onnx.load(str(exported))
    kept = [p for p in model.metadata_props if p.key != "engine"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "plain.onnx"))  # as Ultralytics' exporter alone writes it
    assert engine_of_weights(tmp_path / "plain.onnx") == "ultralytics"
    (tmp_path / "truncated.onnx").write_bytes(exported.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.onnx"):
        engine_of_weights(tmp_path / "truncated.onnx")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        engine_of_weights(tmp_path / "missing.pt")



def test_ultralytics_calls_keep_the_threads_and_leave_torch_settings_as_they_were(toy, tmp_path, monkeypatch):
    """Ultralytics would train on a CPU with its own thread count (cpu_count - 1: one on a 2-core machine) and, for a
    seeded training, switches on deterministic algorithms for the whole process; the engine trains with this
    process's thread count and puts the settings back after each call, so a YOLOv5 run later in the same process
    runs as it would alone."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setattr("ultralytics.utils.torch_utils.NUM_THREADS", threads + 1)  # Ultralytics' choice: another count
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(False)  # a seeded training switches them on: off shows a leak
    during: list[int] = []
    try:
        result = UT.train(toy, model="yolo11n", imgsz=64, epochs=1, batch_size=8, device="cpu", workers=0, seed=0,
                          plots=False, project=tmp_path, name="one_epoch",
                          on_epoch=lambda *_: during.append(torch.get_num_threads()))
        assert during == [threads]
        assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
        UT.validate(result.best, toy, imgsz=64, device="cpu", workers=0, project=tmp_path, plots=False)
        assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
