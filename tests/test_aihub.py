"""AI Hub reader: names, JPEG headers, every validation rule on hostile inputs, zip-slip, CP949, strict mode."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aihub_builders import cow_name, label_json, pig_name, tiny_jpeg, write_basic_set, write_zip
from livestock.data.aihub import (
    PROBLEM_COLUMNS,
    class_from_path,
    classes_named,
    decode_member_name,
    is_unsafe_member_path,
    jpeg_size,
    parse_label_json,
    read_aihub,
)


def _read(data_dir: Path, tmp_path: Path, **kw):
    return read_aihub(data_dir, tmp_path / "out" / "images", progress=False, **kw)


def _cow_set(data_dir: Path, labels: dict[str, bytes], images: dict[str, bytes] | None = None) -> Path:
    """Cow zips holding the given label members and, by default, a 32x18 JPEG for each of them."""
    if images is None:
        images = {name[:-5] + ".jpg": tiny_jpeg(32, 18) for name in labels}
    write_zip(data_dir / "[원천]소_bbox.zip", images)
    write_zip(data_dir / "[라벨]소_bbox.zip", labels)
    return data_dir


def _one_cow(tmp_path: Path, boxes=None, raw_json: bytes | None = None, **read_kw):
    data = raw_json if raw_json is not None else label_json(32, 18, boxes)
    _cow_set(tmp_path / "data", {cow_name(1, "json"): data})
    return _read(tmp_path / "data", tmp_path, **read_kw)


def _rows(res, problem: str):
    return res.problems[res.problems["problem"] == problem]


# ---------------------------------------------------------------- building blocks


def test_class_comes_from_names_not_category_id(tmp_path):
    expected = write_basic_set(tmp_path / "data")
    res = _read(tmp_path / "data", tmp_path)
    assert res.problems.empty, res.problems
    assert [r.image_id for r in res.records] == sorted(expected)
    for r in res.records:
        e = expected[r.image_id]
        assert (r.width, r.height, r.label) == (e["width"], e["height"], e["label"])
        np.testing.assert_array_equal(r.boxes, np.asarray(e["boxes"], dtype=float).reshape(-1, 4))
        assert Path(r.image_path) == tmp_path / "out" / "images" / r.image_id
        assert Path(r.image_path).read_bytes() == tiny_jpeg(e["width"], e["height"])
    # The image with an empty annotations list is a valid record with no box.
    assert [r.n_boxes for r in res.records if r.image_id == cow_name(2, "jpg")] == [0]


def test_class_words():
    assert classes_named("[원천]소_bbox.zip") == {"cow"}
    assert classes_named("[라벨]돼지_bbox") == {"pig"}
    assert classes_named("livestock_pig_bbox_000001") == {"pig"}
    assert classes_named("소나무") == set()  # a word that merely contains 소
    assert class_from_path(["frame_1", "pig_and_cow", "소"]) == ("cow", {"cow"})
    assert class_from_path(["livestock_cow_bbox_1", "[원천]돼지_bbox"]) == (None, {"cow", "pig"})


@pytest.mark.parametrize("w,h,progressive", [(32, 18, False), (1920, 1080, False), (1280, 960, True), (7, 5, False)])
def test_jpeg_size_reads_header_like_pillow(w, h, progressive):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, "JPEG", progressive=progressive, quality=80,
                                                   exif=Image.Exif() if w == 7 else b"")
    assert jpeg_size(buf.getvalue()) == (w, h) == Image.open(io.BytesIO(buf.getvalue())).size


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n0000", b"\xff\xd8\xff\xe0\x00\x10JFIF",
                                  b"\xff\xd8\xff\xda\x00\x02"])
def test_jpeg_size_rejects_garbage(data):
    with pytest.raises(ValueError):
        jpeg_size(data)


def test_jpeg_size_of_truncated_header():
    with pytest.raises(ValueError):
        jpeg_size(tiny_jpeg()[:20])


@pytest.mark.parametrize("name,unsafe", [
    ("../evil.json", True), ("/abs.json", True), ("C:/x.jpg", True), ("c:x.jpg", True),
    ("a/../../b.jpg", True), ("a\\..\\b.jpg", True), ("a/b/c.jpg", False), ("..a/b.jpg", False),
])
def test_unsafe_member_paths(name, unsafe):
    assert is_unsafe_member_path(name) is unsafe


def test_parse_label_json_errors():
    assert parse_label_json(label_json(10, 20, [[1, 2, 3, 4]])) == (
        10, 20, [{"bbox": [1, 2, 3, 4], "category_id": 1, "id": 0}])
    for bad in [b"", b"{", b'{"label_info": {}}', b"[1, 2]",
                b'{"label_info": {"image": {"width": "10", "height": 5}, "annotations": []}}',
                b'{"label_info": {"image": {"width": 10, "height": 5}}}',
                b'{"label_info": {"image": {"width": 0, "height": 5}, "annotations": []}}']:
        with pytest.raises(ValueError):
            parse_label_json(bad)
    # Korean text in CP949 (not UTF-8) is still read.
    doc = label_json(10, 20, []).decode().replace('"x.jpg"', '"소.jpg"').encode("cp949")
    assert parse_label_json(doc)[:2] == (10, 20)


# ---------------------------------------------------------------- one rule at a time


def test_malformed_json_skips_image(tmp_path):
    res = _one_cow(tmp_path, raw_json=b'{"label_info": {"image": ')
    assert res.records == []
    row = _rows(res, "malformed_json").iloc[0]
    assert row["file"] == cow_name(1, "json") and row["action"] == "image skipped" and row["severity"] == "error"
    assert not (tmp_path / "out" / "images" / cow_name(1, "jpg")).exists()  # nothing extracted for it


def test_truncated_json_skips_image(tmp_path):
    full = label_json(32, 18, [[1, 1, 5, 5]])
    res = _one_cow(tmp_path, raw_json=full[: len(full) // 2])
    assert res.records == [] and len(_rows(res, "malformed_json")) == 1


def test_label_without_image(tmp_path):
    labels = {cow_name(1, "json"): label_json(32, 18, []), cow_name(2, "json"): label_json(32, 18, [])}
    _cow_set(tmp_path / "data", labels, images={cow_name(1, "jpg"): tiny_jpeg()})
    res = _read(tmp_path / "data", tmp_path)
    assert [r.image_id for r in res.records] == [cow_name(1, "jpg")]
    assert _rows(res, "label_without_image")["file"].tolist() == [cow_name(2, "json")]
    assert res.stats["images_skipped"] == 0


def test_image_without_label(tmp_path):
    images = {cow_name(1, "jpg"): tiny_jpeg(), f"x/{cow_name(2, 'jpg')}": tiny_jpeg()}
    _cow_set(tmp_path / "data", {cow_name(1, "json"): label_json(32, 18, [])}, images=images)
    res = _read(tmp_path / "data", tmp_path)
    assert [r.image_id for r in res.records] == [cow_name(1, "jpg")]
    row = _rows(res, "image_without_label").iloc[0]
    assert row["file"] == cow_name(2, "jpg") and row["location"] == f"[원천]소_bbox.zip::x/{cow_name(2, 'jpg')}"


def test_inverted_box_corners_swapped(tmp_path):
    res = _one_cow(tmp_path, boxes=[[10, 12, 1, 2], [1, 2, 3, 4]])
    np.testing.assert_array_equal(res.records[0].boxes, [[1, 2, 10, 12], [1, 2, 3, 4]])
    rows = _rows(res, "inverted_box")
    assert len(rows) == 1 and rows.iloc[0]["severity"] == "warning" and "box 0" in rows.iloc[0]["detail"]
    assert len(res.problems) == 1


@pytest.mark.parametrize("bad", [[5, 5, 5, 10], [1, 7, 9, 7]])
def test_zero_area_box_dropped(tmp_path, bad):
    res = _one_cow(tmp_path, boxes=[bad, [1, 2, 3, 4]])
    np.testing.assert_array_equal(res.records[0].boxes, [[1, 2, 3, 4]])
    assert len(_rows(res, "zero_area_box")) == 1 and res.stats["boxes_dropped"] == 1


def test_box_partly_outside_is_clipped(tmp_path):
    res = _one_cow(tmp_path, boxes=[[-3, 2, 40, 12], [1, 2, 3, 4]])
    np.testing.assert_array_equal(res.records[0].boxes, [[0, 2, 32, 12], [1, 2, 3, 4]])
    rows = _rows(res, "clipped_box")
    assert len(rows) == 1 and rows.iloc[0]["action"].startswith("clipped") and res.stats["boxes_clipped"] == 1


def test_box_entirely_outside_dropped(tmp_path):
    res = _one_cow(tmp_path, boxes=[[40, 2, 50, 12], [1, -9, 3, -1]])
    assert res.records[0].n_boxes == 0
    assert len(_rows(res, "box_outside_image")) == 2


@pytest.mark.parametrize("bad", [["1", 2, 3, 4], [1, None, 3, 4], [1, 2, float("nan"), 4], [1, 2, 3, True]])
def test_non_numeric_coordinates_dropped(tmp_path, bad):
    res = _one_cow(tmp_path, boxes=[bad, [1, 2, 3, 4]])
    np.testing.assert_array_equal(res.records[0].boxes, [[1, 2, 3, 4]])
    assert len(_rows(res, "non_numeric_box")) == 1


def test_malformed_box_dropped(tmp_path):
    doc = json.loads(label_json(32, 18, [[1, 2, 3, 4], [1, 2, 3], [1, 2, 3, 4]]))
    del doc["label_info"]["annotations"][2]["bbox"]
    res = _one_cow(tmp_path, raw_json=json.dumps(doc).encode())
    np.testing.assert_array_equal(res.records[0].boxes, [[1, 2, 3, 4]])
    assert _rows(res, "malformed_box")["detail"].str.startswith(("box 1", "box 2")).tolist() == [True, True]


def test_duplicate_within_one_zip(tmp_path):
    images = {f"a/{cow_name(1, 'jpg')}": tiny_jpeg(), f"b/{cow_name(1, 'jpg')}": tiny_jpeg(32, 20)}
    _cow_set(tmp_path / "data", {cow_name(1, "json"): label_json(32, 18, [])}, images=images)
    res = _read(tmp_path / "data", tmp_path)
    assert len(res.records) == 1 and res.records[0].height == 18  # the first one is kept
    row = _rows(res, "duplicate_image").iloc[0]
    assert row["location"].endswith(f"b/{cow_name(1, 'jpg')}") and f"a/{cow_name(1, 'jpg')}" in row["detail"]


def test_duplicate_label_across_zips(tmp_path):
    _cow_set(tmp_path / "data", {cow_name(1, "json"): label_json(32, 18, [])})
    write_zip(tmp_path / "data" / "[라벨]소_bbox_extra.zip",
              {f"x/{cow_name(1, 'json')}": label_json(32, 18, [[1, 1, 2, 2]])})
    res = _read(tmp_path / "data", tmp_path)
    assert len(res.records) == 1
    assert _rows(res, "duplicate_label")["file"].tolist() == [cow_name(1, "json")]


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_exact_same_member_twice(tmp_path):
    write_zip(tmp_path / "data" / "[원천]소_bbox.zip",
              [(cow_name(1, "jpg"), tiny_jpeg()), (cow_name(1, "jpg"), tiny_jpeg())])
    write_zip(tmp_path / "data" / "[라벨]소_bbox.zip", {cow_name(1, "json"): label_json(32, 18, [])})
    res = _read(tmp_path / "data", tmp_path)
    assert len(res.records) == 1 and len(_rows(res, "duplicate_image")) == 1


def test_size_mismatch_with_jpeg_header(tmp_path):
    _cow_set(tmp_path / "data", {cow_name(1, "json"): label_json(1920, 1080, [[1, 2, 3, 4]])})
    res = _read(tmp_path / "data", tmp_path)
    assert res.records == []
    detail = _rows(res, "size_mismatch").iloc[0]["detail"]
    assert "1920x1080" in detail and "32x18" in detail


def test_unreadable_jpeg(tmp_path):
    images = {cow_name(1, "jpg"): b"this is not a jpeg", cow_name(2, "jpg"): b""}
    labels = {cow_name(i, "json"): label_json(32, 18, []) for i in (1, 2)}
    _cow_set(tmp_path / "data", labels, images=images)
    res = _read(tmp_path / "data", tmp_path)
    assert res.records == [] and len(_rows(res, "unreadable_jpeg")) == 2
    assert not any((tmp_path / "out" / "images").iterdir())  # never extracted


def test_truncated_jpeg_kept_with_warning(tmp_path):
    jpg = tiny_jpeg()
    _cow_set(tmp_path / "data", {cow_name(1, "json"): label_json(32, 18, [])}, images={cow_name(1, "jpg"): jpg[:-30]})
    res = _read(tmp_path / "data", tmp_path)
    assert len(res.records) == 1 and _rows(res, "jpeg_missing_eoi")["severity"].tolist() == ["warning"]


def test_class_conflict_and_unknown_class(tmp_path):
    data = tmp_path / "data"
    # A cow-named file in the pig zips, and a file whose names say no class at all.
    write_zip(data / "[원천]돼지_bbox.zip", {cow_name(1, "jpg"): tiny_jpeg(), "frame_1.jpg": tiny_jpeg()})
    write_zip(data / "[라벨]돼지_bbox.zip", {cow_name(1, "json"): label_json(32, 18, []),
                                           "frame_1.json": label_json(32, 18, [])})
    write_zip(data / "images.zip", {"frame_2.jpg": tiny_jpeg()})
    write_zip(data / "labels.zip", {"frame_2.json": label_json(32, 18, [])})
    res = _read(data, tmp_path)
    assert [r.image_id for r in res.records] == ["frame_1.jpg"] and res.records[0].label == "pig"
    assert _rows(res, "class_conflict")["file"].tolist() == [cow_name(1, "jpg")]
    assert _rows(res, "unknown_class")["file"].tolist() == ["frame_2.jpg"]


def test_unrecognised_files_reported_as_info(tmp_path):
    images = {cow_name(1, "jpg"): tiny_jpeg(), "readme.txt": b"hi", f"__MACOSX/._{cow_name(1, 'jpg')}": b"\0"}
    _cow_set(tmp_path / "data", {cow_name(1, "json"): label_json(32, 18, [])}, images=images)
    res = _read(tmp_path / "data", tmp_path, strict=True)  # info rows never raise
    assert len(res.records) == 1
    assert sorted(_rows(res, "unrecognised_file")["file"]) == [f"._{cow_name(1, 'jpg')}", "readme.txt"]


def test_bad_zip_reported(tmp_path):
    _cow_set(tmp_path / "data", {cow_name(1, "json"): label_json(32, 18, [])})
    (tmp_path / "data" / "[원천]돼지_bbox.zip").write_bytes(b"PK\x03\x04 broken")
    res = _read(tmp_path / "data", tmp_path)
    assert len(res.records) == 1 and _rows(res, "bad_zip")["file"].tolist() == ["[원천]돼지_bbox.zip"]


def test_report_columns_and_nothing_silent(tmp_path):
    res = _one_cow(tmp_path, boxes=[[1, 2, 3, 4], [4, 3, 2, 1], [0, 0, 0, 0], [30, 10, 40, 20], ["a", 1, 2, 3]])
    assert list(res.problems.columns) == PROBLEM_COLUMNS
    s = res.stats
    # Every box is accounted for: kept (possibly changed, each change reported) or dropped and reported.
    assert s["boxes_kept"] + s["boxes_dropped"] == 5
    assert s["boxes_dropped"] == len(res.problems[res.problems["action"] == "box dropped"]) == 2
    assert s["boxes_swapped"] == 1 and s["boxes_clipped"] == 1
    assert "zero_area_box" in res.summary() and "clipped_box" in res.summary()


# ---------------------------------------------------------------- zip-slip, encodings, strict


def test_zip_slip_members_refused(tmp_path):
    data = tmp_path / "data"
    _cow_set(data, {cow_name(1, "json"): label_json(32, 18, []), "../evil.json": label_json(32, 18, []),
                    "/abs.json": b"{}"},
             images={cow_name(1, "jpg"): tiny_jpeg(), "../../livestock_cow_bbox_000009.jpg": tiny_jpeg(),
                     "C:/Windows/livestock_cow_bbox_000008.jpg": tiny_jpeg()})
    res = _read(data, tmp_path)
    assert [r.image_id for r in res.records] == [cow_name(1, "jpg")]
    rows = _rows(res, "unsafe_path")
    assert sorted(rows["file"]) == sorted(["evil.json", "abs.json", "livestock_cow_bbox_000009.jpg",
                                           "livestock_cow_bbox_000008.jpg"])
    assert (rows["action"] == "member refused (never extracted)").all()
    # Nothing landed anywhere but the images folder.
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(["data/[원천]소_bbox.zip", "data/[라벨]소_bbox.zip",
                              f"out/images/{cow_name(1, 'jpg')}"])
    with pytest.raises(ValueError, match="evil.json.*unsafe_path"):
        _read(data, tmp_path, strict=True)


def test_cp949_member_names_decoded(tmp_path):
    data = tmp_path / "data"
    # Neutral zip and file names: only the Korean folder inside says "cow".
    write_zip(data / "images.zip", {"[원천]소_bbox/frame_1.jpg": tiny_jpeg()}, cp949=True)
    write_zip(data / "labels.zip", {"[라벨]소_bbox/frame_1.json": label_json(32, 18, [[1, 1, 4, 4]])}, cp949=True)
    with zipfile.ZipFile(data / "images.zip") as zf:
        info = zf.infolist()[0]
        assert not info.flag_bits & 0x800 and info.filename != "[원천]소_bbox/frame_1.jpg"  # mojibake as stored
        assert decode_member_name(info) == "[원천]소_bbox/frame_1.jpg"
    res = _read(data, tmp_path)
    assert [(r.image_id, r.label) for r in res.records] == [("frame_1.jpg", "cow")]


def test_utf8_flagged_member_names(tmp_path):
    data = tmp_path / "data"
    write_zip(data / "images.zip", {"돼지/frame_1.jpg": tiny_jpeg()})
    write_zip(data / "labels.zip", {"돼지/frame_1.json": label_json(32, 18, [])})
    with zipfile.ZipFile(data / "images.zip") as zf:
        assert zf.infolist()[0].flag_bits & 0x800
    assert [r.label for r in _read(data, tmp_path).records] == ["pig"]


def test_strict_raises_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"livestock_cow_bbox_000001\.json.*clipped_box"):
        _one_cow(tmp_path, boxes=[[-1, 0, 5, 5]], strict=True)
    with pytest.raises(ValueError, match="malformed_json"):
        _one_cow(tmp_path, raw_json=b"{", strict=True)
    clean = _one_cow(tmp_path, boxes=[[0, 0, 5, 5]], strict=True)
    assert len(clean.records) == 1


# ---------------------------------------------------------------- folders, test images, idempotence


def _extract_all(data_dir: Path, dest: Path) -> None:
    """Extract each zip into a folder named after it, decoding member names the way the reader does."""
    for z in data_dir.glob("*.zip"):
        with zipfile.ZipFile(z) as zf:
            for info in zf.infolist():
                target = dest / z.stem / decode_member_name(info)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))


def test_extracted_folder_equals_zip_input(tmp_path):
    write_basic_set(tmp_path / "data")
    # One hostile box too (inverted, then outside the image), so the reports must match as well.
    write_zip(tmp_path / "data" / "[라벨]소_bbox.zip", {
        f"소/{cow_name(1, 'json')}": label_json(32, 18, [[1, 2, 10, 12], [15.5, 0, 31, 17.25], [40, 1, 33, 5]]),
        f"소/{cow_name(2, 'json')}": label_json(32, 18, []),
    })
    _extract_all(tmp_path / "data", tmp_path / "extracted" / "nested")
    from_zip = read_aihub(tmp_path / "data", tmp_path / "a" / "images", progress=False)
    from_dir = read_aihub(tmp_path / "extracted", tmp_path / "b" / "images", progress=False)
    assert len(from_zip.records) == 4
    def relative(records, root):
        return [{**r.to_json(), "image_path": Path(r.image_path).relative_to(root).as_posix()} for r in records]

    assert relative(from_zip.records, tmp_path / "a") == relative(from_dir.records, tmp_path / "b")
    cols = ["file", "problem", "action", "detail"]
    assert len(from_zip.problems) == 2 and from_zip.problems[cols].equals(from_dir.problems[cols])
    for r in from_dir.records:
        assert Path(r.image_path).read_bytes() == tiny_jpeg(r.width, r.height)


def test_images_only_reads_header_sizes(tmp_path):
    data = tmp_path / "data_test"
    write_zip(data / "[원천]돼지_bbox.zip", {pig_name(7, "jpg"): tiny_jpeg(24, 18),
                                           "sub/" + pig_name(8, "jpg"): tiny_jpeg(32, 18)})
    write_zip(data / "[원천]소_bbox.zip", {cow_name(7, "jpg"): tiny_jpeg(16, 12), cow_name(7, "json"): b"{}"})
    res = _read(data, tmp_path, images_only=True)
    got = [(r.image_id, r.label, r.width, r.height, r.n_boxes) for r in res.records]
    assert got == [(cow_name(7, "jpg"), "cow", 16, 12, 0), (pig_name(7, "jpg"), "pig", 24, 18, 0),
                   (pig_name(8, "jpg"), "pig", 32, 18, 0)]
    assert _rows(res, "label_ignored")["file"].tolist() == [cow_name(7, "json")]


def test_reading_again_does_not_rewrite_images(tmp_path):
    write_basic_set(tmp_path / "data")
    first = _read(tmp_path / "data", tmp_path)
    stamps = {r.image_id: Path(r.image_path).stat().st_mtime_ns for r in first.records}
    second = _read(tmp_path / "data", tmp_path)
    assert [r.to_json() for r in first.records] == [r.to_json() for r in second.records]
    assert {r.image_id: Path(r.image_path).stat().st_mtime_ns for r in second.records} == stamps


def test_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _read(tmp_path / "nowhere", tmp_path)


def test_corrupt_zip_member_is_unreadable(tmp_path):
    data = tmp_path / "data"
    _cow_set(data, {cow_name(i, "json"): label_json(32, 18, []) for i in (1, 2)})
    raw = bytearray((data / "[원천]소_bbox.zip").read_bytes())
    at = raw.index(tiny_jpeg()) + 100  # inside the first stored JPEG: its CRC no longer matches
    raw[at] ^= 0xFF
    (data / "[원천]소_bbox.zip").write_bytes(bytes(raw))
    res = _read(data, tmp_path)
    assert [r.image_id for r in res.records] == [cow_name(2, "jpg")]
    row = _rows(res, "unreadable_jpeg").iloc[0]
    assert row["file"] == cow_name(1, "jpg") and "CRC" in row["detail"]


def test_sof_after_large_header_segments(tmp_path):
    """SOF beyond the first 64 KiB (big comment / EXIF blocks): found in memory and in an extracted file."""
    jpg = tiny_jpeg()
    comment = b"\xff\xfe" + (65535).to_bytes(2, "big") + b"x" * 65533
    big = jpg[:2] + comment + comment + jpg[2:]
    assert jpeg_size(big) == (32, 18)
    _cow_set(tmp_path / "data", {cow_name(1, "json"): label_json(32, 18, [])}, images={cow_name(1, "jpg"): big})
    first = _read(tmp_path / "data", tmp_path)
    second = _read(tmp_path / "data", tmp_path)  # reads the header back from the extracted file
    assert first.problems.empty and second.problems.empty
    assert [(r.width, r.height) for r in second.records] == [(32, 18)]
