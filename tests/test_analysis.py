"""Error analysis on hand-made detections: exact P / R, APs, the missing-label ranking and its score."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from livestock.evaluation import analysis
from livestock.records import CLASS_TO_ID, Detections, ImageRecord, save_records

COW, PIG = CLASS_TO_ID["cow"], CLASS_TO_ID["pig"]


def _det(image_id, rows):
    """rows: (x1, y1, x2, y2, score, class_id)."""
    arr = np.asarray(rows, dtype=float).reshape(-1, 6)
    return Detections(image_id, 100, 100, arr[:, :4], arr[:, 4], arr[:, 5].astype(int))


@pytest.fixture()
def case(tmp_path: Path):
    """Three 100x100 images. A (cow): 3 labels, two hit, one hit only below conf, a duplicate, one confident
    unlabelled box. B (pig): one label hit, plus a confident 'cow' box on the pig image. C (cow): one label
    missed, two confident unlabelled boxes of equal score."""
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / f"{name}.jpg"), np.full((100, 100, 3), 128, np.uint8))
    records = [
        ImageRecord("a.jpg", str(tmp_path / "a.jpg"), 100, 100, "cow",
                    [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]),
        ImageRecord("b.jpg", str(tmp_path / "b.jpg"), 100, 100, "pig", [[10, 10, 40, 40]]),
        ImageRecord("c.jpg", str(tmp_path / "c.jpg"), 100, 100, "cow", [[0, 0, 10, 10]]),
    ]
    detections = [
        _det("a.jpg", [(0, 0, 10, 10, 0.9, COW), (20, 20, 30, 31, 0.8, COW), (70, 70, 80, 80, 0.7, COW),
                       (0, 0, 10, 10, 0.3, COW), (50, 50, 60, 60, 0.1, COW)]),
        _det("b.jpg", [(10, 10, 40, 40, 0.95, PIG), (60, 60, 90, 90, 0.6, COW)]),
        _det("c.jpg", [(40, 40, 50, 50, 0.55, COW), (70, 70, 80, 80, 0.55, COW)]),
    ]
    truth = pd.DataFrame(
        [("a.jpg", "cow", 0, 0, 10, 10, True), ("a.jpg", "cow", 20, 20, 30, 30, True),
         ("a.jpg", "cow", 50, 50, 60, 60, True), ("a.jpg", "cow", 70, 70, 80, 80, False),
         ("b.jpg", "pig", 10, 10, 40, 40, True),
         ("c.jpg", "cow", 0, 0, 10, 10, True), ("c.jpg", "cow", 40, 40, 50, 50, False),
         ("c.jpg", "cow", 90, 0, 99, 9, False)],
        columns=list(analysis.TRUTH_COLUMNS))
    return records, detections, truth


def test_pairwise_iou_and_greedy_match():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 31]])
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110]])
    iou = analysis.pairwise_iou(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == 1.0 and iou[0, 1] == 0.0
    assert iou[1, 1] == pytest.approx(100 / 110)
    assert analysis.pairwise_iou(np.zeros((0, 4)), b).shape == (0, 3)
    # the duplicate (lower score, listed first) loses its box to the better detection
    m = analysis.greedy_match(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([0.3, 0.9]), b, 0.5)
    assert m.tolist() == [-1, 0]


def test_precision_recall_exact(case):
    records, detections, _ = case
    pr = analysis.precision_recall(records, detections, conf=0.25, iou_threshold=0.5).set_index("class")
    # cow: labels A3 + C1 = 4; predictions >= 0.25: A4 + B1 + C2 = 7; TP: A's first two only
    assert pr.loc["cow", ["images", "labels", "predictions", "TP"]].tolist() == [2, 4, 7, 2]
    assert pr.loc["cow", "P"] == pytest.approx(2 / 7)
    assert pr.loc["cow", "R"] == pytest.approx(2 / 4)
    assert pr.loc["pig", ["images", "labels", "predictions", "TP"]].tolist() == [1, 1, 1, 1]
    assert pr.loc["pig", "P"] == 1.0 and pr.loc["pig", "R"] == 1.0
    # at conf 0.05 A's low-score hit on its third label counts too
    pr2 = analysis.precision_recall(records, detections, conf=0.05).set_index("class")
    assert pr2.loc["cow", "TP"] == 3 and pr2.loc["cow", "predictions"] == 8


def test_per_class_table_exact(case):
    records, detections, _ = case
    table = analysis.per_class_table(records, detections, conf=0.25).set_index("class")
    assert list(table.index) == ["pig", "cow", "all"]
    assert table.loc["pig", ["mAP@0.5", "mAP@0.75", "mAP@0.5:0.95"]].tolist() == [1.0, 1.0, 1.0]
    # cow, by score: TP TP FP FP FP FP FP(duplicate: the scorer never falls back) TP, 4 labels
    # AP = 0.25 * 1 + 0.25 * 1 + 0.25 * 3/8; at IoU 0.95 the 0.909 match fails: 0.25 + 0.25 * 2/8
    assert table.loc["cow", "mAP@0.5"] == pytest.approx(0.59375)
    assert table.loc["cow", "mAP@0.75"] == pytest.approx(0.59375)
    assert table.loc["cow", "mAP@0.5:0.95"] == pytest.approx((9 * 0.59375 + 0.3125) / 10)
    assert table.loc["all", "labels"] == 5 and table.loc["all", "TP"] == 3
    assert table.loc["all", "P"] == pytest.approx((1 + 2 / 7) / 2)
    assert table.loc["all", "mAP@0.5"] == pytest.approx((1 + 0.59375) / 2)


def test_per_class_table_agrees_with_map_boxes(case):
    map_boxes = pytest.importorskip("map_boxes")
    records, detections, _ = case
    ann, pred = analysis.answer_frames(records, detections)
    table = analysis.per_class_table(records, detections).set_index("class")
    for t, col in ((0.5, "mAP@0.5"), (0.75, "mAP@0.75")):
        _, ref = map_boxes.mean_average_precision_for_boxes(ann, pred, iou_threshold=t, verbose=False)
        for label in ("pig", "cow"):
            assert table.loc[label, col] == pytest.approx(ref[label][0])


def test_boxes_per_image(case):
    records, detections, _ = case
    counts = analysis.boxes_per_image(records, detections, conf=0.25).set_index("image_id")
    assert counts["n_gt"].tolist() == [3, 1, 1]
    assert counts["n_pred"].tolist() == [4, 2, 2]
    assert counts["diff"].tolist() == [1, 1, 1]
    assert analysis.choose_overlay_images(counts.reset_index(), 2) == ["a.jpg", "b.jpg"]


def test_missing_label_ranking(case):
    records, detections, _ = case
    cand = analysis.missing_label_candidates(records, detections, conf=0.5, iou_threshold=0.5)
    # A: the unlabelled 0.7 box (not the 0.3 duplicate: below conf, and it overlaps a label anyway);
    # B: the cow box on the pig image; C: both boxes
    assert sorted(zip(cand["image_id"], cand["score"])) == [
        ("a.jpg", 0.7), ("b.jpg", 0.6), ("c.jpg", 0.55), ("c.jpg", 0.55)]
    by_sum = analysis.rank_missing_label_images(cand, by="sum")
    assert by_sum["image_id"].tolist() == ["c.jpg", "a.jpg", "b.jpg"]
    assert by_sum["rank"].tolist() == [1, 2, 3]
    assert by_sum["sum_conf"].tolist() == pytest.approx([1.1, 0.7, 0.6])
    assert by_sum["n_candidates"].tolist() == [2, 1, 1]
    by_max = analysis.rank_missing_label_images(cand, by="max")
    assert by_max["image_id"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    with pytest.raises(ValueError, match="by must be"):
        analysis.rank_missing_label_images(cand, by="mean")
    assert analysis.rank_missing_label_images(cand.iloc[:0]).empty


def test_missing_label_finder_score(case):
    records, detections, truth = case
    cand = analysis.missing_label_candidates(records, detections, conf=0.5)
    ranked = analysis.rank_missing_label_images(cand, by="sum")
    score = analysis.score_missing_label_finder(cand, ranked, truth, top_k=(1, 2)).set_index("scope")
    assert list(score.index) == ["top 1", "top 2", "all"]
    # top 1 = C: 2 candidates, one is the left-out cow at (40, 40)
    assert score.loc["top 1", ["images", "candidates", "left_out_found"]].tolist() == [1, 2, 1]
    assert score.loc["top 1", "precision"] == 0.5
    # top 2 = C, A: 3 candidates, 2 real
    assert score.loc["top 2", "precision"] == pytest.approx(2 / 3)
    # all: 4 candidates, 2 real (B's box is no animal); 3 left-out boxes exist, 2 found
    assert score.loc["all", ["candidates", "left_out_found", "left_out_total"]].tolist() == [4, 2, 3]
    assert score.loc["all", "precision"] == 0.5
    assert score.loc["all", "recall"] == pytest.approx(2 / 3)


def test_truth_loading_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="truth file not found"):
        analysis.load_truth(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,label,x1,y1,x2,y2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="labelled"):
        analysis.load_truth(bad)
    ok = tmp_path / "ok.csv"
    ok.write_text("image_id,label,x1,y1,x2,y2,labelled\na.jpg,cow,0,0,1,1,0\na.jpg,cow,0,0,2,2,1\n", encoding="utf-8")
    assert analysis.load_truth(ok)["labelled"].tolist() == [False, True]


def test_write_error_analysis_outputs(case, tmp_path: Path):
    records, detections, truth = case
    out = tmp_path / "out"
    written = analysis.write_error_analysis(records, detections, out, conf=0.25, truth=truth, n_overlays=3)
    for name in ("per_class.csv", "boxes_per_image.csv", "boxes_per_image.png", "overlays.png",
                 "missing_candidates.csv", "missing_ranked.csv", "missing_thumbnails.png",
                 "missing_finder_score.csv", "settings.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert set(written.values()) == {p for p in out.iterdir()}
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "per_class.csv").set_index("class")
    assert table.loc["cow", "P"] == pytest.approx(2 / 7)
    assert pd.read_csv(out / "missing_candidates.csv")["is_left_out"].sum() == 2
    # idempotent: a second run writes the same tables and leaves no temp files behind
    before = (out / "per_class.csv").read_text()
    analysis.write_error_analysis(records, detections, out, conf=0.25, truth=truth, n_overlays=3)
    assert (out / "per_class.csv").read_text() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_error_analysis_without_truth_leaves_no_earlier_finder_score(case, tmp_path: Path):
    records, detections, truth = case
    out = tmp_path / "out"
    analysis.write_error_analysis(records, detections, out, truth=truth, n_overlays=0)
    assert (out / "missing_finder_score.csv").is_file()
    written = analysis.write_error_analysis(records, detections, out, truth=None, n_overlays=0)
    assert "missing_finder_score" not in written and not (out / "missing_finder_score.csv").exists()


def test_split_lists_and_selection(case, tmp_path: Path):
    records, _, _ = case
    (tmp_path / "val.txt").write_text("/x/images/a.jpg\n/x/images/c.jpg\n", encoding="utf-8")
    ids = analysis.split_image_ids(tmp_path, "val")
    assert ids == ["a.jpg", "c.jpg"]
    assert [r.image_id for r in analysis.select_records(records, ids)] == ids
    with pytest.raises(ValueError, match="not in the prepared records"):
        analysis.select_records(records, ["zzz.jpg"])
    with pytest.raises(FileNotFoundError, match="train.txt"):
        analysis.split_image_ids(tmp_path, "train")


def test_cli_analyze_reports_bad_input(tmp_path: Path, capsys):
    from livestock.cli import main

    assert main(["analyze", "--weights", "w.pt", "--prepared", str(tmp_path), "--split", str(tmp_path)]) == 1
    assert "records.jsonl: records file not found" in capsys.readouterr().err


def test_cli_analyze_checks_the_truth_file_before_detection(case, tmp_path: Path, capsys):
    from livestock.cli import main

    records, _, _ = case
    prepared, split = tmp_path / "prepared", tmp_path / "split"
    prepared.mkdir()
    split.mkdir()
    save_records(records, prepared / "records.jsonl")
    (split / "val.txt").write_text("".join(f"{r.image_path}\n" for r in records))
    weights = tmp_path / "w.pt"
    weights.write_text("not a checkpoint")
    argv = ["analyze", "--weights", str(weights), "--prepared", str(prepared), "--split", str(split),
            "--out", str(tmp_path / "analysis"), "--cache-dir", "none", "--device", "cpu"]
    assert main([*argv, "--truth", str(tmp_path / "nope.csv")]) == 1
    err = capsys.readouterr().err
    assert f"livestock analyze: error: {tmp_path / 'nope.csv'} not found" in err and "w.pt" not in err, err
    assert not (tmp_path / "analysis").exists()


def test_missing_label_candidates_by_class(case):
    records, detections, truth = case
    cand = analysis.missing_label_candidates(records, detections, conf=0.5, classes=["cow"])
    assert sorted(set(cand["image_id"])) == ["a.jpg", "c.jpg"]  # the pig image is not searched
    ranked = analysis.rank_missing_label_images(cand)
    score = analysis.score_missing_label_finder(cand, ranked, truth, image_ids=["a.jpg", "c.jpg"], top_k=())
    assert score.loc[0, ["candidates", "left_out_found"]].tolist() == [3, 2]
    assert score.loc[0, "precision"] == pytest.approx(2 / 3)
