"""Which inputs every derived file was made from, and ground truth used only for the images it describes.

The synthetic set and the real AI Hub set share their file names (``livestock_cow_bbox_000123.jpg``), so an image
ID cannot tell which set an image, a label or a ground-truth row belongs to. Instead, every file or folder made
from the data records a **fingerprint** of the inputs it was made from, and a stage uses a derived file, or ground
truth, only while that fingerprint equals the fingerprint of the inputs as they are now.

Fingerprint (:func:`fingerprint`): sha256 over the sorted ``(relative name, size in bytes, mtime in ns)`` of every
input file, folders walked recursively. No file is read, so it costs a few ``stat`` calls for the real set's zips
(several GB) and a fraction of a second for 16,000 extracted files. Replacing, rewriting or touching an input
changes it; so does copying one without keeping its time (``cp`` without ``-p``): the safe side, at worst one
rebuild too many. :func:`input_fingerprint` fingerprints exactly the files ``livestock prepare`` reads from a data
folder (:func:`livestock.data.aihub.source_files`): its top-level zips, or else the JPEGs and JSONs of its tree.

Records, small JSON files written atomically:

- a derived folder's ``source.json`` (a prepared set, a split, a silver set, an evolution folder, an analysis);
- a derived file's ``<name>.source.json`` beside it (ground truth: ``synth_truth.csv``, ``answer.csv``).

``{"inputs": fingerprint or null, "dataset": "synthetic" | "user" | null, "made_by": "livestock prepare",
"data": the data folder the inputs are in, "from": what it was made from directly, ...}``, paths relative to the
record's folder. ``inputs`` is the fingerprint of the raw inputs all the way down the chain (a split records the
fingerprint its prepared set recorded), so one comparison with the data folder as it is now says whether any
derived file is current. ``null`` means unknown (made from something without a record): nothing to compare.
A data folder that holds no input any more (the zips deleted once prepared) has nothing newer to compare with, so
what was made from it stays usable.

A folder holding ``source.json`` is an output of this package: the AI Hub reader and the fingerprint never walk
into it, so a prepared set inside an extracted data folder is not read back as data.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from livestock.fileio import atomic_write_text
from livestock.paths import SOURCE_RECORD, SOURCE_SUFFIX

DATASETS: tuple[str, ...] = ("synthetic", "user")
# The archive comment of every zip `livestock synth` writes: how a zip of ours is told from a user's.
SYNTH_ZIP_COMMENT = b"livestock synth: synthetic AI Hub-format data"
# What made a derived file -> (pipeline stage, command) that makes it again.
_REMAKE: dict[str, tuple[str, str]] = {
    "livestock prepare": ("prepare", "livestock prepare"),
    "livestock split": ("split_multilabel", "livestock split"),
    "livestock search": ("evolve", "livestock evolve` / `livestock search"),
    "livestock silver": ("silver", "livestock silver"),
    "livestock analyze": ("analysis", "livestock analyze"),
}


class StaleError(ValueError):
    """A derived file was made from other inputs than the current ones."""


# ---------------------------------------------------------------- fingerprints


def fingerprint(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """sha256 (hex) over the sorted ``(relative name, size, mtime_ns)`` of every file in ``paths``, folders walked
    recursively; names are relative to ``root`` (default: each path's own parent). Reads no file content."""
    entries = []
    for p in paths:
        p = Path(p)
        base = os.path.abspath(root if root is not None else p.parent)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: input not found") from None
        files = [(f, f.stat()) for f in p.rglob("*") if f.is_file()] if p.is_dir() else [(p, st)]
        for f, fst in files:
            full = os.path.abspath(f)
            # one stat per file; the name relative to the base without os.path.relpath's cost where it is a prefix
            name = full[len(base) + 1:] if full.startswith(base + os.sep) else os.path.relpath(full, base)
            entries.append((name.replace(os.sep, "/"), fst.st_size, fst.st_mtime_ns))
    h = hashlib.sha256()
    for name, size, mtime_ns in sorted(entries):
        h.update(f"{name}\0{size}\0{mtime_ns}\n".encode("utf-8"))
    return h.hexdigest()


def input_fingerprint(data_dir: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> str:
    """The fingerprint of what ``livestock prepare`` reads from ``data_dir`` (zips, or the extracted tree)."""
    from livestock.data.aihub import source_files

    data_dir = Path(data_dir)
    return fingerprint(source_files(data_dir, exclude), root=data_dir if data_dir.is_dir() else data_dir.parent)


def inputs_now(data_dir: str | os.PathLike) -> str | None:
    """:func:`input_fingerprint` of ``data_dir``, or None when it is gone or holds no input any more (zips deleted to
    save space once prepared): then nothing newer exists to compare a derived file with, and it stays usable."""
    from livestock.data.aihub import source_files

    data_dir = Path(data_dir)
    if not data_dir.exists():
        return None
    files = source_files(data_dir)
    return fingerprint(files, root=data_dir if data_dir.is_dir() else data_dir.parent) if files else None


def is_synthetic_zip(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip written by ``livestock synth`` (it carries the generator's archive comment)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.comment == SYNTH_ZIP_COMMENT
    except (zipfile.BadZipFile, OSError):
        return False


def dataset_kind(data_dir: str | os.PathLike) -> str:
    """``synthetic`` when every input ``livestock prepare`` reads from ``data_dir`` is a zip of ``livestock synth``,
    else ``user``."""
    from livestock.data.aihub import source_files

    files = source_files(data_dir)
    return "synthetic" if files and all(is_synthetic_zip(f) for f in files) else "user"


# ---------------------------------------------------------------- records


def record_path(target: str | os.PathLike) -> Path:
    """Where ``target``'s own record lies: ``<folder>/source.json`` for a folder, ``<file>.source.json`` beside a
    file (a path that does not exist yet counts as a folder when it has no suffix)."""
    target = Path(target)
    if target.is_dir() or (not target.exists() and not target.suffix):
        return target / SOURCE_RECORD
    return target.with_name(target.name + SOURCE_SUFFIX)


def _load(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise ValueError(f"{path}: not a valid provenance record ({e}); delete it and re-run the stage") from e
    if not isinstance(record, dict) or "made_by" not in record:
        raise ValueError(f"{path}: not a provenance record (no 'made_by'); delete it and re-run the stage")
    return record


def read_record(target: str | os.PathLike) -> dict | None:
    """``target``'s own record (see :func:`record_path`), or None."""
    return _load(record_path(target))


def find_record(path: str | os.PathLike) -> tuple[Path, dict] | None:
    """``(record file, record)`` that describes ``path``: its own record, or for a file inside a derived folder
    (``data/splits/mini/data.yaml``, ``data/prepared/records.jsonl``) that folder's. None when there is none."""
    path = Path(path)
    candidates = [record_path(path)]
    if path.is_file():
        candidates.append(path.parent / SOURCE_RECORD)
    for candidate in candidates:
        record = _load(candidate)
        if record is not None:
            return candidate, record
    return None


def _relative(path: str | os.PathLike, start: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return str(Path(path).resolve())


def _resolve(record_file: Path, value: str | None) -> Path | None:
    return None if value is None else (record_file.parent / value).resolve()


def write_record(target: str | os.PathLike, *, inputs: str | None, dataset: str | None, made_by: str,
                 data: str | os.PathLike | None, made_from: str | os.PathLike | None = None, **extra: object) -> Path:
    """Write ``target``'s record atomically (see the module docstring); paths are stored relative to it."""
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS} or None, not {dataset!r}")
    path = record_path(target)
    record = {"inputs": inputs, "dataset": dataset, "made_by": made_by,
              "data": None if data is None else _relative(data, path.parent),
              "from": None if made_from is None else _relative(made_from, path.parent), **extra}
    return atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")


def forget(target: str | os.PathLike) -> None:
    """Remove ``target``'s own record: its content is about to change, and until it is whole again it has none."""
    record_path(target).unlink(missing_ok=True)


def record_derived(target: str | os.PathLike, source: str | os.PathLike | None, made_by: str,
                   **extra: object) -> Path:
    """Record that ``target`` was made by ``made_by`` from ``source`` (a derived file or folder): it inherits the
    source's inputs, dataset and data folder; unknown (null) when the source has no record."""
    found = find_record(source) if source is not None else None
    if found is None:
        return write_record(target, inputs=None, dataset=None, made_by=made_by, data=None, made_from=source, **extra)
    record_file, record = found
    return write_record(target, inputs=record.get("inputs"), dataset=record.get("dataset"), made_by=made_by,
                        data=_resolve(record_file, record.get("data")), made_from=source, **extra)


# ---------------------------------------------------------------- checks


def _remake_hint(made_by: str) -> str:
    stage, command = _REMAKE.get(made_by, (None, made_by))
    if stage is None:
        return f"make it again with `{command}`"
    hint = f"re-run the {stage} stage (`livestock pipeline --from {stage}`, or `{command}`)"
    if made_by == "livestock search":  # trials add up in an evolution folder: it is never continued on other data
        hint += " in a new evolution folder"
    return hint


def _earliest_stale(record_file: Path, record: dict, current: str) -> tuple[Path, dict]:
    """The first derived file up the ``from`` chain that was also made from other inputs: the stage to re-run."""
    earliest = (record_file, record)
    seen = {record_file.resolve()}
    while (up := _resolve(earliest[0], earliest[1].get("from"))) is not None and up.exists():
        found = find_record(up)
        if found is None or found[0].resolve() in seen or found[1].get("inputs") in (None, current):
            break
        seen.add(found[0].resolve())
        earliest = found
    return earliest


def current_record(path: str | os.PathLike) -> dict | None:
    """The record describing ``path`` when it was made from the inputs as they are now; None when it has none or
    its inputs are unknown. A :class:`StaleError` (one line: the file, what changed, the stage to re-run) when it
    was made from other inputs."""
    found = find_record(path)
    if found is None or found[1].get("inputs") is None:
        return None
    record_file, record = found
    data = _resolve(record_file, record.get("data"))
    current = inputs_now(data) if data is not None else None
    if current is not None and record["inputs"] != current:
        earliest_file, earliest = _earliest_stale(record_file, record, current)
        what = f"{path}" if earliest_file == record_file else f"{path} (and {earliest_file.parent}, made before it)"
        raise StaleError(f"{what}: made by `{record['made_by']}` from other data than {data} holds now; "
                         f"{_remake_hint(earliest['made_by'])}")
    return record


def require_current(*paths: str | os.PathLike | None) -> dict | None:
    """Check that every derived file among ``paths`` is current (:func:`current_record`) and that they were all made
    from the same inputs; paths that do not exist or have no record are passed over (a user's own data.yaml, a
    shipped hyp name). Returns the record they share, or None when none has one."""
    shared: tuple[str, dict] | None = None
    for p in paths:
        if p is None or isinstance(p, dict) or not Path(p).exists():
            continue
        record = current_record(p)
        if record is None:
            continue
        if shared is not None and record["inputs"] != shared[1]["inputs"]:
            raise StaleError(f"{p} and {shared[0]} were made from different data; "
                             f"{_remake_hint(record['made_by'])}")
        shared = shared or (str(p), record)
    return shared[1] if shared else None


def continue_folder(folder: str | os.PathLike, source: str | os.PathLike, made_by: str, marker: str) -> dict | None:
    """Before work that continues in ``folder`` (an evolution or search folder: trials add up across runs), check
    that ``source`` (its data.yaml) is current and that the work already there (``marker``, e.g. ``trials.csv``,
    exists) was done on the same data, then record it. A :class:`StaleError` when the folder holds work on other
    data, or on data of unknown origin while ``source``'s is known: such work must not mix with the current."""
    record = require_current(source)
    known = record["inputs"] if record else None
    old = read_record(folder)
    if (Path(folder) / marker).exists() and (old.get("inputs") if old else None) != known:
        raise StaleError(f"{folder}: holds work on other data than {source} now describes (or of unknown origin); "
                         f"move it away, or choose another name for it, to work on the current data")
    record_derived(folder, source, made_by)
    return record


def matches_inputs(derived: str | os.PathLike, data_dir: str | os.PathLike) -> bool:
    """Whether ``derived`` records that it was made from exactly the inputs now in ``data_dir`` (or, when that holds
    none any more, from some: see :func:`inputs_now`)."""
    record = read_record(derived)
    if record is None or record.get("inputs") is None:
        return False
    now = inputs_now(data_dir)
    return now is None or record["inputs"] == now


# ---------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class GroundTruth:
    """The answer to "may this truth file score these images?": ``path`` when it may, else None; ``reason`` says
    why in one line; ``dataset`` is the truth's data set (``synthetic`` or ``user``)."""

    path: Path | None
    reason: str
    dataset: str | None = None

    def __bool__(self) -> bool:
        return self.path is not None

    def set_name(self, what: str = "test set") -> str:
        """``synthetic test set`` or ``your test set``: how a score against this truth names its images."""
        return f"{'synthetic' if self.dataset == 'synthetic' else 'your'} {what}"


def ground_truth_for(truth_file: str | os.PathLike, inputs: str | os.PathLike) -> GroundTruth:
    """``truth_file`` only when its record says it was written for exactly the images of ``inputs``: a data folder
    (fingerprinted now), or a derived folder or file made from one (a prepared set: it must itself be current).
    Otherwise a :class:`GroundTruth` without a path, and the reason."""
    truth_file, inputs = Path(truth_file), Path(inputs)
    if not truth_file.is_file():
        return GroundTruth(None, f"{truth_file} not found")
    record = read_record(truth_file)
    if record is None or record.get("inputs") is None:
        return GroundTruth(None, f"{truth_file} has no record of the images it was written for "
                                 f"({record_path(truth_file).name} missing; `livestock truth` records it)")
    if not inputs.exists():
        return GroundTruth(None, f"{inputs} not found")
    if find_record(inputs) is not None:
        try:
            derived = current_record(inputs)
        except StaleError as e:
            return GroundTruth(None, str(e))
        expected = derived["inputs"] if derived else None
    else:
        expected = inputs_now(inputs)
    if expected != record["inputs"]:
        return GroundTruth(None, f"{truth_file} was written for other images than those of {inputs}")
    dataset = record.get("dataset")
    kind = "synthetic set" if dataset == "synthetic" else "your set"
    return GroundTruth(truth_file, f"{truth_file}: ground truth of the {kind}, written for exactly the images of "
                                   f"{inputs}", dataset)


def record_ground_truth(truth_file: str | os.PathLike, data_dir: str | os.PathLike, dataset: str = "user",
                        made_by: str = "user") -> Path:
    """Record that ``truth_file`` (say, your own answer file) holds the ground truth of exactly the images now in
    ``data_dir``, so the notebooks score against it; any change to those inputs voids the record."""
    from livestock.evaluation.submission import read_answer

    truth_file = Path(truth_file)
    if not truth_file.is_file():
        raise FileNotFoundError(f"{truth_file}: truth file not found")
    if read_answer(truth_file).empty:  # also a ValueError naming the file when it is no contest answer file
        raise ValueError(f"{truth_file}: no boxes: an answer file of the contest format with at least one row")
    inputs = inputs_now(data_dir)
    if inputs is None:
        raise FileNotFoundError(f"{data_dir}: no zips or extracted files to record ground truth for")
    return write_record(truth_file, inputs=inputs, dataset=dataset, made_by=made_by, data=data_dir)


# ---------------------------------------------------------------- CLI: livestock truth


def cli_truth_args(parser: argparse.ArgumentParser) -> None:
    """The ``livestock truth`` options."""
    parser.add_argument("truth_file", help="your ground truth, e.g. data_test/answer.csv (contest answer format)")
    parser.add_argument("--for", dest="data_dir", required=True,
                        help="the folder whose zips (or extracted files) it describes, e.g. data_test")


def cli_truth(args: argparse.Namespace) -> int:
    """``livestock truth``: record that a truth file describes exactly the images now in a data folder."""
    path = record_ground_truth(args.truth_file, args.data_dir)
    print(f"{path}: {args.truth_file} scores the images now in {args.data_dir} (until any of its inputs changes)")
    return 0
