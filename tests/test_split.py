"""Multilabel-stratified splits: stratification quality, the three sets, files, determinism, CLI."""
from __future__ import annotations

import random

import pandas as pd
import pytest
import yaml

from livestock import cli
from livestock.data import split
from livestock.records import ImageRecord, save_records
from synthetic_records import synthetic_records

N_IMAGES = 3000


@pytest.fixture(scope="module")
def records() -> list[ImageRecord]:
    return synthetic_records(N_IMAGES, seed=0)


@pytest.fixture(scope="module")
def manifest(records) -> pd.DataFrame:
    return split.stratified_split(records, n_splits=5, seed=42)


def test_manifest_columns_and_folds(manifest):
    assert list(manifest.columns) == list(split.MANIFEST_COLUMNS)
    assert len(manifest) == N_IMAGES and manifest["image_id"].is_unique
    assert sorted(manifest["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (manifest.loc[manifest["fold"] == 0, "split"] == "val").all()
    assert (manifest.loc[manifest["fold"] != 0, "split"] == "train").all()
    # every fold holds a fifth of the images (iterative stratification fills folds to their desired size)
    assert manifest["fold"].value_counts().between(N_IMAGES / 5 - 2, N_IMAGES / 5 + 2).all()


def test_every_label_share_within_2_points_in_each_fold(manifest):
    report = split.stratification_report(manifest)
    assert list(report.index) == ["pig", "cow", "little", "medium", "many"]
    assert (report["max_dev_pp"] <= 2.0).all(), report
    # and the report is right: recompute one share by hand
    fold0 = manifest[manifest["fold"] == 0]
    assert report.loc["many", "fold 0"] == pytest.approx(100 * (fold0["group"] == "many").mean(), abs=0.01)


def test_extra_labels_are_stratified_too(records):
    m = split.stratified_split(records, extra_labels="ratio,size")
    extra = [c for c in m.columns if c.startswith(("ratio_", "size_"))]
    assert extra == ["ratio_horizontal", "ratio_square", "ratio_vertical", "size_very_large", "size_large",
                     "size_medium", "size_small", "size_very_small", "size_out"]
    # presence columns are right for one image
    r = next(x for x in records if x.n_boxes > 0)
    row = m.set_index("image_id").loc[r.image_id]
    w, h = r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]
    assert row["ratio_horizontal"] == int((w / (w + h) >= 0.6).any())
    assert row["size_very_large"] == int((w * h >= 100_000).any())
    report = split.stratification_report(m)
    assert (report.loc[["pig", "cow", "little", "medium", "many"], "max_dev_pp"] <= 2.0).all(), report
    assert (report.loc[extra, "max_dev_pp"] <= 3.0).all(), report
    assert split.label_matrix(records, ["ratio"]).shape == (N_IMAGES, 8)


def test_multilabel_set_is_a_partition(manifest):
    rows = split.select_set(manifest, "multilabel")
    train, val = set(rows.loc[rows["split"] == "train", "image_id"]), set(rows.loc[rows["split"] == "val", "image_id"])
    assert not train & val
    assert train | val == set(manifest["image_id"])
    assert len(val) == pytest.approx(N_IMAGES / 5, abs=2)


def test_full_set_trains_on_everything(manifest):
    rows = split.select_set(manifest, "full")
    train, val = set(rows.loc[rows["split"] == "train", "image_id"]), set(rows.loc[rows["split"] == "val", "image_id"])
    assert train == set(manifest["image_id"])
    assert val == set(manifest.loc[manifest["split"] == "val", "image_id"])  # the multilabel val, for monitoring


def test_mini_set_is_three_folds_inside_the_multilabel_train(manifest):
    rows = split.select_set(manifest, "mini")
    train, val = set(rows.loc[rows["split"] == "train", "image_id"]), set(rows.loc[rows["split"] == "val", "image_id"])
    assert not train & val
    assert len(train) == pytest.approx(0.4 * N_IMAGES, abs=4) and len(val) == pytest.approx(0.2 * N_IMAGES, abs=2)
    assert not (train | val) & set(manifest.loc[manifest["split"] == "val", "image_id"])
    # stratified the same way: the label shares of mini-train and mini-val follow the whole set
    report = split.stratification_report(rows, by="split")
    assert (report["max_dev_pp"] <= 2.0).all(), report


def test_determinism(records, manifest):
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    again = split.stratified_split(shuffled, n_splits=5, seed=42)
    pd.testing.assert_frame_equal(again, manifest)
    other = split.stratified_split(records, n_splits=5, seed=43)
    assert (other["fold"].to_numpy() != manifest["fold"].to_numpy()).mean() > 0.5


def test_split_table(manifest):
    rows = split.select_set(manifest, "multilabel")
    table = split.split_table(rows)
    assert list(table.index) == ["train", "val"]
    assert [c for c in table.columns] == [("cow", "little"), ("cow", "medium"), ("cow", "many"), ("cow", "total"),
                                          ("pig", "little"), ("pig", "medium"), ("pig", "many"), ("pig", "total"),
                                          ("all", "images")]
    val = rows[rows["split"] == "val"]
    assert table.loc["val", ("pig", "many")] == int(((val["label"] == "pig") & (val["group"] == "many")).sum())
    assert table.loc["val", ("cow", "total")] == int((val["label"] == "cow").sum())
    assert table[("all", "images")].sum() == N_IMAGES
    assert (table[("cow", "total")] + table[("pig", "total")] == table[("all", "images")]).all()
    assert "medium" in table.to_string() and "little" in table.to_string()


def test_write_split_files(tmp_path, manifest):
    out = tmp_path / "multilabel"
    rows = split.write_split(manifest, out, "multilabel")
    train = (out / "train.txt").read_text().splitlines()
    val = (out / "val.txt").read_text().splitlines()
    assert len(train) == int((rows["split"] == "train").sum()) and len(val) == int((rows["split"] == "val").sum())
    assert all(line.startswith("/") and line.endswith(".jpg") for line in train + val)
    assert not set(train) & set(val)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["nc"] == 2 and data["names"] == ["pig", "cow"]
    assert data["train"] == str((out / "train.txt").resolve()) and data["val"] == str((out / "val.txt").resolve())
    back = pd.read_csv(out / "manifest.csv")
    assert list(back.columns) == list(split.MANIFEST_COLUMNS) and len(back) == len(rows)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    split.write_split(manifest, out, "multilabel")  # idempotent, no temp files left behind
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_make_all_splits(tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    recs = synthetic_records(200, seed=5, image_dir=str(tmp_path / "elsewhere"))
    save_records(recs, prepared / "records.jsonl")
    sets = split.make_all_splits(prepared, tmp_path / "splits")
    assert set(sets) == {"multilabel", "full", "mini"}
    for which in sets:
        for name in ("train.txt", "val.txt", "manifest.csv", "data.yaml"):
            assert (tmp_path / "splits" / which / name).is_file(), (which, name)
    full_train = (tmp_path / "splits" / "full" / "train.txt").read_text().split()
    assert sorted(full_train) == sorted(r.image_path for r in recs)
    ml_val = (tmp_path / "splits" / "multilabel" / "val.txt").read_text().split()
    assert (tmp_path / "splits" / "full" / "val.txt").read_text().split() == ml_val


def test_bad_input(records):
    with pytest.raises(ValueError, match="3 images cannot be split into 5 folds"):
        split.stratified_split(records[:3])
    with pytest.raises(ValueError, match="no records"):
        split.stratified_split([])
    with pytest.raises(ValueError, match="unknown extra label kind 'colour'"):
        split.stratified_split(records[:20], extra_labels="ratio,colour")
    with pytest.raises(ValueError, match="unknown set"):
        split.select_set(split.stratified_split(records[:20]), "tiny")
    with pytest.raises(ValueError, match="lacks columns"):
        split.select_set(pd.DataFrame({"image_id": ["a"]}), "full")
    assert split.parse_extra_labels(" size, ratio,size ") == ("size", "ratio")
    assert split.parse_extra_labels(None) == () and split.parse_extra_labels("") == ()


def test_cli_split(tmp_path, capsys):
    prepared = tmp_path / "prepared"
    (prepared / "images").mkdir(parents=True)
    records = synthetic_records(100, seed=6, image_dir=str(prepared / "images"))
    save_records(records, prepared / "records.jsonl")
    for r in records:
        (prepared / "images" / r.image_id).touch()
    out = tmp_path / "splits"
    assert cli.main(["split", str(prepared), "--out", str(out), "--extra-labels", "ratio,size"]) == 0
    printed = capsys.readouterr().out
    assert "multilabel" in printed and "mini" in printed and "little" in printed
    assert "ratio_square" in pd.read_csv(out / "mini" / "manifest.csv").columns
    assert cli.main(["split", str(prepared), "--out", str(out), "--extra-labels", "shade"]) == 1
    assert "shade" in capsys.readouterr().err
    assert cli.main(["split", str(tmp_path / "absent"), "--out", str(out)]) == 1
    capsys.readouterr()
    assert cli.main(["split", str(prepared), "--out", str(out), "--sets", ","]) == 1
    assert "--sets ',': name one or more of" in capsys.readouterr().err
    (prepared / "images" / records[7].image_id).unlink()
    assert cli.main(["split", str(prepared), "--out", str(out)]) == 1
    assert f"{records[7].image_id}: image of" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["split", "eda"])
@pytest.mark.parametrize("size", [(-5, 1080), (1920, 0)])
def test_cli_refuses_a_record_of_no_size(tmp_path, capsys, command, size):
    """split and eda read the prepared records.jsonl: a record whose width or height is not positive is refused,
    naming the file and its line, before anything is written."""
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    records = synthetic_records(20, seed=6)
    bad = records[3]
    records[3] = ImageRecord(bad.image_id, bad.image_path, *size, bad.label, bad.boxes)
    save_records(records, prepared / "records.jsonl")
    out = tmp_path / "out"
    assert cli.main([command, str(prepared), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (f"livestock {command}: error: {prepared / 'records.jsonl'}:4: malformed record: {bad.image_id}: "
                   f"width and height must be positive, got {size[0]}x{size[1]}\n")
    assert not out.exists()


def test_cli_split_refuses_a_set_without_labels(tmp_path, capsys):
    from aihub_builders import write_basic_set
    from livestock.data.yolo_format import prepare_dataset

    write_basic_set(tmp_path / "data_test")
    prepare_dataset(tmp_path / "data_test", tmp_path / "prep_test", images_only=True, progress=False)
    assert cli.main(["split", str(tmp_path / "prep_test"), "--out", str(tmp_path / "splits")]) == 1
    assert "prep_test: prepared from test zips (images only, no labels)" in capsys.readouterr().err
    assert not (tmp_path / "splits").exists()
