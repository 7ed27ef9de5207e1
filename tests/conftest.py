"""Shared pytest fixtures.

``synth_data`` renders one tiny synthetic AI Hub-format dataset per test session; tests that only
read it share it, tests that need to change data make their own copy or their own set.
"""
from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import pytest

from livestock.model.run_record import threads_per_process  # imports no torch: the variable below must come first

# Under pytest-xdist (`make test` runs one worker per CPU) each worker gets its share of the CPUs, as the search's
# worker processes do. Set here, before any test imports torch, so the workers' subprocesses (trainings, notebook
# kernels) inherit it.
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _XDIST_WORKERS > 1 and (_THREADS := threads_per_process(_XDIST_WORKERS)):
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real contest answer file sits beside the repository in the development checkout; tests that
# use it skip when it is absent.
REAL_ANSWER_CSV = Path(__file__).resolve().parents[2] / "shared" / "real" / "contest_answer.csv"


@dataclass(frozen=True)
class SynthData:
    train_dir: Path  # the four AI Hub training zips + synth_truth.csv
    test_dir: Path  # the two test image zips + answer.csv
    answer_csv: Path
    truth_csv: Path
    summary: object  # livestock.data.synth.SynthSummary


T = TypeVar("T")


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], T]) -> T:
    """``make(folder)`` run once per test run, not once per pytest-xdist worker: the first worker to ask makes it in a
    folder all workers share, under a file lock, and keeps the result pickled; the others wait and read it
    (pytest-xdist's documented way of running a session fixture once). What it makes is read-only for the tests,
    as any session fixture's is. Without xdist (one process) it simply runs ``make``."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, above every worker's own
    folder, done = shared / name, shared / f"{name}.pickle"
    with FileLock(shared / f"{name}.lock"):
        if done.is_file():
            return pickle.loads(done.read_bytes())
        if folder.exists():  # a worker that failed here leaves no result: make it again, to fail with the reason
            shutil.rmtree(folder)
        folder.mkdir()
        value = make(folder)
        done.write_bytes(pickle.dumps(value))
        return value


# 40 training and 12 test images at a quarter of the real size (480x270 / 320x240): a few seconds.
SYNTH_DATA_ARGS = dict(n_train=40, n_test=12, seed=0, missing_cow_rate=0.15, image_scale=0.25)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> SynthData:
    from livestock.data.synth import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    summary = generate_synthetic_dataset(root / "data", root / "data_test", progress=False, **SYNTH_DATA_ARGS)
    return SynthData(summary.train_dir, summary.test_dir, summary.answer_csv, summary.truth_csv, summary)


@pytest.fixture(scope="session")
def real_answer_csv() -> Path:
    if not REAL_ANSWER_CSV.is_file():
        pytest.skip(f"real contest answer not available at {REAL_ANSWER_CSV}")
    return REAL_ANSWER_CSV


# ---------------------------------------------------------------- a tiny trained YOLOv5 model (livestock.model.yolov5)

# YOLOv5n from scratch on 64 toy frames (tests/toy_yolo.py) at 64 px, 40 epochs = 160 iterations. YOLOv5 warms up
# for at least 100 iterations and then steps once per 64 images, so the run must be long in iterations and cheap in
# each: 64 px is four times cheaper than 128. SGD learns nothing in that budget; Adam (lr0 0.01) reaches
# mAP@0.5 of about 0.85 on the toy validation frames.
TINY_TRAIN_ARGS = dict(model="yolov5n", hyp="hyp_scratch_cpu", optimizer="Adam", imgsz=64, epochs=40, batch_size=16,
                       device="cpu", workers=0, seed=0, plots=False)


@pytest.fixture(scope="session")
def tiny_train_result(tmp_path_factory: pytest.TempPathFactory):
    """The ``livestock.model.engine.TrainResult`` of one short training run, shared by the whole session."""
    from toy_yolo import make_toy_yolo_dataset

    from livestock.model.yolov5.training import train

    def make(root: Path):
        data_yaml = make_toy_yolo_dataset(root / "toy", n_train=64, n_val=16)
        return train(data_yaml, project=root / "runs", name="tiny", exist_ok=True, **TINY_TRAIN_ARGS)

    return made_once(tmp_path_factory, "tiny_model", make)


@pytest.fixture(scope="session")
def tiny_trained_model(tiny_train_result) -> tuple[Path, Path]:
    """(weights, data.yaml): a 2-class (pig, cow) YOLOv5n that has learned its toy set, and that set."""
    return tiny_train_result.best, tiny_train_result.data_yaml


# -------------------------------------------------------- tiny trained Ultralytics models (tests/ultralytics_runs.py)


@pytest.fixture(scope="session")
def ultralytics_toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy set (data.yaml) the Ultralytics runs train and validate on: 64 training and 16 validation frames."""
    from toy_yolo import make_toy_yolo_dataset

    return made_once(tmp_path_factory, "ultra_toy", lambda root: make_toy_yolo_dataset(root, n_train=64, n_val=16))


@pytest.fixture(scope="session")
def tiny_yolo11_run(ultralytics_toy, tmp_path_factory: pytest.TempPathFactory):
    """``(TrainResult, epochs, progress events, network attempts)`` of a YOLO11n trained on the toy set at 64 px."""
    from ultralytics_runs import tiny_run

    return made_once(tmp_path_factory, "yolo11", lambda root: tiny_run(ultralytics_toy, root, "yolo11n"))


@pytest.fixture(scope="session")
def tiny_yolo26_run(ultralytics_toy, tmp_path_factory: pytest.TempPathFactory):
    """As ``tiny_yolo11_run``, for a YOLO26n (one-to-one and one-to-many heads)."""
    from ultralytics_runs import tiny_run

    return made_once(tmp_path_factory, "yolo26", lambda root: tiny_run(ultralytics_toy, root, "yolo26n"))


# ---------------------------------------------------------------- a real PostgreSQL server (livestock.model.search)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (tests/postgres_server.py) for the session, stopped at the end. Where it cannot
    start the tests that need it skip with the reason, unless LIVESTOCK_REQUIRE_POSTGRES=1 (CI) makes that a failure."""
    from postgres_server import start_postgres_or_skip

    server = start_postgres_or_skip()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def generated_contest_answer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An answer file of the real test set's size and shape from the generator (2,057 frames in the real class mix,
    about 10,700 boxes), for figures a fresh clone must reproduce without the real answer file."""
    from livestock.data.synth import generate_synthetic_dataset
    from livestock.data.synth.calibration import TEST_IMAGES

    root = tmp_path_factory.mktemp("contest_sized")
    summary = generate_synthetic_dataset(root / "data", root / "data_test", n_train=2, test_counts=dict(TEST_IMAGES),
                                         labels_only=True, progress=False)
    return summary.answer_csv
