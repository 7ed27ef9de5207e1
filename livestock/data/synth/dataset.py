"""Writing a synthetic AI Hub-format dataset: the six zips, the truth side file and the test answer, and its CLI."""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from livestock.data.synth.calibration import CLASS_CODE, TEST_PIG_SIZES, TRAIN_PIG_SIZES, split_by_class_ratio
from livestock.data.synth.render import SynthImage, render_image
from livestock.data.synth.style import STYLES, get_style
from livestock.fileio import atomic_output, atomic_write_bytes, atomic_write_csv
from livestock.paths import DATA_DIR, SYNTH_TRUTH, TEST_ANSWER, TEST_DIR, TEST_ZIPS, TRAIN_ZIPS
from livestock.provenance import SYNTH_ZIP_COMMENT, fingerprint, is_synthetic_zip, read_record, write_record

# The label JSON's own categories are behaviours, not species. Their ids are chosen so that reading
# category_id as a YOLO class id (pig = 0, cow = 1) gives the wrong species for most boxes.
BEHAVIOUR_CATEGORIES = (
    {"id": 0, "name": "standing", "supercategory": "behaviour"},
    {"id": 1, "name": "lying", "supercategory": "behaviour"},
    {"id": 2, "name": "eating", "supercategory": "behaviour"},
    {"id": 3, "name": "sitting", "supercategory": "behaviour"},
)
_CATEGORY_ID = {c["name"]: c["id"] for c in BEHAVIOUR_CATEGORIES}
_ZIP_DATE = (2021, 7, 1, 0, 0, 0)  # fixed member timestamps: same seed, same zip bytes
_ZIP_FOLDER = {"cow": "소_bbox", "pig": "돼지_bbox"}


@dataclass
class SynthSummary:
    """What :func:`generate_synthetic_dataset` wrote."""

    train_dir: Path
    test_dir: Path
    truth_csv: Path
    answer_csv: Path
    train_images: dict[str, int] = field(default_factory=dict)
    train_labelled_boxes: dict[str, int] = field(default_factory=dict)  # boxes in the label JSONs
    train_true_boxes: dict[str, int] = field(default_factory=dict)  # every visible animal
    left_out_cow_boxes: int = 0
    test_images: dict[str, int] = field(default_factory=dict)
    test_boxes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def n_images(self) -> int:
        """Training and test images written."""
        return sum(self.train_images.values()) + sum(self.test_images.values())

    @property
    def seconds_per_image(self) -> float:
        """Wall time per image written."""
        return self.seconds / max(self.n_images, 1)

    def format(self) -> str:
        """The summary as printable lines."""
        lines = [
            f"train  {self.train_dir}: " + ", ".join(
                f"{c} {self.train_images.get(c, 0)} images / {self.train_labelled_boxes.get(c, 0)} labelled boxes"
                f" ({self.train_true_boxes.get(c, 0)} true)" for c in ("cow", "pig")),
            f"       left-out cow boxes: {self.left_out_cow_boxes}"
            f" ({self.left_out_cow_boxes / max(self.train_true_boxes.get('cow', 0), 1):.1%} of true cow boxes)",
            f"test   {self.test_dir}: " + ", ".join(
                f"{c} {self.test_images.get(c, 0)} images / {self.test_boxes.get(c, 0)} boxes" for c in ("cow", "pig")),
            f"truth  {self.truth_csv}",
            f"answer {self.answer_csv}",
            f"time   {self.seconds:.1f} s ({self.seconds_per_image * 1000:.1f} ms per image)",
        ]
        return "\n".join(lines)


def label_json(record: SynthImage) -> dict:
    """The AI Hub label JSON of one image: labelled boxes only, behaviour categories (not species)."""
    number = int(Path(record.image_id).stem.rsplit("_", 1)[1])
    annotations = []
    for box, keep, behaviour in zip(record.boxes, record.labelled, record.behaviours):
        if not keep:
            continue
        x1, y1, x2, y2 = box
        annotations.append({"id": len(annotations) + 1, "image_id": number, "bbox": [x1, y1, x2, y2],
                            "area": (x2 - x1) * (y2 - y1), "category_id": _CATEGORY_ID[behaviour]})
    return {"label_info": {
        "image": {"file_name": record.image_id, "id": number, "width": record.width, "height": record.height,
                  "date_captured": "2021-07-01 00:00:00"},
        "annotations": annotations,
        "categories": [dict(c) for c in BEHAVIOUR_CATEGORIES],
    }}


def _add_member(zf: zipfile.ZipFile, arcname: str, data: bytes, compress: bool) -> None:
    """Add one member as the real zips have it: fixed timestamp (same seed, same bytes), UTF-8 name flag."""
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.flag_bits |= 0x800  # names are UTF-8 (the folders are Korean)
    info.create_system = 3
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _image_numbers(seed: int, label: str, n_train: int, n_test: int) -> tuple[list[int], list[int]]:
    """Disjoint 6-digit numbers for train and test images of one class. As in the real data, the test
    numbers are scattered among the training numbers rather than forming a block."""
    total = n_train + n_test
    if total > 999_999:
        raise ValueError(f"{total} {label} images do not fit the 6-digit AI Hub numbering")
    rng = np.random.default_rng([int(seed), CLASS_CODE[label], 7])
    is_test = np.zeros(total, bool)
    is_test[rng.choice(total, size=n_test, replace=False)] = True
    numbers = np.arange(1, total + 1)
    return numbers[~is_test].tolist(), numbers[is_test].tolist()


def _frame_sizes(label: str, n: int, split: str) -> list[tuple[int, int]]:
    """Frame size per image; pig sizes interleaved so any prefix keeps the real proportion."""
    if label == "cow":
        return [(1920, 1080)] * n
    real = TRAIN_PIG_SIZES if split == "train" else TEST_PIG_SIZES
    share_wide = real[(1920, 1080)] / sum(real.values())
    return [(1920, 1080) if math.floor((i + 1) * share_wide) > math.floor(i * share_wide) else (1280, 960)
            for i in range(n)]


# The order the zips are filled in: training images class by class, then test images.
_GROUPS = (("cow", "train"), ("pig", "train"), ("pig", "test"), ("cow", "test"))


def _render_job(job: tuple) -> SynthImage:
    """Render one image from ``(label, number, split, seed, size, missing_cow_rate, image_scale, labels_only,
    style)``."""
    *args, style = job
    return render_image(*args, style=style)[1]


def _single_threaded_cv2() -> None:
    cv2.setNumThreads(1)  # each worker is one core's worth of rendering; OpenCV's own threads would fight over them


def _rendered(jobs: list[tuple], workers: int, stack: ExitStack) -> Iterator[SynthImage]:
    """The records of ``jobs`` in job order, rendered here or by ``workers`` processes. Every image draws from
    its own (seed, class, split, number) streams, so the bytes do not depend on which process renders it."""
    if workers <= 1:
        return map(_render_job, jobs)
    # spawn: a fresh interpreter per worker, whatever the caller has imported or locked
    pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers, _single_threaded_cv2))
    # Ordered results; small chunks keep both workers busy up to the last image and few images waiting in memory.
    return pool.imap(_render_job, jobs, chunksize=2)


MADE_BY = "livestock synth"


def not_ours(paths: list[Path]) -> list[Path]:
    """The existing files among ``paths`` that ``livestock synth`` did not write: zips without its archive comment,
    truth files without its record. The generator never overwrites them."""
    found = []
    for p in paths:
        if not p.exists():
            continue
        if p.suffix.lower() == ".zip":
            ours = p.is_file() and is_synthetic_zip(p)
        else:
            record = read_record(p) if p.is_file() else None
            ours = record is not None and record.get("made_by") == MADE_BY
        if not ours:
            found.append(p)
    return found


IMAGE_SCALE_RULE = "in (0, 1] and give frames of at least 16 px"


def image_scale_ok(image_scale: float) -> bool:
    """Whether ``image_scale`` is in (0, 1] and gives frames of at least 16 px."""
    return 0.0 < image_scale <= 1.0 and round(960 * image_scale) >= 16


def refuse_settings(rules: list[tuple[str, object, bool, str]], name: Callable[[str], str] = str) -> None:
    """A ValueError that lists, in one line, each ``(key, value, ok, rule)`` of ``rules`` that is not ok, the key
    as ``name`` calls it (an option the user typed): ``--seed -1: must be 0 or more; …``."""
    bad = [f"{name(key)} {value}: must be {rule}" for key, value, ok, rule in rules if not ok]
    if bad:
        raise ValueError("; ".join(bad))


# How the settings of generate_synthetic_dataset are called on the command line (``livestock synth``).
SYNTH_OPTIONS: dict[str, str] = {"n_train": "--n-train", "n_test": "--n-test", "seed": "--seed",
                                 "missing_cow_rate": "--missing-cow-rate", "image_scale": "--image-scale",
                                 "workers": "--workers"}


def check_synth_settings(*, n_train: int | None = 300, n_test: int | None = 60, seed: int = 0,
                         missing_cow_rate: float = 0.15, image_scale: float = 1.0, workers: int = 1,
                         names: Mapping[str, str] | None = None) -> None:
    """A ValueError naming each setting of :func:`generate_synthetic_dataset` that no set can take, as ``names``
    calls it (:data:`SYNTH_OPTIONS`: the options the user typed; default the parameter names), before anything is
    written. ``n_train`` / ``n_test`` None: not checked (per-class counts given instead)."""
    rules = [("n_train", n_train, n_train is None or n_train >= 2, "2 or more (one image of each class)"),
             ("n_test", n_test, n_test is None or n_test >= 0, "0 or more"),
             # numpy's generators take no negative seed, and their own error names no setting
             ("seed", seed, seed >= 0, "0 or more"),
             ("missing_cow_rate", missing_cow_rate, 0.0 <= missing_cow_rate < 1.0, "in [0, 1)"),
             ("image_scale", image_scale, image_scale_ok(image_scale), IMAGE_SCALE_RULE),
             ("workers", workers, workers >= 1, "1 or more")]
    refuse_settings(rules, lambda key: (names or {}).get(key, key))


def generate_synthetic_dataset(
    train_dir: str | os.PathLike = DATA_DIR,
    test_dir: str | os.PathLike = TEST_DIR,
    n_train: int = 300,
    n_test: int = 60,
    seed: int = 0,
    missing_cow_rate: float = 0.15,
    image_scale: float = 1.0,
    labels_only: bool = False,
    train_counts: dict[str, int] | None = None,
    test_counts: dict[str, int] | None = None,
    progress: bool = True,
    style: str = "barn",
    workers: int = 1,
) -> SynthSummary:
    """Write a synthetic AI Hub-format dataset.

    ``train_dir`` gets the four training zips (cow / pig images and label JSONs) and ``synth_truth.csv``
    (every true box, with ``labelled`` False for the cow boxes left out of the JSONs); ``test_dir`` gets
    the two test image zips and ``answer.csv`` (complete ground truth, contest format, coordinates
    normalised by each image's own size). ``n_train`` / ``n_test`` are split cow : pig in the real ratio
    unless ``train_counts`` / ``test_counts`` ({'cow': n, 'pig': n}) are given. ``image_scale`` < 1
    renders smaller frames (labels match them); ``labels_only`` writes plain grey JPEGs of the right
    size and the same labels as a full render. ``style``: ``barn`` (the main job's frames) or ``shifted``
    (the pretraining domain, :mod:`livestock.data.synth.style`). ``workers`` > 1 renders in that many processes
    while this one writes the zips in the same order. Same arguments, same bytes, whatever ``workers``.

    Every zip carries an archive comment that marks it as synthetic, and the truth and answer files each get a
    record (``<name>.source.json``, :mod:`livestock.provenance`) of the fingerprint of the zips they describe, so
    they score only those images. A file of the six zips' or the two truth files' names that this generator did
    not write (your own data) is never overwritten: a ValueError names it before anything is written.
    """
    get_style(style)  # an unknown style fails before anything is written
    train_dir, test_dir = Path(train_dir), Path(test_dir)
    if train_dir.resolve() == test_dir.resolve():
        raise ValueError(f"{train_dir}: train and test folders must differ (their zip names coincide)")
    check_synth_settings(n_train=n_train if train_counts is None else None,
                         n_test=n_test if test_counts is None else None, seed=seed,
                         missing_cow_rate=missing_cow_rate, image_scale=image_scale, workers=workers)
    if train_counts is None:
        train_counts = split_by_class_ratio(n_train, "train")
    if test_counts is None:
        test_counts = split_by_class_ratio(n_test, "test")
    for counts in (train_counts, test_counts):
        if set(counts) != {"cow", "pig"} or min(counts.values()) < 0:
            raise ValueError(f"per-class counts must be {{'cow': n, 'pig': n}} with n >= 0, got {counts}")

    targets = {key: train_dir / name for key, name in TRAIN_ZIPS.items()}
    targets.update({(label, "test"): test_dir / name for label, name in TEST_ZIPS.items()})
    foreign = not_ours([*targets.values(), train_dir / SYNTH_TRUTH.name, test_dir / TEST_ANSWER.name])
    if foreign:
        raise ValueError(
            f"{foreign[0]}" + (f" (and {len(foreign) - 1} more: {', '.join(p.name for p in foreign[1:])})"
                               if len(foreign) > 1 else "")
            + f": not written by `{MADE_BY}`, so it is left alone and no synthetic set is written. To use your own "
              f"data, put all of it in place (the four training zips in {train_dir}, the two test zips in "
              f"{test_dir}); to generate a synthetic set there, move these files elsewhere first")

    start = time.perf_counter()
    summary = SynthSummary(train_dir, test_dir, train_dir / SYNTH_TRUTH.name, test_dir / TEST_ANSWER.name)
    truth_rows: list[tuple] = []
    answer_rows: list[tuple] = []
    numbers = {c: _image_numbers(seed, c, train_counts[c], test_counts[c]) for c in ("cow", "pig")}

    jobs: dict[tuple[str, str], list[tuple]] = {}
    for label, split in _GROUPS:
        nums = numbers[label][0 if split == "train" else 1]
        jobs[(label, split)] = [(label, number, split, seed, size, missing_cow_rate, image_scale, labels_only, style)
                                for number, size in zip(nums, _frame_sizes(label, len(nums), split))]
    rendered: Iterator[SynthImage] = iter(())

    def images(label: str, split: str) -> Iterator[SynthImage]:
        for _ in tqdm(jobs[(label, split)], desc=f"synth {split} {label}", unit="img", disable=not progress,
                      leave=False):
            yield next(rendered)

    # Every zip is written to a temp file and renamed into place only once the whole set is done, so an
    # interrupted run leaves the previous set (or nothing) rather than a mixture.
    with ExitStack() as stack:
        zips: dict[tuple[str, str], zipfile.ZipFile] = {}
        for key, path in targets.items():
            tmp = stack.enter_context(atomic_output(path))
            # entered after its temp file, so the zip is closed (complete) before that file is renamed into place
            zips[key] = stack.enter_context(zipfile.ZipFile(tmp, "w", allowZip64=True))
            zips[key].comment = SYNTH_ZIP_COMMENT
        # entered last, so the workers are gone before any zip is closed or renamed into place
        rendered = _rendered([job for group in _GROUPS for job in jobs[group]], workers, stack)
        for label in ("cow", "pig"):
            folder = _ZIP_FOLDER[label]
            n_img = n_lab = n_true = 0
            for rec in images(label, "train"):
                _add_member(zips[(label, "images")], f"{folder}/{rec.image_id}", rec.jpeg, compress=labels_only)
                _add_member(zips[(label, "labels")], f"{folder}/{Path(rec.image_id).stem}.json",
                            json.dumps(label_json(rec), ensure_ascii=False).encode("utf-8"), compress=True)
                n_img += 1
                n_true += len(rec.boxes)
                n_lab += sum(rec.labelled)
                truth_rows += [(rec.image_id, label, *b, keep) for b, keep in zip(rec.boxes, rec.labelled)]
            summary.train_images[label] = n_img
            summary.train_labelled_boxes[label] = n_lab
            summary.train_true_boxes[label] = n_true
        for label in ("pig", "cow"):
            folder = _ZIP_FOLDER[label]
            n_img = n_box = 0
            for rec in images(label, "test"):
                _add_member(zips[(label, "test")], f"{folder}/{rec.image_id}", rec.jpeg, compress=labels_only)
                n_img += 1
                n_box += len(rec.boxes)
                answer_rows += [(rec.image_id, label, x1 / rec.width, x2 / rec.width, y1 / rec.height,
                                 y2 / rec.height) for x1, y1, x2, y2 in rec.boxes]
            summary.test_images[label] = n_img
            summary.test_boxes[label] = n_box
    summary.left_out_cow_boxes = summary.train_true_boxes["cow"] - summary.train_labelled_boxes["cow"]
    atomic_write_csv(pd.DataFrame(truth_rows, columns=["image_id", "label", "x1", "y1", "x2", "y2", "labelled"]),
                     summary.truth_csv)
    atomic_write_csv(pd.DataFrame(answer_rows, columns=["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"]),
                     summary.answer_csv)
    # The records are written last, from the zips as they now lie on disk: until then the old record (if any) does
    # not match the new zips, so an interrupted run leaves truth that scores nothing rather than the wrong images.
    for truth, folder, keys in ((summary.truth_csv, train_dir, list(TRAIN_ZIPS)),
                                (summary.answer_csv, test_dir, [(label, "test") for label in TEST_ZIPS])):
        write_record(truth, inputs=fingerprint([targets[k] for k in keys], root=folder), dataset="synthetic",
                     made_by=MADE_BY, data=folder, seed=int(seed), style=style,
                     zips=sorted(targets[k].name for k in keys))
    summary.seconds = time.perf_counter() - start
    return summary


# The preview's frames: cows and both pig frame sizes, the same (label, number, size) in each style.
PREVIEW_FRAMES = (("cow", 1, (1920, 1080)), ("pig", 2, (1920, 1080)), ("cow", 3, (1920, 1080)),
                  ("pig", 4, (1280, 960)), ("cow", 5, (1920, 1080)), ("pig", 6, (1920, 1080)))


def style_preview(out_png: str | os.PathLike, seed: int = 0, tile_width: int = 240) -> Path:
    """Write a PNG of the :data:`PREVIEW_FRAMES` in every style, one row per style, with their true boxes."""
    tile_height = tile_width * 9 // 16
    rows = []
    for name in STYLES:
        tiles = []
        for label, number, size in PREVIEW_FRAMES:
            img, rec = render_image(label, number, "train", seed, size, 0.0, tile_width / size[0], style=name)
            for x1, y1, x2, y2 in rec.boxes:
                cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), (0, 255, 255), 1)
            k = min(tile_width / img.shape[1], tile_height / img.shape[0])  # letterboxed into the tile
            img = cv2.resize(img, (round(img.shape[1] * k), round(img.shape[0] * k)), interpolation=cv2.INTER_AREA)
            tile = np.zeros((tile_height, tile_width, 3), np.uint8)
            x0, y0 = (tile_width - img.shape[1]) // 2, (tile_height - img.shape[0]) // 2
            tile[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
            tiles.append(tile)
        row = np.concatenate(tiles, axis=1)
        caption = np.zeros((20, row.shape[1], 3), np.uint8)
        cv2.putText(caption, f"style {name}", (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        rows += [caption, row]
    ok, buf = cv2.imencode(".png", np.concatenate(rows, axis=0), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f"{out_png}: PNG encoding failed")
    return atomic_write_bytes(out_png, buf.tobytes())


def cli_synth_args(parser: argparse.ArgumentParser) -> None:
    """The ``livestock synth`` options."""
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="folder for the four training zips (default: data)")
    parser.add_argument("--test-out", type=Path, default=TEST_DIR,
                        help="folder for the two test zips and answer.csv (default: data_test)")
    parser.add_argument("--n-train", type=int, default=300, help="training images, split cow:pig in the real ratio")
    parser.add_argument("--n-test", type=int, default=60, help="test images, split cow:pig as the real test set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--missing-cow-rate", type=float, default=0.15,
                        help="share of true cow boxes left out of the training labels (default 0.15)")
    parser.add_argument("--image-scale", type=float, default=1.0,
                        help="frame size factor: 1.0 gives 1920x1080 / 1280x960, 0.25 gives 480x270 / 320x240")
    parser.add_argument("--labels-only", action="store_true",
                        help="skip rendering: plain grey JPEGs of the right size, same labels")
    parser.add_argument("--style", choices=list(STYLES), default="barn",
                        help="barn: the main job's frames; shifted: the pretraining domain (default: barn)")
    parser.add_argument("--preview", type=Path, default=None, metavar="PNG",
                        help="instead of a dataset, write six example frames of every style, side by side, to PNG")
    parser.add_argument("--workers", type=int, default=1,
                        help="rendering processes (default 1); the output is the same for any number")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cli_synth(args: argparse.Namespace) -> int:
    """``livestock synth``: write the dataset and print its summary (or, with ``--preview``, the style preview)."""
    check_synth_settings(n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                         missing_cow_rate=args.missing_cow_rate, image_scale=args.image_scale, workers=args.workers,
                         names=SYNTH_OPTIONS)
    if args.preview is not None:
        print(f"wrote {style_preview(args.preview, seed=args.seed)}")
        return 0
    summary = generate_synthetic_dataset(args.out, args.test_out, args.n_train, args.n_test, seed=args.seed,
                                         missing_cow_rate=args.missing_cow_rate, image_scale=args.image_scale,
                                         labels_only=args.labels_only, progress=not args.quiet, style=args.style,
                                         workers=args.workers)
    print(summary.format())
    return 0
