"""EDA tables and buckets on hand-made records (exact counts) and on a realistic synthetic set."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from livestock import cli
from livestock.data import eda
from livestock.records import ImageRecord, save_records
from synthetic_records import synthetic_records, write_tiny_prepared


def rec(i: int, label: str, boxes, size=(1920, 1080)) -> ImageRecord:
    return ImageRecord(f"livestock_{label}_bbox_{i:06d}.jpg", f"/x/images/livestock_{label}_bbox_{i:06d}.jpg",
                       size[0], size[1], label, boxes)


def box_wh(w: float, h: float, x: float = 10, y: float = 10) -> list[float]:
    return [x, y, x + w, y + h]


# ---------------------------------------------------------------- buckets at their boundaries


@pytest.mark.parametrize("label,n,group", [
    ("cow", 0, "little"), ("cow", 3, "little"), ("cow", 4, "medium"), ("cow", 5, "medium"), ("cow", 6, "many"),
    ("cow", 11, "many"), ("pig", 0, "little"), ("pig", 7, "little"), ("pig", 8, "medium"), ("pig", 12, "medium"),
    ("pig", 13, "many"), ("pig", 30, "many"),
])
def test_count_group_boundaries(label, n, group):
    assert eda.count_group(label, n) == group


def test_count_groups_reproduce_the_real_cow_groups():
    # the real cow histogram per count (first and last bins split over their two counts): the groups must come
    # out as the write-up's 7,383 / 3,413 / 1,356 with little < 4, medium 4-5, many >= 6
    per_count = [3, 1987, 2408, 2985, 2099, 1314, 661, 400, 222, 56, 12, 5]
    n = np.repeat(np.arange(len(per_count)), per_count)
    groups = pd.Series(eda.count_groups(["cow"] * len(n), n)).value_counts()
    assert groups.to_dict() == {"little": 7383, "medium": 3413, "many": 1356}


def test_count_groups_unknown_class():
    with pytest.raises(ValueError, match="horse"):
        eda.count_groups(["horse"], [3])


def test_shape_buckets_boundaries():
    w = [60, 40, 59, 41, 50, 600, 1, 0]
    h = [40, 60, 41, 59, 50, 400, 99, 0]
    assert list(eda.shape_buckets(w, h)) == [
        "horizontal", "vertical", "square", "square", "square", "horizontal", "vertical", "square"]


def test_size_buckets_boundaries():
    areas = [100_000, 99_999.9, 50_000, 49_999, 10_000, 9_999, 1_000, 999, 100, 99.9, 0, 4e6]
    assert list(eda.size_buckets(areas)) == [
        "very_large", "large", "large", "medium", "medium", "small", "small", "very_small", "very_small",
        "out", "out", "very_large"]


# ---------------------------------------------------------------- tables, exact counts


@pytest.fixture
def hand_records() -> list[ImageRecord]:
    return [
        # 4000 horizontal, 4000 vertical, 3000 square
        rec(0, "cow", [box_wh(100, 40), box_wh(40, 100), box_wh(50, 60)]),
        rec(1, "cow", []),  # no box
        rec(2, "cow", [box_wh(400, 300), box_wh(20, 30)]),  # 120000 square (400/700 = 0.57); 600 vertical (30/50 = 0.6)
        rec(3, "pig", [box_wh(300, 100)] * 8, size=(1280, 960)),  # 8 x 30000, horizontal, medium size
        rec(4, "pig", [box_wh(200, 250.5)] * 13),  # 13 x 50100, square, large
        rec(5, "pig", [box_wh(8, 10)]),  # area 80 -> out
    ]


def test_summary_table_exact(hand_records):
    t = eda.summary_table(hand_records)
    assert list(t.columns) == ["pig", "cow"]
    assert t.loc["images"].tolist() == [3, 3]
    assert t.loc["1920x1080"].tolist() == [2, 3]
    assert t.loc["1280x960"].tolist() == [1, 0]
    assert t.loc["images with no box"].tolist() == [0, 1]
    assert t.loc["boxes"].tolist() == [22, 5]
    # area <= 4,000 px^2: both 4,000 px^2 cow boxes count (<=), with the 3,000 and 600 ones; pig: the 80 px^2 box
    assert t.loc["boxes with area <= 4,000 px^2"].tolist() == [1, 4]
    assert t.loc["boxes with area <= 4,000 px^2 (%)"].tolist() == [round(100 / 22, 2), 80.0]


def test_small_and_empty_lists(hand_records):
    assert eda.empty_images(hand_records)["image_id"].tolist() == ["livestock_cow_bbox_000001.jpg"]
    small = eda.small_boxes(hand_records)
    assert sorted(small["area"].tolist()) == [80.0, 600.0, 3000.0, 4000.0, 4000.0]
    assert len(eda.small_boxes(hand_records, max_area=3999.9)) == 3


def test_images_per_class_and_sizes(hand_records):
    t = eda.images_per_class(hand_records)
    assert t["images"].to_dict() == {"pig": 3, "cow": 3}
    assert t["share_%"].tolist() == [50.0, 50.0]
    sizes = eda.image_sizes(hand_records)
    assert sizes.loc["1920x1080"].tolist() == [2, 3] and sizes.loc["1280x960"].tolist() == [1, 0]


def test_shape_and_size_tables(hand_records):
    shapes = eda.box_shape_table(hand_records)
    assert shapes.loc["cow"].tolist() == [1, 2, 2]  # horizontal 100x40; square 50x60, 400x300; vertical 40x100, 20x30
    assert shapes.loc["pig"].tolist() == [8, 14, 0]  # 8 x 300x100; 13 x 200x250.5 + 8x10
    sizes = eda.box_size_table(hand_records)
    assert list(sizes.columns) == ["very_large", "large", "medium", "small", "very_small", "out"]
    assert sizes.loc["cow"].tolist() == [1, 0, 0, 3, 1, 0]
    assert sizes.loc["pig"].tolist() == [0, 13, 8, 0, 0, 1]
    pct = eda.box_size_table(hand_records, normalize=True)
    assert pct.loc["cow"].sum() == pytest.approx(100.0)


def test_box_count_groups_table(hand_records):
    t = eda.box_count_groups(hand_records)
    assert t.loc["cow", ["little", "medium", "many"]].tolist() == [3, 0, 0]
    assert t.loc["pig", ["little", "medium", "many"]].tolist() == [1, 1, 1]  # 1 box, 8 boxes, 13 boxes
    assert t["images"].tolist() == [3, 3]


def test_box_count_histogram_bins_like_the_original():
    records = [rec(i, "cow", [box_wh(50, 50)] * k) for i, k in enumerate(list(range(12)) + [3, 3])]
    h = eda.box_count_histogram(records, "cow")
    assert len(h) == 10  # width 1.1 from 0 to 11
    assert h["bin"].iloc[0] == "[0, 1.1)" and h["bin"].iloc[-1] == "[9.9, 11]"
    assert h["counts"].tolist() == ["0-1", "2", "3", "4", "5", "6", "7", "8", "9", "10-11"]
    assert h["images"].tolist() == [2, 1, 3, 1, 1, 1, 1, 1, 1, 2]
    # a count above 11 widens the range instead of falling outside it
    h = eda.box_count_histogram(records + [rec(99, "cow", [box_wh(5, 5)] * 15)], "cow")
    assert h["images"].sum() == 15 and h["counts"].iloc[-1] == "15"


def test_ks_distance():
    assert eda.ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert eda.ks_distance([1, 2], [5, 6]) == 1.0
    assert eda.ks_distance([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)


def test_synthetic_set_matches_the_real_shape():
    records = synthetic_records(1500, seed=1)
    comparison = eda.distribution_comparison(records)
    # box ratios alike, box counts far apart (what the write-up found on the real set)
    assert comparison.loc["box ratio w/(w+h)", "ks_distance"] < 0.05
    assert comparison.loc["boxes per image", "ks_distance"] > 0.5
    stats = eda.box_ratio_stats(records)
    assert stats["count"].sum() == sum(r.n_boxes for r in records)


# ---------------------------------------------------------------- run_eda, files, CLI


def test_load_prepared_records_rebases_paths(tmp_path):
    prepared = tmp_path / "prepared"
    (prepared / "images").mkdir(parents=True)
    (prepared / "images" / "livestock_cow_bbox_000000.jpg").write_bytes(b"not read here")
    save_records([rec(0, "cow", [box_wh(5, 5)]), rec(1, "pig", [])], prepared / "records.jsonl")
    records = eda.load_prepared_records(prepared)
    assert records[0].image_path == str((prepared / "images" / "livestock_cow_bbox_000000.jpg").absolute())
    assert records[1].image_path == "/x/images/livestock_pig_bbox_000001.jpg"  # not in images/: kept as written
    with pytest.raises(FileNotFoundError, match="nowhere"):
        eda.load_prepared_records(tmp_path / "nowhere")
    (prepared / "records.jsonl").write_text("")
    with pytest.raises(ValueError, match="no records"):
        eda.load_prepared_records(prepared)


def test_run_eda_writes_every_table_and_plot(tmp_path):
    prepared = tmp_path / "prepared"
    write_tiny_prepared(prepared, n_images=12)
    out = tmp_path / "eda"
    result = eda.run_eda(prepared, out, samples=2)
    assert result["records"] == 12
    assert "sample_frames" in result["figures"]
    for name in result["tables"]:
        assert (out / f"{name}.csv").is_file(), name
    for name in result["figures"]:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert summary.loc["images"].astype(int).sum() == 12
    first = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    eda.run_eda(prepared, out, samples=2)  # idempotent: same tables, no stray temp files
    assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == first
    assert not list(out.glob(".*"))


def test_run_eda_without_images_skips_sample_frames(tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    save_records(synthetic_records(40, seed=2, image_dir=str(tmp_path / "missing")), prepared / "records.jsonl")
    result = eda.run_eda(prepared, tmp_path / "eda", samples=3)
    assert "sample_frames" not in result["figures"]
    assert not (tmp_path / "eda" / "sample_frames.png").exists()


def test_cli_eda(tmp_path, capsys):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    save_records(synthetic_records(40, seed=3), prepared / "records.jsonl")
    assert cli.main(["eda", str(prepared), "--out", str(tmp_path / "eda"), "--samples", "0"]) == 0
    out = capsys.readouterr().out
    assert "images with no box" in out and "little" in out
    assert (tmp_path / "eda" / "box_count_groups.csv").is_file()
    assert cli.main(["eda", str(tmp_path / "absent"), "--out", str(tmp_path / "eda2")]) == 1
    assert "absent" in capsys.readouterr().err


def test_cli_eda_refuses_negative_samples_and_a_file_for_the_folder(tmp_path, capsys):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    save_records(synthetic_records(40, seed=3), prepared / "records.jsonl")
    out = tmp_path / "eda"
    assert cli.main(["eda", str(prepared), "--out", str(out), "--samples", "-2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("livestock eda: error: --samples -2: must be 0") and len(err.splitlines()) == 1
    assert not out.exists()
    assert cli.main(["eda", str(prepared / "records.jsonl"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"livestock eda: error: {prepared / 'records.jsonl'}: not a folder")
    assert "not found" not in err
    assert not out.exists()
