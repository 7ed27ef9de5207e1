"""Contest submission files: writing ``answer.csv`` from detections, reading it back, validating it.

Submission format (one row per box)::

    ImageID,LabelName,Conf,XMin,XMax,YMin,YMax
    livestock_cow_bbox_000123.jpg,cow,0.93,0.2953,0.3979,0.0657,0.2166

- ``ImageID`` is the image file name with its extension; ``LabelName`` is ``pig`` or ``cow``.
- Coordinates are **normalised by each image's own width and height** (``XMin = x1 / width``,
  ``YMin = y1 / height``): the scorer compares them with the answer file's normalised boxes, so pixel
  coordinates, or a size other than the one the answer used, score nothing. Boxes are clipped to the image first.
  The real contest answer file follows another convention, that of the original scoring notebook: every cow
  image divided by 1920x1080 and every pig image by 1280x960, whatever its true size, so its 1920x1080 pig
  frames reach x = 1.5 and y = 1.125. ``normalise_by=ORIGINAL_NORMALISATION`` writes that convention
  (the image's class is read from its file name, e.g. ``livestock_pig_bbox_000123.jpg``).
- The rows of each image are listed by confidence, highest first. The scorer matches the detections of an image
  in file order (a detection takes its best box even when a later, more confident one would fit better), so
  any other order loses points. Boxes left with no area after clipping are dropped: they can only be false
  positives.

The answer (ground truth) file has the same columns without ``Conf``; an image without boxes has no rows.

Detections CSV (pixel coordinates, what a detector produced, before any conversion)::

    image_id,width,height,label,conf,x1,y1,x2,y2

One row per box; an image without any detection is one row with ``label`` to ``y2`` left empty, so the file
still says the image was processed.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from livestock.evaluation.metrics import ANSWER_COLUMNS, CONTEST_IOU, format_score_table, per_class_table
from livestock.evaluation.metrics import PREDICTION_COLUMNS as SUBMISSION_COLUMNS
from livestock.fileio import atomic_write_csv
from livestock.records import CLASS_NAMES, Detections, ImageRecord

DETECTION_COLUMNS: tuple[str, ...] = ("image_id", "width", "height", "label", "conf", "x1", "y1", "x2", "y2")

# The original scoring notebook's fixed divisor per image class (see the module docstring).
ORIGINAL_NORMALISATION: dict[str, tuple[int, int]] = {"cow": (1920, 1080), "pig": (1280, 960)}
NORMALISATIONS: tuple[str, ...] = ("image", "original")
NORMALISATION_HELP = ("coordinates divided by each image's own size (image: what the metric means) or by the real "
                      "contest answer's fixed size per class (original: 1920x1080 pig frames divided by 1280x960, "
                      "as the real scorer's answer file was written; choose it for a submission to the real scorer)")


def normalisation(name: str) -> Mapping[str, tuple[int, int]] | None:
    """The ``normalise_by`` of a normalisation name (:data:`NORMALISATIONS`): None for ``image``."""
    if name not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, not {name!r}")
    return ORIGINAL_NORMALISATION if name == "original" else None

Source = Union[str, os.PathLike, pd.DataFrame]
_MAX_LISTED = 10  # problems spelled out in one error message


class SubmissionError(ValueError):
    """A submission or answer file that the scorer would misread or that breaks the contest format."""


# ---------------------------------------------------------------- detections -> submission


def _check_detections(d: Detections, class_names: Sequence[str]) -> None:
    if d.width <= 0 or d.height <= 0:
        raise ValueError(f"{d.image_id}: image size must be positive, got {d.width}x{d.height}")
    if len(d) == 0:
        return
    if not np.isfinite(d.boxes).all() or not np.isfinite(d.scores).all():
        raise ValueError(f"{d.image_id}: non-finite box or confidence")
    if (d.scores < 0).any() or (d.scores > 1).any():
        raise ValueError(f"{d.image_id}: confidence outside [0, 1]: {d.scores[(d.scores < 0) | (d.scores > 1)][:3]}")
    if (d.boxes[:, 2] < d.boxes[:, 0]).any() or (d.boxes[:, 3] < d.boxes[:, 1]).any():
        raise ValueError(f"{d.image_id}: boxes must be pixel corners x1 <= x2, y1 <= y2")
    bad = (d.class_ids < 0) | (d.class_ids >= len(class_names))
    if bad.any():
        raise ValueError(f"{d.image_id}: unknown class id {int(d.class_ids[bad][0])} (classes: {list(class_names)})")


def image_class_from_id(image_id: str, class_names: Sequence[str] = CLASS_NAMES) -> str:
    """The class an image belongs to by its file name (``livestock_cow_bbox_000123.jpg`` -> ``cow``)."""
    tokens = set(Path(image_id).stem.lower().replace("-", "_").split("_"))
    found = [name for name in class_names if name in tokens]
    if len(found) != 1:
        raise ValueError(f"{image_id}: cannot tell the image's class from its name "
                         f"(looked for one of {list(class_names)})")
    return found[0]


def detections_to_submission(detections: Iterable[Detections], class_names: Sequence[str] = CLASS_NAMES,
                             normalise_by: Mapping[str, tuple[int, int]] | None = None) -> pd.DataFrame:
    """Contest rows for the given detections: boxes clipped to the image and normalised by its width and height,
    each image's rows by confidence, highest first (stable), images in the order given.

    ``normalise_by`` maps an image class (read from the file name) to a fixed (width, height) divisor instead:
    ``ORIGINAL_NORMALISATION`` reproduces the real contest answer's convention."""
    parts = []
    for d in detections:
        _check_detections(d, class_names)
        if len(d) == 0:
            continue
        d = d.sorted_by_score()
        x = np.clip(d.boxes[:, [0, 2]], 0.0, d.width)
        y = np.clip(d.boxes[:, [1, 3]], 0.0, d.height)
        keep = (x[:, 1] > x[:, 0]) & (y[:, 1] > y[:, 0])  # nothing left inside the image: a sure false positive
        div_w, div_h = (d.width, d.height) if normalise_by is None else \
            normalise_by[image_class_from_id(d.image_id, class_names)]
        x, y = x / div_w, y / div_h
        parts.append(pd.DataFrame({
            "ImageID": d.image_id,
            "LabelName": np.asarray(class_names, dtype=object)[d.class_ids[keep]],
            "Conf": d.scores[keep],
            "XMin": x[keep, 0], "XMax": x[keep, 1], "YMin": y[keep, 0], "YMax": y[keep, 1],
        }))
    if not parts:
        return _empty_frame(SUBMISSION_COLUMNS)
    return pd.concat(parts, ignore_index=True)[list(SUBMISSION_COLUMNS)]


def write_submission(detections: Iterable[Detections], path: str | os.PathLike,
                     class_names: Sequence[str] = CLASS_NAMES,
                     normalise_by: Mapping[str, tuple[int, int]] | None = None) -> Path:
    """Write the contest CSV atomically (full float precision) and return its path."""
    return atomic_write_csv(detections_to_submission(detections, class_names, normalise_by), path)


def submission_to_detections(frame: pd.DataFrame, sizes: Mapping[str, tuple[int, int]] | None = None,
                             class_names: Sequence[str] = CLASS_NAMES) -> list[Detections]:
    """Detections (pixel corners) from a submission frame, one per image in first-appearance order, rows in
    file order. ``sizes`` maps ImageID to (width, height); without it the boxes stay normalised (width = height = 1)."""
    missing = [c for c in SUBMISSION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"submission frame lacks column(s) {missing}")
    class_to_id = {name: i for i, name in enumerate(class_names)}
    out = []
    for image_id, rows in frame.groupby("ImageID", sort=False):
        if sizes is None:
            width, height = 1, 1
        elif image_id in sizes:
            width, height = sizes[image_id]
        else:
            raise ValueError(f"no image size for {image_id!r}")
        unknown = set(rows["LabelName"]) - set(class_to_id)
        if unknown:
            raise ValueError(f"{image_id}: unknown class(es) {sorted(unknown)} (classes: {list(class_names)})")
        boxes = np.stack([rows["XMin"] * width, rows["YMin"] * height, rows["XMax"] * width, rows["YMax"] * height],
                         axis=1).astype(np.float64)
        out.append(Detections(str(image_id), int(width), int(height), boxes, rows["Conf"].to_numpy(np.float64),
                              rows["LabelName"].map(class_to_id).to_numpy(np.int64)))
    return out


def records_to_answer(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """Ground truth of labelled images in the answer format (normalised, clipped; images without boxes add no row)."""
    parts = []
    for r in records:
        if r.n_boxes == 0:
            continue
        x = np.clip(r.boxes[:, [0, 2]], 0.0, r.width) / r.width
        y = np.clip(r.boxes[:, [1, 3]], 0.0, r.height) / r.height
        parts.append(pd.DataFrame({"ImageID": r.image_id, "LabelName": r.label,
                                   "XMin": x[:, 0], "XMax": x[:, 1], "YMin": y[:, 0], "YMax": y[:, 1]}))
    if not parts:
        return _empty_frame(ANSWER_COLUMNS)
    return pd.concat(parts, ignore_index=True)[list(ANSWER_COLUMNS)]


def _empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("ImageID", "LabelName") else np.float64) for c in columns})


# ---------------------------------------------------------------- detections CSV (pixel coordinates)


def save_detections(detections: Iterable[Detections], path: str | os.PathLike,
                    class_names: Sequence[str] = CLASS_NAMES) -> Path:
    """Write detections in pixel coordinates (``DETECTION_COLUMNS``) atomically; images without detections
    keep one row with empty label, conf and box."""
    frames = []
    for d in detections:
        if len(d) == 0:
            frames.append(pd.DataFrame({"image_id": [d.image_id], "width": [int(d.width)], "height": [int(d.height)]}))
            continue
        bad = (d.class_ids < 0) | (d.class_ids >= len(class_names))
        if bad.any():
            raise ValueError(f"{d.image_id}: unknown class id {int(d.class_ids[bad][0])} "
                             f"(classes: {list(class_names)})")
        frames.append(pd.DataFrame({
            "image_id": d.image_id, "width": int(d.width), "height": int(d.height),
            "label": np.asarray(class_names, dtype=object)[d.class_ids], "conf": d.scores,
            "x1": d.boxes[:, 0], "y1": d.boxes[:, 1], "x2": d.boxes[:, 2], "y2": d.boxes[:, 3],
        }))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return atomic_write_csv(frame.reindex(columns=list(DETECTION_COLUMNS)), path)


def load_detections(path: str | os.PathLike, class_names: Sequence[str] = CLASS_NAMES) -> list[Detections]:
    """Read a detections CSV written by :func:`save_detections` (or by hand in the same format): one
    :class:`Detections` per image in first-appearance order, rows in file order."""
    path = Path(path)
    table, lines = _read_csv_strings(path, "detections")
    where = str(path)
    _require_columns(table, DETECTION_COLUMNS, where)
    problems: list[tuple[int, str]] = []
    empty_row = (table["label"].str.strip() == "").to_numpy()  # an image without detections
    numbers = {}
    for column in ("width", "height", "conf", "x1", "y1", "x2", "y2"):
        text = table[column].str.strip()
        values = _numbers(text)
        blank = (text == "").to_numpy()
        needs_value = np.ones(len(table), bool) if column in ("width", "height") else ~empty_row
        for i in np.flatnonzero(needs_value & blank):
            problems.append((i, f"{column} is empty"))
        for i in np.flatnonzero(needs_value & ~blank & ~np.isfinite(values)):
            problems.append((i, f"{column} is not a finite number: {table[column].iat[i]!r}"))
        for i in np.flatnonzero(~needs_value & ~blank):
            problems.append((i, f"{column} given on a row without a label (rows without a label stand for an "
                                f"image without detections)"))
        numbers[column] = values
    for column in ("width", "height"):
        v = numbers[column]
        for i in np.flatnonzero(np.isfinite(v) & ((v <= 0) | (v != np.round(v)))):
            problems.append((i, f"{column} must be a positive integer, got {table[column].iat[i]!r}"))
    labels = table["label"].str.strip()
    for i in np.flatnonzero(~empty_row & ~labels.isin(list(class_names)).to_numpy()):
        problems.append((i, f"unknown label {labels.iat[i]!r} (classes: {', '.join(class_names)})"))
    conf = numbers["conf"]
    for i in np.flatnonzero(~empty_row & np.isfinite(conf) & ((conf < 0) | (conf > 1))):
        problems.append((i, f"conf = {table['conf'].iat[i].strip()} is outside [0, 1]"))
    for i in np.flatnonzero(~empty_row & ((numbers["x2"] < numbers["x1"]) | (numbers["y2"] < numbers["y1"]))):
        problems.append((i, "box corners out of order (need x1 <= x2 and y1 <= y2)"))
    for i in np.flatnonzero((table["image_id"].str.strip() == "").to_numpy()):
        problems.append((i, "image_id is empty"))
    _raise_problems(problems, where, lines, "detections file")

    size = pd.DataFrame({"image_id": table["image_id"], "w": numbers["width"], "h": numbers["height"]})
    first_size = size.groupby("image_id", sort=False)[["w", "h"]].transform("first").to_numpy()
    differs = np.flatnonzero((size[["w", "h"]].to_numpy() != first_size).any(axis=1))
    _raise_problems([(i, f"image {table['image_id'].iat[i]!r} appears with another width/height than on its "
                         f"first row") for i in differs], where, lines, "detections file")

    class_to_id = {name: i for i, name in enumerate(class_names)}
    out = []
    for image_id, idx in table.groupby("image_id", sort=False).indices.items():
        first = idx[0]
        boxed = idx[~empty_row[idx]]
        boxes = np.stack([numbers[c][boxed] for c in ("x1", "y1", "x2", "y2")], axis=1)
        class_ids = np.asarray([class_to_id[v] for v in labels.to_numpy()[boxed]], dtype=np.int64)
        out.append(Detections(str(image_id), int(numbers["width"][first]), int(numbers["height"][first]), boxes,
                              numbers["conf"][boxed], class_ids))
    return out


# ---------------------------------------------------------------- reading and validating


def _numbers(text: pd.Series) -> np.ndarray:
    """Each string's number, NaN where it is none. pandas decides what reads as a number; the value is the correctly
    rounded one, since pandas before 3.0 parses decimals to within one unit in the last place, and the detections
    written by :func:`save_detections` must read back exactly as they were."""
    values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    parsed = ~np.isnan(values)
    try:
        values[parsed] = text.to_numpy(dtype=str)[parsed].astype(np.float64)
    except ValueError:  # a string pandas reads as a number and numpy does not: pandas' value stands
        pass
    return values


def _read_csv_strings(path: Path, what: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Every field as a string, and the file line number of every data row (blank lines skipped, as pandas does)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SubmissionError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason}); "
                              "save it as UTF-8 CSV") from e
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise SubmissionError(f"{path}: empty file, expected a header line")
    header = [h.strip() for h in header]
    rows = list(reader)
    n_physical = text.count("\n") + (0 if text.endswith("\n") else 1)
    if n_physical == len(rows) + 1 and all(len(row) == len(header) for row in rows):
        lines = list(range(2, len(rows) + 2))  # one line per row: no blank lines, no line breaks inside fields
    else:  # read again, row by row, to know each row's line
        reader = csv.reader(io.StringIO(text, newline=""))
        next(reader)
        rows, lines = [], []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line, skipped as pandas does
            if len(row) != len(header):
                raise SubmissionError(
                    f"{path}: line {reader.line_num}: {len(row)} fields where the header has {len(header)}")
            rows.append(row)
            lines.append(reader.line_num)
    if len(set(header)) != len(header):
        raise SubmissionError(f"{path}: repeated column name(s) in the header {header}")
    table = pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(columns=header, dtype=object)
    return table, np.asarray(lines, dtype=np.int64)


def _require_columns(table: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SubmissionError(f"{where}: missing column(s) {missing}; found {list(table.columns)}, "
                              f"expected {list(columns)}")


def _row_name(i: int, lines: np.ndarray | None) -> str:
    return f"row {i + 1} (line {int(lines[i])})" if lines is not None else f"row {i + 1}"


def _raise_problems(problems: list[tuple[int, str]], where: str, lines: np.ndarray | None, what: str) -> None:
    if not problems:
        return
    problems = sorted(problems, key=lambda p: p[0])
    listed = [f"  {_row_name(i, lines)}: {message}" for i, message in problems[:_MAX_LISTED]]
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise SubmissionError(f"{where}: invalid {what}, {len(problems)} problem(s):\n" + "\n".join(listed) + more)


def _load(source: Source, what: str) -> tuple[pd.DataFrame, str, np.ndarray | None]:
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True), f"<{what} DataFrame>", None
    path = Path(source)
    table, lines = _read_csv_strings(path, what)
    return table, str(path), lines


# The strings pandas.read_csv (the scorer's reader) turns into NaN by default.
_NA_TOKENS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def _as_text(values: pd.Series) -> pd.Series:
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values.astype(object).str.strip()
    return values.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())


def _validate_rows(table: pd.DataFrame, columns: Sequence[str], where: str, lines: np.ndarray | None,
                   classes: Sequence[str], what: str, check_coordinate_range: bool = True) -> pd.DataFrame:
    """Check the contest columns row by row; return them typed (str ids and labels, float64 numbers).
    Without ``check_coordinate_range`` coordinates need only be finite (the confidence stays within [0, 1])."""
    _require_columns(table, columns, where)
    problems: list[tuple[int, str]] = []
    typed: dict[str, object] = {}
    for column in ("ImageID", "LabelName"):
        text = _as_text(table[column])
        for i in np.flatnonzero(text.isin(_NA_TOKENS).to_numpy()):
            problems.append((i, f"{column} is empty or NaN ({table[column].iat[i]!r})"))
        typed[column] = text.astype(object)
    label = typed["LabelName"]
    for i in np.flatnonzero((~label.isin(list(classes)) & ~label.isin(_NA_TOKENS)).to_numpy()):
        problems.append((i, f"unknown class {label.iat[i]!r} (expected one of: {', '.join(classes)})"))
    for column in [c for c in columns if c not in ("ImageID", "LabelName")]:
        raw = table[column]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            values = raw.to_numpy(np.float64)  # a typed DataFrame: keep its values exactly
            missing = np.isnan(values)
            text = raw.astype(str)
        else:
            text = _as_text(raw)
            values = _numbers(text)
            missing = np.isnan(values) & text.isin(_NA_TOKENS).to_numpy()
        for i in np.flatnonzero(missing):
            problems.append((i, f"{column} is empty or NaN ({table[column].iat[i]!r})"))
        for i in np.flatnonzero(np.isnan(values) & ~missing):
            problems.append((i, f"{column} is not a number: {table[column].iat[i]!r}"))
        if column == "Conf" or check_coordinate_range:
            kind = "a confidence" if column == "Conf" else "a normalised coordinate"
            for i in np.flatnonzero((values < 0.0) | (values > 1.0)):
                problems.append((i, f"{column} = {text.iat[i]} is outside [0, 1] ({kind})"))
        else:
            for i in np.flatnonzero(np.isinf(values)):
                problems.append((i, f"{column} is infinite"))
        typed[column] = values
    for low, high in (("XMin", "XMax"), ("YMin", "YMax")):
        for i in np.flatnonzero(typed[low] > typed[high]):
            problems.append((i, f"{low} {typed[low][i]:g} > {high} {typed[high][i]:g}"))
    _raise_problems(problems, where, lines, what)
    return pd.DataFrame({c: typed[c] for c in columns})


def _coordinates_outside_unit(frame: pd.DataFrame) -> int:
    coords = frame[["XMin", "XMax", "YMin", "YMax"]].to_numpy()
    return int(((coords < 0.0) | (coords > 1.0)).any(axis=1).sum())


def order_warnings(frame: pd.DataFrame) -> list[str]:
    """Images whose rows of one class are not in non-increasing confidence order (the scorer matches in file order)."""
    if len(frame) == 0:
        return []
    codes = frame.groupby(["ImageID", "LabelName"], sort=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    conf = frame["Conf"].to_numpy(np.float64)[order]
    same = codes[order][1:] == codes[order][:-1]
    rising = np.flatnonzero(same & (conf[1:] > conf[:-1]))
    if len(rising) == 0:
        return []
    bad_images = pd.unique(frame["ImageID"].to_numpy()[order[rising + 1]])
    example_row = int(order[rising[0] + 1]) + 1
    return [f"{len(bad_images)} image(s) list boxes out of confidence order (first: {bad_images[0]!r}, data row "
            f"{example_row}); the scorer matches each image's boxes in file order, so this can lower the score: "
            f"list each image's rows by confidence, highest first (write_submission does)"]


def read_answer(source: Source, classes: Sequence[str] = CLASS_NAMES) -> pd.DataFrame:
    """Read and validate a ground-truth answer file (``ANSWER_COLUMNS``), returned typed in file order.

    Coordinates outside [0, 1] are a warning, not an error: the real contest answer holds them (its pig frames
    of 1920x1080 were divided by 1280x960) and the scorer takes them as they are."""
    table, where, lines = _load(source, "answer")
    frame = _validate_rows(table, ANSWER_COLUMNS, where, lines, classes, "answer file", check_coordinate_range=False)
    warnings = []
    extra = [c for c in table.columns if c not in ANSWER_COLUMNS]
    if extra:
        warnings.append(f"{where}: extra column(s) {extra} ignored")
    outside = _coordinates_outside_unit(frame)
    if outside:
        warnings.append(f"{where}: {outside} answer box(es) have coordinates outside [0, 1] (normalised by "
                        f"another size than the image's; a submission must use the same convention to match)")
    frame.attrs["warnings"] = warnings
    frame.attrs["source"] = where
    return frame


def validate_submission(source: Source, answer: Source | None = None, *, classes: Sequence[str] = CLASS_NAMES,
                        unknown_images: str = "error", check_coordinate_range: bool | None = None) -> pd.DataFrame:
    """Validate a submission (path or DataFrame) and return it typed, in file order.

    Raises :class:`SubmissionError` naming the file and the 1-based data row (and file line) of each problem:
    missing columns, empty or NaN values, non-numbers, confidences outside [0, 1], coordinates outside [0, 1],
    XMin > XMax or YMin > YMax, unknown classes, and, given an ``answer``, ImageIDs absent from it.

    ``unknown_images="warn"`` or ``"ignore"`` relaxes the ImageID check: a test image without any box is absent
    from an answer file, and the scorer ignores rows of images it does not know. The coordinate range is checked
    unless ``check_coordinate_range`` is False; by default (None) it is skipped only when the given answer itself
    holds coordinates outside [0, 1] (the real contest answer's convention, see the module docstring).
    Warnings (rows out of confidence order, extra columns, coordinates outside [0, 1] when not checked, answer
    images without any prediction) are returned in ``frame.attrs["warnings"]``.
    """
    if unknown_images not in ("error", "warn", "ignore"):
        raise ValueError(f"unknown_images must be 'error', 'warn' or 'ignore', got {unknown_images!r}")
    answer_frame = None
    if answer is not None:
        answer_frame = answer if isinstance(answer, pd.DataFrame) and "source" in answer.attrs else read_answer(answer)
    if check_coordinate_range is None:
        check_coordinate_range = answer_frame is None or _coordinates_outside_unit(answer_frame) == 0
    table, where, lines = _load(source, "submission")
    frame = _validate_rows(table, SUBMISSION_COLUMNS, where, lines, classes, "submission", check_coordinate_range)
    warnings = []
    extra = [c for c in table.columns if c not in SUBMISSION_COLUMNS]
    if extra:
        warnings.append(f"{where}: extra column(s) {extra} ignored by the scorer")
    if not check_coordinate_range and _coordinates_outside_unit(frame):
        warnings.append(f"{where}: {_coordinates_outside_unit(frame)} row(s) have coordinates outside [0, 1]")
    if answer_frame is not None:
        known = set(answer_frame["ImageID"].astype(str))
        unknown = ~frame["ImageID"].isin(known).to_numpy()
        if unknown.any() and unknown_images == "error":
            _raise_problems([(int(i), f"ImageID {frame['ImageID'].iat[i]!r} is not in the answer file "
                                      f"{answer_frame.attrs.get('source', '')}") for i in np.flatnonzero(unknown)],
                            where, lines, "submission")
        if unknown.any() and unknown_images == "warn":
            names = pd.unique(frame["ImageID"].to_numpy()[unknown])
            warnings.append(f"{where}: {len(names)} ImageID(s) are not in the answer file (first: {names[0]!r}, "
                            f"{int(unknown.sum())} rows); the scorer ignores such rows")
        missing = known - set(frame["ImageID"])
        if missing:
            warnings.append(f"{where}: {len(missing)} answer image(s) have no prediction "
                            f"(first: {sorted(missing)[0]!r})")
    warnings += [f"{where}: {w}" for w in order_warnings(frame)]
    frame.attrs["warnings"] = warnings
    frame.attrs["source"] = where
    return frame


def require_boxes(frame: pd.DataFrame, where: str, found: str) -> pd.DataFrame:
    """The rule ``submit``, ``check-submission`` and ``score`` share: a contest file (or the detections an answer is
    written from) without a single box is refused with ``where: found``. The scorer would give it mAP 0 without a
    word, and such a file is surely a mistake: a wrong file, an empty detector output, a threshold above every
    confidence."""
    if len(frame) == 0:
        raise SubmissionError(f"{where}: {found}; a contest file without a single box leaves nothing to score")
    return frame


def submission_summary(frame: pd.DataFrame) -> str:
    """One line about a submission: rows, images and rows per class."""
    per_class = frame.groupby("LabelName").size().to_dict() if len(frame) else {}
    classes = ", ".join(f"{k} {v}" for k, v in sorted(per_class.items())) or "none"
    return f"{len(frame)} rows, {frame['ImageID'].nunique()} images (rows per class: {classes})"


# ---------------------------------------------------------------- CLI: livestock submit / check-submission


def cli_submit_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock submit`` to ``parser``."""
    parser.add_argument("--detections", required=True,
                        help="detections CSV in pixel coordinates: " + ",".join(DETECTION_COLUMNS))
    parser.add_argument("--out", default="answer.csv", help="submission CSV to write (default: answer.csv)")
    parser.add_argument("--normalise", choices=NORMALISATIONS, default="image", help=NORMALISATION_HELP)


def cli_submit(args: argparse.Namespace) -> int:
    """Run ``livestock submit`` with parsed ``args``; returns the exit code."""
    detections = load_detections(args.detections)
    original = args.normalise == "original"
    frame = detections_to_submission(detections, normalise_by=normalisation(args.normalise))
    require_boxes(frame, args.detections, f"no box inside any of its {len(detections)} image(s)" if detections
                  else "no detection rows")
    path = atomic_write_csv(frame, args.out)
    # the file as written must pass the same checks as any submission
    frame = validate_submission(path, check_coordinate_range=not original)
    print(f"wrote {path}: {submission_summary(frame)} from {len(detections)} images")
    return 0


def cli_check_submission_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock check-submission`` to ``parser``."""
    parser.add_argument("submission", help="submission CSV (ImageID,LabelName,Conf,XMin,XMax,YMin,YMax)")
    parser.add_argument("--answer", help="answer CSV: also check that every ImageID is in it")
    parser.add_argument("--allow-unknown-images", action="store_true",
                        help="warn instead of failing on images absent from the answer (images without any box)")


def cli_check_submission(args: argparse.Namespace) -> int:
    """Run ``livestock check-submission`` with parsed ``args``; returns the exit code."""
    frame = validate_submission(args.submission, args.answer,
                                unknown_images="warn" if args.allow_unknown_images else "error")
    require_boxes(frame, args.submission, "no submission rows")
    for warning in frame.attrs["warnings"]:
        print(f"warning: {warning}")
    print(f"{args.submission}: valid submission, {submission_summary(frame)}")
    return 0


# ---------------------------------------------------------------- CLI: livestock score


def cli_score_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock score`` to ``parser``."""
    parser.add_argument("--answer", required=True,
                        help="ground-truth answer CSV (ImageID,LabelName,XMin,XMax,YMin,YMax)")
    parser.add_argument("--pred", required=True, help="submission CSV (ImageID,LabelName,Conf,XMin,XMax,YMin,YMax)")
    parser.add_argument("--iou", type=float, default=CONTEST_IOU,
                        help="IoU threshold of the headline mAP (default 0.75)")
    parser.add_argument("--allow-unknown-images", action="store_true",
                        help="warn instead of failing on submission images absent from the answer "
                             "(test images without any box are absent from an answer file); the scorer ignores them")


def cli_score(args: argparse.Namespace) -> int:
    """Run ``livestock score`` with parsed ``args``; returns the exit code."""
    if not 0.0 < args.iou <= 1.0:
        raise ValueError(f"--iou must be in (0, 1], got {args.iou}")
    answer = require_boxes(read_answer(args.answer), args.answer, "no answer rows")
    submission = validate_submission(args.pred, answer=answer,
                                     unknown_images="warn" if args.allow_unknown_images else "error")
    require_boxes(submission, args.pred, "no submission rows")
    for warning in answer.attrs.get("warnings", []) + submission.attrs.get("warnings", []):
        print(f"warning: {warning}")
    # Score the files as the contest scorer reads them (pd.read_csv of each path).
    table = per_class_table(str(args.answer), str(args.pred), iou_threshold=args.iou)
    print(format_score_table(table))
    return 0
