"""Multilabel-stratified train / validation splits, and the full and mini sets built from them.

Each image gets the labels {cow, pig, little, medium, many} (its class and its box-count group, see
:mod:`livestock.data.eda`) and ``MultilabelStratifiedKFold(n_splits=5, shuffle=True, random_state=42)`` spreads
the images over five folds so that every label keeps its share in each fold. Optionally the presence of each
box-shape bucket (``ratio``) and box-size bucket (``size``) in an image are stratified too. The stratifier
balances every label at once, so on small sets (a few hundred images) extra labels loosen the balance of the
base labels and the fold sizes; on thousands of images all stay within about two percentage points.

Three sets come out of the same folds (a manifest has one row per image and set membership):

- ``multilabel``: fold 0 is ``val``, folds 1-4 are ``train`` (80 / 20; 13,164 / 3,291 in the real set);
- ``full``: every image in ``train`` (for the final model); ``val`` is the multilabel validation fold again,
  only to monitor training: those images are also trained on, so its scores are optimistic;
- ``mini``: folds 1 and 2 as ``train``, fold 3 as ``val`` (60 % of the images, 40 / 20), for
  hyper-parameter search. It lies wholly inside the multilabel training folds, so the multilabel validation
  fold stays unseen by the search that picks the hyper-parameters.

Images are never copied: a set is ``train.txt`` / ``val.txt`` (absolute image paths, one a line), its
``manifest.csv`` and a ``data.yaml`` for YOLOv5.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from livestock import paths, provenance
from livestock.data.eda import COUNT_GROUPS, SHAPES, SIZES, box_frame, image_frame, load_prepared_records
from livestock.data.yolo_format import write_data_yaml, write_image_list
from livestock.fileio import atomic_write_csv
from livestock.records import CLASS_NAMES, ImageRecord

BASE_LABELS: tuple[str, ...] = ("cow", "pig") + COUNT_GROUPS
EXTRA_LABEL_KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # kind -> (column prefix, box_frame column, buckets): "the image has at least one box of this bucket"
    "ratio": ("ratio", "shape", SHAPES),
    "size": ("size", "size", SIZES),
}
SETS: tuple[str, ...] = ("multilabel", "full", "mini")
VALID_FOLD = 0
MINI_TRAIN_FOLDS: tuple[int, ...] = (1, 2)
MINI_VALID_FOLDS: tuple[int, ...] = (3,)
MANIFEST_COLUMNS: tuple[str, ...] = ("image_id", "image_path", "label", "n_boxes", "group", "fold", "split")


def _parse_names(value: str | Sequence[str] | None, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """``"a,b"`` / ``["a"]`` / ``""`` / None -> the distinct names in order, each one of ``allowed``."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(s.strip() for s in items if s and s.strip()))
    for name in names:
        if name not in allowed:
            raise ValueError(f"unknown {what} {name!r}, expected some of {tuple(allowed)}")
    return names


def parse_extra_labels(extra_labels: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"ratio,size"`` / ``["ratio"]`` / ``""`` / None -> a checked tuple of kinds."""
    return _parse_names(extra_labels, tuple(EXTRA_LABEL_KINDS), "extra label kind")


def label_matrix(records: Sequence[ImageRecord], extra_labels: str | Sequence[str] = ()) -> pd.DataFrame:
    """One 0/1 column per stratification label, one row per record (in the given order).

    Base labels: cow, pig, little, medium, many. ``ratio`` adds ratio_horizontal / ratio_square /
    ratio_vertical, ``size`` adds size_very_large ... size_out: 1 when the image holds such a box."""
    img = image_frame(records)
    cols = {name: (img["label"] == name).to_numpy() for name in ("cow", "pig")}
    cols.update({g: (img["group"] == g).to_numpy() for g in COUNT_GROUPS})
    kinds = parse_extra_labels(extra_labels)
    if kinds:
        box = box_frame(records)
        row_of = pd.Series(np.arange(len(img)), index=img["image_id"])
        if not row_of.index.is_unique:
            raise ValueError("image ids are not unique: " + ", ".join(row_of.index[row_of.index.duplicated()][:5]))
        box_rows = row_of.loc[box["image_id"]].to_numpy()
        for kind in kinds:
            prefix, column, buckets = EXTRA_LABEL_KINDS[kind]
            for bucket in buckets:
                has = np.zeros(len(img), dtype=bool)
                has[box_rows[(box[column] == bucket).to_numpy()]] = True
                cols[f"{prefix}_{bucket}"] = has
    return pd.DataFrame(cols, index=img["image_id"]).astype(np.int8)


def stratified_split(records: Iterable[ImageRecord], n_splits: int = 5, seed: int = 42,
                     extra_labels: str | Sequence[str] = (), valid_fold: int = VALID_FOLD) -> pd.DataFrame:
    """Assign each image a fold with ``MultilabelStratifiedKFold(n_splits, shuffle=True, random_state=seed)``
    on its labels (see :func:`label_matrix`); fold ``valid_fold`` is ``val``, the others ``train``.

    Records are ordered by image_id first, so the result does not depend on the order they were read in.
    Returns the manifest: image_id, image_path (absolute), label, n_boxes, group, fold, split, then one
    0/1 column per extra label when ``extra_labels`` is given."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    recs = sorted(records, key=lambda r: r.image_id)
    if not recs:
        raise ValueError("no records to split")
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    if not 0 <= valid_fold < n_splits:
        raise ValueError(f"valid_fold must be in [0, {n_splits}), got {valid_fold}")
    if len(recs) < n_splits:
        raise ValueError(f"{len(recs)} images cannot be split into {n_splits} folds")
    labels = label_matrix(recs, extra_labels)
    # a label no image has carries no information and only slows the stratifier down
    y = labels.loc[:, labels.any(axis=0)].to_numpy()
    folds = np.full(len(recs), -1, dtype=np.int64)
    skf = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, test_idx) in enumerate(skf.split(np.zeros((len(recs), 1)), y)):
        folds[test_idx] = k
    img = image_frame(recs)
    manifest = pd.DataFrame({
        "image_id": img["image_id"],
        "image_path": [os.path.abspath(p) for p in img["image_path"]],
        "label": img["label"], "n_boxes": img["n_boxes"], "group": img["group"], "fold": folds,
        "split": np.where(folds == valid_fold, "val", "train"),
    })
    extra = [c for c in labels.columns if c not in BASE_LABELS]
    for c in extra:
        manifest[c] = labels[c].to_numpy()
    return manifest


def select_set(manifest: pd.DataFrame, which: str, valid_fold: int = VALID_FOLD,
               mini_train_folds: Sequence[int] = MINI_TRAIN_FOLDS,
               mini_valid_folds: Sequence[int] = MINI_VALID_FOLDS) -> pd.DataFrame:
    """The rows of one set from a :func:`stratified_split` manifest: one row per (image, split) membership,
    ``split`` being ``train`` or ``val`` (see the module notes for multilabel / full / mini)."""
    missing = [c for c in ("image_id", "image_path", "label", "fold") if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}; make it with stratified_split")
    fold = manifest["fold"]
    if which == "multilabel":
        parts = [manifest[fold != valid_fold].assign(split="train"), manifest[fold == valid_fold].assign(split="val")]
    elif which == "full":
        parts = [manifest.assign(split="train"), manifest[fold == valid_fold].assign(split="val")]
    elif which == "mini":
        overlap = set(mini_train_folds) & set(mini_valid_folds)
        if overlap:
            raise ValueError(f"mini train and val folds overlap: {sorted(overlap)}")
        if valid_fold in set(mini_train_folds) | set(mini_valid_folds):
            raise ValueError(f"the mini set must not use the validation fold {valid_fold}")
        parts = [manifest[fold.isin(mini_train_folds)].assign(split="train"),
                 manifest[fold.isin(mini_valid_folds)].assign(split="val")]
    else:
        raise ValueError(f"unknown set {which!r}, expected one of {SETS}")
    out = pd.concat(parts, ignore_index=True)
    for split in ("train", "val"):
        if not (out["split"] == split).any():
            raise ValueError(f"the {which} set has no {split} image ({len(manifest)} images, "
                             f"folds {sorted(fold.unique())})")
    return out


def write_split(manifest: pd.DataFrame, out_dir: str | os.PathLike, which: str) -> pd.DataFrame:
    """Write set ``which`` (multilabel / full / mini) of a :func:`stratified_split` manifest to ``out_dir``:
    ``train.txt``, ``val.txt`` (absolute image paths), ``manifest.csv``, ``data.yaml`` and ``source.json``, the
    provenance of the prepared set its images lie in, each atomically. Returns the set's manifest (one row per
    image and split)."""
    out_dir = Path(out_dir)
    rows = select_set(manifest, which)
    prepared = prepared_folder_of(rows["image_path"])
    provenance.require_current(prepared)  # a split of a stale prepared set would only pass the staleness on
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance.forget(out_dir)  # the set is about to change: no record until it is whole again
    train_txt = write_image_list(rows.loc[rows["split"] == "train", "image_path"], out_dir / "train.txt")
    val_txt = write_image_list(rows.loc[rows["split"] == "val", "image_path"], out_dir / "val.txt")
    atomic_write_csv(rows, out_dir / "manifest.csv")
    write_data_yaml(out_dir / "data.yaml", train_txt, val_txt)
    provenance.record_derived(out_dir, prepared, "livestock split", set=which)
    return rows


def prepared_folder_of(image_paths: Iterable[str | os.PathLike]) -> Path | None:
    """The prepared set the images lie in (every path is ``<prepared>/images/<file>``), or None when they do not
    all lie in one such folder."""
    parents = {Path(p).parent for p in image_paths}
    if len(parents) != 1:
        return None
    images = parents.pop()
    return images.parent if images.name == "images" else None


def split_records(prepared_dir: str | os.PathLike, set_dir: str | os.PathLike, split: str = "val") -> list[ImageRecord]:
    """The prepared records (with their ground-truth boxes) of one part of a written set, in the order of its
    list file (``set_dir/val.txt`` or ``train.txt``): the images a model is tuned or scored on."""
    list_file = Path(set_dir) / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(f"{list_file}: list file not found (run `livestock split` first)")
    provenance.require_current(prepared_dir, set_dir)
    by_id = {r.image_id: r for r in load_prepared_records(prepared_dir)}
    names = [Path(line.strip()).name for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    missing = [n for n in names if n not in by_id]
    if missing:
        raise ValueError(f"{list_file}: {len(missing)} images are not in {prepared_dir} (e.g. {missing[0]}); "
                         "re-run `livestock split` after `livestock prepare`")
    return [by_id[n] for n in names]


def split_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per split: cow little / medium / many / total, pig likewise, and all images (the write-up's
    split table, with the group names the right way round)."""
    splits = [s for s in ("train", "val") if s in set(manifest["split"])] + sorted(
        set(manifest["split"]) - {"train", "val"})
    columns = []
    data: dict[tuple[str, str], list[int]] = {}
    for label in ("cow", "pig"):
        for g in COUNT_GROUPS + ("total",):
            columns.append((label, g))
            data[(label, g)] = [
                int(((manifest["split"] == s) & (manifest["label"] == label)
                     & ((manifest["group"] == g) if g != "total" else True)).sum())
                for s in splits
            ]
    data[("all", "images")] = [int((manifest["split"] == s).sum()) for s in splits]
    table = pd.DataFrame(data, index=pd.Index(splits, name="split"))
    table.columns = pd.MultiIndex.from_tuples(list(data))
    return table


def stratification_report(manifest: pd.DataFrame, by: str = "fold") -> pd.DataFrame:
    """Each label's share (%) of the images in every fold (or split), beside its share in the whole set,
    and the largest deviation in percentage points."""
    cols = {name: manifest["label"] == name for name in CLASS_NAMES}
    cols.update({g: manifest["group"] == g for g in COUNT_GROUPS})
    for c in manifest.columns:
        if c.startswith(tuple(f"{p}_" for p, _, _ in EXTRA_LABEL_KINDS.values())):
            cols[c] = manifest[c].astype(bool)
    flags = pd.DataFrame(cols)
    share = 100 * flags.groupby(manifest[by].to_numpy()).mean().T
    share.columns = [f"{by} {c}" for c in share.columns]
    whole = 100 * flags.mean()
    out = share.copy()
    out.insert(0, "all", whole)
    out["max_dev_pp"] = share.sub(whole, axis=0).abs().max(axis=1)
    return out.round(2)


def make_all_splits(prepared_dir: str | os.PathLike, splits_dir: str | os.PathLike, n_splits: int = 5,
                    seed: int = 42, extra_labels: str | Sequence[str] = ()) -> dict[str, pd.DataFrame]:
    """Stratify a prepared folder once and write ``splits_dir/{multilabel,full,mini}``. Returns each set's manifest."""
    manifest = stratified_split(load_prepared_records(prepared_dir), n_splits=n_splits, seed=seed,
                                extra_labels=extra_labels)
    return {which: write_split(manifest, Path(splits_dir) / which, which) for which in SETS}


# ---------------------------------------------------------------- CLI


def cli_split_args(parser: argparse.ArgumentParser) -> None:
    """The ``livestock split`` options."""
    parser.add_argument("prepared_dir", nargs="?", default=str(paths.PREPARED_DIR),
                        help="prepared dataset folder with records.jsonl (default: %(default)s)")
    parser.add_argument("--out", default=str(paths.SPLITS_DIR),
                        help="folder for multilabel/, full/, mini/ (default: %(default)s)")
    parser.add_argument("--n-splits", type=int, default=5, help="folds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="random_state of the stratifier (default: %(default)s)")
    parser.add_argument("--extra-labels", default="",
                        help="also stratify on the presence of box-ratio and / or box-size buckets: ratio,size")
    parser.add_argument("--sets", default=",".join(SETS), help="which sets to write (default: %(default)s)")


def cli_split(args: argparse.Namespace) -> int:
    """``livestock split``: write the chosen sets and print their tables and the label shares per fold."""
    sets = _parse_names(args.sets, SETS, "set")
    if not sets:
        raise ValueError(f"--sets {args.sets!r}: name one or more of {', '.join(SETS)}")
    record = provenance.read_record(Path(args.prepared_dir))
    if record is not None and record.get("images_only"):
        raise ValueError(f"{args.prepared_dir}: prepared from test zips (images only, no labels): split a training set")
    records = load_prepared_records(args.prepared_dir)
    missing = next((r.image_path for r in records if not Path(r.image_path).is_file()), None)
    if missing:
        raise FileNotFoundError(f"{missing}: image of {Path(args.prepared_dir) / 'records.jsonl'} not found")
    manifest = stratified_split(records, n_splits=args.n_splits, seed=args.seed, extra_labels=args.extra_labels)
    with pd.option_context("display.width", 160, "display.max_columns", 30):
        for which in sets:
            rows = write_split(manifest, Path(args.out) / which, which)
            print(f"{which} -> {Path(args.out) / which}")
            print(split_table(rows).to_string())
            print()
        print("label shares (%) per fold:")
        print(stratification_report(manifest).to_string())
    return 0


def pick_evenly(items: Sequence, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all of them when there are fewer), for reproducible subsets."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]
