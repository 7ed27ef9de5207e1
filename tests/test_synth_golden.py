"""The synthetic generator's output, pinned: the same seed and size must give the same bytes.

Every recorded figure in the README and docs/ was measured on data from this generator, so a change to its code that
changes its output (a reordering of random draws, a new default) would silently invalidate them. These hashes
were taken from the generator as it stood when the figures were measured; a deliberate change to the data
must update them together with the figures.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from livestock.data.synth import generate_synthetic_dataset, render_image

# (folder, zip name) -> digest over (member name, sha256 of member bytes), in name order
ZIP_DIGESTS = {
    ("data", "[라벨]돼지_bbox.zip"): "b018b11e57f330376d1fda875d0004a86d0176a7b7e689ba8b74e465249056cc",
    ("data", "[라벨]소_bbox.zip"): "f633a6d66b92b57fcb745127466b43bcf783dde99f6817f1f80481fa38050fae",
    ("data", "[원천]돼지_bbox.zip"): "7b1c9b8f8118bfff8301c6436fe5c136b92e4552ed152edf46445ce085388285",
    ("data", "[원천]소_bbox.zip"): "bc0ecd541ba188e401a63747126cc70a68a2623919a62adffaa24f0f7b8492cd",
    ("data_test", "[원천]돼지_bbox.zip"): "69836386241db1608db9e6227d0a16c54729dba5e5bc22a4f01e2a04e448777a",
    ("data_test", "[원천]소_bbox.zip"): "939bbfc27db4e3a0beea37a4d34a58279e4f8f7a570769496d9abe226e027291",
}
TRUTH_SHA256 = "7b40e0960e377dbc6371f945780d1418190723e465706ff24b135e5a7f0a2ddb"
ANSWER_SHA256 = "e6dda9fd001e45e12476f9a8c2d7b95cc6387e17666c50a9542c743831bcf053"
# full-size frames as the main job renders them: (label, number, split, size) -> (jpeg, boxes, pixels) sha256
FRAMES = {
    ("cow", 7, "train", (1920, 1080)): (
        "b1f94fcd5b08a802ef0998aecbd6b44d7ad2b03bd1179b67c47ca47171bbbb03",
        "259801d3a5192a60d51c53996f32e94fe3b084b005c55a0b62955d46efa2af4c",
        "ceb8b61174cf9afaf0a7fa709e270ac6f8ae034917c5a97dacb6a84790eb68da"),
    ("pig", 123, "test", (1280, 960)): (
        "f6473ff261d4d564781d02df95de6454b44eab277b2726a42488441e7dc5f6a4",
        "244fe4a00b8f5184f7462d747d9e20cc0ceb678f4a8630bb86d31e0eba738e3f",
        "c31fe2a44640434c4a338e46b440b4d54a2a2d3e72a228b86ab6ba74370d73ce"),
    ("pig", 42, "train", (1920, 1080)): (
        "cf39435ec5a63204d99e5cf982d28953de1610a7de7e129133582784a249bace",
        "50a119669bc5a393ea508b75bc197da0081b4e1b71daa5a86b95d411324ec50d",
        "af51357bec8574c99669b6eba6e5c43b15abf9b73f16de877030cd69a4c19ffb"),
}


def _zip_digest(path: Path) -> str:
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as z:
        for info in sorted(z.infolist(), key=lambda i: i.filename):
            h.update(info.filename.encode())
            h.update(hashlib.sha256(z.read(info)).digest())
    return h.hexdigest()


def test_small_dataset_is_byte_identical(tmp_path):
    summary = generate_synthetic_dataset(tmp_path / "data", tmp_path / "data_test", n_train=16, n_test=6, seed=3,
                                         missing_cow_rate=0.15, image_scale=0.25, progress=False)
    got = {(folder, name): _zip_digest(tmp_path / folder / name) for folder, name in ZIP_DIGESTS}
    assert got == ZIP_DIGESTS
    assert hashlib.sha256(summary.truth_csv.read_bytes()).hexdigest() == TRUTH_SHA256
    assert hashlib.sha256(summary.answer_csv.read_bytes()).hexdigest() == ANSWER_SHA256


@pytest.mark.parametrize("key", list(FRAMES), ids=lambda k: f"{k[0]}-{k[1]}-{k[2]}")
def test_full_size_frame_is_byte_identical(key):
    label, number, split, size = key
    pixels, rec = render_image(label, number, split, 0, size)
    boxes = json.dumps([list(map(float, b)) for b in rec.boxes]).encode()
    assert (hashlib.sha256(rec.jpeg).hexdigest(), hashlib.sha256(boxes).hexdigest(),
            hashlib.sha256(pixels.tobytes()).hexdigest()) == FRAMES[key]
