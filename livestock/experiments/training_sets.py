"""Gold only vs gold + silver (the original's expand experiment): one training per dataset under one budget, each
scored on the test images with the contest metric, as cells of :mod:`livestock.experiments.runner` (a comparison cut
off resumes; a finished set is not trained again)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from livestock.data.yolo_format import split_image_paths
from livestock.experiments.runner import GoldSet, TrainingCell, run_cells
from livestock.model.engine import DEFAULT_ENGINE
from livestock.records import ImageRecord

BUDGETS: tuple[str, ...] = ("epochs", "images")


def count_train_images(data_yaml: str | Path) -> int:
    """Training entries of a dataset yaml (lines of its list files, or images of its folders)."""
    return len(split_image_paths(data_yaml, "train"))


def epochs_for_budget(epochs: int, base_images: int, images: int, budget: str = "epochs") -> int:
    """Epochs for a set of ``images`` training entries so that it gets the budget of ``epochs`` on
    ``base_images``: ``epochs`` (same epochs; a bigger set sees more images) or ``images`` (same number of images
    seen, i.e. about the same optimiser steps: epochs scaled by base_images / images, at least 1)."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    if budget == "epochs" or images <= 0:
        return int(epochs)
    return max(1, int(round(epochs * base_images / images)))


def set_cells(data_yamls: Mapping[str, str | Path], *, epochs: int, budget: str = "epochs",
              baseline: str | None = None, seeds: Sequence[int] = (0,), sizes: Mapping[str, int] | None = None,
              **settings: object) -> list[TrainingCell]:
    """One :class:`TrainingCell` per dataset yaml and seed, named by the set, with the budget's epochs
    (:func:`epochs_for_budget`, the reference set ``baseline``, default the first) and ``settings`` shared.
    ``sizes``: each set's training entries where the caller has counted them (:func:`count_train_images`)."""
    if not data_yamls:
        raise ValueError("no dataset to train on")
    baseline = baseline or next(iter(data_yamls))
    if baseline not in data_yamls:
        raise ValueError(f"baseline {baseline!r} is not one of {list(data_yamls)}")
    sizes = sizes or {name: count_train_images(path) for name, path in data_yamls.items()}
    return [TrainingCell.of(name, path, seed=int(seed),
                            epochs=epochs_for_budget(epochs, sizes[baseline], sizes[name], budget), **settings)
            for seed in seeds for name, path in data_yamls.items()]  # seed-major: a cut-off run compares every set


def compare_training_sets(data_yamls: Mapping[str, str | Path], test_images: Sequence[ImageRecord],
                          answer: str | Path | None, *, baseline: str | None = None, model: str | None = None,
                          weights: str | Path | None = None, hyp: str | Path | dict | None = None, imgsz: int = 640,
                          batch_size: int = 16, epochs: int = 30, budget: str = "epochs", device: str = "auto",
                          workers: int = 2, project: str | Path = "runs/expand", conf: float = 0.001,
                          iou: float = 0.68, seed: int = 0, engine: str = DEFAULT_ENGINE) -> pd.DataFrame:
    """Train one model per dataset yaml under the same settings and budget (``budget``: see
    :func:`epochs_for_budget`; the reference is ``baseline``, default the first set), then score each on the test
    images against ``answer`` (ground truth written for exactly them) with the contest metric. Returns one row per
    set: set, train_images, epochs, images_seen, val mAP@0.5 (the engine's, on the set's own validation list),
    test mAP@0.5 / @0.75 / @0.5:0.95, weights. ``answer`` None (no ground truth for these test images): no test
    columns, the sets compare on validation only. Each set's run is ``project/<set>-seed<seed>/``."""
    sizes = {name: count_train_images(path) for name, path in data_yamls.items()}
    cells = set_cells(data_yamls, epochs=epochs, budget=budget, baseline=baseline, seeds=(seed,), sizes=sizes,
                      engine=engine, model=model, weights=str(weights) if weights else None, hyp=hyp, imgsz=imgsz,
                      batch_size=batch_size, device=device, workers=workers)
    test = GoldSet.of(test_images, answer) if answer is not None else None
    rows = run_cells(cells, test, project, conf=conf, iou=iou)
    out = pd.DataFrame({"set": rows["name"], "train_images": [sizes[c.name] for c in cells],
                        "epochs": [c.training.epochs for c in cells],
                        "images_seen": [sizes[c.name] * c.training.epochs for c in cells],
                        "val_mAP@0.5": rows["val_mAP@0.5"]})
    for column in ("test_mAP@0.5", "test_mAP@0.75", "test_mAP@0.5:0.95"):
        if column in rows:
            out[column] = rows[column]
    out["weights"] = rows["best"]
    return out
