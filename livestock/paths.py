"""Default on-disk layout, relative to the repository (or working) directory.

Every stage takes explicit paths; these are only the defaults the CLI and notebooks share.
"""
from __future__ import annotations

from pathlib import Path

DATA_DIR = Path("data")  # the four AI Hub training zips (synthetic ones by default)
TEST_DIR = Path("data_test")  # the two test image zips, plus answer.csv where ground truth exists
PREPARED_DIR = DATA_DIR / "prepared"  # images/, labels/, records.jsonl, validation_report.csv, data.yaml
PREPARED_TEST_DIR = DATA_DIR / "prepared_test"
SPLITS_DIR = DATA_DIR / "splits"  # multilabel/, full/, mini/: train.txt, val.txt, manifest.csv, data.yaml
SYNTH_TRUTH = DATA_DIR / "synth_truth.csv"  # every true box of the synthetic set, labelled or left out
TEST_ANSWER = TEST_DIR / "answer.csv"  # ground truth of the test set in the contest answer format
RUNS_DIR = Path("runs")  # runs/<task>/<name>, as YOLOv5
TRAINED_MODEL_DIR = Path("trained_model")
# The clone the package runs from (pip install -e .): its notebooks, hyp files and committed weights ship beside the
# package, whichever folder a command runs in.
REPO_ROOT = Path(__file__).resolve().parents[1]
# Provenance records (livestock.provenance): a derived folder's own record, and a derived file's record beside it.
# A folder holding SOURCE_RECORD is an output of this package and is never read as input data.
SOURCE_RECORD = "source.json"
SOURCE_SUFFIX = ".source.json"

# AI Hub zip names: 원천 = source images, 라벨 = labels, 소 = cow, 돼지 = pig.
TRAIN_ZIPS = {
    ("cow", "images"): "[원천]소_bbox.zip",
    ("cow", "labels"): "[라벨]소_bbox.zip",
    ("pig", "images"): "[원천]돼지_bbox.zip",
    ("pig", "labels"): "[라벨]돼지_bbox.zip",
}
TEST_ZIPS = {"pig": "[원천]돼지_bbox.zip", "cow": "[원천]소_bbox.zip"}
