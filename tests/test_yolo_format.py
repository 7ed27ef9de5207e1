"""YOLO conversion, data.yaml and the `prepare` stage end to end on tiny hostile zips."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from aihub_builders import cow_name, label_json, pig_name, tiny_jpeg, write_basic_set, write_zip
from livestock.cli import main as cli_main
from livestock.records import ImageRecord, load_records
from livestock.data.yolo_format import (
    label_path_for,
    label_text,
    pixel_to_yolo,
    prepare_dataset,
    prepared_from,
    read_label_file,
    write_data_yaml,
    yolo_to_pixel,
)


def test_pixel_yolo_round_trip_vectorised():
    rng = np.random.default_rng(0)
    n = 1000
    widths = rng.choice([1920, 1280, 32], n).astype(float)
    heights = rng.choice([1080, 960, 18], n).astype(float)
    x1, y1 = rng.uniform(0, 0.9, n) * widths, rng.uniform(0, 0.9, n) * heights
    boxes = np.stack([x1, y1, x1 + rng.uniform(0.1, 1, n) * (widths - x1),
                      y1 + rng.uniform(0.1, 1, n) * (heights - y1)], 1)
    yolo = pixel_to_yolo(boxes, widths, heights)
    assert yolo.shape == (n, 4) and (yolo >= 0).all() and (yolo <= 1).all()
    np.testing.assert_allclose(yolo_to_pixel(yolo, widths, heights), boxes, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pixel_to_yolo(yolo_to_pixel(yolo, widths, heights), widths, heights), yolo,
                               rtol=0, atol=1e-12)


def test_pixel_to_yolo_known_values():
    np.testing.assert_allclose(pixel_to_yolo([[0, 0, 1920, 1080], [960, 540, 1152, 756]], 1920, 1080),
                               [[0.5, 0.5, 1, 1], [0.55, 0.6, 0.1, 0.2]])
    assert pixel_to_yolo(np.zeros((0, 4)), 10, 10).shape == (0, 4)


def test_label_text_uses_each_images_size_and_class():
    cow = ImageRecord("c.jpg", "/x/images/c.jpg", 1920, 1080, "cow", [[960, 540, 1152, 756]])
    pig = ImageRecord("p.jpg", "/x/images/p.jpg", 1280, 960, "pig", [[0, 0, 128, 96], [640, 480, 1280, 960]])
    assert label_text(cow) == "1 0.550000 0.600000 0.100000 0.200000\n"
    assert label_text(pig).splitlines() == ["0 0.050000 0.050000 0.100000 0.100000",
                                            "0 0.750000 0.750000 0.500000 0.500000"]
    assert label_text(ImageRecord("e.jpg", "/x/images/e.jpg", 10, 10, "cow")) == ""


def test_label_path_for():
    p = Path("/data", "prepared", "images", "a.b.jpg")
    assert label_path_for(p) == Path("/data", "prepared", "labels", "a.b.txt")
    with pytest.raises(ValueError, match="images"):
        label_path_for("/data/x.jpg")


def test_write_data_yaml(tmp_path):
    path = write_data_yaml(tmp_path / "d" / "data.yaml", tmp_path / "train.txt", [tmp_path / "v1.txt", tmp_path / "v2"],
                           test=tmp_path / "test.txt")
    doc = yaml.safe_load(path.read_text())
    assert doc == {"path": str((tmp_path / "d").resolve()), "train": str((tmp_path / "train.txt").resolve()),
                   "val": [str((tmp_path / "v1.txt").resolve()), str((tmp_path / "v2").resolve())],
                   "test": str((tmp_path / "test.txt").resolve()), "nc": 2, "names": ["pig", "cow"]}
    assert "test" not in yaml.safe_load(write_data_yaml(tmp_path / "e.yaml", "a", "b").read_text())


def _hostile_set(data: Path) -> dict:
    expected = write_basic_set(data)
    # Pig 2 gets a clipped, an inverted and a zero-area box; pig 3 has a broken JSON; cow 3 no label.
    write_zip(data / "[라벨]돼지_bbox.zip", {
        f"labels/{pig_name(1, 'json')}": label_json(24, 18, [[0, 0, 24, 18]]),
        f"labels/{pig_name(2, 'json')}": label_json(24, 18, [[3, 4, 5, 6], [6, 7, 30, 9], [9, 9, 2, 2], [4, 4, 4, 9]]),
        f"labels/{pig_name(3, 'json')}": b'{"label_info": ',
    })
    write_zip(data / "[원천]돼지_bbox.zip", {pig_name(i, "jpg"): tiny_jpeg(24, 18) for i in (1, 2, 3)})
    write_zip(data / "[원천]소_bbox.zip", {f"소/bbox/2021/{cow_name(i, 'jpg')}": tiny_jpeg() for i in (1, 2, 3)})
    expected[pig_name(2, "jpg")]["boxes"] = [[3, 4, 5, 6], [6, 7, 24, 9], [2, 2, 9, 9]]
    return expected


def test_prepare_dataset_writes_everything(tmp_path):
    expected = _hostile_set(tmp_path / "data")
    out = tmp_path / "prepared"
    res = prepare_dataset(tmp_path / "data", out, progress=False)

    assert sorted(r.image_id for r in res.records) == sorted(expected)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(expected)
    assert sorted(p.name for p in (out / "labels").iterdir()) == sorted(k[:-4] + ".txt" for k in expected)
    for r in res.records:
        e = expected[r.image_id]
        assert Path(r.image_path).parent == out / "images"
        cls, yolo = read_label_file(label_path_for(r.image_path))
        assert (cls == (1 if e["label"] == "cow" else 0)).all() and len(cls) == len(e["boxes"])
        # Six decimals: back to pixels within a millionth of the image size.
        np.testing.assert_allclose(yolo_to_pixel(yolo, r.width, r.height), np.reshape(e["boxes"], (-1, 4)),
                                   atol=1e-6 * 32)

    assert [r.to_json() for r in load_records(res.records_path)] == [r.to_json() for r in res.records]
    report = pd.read_csv(res.report_path)
    assert {"file", "problem", "severity", "action"} <= set(report.columns)
    assert sorted(report["problem"]) == sorted(["clipped_box", "inverted_box", "zero_area_box", "malformed_json",
                                                "image_without_label"])
    doc = yaml.safe_load(res.data_yaml.read_text())
    assert doc["train"] == doc["val"] == str(res.image_list.resolve())
    assert doc["names"] == ["pig", "cow"] and doc["nc"] == 2
    listed = res.image_list.read_text().split()
    assert sorted(listed) == sorted(str((out / "images" / k).resolve()) for k in expected)
    assert "zero_area_box" in res.summary and "malformed_json" in res.summary


def test_prepare_is_idempotent_and_removes_stale_files(tmp_path):
    write_basic_set(tmp_path / "data")
    out = tmp_path / "prepared"
    first = prepare_dataset(tmp_path / "data", out, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for d in ("images", "labels") for p in (out / d).iterdir()}
    again = prepare_dataset(tmp_path / "data", out, progress=False)
    assert {p.name: p.stat().st_mtime_ns for d in ("images", "labels") for p in (out / d).iterdir()} == stamps
    assert [r.to_json() for r in again.records] == [r.to_json() for r in first.records]
    assert not [p for p in out.rglob("*.tmp")]

    # The cow zip loses image 2: its image and label leave the output too.
    write_zip(tmp_path / "data" / "[원천]소_bbox.zip", {f"소/{cow_name(1, 'jpg')}": tiny_jpeg()})
    third = prepare_dataset(tmp_path / "data", out, progress=False)
    assert cow_name(2, "jpg") not in {p.name for p in (out / "images").iterdir()}
    assert f"{cow_name(2, 'jpg')[:-4]}.txt" not in {p.name for p in (out / "labels").iterdir()}
    assert "removed 2 stale files" in third.summary and len(third.records) == 3


def test_prepare_from_extracted_folder_inside_data_dir(tmp_path):
    """A folder tree as input, with the output folder inside it: the output is never read back as input."""
    data = tmp_path / "data"
    files = [("원천/소", cow_name(1, "jpg"), tiny_jpeg()),
             ("라벨/소", cow_name(1, "json"), label_json(32, 18, [[1, 1, 5, 5]])),
             ("x/돼지", "frame_9.jpg", tiny_jpeg(24, 18)), ("y/돼지", "frame_9.json", label_json(24, 18, []))]
    for sub, name, payload in files:
        (data / sub).mkdir(parents=True, exist_ok=True)
        (data / sub / name).write_bytes(payload)
    res = prepare_dataset(data, data / "prepared", progress=False)
    assert [(r.image_id, r.label) for r in res.records] == [("frame_9.jpg", "pig"), (cow_name(1, "jpg"), "cow")]
    again = prepare_dataset(data, data / "prepared", progress=False)
    assert again.problems.empty and len(again.records) == 2
    src = data / "원천/소" / cow_name(1, "jpg")
    if os.stat(src).st_ino == os.stat(res.records[1].image_path).st_ino:
        assert src.stat().st_nlink == 2  # hard-linked, not copied


def test_prepare_refuses_output_that_contains_the_data(tmp_path):
    write_basic_set(tmp_path / "data")
    with pytest.raises(ValueError, match="must not contain"):
        prepare_dataset(tmp_path / "data", tmp_path, progress=False)


def test_prepare_images_only(tmp_path):
    data = tmp_path / "data_test"
    write_zip(data / "[원천]돼지_bbox.zip", {pig_name(7, "jpg"): tiny_jpeg(24, 18)})
    write_zip(data / "[원천]소_bbox.zip", {cow_name(7, "jpg"): tiny_jpeg(16, 12)})
    res = prepare_dataset(data, tmp_path / "prep_test", images_only=True, progress=False)
    assert [(r.label, r.width, r.height, r.n_boxes) for r in res.records] == [("cow", 16, 12, 0), ("pig", 24, 18, 0)]
    assert res.data_yaml is None and res.labels_dir is None and not (tmp_path / "prep_test" / "labels").exists()
    assert len(load_records(res.records_path)) == 2


def test_prepare_with_nothing_usable(tmp_path):
    write_zip(tmp_path / "data" / "[라벨]소_bbox.zip", {cow_name(1, "json"): label_json(32, 18, [])})
    with pytest.raises(ValueError, match="no usable image"):
        prepare_dataset(tmp_path / "data", tmp_path / "out", progress=False)
    assert "label_without_image" in (tmp_path / "out" / "validation_report.csv").read_text()
    # no empty set that looks whole: no records, image list or data.yaml
    assert not any((tmp_path / "out" / name).exists() for name in ("records.jsonl", "all.txt", "data.yaml"))


def test_unusable_input_leaves_a_prepared_set_in_place(tmp_path):
    _hostile_set(tmp_path / "data")
    good = prepare_dataset(tmp_path / "data", tmp_path / "out", progress=False)
    before = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*")
              if p.is_file() and p.name != "validation_report.csv"}
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("[원천]소_bbox.zip", "[라벨]소_bbox.zip"):
        (broken / name).write_text("not a zip")
    with pytest.raises(ValueError, match="broken: no usable image"):
        prepare_dataset(broken, tmp_path / "out", progress=False)
    after = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*")
             if p.is_file() and p.name != "validation_report.csv"}
    # every image, label and list is still there; only the record of its inputs is gone (they are not in front)
    assert {k: v for k, v in before.items() if k.name != "source.json"} == after
    assert len(good.records) == 4


def test_cli_prepare(tmp_path, capsys):
    _hostile_set(tmp_path / "data")
    rc = cli_main(["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "zero_area_box" in out and "wrote 4 records" in out
    assert (tmp_path / "out" / "data.yaml").is_file()

    rc = cli_main(["prepare", str(tmp_path / "data"), "--out", str(tmp_path / "out2"), "--strict", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "livestock_cow_bbox_000003.jpg: image_without_label" in err and "strict" in err
    assert not (tmp_path / "out2").exists()  # the refusal leaves no folder behind


def test_strict_prepare_that_refuses_takes_back_what_it_extracted(tmp_path, capsys):
    data = tmp_path / "data"
    write_basic_set(data)
    # the second pig's label is broken: images read before it are extracted when the refusal comes
    stems = [pig_name(i, "jpg")[:-4] for i in (1, 2)]
    write_zip(data / "[라벨]돼지_bbox.zip", {f"labels/{stems[0]}.json": label_json(24, 18, [[0, 0, 24, 18]], 2),
                                          f"labels/{stems[1]}.json": b"{"})
    rc = cli_main(["prepare", str(data), "--out", str(tmp_path / "new" / "prepared"), "--strict", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and f"{stems[1]}.json: malformed_json" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "new").exists()

    images = tmp_path / "old" / "images"  # a folder that was there before keeps what it held, and only that
    images.mkdir(parents=True)
    (images / "mine.jpg").write_bytes(b"not ours")
    assert cli_main(["prepare", str(data), "--out", str(tmp_path / "old"), "--strict", "--quiet"]) == 1
    assert "malformed_json" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "old").rglob("*")) == ["images", "mine.jpg"]
    assert (images / "mine.jpg").read_bytes() == b"not ours"


def _other_pigs(data: Path, broken_second: bool) -> None:
    """The basic set with other pig frames of the same names (48x36): a second set of the same naming scheme, as the
    synthetic and the real set are; ``broken_second``: the second pig's label is not JSON (a strict refusal comes
    after the first pig was extracted)."""
    write_basic_set(data)
    stems = [pig_name(i, "jpg")[:-4] for i in (1, 2)]
    write_zip(data / "[원천]돼지_bbox.zip", {f"{stem}.jpg": tiny_jpeg(48, 36) for stem in stems})
    write_zip(data / "[라벨]돼지_bbox.zip", {f"labels/{stems[0]}.json": label_json(48, 36, [[0, 0, 40, 30]], 2),
                                          f"labels/{stems[1]}.json": b"{" if broken_second else
                                          label_json(48, 36, [[1, 1, 9, 9]], 2)})


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_refused_prepare_over_another_set_leaves_that_set_whole(tmp_path, capsys):
    write_basic_set(tmp_path / "a")
    out = tmp_path / "out"
    prepare_dataset(tmp_path / "a", out, progress=False)
    before = _files(out)
    _other_pigs(tmp_path / "b", broken_second=True)
    assert cli_main(["prepare", str(tmp_path / "b"), "--out", str(out), "--strict", "--quiet"]) == 1
    assert "malformed_json" in capsys.readouterr().err
    # every image (the first pig of b was extracted when the refusal came, not over a's), label, list and the record
    assert _files(out) == before and not (out / "images.partial").exists()
    assert prepared_from(tmp_path / "a", out) and not prepared_from(tmp_path / "b", out)


def test_prepare_over_another_set_swaps_the_new_images_in(tmp_path):
    write_basic_set(tmp_path / "a")
    out = tmp_path / "out"
    prepare_dataset(tmp_path / "a", out, progress=False)
    _other_pigs(tmp_path / "b", broken_second=False)
    res = prepare_dataset(tmp_path / "b", out, progress=False)
    pigs = [r for r in res.records if r.label == "pig"]
    assert [(r.width, r.height) for r in pigs] == [(48, 36), (48, 36)]
    for r in pigs:
        assert r.image_path == str((out / "images" / r.image_id).resolve())
        assert Path(r.image_path).read_bytes() == tiny_jpeg(48, 36)
    assert [r.image_path for r in load_records(res.records_path)] == [r.image_path for r in res.records]
    assert (out / "labels" / f"{pigs[0].stem}.txt").read_text() == "0 0.416667 0.416667 0.833333 0.833333\n"
    assert sorted(p.name for p in out.iterdir()) == ["all.txt", "data.yaml", "images", "labels", "records.jsonl",
                                                     "source.json", "validation_report.csv"]
    assert prepared_from(tmp_path / "b", out) and not prepared_from(tmp_path / "a", out)
