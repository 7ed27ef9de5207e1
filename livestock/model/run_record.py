"""The record a long, resumable job keeps in its folder: the settings it was started with and, per working session,
the machine and the wall time of each step.

A job that may outlast a session (a pretraining, a comparison over seeds) is run again with the same command to
continue. Its record is written after every step and every epoch, so a session cut short still counts up to its
last completed step; the time a job reports is the sum over its sessions. A folder that holds a job of other
settings is refused with one line naming the difference: its files are never mixed with another job's.
"""
from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from livestock.fileio import atomic_write_text
from livestock.model.engine import DEFAULT_ENGINE, parse_device


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one, else the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_process(processes: int) -> int | None:
    """Torch threads for each of ``processes`` computing side by side on this machine: the usable CPUs shared out,
    at least one each; None where the user set ``OMP_NUM_THREADS`` (their choice stands). PyTorch's own default, a
    thread per core in every process, would put several threads on each core, and its OpenMP threads spin while
    they wait for one."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, usable_cpus() // max(1, processes))


def machine_info(device: str, engine: str = DEFAULT_ENGINE) -> dict:
    """The machine a session ran on: platform, CPU, the vector instructions torch's CPU kernels use there, core
    counts, this process's torch threads, Python, torch, OpenCV (the generator's JPEGs), numpy, the engine's package
    (named as the engine), the device.

    ``cpu_capability`` (torch's "AVX2", "AVX512", ...) and ``torch_threads`` are there because the same command,
    seed and packages train the same model to the bit only with the same kernels and the same thread count: a
    convolution's sums are split and rounded differently. Measured on an AVX2 machine restricted to plain kernels
    (ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=AVX): after two epochs on the mini set, 22 of the model's 292
    tensors differ (by one fp16 step at most), though every figure of those epochs agrees to five digits; the main
    job with one thread instead of two parts from it in the fifth digit of epoch 1's precision. The CPU's name alone
    ("AMD EPYC") does not tell two generations apart."""
    import torch

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    spec = parse_device(device)
    if spec.kind == "cuda":
        device_name = ", ".join(torch.cuda.get_device_name(i) for i in spec.indices)
    else:
        device_name = spec.kind

    def package(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"platform": platform.platform(), "cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "cpus_usable": usable_cpus(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": package("torch"), "opencv": package("opencv-python"),
            "numpy": package("numpy"), engine: package(engine), "device": spec.engine_string(),
            "device_name": device_name}


class RunRecord:
    """``path`` (a JSON file): ``settings`` and one entry per session (start, machine, seconds by step). Opening it
    starts a new session; a record of other settings is a ValueError naming ``what`` and the difference."""

    def __init__(self, path: str | os.PathLike, settings: dict, *, device: str, engine: str = DEFAULT_ENGINE,
                 what: str = "job", hint: str = "remove the folder") -> None:
        self.path = Path(path)
        settings = json.loads(json.dumps(settings))  # as it reads back from the file (tuples become lists)
        self.data: dict = {"settings": settings, "sessions": []}
        if self.path.is_file():
            old = json.loads(self.path.read_text(encoding="utf-8"))
            there = old.get("settings", {})
            if there != settings:
                diff = {k: (there.get(k), settings.get(k)) for k in sorted({*there, *settings})
                        if there.get(k) != settings.get(k)}
                raise ValueError(f"{self.path.parent}: holds a {what} with other settings (there, here: {diff}); "
                                 f"{hint}")
            self.data = old
        self.session = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "machine": machine_info(device, engine), "seconds": {}}
        self.data["sessions"].append(self.session)
        self.mark = time.perf_counter()

    def add(self, step: str) -> None:
        """Count the time since the last mark to ``step`` and save."""
        now = time.perf_counter()
        seconds = self.session["seconds"]
        seconds[step] = seconds.get(step, 0.0) + now - self.mark
        self.mark = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")

    def totals(self) -> dict[str, float]:
        """Seconds by step over every session, and their total."""
        out: dict[str, float] = {}
        for session in self.data["sessions"]:
            for step, s in session["seconds"].items():
                out[step] = out.get(step, 0.0) + s
        return {**{k: round(v, 1) for k, v in out.items()}, "total": round(sum(out.values()), 1)}

    @property
    def sessions(self) -> int:
        """Sessions so far, this one included."""
        return len(self.data["sessions"])
