"""Read the AI Hub livestock bbox set (zips or extracted folders) into validated records.

Input, in ``data_dir``: either the zips themselves (``[원천]소_bbox.zip`` images, ``[라벨]소_bbox.zip`` labels,
pig likewise; any ``*.zip`` at the top level is read), or, when there is no zip there, a folder tree holding the
JPEGs and JSONs at any depth. Images and labels are paired by file stem wherever they sit. Folders this package
wrote into the tree (a prepared set, a split: each holds a ``source.json`` provenance record) are never read as
data; :func:`source_files` lists exactly the files read, which :mod:`livestock.provenance` fingerprints.

The class comes from names only: the file name (``livestock_cow_bbox_000123``), the folders above it and the
zip name (``소`` = cow, ``돼지`` = pig). The JSON's ``category_id`` says nothing about cow or pig and is not read.

Nothing is dropped or changed silently: every problem becomes a row of the validation report
(``file, problem, severity, action, detail, location``). Severity ``error`` means the item (image or box) was
left out, ``warning`` that it was kept but changed or is suspicious, ``info`` that a non-data file was ignored.
What is done with each problem, by default:

==================== ======== =====================================================================
problem              severity action
==================== ======== =====================================================================
unsafe_path          error    zip member whose path escapes the target (``../``, ``/abs``, ``C:``) refused
bad_zip              error    the whole zip is unreadable: skipped
unrecognised_file    info     neither JPEG nor JSON (README, ``__MACOSX``): ignored
label_ignored        info     ``images_only``: label JSONs are not read
unknown_class        error    no name on the path says cow or pig: image skipped
class_conflict       error    the names on the path say both cow and pig: image skipped
duplicate_image      error    same image stem seen again (any zip or folder): the first one is kept
duplicate_label      error    same label stem seen again: the first one is kept
label_without_image  error    label skipped
image_without_label  error    image skipped
malformed_json       error    unparsable / truncated JSON, missing keys, bad width or height: image skipped
unreadable_jpeg      error    no JPEG header (SOI + SOF) or the zip member cannot be read: image skipped
size_mismatch        error    JSON width/height differ from the JPEG header: image skipped (the frame of
                              the box coordinates is unknown)
jpeg_missing_eoi     warning  JPEG does not end with the EOI marker (truncated?): kept, YOLOv5 repairs it
malformed_box        error    annotation without a 4-element ``bbox`` list: box dropped
non_numeric_box      error    a coordinate is not a finite number (string, null, NaN): box dropped
inverted_box         warning  x2 < x1 or y2 < y1: corners swapped, box kept (same rectangle, other corners)
zero_area_box        error    x1 == x2 or y1 == y2: box dropped
clipped_box          warning  box partly outside the image: clipped to the image, kept
box_outside_image    error    box entirely outside the image: box dropped
==================== ======== =====================================================================

An empty ``annotations`` list is valid: an image with no box. With ``strict=True`` the first problem that is
not ``info`` raises a :class:`ValueError` naming the file.

JPEG sizes are read from the SOF marker (no decoding). Zip member names are decoded as UTF-8 when flagged so,
else as CP949 (Korean Windows zips), else UTF-8 without the flag; the Info-ZIP Unicode path field wins when present.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from livestock.fileio import atomic_link_or_copy, atomic_write_bytes
from livestock.paths import SOURCE_RECORD, SOURCE_SUFFIX
from livestock.records import CLASS_NAMES, ImageRecord

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg"})
LABEL_EXTENSIONS = frozenset({".json"})
PROBLEM_COLUMNS = ["file", "problem", "severity", "action", "detail", "location"]

# Words that name a class in a file, folder or zip name (compared token by token, lower-cased).
_CLASS_WORDS = {
    "cow": "cow", "cows": "cow", "cattle": "cow", "소": "cow",
    "pig": "pig", "pigs": "pig", "swine": "pig", "돼지": "pig",
}
_TOKEN_SPLIT = re.compile(r"[^0-9a-z가-힣]+")
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNICODE_PATH_EXTRA = 0x7075  # Info-ZIP Unicode Path extra field
_HEADER_PROBE = 1 << 16  # bytes read from an already extracted JPEG to find its SOF marker


# ---------------------------------------------------------------- names


def classes_named(name: str) -> set[str]:
    """Classes a single name (file stem, folder or zip name) speaks of, e.g. ``[원천]소_bbox.zip`` -> {'cow'}."""
    return {_CLASS_WORDS[t] for t in _TOKEN_SPLIT.split(name.lower()) if t in _CLASS_WORDS}


def class_from_path(parts: Iterable[str]) -> tuple[str | None, set[str]]:
    """The class named along a path (file name, its folders, the zip name).

    A component naming both classes says nothing. Returns ``(class, all classes named)``; the class is
    ``None`` when no component or more than one class is named (the caller reports which).
    """
    named: set[str] = set()
    for part in parts:
        found = classes_named(part)
        if len(found) == 1:
            named |= found
    return (next(iter(named)) if len(named) == 1 else None), named


def decode_member_name(info: zipfile.ZipInfo) -> str:
    """The member's real name: zipfile decodes unflagged names as CP437, Korean zips are CP949."""
    unicode_name = _unicode_path_extra(info)
    if unicode_name is not None:
        return unicode_name
    if info.flag_bits & 0x800:
        return info.filename  # already decoded as UTF-8 by zipfile
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:  # zipfile was given another metadata encoding: trust it
        return info.filename
    if raw.isascii():
        return info.filename
    for encoding in ("utf-8", "cp949"):  # unflagged UTF-8 (macOS, 7-Zip) before CP949 (Windows Korean)
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return info.filename


def _unicode_path_extra(info: zipfile.ZipInfo) -> str | None:
    extra, i = info.extra, 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, i)
        body = extra[i + 4: i + 4 + size]
        if tag == _UNICODE_PATH_EXTRA and len(body) >= 5 and body[0] == 1:
            # Valid only if it was written for the current header name (CRC of the raw name bytes).
            try:
                raw = info.filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
            except UnicodeEncodeError:
                return None
            if struct.unpack_from("<I", body, 1)[0] == zlib.crc32(raw):
                try:
                    return body[5:].decode("utf-8")
                except UnicodeDecodeError:
                    return None
        i += 4 + size
    return None


def is_unsafe_member_path(name: str) -> bool:
    """True for a member path that would land outside the folder it is extracted into."""
    n = name.replace("\\", "/")
    return n.startswith("/") or bool(_DRIVE.match(n)) or ".." in n.split("/")


# ---------------------------------------------------------------- JPEG header


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a JPEG's SOF marker, without decoding. Raises ValueError when absent."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        raise ValueError("not a JPEG (no SOI marker)")
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise ValueError(f"corrupt JPEG marker stream at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # stand-alone markers
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("no SOF marker before image data")
        if i + 2 > n:
            break
        (seg_len,) = struct.unpack_from(">H", data, i)
        if seg_len < 2:
            raise ValueError(f"corrupt JPEG segment length at byte {i}")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 7 > n:
                break
            height, width = struct.unpack_from(">HH", data, i + 3)
            if width == 0 or height == 0:
                raise ValueError(f"JPEG header gives size {width}x{height}")
            return int(width), int(height)
        i += seg_len
    raise ValueError("truncated JPEG header (no SOF marker)")


def _file_jpeg_size(path: Path) -> tuple[tuple[int, int], bool]:
    """Header size and whether the file ends with EOI, reading only the start and the last two bytes."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_PROBE)
        try:
            size = jpeg_size(head)
        except ValueError:
            head += f.read()  # SOF after a large EXIF/ICC block: read the rest
            size = jpeg_size(head)
        f.seek(-2, os.SEEK_END)
        return size, f.read(2) == b"\xff\xd9"


# ---------------------------------------------------------------- report


@dataclass
class Problem:
    """One row of the validation report."""

    file: str
    problem: str
    severity: str  # "error" (item left out) | "warning" (kept, changed or suspicious) | "info"
    action: str
    detail: str = ""
    location: str = ""


class ValidationLog:
    """Collects problems; in strict mode the first non-info problem raises ValueError naming the file."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.problems: list[Problem] = []

    def report(self, file: str, problem: str, severity: str, action: str, detail: str = "", location: str = "") -> None:
        """Record one problem (raise instead in strict mode, unless it is only info)."""
        if self.strict and severity != "info":
            raise ValueError(f"{location or file}: {problem}: {detail} (strict mode)")
        self.problems.append(Problem(file, problem, severity, action, detail, location))

    def frame(self) -> pd.DataFrame:
        """The problems as the validation report table."""
        return pd.DataFrame([p.__dict__ for p in self.problems], columns=PROBLEM_COLUMNS)

    def counts(self) -> Counter:
        """Problems per kind."""
        return Counter(p.problem for p in self.problems)


def summarize_problems(problems: pd.DataFrame) -> str:
    """Counts per problem (errors first, then warnings, then info; most frequent first) as printable lines."""
    if problems.empty:
        return "validation: no problems found"
    counts = problems.groupby(["problem", "severity", "action"], sort=False).size().reset_index(name="count")
    counts["rank"] = counts["severity"].map({"error": 0, "warning": 1, "info": 2})
    counts = counts.sort_values(["rank", "count"], ascending=[True, False])
    lines = [f"validation: {len(problems)} problem rows"]
    lines += [f"  {r.count:>7}  {r.problem:<20} {r.severity:<8} {r.action}" for r in counts.itertuples()]
    return "\n".join(lines)


# ---------------------------------------------------------------- inventory


@dataclass
class _Entry:
    name: str  # path inside the zip or below data_dir, decoded
    basename: str
    stem: str
    kind: str  # "image" | "label"
    classes_named: set[str]  # classes the file name, its folders and its zip name speak of
    location: str  # for reports: "zip::member" or the file path
    size: int
    source: int  # index into the sources list
    info: zipfile.ZipInfo | None = None
    path: Path | None = None


@dataclass
class AIHubData:
    """What :func:`read_aihub` found: the records kept and one report row per problem."""

    records: list[ImageRecord]
    problems: pd.DataFrame
    n_images_seen: int = 0
    n_labels_seen: int = 0
    stats: dict = field(default_factory=dict)

    def summary(self) -> str:
        """What was read, kept and dropped, and the problem counts, as printable lines."""
        s = self.stats
        head = (
            f"read {self.n_images_seen} images, {self.n_labels_seen} labels -> {len(self.records)} records "
            f"({s.get('images_skipped', 0)} images skipped); boxes kept {s.get('boxes_kept', 0)}, "
            f"dropped {s.get('boxes_dropped', 0)}, clipped {s.get('boxes_clipped', 0)}, "
            f"swapped {s.get('boxes_swapped', 0)}"
        )
        return head + "\n" + summarize_problems(self.problems)


def _is_junk(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1].lower() in {"thumbs.db", ".ds_store"}


def _kind(basename: str) -> str | None:
    ext = os.path.splitext(basename)[1].lower()
    return "image" if ext in IMAGE_EXTENSIONS else "label" if ext in LABEL_EXTENSIONS else None


def find_sources(data_dir: str | os.PathLike) -> tuple[list[Path], Path | None]:
    """``(zips, folder)``: the top-level zips of ``data_dir`` (or ``data_dir`` itself when it is a zip);
    when there is none, the folder to walk for extracted files."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"{data_dir}: data folder not found")
    if data_dir.is_file():
        if data_dir.suffix.lower() != ".zip":
            raise ValueError(f"{data_dir}: expected a folder or a .zip file")
        return [data_dir], None
    zips = sorted(p for p in data_dir.iterdir() if p.is_file() and p.suffix.lower() == ".zip")
    return (zips, None) if zips else ([], data_dir)


def _inventory(zips: list[Path], folder: Path | None, exclude: list[Path], log: ValidationLog,
               handles: list[zipfile.ZipFile | None]) -> list[_Entry]:
    entries: list[_Entry] = []

    def add(name: str, location: str, size: int, source: int, container: list[str], **where) -> None:
        basename = name.replace("\\", "/").rsplit("/", 1)[-1]
        if _is_junk(name) or _kind(basename) is None:
            log.report(basename, "unrecognised_file", "info", "ignored", "neither a JPEG nor a JSON", location)
            return
        stem = os.path.splitext(basename)[0]
        parts = [stem, *reversed(name.replace("\\", "/").split("/")[:-1]), *container]
        _, named = class_from_path(parts)
        entries.append(_Entry(name, basename, stem, _kind(basename), named, location, size, source, **where))

    for z in zips:
        try:
            zf = zipfile.ZipFile(z)
        except (zipfile.BadZipFile, OSError) as e:
            log.report(z.name, "bad_zip", "error", "zip skipped", str(e), str(z))
            continue
        handles.append(zf)
        source = len(handles) - 1
        for info in zf.infolist():
            name = decode_member_name(info)
            location = f"{z.name}::{name}"
            if is_unsafe_member_path(name):
                log.report(name.replace("\\", "/").rsplit("/", 1)[-1] or name, "unsafe_path", "error",
                           "member refused (never extracted)", f"path escapes the target folder: {name!r}", location)
                continue
            if info.is_dir() or name.endswith(("/", "\\")):
                continue
            add(name, location, info.file_size, source, [z.stem], info=info)

    if folder is not None:
        handles.append(None)
        source = len(handles) - 1
        for rel, path in _walk_folder(folder, exclude):
            add(rel, str(path), path.stat().st_size, source, [folder.name], path=path)
    return entries


def _walk_folder(folder: Path, exclude: Iterable[Path]) -> Iterator[tuple[str, Path]]:
    """``(relative name, path)`` of every file the reader looks at under ``folder``, in a stable order. Skipped:
    hidden folders, ``exclude``, folders this package wrote (they hold a provenance record: a prepared set, a split,
    a silver set), interrupted atomic writes and provenance records themselves."""
    skip = {Path(p).resolve() for p in exclude}
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() not in skip
                         and not (root_path / d / SOURCE_RECORD).is_file())
        for fname in sorted(files):
            if (fname.startswith(".") and fname.endswith(".tmp")) or fname == SOURCE_RECORD \
                    or fname.endswith(SOURCE_SUFFIX):
                continue  # an interrupted atomic write of ours, or a record of what a file was made from
            path = root_path / fname
            yield path.relative_to(folder).as_posix(), path


def source_files(data_dir: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The files :func:`read_aihub` reads from ``data_dir``: its top-level zips, or, when there is none, the JPEGs
    and JSONs of its folder tree (``exclude``: folders not to walk, such as the output folder)."""
    zips, folder = find_sources(data_dir)
    if folder is None:
        return zips
    return [path for rel, path in _walk_folder(folder, [Path(p) for p in exclude])
            if not _is_junk(rel) and _kind(path.name) is not None]


# ---------------------------------------------------------------- labels


def _number(v) -> float | None:
    """A finite JSON number (bool is not one), else None."""
    if type(v) not in (int, float):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def parse_label_json(data: bytes) -> tuple[int, int, list]:
    """``(width, height, annotations)`` of an AI Hub label file. Raises ValueError saying what is wrong."""
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        try:
            doc = json.loads(data.decode("cp949"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"not valid JSON: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON (truncated?): {e}") from None
    info = doc.get("label_info") if isinstance(doc, dict) else None
    if not isinstance(info, dict):
        raise ValueError("no 'label_info' object")
    image = info.get("image")
    if not isinstance(image, dict):
        raise ValueError("no 'label_info.image' object")
    w, h = _number(image.get("width")), _number(image.get("height"))
    if w is None or h is None or w <= 0 or h <= 0 or w != int(w) or h != int(h):
        raise ValueError(f"bad image size width={image.get('width')!r} height={image.get('height')!r}")
    anns = info.get("annotations")
    if not isinstance(anns, list):
        raise ValueError("no 'label_info.annotations' list")
    return int(w), int(h), anns


def validate_boxes(annotations: list, width: int, height: int, file: str, location: str,
                   log: ValidationLog, stats: Counter) -> np.ndarray:
    """Pixel-corner boxes kept from ``annotations``; each dropped or changed box gets a report row."""
    kept: list[tuple[float, float, float, float]] = []
    for i, ann in enumerate(annotations):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        where = f"box {i}: bbox={bbox!r}"
        if not isinstance(bbox, list) or len(bbox) != 4:
            log.report(file, "malformed_box", "error", "box dropped", f"{where} is not a list of 4 numbers", location)
            stats["boxes_dropped"] += 1
            continue
        coords = [_number(v) for v in bbox]
        if any(c is None for c in coords):
            log.report(file, "non_numeric_box", "error", "box dropped",
                       f"{where} has a non-numeric coordinate", location)
            stats["boxes_dropped"] += 1
            continue
        x1, y1, x2, y2 = coords
        if x2 < x1 or y2 < y1:
            x1, x2 = min(x1, x2), max(x1, x2)
            y1, y2 = min(y1, y2), max(y1, y2)
            log.report(file, "inverted_box", "warning", "corners swapped, box kept",
                       f"{where} -> {[x1, y1, x2, y2]}", location)
            stats["boxes_swapped"] += 1
        if x1 == x2 or y1 == y2:
            log.report(file, "zero_area_box", "error", "box dropped", f"{where} has zero area", location)
            stats["boxes_dropped"] += 1
            continue
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            if cx2 <= cx1 or cy2 <= cy1:
                log.report(file, "box_outside_image", "error", "box dropped",
                           f"{where} lies outside the {width}x{height} image", location)
                stats["boxes_dropped"] += 1
                continue
            log.report(file, "clipped_box", "warning", "clipped to the image, box kept",
                       f"{where} -> {[cx1, cy1, cx2, cy2]} ({width}x{height} image)", location)
            stats["boxes_clipped"] += 1
        kept.append((cx1, cy1, cx2, cy2))
    stats["boxes_kept"] += len(kept)
    return np.asarray(kept, dtype=np.float64).reshape(-1, 4)


# ---------------------------------------------------------------- images


def _read_entry(entry: _Entry, handles: list[zipfile.ZipFile | None]) -> bytes:
    zf = handles[entry.source]
    if zf is not None:
        return zf.read(entry.info)
    return entry.path.read_bytes()


def _materialise_image(entry: _Entry, images_dir: Path, handles: list[zipfile.ZipFile | None],
                       reuse: bool = True) -> tuple[Path, int, int, bool]:
    """Put the JPEG at ``images_dir/<basename>`` once (with ``reuse``, skipped when already there with the same
    size) and return ``(path, width, height, ends_with_eoi)`` from its header. Raises ValueError/OSError/BadZipFile."""
    dest = images_dir / entry.basename
    try:
        if reuse and dest.stat().st_size == entry.size:
            (w, h), eoi = _file_jpeg_size(dest)
            return dest, w, h, eoi
    except FileNotFoundError:
        pass
    except ValueError:
        pass  # a stale, broken file from before: extract again and judge the source
    data = _read_entry(entry, handles)
    w, h = jpeg_size(data)  # before writing: an unreadable image is never extracted
    if entry.path is not None:
        atomic_link_or_copy(entry.path, dest)  # an extracted image needs no second copy on disk
    else:
        atomic_write_bytes(dest, data)
    return dest, w, h, data[-2:] == b"\xff\xd9"


# ---------------------------------------------------------------- reader


def read_aihub(
    data_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    strict: bool = False,
    images_only: bool = False,
    exclude: Iterable[str | os.PathLike] = (),
    reuse_extracted: bool = True,
    progress: bool = True,
) -> AIHubData:
    """Read, validate and extract an AI Hub set.

    Each kept JPEG is placed once at ``images_dir/<file name>`` (idempotent) and becomes an
    :class:`ImageRecord` whose width/height come from the JSON (checked against the JPEG header) and whose
    boxes are validated pixel corners. ``images_only`` reads images without labels (the test zips): records
    without boxes, sized by the JPEG header. ``exclude`` lists folders not to walk (the output folder).
    ``reuse_extracted=False`` extracts every image again: a file already in ``images_dir`` may hold another image of
    the same name (synthetic and real sets share their naming scheme).
    """
    from tqdm.auto import tqdm

    # Absolute image paths: notebooks in sub-folders and YOLOv5 list files read records.jsonl from anywhere.
    images_dir = Path(images_dir).resolve()
    images_dir.mkdir(parents=True, exist_ok=True)
    log = ValidationLog(strict)
    stats: Counter = Counter()
    zips, folder = find_sources(data_dir)
    handles: list[zipfile.ZipFile | None] = []
    try:
        entries = _inventory(zips, folder, [Path(p) for p in exclude] + [images_dir], log, handles)
        images: dict[str, _Entry] = {}
        labels: dict[str, _Entry] = {}
        for e in entries:
            if e.kind == "label" and images_only:
                log.report(e.basename, "label_ignored", "info", "ignored (images only)", "", e.location)
                continue
            seen = images if e.kind == "image" else labels
            if e.stem in seen:
                log.report(e.basename, f"duplicate_{e.kind}", "error", "skipped, first one kept",
                           f"same name as {seen[e.stem].location}", e.location)
                continue
            seen[e.stem] = e
        n_images, n_labels = len(images), len(labels)

        if not images_only:
            for stem, lab in labels.items():
                if stem not in images:
                    log.report(lab.basename, "label_without_image", "error", "label skipped",
                               "no image with this name", lab.location)
            for stem, img in list(images.items()):
                if stem not in labels:
                    log.report(img.basename, "image_without_label", "error", "image skipped",
                               "no label JSON with this name", img.location)
                    del images[stem]

        # Read in archive order so each zip is walked front to back.
        order = sorted(images.values(), key=lambda e: (e.source, e.info.header_offset if e.info else 0, e.name))
        records: list[ImageRecord] = []
        for img in tqdm(order, desc="reading", unit="img", disable=not progress, mininterval=0.5):
            rec = _read_one(img, None if images_only else labels[img.stem], images_dir, handles, log, stats,
                            reuse_extracted)
            if rec is not None:
                records.append(rec)
        stats["images_skipped"] = n_images - len(records)
    finally:
        for zf in handles:
            if zf is not None:
                zf.close()
    records.sort(key=lambda r: r.image_id)
    return AIHubData(records, log.frame(), n_images, n_labels, dict(stats))


# Bad content, bad CRC, truncated or encrypted member (RuntimeError), unsupported compression.
_READ_ERRORS = (ValueError, zipfile.BadZipFile, OSError, zlib.error, EOFError, RuntimeError, NotImplementedError)


def _read_one(img: _Entry, lab: _Entry | None, images_dir: Path, handles: list, log: ValidationLog,
              stats: Counter, reuse_extracted: bool = True) -> ImageRecord | None:
    # Class from names: every name on the image's and the label's path must agree.
    named = img.classes_named | (lab.classes_named if lab else set())
    if len(named) != 1:
        problem = "unknown_class" if not named else "class_conflict"
        detail = ("no file, folder or zip name says cow or pig" if not named
                  else f"names on the path say {sorted(named)}")
        log.report(img.basename, problem, "error", "image skipped", detail, img.location)
        return None
    cls = next(iter(named))

    if lab is not None:
        try:
            width, height, anns = parse_label_json(_read_entry(lab, handles))
        except _READ_ERRORS as e:
            log.report(lab.basename, "malformed_json", "error", "image skipped", str(e), lab.location)
            return None
    try:
        path, jw, jh, eoi = _materialise_image(img, images_dir, handles, reuse_extracted)
    except _READ_ERRORS as e:
        log.report(img.basename, "unreadable_jpeg", "error", "image skipped", str(e), img.location)
        return None
    if lab is None:
        width, height, boxes = jw, jh, np.zeros((0, 4))
    else:
        if (jw, jh) != (width, height):
            log.report(lab.basename, "size_mismatch", "error", "image skipped",
                       f"JSON says {width}x{height}, JPEG header says {jw}x{jh}", lab.location)
            return None
        boxes = validate_boxes(anns, width, height, lab.basename, lab.location, log, stats)
    if not eoi:
        log.report(img.basename, "jpeg_missing_eoi", "warning", "kept (YOLOv5 restores it on load)",
                   "file does not end with the JPEG EOI marker (truncated?)", img.location)
    return ImageRecord(img.basename, str(path), width, height, cls, boxes)


__all__ = [
    "AIHubData", "IMAGE_EXTENSIONS", "LABEL_EXTENSIONS", "PROBLEM_COLUMNS", "Problem", "ValidationLog",
    "class_from_path", "classes_named", "decode_member_name", "find_sources", "is_unsafe_member_path",
    "jpeg_size", "parse_label_json", "read_aihub", "source_files", "summarize_problems", "validate_boxes",
    "CLASS_NAMES",
]
