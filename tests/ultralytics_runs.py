"""The Ultralytics engine's tiny training runs shared by the suite (tests/conftest.py), and the network block they
run under.

YOLO11n and YOLO26n from scratch on the toy set (tests/toy_yolo.py) at 64 px: 20 epochs of 8 images a step, no
warm-up (Ultralytics warms up for at least 100 iterations), no gradient accumulation (nbs = batch) and no mosaic
(four 32 px tiles of a 64 px frame hide the animals). About half a minute each on two CPU cores.
"""
from __future__ import annotations

import contextlib
import json
import socket
import urllib.request
from pathlib import Path

import pytest

TINY_HYP = {"warmup_epochs": 0.0, "lr0": 0.005, "mosaic": 0.0}
TINY_ARGS = dict(imgsz=64, epochs=20, batch_size=8, optimizer="Adam", device="cpu", workers=0, seed=0, plots=False,
                 nbs=8)


@contextlib.contextmanager
def network_blocked():
    """Every way out to the network raises; the attempts are recorded (Ultralytics swallows some errors, so the
    record, not an exception, shows whether it tried)."""
    import requests

    attempts: list[tuple[str, str]] = []

    def refuse(what):
        def blocked(*args, **kwargs):
            attempts.append((what, repr(args[:2])[:200]))
            raise OSError(f"network blocked in tests ({what})")
        return blocked

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return refuse("connect")(address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return refuse("connect_ex")(address)
        return real_connect_ex(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        mp.setattr(urllib.request, "urlopen", refuse("urlopen"))
        mp.setattr(requests.Session, "request", refuse("requests"))
        yield attempts


def tiny_run(toy: Path, root: Path, model: str):
    """Train ``model`` on the toy set with the network blocked: ``(TrainResult, the epochs it reported, its
    progress events, the network attempts)``."""
    from livestock.model.ultralytics import adapter as U
    from livestock.model.ultralytics import training as UT

    epochs: list[tuple[int, int, dict]] = []
    progress = root / "progress.jsonl"
    with network_blocked() as attempts, pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIVESTOCK_PROGRESS", str(progress))
        result = UT.train(toy, model=model, hyp=U.load_hyp(U.DEFAULT_HYP) | TINY_HYP, project=root / "runs",
                         name=model, on_epoch=lambda e, n, m: epochs.append((e, n, m)), **TINY_ARGS)
    events = [json.loads(ln) for ln in progress.read_text().splitlines()]
    return result, epochs, events, list(attempts)
