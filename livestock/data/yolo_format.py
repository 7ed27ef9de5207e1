"""Records -> YOLOv5 dataset: ``images/``, ``labels/``, ``records.jsonl``, ``validation_report.csv``, ``data.yaml``.

YOLOv5 finds an image's label file by replacing ``/images/`` with ``/labels/`` in its path, so each JPEG is
extracted once into ``OUT_DIR/images/`` and splits are list files of those paths (never copies).
Label lines are ``cls xc yc w h``, normalised by each image's own width and height (pig = 0, cow = 1).
"""
from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from livestock import paths, provenance
from livestock.data.aihub import class_from_path, read_aihub
from livestock.fileio import atomic_write_csv, atomic_write_text
from livestock.records import CLASS_NAMES, ImageRecord, save_records

LABEL_DECIMALS = 6
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # image files a dataset may hold


# ---------------------------------------------------------------- coordinates


def pixel_to_yolo(boxes: np.ndarray, width: float | np.ndarray, height: float | np.ndarray) -> np.ndarray:
    """Pixel corners ``(x1, y1, x2, y2)`` -> normalised ``(xc, yc, w, h)``.

    ``width``/``height`` are scalars or one value per box (vectorised over many images at once).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = np.asarray(width, dtype=np.float64)
    h = np.asarray(height, dtype=np.float64)
    out = np.empty_like(b)
    out[:, 0] = (b[:, 0] + b[:, 2]) / 2.0 / w
    out[:, 1] = (b[:, 1] + b[:, 3]) / 2.0 / h
    out[:, 2] = (b[:, 2] - b[:, 0]) / w
    out[:, 3] = (b[:, 3] - b[:, 1]) / h
    return out


def yolo_to_pixel(yolo: np.ndarray, width: float | np.ndarray, height: float | np.ndarray) -> np.ndarray:
    """Normalised ``(xc, yc, w, h)`` -> pixel corners ``(x1, y1, x2, y2)``; the inverse of :func:`pixel_to_yolo`."""
    y = np.asarray(yolo, dtype=np.float64).reshape(-1, 4)
    w = np.asarray(width, dtype=np.float64)
    h = np.asarray(height, dtype=np.float64)
    xc, yc, bw, bh = y[:, 0] * w, y[:, 1] * h, y[:, 2] * w, y[:, 3] * h
    return np.stack([xc - bw / 2.0, yc - bh / 2.0, xc + bw / 2.0, yc + bh / 2.0], axis=1)


def label_text(record: ImageRecord, decimals: int = LABEL_DECIMALS) -> str:
    """The YOLO label file of one record (empty string for an image with no box)."""
    if record.n_boxes == 0:
        return ""
    yolo = pixel_to_yolo(record.boxes, record.width, record.height)
    fmt = f"{record.class_id} {{:.{decimals}f}} {{:.{decimals}f}} {{:.{decimals}f}} {{:.{decimals}f}}\n"
    return "".join(fmt.format(*row) for row in yolo.tolist())


def read_label_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(class_ids, yolo_boxes)`` from a YOLO label file; ValueError naming the file when malformed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return np.zeros((0,), dtype=np.int64), np.zeros((0, 4))
    try:
        arr = np.array([line.split() for line in text.splitlines() if line.strip()], dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"{path}: malformed YOLO label file: {e}") from e
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f"{path}: expected 5 numbers per line, got shape {arr.shape}")
    return arr[:, 0].astype(np.int64), arr[:, 1:]


def label_path_for(image_path: str | os.PathLike) -> Path:
    """Where YOLOv5 looks for an image's labels: the last ``/images/`` becomes ``/labels/``, suffix ``.txt``."""
    s = os.fspath(image_path)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = s.rpartition(sa)
    if not sep:
        raise ValueError(f"{image_path}: not inside an 'images' folder, YOLOv5 could not find its labels")
    return Path(head + sb + tail).with_suffix(".txt")


def write_yolo_labels(records: Iterable[ImageRecord], labels_dir: str | os.PathLike, progress: bool = False) -> int:
    """Write ``labels_dir/<stem>.txt`` for each record; files whose content is already right are left alone.
    Returns how many files were (re)written."""
    from tqdm.auto import tqdm

    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    records = list(records)
    written = 0
    for r in tqdm(records, desc="labels", unit="img", disable=not progress, mininterval=0.5):
        path = labels_dir / f"{r.stem}.txt"
        text = label_text(r)
        try:
            if path.read_text(encoding="utf-8") == text:
                continue
        except FileNotFoundError:
            pass
        atomic_write_text(path, text)
        written += 1
    return written


# ---------------------------------------------------------------- data.yaml


def write_image_list(image_paths: Iterable[str | os.PathLike], path: str | os.PathLike) -> Path:
    """A YOLOv5 list file: one absolute image path per line."""
    lines = [os.path.abspath(p) for p in image_paths]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def write_data_yaml(
    path: str | os.PathLike,
    train: str | os.PathLike | Sequence[str | os.PathLike],
    val: str | os.PathLike | Sequence[str | os.PathLike],
    test: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
) -> Path:
    """YOLOv5's dataset file: absolute ``train``/``val``/``test`` (list files or image folders), ``nc: 2``,
    ``names: ['pig', 'cow']``. ``path`` (the dataset root YOLOv5 resolves relative entries against) is the
    yaml's own folder."""
    import yaml

    def absolute(v):
        if isinstance(v, (str, os.PathLike)):
            return str(Path(v).resolve())
        return [str(Path(p).resolve()) for p in v]

    path = Path(path)
    doc = {"path": str(path.parent.resolve()), "train": absolute(train), "val": absolute(val)}
    if test is not None:
        doc["test"] = absolute(test)
    doc["nc"] = len(CLASS_NAMES)
    doc["names"] = list(CLASS_NAMES)
    return atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


# ---------------------------------------------------------------- prepare


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` kept and wrote."""

    records: list[ImageRecord]
    problems: pd.DataFrame  # the validation report
    out_dir: Path
    images_dir: Path
    labels_dir: Path | None  # None for images-only sets
    records_path: Path
    report_path: Path
    image_list: Path  # all.txt: every record's image path
    data_yaml: Path | None  # all images as train and val, for quick checks; None for images-only sets
    summary: str = ""


def _remove_stale(folder: Path, keep: set[str], suffixes: set[str]) -> int:
    """Delete files a previous run left in our own output folder that no record points to any more."""
    removed = 0
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() in suffixes and p.name not in keep:
            p.unlink()
            removed += 1
    return removed


def _outermost_missing(path: Path) -> Path | None:
    """The outermost folder on the way to ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    for p in (path.absolute(), *path.absolute().parents):
        if p.exists():
            break
        missing = p
    return missing


def prepare_dataset(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    strict: bool = False,
    images_only: bool = False,
    progress: bool = True,
) -> PrepareResult:
    """Read + validate AI Hub zips (or extracted folders) in ``data_dir`` and write the YOLO-format set.

    ``out_dir`` receives ``images/`` (each JPEG once), ``labels/`` (one ``.txt`` per image),
    ``records.jsonl``, ``validation_report.csv``, ``all.txt``, ``data.yaml`` and, last, ``source.json``: the
    fingerprint of the zips or files read and whether they are the synthetic set (:mod:`livestock.provenance`).
    Re-running on the same inputs is cheap: already extracted images and unchanged labels are not rewritten. On
    other inputs every image is extracted again (the synthetic and the real set share file names); either way
    files of images no longer kept are removed. ``images_only`` (test zips): no labels and no data.yaml. Raises
    ValueError in strict mode on the first problem (removing the folders and images it created), and when no usable
    image is found (after writing the report). A set of other inputs already in ``out_dir`` stays whole until the new
    one has been read: the new images are extracted into ``images.partial/`` beside it (so for a moment the disk holds
    both) and moved in after, so a refusal, a crash or Ctrl-C while reading leaves the old set and its record as they
    were.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"{data_dir}: data folder not found")
    data_abs, out_abs = data_dir.resolve(), out_dir.resolve()
    if data_dir.is_dir() and (data_abs == out_abs or out_abs in data_abs.parents):
        raise ValueError(f"{out_dir}: the output folder must not contain the data folder {data_dir}")
    images_dir = out_dir / "images"
    # Fingerprinted before reading: inputs that change while they are read make the record stale, not wrong.
    inputs = provenance.input_fingerprint(data_dir, exclude=[out_dir])
    previous = provenance.read_record(out_dir)
    same_inputs = (previous is not None and previous.get("inputs") == inputs
                   and previous.get("images_only") == images_only)
    staging = out_dir / "images.partial"
    shutil.rmtree(staging, ignore_errors=True)  # of a run stopped while reading
    # Other inputs over another set's images (synthetic and real frames share names): read into `staging`, so that
    # the set in place is untouched until the new one is whole. Same inputs, or nothing there: read in place.
    swap = not same_inputs and images_dir.is_dir() and any(images_dir.iterdir())
    read_into = staging if swap else images_dir
    # A refusal while reading (strict mode's first problem) takes back what the reading created: the folders it made
    # and the images it extracted; a file that was there before stays.
    new_folder = _outermost_missing(read_into)
    before = set(os.listdir(read_into)) if new_folder is None and read_into.is_dir() else set()
    try:
        data = read_aihub(data_dir, read_into, strict=strict, images_only=images_only,
                          exclude=[out_dir], reuse_extracted=same_inputs, progress=progress)
    except Exception:
        if new_folder is not None:
            shutil.rmtree(new_folder, ignore_errors=True)
        elif read_into.is_dir():
            for name in set(os.listdir(read_into)) - before:
                (read_into / name).unlink(missing_ok=True)
        raise
    records = data.records
    if not same_inputs:
        provenance.forget(out_dir)  # the folder is about to change: no record until it is whole again

    report_path = atomic_write_csv(data.problems, out_dir / "validation_report.csv")
    if not records:  # before anything of a set already in out_dir is removed or rewritten: nothing to replace it
        shutil.rmtree(staging, ignore_errors=True)
        raise ValueError(f"{data_dir}: no usable image found (see {report_path})")
    if swap:  # the old set's record is gone: from here on nothing uses the folder until it is whole again
        for name in os.listdir(staging):
            os.replace(staging / name, images_dir / name)
        staging.rmdir()
        final = images_dir.resolve()
        records = [replace(r, image_path=str(final / Path(r.image_path).name)) for r in records]
    keep_images = {r.image_id for r in records}
    removed = _remove_stale(images_dir, keep_images, {".jpg", ".jpeg"})
    labels_dir = data_yaml = None
    if not images_only:
        labels_dir = out_dir / "labels"
        write_yolo_labels(records, labels_dir, progress=progress)
        removed += _remove_stale(labels_dir, {f"{r.stem}.txt" for r in records}, {".txt"})
    records_path = save_records(records, out_dir / "records.jsonl")
    image_list = write_image_list([r.image_path for r in records], out_dir / "all.txt")
    if not images_only:
        data_yaml = write_data_yaml(out_dir / "data.yaml", image_list, image_list)

    summary = data.summary()
    if removed:
        summary += f"\nremoved {removed} stale files of images no longer kept"
    provenance.write_record(out_dir, inputs=inputs, dataset=provenance.dataset_kind(data_dir),
                            made_by="livestock prepare", data=data_dir, images_only=images_only, images=len(records))
    return PrepareResult(records, data.problems, out_dir, images_dir, labels_dir, records_path, report_path,
                         image_list, data_yaml, summary)


def prepared_from(data_dir: str | os.PathLike, out_dir: str | os.PathLike, images_only: bool = False) -> bool:
    """Whether ``out_dir`` holds a set prepared (as ``images_only`` or not) from exactly the inputs now in
    ``data_dir``; when not, :func:`prepare_dataset` makes it so."""
    record = provenance.read_record(out_dir)
    return (record is not None and record.get("images_only") == images_only
            and (Path(out_dir) / "records.jsonl").is_file() and provenance.matches_inputs(out_dir, data_dir))


# ---------------------------------------------------------------- CLI


def cli_prepare_args(parser: argparse.ArgumentParser) -> None:
    """The ``livestock prepare`` options."""
    parser.add_argument("data_dir", nargs="?", default=str(paths.DATA_DIR),
                        help="folder with the AI Hub zips, or with their extracted files (default: %(default)s)")
    parser.add_argument("--out", default=None, help=f"output folder (default: {paths.PREPARED_DIR}, "
                                                     f"or {paths.PREPARED_TEST_DIR} with --images-only)")
    parser.add_argument("--strict", action="store_true", help="stop with an error at the first problem found")
    parser.add_argument("--images-only", action="store_true",
                        help="images without labels (the test zips): records with no boxes, sized by the JPEG header")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cli_prepare(args: argparse.Namespace) -> int:
    """``livestock prepare``: read, validate and convert a set and print what was kept."""
    out = args.out or str(paths.PREPARED_TEST_DIR if args.images_only else paths.PREPARED_DIR)
    res = prepare_dataset(args.data_dir, out, strict=args.strict, images_only=args.images_only,
                          progress=not args.quiet)
    print(res.summary)
    print(f"wrote {len(res.records)} records to {res.out_dir} (report: {res.report_path}"
          + (f", data.yaml: {res.data_yaml})" if res.data_yaml else ")"))
    return 0


# ---------------------------------------------------------------- dataset yaml files


def load_data_yaml(data_yaml: str | os.PathLike) -> tuple[dict, bool]:
    """A YOLOv5 dataset file with every ``train``/``val``/``test`` entry made absolute, and whether YOLOv5 would
    read the file differently. Relative entries resolve against ``path``, and a missing or relative ``path``
    against the yaml's own folder, where YOLOv5 would take its own package folder."""
    import yaml

    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise FileNotFoundError(f"{data_yaml}: dataset yaml not found (run `livestock split` or `livestock prepare`)")
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{data_yaml}: not valid YAML: {e}") from e
    if not isinstance(data, dict) or any(k not in data for k in ("train", "val", "names")):
        raise ValueError(f"{data_yaml}: a YOLOv5 dataset yaml needs 'train', 'val' and 'names'")
    root = Path(data.get("path") or ".")
    root_is_ours = not root.is_absolute()
    if root_is_ours:
        root = (data_yaml.parent / root).resolve()
    data["path"] = str(root)
    changed = False

    def absolute(entry: str) -> str:
        p = Path(entry)
        return str(p if p.is_absolute() else (root / p).resolve())

    for key in ("train", "val", "test"):
        entry = data.get(key)
        if not entry:
            continue
        new = absolute(entry) if isinstance(entry, str) else [absolute(e) for e in entry]
        changed |= root_is_ours and new != entry
        data[key] = new
        for p in [new] if isinstance(new, str) else new:
            if not Path(p).exists():
                raise FileNotFoundError(f"{data_yaml}: {key} entry {p} does not exist")
    return data, changed


def yaml_class_names(data: dict) -> dict[int, str]:
    """Class id -> name of a dataset yaml's ``names`` (a list or a mapping)."""
    names = data["names"]
    return dict(enumerate(names)) if isinstance(names, (list, tuple)) else {int(k): str(v) for k, v in names.items()}


def split_image_paths(data_yaml: str | os.PathLike, split: str = "val") -> list[Path]:
    """The image files of one split of a dataset yaml (folders searched recursively, list files read line by
    line relative to their folder), in the order YOLOv5 reads them."""
    data, _ = load_data_yaml(data_yaml)
    if not data.get(split):
        raise ValueError(f"{data_yaml}: no {split!r} entry")
    out: list[Path] = []
    for item in [data[split]] if isinstance(data[split], str) else data[split]:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    f = Path(line.strip())
                    out.append(f if f.is_absolute() else (p.parent / line.strip().removeprefix("./")).resolve())
    return out


def split_records(data_yaml: str | os.PathLike, split: str = "val") -> list[ImageRecord]:
    """The labelled images of one split of a dataset yaml as records: boxes from their YOLO label files (none
    when a label file is missing), size from the image header, class from the labels (each image holds one
    class in this contest) or, for an image without boxes, from its file name."""
    from PIL import Image


    data, _ = load_data_yaml(data_yaml)
    names = yaml_class_names(data)
    records = []
    for image in split_image_paths(data_yaml, split):
        with Image.open(image) as im:
            width, height = im.size
        label_file = label_path_for(image)
        class_ids, yolo = read_label_file(label_file) if label_file.is_file() else (np.zeros(0), np.zeros((0, 4)))
        classes = {names[int(c)] for c in class_ids}
        if len(classes) > 1:
            raise ValueError(f"{label_file}: boxes of several classes {sorted(classes)} in one image")
        label = classes.pop() if classes else class_from_path([image.name])[0]
        if label is None:
            continue  # no boxes and no class in its name: nothing to score it by
        records.append(ImageRecord(image.name, str(image), width, height, label, yolo_to_pixel(yolo, width, height)))
    return records
