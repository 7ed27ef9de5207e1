#!/usr/bin/env python3
"""GPU check: one bounded command that measures what this project does on a CUDA machine.

    make gpu-wheels            # on a networked machine: the wheels the GPU machine may lack -> gpu_wheels/
    make gpu-check             # on the GPU machine (offline): at most 8 minutes, report in $OUT/gpu_check
    make gpu-check DRY_RUN=1   # anywhere: the same steps on the CPU at toy size (the test suite runs this)

The steps (``STEPS``) run in order, each in subprocesses under its own time limit, so a step that fails or hangs
is reported and the next one still runs; the limits add up to less than the global budget. Each step records its
status (ok / failed / timeout / skipped), its seconds and, when it did not succeed, the tail of its output. The
report (``gpu_check.json`` and ``gpu_check.md``) is rewritten after every step, so a run stopped from outside
still leaves one.

The package is driven through its command line (``python -m livestock.cli``); the only in-process imports from
it are in :func:`package_api`. This orchestrating process itself uses the standard library only (and PyYAML in
one step), so that it can still write its report when the package, numpy or torch cannot be imported on the
machine, which is one of the things it checks.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

if TYPE_CHECKING:  # the workers import torch; this process stays on the standard library
    import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()


# ============================================================================ the package, as this script uses it
# Everything goes through the command line below, except the functions that the latency workers call
# in-process: if the package's module paths change, these imports are the only ones to repoint.


def package_api() -> SimpleNamespace:
    """The package functions the latency workers call in-process (every Python import from ``livestock``)."""
    from livestock.deploy.runtime import ort_session
    from livestock.model.engine import get_engine
    from livestock.model.yolov5.models import load_model, random_init_checkpoint
    from livestock.records import CLASS_NAMES

    ultralytics = get_engine("ultralytics")
    return SimpleNamespace(random_init_weights=random_init_checkpoint, load_checkpoint_model=load_model,
                           load_ultralytics_detector=ultralytics.load_detector,
                           export_ultralytics_onnx=ultralytics.export_onnx, ort_session=ort_session,
                           n_classes=len(CLASS_NAMES))


LIVESTOCK_CLI: tuple[str, ...] = ("-m", "livestock.cli")


# ============================================================================ what only a CUDA run does
# The dry run goes through the same steps and code at toy size on the CPU; these are the only things it leaves
# out, and every branch on them goes through runs_here().
CUDA_ONLY = frozenset({
    "train_ddp",  # the DDP step: YOLOv5's DDP path asserts one CUDA device per rank
    "nvidia_smi",  # GPU name / driver, utilisation and memory samples during training
    "fp16_latency",  # FP16 inference timing (half-precision convolutions are a GPU path)
    "cuda_sync",  # torch.cuda.synchronize around timed passes, and the CUDA memory counters
})


def runs_here(feature: str, cuda: bool) -> bool:
    """Whether a step or feature runs in this run: everything on CUDA, all but ``CUDA_ONLY`` on the CPU."""
    return cuda or feature not in CUDA_ONLY


# ============================================================================ wheels for the offline GPU machine
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
WHEELS_LIMIT_MIB = 64.0  # what one run may carry to the GPU machine: the working tree and the wheels together
# Import name -> the pinned wheel that provides it, for what that machine (Python 3.12, PyTorch + CUDA, the usual
# scientific packages, ONNX Runtime) is likely to lack. Versions are the ones this repository is tested with.
# Installed with --no-deps, and only for import names that are missing there. torch / torchvision never come
# from here: the machine's own CUDA build must stay.
GPU_WHEELS: dict[str, str] = {
    "pkg_resources": "setuptools==80.10.2",  # yolov5 imports pkg_resources, removed in setuptools 81
    "yolov5": "yolov5==7.0.14",
    "ultralytics": "ultralytics==8.4.190",  # yolov5 7.0.14 imports its requirement checks
    "roboflow": "roboflow==1.7.3",  # yolov5.train imports it at the top; the next three are its imports
    "dotenv": "python-dotenv==1.2.4",
    "requests_toolbelt": "requests-toolbelt==1.0.0",
    "pillow_avif": "pillow-avif-plugin==1.6.0",
    "seaborn": "seaborn==0.13.2",  # yolov5's plots
    # Ultralytics reads its results.csv with polars at every checkpoint (and plots with it). The version tested
    # here, 2.1.0, has a 51 MiB runtime wheel, over the limit with the rest; Ultralytics asks for >= 0.20, and
    # 0.20.31 (27 MiB) ran its training, results.csv reader and plots on this repository's data.
    "polars": "polars==0.20.31",
    "iterstrat": "iterative-stratification==0.1.9",  # livestock split
    "onnx": "onnx==1.23.2",  # livestock export; the exporter needs the next three too
    "onnxscript": "onnxscript==0.7.2",
    "onnx_ir": "onnx-ir==1.1.0",
    "ml_dtypes": "ml_dtypes==0.6.0",
    "google.protobuf": "protobuf==7.36.2",
}
# Import names the package needs that the machine is expected to have (too large to carry, e.g. OpenCV):
# the environment step reports them when they are missing.
EXPECTED_ON_MACHINE: tuple[str, ...] = (
    "torch", "torchvision", "numpy", "pandas", "scipy", "matplotlib", "cv2", "PIL", "yaml", "tqdm", "psutil",
    "requests", "onnxruntime",
)
VERSIONS_OF: tuple[str, ...] = (
    "torch", "torchvision", "numpy", "pandas", "opencv-python", "opencv-python-headless", "pillow", "setuptools",
    "yolov5", "ultralytics", "onnx", "onnxruntime", "onnxscript",
)


def checkout_bytes() -> int:
    """The size of what travels with the wheels: the checkout's tracked files and its untracked, not ignored ones
    (0 where git cannot list them)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    files = (REPO / name for name in listed.decode("utf-8", "replace").split("\0") if name)
    return sum(f.stat().st_size for f in files if f.is_file())


def download_wheels(dest: Path) -> int:
    """``make gpu-wheels``: download ``GPU_WHEELS`` for the GPU machine into ``dest``; fail when they and the
    checkout are over the 64 MiB a run can carry."""
    requirements = sorted(set(GPU_WHEELS.values()))
    bad = [r for r in requirements if re.match(r"(torch|torchvision|nvidia-)", r, re.IGNORECASE)]
    if bad:  # a wheel of these would replace the machine's CUDA build
        print(f"gpu-wheels: refusing {bad}: the GPU machine keeps its own PyTorch", file=sys.stderr)
        return 1
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    platforms = [arg for platform in GPU_PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
               "--python-version", GPU_PYTHON, *platforms, "--disable-pip-version-check", "-d", str(partial),
               *requirements]
    print("$ " + shlex.join(command), flush=True)
    rc = subprocess.call(command)
    if rc != 0:
        shutil.rmtree(partial, ignore_errors=True)
        return rc
    wheels = sorted(partial.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    tree = checkout_bytes()
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}")
    print(f"{total / 2**20:8.2f} MiB  total, {len(wheels)} wheels; with the checkout ({tree / 2**20:.2f} MiB) "
          f"{(total + tree) / 2**20:.2f} MiB (limit {WHEELS_LIMIT_MIB:g} MiB)")
    if total + tree > WHEELS_LIMIT_MIB * 2**20:
        shutil.rmtree(partial, ignore_errors=True)
        print(f"gpu-wheels: {total / 2**20:.2f} MiB of wheels and the {tree / 2**20:.2f} MiB checkout are over the "
              f"{WHEELS_LIMIT_MIB:g} MiB a run can carry", file=sys.stderr)
        return 1
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    print(f"wrote {dest}")
    return 0


# ============================================================================ settings
# livestock.model.ultralytics.compat.OFFLINE_ENVIRONMENT, for the commands that import Ultralytics before the
# package does (tests/test_gpu_check.py checks that the two agree).
ULTRALYTICS_OFFLINE = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}
REAL_TRAIN_IMAGES = 13_164  # the original entry's training set
REAL_EPOCHS = 20  # and its number of epochs
CONTEST_LIMIT_MB = 100.0  # the contest's weight-file limit (MB = 10**6 bytes)
GPU_BOUND_UTIL = 85.0  # mean utilization.gpu (%) over the timed batches at which the GPU, not the loader, limits
# CPU-vs-GPU detections: both devices detect at the contest's inference setting, and their boxes must pair up
# within these tolerances (the rule: compare_detections, AGREEMENT_RULE).
AGREE_CONF = 0.001
AGREE_IOU = 0.68
AGREE_MAX_DET = 300  # livestock detect's default
AGREE_BOX_PX = 2.0
AGREE_CONF_TOL = 0.02
AGREE_MIN_SHARE = 0.95  # NMS can keep a different one of two near-equal boxes; a few may go unpartnered
# A small tuning grid around the original entry's setting (conf 0.001, NMS IoU 0.68, scored as well): a short
# run's weak model keeps boxes at these confidences, so answer.csv is not empty, and its NMS stays within budget.
TUNE_CONFS = (0.001, 0.002, 0.005)
TUNE_IOUS = (0.5, 0.6, 0.68)
# Kept back from the budget: a command killed at its limit takes up to STACK_DUMP_S + KILL_GRACE_S + READER_JOIN_S
# more, and the last report is written after the last step.
REPORT_RESERVE_S = 10.0
KILL_GRACE_S = 3.0  # between SIGTERM and SIGKILL
STACK_DUMP_S = 2.0  # for a timed-out process to print its Python stacks (SIGABRT, faulthandler) before it is killed
READER_JOIN_S = 3.0  # waiting for the output of a killed process to drain
MIN_STEP_S = 5.0  # a step with less time than this left in the budget is skipped


@dataclass(frozen=True)
class Settings:
    """Everything a run's size depends on: ``REAL`` on the GPU machine, ``DRY_RUN`` on a CPU."""

    name: str
    model: str
    imgsz: int
    batch: int
    epochs: int  # the first epoch is warm-up; throughput is timed over the others
    workers: int
    hyp: str  # relative to the repository
    synth_shards: int  # parallel `livestock synth` processes, at most one per core
    train_images: int  # synthetic training images over all shards
    main_shard_train: int  # of those, in shard 0: the one that is split, so its validation fold is validated
    test_images: int  # shard 0's test images: tuning, answer.csv and its score
    image_scale: float  # 1.0: the real frame sizes, 1920x1080 and 1280x960
    epoch_val_images: int  # validation list of the timed training runs (kept short: it runs every epoch)
    detect_batch: int
    agree_images: int
    latency_batches: tuple[int, int]  # (latency batch, throughput batch)
    latency_warmup: tuple[int, int]
    latency_runs: tuple[int, int]
    budget_s: float
    # the Ultralytics steps: the same data, frames and training size, that engine's model from scratch
    ultralytics_model: str = "yolo11n"
    ultralytics_batch: int = 16
    ultralytics_epochs: int = 3  # the first epoch is warm-up; the epoch time is taken over the others
    ultralytics_hyp: str = "hyp/ultralytics_scratch_cpu.yaml"  # Ultralytics' own defaults
    onnx_cpu_passes: tuple[int, int] = (1, 3)  # (warm-up, timed) passes of the ONNX file on the CPU
    limits_s: Mapping[str, float] = field(default_factory=dict)


REAL = Settings(
    name="gpu", model="yolov5m6", imgsz=1280, batch=10, epochs=3, workers=8, hyp="hyp/experiment_hyp_v1.yaml",
    synth_shards=16, train_images=400, main_shard_train=96, test_images=16, image_scale=1.0, epoch_val_images=8,
    detect_batch=8, agree_images=4,
    latency_batches=(1, 16), latency_warmup=(10, 5), latency_runs=(50, 20), budget_s=480.0,
    # The engine's contest-scale model, as YOLOv5m6 is the original's: YOLO11m (20 M parameters, a 40 MB FP16
    # checkpoint) with YOLOv5m6's batch. On the CPU its 1280 px ONNX pass takes a good part of a second: few passes.
    ultralytics_model="yolo11m", ultralytics_batch=10, onnx_cpu_passes=(2, 8),
    # Estimates, not yet measured on a GPU: the YOLOv5 steps' limits were cut by about a fifth (from 470 s in all)
    # to make room for the Ultralytics steps within the same budget, and the two extra runs (cache, DDP) by 15 s
    # more for the m-size Ultralytics model.
    limits_s={"environment": 35, "synth": 20, "prepare": 20, "train": 55, "train_cache_ram": 42, "train_ddp": 43,
              "val": 20, "inference": 40, "agreement": 25, "latency": 25, "export": 45, "ultralytics": 70,
              "ultralytics_latency": 30},
)
DRY_RUN = Settings(
    name="dry-run", model="yolov5n", imgsz=64, batch=8, epochs=2, workers=2, hyp="hyp/experiment_hyp_v1.yaml",
    synth_shards=2, train_images=48, main_shard_train=32, test_images=6, image_scale=0.1, epoch_val_images=4,
    detect_batch=4, agree_images=3,
    latency_batches=(1, 16), latency_warmup=(2, 1), latency_runs=(5, 3), budget_s=3200.0,
    ultralytics_batch=8, ultralytics_epochs=2,
    # About 2 minutes in all on 2 free cores, and half a minute more for the Ultralytics steps; the limits only
    # catch a hang, so they leave room for cores shared with other work (a step can take ten times longer then).
    # The DDP step is CUDA only: never run here.
    limits_s={"environment": 300, "synth": 200, "prepare": 200, "train": 400, "train_cache_ram": 400,
              "train_ddp": 100, "val": 200, "inference": 250, "agreement": 200, "latency": 200, "export": 250,
              "ultralytics": 300, "ultralytics_latency": 150},
)


def check_settings(settings: Settings) -> None:
    """Every step has a limit, and the limits fit in the budget with room for the last report."""
    names = [s.name for s in STEPS]
    missing = [n for n in names if n not in settings.limits_s]
    if missing or set(settings.limits_s) - set(names):
        raise ValueError(f"{settings.name}: step limits {sorted(settings.limits_s)} do not match the steps {names}")
    total = sum(settings.limits_s.values())
    if total + REPORT_RESERVE_S > settings.budget_s:
        raise ValueError(f"{settings.name}: step limits add up to {total:g} s, over the {settings.budget_s:g} s budget")


def extrapolate(images_per_s: float) -> dict:
    """Training time of the original's run (13,164 images, 20 epochs) at a measured training throughput."""
    epoch_s = REAL_TRAIN_IMAGES / images_per_s
    return {"train_images": REAL_TRAIN_IMAGES, "epochs": REAL_EPOCHS, "epoch_s": epoch_s,
            "total_s": REAL_EPOCHS * epoch_s, "total_h": REAL_EPOCHS * epoch_s / 3600,
            "covers": "the training batches only; per-epoch validation and checkpoint writes come on top "
                      "(between_epochs_s)"}


# ============================================================================ subprocesses
LOG_CAP_BYTES = 4 * 2**20  # per step log; a longer log keeps its beginning and the step keeps its tail
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RANK_PREFIX = re.compile(r"^\[(?:default)?rank\d+\]:\s?")  # torch.distributed.run may tag a rank's lines


class StepFailed(Exception):
    """A command of the step failed, or a measurement fell outside what the step checks."""

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail


class StepTimeout(StepFailed):
    """A command ran past the step's time limit and was killed."""


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int | None
    seconds: float
    timed_out: bool
    output: str  # the last 256 KiB of output, carriage returns (progress bars) as line breaks
    diagnosis: str = ""  # for a time-out: what the machine and the process were doing when the limit came

    def tail(self, lines: int = 30) -> str:
        """The last non-empty output lines, for a report."""
        kept = [ln for ln in self.output.splitlines() if ln.strip()]
        return "\n".join(kept[-lines:])


class Command:
    """One subprocess in its own process group (its workers and ranks too), its output streamed to a log and,
    fragment by fragment (progress bars redraw with carriage returns), to an optional listener with the time the
    fragment arrived."""

    def __init__(self, argv: Sequence[str | os.PathLike], log: Path, env: Mapping[str, str],
                 listener: Callable[[float, str], None] | None = None) -> None:
        self.argv = [str(a) for a in argv]
        self.log = log
        self.env = dict(env)
        self.listener = listener
        self._output = ""
        self._logged = 0
        self._log_lock = threading.Lock()  # the reader thread and wait() both write; wait() closes

    def start(self) -> "Command":
        """Start the process and the thread that reads its output."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log, "a", encoding="utf-8")
        self._write_log(f"\n$ {shlex.join(self.argv)}\n")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=REPO, env=self.env, start_new_session=True,
                                     preexec_fn=_no_core_dumps)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _write_log(self, text: str) -> None:
        with self._log_lock:
            if self._log.closed or self._logged >= LOG_CAP_BYTES:
                return
            self._log.write(text)
            self._log.flush()
            self._logged += len(text.encode("utf-8"))
            if self._logged >= LOG_CAP_BYTES:
                self._log.write("\n[log cut here]\n")

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        partial = ""
        stream = self.proc.stdout
        assert stream is not None
        while chunk := stream.read1(1 << 16):
            arrived = time.monotonic()
            text = decoder.decode(chunk)
            self._write_log(text)
            self._output = (self._output + text.replace("\r", "\n"))[-(1 << 18):]
            if self.listener is not None:
                parts = re.split(r"[\r\n]", partial + text)
                partial = parts.pop()
                for part in parts:
                    if part.strip():
                        self.listener(arrived, part)
        if self.listener is not None and partial.strip():
            self.listener(time.monotonic(), partial)

    def _signal_group(self, sig: int) -> bool:
        try:
            os.killpg(self.proc.pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def _signal_tree(self, pids: Sequence[int], sig: int) -> None:
        self._signal_group(sig)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self, pids: Sequence[int]) -> None:
        """Terminate the whole process group and ``pids`` (the command's tree), then kill what is left of them."""
        self._signal_tree(pids, signal.SIGTERM)
        try:
            self.proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        self._signal_tree(pids, signal.SIGKILL)
        self.proc.wait()

    def diagnose(self, deadline: float, pids: Sequence[int]) -> str:
        """What a time-out looked like, in one line, for telling a hang from a starved or stalled machine: how late
        the wait itself came back (seconds late: the whole machine stalled, this process too), the load and free
        memory, and each of ``pids``' state and CPU seconds (sleeping with few CPU seconds: blocked)."""
        parts = [f"the wait came back {time.monotonic() - deadline:.1f} s after the limit"]
        try:
            load = os.getloadavg()
            parts.append(f"load {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)")
        except OSError:
            pass
        meminfo = _read_text("/proc/meminfo")
        avail = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.M)
        if avail:
            parts.append(f"{int(avail.group(1)) / 2**20:.1f} GiB memory available")
        parts += [_process_line(pid) for pid in pids]
        return "; ".join(parts)

    def dump_stacks(self, ranks: Sequence[int]) -> None:
        """SIGABRT to the main process and to each of ``ranks``: with faulthandler on (PYTHONFAULTHANDLER in the
        environment) each prints every thread's Python stack into the log before it dies, which says where a hang
        hung."""
        until = time.monotonic() + STACK_DUMP_S
        # One at a time, each given until it has died (within the shared STACK_DUMP_S) before the next: stacks
        # printed at the same moment interleave in the log, and stop() must not kill one mid-stack.
        for pid in [self.proc.pid, *ranks]:
            try:
                os.kill(pid, signal.SIGABRT)
            except (ProcessLookupError, PermissionError):
                continue
            while _alive(pid) and time.monotonic() < until:
                time.sleep(0.05)

    def wait(self, deadline: float) -> CommandResult:
        """Wait until the process ends or ``deadline`` (monotonic time) passes, then stop what is left of it."""
        timed_out, diagnosis = False, ""
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            table = _process_table()  # one snapshot, before any signal: once the command is gone, ranks re-parent
            tree = _tree_pids(self.proc.pid, table)
            # Leaders of sessions of their own below the command: torch.distributed.run's ranks (loader workers
            # share their parent's session).
            ranks = [pid for pid in tree if pid != self.proc.pid and table[pid][2] == pid]
            diagnosis = self.diagnose(deadline, tree)
            self._write_log(f"[time limit: {diagnosis}]\n")
            self.dump_stacks(ranks)
            self.stop(tree)
        # Data-loader workers or ranks that outlived their parent still hold the pipe: they belong to this run.
        self._signal_group(signal.SIGKILL)
        self._reader.join(timeout=READER_JOIN_S)
        seconds = time.monotonic() - self.t0
        self._write_log(f"[exit {self.proc.returncode}{', killed at the time limit' if timed_out else ''}, "
                        f"{seconds:.1f} s]\n")
        with self._log_lock:
            self._log.close()
        return CommandResult(self.argv, None if timed_out else self.proc.returncode, seconds, timed_out, self._output,
                             diagnosis)


def _no_core_dumps() -> None:
    """In the child before it runs: no core file when the time-out's SIGABRT ends it (a training process's core
    would be gigabytes on the GPU machine's disk, written inside the step's time)."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent, process group, session) of every live process (Linux /proc)."""
    table = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _read_text(str(entry / "stat")).rpartition(")")[2].split()
        if len(fields) > 3:  # after the name: state, ppid, pgrp, session
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def _tree_pids(root: int, table: Mapping[int, tuple[int, int, int]]) -> list[int]:
    """The live processes of a command (``table``: :func:`_process_table`): its process group (the command and its
    data-loader workers) and every descendant. torch.distributed.run starts each rank in a session of its own,
    outside the group, so a signal to the group alone would leave the ranks training on the GPU through the steps
    after a time-out."""
    tree = {pid for pid, (_, group, _) in table.items() if group == root}
    if root in table:
        tree.add(root)
    grown = True
    while grown:
        children = {pid for pid, (parent, _, _) in table.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return sorted(tree)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a dead process waiting to be reaped does not)."""
    fields = _read_text(f"/proc/{pid}/stat").rpartition(")")[2].split()
    return bool(fields) and fields[0] != "Z"



def _process_line(pid: int) -> str:
    """``pid N <command>: state S, T CPU s, in <kernel wait channel>``."""
    fields = _read_text(f"/proc/{pid}/stat").rpartition(")")[2].split()
    if len(fields) < 13:
        return f"pid {pid}: gone"
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    argv = _read_text(f"/proc/{pid}/cmdline").split("\0")
    name = " ".join(a for a in argv[:4] if a)[:80]
    wchan = _read_text(f"/proc/{pid}/wchan").strip()
    where = f", in {wchan}" if wchan not in ("", "0") else ""
    return f"pid {pid} {name}: state {fields[0]}, {cpu_s:.1f} CPU s{where}"


# ============================================================================ the run's context
@dataclass
class Context:
    """What the steps share: settings, folders, the subprocess environment, the device, and the files that
    earlier steps made for later ones."""

    settings: Settings
    dry_run: bool
    out: Path  # the report (and the step logs): comes back from the GPU machine
    work: Path  # this run's data and training runs (wiped at the start)
    site: Path  # wheels installed on the machine, kept between runs
    wheels: Path
    env: dict[str, str]
    ready: bool = False  # the environment step found torch (and, for a GPU run, CUDA)
    cuda: bool = False
    device: str = "cpu"  # livestock's device string
    artifacts: dict[str, Path] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)  # step name -> its results, as recorded so far
    step: str = ""
    step_deadline: float = 0.0

    @property
    def python(self) -> str:
        """The interpreter every subprocess runs with: the one running this script."""
        return sys.executable

    def begin(self, step: str, limit_s: float) -> None:
        """Start ``step`` with ``limit_s`` seconds for all of its commands."""
        self.step = step
        self.step_deadline = time.monotonic() + limit_s

    def log_path(self) -> Path:
        """The current step's log file in the output folder."""
        return self.out / "logs" / f"{self.step}.log"

    def run(self, argv: Sequence[str | os.PathLike], listener: Callable[[float, str], None] | None = None
            ) -> CommandResult:
        """Run one command within the step's time; a time-out or a non-zero exit ends the step."""
        return self.run_parallel([argv], listener)[0]

    def run_parallel(self, argvs: Sequence[Sequence[str | os.PathLike]],
                     listener: Callable[[float, str], None] | None = None) -> list[CommandResult]:
        """Run commands side by side within the step's time; the first failure ends the step."""
        commands = [Command(argv, self.log_path(), self.env, listener).start() for argv in argvs]
        results = [c.wait(self.step_deadline) for c in commands]
        for r in results:
            if r.timed_out:
                raise StepTimeout(f"killed after {r.seconds:.0f} s at the step's time limit: {_short(r.argv)}",
                                  f"{r.diagnosis}\n{r.tail(60)}")
        for r in results:
            if r.returncode != 0:
                raise StepFailed(f"exit {r.returncode}: {_short(r.argv)}", r.tail())
        return results

    def livestock(self, *args: str | os.PathLike | float,
                  listener: Callable[[float, str], None] | None = None) -> CommandResult:
        """``python -m livestock.cli ARGS``."""
        return self.run([self.python, *LIVESTOCK_CLI, *map(str, args)], listener)

    def fresh(self, *parts: str) -> Path:
        """An empty folder under the work folder."""
        path = self.work.joinpath(*parts)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


def _short(argv: Sequence[str]) -> str:
    text = shlex.join(argv)
    return text if len(text) <= 300 else text[:297] + "..."


def command_env(site: Path) -> dict[str, str]:
    """The environment of every command the check runs."""
    env = dict(os.environ)
    # The package from this checkout, then the wheels installed for this machine, then whatever was there.
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), str(site), env.get("PYTHONPATH", "")) if x)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a crash, or the SIGABRT sent at a time-out, prints every thread's stack
    # The package sets these itself before it imports Ultralytics (livestock.model.ultralytics.compat); the probe
    # imports ultralytics and yolov5 bare, where Ultralytics would look up two DNS names on a machine without a
    # network and write a settings file into the home folder.
    for key, value in ULTRALYTICS_OFFLINE.items():
        env.setdefault(key, value)
    env.setdefault("YOLO_CONFIG_DIR", str(site.parent / "ultralytics_config"))
    return env


def write_atomic(path: Path, text: str) -> Path:
    """Write through a temporary file in the same folder and a rename: a reader never sees half a report."""
    # A local helper rather than livestock.records.atomic_write_text: this process stays on the standard
    # library (see the module docstring), and the package's module paths are moving.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _worker(ctx: Context, worker: str, result: Path, *extra: str) -> dict:
    """Run one of this script's workers (``--worker``) in a subprocess and read the JSON it wrote."""
    result.unlink(missing_ok=True)
    mode = ["--dry-run"] if ctx.dry_run else []
    ctx.run([ctx.python, str(SCRIPT), "--worker", worker, "--result", str(result), *mode, *extra])
    return json.loads(result.read_text(encoding="utf-8"))


# ============================================================================ reading YOLOv5's training output
# A training progress line: epoch/last epoch, GPU memory (GB reserved), losses, instances, size, then the bar
# "| n/total [". YOLOv5 redraws it once per batch, after the optimizer step and a loss .item() (a CUDA sync).
PROGRESS = re.compile(r"^\s*(\d+)/(\d+)\s+([0-9.e+]+)G\s.*?\|\s*(\d+)/(\d+)\s*\[")


@dataclass
class TrainProgress:
    """YOLOv5's training progress, timed as it arrives: throughput, reserved GPU memory, the AMP decision."""

    batch: int
    points: list[tuple[float, int, int, int, float]] = field(default_factory=list)  # (t, epoch, n, total, mem GB)
    amp_lines: list[str] = field(default_factory=list)
    run_folder_lines: list[str] = field(default_factory=list)

    def feed(self, arrived: float, fragment: str) -> None:
        """Take one output fragment (a line or a progress-bar redraw) that arrived at ``arrived``."""
        text = RANK_PREFIX.sub("", ANSI.sub("", fragment))
        if "AMP: " in text:
            self.amp_lines.append(text.strip())
        if text.startswith("run folder: "):  # livestock train's summary, printed by rank 0 only
            self.run_folder_lines.append(text[len("run folder: "):].strip())
        m = PROGRESS.match(text)
        if m:
            self.points.append((arrived, int(m.group(1)), int(m.group(4)), int(m.group(5)), float(m.group(3))))

    def timed(self) -> dict[int, list[tuple[float, int]]]:
        """Per epoch after the first, the (time, batch index) points between full batches: a point with index
        n is drawn after batch n, and the last batch of an epoch may be short, so points run up to total - 2."""
        by_epoch: dict[int, list[tuple[float, int]]] = {}
        for t, epoch, n, total, _ in self.points:
            if epoch >= 1 and n <= total - 2:
                by_epoch.setdefault(epoch, []).append((t, n))
        return {e: pts for e, pts in sorted(by_epoch.items()) if len(pts) >= 2}

    def throughput(self) -> dict:
        """Training images per second over the timed batches (``images_per_s`` None when too few were seen)."""
        timed = self.timed()
        images = sum((pts[-1][1] - pts[0][1]) * self.batch for pts in timed.values())
        seconds = sum(pts[-1][0] - pts[0][0] for pts in timed.values())
        window = (min(p[0][0] for p in timed.values()), max(p[-1][0] for p in timed.values())) if timed else None
        return {"images_per_s": images / seconds if images and seconds > 0 else None, "timed_images": images,
                "timed_seconds": seconds, "timed_epochs": list(timed), "window": window}

    def between_epochs_s(self) -> list[float]:
        """From the last progress line of an epoch to the first of the next: per-epoch validation, checkpoint
        writes and one batch."""
        last: dict[int, float] = {}
        first: dict[int, float] = {}
        for t, epoch, *_ in self.points:
            first.setdefault(epoch, t)
            last[epoch] = t
        return [first[e + 1] - last[e] for e in sorted(last) if e + 1 in first]

    def peak_reserved_gb(self) -> float | None:
        """The largest GPU memory YOLOv5 reported as reserved (its GPU_mem column; 0 on the CPU)."""
        return max((p[4] for p in self.points), default=None)

    def amp(self) -> bool | None:
        """AMP as the training log states it: our offline check's ``AMP: on`` / ``AMP: off``, or YOLOv5's own
        ``checks passed`` / ``disabling Automatic Mixed Precision``; None when the log says nothing."""
        for line in reversed(self.amp_lines):
            if "disabling" in line or re.search(r"AMP: off\b", line):
                return False
            if re.search(r"AMP: (on\b|checks passed)", line):
                return True
        return None


class GpuSampler:
    """``nvidia-smi`` utilisation and memory samples every 500 ms while a step runs, timed as they arrive."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (t, utilization.gpu %, memory.used MiB)
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "GpuSampler":
        # Each sample is timed as it arrives; stdbuf keeps a C program's stdio from holding lines back in a 4 KiB
        # pipe buffer, in case nvidia-smi does not flush each one itself (it runs in exec: same process).
        line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        argv = [*line_buffered, "nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used",
                "--format=csv,noheader,nounits", "-lms", "500"]
        try:
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                          start_new_session=True)
        except OSError as e:
            self.error = f"nvidia-smi: {e}"
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            fields = [f.strip() for f in line.split(",")]
            if len(fields) == 3 and fields[0] == "0":  # GPU 0: the one every step uses
                try:
                    self.samples.append((time.monotonic(), float(fields[1]), float(fields[2])))
                except ValueError:
                    continue

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self._proc.pid, sig)
                    self._proc.wait(timeout=5)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
            self._thread.join(timeout=5)

    def stats(self, window: tuple[float, float] | None) -> dict:
        """Utilisation over ``window`` (the timed batches), memory over the whole step."""
        if self.error:
            return {"error": self.error}
        inside = [s for s in self.samples if window and window[0] <= s[0] <= window[1]]
        return {
            "samples": len(self.samples), "samples_in_timed_batches": len(inside),
            "util_mean_pct": statistics.fmean(s[1] for s in inside) if inside else None,
            "util_median_pct": statistics.median(s[1] for s in inside) if inside else None,
            "memory_used_peak_mib": max((s[2] for s in self.samples), default=None),
            "memory_used_first_mib": self.samples[0][2] if self.samples else None,
        }


# ============================================================================ CPU-vs-GPU detections
def read_detections(path: Path) -> dict[str, list[tuple[str, float, float, float, float, float]]]:
    """A ``livestock detect`` CSV as image id -> [(label, conf, x1, y1, x2, y2)] (images without boxes: [])."""
    out: dict[str, list[tuple[str, float, float, float, float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            boxes = out.setdefault(row["image_id"], [])
            if row["label"].strip():
                boxes.append((row["label"], float(row["conf"]), float(row["x1"]), float(row["y1"]),
                              float(row["x2"]), float(row["y2"])))
    return out


def compare_detections(reference: Mapping[str, list], other: Mapping[str, list], conf: float = AGREE_CONF,
                       box_px: float = AGREE_BOX_PX, conf_tol: float = AGREE_CONF_TOL,
                       max_det: int = AGREE_MAX_DET, min_share: float = AGREE_MIN_SHARE) -> dict:
    """Whether two devices' detections of the same images agree (:data:`AGREEMENT_RULE`).

    Each box of either side is paired with the box of the same class on the other side whose corners are
    closest (largest coordinate difference); the pair matches when that difference is within ``box_px`` and the
    confidences are within ``conf_tol``. A box without a match counts against agreement, unless its confidence is
    within ``conf_tol`` of the cut (the threshold ``conf``, or an image's lowest kept confidence where it reached
    ``max_det`` boxes): its twin may have fallen just under the cut on the other device.
    """
    matched = unmatched = excused = 0
    box_diffs: list[float] = []
    conf_diffs: list[float] = []
    unmatched_examples: list[str] = []
    for image in sorted(set(reference) | set(other)):
        a, b = reference.get(image, []), other.get(image, [])
        cut = conf
        for side in (a, b):
            if len(side) >= max_det:
                cut = max(cut, min(box[1] for box in side))
        for mine, theirs in ((a, b), (b, a)):
            for label, c, *xyxy in mine:
                partners = [(max(abs(p - q) for p, q in zip(xyxy, other_xyxy)), abs(c - other_c))
                            for other_label, other_c, *other_xyxy in theirs if other_label == label]
                best = min(partners, default=None)
                if best is not None and best[0] <= box_px and best[1] <= conf_tol:
                    matched += 1
                    box_diffs.append(best[0])
                    conf_diffs.append(best[1])
                elif c < cut + conf_tol:
                    excused += 1
                else:
                    unmatched += 1
                    if len(unmatched_examples) < 5:
                        unmatched_examples.append(f"{image} {label} conf {c:.4f} box {[round(v, 1) for v in xyxy]}")
    compared = matched + unmatched
    share = matched / compared if compared else None
    return {
        "images": len(set(reference) | set(other)),
        "boxes": {"reference": sum(map(len, reference.values())), "other": sum(map(len, other.values()))},
        "compared": compared, "matched": matched, "unmatched": unmatched, "excused_near_cut": excused,
        "matched_share": share, "max_box_diff_px": max(box_diffs, default=None),
        "max_conf_diff": max(conf_diffs, default=None), "unmatched_examples": unmatched_examples,
        "agree": share is not None and share >= min_share,
    }


AGREEMENT_RULE = (f"detect at conf {AGREE_CONF:g}, NMS IoU {AGREE_IOU:g}, max_det {AGREE_MAX_DET} on both devices "
                  f"(FP32 weights and inputs; on a GPU with PyTorch's default TF32 convolutions, as a user's "
                  f"detection runs); a box matches when the other device has a box of the same class with every corner "
                  f"within {AGREE_BOX_PX:g} px and a confidence within {AGREE_CONF_TOL:g}; a box without a match "
                  f"counts against agreement unless it lies within {AGREE_CONF_TOL:g} of the cut (conf, or an "
                  f"image's lowest kept confidence where max_det was reached); agree when at least "
                  f"{AGREE_MIN_SHARE:.0%} of the boxes that count match")


# ============================================================================ the steps
def step_environment(ctx: Context, rec: dict) -> None:
    """Import what the package needs, install from the wheel folder what is missing, find the GPU."""
    probe_file = ctx.work / "probe.json"
    probe = _worker(ctx, "probe", probe_file)
    missing = [m for m in GPU_WHEELS if not probe["present"].get(m)]
    rec["missing_before"] = missing
    rec["installed"] = []
    if missing:
        if not ctx.wheels.is_dir():
            raise StepFailed(f"not importable here: {', '.join(missing)}; no wheel folder {ctx.wheels} "
                             "(`make gpu-wheels` on a networked machine, then bring gpu_wheels/ along)")
        requirements = sorted({GPU_WHEELS[m] for m in missing})
        # --target: into this run's own folder, not the machine's site-packages (which also keeps pip's
        # externally-managed-environment guard out of the way); the subprocesses find it on PYTHONPATH.
        ctx.run([ctx.python, "-m", "pip", "install", "--no-index", "--find-links", str(ctx.wheels), "--no-deps",
                 "--target", str(ctx.site), "--upgrade", "--disable-pip-version-check", "--no-input", "--quiet",
                 *requirements])
        rec["installed"] = requirements
        probe = _worker(ctx, "probe", probe_file)
    rec.update({k: probe[k] for k in ("python", "platform", "cpu_count", "torch", "versions")})
    rec["import_errors"] = probe["import_errors"]
    if "torch" in probe["import_errors"]:
        raise StepFailed(f"cannot import torch: {probe['import_errors']['torch']}")
    if not ctx.dry_run:
        if not probe["torch"].get("cuda_available"):
            raise StepFailed("CUDA is not available to torch here (on a CPU machine run the dry run: "
                             "make gpu-check DRY_RUN=1)")
        ctx.cuda, ctx.device = True, "0"
    # The device is known: the other steps run from here on, even if a module below fails to import (the steps
    # that need it fail with their own message, the others still measure).
    ctx.ready = True
    if runs_here("nvidia_smi", ctx.cuda):
        out = ctx.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
        rec["nvidia_smi"] = out.output.strip()
    if probe["import_errors"]:
        raise StepFailed("cannot import: " + "; ".join(f"{m} ({e})" for m, e in probe["import_errors"].items()))
    gpu = probe["torch"].get("device_name") or "CPU"
    rec["summary"] = (f"Python {probe['python']}, torch {probe['torch'].get('version')}, "
                      f"CUDA {probe['torch'].get('cuda')}, {gpu}; installed {len(rec['installed'])} wheels")


def _shard_sizes(settings: Settings, shards: int) -> list[int]:
    rest = settings.train_images - settings.main_shard_train
    if shards == 1:
        return [settings.train_images]
    others = [rest // (shards - 1) + (1 if k < rest % (shards - 1) else 0) for k in range(shards - 1)]
    return [settings.main_shard_train, *others]


def step_synth(ctx: Context, rec: dict) -> None:
    """Synthetic AI Hub-format zips at full frame size, in parallel shards (one `livestock synth` per core)."""
    s = ctx.settings
    # The generator has no parallel option; independent shards (own seed, own folder) use the cores instead.
    shards = max(1, min(s.synth_shards, os.cpu_count() or 1))
    sizes = _shard_sizes(s, shards)
    root = ctx.fresh("synth")
    argvs = []
    for k, n_train in enumerate(sizes):
        argvs.append([ctx.python, *LIVESTOCK_CLI, "synth", "--out", root / str(k) / "data",
                      "--test-out", root / str(k) / "test", "--n-train", n_train,
                      "--n-test", s.test_images if k == 0 else 0, "--seed", k, "--image-scale", s.image_scale,
                      "--quiet"])
    t0 = time.monotonic()
    ctx.run_parallel(argvs)
    seconds = time.monotonic() - t0
    ctx.artifacts["synth"] = root
    rec.update(shards=shards, train_images_per_shard=sizes, test_images=s.test_images, image_scale=s.image_scale,
               seconds=seconds, images_per_s=(sum(sizes) + s.test_images) / seconds)
    rec["summary"] = f"{sum(sizes)} training + {s.test_images} test frames in {shards} shards, {seconds:.1f} s"


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def step_prepare(ctx: Context, rec: dict) -> None:
    """Prepare every shard and the test zips, split shard 0, and write the timed runs' dataset yaml."""
    import yaml  # the package's own dependency; this step cannot run without it anyway

    s = ctx.settings
    synth = ctx.artifacts["synth"]
    shards = sorted(int(p.name) for p in synth.iterdir() if p.name.isdigit())
    prepared = ctx.fresh("prepared")
    argvs = [[ctx.python, *LIVESTOCK_CLI, "prepare", synth / str(k) / "data", "--out", prepared / str(k), "--quiet"]
             for k in shards]
    test_dir = ctx.work / "prepared_test"
    shutil.rmtree(test_dir, ignore_errors=True)
    argvs.append([ctx.python, *LIVESTOCK_CLI, "prepare", synth / "0" / "test", "--images-only", "--out", test_dir,
                  "--quiet"])
    ctx.run_parallel(argvs)
    splits = ctx.fresh("splits")
    ctx.livestock("split", prepared / "0", "--out", splits, "--sets", "multilabel")
    split_yaml = splits / "multilabel" / "data.yaml"
    train_lists = [splits / "multilabel" / "train.txt", *(prepared / str(k) / "all.txt" for k in shards[1:])]
    val_lines = _lines(splits / "multilabel" / "val.txt")
    epoch_val = write_atomic(ctx.work / "epoch_val.txt", "\n".join(val_lines[: s.epoch_val_images]) + "\n")
    test_images = _lines(test_dir / "all.txt")
    agree = write_atomic(ctx.work / "agree_images.txt", "\n".join(test_images[: s.agree_images]) + "\n")
    data = yaml.safe_load(split_yaml.read_text(encoding="utf-8"))
    data.update(path=str(ctx.work), train=[str(p) for p in train_lists], val=str(epoch_val))
    train_yaml = write_atomic(ctx.work / "train_data.yaml", yaml.safe_dump(data, sort_keys=False))
    ctx.artifacts.update(split_yaml=split_yaml, train_yaml=train_yaml, agree_images=agree,
                         test_records=test_dir / "records.jsonl", test_answer=synth / "0" / "test" / "answer.csv")
    train_images = sum(len(_lines(p)) for p in train_lists)
    rec.update(train_images=train_images, val_images=len(val_lines), epoch_val_images=min(len(val_lines),
               s.epoch_val_images), test_images=len(test_images), train_lists=[str(p) for p in train_lists])
    rec["summary"] = (f"{train_images} training images ({len(train_lists)} lists), {len(val_lines)} in the "
                      f"validation fold, {len(test_images)} test images")


def train_step(cache: str | None = None, ddp: bool = False) -> Callable[[Context, dict], None]:
    """A timed training run of the settings' model: plain, with ``--cache``, or through torch.distributed.run."""

    def run(ctx: Context, rec: dict) -> None:
        s = ctx.settings
        project = ctx.fresh("train", ctx.step)
        args = ["train", "--data", ctx.artifacts["train_yaml"], "--model", s.model, "--weights", "",
                "--hyp", REPO / s.hyp, "--img", s.imgsz, "--batch-size", s.batch, "--epochs", s.epochs,
                "--device", ctx.device, "--workers", s.workers, "--project", project, "--name", "exp",
                "--verbose", *(["--cache", cache] if cache else [])]
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"] if ddp else []
        argv = [ctx.python, *launcher, *LIVESTOCK_CLI, *map(str, args)]
        rec.update(model=s.model, imgsz=s.imgsz, batch=s.batch, epochs=s.epochs, workers=s.workers, cache=cache,
                   ddp=ddp, hyp=s.hyp, train_images=ctx.results["prepare"].get("train_images"),
                   command=shlex.join(argv))
        progress = TrainProgress(batch=s.batch)
        sampler = GpuSampler() if runs_here("nvidia_smi", ctx.cuda) else None
        t0 = time.monotonic()
        try:
            with sampler or contextlib.nullcontext():
                ctx.run(argv, progress.feed)
        finally:  # a run cut short at its time limit still reports what it measured
            rec["seconds"] = time.monotonic() - t0
            _record_training(ctx, rec, progress, sampler, project)
        if ddp and (len(rec["run_folders"]) != 1 or len(progress.run_folder_lines) != 1):
            raise StepFailed(f"expected one run folder and one rank-0 summary, found folders {rec['run_folders']} "
                             f"and {len(progress.run_folder_lines)} summaries")
        if rec["images_per_s"] is None:
            raise StepFailed("too few training progress lines after the first epoch to time the batches")
        weights = project / "exp" / "weights" / "best.pt"
        if not weights.is_file():
            raise StepFailed(f"no {weights} after training")
        # The later steps use the first training run that succeeded (normally the plain one).
        ctx.artifacts.setdefault("weights", weights)

    return run


def _record_training(ctx: Context, rec: dict, progress: TrainProgress, sampler: GpuSampler | None,
                     project: Path) -> None:
    thr = progress.throughput()
    ips = thr["images_per_s"]
    rec.update(images_per_s=ips, timed_images=thr["timed_images"], timed_seconds=thr["timed_seconds"],
               timed_epochs=thr["timed_epochs"], between_epochs_s=progress.between_epochs_s(),
               extrapolated=extrapolate(ips) if ips else None, peak_reserved_gb=progress.peak_reserved_gb(),
               amp=progress.amp(), amp_log=progress.amp_lines[-1] if progress.amp_lines else None,
               run_folders=sorted(p.name for p in project.iterdir() if p.is_dir()) if project.is_dir() else [])
    gpu = sampler.stats(thr["window"]) if sampler is not None else None
    rec["gpu"] = gpu
    util = gpu.get("util_mean_pct") if gpu else None
    rec["bottleneck"] = None if util is None else ("GPU" if util >= GPU_BOUND_UTIL else "data loader")
    rec["bottleneck_rule"] = (f"GPU when the mean utilization.gpu over the timed batches is at least "
                              f"{GPU_BOUND_UTIL:g} %, else the data loader (the GPU waits for batches)")
    base = ctx.results.get("train", {}).get("images_per_s")
    if ctx.step != "train" and ips and base:
        rec["speedup_vs_train"] = ips / base
    if ips:
        ext = rec["extrapolated"]
        rec["summary"] = (f"{ips:.1f} images/s -> {ext['epoch_s']:.0f} s per {REAL_TRAIN_IMAGES:,}-image epoch, "
                          f"{ext['total_h']:.2f} h for {REAL_EPOCHS} epochs; AMP {_fmt(rec['amp'])}"
                          + (f"; bottleneck {rec['bottleneck']}" if rec["bottleneck"] else ""))


def _weights(ctx: Context) -> Path:
    ctx.results[ctx.step]["weights"] = str(ctx.artifacts["weights"])
    return ctx.artifacts["weights"]


def _val_table(ctx: Context, weights: Path, project: Path) -> tuple[float, dict[str, dict[str, str]]]:
    """``livestock val`` of ``weights`` (the engine that wrote them) on shard 0's validation fold at the training
    size: its seconds, start-up included, and its per-class table (class -> row of per_class.csv)."""
    s = ctx.settings
    t0 = time.monotonic()
    ctx.livestock("val", "--weights", weights, "--data", ctx.artifacts["split_yaml"], "--img", s.imgsz,
                  "--batch-size", 2 * s.batch, "--device", ctx.device, "--workers", s.workers,
                  "--project", project, "--name", "exp", "--exist-ok")
    seconds = time.monotonic() - t0
    with open(project / "exp" / "per_class.csv", newline="", encoding="utf-8") as f:
        return seconds, {row["class"]: row for row in csv.DictReader(f)}


def _metrics(table: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, float]]:
    return {c: {k: float(v) for k, v in row.items() if k not in ("class", "images", "instances")}
            for c, row in table.items()}


def step_val(ctx: Context, rec: dict) -> None:
    """``livestock val`` of the trained weights on shard 0's validation fold at the training size."""
    s = ctx.settings
    seconds, table = _val_table(ctx, _weights(ctx), ctx.fresh("val"))
    overall = table["all"]
    rec.update(seconds=seconds, imgsz=s.imgsz, images=int(overall["images"]), instances=int(overall["instances"]),
               metrics=_metrics(table))
    rec["summary"] = (f"{rec['images']} images at {s.imgsz} px in {seconds:.1f} s (start-up included), "
                      f"mAP@0.5 {float(overall['mAP@0.5']):.4f}")


def _tune(ctx: Context, weights: Path, folder: Path) -> tuple[list[str | Path | float], dict]:
    """``livestock tune`` of ``weights`` on the test images: one detector pass, its candidates cached in
    ``folder/cache``, scored at every setting of the grid with the contest metric. The detector's arguments (more
    passes over the same cache) and tune's ``best.json``."""
    s = ctx.settings
    detector: list[str | Path | float] = [
        "--weights", weights, "--imgsz", s.imgsz, "--device", ctx.device, "--batch", s.detect_batch,
        "--cache-dir", folder / "cache", "--conf-floor", min(TUNE_CONFS)]
    ctx.livestock("tune", "--images", ctx.artifacts["test_records"], "--answer", ctx.artifacts["test_answer"],
                  *detector, "--confs", *TUNE_CONFS, "--ious", *TUNE_IOUS, "--out", folder / "tune")
    return detector, json.loads((folder / "tune" / "best.json").read_text(encoding="utf-8"))


def step_inference(ctx: Context, rec: dict) -> None:
    """One detector pass with a tuning grid, detections at the best setting, answer.csv, and its contest score."""
    records, answer = ctx.artifacts["test_records"], ctx.artifacts["test_answer"]
    t0 = time.monotonic()
    detector, best = _tune(ctx, _weights(ctx), ctx.fresh("inference"))
    t1 = time.monotonic()
    conf, iou = best["best"]["conf"], best["best"]["iou"]
    detections = ctx.fresh("detect") / "detections.csv"
    ctx.livestock("detect", "--source", records, *detector, "--conf", conf, "--iou", iou, "--out", detections)
    t2 = time.monotonic()
    answer_csv = ctx.work / "answer.csv"
    ctx.livestock("submit", "--detections", detections, "--out", answer_csv)
    scored = ctx.livestock("score", "--answer", answer, "--pred", answer_csv, "--allow-unknown-images")
    t3 = time.monotonic()
    scores = {m.group(1): float(m.group(2))
              for m in re.finditer(r"^mAP@([0-9.:]+): ([0-9.]+)$", scored.output, re.MULTILINE)}
    write_atomic(ctx.out / "answer.csv", answer_csv.read_text(encoding="utf-8"))
    rows = len(_lines(answer_csv)) - 1
    rec.update(images=best.get("images"),
               tune={"seconds": t1 - t0, "settings": best["settings"], "best": best["best"],
                     "one_pass": "the detector runs once; every setting is NMS from its cache"},
               detect={"seconds": t2 - t1, "conf": conf, "iou": iou, "cache": "the tuning pass's (same size, floor)"},
               submit_and_score_seconds=t3 - t2, answer_rows=rows, score=scores,
               note="tuned and scored on the same synthetic test images: this checks the machinery, not accuracy")
    rec["summary"] = (f"tune {t1 - t0:.1f} s ({best['settings']} settings), answer.csv {rows} rows, "
                      f"mAP@0.75 {scores.get('0.75', float('nan')):.4f}")


def step_agreement(ctx: Context, rec: dict) -> None:
    """The same weights on the same images on this run's device and on the CPU: the detections must agree."""
    s = ctx.settings
    folder = ctx.fresh("agreement")
    devices = {"device": ctx.device, "cpu": "cpu"}
    ctx.run_parallel([[ctx.python, *LIVESTOCK_CLI, "detect", "--weights", _weights(ctx),
                       "--source", ctx.artifacts["agree_images"], "--imgsz", s.imgsz, "--device", device,
                       "--cache-dir", "none", "--conf", AGREE_CONF, "--iou", AGREE_IOU, "--max-det", AGREE_MAX_DET,
                       "--out", folder / f"{name}.csv"] for name, device in devices.items()])
    result = compare_detections(read_detections(folder / "device.csv"), read_detections(folder / "cpu.csv"))
    rec.update(devices=devices, tolerance={"conf": AGREE_CONF, "iou": AGREE_IOU, "max_det": AGREE_MAX_DET,
                                           "box_px": AGREE_BOX_PX, "conf_tol": AGREE_CONF_TOL,
                                           "min_matched_share": AGREE_MIN_SHARE, "rule": AGREEMENT_RULE}, **result)
    share = result["matched_share"]
    rec["summary"] = (f"{result['matched']}/{result['compared']} boxes matched"
                      + (f" ({share:.1%}), max {result['max_box_diff_px']} px, conf {result['max_conf_diff']}"
                         if share is not None else "") + f" -> {'agree' if result['agree'] else 'DISAGREE'}")
    if not result["compared"]:
        raise StepFailed("no box to compare on either device (none, or all within the tolerance of the cut)")
    if not result["agree"]:
        raise StepFailed(f"detections differ beyond the tolerance: {rec['summary']}")


def step_latency(ctx: Context, rec: dict) -> None:
    """PyTorch inference latency (batch 1) and throughput (larger batch), FP32 and, on CUDA, FP16."""
    extra = ["--device", ctx.device, *(["--cuda"] if ctx.cuda else [])]
    rec.update(_worker(ctx, "latency", ctx.work / "latency.json", *extra))
    parts = [f"{r['precision']} b{r['batch']} {r['median_ms']:.2f} ms ({r['images_per_s']:.0f} img/s)"
             for r in rec["rows"]]
    rec["summary"] = ", ".join(parts)


def step_export(ctx: Context, rec: dict) -> None:
    """``livestock export --formats onnx-fp16`` of the trained weights: the file and its size."""
    s = ctx.settings
    folder = ctx.fresh("export")
    t0 = time.monotonic()
    ctx.livestock("export", "--weights", _weights(ctx), "--imgsz", s.imgsz, "--formats", "onnx-fp16", "--out", folder)
    seconds = time.monotonic() - t0
    files = sorted(folder.glob("*_fp16.onnx"))
    if len(files) != 1:
        raise StepFailed(f"expected one *_fp16.onnx in {folder}, found {[f.name for f in files]}")
    size = files[0].stat().st_size
    rec.update(file=files[0].name, bytes=size, size_mb=size / 1e6, size_mib=size / 2**20, seconds=seconds,
               within_contest_limit=size / 1e6 <= CONTEST_LIMIT_MB,
               note="size only: the GPU machine's ONNX Runtime has no CUDA provider")
    rec["summary"] = f"{files[0].name}: {size / 1e6:.1f} MB in {seconds:.1f} s"


def _epoch_seconds(results_csv: Path) -> list[float]:
    """Seconds per epoch (its training batches and its validation) from the cumulative ``time`` column of
    Ultralytics' results.csv."""
    with open(results_csv, newline="", encoding="utf-8") as f:
        ends = [float(row["time"]) for row in csv.DictReader(f, skipinitialspace=True)]
    return [end - start for start, end in zip([0.0, *ends], ends)]


def step_ultralytics(ctx: Context, rec: dict) -> None:
    """The Ultralytics engine on the same data at the same size: a nano model from scratch for a few epochs (epoch
    times from its results.csv), ``livestock val``, and the contest score of the test images through
    ``livestock tune`` (the engine's detector, the NMS replay, the contest metric)."""
    s = ctx.settings
    folder = ctx.fresh("ultralytics")
    argv = [ctx.python, *LIVESTOCK_CLI, "train", "--engine", "ultralytics", "--data", ctx.artifacts["train_yaml"],
            "--model", s.ultralytics_model, "--weights", "", "--hyp", REPO / s.ultralytics_hyp, "--img", s.imgsz,
            "--batch-size", s.ultralytics_batch, "--epochs", s.ultralytics_epochs, "--device", ctx.device,
            "--workers", s.workers, "--project", folder, "--name", "train", "--verbose"]  # its INFO log: AMP
    train_images = ctx.results["prepare"].get("train_images")
    rec.update(model=s.ultralytics_model, imgsz=s.imgsz, batch=s.ultralytics_batch, epochs=s.ultralytics_epochs,
               hyp=s.ultralytics_hyp, train_images=train_images, command=shlex.join(map(str, argv)))
    log = TrainProgress(batch=s.ultralytics_batch)  # here only for the AMP line: the batch times come from the csv
    sampler = GpuSampler() if runs_here("nvidia_smi", ctx.cuda) else None
    t0 = time.monotonic()
    try:
        with sampler or contextlib.nullcontext():
            ctx.run(argv, log.feed)
    finally:  # a run cut short at its time limit still reports what it saw
        seconds = time.monotonic() - t0
        rec.update(amp=log.amp(), amp_log=log.amp_lines[-1] if log.amp_lines else None,
                   gpu=sampler.stats((t0, t0 + seconds)) if sampler is not None else None,
                   gpu_window="the whole training command (start-up and per-epoch validation included)")
    weights = folder / "train" / "weights" / "best.pt"
    if not weights.is_file():
        raise StepFailed(f"no {weights} after training")
    epoch_s = _epoch_seconds(folder / "train" / "results.csv")
    timed = epoch_s[1:]  # the first epoch is warm-up
    ips = train_images * len(timed) / sum(timed) if timed and train_images and sum(timed) > 0 else None
    rec["train"] = {"seconds": seconds, "epoch_s": epoch_s, "images_per_s": ips,
                    "extrapolated": extrapolate(ips) if ips else None, "weights": str(weights),
                    "weights_mb": weights.stat().st_size / 1e6,
                    "timing": (f"from Ultralytics' results.csv, each the training batches and the validation "
                               f"of {s.epoch_val_images} images; images/s over the epochs after the first")}
    ctx.artifacts["ultralytics_weights"] = weights
    val_s, table = _val_table(ctx, weights, folder / "val")
    rec["val"] = {"seconds": val_s, "images": int(table["all"]["images"]), "metrics": _metrics(table)}
    t1 = time.monotonic()
    _, best = _tune(ctx, weights, folder)
    rec["contest"] = {"seconds": time.monotonic() - t1, "images": best.get("images"), "settings": best["settings"],
                      "metric_iou": best["metric_iou"], "original": best["original"], "best": best["best"],
                      "note": "tuned and scored on the same synthetic test images: the machinery, not accuracy"}
    original = best["original"]["map"] if best.get("original") else float("nan")
    rec["summary"] = ((f"{ips:.1f} images/s, " if ips else "") + f"{len(epoch_s)} epochs in {seconds:.0f} s; "
                      f"AMP {_fmt(rec['amp'])}; val mAP@0.5 {float(table['all']['mAP@0.5']):.4f}; contest mAP@0.75 "
                      f"{original:.4f} at conf 0.001 / IoU 0.68, best {best['best']['map']:.4f}")


def step_ultralytics_latency(ctx: Context, rec: dict) -> None:
    """The Ultralytics weights: PyTorch FP32 latency and throughput as the engine's detector runs them, and ONNX
    Runtime latency (CPU) of their ONNX export."""
    weights = ctx.artifacts["ultralytics_weights"]
    extra = ["--device", ctx.device, "--weights", str(weights), *(["--cuda"] if ctx.cuda else [])]
    rec.update(_worker(ctx, "ultralytics_latency", ctx.work / "ultralytics_latency.json", *extra))
    rec["summary"] = ", ".join(f"{r['runtime']} {r['precision']} b{r['batch']} {r['median_ms']:.2f} ms "
                               f"({r['images_per_s']:.0f} img/s)" for r in rec["rows"])


@dataclass(frozen=True)
class Step:
    """One named step: what it measures, the function that does it, the steps that must all have succeeded
    (``needs``) and those of which one must have (``needs_any``); every step after the first also needs the first
    to have found torch and the device."""

    name: str
    run: Callable[[Context, dict], None]
    what: str
    needs: tuple[str, ...] = ()
    needs_any: tuple[str, ...] = ()


# The whole check, in order. A step is one more entry here (with its limit in the settings).
TRAINED = ("train", "train_cache_ram", "train_ddp")  # the steps after them use the first one's weights
STEPS: tuple[Step, ...] = (
    Step("environment", step_environment, "imports; wheels for what is missing; torch, CUDA and the GPU"),
    Step("synth", step_synth, "synthetic frames at full size, in parallel shards"),
    Step("prepare", step_prepare, "YOLO-format data, the split, the timed runs' dataset", needs=("synth",)),
    Step("train", train_step(), "training throughput, memory, bottleneck, AMP", needs=("prepare",)),
    Step("train_cache_ram", train_step(cache="ram"), "the same with --cache ram", needs=("prepare",)),
    Step("train_ddp", train_step(ddp=True), "the same through torch.distributed.run (one process)",
         needs=("prepare",)),
    Step("val", step_val, "validation of the trained weights", needs_any=TRAINED),
    Step("inference", step_inference, "one-pass tuning, detection, answer.csv, contest score", needs_any=TRAINED),
    Step("agreement", step_agreement, "detections on the device and on the CPU agree", needs_any=TRAINED),
    Step("latency", step_latency, "PyTorch latency and throughput, FP32 / FP16"),
    Step("export", step_export, "FP16 ONNX export and its size", needs_any=TRAINED),
    # The second engine last: when time runs short, the YOLOv5 measurements (the original's model) come first.
    Step("ultralytics", step_ultralytics, "Ultralytics nano model: training, validation, contest score",
         needs=("prepare",)),
    Step("ultralytics_latency", step_ultralytics_latency, "Ultralytics PyTorch FP32 and ONNX Runtime latency",
         needs=("ultralytics",)),
)


# ============================================================================ running and reporting
def _error_text(error: BaseException) -> str:
    if isinstance(error, StepFailed):
        return f"{error}\n{error.tail}".strip()
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return "".join(lines)[-4000:]


def _one_line(entry: dict) -> str:
    """A step's result in one line: its summary, why it was skipped, or the first line of its error."""
    text = entry["results"].get("summary") or entry["reason"] or entry["error"] or ""
    return (text.splitlines() or [""])[0]


def _skip_reason(step: Step, ctx: Context, entries: Mapping[str, dict]) -> str | None:
    if step is not STEPS[0] and not ctx.ready:
        return f"needs {STEPS[0].name} (torch, and CUDA for a GPU run)"
    failed = [n for n in step.needs if entries[n]["status"] != "ok"]
    if failed:
        return f"needs {', '.join(failed)}"
    if step.needs_any and not any(entries[n]["status"] == "ok" for n in step.needs_any):
        return f"needs one of {', '.join(step.needs_any)}"
    if not runs_here(step.name, ctx.cuda):
        return "CUDA only"
    return None


def run_check(ctx: Context) -> dict:
    """Run every step within the budget, rewriting the report after each; returns the report."""
    s = ctx.settings
    started = time.monotonic()
    deadline = started + s.budget_s
    report = {
        "check": "gpu_check", "mode": s.name, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished": None, "seconds": None, "budget_s": s.budget_s, "device": ctx.device, "cuda": ctx.cuda,
        "cuda_only": sorted(CUDA_ONLY), "settings": dataclasses.asdict(s),
        "reference": {"train_images": REAL_TRAIN_IMAGES, "epochs": REAL_EPOCHS},
        "steps": [{"name": st.name, "what": st.what, "status": "pending", "seconds": None,
                   "limit_s": s.limits_s[st.name], "reason": None, "error": None, "results": {}} for st in STEPS],
    }
    entries = {e["name"]: e for e in report["steps"]}
    write_report(ctx, report)
    for step in STEPS:
        entry = entries[step.name]
        ctx.results[step.name] = entry["results"]
        limit = min(s.limits_s[step.name], deadline - time.monotonic() - REPORT_RESERVE_S)
        reason = _skip_reason(step, ctx, entries) or (None if limit >= MIN_STEP_S else "global budget spent")
        if reason:
            entry.update(status="skipped", reason=reason, seconds=0.0)
        else:
            ctx.begin(step.name, limit)
            entry["status"] = "running"
            t0 = time.monotonic()
            try:
                step.run(ctx, entry["results"])
                entry["status"] = "ok"
            except StepTimeout as e:
                entry.update(status="timeout", error=_error_text(e))
            except Exception as e:  # reported; the next step still runs
                entry.update(status="failed", error=_error_text(e))
            entry["seconds"] = round(time.monotonic() - t0, 2)
        report.update(device=ctx.device, cuda=ctx.cuda)
        print(f"[gpu-check] {step.name:<16} {entry['status']:<8} {entry['seconds']:7.1f} s  {_one_line(entry)}",
              flush=True)
        write_report(ctx, report)
    report.update(finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  seconds=round(time.monotonic() - started, 2))
    write_report(ctx, report)
    return report


def write_report(ctx: Context, report: dict) -> None:
    """``gpu_check.json`` and ``gpu_check.md`` in the output folder, each written atomically."""
    write_atomic(ctx.out / "gpu_check.json", json.dumps(report, indent=2, default=str) + "\n")
    write_atomic(ctx.out / "gpu_check.md", markdown_report(report))


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown_report(report: dict) -> str:
    """The report as Markdown: every step's status and result, then the measurement tables."""
    results = {e["name"]: e["results"] for e in report["steps"]}
    env = results.get("environment", {})
    torch_info = env.get("torch") or {}
    mode = ("GPU run" if report["mode"] == "gpu" else
            "dry run: toy size on the CPU, CUDA-only parts skipped; no figure here says anything about a GPU")
    lines = [
        "# GPU check", "",
        f"{mode}. Started {report['started']}, took {_fmt(report['seconds'])} s of a {report['budget_s']:g} s budget.",
        (f"Device: {torch_info.get('device_name') or 'CPU'}; torch {torch_info.get('version', '—')}, "
         f"CUDA {torch_info.get('cuda', '—')}, Python {env.get('python', '—')}."), "",
        "| step | status | seconds | limit (s) | result |", "|---|---|---|---|---|",
    ]
    for e in report["steps"]:
        lines.append(f"| {e['name']} | {e['status']} | {_fmt(e['seconds'])} | {e['limit_s']:g} | "
                     f"{_one_line(e).replace('|', '/')} |")
    s = report["settings"]
    runs = [(e["name"], e["results"]) for e in report["steps"] if "timed_images" in e["results"]]  # YOLOv5 training
    if runs:
        lines += ["", (f"## Training ({s['model']}, {s['imgsz']} px, batch {s['batch']}, {s['epochs']} epochs, "
                       f"{s['hyp']})"), "",
                  (f"Throughput is timed over the batches after the first epoch; the extrapolation is to "
                   f"{REAL_TRAIN_IMAGES:,} images per epoch and {REAL_EPOCHS} epochs (training batches only)."), "",
                  (f"| run | images/s | s per epoch | {REAL_EPOCHS} epochs (h) | between epochs (s) | "
                   "peak reserved (GB) | peak memory.used (MiB) | mean GPU util (%) | bottleneck | AMP |"),
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in runs:
            ext = r.get("extrapolated") or {}
            gpu = r.get("gpu") or {}
            gaps = r.get("between_epochs_s") or []
            lines.append(f"| {name} | {_fmt(r.get('images_per_s'))} | {_fmt(ext.get('epoch_s'), 0)} | "
                         f"{_fmt(ext.get('total_h'), 2)} | {', '.join(f'{g:.1f}' for g in gaps) or '—'} | "
                         f"{_fmt(r.get('peak_reserved_gb'))} | {_fmt(gpu.get('memory_used_peak_mib'), 0)} | "
                         f"{_fmt(gpu.get('util_mean_pct'))} | {_fmt(r.get('bottleneck'))} | {_fmt(r.get('amp'))} |")
    lat = results.get("latency", {})
    latency = lat.get("rows")
    if latency:
        lines += ["", (f"## Inference, PyTorch ({lat.get('model')}, {lat.get('imgsz')} px, network only, "
                       f"{lat.get('device')})"), "",
                  "| precision | batch | median ms | p90 ms | images/s | peak allocated (MiB) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['precision']} | {r['batch']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                  f"{r['images_per_s']:.1f} | {_fmt(r.get('peak_allocated_mib'), 0)} |" for r in latency]
    agreement = results.get("agreement", {})
    if agreement.get("tolerance"):
        lines += ["", "## Detections: device vs CPU", "", f"Rule: {agreement['tolerance']['rule']}.", "",
                  f"Result: {agreement.get('summary', '—')}."]
    export = results.get("export", {})
    if export.get("file"):
        lines += ["", "## Export", "", f"{export['file']}: {export['size_mb']:.1f} MB ({export['note']})."]
    lines += _ultralytics_markdown(results.get("ultralytics", {}), results.get("ultralytics_latency", {}))
    failures = [e for e in report["steps"] if e["status"] in ("failed", "timeout")]
    if failures:
        lines += ["", "## Failures"]
        for e in failures:
            lines += ["", f"### {e['name']} ({e['status']})", "", "```", e["error"] or "", "```"]
    return "\n".join(lines) + "\n"


def _ultralytics_markdown(run: Mapping, latency: Mapping) -> list[str]:
    """The report's Ultralytics section: training, validation and contest score, then the latency table."""
    lines: list[str] = []
    train = run.get("train") or {}
    if train:
        ext = train.get("extrapolated") or {}
        gpu = run.get("gpu") or {}
        lines += ["", (f"## Ultralytics ({run['model']}, {run['imgsz']} px, batch {run['batch']}, {run['epochs']} "
                       f"epochs, {run['hyp']})"), "",
                  (f"Epoch times {', '.join(f'{e:.1f}' for e in train['epoch_s'])} s ({train['timing']}): "
                   f"{_fmt(train.get('images_per_s'))} images/s, {_fmt(ext.get('total_h'), 2)} h for the "
                   f"original's {REAL_EPOCHS} epochs of {REAL_TRAIN_IMAGES:,} images. AMP {_fmt(run.get('amp'))}"
                   + (f"; over {run['gpu_window']}: peak memory.used {_fmt(gpu.get('memory_used_peak_mib'), 0)} "
                      f"MiB, mean GPU util {_fmt(gpu.get('util_mean_pct'))} %" if gpu else "") + ".")]
    if run.get("val"):
        lines.append(f"Validation: mAP@0.5 {run['val']['metrics']['all']['mAP@0.5']:.4f} on "
                     f"{run['val']['images']} images.")
    contest = run.get("contest") or {}
    if contest:
        original = contest.get("original") or {}
        lines.append(f"Contest mAP@{contest['metric_iou']:g} on {contest['images']} test images: "
                     f"{_fmt(original.get('map'), 4)} at conf 0.001 / NMS IoU 0.68, best "
                     f"{contest['best']['map']:.4f} (conf {contest['best']['conf']:g}, IoU "
                     f"{contest['best']['iou']:g}) of {contest['settings']} settings ({contest['note']}).")
    if latency.get("rows"):
        onnx = latency.get("onnx") or {}
        lines += ["", (f"Inference ({latency['model']}, {latency['imgsz']} px, network only; ONNX Runtime on the "
                       f"CPU, threads: {onnx.get('threads')}; ONNX export {_fmt(onnx.get('size_mb'))} MB):"), "",
                  "| runtime | precision | batch | device | median ms | p90 ms | images/s | peak allocated (MiB) |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['runtime']} | {r['precision']} | {r['batch']} | {r['device']} | {r['median_ms']:.2f} | "
                  f"{r['p90_ms']:.2f} | {r['images_per_s']:.1f} | {_fmt(r.get('peak_allocated_mib'), 0)} |"
                  for r in latency["rows"]]
    return lines


# ============================================================================ workers (subprocesses of this script)
def worker_probe() -> dict:
    """What is importable here, the versions, and what torch sees (run in a subprocess: imports stick)."""
    import importlib
    import importlib.metadata
    import importlib.util
    import platform

    names = [*EXPECTED_ON_MACHINE, *GPU_WHEELS]
    present = {}
    for name in names:
        try:
            present[name] = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package (google) that is not there
            present[name] = False
    errors = {}
    for name in names:
        if present[name]:
            try:
                importlib.import_module(name)
            except Exception as e:  # reported by the environment step
                errors[name] = f"{type(e).__name__}: {e}"
        else:
            errors[name] = "not installed" + (" (expected on the machine)" if name in EXPECTED_ON_MACHINE else "")
    versions = {}
    for dist in VERSIONS_OF:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    info: dict = {"python": platform.python_version(), "platform": platform.platform(),
                  "cpu_count": os.cpu_count(), "present": present, "import_errors": errors, "versions": versions,
                  "torch": {}}
    if "torch" not in errors:
        import torch

        t = info["torch"]
        t.update(version=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                 cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
        if t["cuda_available"]:
            props = torch.cuda.get_device_properties(0)
            t.update(device_count=torch.cuda.device_count(), device_name=props.name,
                     capability=f"{props.major}.{props.minor}", memory_gib=props.total_memory / 2**30)
    return info


def _time_passes(run: Callable[[], object], warmup: int, runs: int, sync: Callable[[], None]) -> list[float]:
    """Seconds of each of ``runs`` calls of ``run`` after ``warmup`` untimed ones, sorted; ``sync`` before and
    after each (a CUDA synchronise, so a timed pass has finished on the GPU)."""
    times = []
    for i in range(warmup + runs):
        sync()
        t0 = time.perf_counter()
        run()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)


def _latency_row(times: list[float], batch: int, warmup: int, **fields: object) -> dict:
    median = statistics.median(times)
    return {**fields, "batch": batch, "runs": len(times), "warmup": warmup, "median_ms": median * 1e3,
            "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))] * 1e3, "min_ms": times[0] * 1e3,
            "images_per_s": batch / median}


def _reset_peak_memory(dev: "torch.device", cuda: bool) -> None:
    if runs_here("cuda_sync", cuda):
        import torch

        torch.cuda.reset_peak_memory_stats(dev)


def _peak_memory(dev: "torch.device", cuda: bool) -> dict:
    """The most GPU memory PyTorch allocated since the last reset: one latency row's own (weights included)."""
    if not runs_here("cuda_sync", cuda):
        return {}
    import torch

    return {"peak_allocated_mib": torch.cuda.max_memory_allocated(dev) / 2**20}


def _torch_device(device: str) -> "torch.device":
    import torch

    return torch.device("cuda", 0) if device.isdigit() else torch.device(device)


def worker_latency(settings: Settings, device: str, cuda: bool, work: Path) -> dict:
    """Median forward-pass time of the settings' model (random weights, Conv+BN fused as YOLOv5 loads it for
    inference) at batch 1 and the throughput batch, FP32 and (CUDA) FP16, after warm-up passes."""
    import torch

    api = package_api()
    # Latency does not depend on the weight values, so this step needs no trained model.
    checkpoint = api.random_init_weights(settings.model, work / f"{settings.model}_random.pt")
    dev = _torch_device(device)
    model = api.load_checkpoint_model(checkpoint).fuse().eval().to(dev)
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels during warm-up
    sync = torch.cuda.synchronize if runs_here("cuda_sync", cuda) else (lambda: None)
    precisions = ["fp32", *(["fp16"] if runs_here("fp16_latency", cuda) else [])]
    rows = []
    for precision in precisions:
        if precision == "fp16":
            model = model.half()
        dtype = torch.float16 if precision == "fp16" else torch.float32
        for batch, warmup, runs in zip(settings.latency_batches, settings.latency_warmup, settings.latency_runs):
            _reset_peak_memory(dev, cuda)
            x = torch.rand(batch, 3, settings.imgsz, settings.imgsz, device=dev, dtype=dtype)
            with torch.inference_mode():
                times = _time_passes(lambda: model(x), warmup, runs, sync)
            rows.append(_latency_row(times, batch, warmup, precision=precision, **_peak_memory(dev, cuda)))
    result = {"model": settings.model, "imgsz": settings.imgsz, "device": str(dev), "weights": "random (untrained)",
              "fused": True, "cudnn_benchmark": True, "threads": torch.get_num_threads(), "rows": rows,
              "timing": "wall clock per forward pass (no pre-processing, no NMS)"
                        + (", CUDA-synchronised before and after" if runs_here("cuda_sync", cuda) else "")}
    if runs_here("cuda_sync", cuda):
        # getattr: newer PyTorch releases move the TF32 switches; the timing must not fail for a label.
        result.update(tf32_conv=getattr(torch.backends.cudnn, "allow_tf32", None),
                      tf32_matmul=getattr(torch.backends.cuda.matmul, "allow_tf32", None))
    return result


def worker_ultralytics_latency(settings: Settings, device: str, cuda: bool, weights: Path, work: Path) -> dict:
    """Median forward-pass times of trained Ultralytics weights: in PyTorch FP32 on the device, as the engine's
    detector loads them (Ultralytics' AutoBackend, Conv+BN fused), at batch 1 and the throughput batch; then in
    ONNX Runtime on the CPU (the only provider the GPU machine has) from the engine's fixed-shape ONNX export, at
    batch 1 (the export's), with the settings' few passes (``onnx_cpu_passes``): a CPU pass is far slower."""
    import numpy as np
    import torch

    api = package_api()
    dev = _torch_device(device)
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if runs_here("cuda_sync", cuda) else (lambda: None)
    model = api.load_ultralytics_detector(weights, settings.imgsz, dev, api.n_classes).model
    rows = []
    for batch, warmup, runs in zip(settings.latency_batches, settings.latency_warmup, settings.latency_runs):
        _reset_peak_memory(dev, cuda)
        x = torch.rand(batch, 3, settings.imgsz, settings.imgsz, device=dev)
        with torch.inference_mode():
            times = _time_passes(lambda: model(x), warmup, runs, sync)
        rows.append(_latency_row(times, batch, warmup, runtime="pytorch", precision="fp32", device=str(dev),
                                 **_peak_memory(dev, cuda)))
    onnx_path = work / f"{settings.ultralytics_model}_{settings.imgsz}.onnx"
    t0 = time.perf_counter()
    api.export_ultralytics_onnx(weights, settings.imgsz, onnx_path)
    export_s = time.perf_counter() - t0
    threads = torch.get_num_threads()
    session = api.ort_session(onnx_path, threads)
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random(
        (1, 3, settings.imgsz, settings.imgsz), dtype=np.float32)}
    warmup, runs = settings.onnx_cpu_passes
    times = _time_passes(lambda: session.run(None, feed), warmup, runs, lambda: None)
    rows.append(_latency_row(times, 1, warmup, runtime="onnxruntime", precision="fp32", device="cpu"))
    result = {"model": settings.ultralytics_model, "imgsz": settings.imgsz, "device": str(dev),
              "weights": str(weights), "fused": True, "rows": rows,
              "onnx": {"file": onnx_path.name, "size_mb": onnx_path.stat().st_size / 1e6, "export_s": export_s,
                       "providers": session.get_providers(), "threads": threads},
              "timing": "wall clock per forward pass (no pre-processing, no NMS)"
                        + (", CUDA-synchronised before and after" if runs_here("cuda_sync", cuda) else "")}
    return result


# ============================================================================ command line
def default_out() -> Path:
    """``$OUT/gpu_check`` where ``OUT`` is set (the GPU machine brings back what is there), else runs/gpu_check."""
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check" if out else REPO / "runs" / "gpu_check"


def main(argv: list[str] | None = None) -> int:
    """Entry point: the check, the wheel download (``--download-wheels``) or one of its workers."""
    p = argparse.ArgumentParser(description="Bounded GPU check of the livestock pipeline (see the script's docstring).")
    p.add_argument("--dry-run", action="store_true", help="toy size on the CPU, CUDA-only parts skipped")
    p.add_argument("--out", type=Path, default=None,
                   help="report folder (default: $OUT/gpu_check, else runs/gpu_check)")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "gpu_check_work",
                   help="data, training runs and installed wheels (default: %(default)s)")
    p.add_argument("--wheels", type=Path, default=REPO / "gpu_wheels", help="wheel folder of `make gpu-wheels`")
    p.add_argument("--download-wheels", type=Path, metavar="DIR", help="download the wheels into DIR and exit")
    p.add_argument("--worker", choices=("probe", "latency", "ultralytics_latency"), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--cuda", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    settings = DRY_RUN if args.dry_run else REAL

    if args.download_wheels is not None:
        return download_wheels(args.download_wheels)
    if args.worker is not None:
        if args.worker == "probe":
            result = worker_probe()
        elif args.worker == "latency":
            result = worker_latency(settings, args.device, args.cuda, args.result.parent)
        else:
            result = worker_ultralytics_latency(settings, args.device, args.cuda, args.weights, args.result.parent)
        write_atomic(args.result, json.dumps(result, indent=2) + "\n")
        return 0

    check_settings(settings)
    out = (args.out or default_out()).resolve()
    work_root = args.work.resolve()
    work, site = work_root / "run", work_root / "site"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    site.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "logs", ignore_errors=True)
    ctx = Context(settings=settings, dry_run=args.dry_run, out=out, work=work, site=site,
                  wheels=args.wheels.resolve(), env=command_env(site))
    print(f"[gpu-check] {settings.name}: report in {out}, work in {work_root}, budget {settings.budget_s:g} s",
          flush=True)
    report = run_check(ctx)
    bad = [e["name"] for e in report["steps"]
           if e["status"] in ("failed", "timeout") or (e["status"] == "skipped" and e["reason"] != "CUDA only")]
    print(f"[gpu-check] {'all steps passed' if not bad else 'not passed: ' + ', '.join(bad)}; "
          f"{out / 'gpu_check.json'}, {out / 'gpu_check.md'}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
