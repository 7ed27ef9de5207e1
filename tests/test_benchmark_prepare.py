"""Benchmark: `prepare` (read + validate + extract + YOLO labels) and the split on a full-scale label set.

16,455 label files as in the real training set (12,152 cow + 4,303 pig, pig 1,172 of them 1280x960), with
box counts drawn like the real ones; images are tiny JPEGs (32x18 / 32x24) with JSON sizes and boxes scaled
to match, so the figure measures the pipeline's per-file work, not JPEG bytes. Run with
``pytest -m benchmark -s tests/test_benchmark_prepare.py``.
"""
from __future__ import annotations

import importlib.util
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from aihub_builders import tiny_jpeg

N_COW, N_PIG, N_PIG_1280 = 12_152, 4_303, 1_172
# Boxes per cow image: the real histogram (bins of width 1.1 from 0 to 11) -> counts 0..10.
COW_BOX_HIST = [1990, 2408, 2985, 2099, 1314, 661, 400, 222, 56, 17]


def _boxes(rng: np.random.Generator, n: int, full_w: int, full_h: int, w: int, h: int) -> list[list[float]]:
    """``n`` boxes drawn at full resolution and scaled to the tiny image, as floats with decimals."""
    bw = rng.uniform(60, 500, n)
    bh = rng.uniform(60, 400, n)
    x1 = rng.uniform(0, full_w - bw)
    y1 = rng.uniform(0, full_h - bh)
    sx, sy = w / full_w, h / full_h
    b = np.stack([x1 * sx, y1 * sy, (x1 + bw) * sx, (y1 + bh) * sy], 1)
    return np.round(b, 3).tolist()


def _label(w: int, h: int, boxes: list) -> bytes:
    anns = [{"id": i, "bbox": b, "category_id": 1, "area": 0} for i, b in enumerate(boxes)]
    return json.dumps({"label_info": {"image": {"width": w, "height": h, "file_name": ""}, "annotations": anns,
                                      "categories": [{"id": 1, "name": "livestock"}]}}).encode()


def write_full_scale_set(data: Path, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    cow_counts = np.repeat(np.arange(10), COW_BOX_HIST)
    cow_counts[:3] = 0  # the three real cow images with no box
    rng.shuffle(cow_counts[3:])
    n_boxes = 0
    data.mkdir(parents=True, exist_ok=True)
    for species, korean, n in (("cow", "소", N_COW), ("pig", "돼지", N_PIG)):
        with zipfile.ZipFile(data / f"[원천]{korean}_bbox.zip", "w", zipfile.ZIP_STORED) as zi, \
             zipfile.ZipFile(data / f"[라벨]{korean}_bbox.zip", "w", zipfile.ZIP_DEFLATED) as zl:
            for i in range(n):
                stem = f"livestock_{species}_bbox_{i:06d}"
                if species == "cow":
                    full, (w, h), k = (1920, 1080), (32, 18), int(cow_counts[i])
                else:
                    big = i >= N_PIG_1280
                    full, (w, h) = ((1920, 1080), (32, 18)) if big else ((1280, 960), (32, 24))
                    k = int(rng.integers(4, 17))
                boxes = _boxes(rng, k, *full, w, h)
                n_boxes += k
                folder = f"{korean}_bbox/{i // 1000:02d}"
                zi.writestr(f"{folder}/{stem}.jpg", tiny_jpeg(w, h))
                zl.writestr(f"{folder}/{stem}.json", _label(w, h, boxes))
    return n_boxes


@pytest.mark.benchmark
def test_benchmark_prepare_full_scale(tmp_path):
    from livestock.data.yolo_format import prepare_dataset

    t0 = time.perf_counter()
    n_boxes = write_full_scale_set(tmp_path / "data")
    print(f"\nbuilt {N_COW + N_PIG} image/label pairs with {n_boxes} boxes in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    res = prepare_dataset(tmp_path / "data", tmp_path / "prepared", progress=False)
    t_prepare = time.perf_counter() - t0
    assert len(res.records) == N_COW + N_PIG and res.problems.empty
    assert sum(r.n_boxes for r in res.records) == n_boxes

    t0 = time.perf_counter()
    prepare_dataset(tmp_path / "data", tmp_path / "prepared", progress=False)
    t_again = time.perf_counter() - t0

    # The next stage on the same files: stratified split (read records.jsonl, stratify, write three sets).
    t_split = None
    if importlib.util.find_spec("livestock.data.split") is not None:
        from livestock.data.split import make_all_splits

        t0 = time.perf_counter()
        sets = make_all_splits(tmp_path / "prepared", tmp_path / "splits")
        t_split = time.perf_counter() - t0
        assert sets["multilabel"]["split"].value_counts().to_dict() == {"train": 13_164, "val": 3_291}

    print(f"prepare (read + validate + extract + labels), first run: {t_prepare:.1f} s "
          f"({1e3 * t_prepare / len(res.records):.2f} ms/image)")
    print(f"prepare again (idempotent, nothing rewritten): {t_again:.1f} s")
    if t_split is None:
        print("stratified split: livestock.data.split not available, not timed")
    else:
        print(f"stratified split (make_all_splits): {t_split:.1f} s; prepare + split: {t_prepare + t_split:.1f} s")
