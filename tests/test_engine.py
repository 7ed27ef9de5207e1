"""livestock.model.yolov5: the YOLOv5 compatibility fixes, weights / hyp / model resolution, the weight-size
guard, training and validation (a short run must clearly beat the untrained model), and the CLI."""
from __future__ import annotations

import copy
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import livestock.model.yolov5.compat as E
import livestock.model.yolov5.training as T
from livestock.data.yolo_format import load_data_yaml
from livestock.model.engine import (METRIC_COLUMNS, PretrainedWeightsError, WeightSizeError, epochs_in_results,
                                    keep_results_rows, validation_batch)
from livestock.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
# The original entry's final hyper-parameters, as its write-up lists them.
ORIGINAL_FINAL_HYP = dict(
    lr0=0.009, lrf=0.08, momentum=0.94, weight_decay=0.001, warmup_epochs=0.11, warmup_momentum=0.77,
    warmup_bias_lr=0.0004, box=0.02, cls=0.2, cls_pw=0.95, obj=0.2, obj_pw=0.5, iou_t=0.2, anchor_t=4.0,
    fl_gamma=0.0, hsv_h=0.009, hsv_s=0.1, hsv_v=0.9, degrees=0.0, translate=0.1, scale=0.5, shear=0.0,
    perspective=0.0, flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.0, copy_paste=0.0,
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    from toy_yolo import make_toy_yolo_dataset

    return make_toy_yolo_dataset(tmp_path_factory.mktemp("toy"), n_train=16, n_val=8)


def random_init_checkpoint(path: Path, model: str = "yolov5n", with_optimizer: bool = False, seed: int = 0) -> Path:
    """A checkpoint of an untrained model (the state training starts from), in YOLOv5's format; with
    ``with_optimizer`` unstripped, as ``last.pt`` is during training (FP16 model + EMA + optimizer state)."""
    E.ensure_yolov5()
    import torch
    from yolov5.models.yolo import Model

    torch.manual_seed(seed)
    net = Model(str(E.model_cfg(model)), ch=3, nc=2)
    net.names, net.nc = {0: "pig", 1: "cow"}, 2  # as training sets them
    ckpt = {"epoch": -1, "best_fitness": None, "model": copy.deepcopy(net).half(), "ema": None, "updates": None,
            "optimizer": None, "opt": {}, "date": None}
    if with_optimizer:
        sgd = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        net(torch.zeros(1, 3, 64, 64))[0].sum().backward()
        sgd.step()  # momentum buffers: optimizer state as large as the model
        ckpt.update(epoch=3, best_fitness=0.0, ema=copy.deepcopy(net).half(), updates=10, optimizer=sgd.state_dict())
    torch.save(ckpt, path)
    return path


# ---------------------------------------------------------------- the compatibility fixes


def test_fix_pkg_resources_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(E, "_READY", False)
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # what `import pkg_resources` sees without it
    with pytest.raises(ImportError, match=r"setuptools<81"):
        E.ensure_yolov5()


def test_fix_numpy_trapz_serves_yolov5_ap():
    E.ensure_yolov5()
    from yolov5.utils.metrics import compute_ap

    assert np.trapz([0.0, 1.0], [0.0, 1.0]) == pytest.approx(0.5)
    ap, _, _ = compute_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]))  # integrates with np.trapz
    assert 0.0 < ap <= 1.0


def test_fix_torch_load_strips_and_loads_checkpoints(tmp_path):
    E.ensure_yolov5()
    from yolov5.models.experimental import attempt_load
    from yolov5.utils.general import strip_optimizer

    path = random_init_checkpoint(tmp_path / "last.pt", with_optimizer=True)
    before = path.stat().st_size
    strip_optimizer(path)  # torch.load inside YOLOv5: fails with weights_only=True
    assert path.stat().st_size < before
    model = attempt_load(str(path), device="cpu")
    assert model.names == {0: "pig", 1: "cow"}


def test_fix_local_weights_load_without_the_hub_modules_yolov5_imports(monkeypatch):
    """huggingface_hub 0.25 removed ``huggingface_hub.utils._errors``, which YOLOv5 imports to ask the Hub about
    every weights string: a machine with a newer hub (the GPU machine's has 1.x) could load no checkpoint."""
    E.ensure_yolov5()
    import yolov5.models.common
    import yolov5.train
    import yolov5.utils.downloads

    monkeypatch.setitem(sys.modules, "huggingface_hub.utils._errors", None)  # what a hub >= 0.25 gives the import
    weights = REPO / "trained_model" / "pretrained_yolov5n_320.pt"
    backend = yolov5.models.common.DetectMultiBackend(str(weights), device=__import__("torch").device("cpu"))
    assert backend.pt and backend.names == {0: "pig", 1: "cow"}
    lookups = {m.attempt_download_from_hub for m in (yolov5.train, yolov5.models.common, yolov5.utils.downloads)}
    assert len(lookups) == 1  # training and the detector take the same lookup
    lookup = lookups.pop()
    assert lookup(str(weights)) is None and lookup("") is None
    with pytest.raises(ModuleNotFoundError):  # any other string still goes to YOLOv5's own Hub lookup
        lookup("someone/their-model")


def test_fix_fonts_are_local_and_never_downloaded(monkeypatch):
    E.ensure_yolov5()
    import torch
    from PIL import ImageFont
    from yolov5.utils import general, plots

    def no_download(*args, **kwargs):
        raise AssertionError(f"YOLOv5 tried to download {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        assert (general.CONFIG_DIR / name).stat().st_size > 100_000
        general.check_font(name)
    font = plots.check_pil_font("Arial.ttf", size=12)
    assert isinstance(font, ImageFont.FreeTypeFont)  # not Pillow's bitmap fallback
    w, h = font.getsize("pig 0.93")  # removed in Pillow 10, used by YOLOv5's plotting threads
    assert w > 0 and h > 0
    annotator = plots.Annotator(np.zeros((96, 96, 3), np.uint8), pil=True)
    annotator.box_label([10, 30, 60, 80], "cow 0.51")
    assert np.asarray(annotator.result()).any()


def test_requirements_check_never_installs():
    E.ensure_yolov5()
    from ultralytics.utils.checks import check_requirements

    # Would otherwise try `pip install` of a package that does not exist.
    assert check_requirements("livestock-no-such-package-xyz>=1.0") is True


@pytest.mark.parametrize("user_threads", [None, "1"])
def test_fix_processes_started_after_the_import_keep_the_users_threads(user_threads):
    """Importing yolov5 sets OMP_NUM_THREADS to cpu_count - 1 for every process started afterwards; after the fix a
    child computes with the torch threads it would have had without the import (the user's value, or the default)."""
    from thread_probe import assert_threads_kept

    fix = ("import livestock.model.yolov5.compat as E\nE.ensure_yolov5()\n"
           "import yolov5.utils.general  # noqa: F401 - the module that sets the variable")
    assert_threads_kept(fix, user_threads)


class _ModelOn:
    """Just enough of a model for ``check_amp``: one parameter that says which device it lives on."""

    def __init__(self, device) -> None:
        import types

        self._param = types.SimpleNamespace(device=device)

    def parameters(self):
        return iter([self._param])


def test_fix_amp_check_keeps_amp_on_cuda_without_network(monkeypatch):
    E.ensure_yolov5()
    import torch
    import yolov5.models.common
    import yolov5.train
    import yolov5.utils.general

    def no_network(*args, **kwargs):
        raise AssertionError(f"the AMP check tried to reach the network: {args}")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(yolov5.models.common, "DetectMultiBackend", no_network)  # what loads yolov5n.pt
    # train.py holds its own binding of the name: both must be the offline check.
    assert yolov5.train.check_amp is E._check_amp_offline
    assert yolov5.utils.general.check_amp is E._check_amp_offline
    # A torch.device of type cuda exists without a GPU, so the CUDA branch runs on this CPU machine.
    assert yolov5.train.check_amp(_ModelOn(torch.device("cuda", 0))) is True
    assert yolov5.train.check_amp(_ModelOn(torch.device("cpu"))) is False


def test_fix_amp_check_logs_its_decision():
    E.ensure_yolov5()
    import logging

    import torch
    from yolov5.utils.general import LOGGER

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    LOGGER.addHandler(handler)
    level = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    try:
        E._check_amp_offline(_ModelOn(torch.device("cuda", 0)))
        E._check_amp_offline(_ModelOn(torch.device("cpu")))
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(level)
    assert "AMP: " in records[0] and "on for cuda:0" in records[0]
    assert "off on cpu" in records[1]


def test_yolov5_parser_ignores_the_host_command_line(monkeypatch):
    E.ensure_yolov5()
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs", "5", "--weights", "x.pt", "-k", "engine"])
    opt = T._yolov5_train_opt(imgsz=96)
    assert (opt.epochs, opt.weights, opt.imgsz) == (100, "yolov5s.pt", 96)
    with pytest.raises(ValueError, match="unknown YOLOv5 train option"):
        T._yolov5_train_opt(no_such_option=1)


# ---------------------------------------------------------------- models, devices, weights


def test_model_names_resolve_to_shipped_yaml():
    for name in E.MODEL_NAMES:
        cfg = E.model_cfg(name)
        assert cfg.is_file() and cfg.name == f"{name}.yaml"
        assert E.model_cfg(f"{name}.yaml") == cfg
        assert yaml.safe_load(cfg.read_text())["nc"] == 80
    with pytest.raises(ValueError, match="unknown model"):
        E.model_cfg("yolov5q")


def test_one_device_parser(monkeypatch):
    import torch

    from livestock.model.engine import DeviceSpec, parse_device

    assert parse_device("cpu") == DeviceSpec("cpu") and parse_device("CPU").engine_string() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_device("auto") == DeviceSpec("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        parse_device("0,1")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        parse_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_device("auto") == DeviceSpec("cuda", (0,))
    for text in ("0,1", "cuda:0,1", " 0, 1 "):
        spec = parse_device(text)
        assert spec == DeviceSpec("cuda", (0, 1)) and spec.engine_string() == "0,1" and str(spec.torch()) == "cuda:0"
    assert parse_device("cuda:1").engine_string() == "1" and parse_device("cuda").engine_string() == "0"
    with pytest.raises(ValueError, match="only 2 GPU"):
        parse_device("2")


def test_train_settings_one_object_for_every_engine():
    """Both engines' train() take one TrainSettings: fields override a base, other names become engine options,
    and what no run can take is refused before any training starts, with the engine's own lists."""
    from livestock.model.engine import TrainSettings
    from livestock.model.ultralytics import adapter as UA

    base = TrainSettings(epochs=30, imgsz=320, options={"freeze": [10]})
    s = TrainSettings.of(base, seed=2, rect=True)
    assert (s.epochs, s.imgsz, s.seed, s.batch_size) == (30, 320, 2, 16)
    assert dict(s.options) == {"freeze": [10], "rect": True} and dict(base.options) == {"freeze": [10]}
    s.check(E.PASSTHROUGH_OPTIONS, E.OPTIMIZERS)
    with pytest.raises(ValueError, match=r"unsupported train options \['close_mosaic'\]"):
        TrainSettings.of(close_mosaic=0).check(E.PASSTHROUGH_OPTIONS, E.OPTIMIZERS)
    TrainSettings.of(close_mosaic=0, optimizer="MuSGD").check(UA.PASSTHROUGH_OPTIONS, UA.OPTIMIZERS)
    with pytest.raises(ValueError, match="optimizer must be one of SGD, Adam, AdamW, not 'MuSGD'"):
        TrainSettings.of(optimizer="MuSGD").check(E.PASSTHROUGH_OPTIONS, E.OPTIMIZERS)
    with pytest.raises(ValueError, match="cache must be None, 'ram' or 'disk', not 'gpu'"):
        TrainSettings.of(cache="gpu").check(E.PASSTHROUGH_OPTIONS, E.OPTIMIZERS)
    with pytest.raises(ValueError, match=r"need epochs >= 1, batch_size >= 1 and imgsz >= 32 \(got 0, 16, 640\)"):
        T.train("never-read.yaml", epochs=0)


def test_resolve_weights_scratch_and_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "_download", lambda *a: pytest.fail("no download for paths"))
    assert E.resolve_weights(None) == "" and E.resolve_weights("") == "" and E.resolve_weights("''") == ""
    ckpt = tmp_path / "mine.pt"
    ckpt.write_bytes(b"x")
    assert E.resolve_weights(ckpt) == str(ckpt.resolve())
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        E.resolve_weights(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError):  # a known name inside a folder is a path, never a download
        E.resolve_weights(tmp_path / "yolov5m6.pt")


def test_pretrained_by_name_found_locally(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "_download", lambda *a: pytest.fail("the file is there: no download"))
    (tmp_path / "yolov5m6.pt").write_bytes(b"x")
    assert E.resolve_weights("yolov5m6.pt", download_dir=tmp_path) == str((tmp_path / "yolov5m6.pt").resolve())
    assert E.resolve_weights("yolov5m6", download_dir=tmp_path) == str((tmp_path / "yolov5m6.pt").resolve())


def test_pretrained_by_name_missing_is_a_clear_error(tmp_path, monkeypatch):
    calls = []

    def failing_download(url, dst, timeout_s):
        calls.append((url, dst, timeout_s))
        raise OSError("network is unreachable")

    monkeypatch.setattr(E, "_download", failing_download)
    with pytest.raises(PretrainedWeightsError) as info:
        E.resolve_weights("yolov5m6.pt", download_dir=tmp_path / "trained_model")
    msg = str(info.value)
    assert calls and calls[0][0].endswith("/v7.0/yolov5m6.pt") and calls[0][2] <= 30
    assert "trained_model/yolov5m6.pt" in msg  # where to put the file
    assert "weights=None" in msg and "--weights ''" in msg and "yolov5m6" in msg  # how to train from scratch
    assert isinstance(info.value, FileNotFoundError)  # the CLI prints it as one line


def test_download_gives_up_on_a_silent_server(tmp_path):
    """A server that accepts the connection and never answers: the download fails, it does not hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/yolov5m6.pt"
    outcome: dict = {}

    def attempt():
        try:
            E._download(url, tmp_path / "yolov5m6.pt", timeout_s=1.0)
        except Exception as e:
            outcome["error"] = e

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(60)  # a hang detector, far above the 1 s timeout
    server.close()
    assert not worker.is_alive(), "the download hung"
    assert "error" in outcome and not (tmp_path / "yolov5m6.pt").exists()


def test_cli_train_pretrained_missing(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(E, "_download", lambda *a: (_ for _ in ()).throw(OSError("offline")))
    rc = cli_main(["train", "--data", str(toy), "--weights", "yolov5s.pt", "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "trained_model/yolov5s.pt" in err and "--weights ''" in err
    assert not (tmp_path / "runs").exists()  # failed before making a run folder


@pytest.mark.parametrize("engine", ["yolov5", "ultralytics"])
@pytest.mark.parametrize("content", [b"", b"not a checkpoint"])
def test_cli_train_from_a_corrupt_checkpoint_names_it_and_makes_no_run(toy, tmp_path, monkeypatch, capsys, engine,
                                                                         content):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "start.pt").write_bytes(content)
    rc = cli_main(["train", "--engine", engine, "--data", str(toy), "--weights", "start.pt", "--epochs", "1",
                   "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "start.pt: not a readable PyTorch checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("engine", ["yolov5", "ultralytics"])
def test_cli_train_refuses_a_model_yaml_or_freeze_it_cannot_use(toy, tmp_path, monkeypatch, capsys, engine):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "other.yaml").write_text("train: x\n")
    base = ["train", "--engine", engine, "--data", str(toy), "--epochs", "1", "--device", "cpu"]
    for option, message in ((["--model", "empty.yaml"], "empty.yaml: not a model yaml"),
                            (["--model", "other.yaml"], "other.yaml: not a model yaml"),
                            (["--model", "nope.yaml"], "nope.yaml: model yaml not found"),
                            (["--freeze", "-1"], "freeze [-1]")):
        assert cli_main([*base, *option]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()


def test_cli_train_with_an_unknown_device_makes_no_run(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = cli_main(["train", "--data", str(toy), "--epochs", "1", "--device", "bogus"])
    assert rc == 1 and "bogus" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("engine", ["yolov5", "ultralytics"])
@pytest.mark.parametrize("option, message", [(["--conf", "1.5"], "conf 1.5"), (["--iou", "0"], "iou 0.0"),
                                             (["--img", "0"], "imgsz >= 32"), (["--batch", "0"], "batch >= 1")])
def test_cli_val_refuses_settings_before_the_model_loads(toy, tmp_path, monkeypatch, capsys, engine, option, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_text("never loaded")
    rc = cli_main(["val", "--engine", engine, "--weights", "w.pt", "--data", str(toy), *option])
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_cli_missing_data_yaml(tmp_path, capsys):
    rc = cli_main(["train", "--data", str(tmp_path / "nope.yaml"), "--epochs", "1"])
    assert rc == 1 and "nope.yaml" in capsys.readouterr().err


# ---------------------------------------------------------------- hyp files


def test_hyp_experiment_v1_is_the_originals_final_set():
    hyp = E.load_hyp(REPO / "hyp" / "experiment_hyp_v1.yaml")
    assert hyp == pytest.approx(ORIGINAL_FINAL_HYP) and set(hyp) == set(E.HYP_KEYS)


def test_hyp_scratch_cpu_is_yolov5_scratch_low():
    shipped = yaml.safe_load((E.yolov5_package_dir() / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    assert E.load_hyp(REPO / "hyp" / "hyp_scratch_cpu.yaml") == pytest.approx(shipped)


@pytest.mark.parametrize("name", ["experiment_hyp_v1", "hyp_scratch_cpu"])
def test_package_hyp_copies_match_the_repository(name):
    repo_file, pkg_file = REPO / "hyp" / f"{name}.yaml", E.PACKAGE_HYP_DIR / f"{name}.yaml"
    assert pkg_file.read_bytes() == repo_file.read_bytes()
    assert E.load_hyp(name) == E.load_hyp(repo_file)


def test_hyp_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    values = dict(ORIGINAL_FINAL_HYP)
    del values["lrf"]
    values["lr_0"] = 0.01
    bad.write_text(yaml.safe_dump(values))
    with pytest.raises(ValueError, match=r"bad\.yaml.*missing keys \['lrf'\].*unknown keys \['lr_0'\]"):
        E.load_hyp(bad)
    with pytest.raises(FileNotFoundError, match="experiment_hyp_v1"):
        E.load_hyp("hyp_no_such_file")
    with pytest.raises(ValueError, match="non-numeric"):
        E.load_hyp({**ORIGINAL_FINAL_HYP, "lr0": "fast"})


# ---------------------------------------------------------------- datasets and run folders


def test_data_yaml_relative_entries_resolve_against_its_folder(toy, tmp_path):
    rel = toy.parent / "relative.yaml"
    rel.write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                   "names": {0: "pig", 1: "cow"}}))
    data, changed = load_data_yaml(rel)
    assert changed and data["val"] == str((toy.parent / "images" / "val").resolve())
    written = T._data_yaml_for_yolov5(rel, tmp_path)
    assert Path(written) == tmp_path / "data.yaml" and yaml.safe_load(Path(written).read_text())["val"] == data["val"]
    assert T._data_yaml_for_yolov5(toy, tmp_path / "other") == str(toy.resolve())  # absolute: used as is
    broken = toy.parent / "broken.yaml"
    broken.write_text(yaml.safe_dump({"train": "images/train", "val": "images/nope", "names": ["pig", "cow"]}))
    with pytest.raises(FileNotFoundError, match=r"broken\.yaml: val entry .*images/nope"):
        load_data_yaml(broken)


def test_run_folder_increments_unless_exist_ok(tmp_path):
    assert T._run_dir(tmp_path, "exp", exist_ok=False) == tmp_path / "exp"
    assert (tmp_path / "exp").is_dir()  # made at once, so a second run started now cannot take it
    assert T._run_dir(tmp_path, "exp", exist_ok=False) == tmp_path / "exp2"
    assert T._run_dir(tmp_path, "exp", exist_ok=True) == tmp_path / "exp"


def test_quiet_mode_hides_yolov5_info_and_restores_it():
    import logging

    E.ensure_yolov5()
    from yolov5.utils.general import LOGGER

    level = LOGGER.level
    with T._yolov5_output(verbose=False):
        assert not LOGGER.isEnabledFor(logging.INFO) and LOGGER.isEnabledFor(logging.WARNING)
    assert LOGGER.level == level


# ---------------------------------------------------------------- weight size


def test_checkpoint_size_report_of_an_unstripped_checkpoint(tmp_path):
    path = random_init_checkpoint(tmp_path / "last.pt", with_optimizer=True)
    report = E.checkpoint_size_report(path)
    n = report["parameters"]
    assert 1.5e6 < n < 2.0e6  # YOLOv5n, 2 classes
    assert not report["is_stripped_fp16"]
    # FP16 weights take 2 bytes a parameter, plus the pickled module structure.
    assert 2 * n / 1e6 < report["stripped_fp16_mb"] < 2 * n / 1e6 + 1.5 < report["file_mb"]
    assert report["within_limit"] and report["limit_mb"] == 100.0 and report["epoch"] == 3

    from yolov5.utils.general import strip_optimizer

    strip_optimizer(path)
    stripped = E.checkpoint_size_report(path)
    assert stripped["is_stripped_fp16"]
    assert stripped["file_mb"] == report["stripped_fp16_mb"]  # the prediction was exact


def test_weight_size_guard_both_ways(tmp_path):
    path = random_init_checkpoint(tmp_path / "best.pt")
    with pytest.warns(RuntimeWarning, match="over the 1 MB limit"):
        report = E.check_weight_size(path, max_weight_mb=1.0)
    assert not report["within_limit"]
    with pytest.raises(WeightSizeError, match=r"best\.pt: stripped FP16 weights are 3\.\d MB, over the 1 MB"):
        E.check_weight_size(path, max_weight_mb=1.0, fail_on_oversize=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert E.check_weight_size(path, fail_on_oversize=True)["within_limit"]  # 100 MB: silent


def test_not_a_checkpoint(tmp_path):
    import torch

    torch.save({"weights": [1, 2]}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a YOLOv5 checkpoint"):
        E.checkpoint_size_report(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        E.checkpoint_size_report(tmp_path / "none.pt")


# ---------------------------------------------------------------- training and validation (slow)


@pytest.mark.slow
def test_training_result(tiny_train_result, tiny_trained_model):
    r = tiny_train_result
    weights, data_yaml = tiny_trained_model
    assert weights == r.best and data_yaml == r.data_yaml
    assert r.best.is_file() and r.last.is_file() and r.best.parent == r.save_dir / "weights"
    assert r.epochs_run == yaml.safe_load((r.save_dir / "opt.yaml").read_text())["epochs"]  # no early stop
    assert E.load_hyp(r.save_dir / "hyp.yaml") == r.hyp
    assert list(r.metrics.index) == ["all", "pig", "cow"] and list(r.metrics.columns) == list(METRIC_COLUMNS)
    assert r.metrics.loc["all", "instances"] == r.metrics.loc[["pig", "cow"], "instances"].sum() > 0
    assert r.metrics.loc["all", "mAP@0.5"] == pytest.approx(r.metrics.loc[["pig", "cow"], "mAP@0.5"].mean())
    # best.pt is YOLOv5's stripped FP16 file, far under the contest limit, and it loads with YOLOv5's loader.
    assert r.size_report["is_stripped_fp16"] and r.size_report["within_limit"] and 2 < r.weight_mb < 6
    from yolov5.models.experimental import attempt_load

    model = attempt_load(str(r.best), device="cpu")
    assert model.names == {0: "pig", 1: "cow"} and model.nc == 2


@pytest.mark.slow
def test_trained_model_beats_untrained(tiny_train_result, tmp_path):
    """The same architecture before training (random init) and after a short run, on the same images."""
    r = tiny_train_result
    untrained = random_init_checkpoint(tmp_path / "untrained.pt")
    before = T.validate(untrained, r.data_yaml, imgsz=r.imgsz, device="cpu", workers=0, project=tmp_path,
                        name="untrained", plots=False)
    after = T.validate(r.best, r.data_yaml, imgsz=r.imgsz, device="cpu", workers=0, project=tmp_path,
                       name="trained", plots=False)
    m0, m1 = before.loc["all", "mAP@0.5"], after.loc["all", "mAP@0.5"]
    print(f"mAP@0.5 untrained {m0:.4f} -> trained {m1:.4f}")
    assert m1 > m0 + 0.2 and m1 >= 3 * m0
    assert (after.loc[["pig", "cow"], "mAP@0.5"] > before.loc[["pig", "cow"], "mAP@0.5"]).all()
    # validate() reproduces the table training reported for best.pt (same settings, same images; the two
    # loaders differ in float details, which move P and R, read at the max-F1 confidence, a little).
    print(pd.concat({"validate": after, "training": r.metrics}, axis=1).round(4).to_string())
    assert (after[["images", "instances"]] == r.metrics[["images", "instances"]]).all().all()
    cols = ["P", "R", "mAP@0.5", "mAP@0.5:0.95"]
    assert np.allclose(after[cols], r.metrics[cols], atol=0.02)
    assert (tmp_path / "trained" / "per_class.csv").is_file()
    assert after.attrs["save_dir"] == str((tmp_path / "trained").resolve())


@pytest.mark.slow
def test_cli_val(tiny_trained_model, tiny_train_result, tmp_path, capsys):
    weights, data_yaml = tiny_trained_model
    rc = cli_main(["val", "--weights", str(weights), "--data", str(data_yaml), "--img", str(tiny_train_result.imgsz),
                   "--device", "cpu",
                   "--workers", "0", "--project", str(tmp_path), "--name", "v"])
    out = capsys.readouterr().out
    assert rc == 0 and "mAP@0.5:0.95" in out and "pig" in out and "cow" in out
    table = pd.read_csv(tmp_path / "v" / "per_class.csv", index_col="class")
    assert list(table.index) == ["all", "pig", "cow"]


@pytest.mark.slow
def test_cli_train_fails_on_oversize_but_keeps_the_weights(toy, tmp_path, capsys):
    rc = cli_main(["train", "--data", str(toy), "--img", "64", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                   "--workers", "0", "--project", str(tmp_path), "--name", "big", "--max-weight-mb", "1",
                   "--fail-on-oversize"])
    err = capsys.readouterr().err
    assert rc == 1 and "over the 1 MB limit" in err
    assert (tmp_path / "big" / "weights" / "best.pt").is_file()
    assert yaml.safe_load((tmp_path / "big" / "opt.yaml").read_text())["cos_lr"] is False  # linear LR by default


# ---------------------------------------------------------------- devices, distributed ranks, resume


def test_validation_batch_fits_large_images():
    assert [validation_batch(s) for s in (320, 640, 960, 1280, 2560)] == [32, 32, 14, 8, 2]


def test_distributed_ranks_share_one_run_folder(tmp_path, monkeypatch):
    """Under torch.distributed.run every rank calls train(): rank 0 picks the folder (incremented past an old
    run) and the other ranks use it, creating no folder of their own."""
    (tmp_path / "exp").mkdir()  # an earlier run
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job42")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(T, "RANK_WAIT_S", 0.5)
    with pytest.raises(TimeoutError, match="rank 0 did not name the run folder"):
        T._run_dir(tmp_path, "exp", exist_ok=False)
    monkeypatch.setenv("RANK", "0")
    chosen = T._run_dir(tmp_path, "exp", exist_ok=False)
    assert chosen == (tmp_path / "exp2").resolve() and chosen.is_dir()
    T._publish_run_dir(tmp_path, "exp", chosen)
    monkeypatch.setenv("RANK", "1")
    assert T._run_dir(tmp_path, "exp", exist_ok=False) == chosen
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["exp", "exp2"]


@pytest.mark.slow
def test_training_ends_the_process_group_yolov5_starts_and_keeps_the_callers(toy, tmp_path, monkeypatch):
    """Under torch.distributed.run, yolov5's main() starts the process group and never ends it: train() ends it, so
    the ranks exit cleanly and a later train() in the process can start one again. A group the caller started
    stays. No GPU here: a one-process gloo group, started where yolov5 starts its own, stands for the NCCL one."""
    import torch.distributed as dist

    E.ensure_yolov5()
    import yolov5.train

    real_main, starts = yolov5.train.main, []

    def main_starting_a_group(opt, callbacks):
        if not dist.is_initialized():  # as yolov5 does under torch.distributed.run, which fails on a second start
            dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store-own'}", rank=0, world_size=1)
            starts.append(opt.name)
        return real_main(opt, callbacks=callbacks)

    monkeypatch.setattr(yolov5.train, "main", main_starting_a_group)
    settings = dict(imgsz=64, epochs=1, batch_size=8, device="cpu", workers=0, project=tmp_path)
    try:
        assert T.train(toy, name="own", **settings).best.is_file()
        assert starts == ["own"] and not dist.is_initialized()
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store-callers'}", rank=0, world_size=1)
        assert T.train(toy, name="callers", **settings).best.is_file()
        assert dist.is_initialized() and starts == ["own"]
    finally:  # no group left behind for the worker's later tests
        if dist.is_initialized():
            dist.destroy_process_group()


def test_results_rows_count_and_keep_the_epochs_last_pt_holds(tmp_path):
    """A run killed after an epoch's results row and before that epoch's last.pt resumes with the rows last.pt
    holds, so the resumed run's rows follow on with no epoch twice."""
    results = tmp_path / "results.csv"
    assert epochs_in_results(results) == 0
    keep_results_rows(results, 2)  # no file: nothing to do
    assert not results.exists()
    results.write_text("epoch,lr\n1,0.1\n2,0.2\n3,0.3\n")
    assert epochs_in_results(results) == 3
    keep_results_rows(results, 5)  # fewer rows than that: left as it is
    assert results.read_text() == "epoch,lr\n1,0.1\n2,0.2\n3,0.3\n"
    keep_results_rows(results, 2)
    assert results.read_text() == "epoch,lr\n1,0.1\n2,0.2\n" and epochs_in_results(results) == 2
    keep_results_rows(results, 0)
    assert results.read_text() == "epoch,lr\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


@pytest.mark.slow
def test_resume_after_kill_keeps_the_lr_schedule(tmp_path):
    """A training killed mid-run resumes from last.pt with its optimiser and LR schedule: the resumed run's
    per-epoch learning rates equal those of the same training run without interruption."""
    import subprocess
    import sys

    from killed_training import kill_after_epochs
    from toy_yolo import make_toy_yolo_dataset

    data = make_toy_yolo_dataset(tmp_path / "toy", n_train=32, n_val=8)
    base = [sys.executable, "-m", "livestock.cli", "train", "--data", str(data), "--model", "yolov5n", "--img", "64",
            "--epochs", "5", "--batch", "8", "--device", "cpu", "--workers", "0", "--project", str(tmp_path)]
    subprocess.run(base + ["--name", "straight"], check=True, capture_output=True)
    results = tmp_path / "killed" / "results.csv"
    done_before = kill_after_epochs(base + ["--name", "killed"], results, epochs=2, timeout_s=300)
    assert done_before < 5
    resumed_run = subprocess.run(base + ["--name", "killed", "--resume"], capture_output=True, text=True)
    assert resumed_run.returncode == 0, resumed_run.stderr[-3000:]
    straight = pd.read_csv(tmp_path / "straight" / "results.csv", skipinitialspace=True)
    resumed = pd.read_csv(results, skipinitialspace=True)
    straight.columns = straight.columns.str.strip()
    resumed.columns = resumed.columns.str.strip()
    assert resumed["epoch"].tolist() == list(range(5))
    lr = [c for c in straight.columns if c.startswith("x/lr")]
    np.testing.assert_allclose(resumed[lr].to_numpy(), straight[lr].to_numpy(), rtol=0, atol=1e-12)
    with pytest.raises(subprocess.CalledProcessError):  # a finished run has nothing left to resume
        subprocess.run(base + ["--name", "killed", "--resume"], check=True, capture_output=True)


@pytest.mark.parametrize("name", ["yolov5", "ultralytics"])
def test_every_engine_offers_every_name_of_the_interface(name):
    from livestock.model.engine import Engine, get_engine

    declared = set(Engine.__annotations__) | {k for k, v in vars(Engine).items() if callable(v) and k[0] != "_"}
    module = get_engine(name)
    assert not {k for k in declared if not hasattr(module, k)}
    assert set(module.OPTIMIZERS) >= {"SGD", "Adam", "AdamW"} and "freeze" in module.PASSTHROUGH_OPTIONS
