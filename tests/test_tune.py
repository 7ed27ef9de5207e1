"""NMS IoU x confidence tuning: each grid score equals scoring YOLOv5's own detections at that setting; the
table, the best setting (tie rule), the files and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from candidate_helpers import make_checkpoint, write_frames, yolov5_detections, yolov5_raw_outputs
from livestock.evaluation.metrics import mean_average_precision_for_boxes
from livestock.evaluation.detect import collect_candidates
from livestock.evaluation.nms_replay import detections_for_setting
from livestock.records import Detections, save_records
from livestock.evaluation.submission import detections_to_submission
from livestock.evaluation.tune import (DEFAULT_CONFS, DEFAULT_IOUS, ORIGINAL_SETTING, best_setting, grid_settings,
                            tune_thresholds, write_tuning)

IMGSZ = 256


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    records = write_frames(root / "frames", n=3, seed=3)
    weights = make_checkpoint(root / "shaped.pt", [r.image_path for r in records], seed=3)
    cache = collect_candidates(weights, records, IMGSZ, progress=False)
    # Ground truth that makes the grid informative: the model's confident boxes at a strict setting, nudged by
    # up to 2 px, so the scores move with both thresholds.
    strict = detections_for_setting(cache, 0.05, 0.3)
    rng = np.random.default_rng(0)
    nudged = []
    for d in strict:
        b = d.boxes + rng.uniform(-2, 2, d.boxes.shape)
        b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)
        nudged.append(Detections(d.image_id, d.width, d.height, b, d.scores, d.class_ids))
    answer = detections_to_submission(nudged).drop(columns="Conf")
    assert len(answer) > 20
    return root, records, weights, cache, answer


def test_default_grid_is_the_peer_grid_with_the_original_inside():
    settings = grid_settings()
    assert len(DEFAULT_CONFS) == 10 and len(DEFAULT_IOUS) == 21
    assert DEFAULT_CONFS[0] == 0.0001 and DEFAULT_CONFS[-1] == 0.001 and DEFAULT_CONFS[2] == 0.0003
    assert DEFAULT_IOUS[0] == 0.3 and DEFAULT_IOUS[-1] == 0.7 and DEFAULT_IOUS[19] == 0.68
    assert len(settings) == len(set(settings)) == 210 and ORIGINAL_SETTING in settings
    assert grid_settings([0.01], [0.5]) == [(0.01, 0.5), ORIGINAL_SETTING]
    with pytest.raises(ValueError):
        grid_settings([0.01], [1.5])


def test_grid_scores_equal_scoring_yolov5_at_each_setting(setup):
    root, records, weights, cache, answer = setup
    table = tune_thresholds(cache, answer, progress=False)
    assert len(table) == 210
    assert table["original"].sum() == 1
    assert list(table.columns) == ["tta", "fusion", "conf", "iou", "map", "ap_cow", "ap_pig", "n_detections",
                                   "original"]
    assert not table["tta"].any() and (table["fusion"] == "nms").all()  # without TTA: the one-pass cell alone
    assert table["map"].nunique() >= 15  # the grid is informative, so equality below means something
    assert table.attrs["grid"]["one pass"]["shared_nms_calls"] <= 21 * len(cache)

    raw = yolov5_raw_outputs(weights, root / "frames", IMGSZ)
    sizes = {c.image_id: (c.width, c.height) for c in cache}
    for conf, iou in [(0.0001, 0.3), (0.0004, 0.5), (0.001, 0.68), (0.0007, 0.7), (0.001, 0.3)]:
        ref = [Detections(i, *sizes[i], d[:, :4].double().numpy(), d[:, 4].double().numpy(), d[:, 5].long().numpy())
               for i, d in yolov5_detections(raw, conf, iou)]
        sub = detections_to_submission(ref)
        expected, aps = mean_average_precision_for_boxes(answer, sub, iou_threshold=0.75)
        row = table[(table["conf"] == conf) & (table["iou"] == iou)].iloc[0]
        assert row["map"] == expected
        assert row["ap_pig"] == aps["pig"][0] and row["ap_cow"] == aps["cow"][0]
        assert row["n_detections"] == len(sub)


def test_answer_is_restricted_to_detected_images_and_checked(setup):
    _root, _records, _weights, cache, answer = setup
    extra = pd.concat([answer, answer.assign(ImageID="livestock_pig_bbox_999999.jpg")], ignore_index=True)
    a = tune_thresholds(cache, answer, [0.001], [0.68], progress=False)
    b = tune_thresholds(cache, extra, [0.001], [0.68], progress=False)
    assert a["map"].tolist() == b["map"].tolist() and b.attrs["dropped_images"] == 1
    with pytest.raises(ValueError, match="none of its"):
        tune_thresholds(cache, answer.assign(ImageID="livestock_cow_bbox_777777.jpg"), [0.001], [0.68],
                        progress=False)
    with pytest.raises(ValueError):
        tune_thresholds(cache, answer.drop(columns="XMin"), [0.001], [0.68], progress=False)


def test_best_setting_tie_rule():
    table = pd.DataFrame({
        "tta": [False] * 5, "fusion": ["nms"] * 5,
        "conf": [0.0001, 0.0005, 0.001, 0.001, 0.0008],
        "iou": [0.5, 0.5, 0.6, 0.5, 0.4],
        "map": [0.9, 0.95, 0.95, 0.95, 0.95],
        "n_detections": [100, 80, 60, 60, 70],
        "original": [False] * 5,
    })
    best = best_setting(table)  # highest map; then fewest detections; then higher conf; then lower iou
    assert (best["conf"], best["iou"]) == (0.001, 0.5)
    assert best_setting(table.iloc[[0, 1, 4]])["conf"] == 0.0008
    with pytest.raises(ValueError):
        best_setting(table.iloc[:0])


def test_write_tuning_files(setup, tmp_path):
    _root, _records, _weights, cache, answer = setup
    table = tune_thresholds(cache, answer, [0.0002, 0.001], [0.5, 0.68], progress=False)
    written = write_tuning(table, tmp_path / "run")
    back = pd.read_csv(written["scores"])
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    best = json.loads(written["best"].read_text())
    top = best_setting(table)
    assert best["best"] == {"tta": False, "fusion": "nms", "conf": top["conf"], "iou": top["iou"], "map": top["map"],
                            "n_detections": int(top["n_detections"])}
    assert best["cells"] == [{"tta": False, "fusion": "nms"}]
    assert best["original"]["conf"] == 0.001 and best["original"]["iou"] == 0.68
    png = written["heatmap"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_cli_tune_on_prepared_records(setup, tmp_path):
    from livestock.cli import main

    _root, records, weights, _cache, _answer = setup
    records_path = save_records(records, tmp_path / "records.jsonl")
    out = tmp_path / "runs" / "tune" / "val"
    rc = main(["tune", "--weights", str(weights), "--images", str(records_path), "--out", str(out),
               "--imgsz", str(IMGSZ), "--confs", "0.0005", "0.001", "--ious", "0.5", "0.68",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 4 and scores["original"].sum() == 1
    assert (out / "best.json").is_file() and (out / "heatmap.png").is_file()
    # a folder of images has no ground truth of its own
    assert main(["tune", "--weights", str(weights), "--images", str(_root / "frames"), "--out", str(out)]) == 1
