"""scripts/gpu_check.py: its parts on their own (settings, progress parsing, detection agreement, wheel list), and
its dry run, which goes through every step at toy size on the CPU so that the GPU check cannot rot between uses."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gc = _load_script()


# ---------------------------------------------------------------- settings and the step list


def test_real_run_is_the_originals_training_within_its_budget():
    real = gc.REAL
    gc.check_settings(real)
    assert (real.model, real.imgsz, real.batch, real.hyp) == ("yolov5m6", 1280, 10, "hyp/experiment_hyp_v1.yaml")
    assert (REPO / real.hyp).is_file()
    assert real.budget_s <= 480  # one command of at most 8 minutes, leaving time for a second try
    assert sum(real.limits_s.values()) + gc.REPORT_RESERVE_S <= real.budget_s
    assert real.epochs >= 2  # the first epoch is warm-up, throughput is timed over the others
    # the Ultralytics steps: the engine's contest-scale model from scratch on the same frames, size and batch
    assert (real.ultralytics_model, real.ultralytics_batch, real.ultralytics_hyp) == (
        "yolo11m", real.batch, "hyp/ultralytics_scratch_cpu.yaml")
    assert (REPO / real.ultralytics_hyp).is_file() and real.ultralytics_epochs >= 2


def test_commands_import_ultralytics_offline_even_before_the_package_does(tmp_path, monkeypatch):
    from livestock.model.ultralytics.compat import OFFLINE_ENVIRONMENT

    assert gc.ULTRALYTICS_OFFLINE == OFFLINE_ENVIRONMENT
    for key in (*OFFLINE_ENVIRONMENT, "YOLO_CONFIG_DIR"):
        monkeypatch.delenv(key, raising=False)
    env = gc.command_env(tmp_path / "site")
    assert {k: env[k] for k in OFFLINE_ENVIRONMENT} == OFFLINE_ENVIRONMENT
    assert env["YOLO_CONFIG_DIR"] == str(tmp_path / "ultralytics_config")  # not the home folder
    monkeypatch.setenv("YOLO_CONFIG_DIR", "/somewhere/of/the/users")
    assert gc.command_env(tmp_path / "site")["YOLO_CONFIG_DIR"] == "/somewhere/of/the/users"


def test_settings_with_limits_over_the_budget_are_refused():
    import dataclasses

    over = dataclasses.replace(gc.REAL, budget_s=sum(gc.REAL.limits_s.values()))
    with pytest.raises(ValueError, match="budget"):
        gc.check_settings(over)
    missing = dataclasses.replace(gc.REAL, limits_s={k: v for k, v in gc.REAL.limits_s.items() if k != "val"})
    with pytest.raises(ValueError, match="do not match"):
        gc.check_settings(missing)


def test_cuda_only_parts_are_named_in_one_place():
    names = [s.name for s in gc.STEPS]
    assert len(names) == len(set(names))
    assert "train_ddp" in gc.CUDA_ONLY and all(gc.runs_here(f, cuda=True) for f in gc.CUDA_ONLY)
    assert [n for n in names if not gc.runs_here(n, cuda=False)] == ["train_ddp"]


def test_wheels_never_bring_torch_and_pin_every_version():
    for requirement in gc.GPU_WHEELS.values():
        assert "==" in requirement, requirement
        assert not requirement.lower().startswith(("torch", "nvidia")), requirement
    # Ultralytics' trainer reads results.csv with polars at every checkpoint; the GPU machine has none
    assert gc.GPU_WHEELS["polars"].startswith("polars==")


@pytest.mark.parametrize("checkout_mib, ok", [(10, True), (60, False)])
def test_wheels_and_the_checkout_together_must_fit_one_run(tmp_path, monkeypatch, capsys, checkout_mib, ok):
    """What travels to the GPU machine is the checkout and the wheels: 64 MiB in all."""
    def fake_download(command):  # pip download: 5 MiB of wheels into the -d folder
        folder = Path(command[command.index("-d") + 1])
        (folder / "a-1.0-py3-none-any.whl").write_bytes(b"\0" * (5 << 20))
        return 0

    monkeypatch.setattr(gc.subprocess, "call", fake_download)
    monkeypatch.setattr(gc, "checkout_bytes", lambda: checkout_mib << 20)
    dest = tmp_path / "gpu_wheels"
    assert gc.download_wheels(dest) == (0 if ok else 1)
    assert dest.is_dir() is ok and not (tmp_path / "gpu_wheels.partial").exists()
    if not ok:
        assert "5.00 MiB of wheels and the 60.00 MiB checkout are over the 64 MiB" in capsys.readouterr().err


def test_extrapolation_to_the_original_training_run():
    ext = gc.extrapolate(50.0)
    assert ext["epoch_s"] == pytest.approx(13_164 / 50.0)
    assert ext["total_s"] == pytest.approx(20 * 13_164 / 50.0)
    assert ext["total_h"] == pytest.approx(20 * 13_164 / 50.0 / 3600)


def test_a_failing_or_hanging_step_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    import dataclasses

    def ok(ctx, rec):
        ctx.ready = True  # what the first step does once it has found torch and the device
        rec["summary"] = "fine"

    def fails(ctx, rec):
        ctx.run([sys.executable, "-c", "import sys; print('something broke'); sys.exit(3)"])

    def hangs(ctx, rec):
        rec["partial"] = "kept"
        script = tmp_path / "stuck.py"
        script.write_text("import time\ndef stuck_here():\n    time.sleep(60)\nprint('waiting', flush=True)\n"
                          "stuck_here()\n", encoding="utf-8")
        ctx.run([sys.executable, str(script)])

    steps = (gc.Step("environment", ok, "first"), gc.Step("broken", fails, "exits 3"),
             gc.Step("slow", hangs, "sleeps"), gc.Step("after_broken", ok, "needs broken", needs=("broken",)),
             gc.Step("either", ok, "needs one of two", needs_any=("broken", "slow")),
             gc.Step("either_ok", ok, "needs one of two", needs_any=("slow", "environment")),
             gc.Step("last", ok, "still runs"))
    monkeypatch.setattr(gc, "STEPS", steps)
    monkeypatch.setattr(gc, "MIN_STEP_S", 1.0)  # lets the hanging step have a limit short enough for a test
    limits = {"environment": 10, "broken": 10, "slow": 1.5, "after_broken": 10, "either": 10, "either_ok": 10,
              "last": 10}
    settings = dataclasses.replace(gc.DRY_RUN, limits_s=limits, budget_s=90.0)
    gc.check_settings(settings)
    ctx = gc.Context(settings=settings, dry_run=True, out=tmp_path / "out", work=tmp_path / "work",
                     site=tmp_path / "site", wheels=tmp_path / "wheels", env=gc.command_env(tmp_path / "site"))
    t0 = time.monotonic()
    report = gc.run_check(ctx)
    assert time.monotonic() - t0 < 30  # the hanging command was killed at its step's limit
    status = {s["name"]: s["status"] for s in report["steps"]}
    assert status == {"environment": "ok", "broken": "failed", "slow": "timeout", "after_broken": "skipped",
                      "either": "skipped", "either_ok": "ok", "last": "ok"}
    entries = {s["name"]: s for s in report["steps"]}
    assert "exit 3" in entries["broken"]["error"] and "something broke" in entries["broken"]["error"]
    assert "time limit" in entries["slow"]["error"] and entries["slow"]["results"]["partial"] == "kept"
    # What the time-out looked like (a blocked process: sleeping, few CPU seconds), and where it hung: the Python
    # stack that the process printed when it was sent SIGABRT.
    diagnosis = entries["slow"]["error"].splitlines()[1]
    assert diagnosis.startswith("the wait came back ") and "memory available" in diagnosis, diagnosis
    assert "state S, " in diagnosis and "CPU s" in diagnosis, diagnosis
    assert 'line 3 in stuck_here' in entries["slow"]["error"]
    assert entries["after_broken"]["reason"] == "needs broken"
    assert entries["either"]["reason"] == "needs one of broken, slow"
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text(encoding="utf-8"))
    assert [s["status"] for s in saved["steps"]] == list(status.values())
    md = (tmp_path / "out" / "gpu_check.md").read_text(encoding="utf-8")
    assert "### broken (failed)" in md and "### slow (timeout)" in md
    assert "something broke" in (tmp_path / "out" / "logs" / "broken.log").read_text(encoding="utf-8")


def test_commands_run_without_core_dumps(tmp_path):
    """The SIGABRT of a time-out must not make a training process write a core file of its whole memory, even where
    the check itself may write one (here raised to the hard limit, which children inherit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    try:
        result = gc.Command(["sh", "-c", "ulimit -c"], tmp_path / "log.txt", dict(os.environ)).start().wait(
            time.monotonic() + 30)
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    assert (result.returncode, result.output.strip()) == (0, "0")


def test_a_time_out_stops_and_shows_a_rank_started_in_a_session_of_its_own(tmp_path):
    """torch.distributed.run starts each rank with start_new_session: outside the command's process group. At a
    time-out the rank is named in the diagnosis, prints its stack, and does not outlive the step."""
    rank = tmp_path / "rank.py"
    rank.write_text("import time\ndef stuck_in_rank():\n    time.sleep(120)\nprint('rank up', flush=True)\n"
                    "stuck_in_rank()\n", encoding="utf-8")
    launcher = tmp_path / "launcher.py"
    launcher.write_text(f"import subprocess, sys, time\np = subprocess.Popen([sys.executable, {str(rank)!r}], "
                        "start_new_session=True)\nprint('rank pid', p.pid, flush=True)\ntime.sleep(120)\n",
                        encoding="utf-8")
    command = gc.Command([sys.executable, str(launcher)], tmp_path / "log.txt", gc.command_env(tmp_path / "site"))
    command.start()
    t0 = time.monotonic()
    while "rank up" not in command._output and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    result = command.wait(time.monotonic())
    rank_pid = int(result.output.split("rank pid ")[1].split()[0])
    assert result.timed_out and f"pid {rank_pid} " in result.diagnosis, result.diagnosis
    assert "in stuck_in_rank" in result.output  # the rank's own stack, printed at the SIGABRT
    assert not gc._alive(rank_pid)  # gone (or dead and waiting for init to reap it), not sleeping on


def test_without_torch_or_the_device_nothing_else_runs(tmp_path, monkeypatch):
    import dataclasses

    def no_device(ctx, rec):
        raise gc.StepFailed("CUDA is not available to torch here")

    def never(ctx, rec):
        raise AssertionError("ran without a device")

    monkeypatch.setattr(gc, "STEPS", (gc.Step("environment", no_device, "first"), gc.Step("other", never, "x")))
    settings = dataclasses.replace(gc.DRY_RUN, limits_s={"environment": 10, "other": 10}, budget_s=60.0)
    ctx = gc.Context(settings=settings, dry_run=False, out=tmp_path / "out", work=tmp_path / "work",
                     site=tmp_path / "site", wheels=tmp_path / "wheels", env=dict(os.environ))
    steps = gc.run_check(ctx)["steps"]
    assert [(s["status"], s["reason"]) for s in steps] == [
        ("failed", None), ("skipped", "needs environment (torch, and CUDA for a GPU run)")]


def test_synthetic_shards_add_up():
    sizes = gc._shard_sizes(gc.REAL, 16)
    assert len(sizes) == 16 and sum(sizes) == gc.REAL.train_images and sizes[0] == gc.REAL.main_shard_train
    assert max(sizes[1:]) - min(sizes[1:]) <= 1
    assert gc._shard_sizes(gc.REAL, 1) == [gc.REAL.train_images]


def test_ultralytics_epoch_seconds_come_from_its_cumulative_time_column(tmp_path):
    results = tmp_path / "results.csv"
    results.write_text("epoch,time,train/box_loss\n1,4.5,1.2\n2,6.25,1.1\n3,8.0,1.0\n", encoding="utf-8")
    assert gc._epoch_seconds(results) == pytest.approx([4.5, 1.75, 1.75])


# ---------------------------------------------------------------- reading YOLOv5's training output


def _bar(epoch: int, last: int, n: int, total: int, mem: str = "7.21G") -> str:
    # YOLOv5 7.0's progress description ('%11s' * 2 + '%11.4g' * 5) and its tqdm bar.
    desc = ("%11s" * 2 + "%11.4g" * 5) % (f"{epoch}/{last}", mem, 0.07, 0.0005, 0.01, 91, 1280)
    pct = int(100 * n / total)
    return f"{desc}: {pct:3d}%|#         | {n}/{total} [00:01<00:05,  1.23it/s]"


def test_train_progress_times_full_batches_after_the_first_epoch():
    p = gc.TrainProgress(batch=10)
    p.feed(0.0, "\x1b[34m\x1b[1mAMP: \x1b[0mon for cuda:0 (YOLOv5's comparison with a downloaded yolov5n.pt "
                "is skipped)")
    p.feed(0.5, "  0%|          | 0/5 [00:00<?, ?it/s]")  # the bar before its first batch: no description yet
    for n in range(5):
        p.feed(1.0 + n, _bar(0, 2, n, 5, mem="3.5G"))  # epoch 0: warm-up, not timed
    p.feed(7.0, "                 Class     Images  Instances          P          R      mAP50   mAP50-95: "
                "100%|##########| 1/1 [00:00<00:00,  7.05it/s]")
    for epoch, start in ((1, 10.0), (2, 20.0)):
        for n in range(6):  # n = 5 is the last, possibly short, batch: not timed
            tag = "[rank0]: " if epoch == 2 else ""  # as torch.distributed.run may tag a rank's lines
            p.feed(start + 0.5 * n, tag + _bar(epoch, 2, n, 6, mem="9.87G"))
    thr = p.throughput()
    # per timed epoch: points n = 0..4, i.e. 4 full batches of 10 images in 2.0 s
    assert thr["timed_epochs"] == [1, 2]
    assert thr["timed_images"] == 80 and thr["timed_seconds"] == pytest.approx(4.0)
    assert thr["images_per_s"] == pytest.approx(20.0)
    assert p.between_epochs_s() == pytest.approx([10.0 - 5.0, 20.0 - 12.5])
    assert p.peak_reserved_gb() == pytest.approx(9.87)
    assert p.amp() is True


@pytest.mark.parametrize("line, amp", [
    ("AMP: off on cpu (AMP is used on CUDA devices only)", False),
    ("AMP: checks passed ✅", True),
    ("AMP: checks failed ❌, disabling Automatic Mixed Precision. See https://example.org", False),
])
def test_amp_decision_from_the_log(line, amp):
    p = gc.TrainProgress(batch=1)
    p.feed(0.0, line)
    assert p.amp() is amp
    assert gc.TrainProgress(batch=1).amp() is None


def test_gpu_sampler_reads_nvidia_smi_samples_of_gpu_0(tmp_path, monkeypatch):
    # A stand-in for nvidia-smi (the real one needs a GPU): two samples of GPU 0, one of GPU 1, then it loops on.
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!{sys.executable}\nimport sys, time\n"
                    "sys.stdout.write('0, 50, 1000\\n1, 99, 9\\n0, 90, 2000\\n'); sys.stdout.flush()\n"
                    "time.sleep(60)\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with gc.GpuSampler() as sampler:
        deadline = time.monotonic() + 20
        while len(sampler.samples) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    stats = sampler.stats((0.0, time.monotonic()))
    assert stats["samples"] == 2 and stats["samples_in_timed_batches"] == 2
    assert stats["util_mean_pct"] == pytest.approx(70.0)
    assert (stats["memory_used_first_mib"], stats["memory_used_peak_mib"]) == (1000.0, 2000.0)
    assert gc.GpuSampler().stats(None)["util_mean_pct"] is None


def test_gpu_sampler_without_nvidia_smi_reports_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with gc.GpuSampler() as sampler:
        pass
    assert "nvidia-smi" in sampler.stats(None)["error"]


# ---------------------------------------------------------------- detections on two devices


def _boxes(*rows):
    return {"img.jpg": [("cow", c, x, 10.0, x + 50.0, 80.0) for c, x in rows]}


def test_identical_detections_agree():
    a = _boxes((0.9, 0.0), (0.3, 100.0), (0.0015, 200.0))
    result = gc.compare_detections(a, a)
    assert result["agree"] and result["matched"] == result["compared"] == 6
    assert result["max_box_diff_px"] == 0.0 and result["max_conf_diff"] == 0.0


def test_small_differences_agree_and_large_ones_do_not():
    ref = _boxes((0.9, 0.0), (0.3, 100.0))
    near = _boxes((0.905, 1.5), (0.29, 100.0))
    assert gc.compare_detections(ref, near)["agree"]
    shifted = _boxes((0.9, 3.0), (0.3, 100.0))  # one box 3 px off: 2 of 4 boxes unmatched
    result = gc.compare_detections(ref, shifted)
    assert not result["agree"] and result["unmatched"] == 2 and result["matched_share"] == 0.5
    other_conf = _boxes((0.85, 0.0), (0.3, 100.0))  # confidence 0.05 off
    assert not gc.compare_detections(ref, other_conf)["agree"]


def test_a_box_near_the_cut_may_be_missing_on_the_other_device():
    ref = _boxes((0.9, 0.0), (0.012, 300.0))  # 0.012 < 0.001 + 0.02: may fall under the cut elsewhere
    other = _boxes((0.9, 0.0))
    result = gc.compare_detections(ref, other)
    assert result["agree"] and result["excused_near_cut"] == 1 and result["compared"] == 2
    assert not gc.compare_detections(_boxes((0.9, 0.0), (0.5, 300.0)), other)["agree"]


def test_nothing_to_compare_is_not_agreement():
    result = gc.compare_detections({"img.jpg": []}, {"img.jpg": []})
    assert result["compared"] == 0 and not result["agree"]


def test_read_detections_keeps_images_without_boxes(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("image_id,width,height,label,conf,x1,y1,x2,y2\n"
                    "a.jpg,192,108,cow,0.5,1,2,3,4\n"
                    "b.jpg,192,108,,,,,,\n", encoding="utf-8")
    assert gc.read_detections(path) == {"a.jpg": [("cow", 0.5, 1.0, 2.0, 3.0, 4.0)], "b.jpg": []}


# ---------------------------------------------------------------- the dry run, end to end


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    out, work = root / "out", root / "work"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--work", str(work)],
                          cwd=REPO, capture_output=True, text=True, timeout=3600, check=False)
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    return proc, report, out, work


@pytest.mark.slow
def test_dry_run_runs_every_step_and_skips_only_cuda(dry_run):
    proc, report, out, _ = dry_run
    errors = "\n".join(f"--- {s['name']} ({s['status']}):\n{s['error']}" for s in report["steps"] if s["error"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + errors
    assert [s["name"] for s in report["steps"]] == [s.name for s in gc.STEPS]
    for step in report["steps"]:
        if step["name"] in gc.CUDA_ONLY:
            assert (step["status"], step["reason"]) == ("skipped", "CUDA only"), step
        else:
            assert step["status"] == "ok", step
            assert step["seconds"] <= step["limit_s"]
            assert step["error"] is None
    assert report["mode"] == "dry-run" and report["cuda"] is False and report["seconds"] <= report["budget_s"]
    md = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert all(md.count(f"| {s.name} |") == 1 for s in gc.STEPS if not s.name.startswith("train"))
    assert all(md.count(f"| {s.name} |") == 2 for s in gc.STEPS if s.name in ("train", "train_cache_ram"))
    assert (out / "logs" / "train.log").is_file() and (out / "logs" / "ultralytics.log").is_file()


@pytest.mark.slow
def test_dry_run_measures_training_and_extrapolates(dry_run):
    _, report, _, _ = dry_run
    steps = {s["name"]: s["results"] for s in report["steps"]}
    for name in ("train", "train_cache_ram"):
        r = steps[name]
        ips = r["images_per_s"]
        assert ips > 0 and r["timed_images"] > 0
        assert ips == pytest.approx(r["timed_images"] / r["timed_seconds"])
        # hand-computed from the recorded images/s: 13,164 images per epoch, 20 epochs
        assert r["extrapolated"]["epoch_s"] == pytest.approx(13_164 / ips)
        assert r["extrapolated"]["total_s"] == pytest.approx(20 * 13_164 / ips)
        assert r["amp"] is False and "AMP: off on cpu" in r["amp_log"]  # the patched check ran and said so
        assert r["run_folders"] == ["exp"]
        assert r["gpu"] is None and r["bottleneck"] is None  # no nvidia-smi on a CPU run
    assert steps["train_cache_ram"]["cache"] == "ram"
    assert steps["train_cache_ram"]["speedup_vs_train"] == pytest.approx(
        steps["train_cache_ram"]["images_per_s"] / steps["train"]["images_per_s"])


@pytest.mark.slow
def test_dry_run_answer_is_a_valid_scored_submission(dry_run):
    _, report, out, work = dry_run
    answer = out / "answer.csv"
    with open(answer, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"ImageID", "LabelName", "Conf", "XMin", "XMax", "YMin", "YMax"}
    truth = work / "run" / "synth" / "0" / "test" / "answer.csv"
    check = subprocess.run([sys.executable, "-m", "livestock.cli", "check-submission", str(answer),
                            "--answer", str(truth), "--allow-unknown-images"],
                           cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    inference = next(s for s in report["steps"] if s["name"] == "inference")["results"]
    assert inference["answer_rows"] == len(rows)
    assert 0.0 <= inference["score"]["0.75"] <= 1.0
    assert inference["tune"]["settings"] >= len(gc.TUNE_CONFS) * len(gc.TUNE_IOUS)


@pytest.mark.slow
def test_dry_run_detections_agree_cpu_with_cpu(dry_run):
    _, report, _, _ = dry_run
    steps = {s["name"]: s["results"] for s in report["steps"]}
    agreement = steps["agreement"]
    assert agreement["devices"] == {"device": "cpu", "cpu": "cpu"}
    assert agreement["agree"] and agreement["compared"] > 0 and agreement["unmatched"] == 0
    assert agreement["max_box_diff_px"] == 0.0 and agreement["max_conf_diff"] == 0.0
    assert agreement["tolerance"]["box_px"] == gc.AGREE_BOX_PX and agreement["tolerance"]["rule"]
    latency = steps["latency"]
    assert [(r["precision"], r["batch"]) for r in latency["rows"]] == [("fp32", 1), ("fp32", 16)]
    assert all(r["median_ms"] > 0 for r in latency["rows"])
    assert steps["export"]["file"].endswith("_fp16.onnx") and steps["export"]["size_mb"] > 0


@pytest.mark.slow
def test_dry_run_trains_scores_and_times_the_ultralytics_engine(dry_run):
    from livestock.model.engine import engine_of_weights

    _, report, out, work = dry_run
    steps = {s["name"]: s["results"] for s in report["steps"]}
    run = steps["ultralytics"]
    assert (run["model"], run["imgsz"], run["epochs"]) == ("yolo11n", gc.DRY_RUN.imgsz, gc.DRY_RUN.ultralytics_epochs)
    assert "--engine ultralytics" in run["command"] and run["train_images"] == steps["prepare"]["train_images"]
    assert run["amp"] is False and "AMP: off on cpu" in run["amp_log"]  # the patched check ran and said so
    assert run["gpu"] is None  # no nvidia-smi on a CPU run
    train = run["train"]
    assert engine_of_weights(train["weights"]) == "ultralytics"
    # hand-computed from Ultralytics' own results.csv: its cumulative times, and the epoch after the first
    with open(work / "run" / "ultralytics" / "train" / "results.csv", newline="", encoding="utf-8") as f:
        ends = [float(row["time"]) for row in csv.DictReader(f)]
    assert len(ends) == gc.DRY_RUN.ultralytics_epochs == 2
    assert train["epoch_s"] == pytest.approx([ends[0], ends[1] - ends[0]])
    assert train["images_per_s"] == pytest.approx(run["train_images"] / (ends[1] - ends[0]))
    assert train["extrapolated"]["total_s"] == pytest.approx(20 * 13_164 / train["images_per_s"])
    # validated on the same fold as the YOLOv5 weights; scored with the contest metric on the test images
    assert run["val"]["images"] == steps["val"]["images"] > 0
    assert 0.0 <= run["val"]["metrics"]["all"]["mAP@0.5"] <= 1.0
    contest = run["contest"]
    assert contest["metric_iou"] == 0.75 and contest["settings"] == len(gc.TUNE_CONFS) * len(gc.TUNE_IOUS)
    assert (contest["original"]["conf"], contest["original"]["iou"]) == (0.001, 0.68)
    assert 0.0 <= contest["original"]["map"] <= contest["best"]["map"] <= 1.0
    assert contest["images"] == steps["inference"]["images"]
    latency = steps["ultralytics_latency"]
    assert [(r["runtime"], r["precision"], r["batch"], r["device"]) for r in latency["rows"]] == [
        ("pytorch", "fp32", 1, "cpu"), ("pytorch", "fp32", 16, "cpu"), ("onnxruntime", "fp32", 1, "cpu")]
    assert [r["runs"] for r in latency["rows"]] == [*gc.DRY_RUN.latency_runs, gc.DRY_RUN.onnx_cpu_passes[1]]
    assert all(r["median_ms"] > 0 and r["images_per_s"] == pytest.approx(r["batch"] * 1e3 / r["median_ms"])
               for r in latency["rows"])
    exported = work / "run" / latency["onnx"]["file"]
    assert engine_of_weights(exported) == "ultralytics"
    assert latency["onnx"]["size_mb"] == pytest.approx(exported.stat().st_size / 1e6)
    assert latency["onnx"]["providers"] == ["CPUExecutionProvider"]
    md = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert "## Ultralytics (yolo11n, 64 px" in md and "| onnxruntime | fp32 | 1 | cpu |" in md
