"""The synthetic AI Hub-format generator: names, schema, truth side file, determinism, calibration."""
from __future__ import annotations

import json
import re
import time
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pandas as pd
import pytest

from livestock.data import synth
from livestock.data.synth import dataset as synth_dataset
from livestock.data.synth.render import draw_ids, visible_boxes
from livestock.data.synth.scene import plan_scene
from livestock.cli import main as cli_main
from livestock.paths import TEST_ZIPS, TRAIN_ZIPS

NAME = re.compile(r"^livestock_(cow|pig)_bbox_(\d{6})\.(jpg|json)$")


def _members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as z:
        return {info.filename: z.read(info) for info in z.infolist()}


def _labels(train_dir: Path, label: str) -> dict[str, dict]:
    """image file name -> label JSON."""
    out = {}
    for name, data in _members(train_dir / TRAIN_ZIPS[(label, "labels")]).items():
        out[PurePosixPath(name).stem + ".jpg"] = json.loads(data.decode("utf-8"))
    return out


def _jpeg_sizes(zip_path: Path) -> dict[str, tuple[int, int]]:
    sizes = {}
    for name, data in _members(zip_path).items():
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None, f"{name} is not a decodable JPEG"
        sizes[PurePosixPath(name).name] = (img.shape[1], img.shape[0])
    return sizes


def _all_outputs(train_dir: Path, test_dir: Path) -> dict[str, bytes]:
    files = [train_dir / z for z in TRAIN_ZIPS.values()] + [test_dir / z for z in TEST_ZIPS.values()]
    files += [train_dir / "synth_truth.csv", test_dir / "answer.csv"]
    return {f"{f.parent.name}/{f.name}": f.read_bytes() for f in files}


# ----------------------------------------------------------------------------- files and names


def test_zip_names_members_and_utf8_flag(synth_data):
    for (label, kind), zip_name in TRAIN_ZIPS.items():
        path = synth_data.train_dir / zip_name
        assert path.is_file(), zip_name
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
        assert infos, f"{zip_name} is empty"
        stems = set()
        for info in infos:
            assert info.flag_bits & 0x800, f"{info.filename}: UTF-8 name flag not set"
            folder, base = PurePosixPath(info.filename).parent, PurePosixPath(info.filename).name
            assert str(folder) in ("소_bbox", "돼지_bbox")
            m = NAME.match(base)
            assert m, base
            assert m.group(1) == label and m.group(3) == ("jpg" if kind == "images" else "json")
            stems.add(PurePosixPath(base).stem)
        other = "labels" if kind == "images" else "images"
        with zipfile.ZipFile(synth_data.train_dir / TRAIN_ZIPS[(label, other)]) as z:
            assert stems == {PurePosixPath(n).stem for n in z.namelist()}, "every image needs its label JSON"
    for label, zip_name in TEST_ZIPS.items():
        names = _members(synth_data.test_dir / zip_name)
        assert names and all(NAME.match(PurePosixPath(n).name).group(1) == label for n in names)
    # atomic writes leave no temp files behind
    assert not [p for p in synth_data.train_dir.iterdir() if p.name.startswith(".")]
    assert not [p for p in synth_data.test_dir.iterdir() if p.name.startswith(".")]


def test_counts_follow_the_real_class_ratio(synth_data):
    s = synth_data.summary
    assert s.train_images == synth.split_by_class_ratio(40, "train") == {"cow": 30, "pig": 10}
    assert s.test_images == synth.split_by_class_ratio(12, "test") == {"cow": 9, "pig": 3}
    assert synth.split_by_class_ratio(16_455, "train") == {"cow": 12_152, "pig": 4_303}
    assert synth.split_by_class_ratio(2_057, "test") == {"cow": 1_519, "pig": 538}
    assert synth.split_by_class_ratio(2, "train") == {"cow": 1, "pig": 1}
    assert synth.split_by_class_ratio(0, "test") == {"cow": 0, "pig": 0}


def test_test_numbers_never_equal_train_numbers(synth_data):
    for label in ("cow", "pig"):
        train = {PurePosixPath(n).name for n in _members(synth_data.train_dir / TRAIN_ZIPS[(label, "images")])}
        test = {PurePosixPath(n).name for n in _members(synth_data.test_dir / TEST_ZIPS[label])}
        assert train and test and not train & test


# ----------------------------------------------------------------------------- label JSON


def test_label_json_schema_and_pixel_corner_boxes(synth_data):
    sizes = {}
    for label in ("cow", "pig"):
        sizes.update(_jpeg_sizes(synth_data.train_dir / TRAIN_ZIPS[(label, "images")]))
    for label in ("cow", "pig"):
        for image_id, doc in _labels(synth_data.train_dir, label).items():
            info = doc["label_info"]
            image = info["image"]
            assert image["file_name"] == image_id
            # the JSON's size is the JPEG's size
            assert (image["width"], image["height"]) == sizes[image_id]
            assert (image["width"], image["height"]) in {(480, 270), (320, 240)}
            if label == "cow":
                assert (image["width"], image["height"]) == (480, 270)
            for a in info["annotations"]:
                x1, y1, x2, y2 = a["bbox"]
                assert all(isinstance(v, int) for v in a["bbox"])
                assert 0 <= x1 < x2 <= image["width"] and 0 <= y1 < y2 <= image["height"]
                assert a["category_id"] in {c["id"] for c in info["categories"]}
            assert {c["name"] for c in info["categories"]}.isdisjoint({"cow", "pig"})


def test_category_ids_are_a_trap(synth_data):
    """Read as YOLO class ids (pig 0, cow 1), the JSON categories would name the wrong species."""
    ids = {label: Counter(a["category_id"] for doc in _labels(synth_data.train_dir, label).values()
                          for a in doc["label_info"]["annotations"]) for label in ("cow", "pig")}
    assert ids["cow"][0] > 0, "some cow boxes carry category_id 0 (pig's class id)"
    assert ids["pig"][1] > 0, "some pig boxes carry category_id 1 (cow's class id)"
    assert ids["pig"][1] > ids["pig"][0]


# ----------------------------------------------------------------------------- truth and answer


def test_truth_file_matches_the_labels(synth_data):
    truth = pd.read_csv(synth_data.truth_csv)
    assert list(truth.columns) == ["image_id", "label", "x1", "y1", "x2", "y2", "labelled"]
    assert truth["labelled"].dtype == bool
    for label in ("cow", "pig"):
        labels = _labels(synth_data.train_dir, label)
        t = truth[truth["label"] == label]
        assert set(t["image_id"]) <= set(labels)
        for image_id, doc in labels.items():
            json_boxes = sorted(tuple(a["bbox"]) for a in doc["label_info"]["annotations"])
            rows = t[(t["image_id"] == image_id) & t["labelled"]]
            assert json_boxes == sorted(map(tuple, rows[["x1", "y1", "x2", "y2"]].to_numpy().tolist())), image_id
    assert truth.loc[truth["label"] == "pig", "labelled"].all(), "only cow boxes are left out"
    s = synth_data.summary
    left_out = int((~truth["labelled"]).sum())
    assert left_out == s.left_out_cow_boxes > 0
    assert s.train_true_boxes["cow"] == int((truth["label"] == "cow").sum())
    assert s.train_labelled_boxes["cow"] == s.train_true_boxes["cow"] - left_out


def test_answer_csv_is_normalised_per_image(synth_data):
    answer = pd.read_csv(synth_data.answer_csv)
    assert list(answer.columns) == ["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"]
    coords = answer[["XMin", "XMax", "YMin", "YMax"]].to_numpy()
    assert ((coords >= 0) & (coords <= 1)).all()
    assert (answer["XMin"] < answer["XMax"]).all() and (answer["YMin"] < answer["YMax"]).all()
    sizes = {}
    for label in ("cow", "pig"):
        sizes.update(_jpeg_sizes(synth_data.test_dir / TEST_ZIPS[label]))
    assert set(answer["ImageID"]) <= set(sizes)
    assert all(f"_{label}_" in image_id for image_id, label in zip(answer["ImageID"], answer["LabelName"]))
    # normalised by the image's own size: back in pixels every coordinate is a whole number
    w = answer["ImageID"].map(lambda i: sizes[i][0]).to_numpy()
    h = answer["ImageID"].map(lambda i: sizes[i][1]).to_numpy()
    px = np.c_[answer["XMin"] * w, answer["XMax"] * w, answer["YMin"] * h, answer["YMax"] * h]
    assert np.allclose(px, np.round(px), atol=1e-6)
    assert len(answer) == sum(synth_data.summary.test_boxes.values())


# ----------------------------------------------------------------------------- determinism and modes


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    args = dict(n_train=6, n_test=3, image_scale=0.1, progress=False)
    synth.generate_synthetic_dataset(tmp_path / "a" / "data", tmp_path / "a" / "test", seed=3, **args)
    synth.generate_synthetic_dataset(tmp_path / "b" / "data", tmp_path / "b" / "test", seed=3, **args)
    synth.generate_synthetic_dataset(tmp_path / "c" / "data", tmp_path / "c" / "test", seed=4, **args)
    a = _all_outputs(tmp_path / "a" / "data", tmp_path / "a" / "test")
    b = _all_outputs(tmp_path / "b" / "data", tmp_path / "b" / "test")
    c = _all_outputs(tmp_path / "c" / "data", tmp_path / "c" / "test")
    assert a == b
    assert a[f"data/{TRAIN_ZIPS[('cow', 'images')]}"] != c[f"data/{TRAIN_ZIPS[('cow', 'images')]}"]
    # a rerun over existing files is idempotent
    synth.generate_synthetic_dataset(tmp_path / "a" / "data", tmp_path / "a" / "test", seed=3, **args)
    assert _all_outputs(tmp_path / "a" / "data", tmp_path / "a" / "test") == b


def test_labels_only_gives_the_labels_of_the_full_render(tmp_path):
    args = dict(n_train=8, n_test=4, seed=1, image_scale=0.2, progress=False)
    full = synth.generate_synthetic_dataset(tmp_path / "f" / "data", tmp_path / "f" / "test", **args)
    fast = synth.generate_synthetic_dataset(tmp_path / "l" / "data", tmp_path / "l" / "test", labels_only=True, **args)
    for label in ("cow", "pig"):
        zip_name = TRAIN_ZIPS[(label, "labels")]
        assert (full.train_dir / zip_name).read_bytes() == (fast.train_dir / zip_name).read_bytes()
        # the plain JPEGs still have the size the JSONs state
        assert _jpeg_sizes(fast.train_dir / TRAIN_ZIPS[(label, "images")]) == \
            _jpeg_sizes(full.train_dir / TRAIN_ZIPS[(label, "images")])
    assert full.truth_csv.read_bytes() == fast.truth_csv.read_bytes()
    assert full.answer_csv.read_bytes() == fast.answer_csv.read_bytes()


def test_no_missing_labels_when_rate_is_zero(tmp_path):
    s = synth.generate_synthetic_dataset(tmp_path / "d", tmp_path / "t", n_train=10, n_test=2, missing_cow_rate=0.0,
                                         image_scale=0.1, labels_only=True, progress=False)
    assert s.left_out_cow_boxes == 0
    assert pd.read_csv(s.truth_csv)["labelled"].all()


def test_boxes_are_tight_around_visible_pixels():
    rng = np.random.default_rng([5, 1, 0, 17, 0])
    for label, size in (("cow", (1920, 1080)), ("pig", (1280, 960)), ("pig", (1920, 1080))):
        scene = plan_scene(rng, label, size, "test", 0.0, 0.3)
        idmap, rois = draw_ids(scene)
        visible = visible_boxes(scene, idmap, rois)
        assert visible
        for k, _animal, (x1, y1, x2, y2) in visible:
            inside = idmap[y1:y2, x1:x2] == k
            # every edge row / column of the box holds a pixel of the animal, nothing of it lies outside
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert np.count_nonzero(idmap == k) == np.count_nonzero(inside)


def test_rendered_frame_draws_the_animals_where_the_boxes_are():
    img, rec = synth.render_image("pig", 12, "train", seed=0, size=(1280, 960), image_scale=0.25)
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8
    assert rec.boxes and len(rec.boxes) == len(rec.labelled) == len(rec.behaviours)
    decoded = cv2.imdecode(np.frombuffer(rec.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == img.shape
    # pigs are pink: inside the boxes red dominates blue more than in the rest of the frame
    mask = np.zeros(img.shape[:2], bool)
    for x1, y1, x2, y2 in rec.boxes:
        mask[y1:y2, x1:x2] = True
    red_minus_blue = img[..., 2].astype(int) - img[..., 0].astype(int)
    if red_minus_blue.std() > 1:  # not an infrared (grey) frame
        assert red_minus_blue[mask].mean() > red_minus_blue[~mask].mean()


def test_empty_frame_has_the_requested_size_and_no_animals():
    img = synth.render_empty_frame("cow", (1920, 1080), seed=3, image_scale=0.2)
    assert img.shape == (216, 384, 3) and img.dtype == np.uint8 and img.std() > 1
    assert not np.array_equal(img, synth.render_empty_frame("cow", (1920, 1080), seed=4, image_scale=0.2))
    with pytest.raises(ValueError, match="1280x960"):
        synth.render_empty_frame("cow", (1280, 960))


# ----------------------------------------------------------------------------- calibration


def test_large_labels_only_run_matches_the_real_statistics(tmp_path):
    s = synth.generate_synthetic_dataset(tmp_path / "d", tmp_path / "t", train_counts={"cow": 400, "pig": 250},
                                         test_counts={"cow": 0, "pig": 0}, image_scale=0.1, labels_only=True,
                                         progress=False)
    per_image = {}
    for label in ("cow", "pig"):
        per_image[label] = np.array([len(d["label_info"]["annotations"]) for d in _labels(s.train_dir, label).values()])
    cow, pig = per_image["cow"], per_image["pig"]
    # box-count groups of the real training set (cow 7,383 / 3,413 / 1,356; pig 506 / 2,749 / 1,048)
    assert abs((cow < 4).mean() - 0.608) < 0.07
    assert abs(((cow >= 4) & (cow < 6)).mean() - 0.281) < 0.07
    assert abs((cow >= 6).mean() - 0.112) < 0.05
    assert abs((pig < 8).mean() - 0.118) < 0.07
    assert abs(((pig >= 8) & (pig < 13)).mean() - 0.639) < 0.09
    assert abs((pig >= 13).mean() - 0.244) < 0.08
    assert abs(s.left_out_cow_boxes / s.train_true_boxes["cow"] - 0.15) < 0.04
    # pig frame sizes in the real proportion 3,131 : 1,172
    with zipfile.ZipFile(s.train_dir / TRAIN_ZIPS[("pig", "labels")]) as z:
        widths = Counter(json.loads(z.read(n))["label_info"]["image"]["width"] for n in z.namelist())
    assert abs(widths[192] / 250 - 3131 / 4303) < 0.01 and widths[192] + widths[128] == 250


def test_compare_with_the_real_answer(tmp_path, real_answer_csv):
    s = synth.generate_synthetic_dataset(tmp_path / "d", tmp_path / "t", train_counts={"cow": 1, "pig": 1},
                                         test_counts={"cow": 200, "pig": 100}, image_scale=0.5, labels_only=True,
                                         progress=False)
    table = synth.compare_with_answer(s.answer_csv, real_answer_csv)
    assert list(table.columns) == ["a", "b", "ratio"]
    for label in ("cow", "pig"):
        t = table.loc[label, "ratio"]
        assert 0.85 < t["boxes_per_image_mean"] < 1.15, label
        for stat in ("w_q25", "w_q50", "w_q75", "h_q25", "h_q50", "h_q75"):
            assert 0.75 < t[stat] < 1.3, (label, stat, t[stat])
    real = synth.answer_statistics(real_answer_csv)
    assert real.loc["boxes", "pig"] == 5716 and real.loc["boxes", "cow"] == 4931
    # re-normalised, the 1920x1080 pig frames of the real answer no longer reach past the frame
    assert real.loc["w_q95", "pig"] < synth.answer_statistics(real_answer_csv, fix_pig_normalisation=False).loc[
        "w_q95", "pig"]


def test_compare_an_answer_with_itself(synth_data):
    table = synth.compare_with_answer(synth_data.answer_csv, synth_data.answer_csv)
    assert np.allclose(table["a"], table["b"])
    assert table.loc[("cow", "images"), "a"] == synth_data.summary.test_images["cow"]


# ----------------------------------------------------------------------------- errors and CLI


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must differ"):
        synth.generate_synthetic_dataset(tmp_path, tmp_path, n_train=4, n_test=2)
    with pytest.raises(ValueError, match="n_train"):
        synth.generate_synthetic_dataset(tmp_path / "a", tmp_path / "b", n_train=1, n_test=2)
    with pytest.raises(ValueError, match="missing_cow_rate"):
        synth.generate_synthetic_dataset(tmp_path / "a", tmp_path / "b", n_train=4, n_test=2, missing_cow_rate=1.0)
    with pytest.raises(ValueError, match="image_scale"):
        synth.generate_synthetic_dataset(tmp_path / "a", tmp_path / "b", n_train=4, n_test=2, image_scale=0.001)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        synth.compare_with_answer(tmp_path / "nowhere.csv", tmp_path / "nowhere.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        synth.answer_statistics(bad)
    assert not (tmp_path / "a").exists(), "nothing is written when the arguments are wrong"


def test_an_interrupted_run_leaves_no_partial_files(tmp_path, monkeypatch):
    real_render = synth_dataset.render_image
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(args)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synth_dataset, "render_image", failing_render)
    with pytest.raises(KeyboardInterrupt):
        synth.generate_synthetic_dataset(tmp_path / "d", tmp_path / "t", n_train=8, n_test=2, image_scale=0.1,
                                         labels_only=True, progress=False)
    assert [p.name for p in (tmp_path / "d").iterdir()] == []
    assert [p.name for p in (tmp_path / "t").iterdir()] == []


def test_cli_writes_the_set_and_prints_a_summary(tmp_path, capsys):
    rc = cli_main(["synth", "--out", str(tmp_path / "data"), "--test-out", str(tmp_path / "data_test"),
                   "--n-train", "4", "--n-test", "2", "--seed", "2", "--missing-cow-rate", "0.3",
                   "--image-scale", "0.1", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "left-out cow boxes" in out and "cow 3 images" in out
    assert all((tmp_path / "data" / z).is_file() for z in TRAIN_ZIPS.values())
    assert (tmp_path / "data_test" / "answer.csv").is_file()
    rc = cli_main(["synth", "--out", str(tmp_path / "x"), "--test-out", str(tmp_path / "x"), "--quiet"])
    assert rc == 1


@pytest.mark.parametrize("preview", [False, True])
def test_cli_negative_seed_names_the_option(tmp_path, capsys, preview):
    where = ["--preview", str(tmp_path / "p.png")] if preview else ["--test-out", str(tmp_path / "data_test")]
    rc = cli_main(["synth", "--out", str(tmp_path / "data"), *where, "--n-train", "4", "--n-test", "2",
                   "--seed", "-3", "--labels-only", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err == "livestock synth: error: --seed -3: must be 0 or more\n"
    assert list(tmp_path.iterdir()) == []


def test_cli_names_every_option_that_no_set_can_take(tmp_path, capsys):
    rc = cli_main(["synth", "--out", str(tmp_path / "data"), "--test-out", str(tmp_path / "data_test"),
                   "--n-train", "1", "--n-test", "-2", "--missing-cow-rate", "1", "--image-scale", "0.01",
                   "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err == ("livestock synth: error: --n-train 1: must be 2 or more (one image of each class); "
                               "--n-test -2: must be 0 or more; --missing-cow-rate 1.0: must be in [0, 1); "
                               "--image-scale 0.01: must be in (0, 1] and give frames of at least 16 px; "
                               "--workers 0: must be 1 or more\n")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- benchmark


@pytest.mark.benchmark
def test_benchmark_render_speed():
    """Seconds per full-size frame (rendering + JPEG), wall and CPU, and per labels-only frame."""
    for label, size in (("cow", (1920, 1080)), ("pig", (1920, 1080)), ("pig", (1280, 960))):
        synth.render_image(label, 0, size=size)  # warm-up: noise field of this size
        for labels_only in (False, True):
            n = 20
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(n):
                synth.render_image(label, i + 1, size=size, labels_only=labels_only)
            wall, cpu = (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n
            mode = "labels only" if labels_only else "rendered"
            print(f"\n{label} {size[0]}x{size[1]} {mode}: {wall:.4f} s wall, {cpu:.4f} s CPU per image")


@pytest.mark.benchmark
def test_benchmark_full_size_label_set(tmp_path):
    """As many label files as the real training set (16,455) plus its 2,057 test images, labels only, frames
    at a tenth of the real size: the cost of planning the scenes and writing the files."""
    s = synth.generate_synthetic_dataset(tmp_path / "data", tmp_path / "data_test", n_train=16_455, n_test=2_057,
                                         image_scale=0.1, labels_only=True, progress=False)
    print(f"\n{s.format()}")
    sizes = {p.name: p.stat().st_size for p in s.train_dir.iterdir()}
    print("zip sizes (MB): " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sizes.items()))

