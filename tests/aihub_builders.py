"""Tiny AI Hub-format zips and folders for reader tests: real JPEG bytes, hand-made (and hostile) label JSONs."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

_JPEG_CACHE: dict[tuple[int, int], bytes] = {}


def tiny_jpeg(width: int = 32, height: int = 18) -> bytes:
    """A real, decodable JPEG of the given size."""
    key = (width, height)
    if key not in _JPEG_CACHE:
        img = np.zeros((height, width, 3), np.uint8)
        img[:, : width // 2] = (40, 120, 200)
        ok, buf = cv2.imencode(".jpg", img)
        assert ok
        _JPEG_CACHE[key] = buf.tobytes()
    return _JPEG_CACHE[key]


def label_json(width: int, height: int, boxes: list, category_id: int = 1) -> bytes:
    """An AI Hub label file; ``category_id`` is deliberately meaningless for the class."""
    doc = {
        "label_info": {
            "image": {"file_name": "x.jpg", "width": width, "height": height},
            "annotations": [{"bbox": b, "category_id": category_id, "id": i} for i, b in enumerate(boxes)],
            "categories": [{"id": 1, "name": "pig"}, {"id": 2, "name": "cow"}],
        }
    }
    return json.dumps(doc).encode("utf-8")


class _RawNameInfo(zipfile.ZipInfo):
    """A ZipInfo whose name is written as given bytes without the UTF-8 flag (old Korean Windows zips)."""

    raw_name: bytes = b""

    def _encodeFilenameFlags(self):  # noqa: N802 (zipfile's own name)
        return self.raw_name, self.flag_bits & ~0x800


def write_zip(path: Path, members: dict[str, bytes] | list[tuple[str, bytes]], cp949: bool = False) -> Path:
    """Write ``members`` (name -> bytes, or a list of pairs to allow the same name twice) into a zip.
    With ``cp949`` non-ASCII names are stored as CP949 bytes without the UTF-8 flag."""
    items = members.items() if isinstance(members, dict) else members
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in items:
            if cp949 and not name.isascii():
                info = _RawNameInfo(name)
                info.raw_name = name.encode("cp949")
            else:
                info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
            zf.writestr(info, data)
    return path


def aihub_name(label: str, i: int, ext: str) -> str:
    """AI Hub file name of image (``jpg``) or label (``json``) number ``i`` of class ``label``."""
    return f"livestock_{label}_bbox_{i:06d}.{ext}"


def cow_name(i: int, ext: str) -> str:
    """AI Hub file name of cow file number ``i``."""
    return aihub_name("cow", i, ext)


def pig_name(i: int, ext: str) -> str:
    """AI Hub file name of pig file number ``i``."""
    return aihub_name("pig", i, ext)


def write_basic_set(data_dir: Path) -> dict[str, dict]:
    """Four zips: 2 cow images (one without boxes, in nested folders), 2 pig images of another size.
    Returns the expected records by image id (width, height, label, boxes)."""
    expected = {
        cow_name(1, "jpg"): dict(width=32, height=18, label="cow", boxes=[[1, 2, 10, 12], [15.5, 0, 31, 17.25]]),
        cow_name(2, "jpg"): dict(width=32, height=18, label="cow", boxes=[]),
        pig_name(1, "jpg"): dict(width=24, height=18, label="pig", boxes=[[0, 0, 24, 18]]),
        pig_name(2, "jpg"): dict(width=24, height=18, label="pig", boxes=[[3, 4, 5, 6], [6, 7, 20, 9]]),
    }
    cow_img, cow_lab, pig_img, pig_lab = {}, {}, {}, {}
    for image_id, e in expected.items():
        stem = image_id[:-4]
        # category_id 2 ("cow" in the categories list) on pig files, 1 on cow files: must be ignored.
        cat = 2 if e["label"] == "pig" else 1
        if e["label"] == "cow":
            cow_img[f"소/bbox/2021/{image_id}"] = tiny_jpeg(e["width"], e["height"])
            cow_lab[f"소/{stem}.json"] = label_json(e["width"], e["height"], e["boxes"], cat)
        else:
            pig_img[image_id] = tiny_jpeg(e["width"], e["height"])
            pig_lab[f"labels/{stem}.json"] = label_json(e["width"], e["height"], e["boxes"], cat)
    write_zip(data_dir / "[원천]소_bbox.zip", cow_img)
    write_zip(data_dir / "[라벨]소_bbox.zip", cow_lab)
    write_zip(data_dir / "[원천]돼지_bbox.zip", pig_img)
    write_zip(data_dir / "[라벨]돼지_bbox.zip", pig_lab)
    return expected
