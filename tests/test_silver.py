"""Silver labels: merge rules, the plus dataset on disk (links, labels, no leakage), quality on hand-made truth."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from livestock.evaluation import silver
from livestock.evaluation.inference import score_detections
from livestock.experiments import training_sets
from livestock.evaluation.analysis import pairwise_iou
from livestock.records import CLASS_TO_ID, Detections, ImageRecord, load_records, save_records
from livestock.data.yolo_format import label_path_for, read_label_file

COW, PIG = CLASS_TO_ID["cow"], CLASS_TO_ID["pig"]
GOLD = [[0, 0, 10, 10], [20, 20, 30, 30]]


def _det(image_id, rows, size=100):
    arr = np.asarray(rows, dtype=float).reshape(-1, 6)
    return Detections(image_id, size, size, arr[:, :4], arr[:, 4], arr[:, 5].astype(int))


@pytest.fixture()
def gold():
    return ImageRecord("cow1.jpg", "/nowhere/cow1.jpg", 100, 100, "cow", GOLD)


@pytest.fixture()
def det():
    # a copy of gold box 1; a shifted gold box 2 (IoU 81/119 = 0.68); two new boxes; one below conf 0.05,
    # predicted as pig (the class is the image's anyway)
    return _det("cow1.jpg", [(0, 0, 10, 10, 0.9, COW), (21, 21, 31, 31, 0.8, COW), (50, 50, 60, 60, 0.7, PIG),
                             (56, 50, 66, 60, 0.6, COW), (80, 80, 90, 90, 0.03, COW)])


def test_replace_mode_is_the_original_rule(gold, det):
    s = silver.merge_silver(gold, det, "replace", conf=0.05, min_boxes=4)
    assert s.label == "cow" and s.image_id == gold.image_id and s.image_path == gold.image_path
    # the predictions >= 0.05 become the labels, by confidence; the gold boxes are gone as such
    assert s.boxes.tolist() == [[0, 0, 10, 10], [21, 21, 31, 31], [50, 50, 60, 60], [56, 50, 66, 60]]
    # min-box filter: 4 boxes pass at >= 4, not at >= 5; the 0.03 box does not count
    assert silver.merge_silver(gold, det, "replace", conf=0.05, min_boxes=5) is None
    assert silver.merge_silver(gold, det, "replace", conf=0.0, min_boxes=5).n_boxes == 5


def test_union_keeps_gold_and_adds_no_duplicate(gold, det):
    s = silver.merge_silver(gold, det, "union", conf=0.05, min_boxes=4, merge_iou=0.5)
    assert s.boxes[:2].tolist() == GOLD  # all gold boxes, first, unchanged
    # the copy (IoU 1) and the shifted box (IoU 0.68) overlap gold: not added
    assert s.boxes[2:].tolist() == [[50, 50, 60, 60], [56, 50, 66, 60]]
    assert s.label == "cow"
    # a looser merge threshold lets the shifted box in; the exact copy never
    s2 = silver.merge_silver(gold, det, "union", conf=0.05, min_boxes=4, merge_iou=0.7)
    assert s2.n_boxes == 5 and [0, 0, 10, 10] not in s2.boxes[2:].tolist()
    assert silver.merge_silver(gold, det, "union", conf=0.05, min_boxes=5) is None


def test_merge_rejects_bad_input(gold, det):
    with pytest.raises(ValueError, match="mode must be"):
        silver.merge_silver(gold, det, "intersect")
    with pytest.raises(ValueError, match="given for record"):
        silver.merge_silver(gold, _det("other.jpg", []), "union")


def test_build_silver_records_filters_images(gold, det):
    few = ImageRecord("cow2.jpg", "/nowhere/cow2.jpg", 100, 100, "cow", [[0, 0, 5, 5]])
    out = silver.build_silver_records([gold, few], [det, _det("cow2.jpg", [(40, 40, 50, 50, 0.9, COW)])],
                                      "union", conf=0.05, min_boxes=4)
    assert [r.image_id for r in out] == ["cow1.jpg"]
    # an image without any detection entry is simply not kept
    assert silver.build_silver_records([few], [], "replace", min_boxes=0)[0].n_boxes == 0
    assert silver.build_silver_records([few], [], "replace", min_boxes=1) == []


def test_silver_quality_exact(gold, det):
    dropped = ImageRecord("cow2.jpg", "/nowhere/cow2.jpg", 100, 100, "cow", [[0, 0, 5, 5]])
    truth = pd.DataFrame(
        [("cow1.jpg", "cow", 0, 0, 10, 10, True), ("cow1.jpg", "cow", 20, 20, 30, 30, True),
         ("cow1.jpg", "cow", 50, 50, 60, 60, False), ("cow1.jpg", "cow", 80, 0, 90, 10, False),
         ("cow2.jpg", "cow", 0, 0, 5, 5, True), ("cow2.jpg", "cow", 60, 60, 70, 70, False)],
        columns=["image_id", "label", "x1", "y1", "x2", "y2", "labelled"])
    sets = {m: silver.build_silver_records([gold, dropped], [det], m, conf=0.05, min_boxes=4) for m in silver.MODES}
    q = silver.silver_quality([gold, dropped], sets, truth).set_index("mode")
    for mode in silver.MODES:
        row = q.loc[mode]
        assert row[["images", "silver_images", "left_out", "recovered"]].tolist() == [2, 1, 3, 1]
        assert row["recover_share"] == pytest.approx(1 / 3)  # (50,50) found; (80,0) missed; cow2 filtered out
        # added: (50,50) right, (56,50) wrong (IoU 0.25 with the true cow)
        assert row[["added", "wrong"]].tolist() == [2, 1]
        assert row["wrong_share"] == 0.5
        assert row["gold_boxes"] == 2
    # replace redraws gold box 2 at IoU 0.68 < 0.75: half the gold boxes are lost; union keeps all
    assert q.loc["replace", "gold_kept_share"] == 0.5
    assert q.loc["union", "gold_kept_share"] == 1.0
    with pytest.raises(ValueError, match="not among the gold images"):
        silver.silver_quality([dropped], sets, truth)


def test_check_no_leakage():
    silver.check_no_leakage(["a.jpg", "b.jpg"], {"validation": ["c.jpg"], "test": []})
    with pytest.raises(ValueError, match="1 validation image"):
        silver.check_no_leakage(["a.jpg", "b.jpg"], {"validation": ["b.jpg", "c.jpg"]})


# ---------------------------------------------------------------- the plus dataset on disk


@pytest.fixture()
def prepared(tmp_path: Path):
    """A prepared-like folder: 3 training images (2 cow, 1 pig) and 1 validation image, plus list files."""
    images = tmp_path / "prepared" / "images"
    images.mkdir(parents=True)
    recs = []
    for name, label, boxes in (("cow_a.jpg", "cow", GOLD), ("cow_b.jpg", "cow", [[5, 5, 15, 15]]),
                               ("pig_a.jpg", "pig", [[30, 30, 60, 60]]), ("cow_v.jpg", "cow", [[1, 1, 9, 9]])):
        cv2.imwrite(str(images / name), np.full((100, 120, 3), 90, np.uint8))
        recs.append(ImageRecord(name, str(images / name), 120, 100, label, boxes))
    split = tmp_path / "split"
    split.mkdir()
    (split / "train.txt").write_text("".join(f"{images / n}\n" for n in ("cow_a.jpg", "cow_b.jpg", "pig_a.jpg")))
    (split / "val.txt").write_text(f"{images / 'cow_v.jpg'}\n")
    return recs, split


def _silver_for_cow_a(recs, mode):
    d = _det("cow_a.jpg", [(0, 0, 10, 10, 0.9, COW), (50, 50, 60, 60, 0.7, COW), (70, 10, 80, 20, 0.6, COW),
                           (90, 60, 100, 70, 0.5, COW)])
    return silver.build_silver_records(recs[:2], [d], mode, conf=0.05, min_boxes=4)


@pytest.mark.parametrize("mode", silver.MODES)
def test_write_plus_dataset(prepared, tmp_path: Path, mode):
    recs, split = prepared
    train = recs[:3]
    silver_recs = _silver_for_cow_a(recs, mode)
    out = tmp_path / "plus" / mode
    data_yaml = silver.write_plus_dataset(train, silver_recs, out, mode=mode, val=split / "val.txt")
    doc = yaml.safe_load(data_yaml.read_text())
    assert doc["names"] == ["pig", "cow"]
    assert Path(doc["val"]) == (split / "val.txt").resolve()
    lines = Path(doc["train"]).read_text().split()
    names = [Path(p).name for p in lines]
    if mode == "replace":
        assert names == ["cow_a.jpg", "cow_a_silver.jpg", "cow_b.jpg", "pig_a.jpg"]
    else:
        assert names == ["cow_a.jpg", "cow_b.jpg", "pig_a.jpg"]
    assert "cow_v.jpg" not in names  # nothing from validation
    for p in lines:
        # each entry is a link inside the plus set, and YOLOv5's /images/ -> /labels/ rule finds its labels
        assert Path(p).parent == (out / "images").absolute()
        assert os.path.islink(p) or Path(p).stat().st_nlink > 1
        assert cv2.imread(p) is not None
        assert label_path_for(p).is_file()
    cls, boxes = read_label_file(out / "labels" / "cow_a.txt")
    assert set(cls.tolist()) == {COW}
    if mode == "union":
        assert len(cls) == 5  # 2 gold + 3 new (the copy of gold box 1 is not added)
    else:
        assert len(cls) == 2  # the gold copy keeps its gold labels
        assert len(read_label_file(out / "labels" / "cow_a_silver.txt")[0]) == 4
    assert read_label_file(out / "labels" / "pig_a.txt")[0].tolist() == [PIG]  # classes kept
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest["kind"].value_counts().to_dict() == ({"gold": 3, "silver": 1} if mode == "replace"
                                                         else {"gold": 2, "silver": 1})
    plus_records = load_records(out / "records.jsonl")
    assert [r.image_id for r in plus_records] == names
    # idempotent: a rebuild replaces the folder cleanly, nothing stale, no temp folders left
    silver.write_plus_dataset(train, [], out, mode=mode, val=split / "val.txt")
    assert sorted(p.name for p in (out / "images").iterdir()) == ["cow_a.jpg", "cow_b.jpg", "pig_a.jpg"]
    assert read_label_file(out / "labels" / "cow_a.txt")[0].tolist() == [COW, COW]
    assert [p.name for p in out.parent.iterdir()] == [mode]


def test_plus_dataset_refuses_leakage(prepared, tmp_path: Path):
    recs, split = prepared
    with pytest.raises(ValueError, match="validation image"):
        silver.write_plus_dataset(recs, [], tmp_path / "plus", mode="union", val=split / "val.txt")
    test_list = tmp_path / "test.txt"
    test_list.write_text("/elsewhere/images/pig_a.jpg\n")
    with pytest.raises(ValueError, match="test image"):
        silver.write_plus_dataset(recs[:3], [], tmp_path / "plus", mode="union", val=split / "val.txt",
                                  test=test_list)
    with pytest.raises(ValueError, match="not in the training list"):
        silver.write_plus_dataset(recs[1:3], _silver_for_cow_a(recs, "union"), tmp_path / "plus", mode="union",
                                  val=split / "val.txt")
    assert not (tmp_path / "plus").exists()


# ---------------------------------------------------------------- background frames


def test_largest_free_rectangle():
    # 64 x 32 frame on a 1-px lattice: a box over the left half leaves the right half
    assert silver.largest_free_rectangle(np.array([[0, 0, 32, 32]]), 64, 32, margin=0.0) == (32, 0, 64, 32)
    assert silver.largest_free_rectangle(np.zeros((0, 4)), 64, 32) == (0, 0, 64, 32)
    assert silver.largest_free_rectangle(np.array([[0, 0, 64, 32]]), 64, 32, margin=0.0) is None
    # two boxes: the free band between them (x 20..44) beats the strips at the sides
    rect = silver.largest_free_rectangle(np.array([[0, 0, 20, 32], [44, 0, 64, 32]]), 64, 32, margin=0.0)
    assert rect == (20, 0, 44, 32)


def test_background_crops_avoid_gold_and_predicted_boxes(prepared):
    recs, _ = prepared
    cow_a = recs[0]  # 120 x 100, gold boxes in the top-left corner
    d = _det("cow_a.jpg", [(60, 0, 120, 100, 0.2, COW)])  # an unlabelled cow over the right half
    crops = list(silver.background_crops([cow_a], [d], n=3, min_side=0.1))
    assert len(crops) == 1 and crops[0][0] == "cow_a.jpg"
    img = crops[0][1]
    # the crop lies left of the prediction and below the gold boxes (grown by the 2 % margin)
    assert img.shape[1] <= 60 and img.shape[0] < 100
    free = silver.largest_free_rectangle(np.concatenate([cow_a.boxes, d.boxes]), 120, 100)
    assert pairwise_iou(np.array([free]), np.concatenate([cow_a.boxes, d.boxes])).max() == 0
    # too strict a size requirement: no crop at all
    assert list(silver.background_crops([cow_a], [d], n=3, min_side=0.9)) == []


def test_rendered_background_has_synth_style():
    rng = np.random.default_rng(0)
    img = silver.render_background(rng, "cow", 240, 135)
    assert img.shape == (135, 240, 3) and img.dtype == np.uint8
    assert img.std() > 3  # a textured barn, not a flat fill
    assert silver.render_background(np.random.default_rng(1), "pig", 160, 120).shape == (120, 160, 3)


def test_plus_dataset_with_backgrounds(prepared, tmp_path: Path):
    recs, split = prepared
    train = recs[:3]
    bgs = list(silver.rendered_backgrounds(train, 2, seed=0))
    bgs.append(("pig_a.jpg", np.full((40, 50, 3), 100, np.uint8)))
    out = tmp_path / "plus"
    data_yaml = silver.write_plus_dataset(train, [], out, mode="union", val=split / "val.txt", backgrounds=bgs)
    lines = Path(yaml.safe_load(data_yaml.read_text())["train"]).read_text().split()
    bg_lines = [p for p in lines if Path(p).name.startswith(silver.BACKGROUND_PREFIX)]
    assert len(bg_lines) == 3
    for p in bg_lines:
        assert cv2.imread(p) is not None
        assert label_path_for(p).read_text() == ""  # empty label file: an image with no object
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert (manifest["kind"] == "background").sum() == 3
    with pytest.raises(ValueError, match="not in the training list"):
        silver.write_plus_dataset(train, [], out, mode="union", val=split / "val.txt",
                                  backgrounds=[("cow_v.jpg", np.zeros((8, 8, 3), np.uint8))])


# ---------------------------------------------------------------- gold vs gold + silver helpers


def test_epochs_for_budget():
    assert training_sets.epochs_for_budget(30, 100, 150, "epochs") == 30
    assert training_sets.epochs_for_budget(30, 100, 150, "images") == 20  # same images seen: 100 * 30 = 150 * 20
    assert training_sets.epochs_for_budget(1, 100, 1000, "images") == 1  # never below one epoch
    with pytest.raises(ValueError, match="budget must be"):
        training_sets.epochs_for_budget(30, 100, 150, "steps")


def test_count_train_images(prepared, tmp_path: Path):
    recs, split = prepared
    data_yaml = silver.write_plus_dataset(recs[:3], _silver_for_cow_a(recs, "replace"), tmp_path / "plus",
                                          mode="replace", val=split / "val.txt")
    assert training_sets.count_train_images(data_yaml) == 4


def test_score_detections_exact():
    answer = pd.DataFrame([("a.jpg", "cow", 0.0, 0.1, 0.0, 0.1), ("a.jpg", "cow", 0.5, 0.6, 0.5, 0.6)],
                          columns=["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"])
    # one exact hit, one box stretched to IoU 0.625 (a match at 0.5..0.6, not above), one false positive
    d = _det("a.jpg", [(0, 0, 10, 10, 0.9, COW), (50, 50, 60, 66, 0.8, COW), (80, 80, 90, 90, 0.7, COW)])
    s = score_detections([d], answer)
    assert s["mAP@0.5"] == pytest.approx(1.0)
    assert s["mAP@0.75"] == pytest.approx(0.5)
    assert s["mAP@0.5:0.95"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)  


def test_cli_silver_reports_bad_input(tmp_path: Path, capsys):
    from livestock.cli import main

    assert main(["silver", "--weights", str(tmp_path / "none.pt"), "--prepared", str(tmp_path)]) == 1
    assert "none.pt: weights not found" in capsys.readouterr().err
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert main(["silver", "--weights", str(weights), "--prepared", str(tmp_path), "--split", str(tmp_path)]) == 1
    assert "records.jsonl: records file not found" in capsys.readouterr().err


def _silver_cli(prepared, tmp_path: Path) -> list[str]:
    """``livestock silver`` on the prepared-like folder with weights no model loads from: an error about the
    weights means the settings passed their checks."""
    recs, split = prepared
    save_records(recs, tmp_path / "prepared" / "records.jsonl")
    weights = tmp_path / "w.pt"
    weights.write_text("not a checkpoint")
    return ["silver", "--weights", str(weights), "--prepared", str(tmp_path / "prepared"), "--split", str(split),
            "--out", str(tmp_path / "silver"), "--cache-dir", "none", "--device", "cpu"]


def test_cli_silver_checks_its_settings_before_detection(prepared, tmp_path: Path, capsys):
    from livestock.cli import main

    base = _silver_cli(prepared, tmp_path)
    assert main([*base, "--min-boxes", "-1", "--nms-iou", "0", "--merge-iou", "5"]) == 1
    err = capsys.readouterr().err
    assert "livestock silver: error: --nms-iou 0.0, --merge-iou 5.0, --min-boxes -1: " in err, err
    assert main([*base, "--conf", "2"]) == 1
    err = capsys.readouterr().err
    assert "livestock silver: error: --conf 2.0: " in err and "conf_floor" not in err, err
    assert main(base) == 1  # settings in range: on to the model, which does not load
    assert "w.pt" in capsys.readouterr().err
    assert not (tmp_path / "silver").exists()


def test_cli_silver_checks_its_lists_and_truth_before_detection(prepared, tmp_path: Path, capsys):
    from livestock.cli import main

    base = _silver_cli(prepared, tmp_path)
    recs, split = prepared
    listed = tmp_path / "test.txt"
    listed.write_text(f"{recs[3].image_path}\n{tmp_path / 'gone.jpg'}\n")
    for option, message in ((["--test", str(tmp_path / "nope")], f"{tmp_path / 'nope'}: image source not found"),
                            (["--test", str(listed)], f"{listed}: names a missing image {tmp_path / 'gone.jpg'}"),
                            (["--truth", str(tmp_path / "nope.csv")], f"{tmp_path / 'nope.csv'} not found")):
        assert main([*base, *option]) == 1
        err = capsys.readouterr().err
        assert f"livestock silver: error: {message}" in err and "w.pt" not in err, err
    assert not (tmp_path / "silver").exists()


def test_silver_threshold_sweep(gold, det):
    truth = pd.DataFrame(
        [("cow1.jpg", "cow", 0, 0, 10, 10, True), ("cow1.jpg", "cow", 20, 20, 30, 30, True),
         ("cow1.jpg", "cow", 50, 50, 60, 60, False)],
        columns=["image_id", "label", "x1", "y1", "x2", "y2", "labelled"])
    sweep = silver.silver_threshold_sweep([gold], [det], truth, confs=(0.05, 0.75), modes=("union",), min_boxes=2)
    assert list(sweep.columns[:2]) == ["conf", "mode"]
    at = sweep.set_index("conf")
    # 0.05: boxes 0.9 / 0.8 / 0.7 / 0.6 -> (50,50) recovered, (56,50) wrong
    assert at.loc[0.05, ["silver_images", "recovered", "added", "wrong"]].tolist() == [1, 1, 2, 1]
    # 0.75: only the 0.9 copy and the 0.8 shifted box remain, both overlap gold: nothing added or recovered
    assert at.loc[0.75, ["silver_images", "recovered", "added", "wrong"]].tolist() == [1, 0, 0, 0]
    assert np.isnan(at.loc[0.75, "wrong_share"])
