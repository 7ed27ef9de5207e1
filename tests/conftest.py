"""Shared pytest fixtures.

``synth_data`` renders one tiny synthetic AI Hub-format dataset per test session; tests that only
read it share it, tests that need to change data make their own copy or their own set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

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
    summary: object  # livestock.synth.SynthSummary


# 40 training and 12 test images at a quarter of the real size (480x270 / 320x240): a few seconds.
SYNTH_DATA_ARGS = dict(n_train=40, n_test=12, seed=0, missing_cow_rate=0.15, image_scale=0.25)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> SynthData:
    from livestock.synth import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    summary = generate_synthetic_dataset(root / "data", root / "data_test", progress=False, **SYNTH_DATA_ARGS)
    return SynthData(summary.train_dir, summary.test_dir, summary.answer_csv, summary.truth_csv, summary)


@pytest.fixture(scope="session")
def real_answer_csv() -> Path:
    if not REAL_ANSWER_CSV.is_file():
        pytest.skip(f"real contest answer not available at {REAL_ANSWER_CSV}")
    return REAL_ANSWER_CSV
