"""Exploratory data analysis of a prepared dataset: the tables and plots of the original write-up.

Every function takes a list of :class:`~livestock.records.ImageRecord` and returns a pandas DataFrame or a
matplotlib Figure; :func:`run_eda` computes them all for a prepared folder and saves each table as CSV and
each plot as PNG. Figures are built with :class:`matplotlib.figure.Figure` (not ``pyplot``), so nothing is
shown twice in a notebook and nothing piles up in pyplot's global state when run in a loop.

Buckets used here and by :mod:`livestock.data.split`:

- box-count groups per image, per class: cow little < 4, medium 4-5, many >= 6; pig little < 8,
  medium 8-12, many >= 13;
- box shape by ``r = w / (w + h)``: horizontal if ``r >= 0.6``, vertical if ``h / (w + h) >= 0.6``, else square;
- box size by area in px²: very_large >= 100k, large >= 50k, medium >= 10k, small >= 1k, very_small >= 100,
  else out.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pandas as pd

from livestock import paths, provenance
from livestock.fileio import atomic_write_csv, atomic_write_figure
from livestock.records import CLASS_NAMES, ImageRecord, load_records

if TYPE_CHECKING:  # matplotlib is imported only by the plotting functions
    from matplotlib.figure import Figure

# (first count of "medium", first count of "many") per class: little < lo <= medium < hi <= many.
COUNT_GROUP_BOUNDS: dict[str, tuple[int, int]] = {"cow": (4, 6), "pig": (8, 13)}
COUNT_GROUPS: tuple[str, ...] = ("little", "medium", "many")
SHAPE_THRESHOLD = 0.6
SHAPES: tuple[str, ...] = ("horizontal", "square", "vertical")
# (name, smallest area in px²), largest first; anything below the last bound is "out".
SIZE_BOUNDS: tuple[tuple[str, float], ...] = (
    ("very_large", 100_000), ("large", 50_000), ("medium", 10_000), ("small", 1_000), ("very_small", 100),
)
SIZES: tuple[str, ...] = tuple(name for name, _ in SIZE_BOUNDS) + ("out",)
SMALL_BOX_AREA = 4_000  # the write-up's "tiny box" line: boxes with area <= this many px²
COUNT_BIN_WIDTH = 1.1  # the original's histogram bins of boxes per image
COW_COUNT_UPPER = 11.0  # ... from 0 to 11 for cows
CLASS_COLORS = {"pig": "#e377c2", "cow": "#8c564b"}


# ---------------------------------------------------------------- loading


def load_prepared_records(prepared_dir: str | os.PathLike) -> list[ImageRecord]:
    """Records of a prepared folder (``records.jsonl``), each image path made absolute.

    A prepared folder keeps its JPEGs in ``images/``; when ``images/<image_id>`` is there it is used, so the
    folder can be moved or opened from another working directory. Otherwise the record's own path is kept
    (made absolute against the current directory). A folder prepared from other data than its data folder now
    holds is refused (:class:`livestock.provenance.StaleError`)."""
    prepared_dir = Path(prepared_dir)
    if prepared_dir.exists() and not prepared_dir.is_dir():
        raise NotADirectoryError(f"{prepared_dir}: not a folder; give the prepared dataset folder (the one holding "
                                 f"records.jsonl and images/)")
    if not prepared_dir.is_dir():
        raise FileNotFoundError(f"{prepared_dir}: prepared dataset folder not found (run `livestock prepare` first)")
    provenance.require_current(prepared_dir)
    records = load_records(prepared_dir / "records.jsonl")
    if not records:
        raise ValueError(f"{prepared_dir / 'records.jsonl'}: no records")
    images_dir = prepared_dir.absolute() / "images"
    out = []
    for r in records:
        canonical = images_dir / r.image_id
        path = canonical if canonical.is_file() else Path(os.path.abspath(r.image_path))
        out.append(ImageRecord(r.image_id, str(path), r.width, r.height, r.label, r.boxes))
    return out


# ---------------------------------------------------------------- buckets


def count_group(label: str, n_boxes: int) -> str:
    """Box-count group of one image: little / medium / many, with the class's own bounds."""
    return str(count_groups([label], [n_boxes])[0])


def count_groups(labels: Sequence[str], n_boxes: Sequence[int]) -> np.ndarray:
    """Vectorised :func:`count_group`."""
    labels = np.asarray(labels, dtype=object)
    n = np.asarray(n_boxes, dtype=np.int64)
    out = np.full(len(n), "", dtype=object)
    for label in np.unique(labels):
        if label not in COUNT_GROUP_BOUNDS:
            raise ValueError(f"no box-count groups for class {label!r}, expected one of {tuple(COUNT_GROUP_BOUNDS)}")
        lo, hi = COUNT_GROUP_BOUNDS[label]
        m = labels == label
        out[m] = np.where(n[m] < lo, "little", np.where(n[m] < hi, "medium", "many"))
    return out


def shape_buckets(widths: Sequence[float], heights: Sequence[float]) -> np.ndarray:
    """horizontal if w/(w+h) >= 0.6, vertical if h/(w+h) >= 0.6, else square (degenerate 0x0 boxes too)."""
    w = np.asarray(widths, dtype=np.float64)
    h = np.asarray(heights, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rw, rh = w / (w + h), h / (w + h)
    shape = np.where(rw >= SHAPE_THRESHOLD, "horizontal", np.where(rh >= SHAPE_THRESHOLD, "vertical", "square"))
    return shape.astype(object)


def size_buckets(areas: Sequence[float]) -> np.ndarray:
    """very_large >= 100k, large >= 50k, medium >= 10k, small >= 1k, very_small >= 100 px², else out."""
    a = np.asarray(areas, dtype=np.float64)
    out = np.full(a.shape, "out", dtype=object)
    for name, bound in reversed(SIZE_BOUNDS):  # smallest first, so larger bounds overwrite
        out[a >= bound] = name
    return out


# ---------------------------------------------------------------- frames


def image_frame(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """One row per image: image_id, image_path, width, height, size ("WxH"), label, n_boxes, group."""
    recs = list(records)
    df = pd.DataFrame(
        {"image_id": [r.image_id for r in recs], "image_path": [r.image_path for r in recs],
         "width": np.array([r.width for r in recs], dtype=np.int64),
         "height": np.array([r.height for r in recs], dtype=np.int64),
         "label": [r.label for r in recs], "n_boxes": np.array([r.n_boxes for r in recs], dtype=np.int64)}
    )
    df.insert(4, "size", df["width"].astype(str) + "x" + df["height"].astype(str))
    df["group"] = count_groups(df["label"].to_numpy(), df["n_boxes"].to_numpy())
    return df


def box_frame(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """One row per box: image_id, label, x1, y1, x2, y2, w, h, area (px²), ratio = w/(w+h), shape, size."""
    recs = list(records)
    counts = np.array([r.n_boxes for r in recs], dtype=np.int64)
    boxes = np.concatenate([r.boxes for r in recs]) if recs else np.zeros((0, 4))
    df = pd.DataFrame(boxes, columns=["x1", "y1", "x2", "y2"])
    df.insert(0, "image_id", np.repeat(np.array([r.image_id for r in recs], dtype=object), counts))
    df.insert(1, "label", np.repeat(np.array([r.label for r in recs], dtype=object), counts))
    df["w"] = df["x2"] - df["x1"]
    df["h"] = df["y2"] - df["y1"]
    df["area"] = df["w"] * df["h"]
    with np.errstate(invalid="ignore", divide="ignore"):
        df["ratio"] = df["w"] / (df["w"] + df["h"])
    df["shape"] = shape_buckets(df["w"], df["h"])
    df["size"] = size_buckets(df["area"])
    return df


def _classes(labels: Iterable[str]) -> list[str]:
    """Classes present, in class-id order (pig, cow)."""
    present = set(labels)
    return [c for c in CLASS_NAMES if c in present]


# ---------------------------------------------------------------- tables


def images_per_class(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """Images per class, their share, and images per pig image (cow : pig is about 3 : 1 in the real set)."""
    img = image_frame(records)
    counts = img["label"].value_counts().reindex(_classes(img["label"]), fill_value=0)
    out = pd.DataFrame({"images": counts.astype(np.int64)})
    out["share_%"] = (100 * out["images"] / max(len(img), 1)).round(2)
    out["per_pig_image"] = (out["images"] / counts.get("pig", np.nan)).round(2)
    out.index.name = "label"
    return out


def image_sizes(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """Images per size ("WxH") and class; the real set has 1920x1080 (cow, pig) and 1280x960 (pig only)."""
    img = image_frame(records)
    table = pd.crosstab(img["size"], img["label"]).reindex(columns=_classes(img["label"]), fill_value=0)
    table = table.loc[table.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    table.columns.name = None
    return table


def empty_images(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """The images without any box: image_id, label, width, height."""
    img = image_frame(records)
    return img.loc[img["n_boxes"] == 0, ["image_id", "label", "width", "height"]].reset_index(drop=True)


def small_boxes(records: Iterable[ImageRecord], max_area: float = SMALL_BOX_AREA) -> pd.DataFrame:
    """The boxes with area <= ``max_area`` px²: image_id, label, corners, w, h, area."""
    box = box_frame(records)
    columns = ["image_id", "label", "x1", "y1", "x2", "y2", "w", "h", "area"]
    return box.loc[box["area"] <= max_area, columns].reset_index(drop=True)


def summary_table(records: Iterable[ImageRecord], max_area: float = SMALL_BOX_AREA) -> pd.DataFrame:
    """The write-up's first table, per class: images, images per size, images with no box, boxes,
    boxes with area <= 4,000 px² (count and % of the class's boxes)."""
    recs = list(records)
    img, box = image_frame(recs), box_frame(recs)
    classes = _classes(img["label"])
    rows: dict[str, list] = {"images": [int((img["label"] == c).sum()) for c in classes]}
    for size, per_class in image_sizes(recs).iterrows():
        rows[f"{size}"] = [int(per_class[c]) for c in classes]
    rows["images with no box"] = [int(((img["label"] == c) & (img["n_boxes"] == 0)).sum()) for c in classes]
    n_boxes = [int((box["label"] == c).sum()) for c in classes]
    n_small = [int(((box["label"] == c) & (box["area"] <= max_area)).sum()) for c in classes]
    rows["boxes"] = n_boxes
    rows[f"boxes with area <= {max_area:,.0f} px^2"] = n_small
    rows[f"boxes with area <= {max_area:,.0f} px^2 (%)"] = [
        round(100 * s / n, 2) if n else float("nan") for s, n in zip(n_small, n_boxes)
    ]
    # object columns keep counts printed as integers beside the one row of percentages
    return pd.DataFrame(rows, index=classes, dtype=object).T


def box_count_histogram(records: Iterable[ImageRecord], label: str, bin_width: float = COUNT_BIN_WIDTH,
                        upper: float | None = None) -> pd.DataFrame:
    """Images per bin of "boxes per image" for one class, with the original's bins of width 1.1 from 0.

    ``upper`` (the last edge) defaults to 11 for cows, as in the original, or the largest count when that is
    higher, so no image falls outside. Columns: bin (``[a, b)``, the last one closed), counts (the integer box
    counts the bin holds), images."""
    img = image_frame(records)
    n = img.loc[img["label"] == label, "n_boxes"].to_numpy()
    largest = float(n.max()) if len(n) else 0.0
    upper = max(upper if upper is not None else (COW_COUNT_UPPER if label == "cow" else 0.0), largest, bin_width)
    n_bins = int(np.ceil(upper / bin_width - 1e-9))  # 11 / 1.1 is 10.000000000000002 in floats
    edges = np.round(np.arange(n_bins + 1) * bin_width, 10)
    hist, _ = np.histogram(n, bins=edges)
    rows = []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == n_bins - 1
        ints = [k for k in range(int(np.ceil(a)), int(np.floor(b)) + 1) if k >= a and (k < b or (last and k <= b))]
        held = "-" if not ints else (str(ints[0]) if len(ints) == 1 else f"{ints[0]}-{ints[-1]}")
        rows.append({"bin": f"[{a:g}, {b:g}{']' if last else ')'}", "counts": held, "images": int(hist[i])})
    return pd.DataFrame(rows)


def box_count_groups(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """Images per box-count group and class (little / medium / many, with the bounds in a column)."""
    img = image_frame(records)
    classes = _classes(img["label"])
    table = pd.crosstab(img["label"], img["group"]).reindex(index=classes, columns=list(COUNT_GROUPS), fill_value=0)
    table["images"] = table.sum(axis=1)
    table["bounds"] = [
        f"little < {lo}, medium {lo}-{hi - 1}, many >= {hi}" for lo, hi in (COUNT_GROUP_BOUNDS[c] for c in classes)
    ]
    table.index.name, table.columns.name = "label", None
    return table


def _bucket_table(box: pd.DataFrame, column: str, order: Sequence[str], normalize: bool) -> pd.DataFrame:
    classes = _classes(box["label"])
    table = pd.crosstab(box["label"], box[column]).reindex(index=classes, columns=list(order), fill_value=0)
    if normalize:
        table = (100 * table.div(table.sum(axis=1).replace(0, np.nan), axis=0)).round(2)
    table.index.name, table.columns.name = "label", None
    return table


def box_shape_table(records: Iterable[ImageRecord], normalize: bool = False) -> pd.DataFrame:
    """Boxes per shape bucket (horizontal / square / vertical) and class; ``normalize``: % of the class's boxes."""
    return _bucket_table(box_frame(records), "shape", SHAPES, normalize)


def box_size_table(records: Iterable[ImageRecord], normalize: bool = False) -> pd.DataFrame:
    """Boxes per size bucket (very_large ... very_small, out) and class; ``normalize``: % of the class's boxes."""
    return _bucket_table(box_frame(records), "size", SIZES, normalize)


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs (0 = same)."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def box_ratio_stats(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """Distribution of the box ratio w/(w+h) per class: count, mean, std and quantiles."""
    box = box_frame(records)
    classes = _classes(box["label"])
    stats = box.groupby("label")["ratio"].describe().reindex(classes)
    stats["count"] = stats["count"].astype(np.int64)
    return stats.round(4)


def distribution_comparison(records: Iterable[ImageRecord]) -> pd.DataFrame:
    """How far pig and cow are apart (KS distance, 0 = same distribution, 1 = disjoint) on box ratio, box area
    and boxes per image; the write-up found the ratios similar and the counts very different."""
    recs = list(records)
    img, box = image_frame(recs), box_frame(recs)
    pig_b, cow_b = box[box["label"] == "pig"], box[box["label"] == "cow"]
    pig_i, cow_i = img[img["label"] == "pig"], img[img["label"] == "cow"]
    rows = [
        ("box ratio w/(w+h)", pig_b["ratio"].median(), cow_b["ratio"].median(),
         ks_distance(pig_b["ratio"], cow_b["ratio"])),
        ("box area (px^2)", pig_b["area"].median(), cow_b["area"].median(), ks_distance(pig_b["area"], cow_b["area"])),
        ("boxes per image", pig_i["n_boxes"].median(), cow_i["n_boxes"].median(),
         ks_distance(pig_i["n_boxes"], cow_i["n_boxes"])),
    ]
    out = pd.DataFrame(rows, columns=["quantity", "pig_median", "cow_median", "ks_distance"]).set_index("quantity")
    return out.round(4)


# ---------------------------------------------------------------- plots


def _figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _bar_by_class(ax, table: pd.DataFrame, ylabel: str, title: str) -> None:
    """Grouped bars: one group per column of ``table``, one bar per class (row)."""
    x = np.arange(len(table.columns))
    width = 0.8 / max(len(table.index), 1)
    for i, label in enumerate(table.index):
        vals = table.loc[label].to_numpy(dtype=np.float64)
        bars = ax.bar(x + (i - (len(table.index) - 1) / 2) * width, vals, width, label=label,
                      color=CLASS_COLORS.get(label))
        ax.bar_label(bars, fmt="%g", fontsize=8)
    ax.set_xticks(x, [str(c) for c in table.columns])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()


def plot_images_per_class(records: Iterable[ImageRecord]) -> "Figure":
    """Bars of the images per class."""
    table = images_per_class(records)
    fig, (ax,) = _figure(width=4.5)
    bars = ax.bar(table.index, table["images"], color=[CLASS_COLORS.get(c) for c in table.index])
    ax.bar_label(bars)
    ax.set_ylabel("images")
    ax.set_title("Images per class")
    return fig


def plot_image_sizes(records: Iterable[ImageRecord]) -> "Figure":
    """Bars of the images per frame size, one per class."""
    fig, (ax,) = _figure()
    _bar_by_class(ax, image_sizes(records).T, "images", "Image sizes per class")
    return fig


def plot_box_count_histograms(records: Iterable[ImageRecord]) -> "Figure":
    """Boxes per image, one panel per class, the original's bins of width 1.1."""
    recs = list(records)
    classes = _classes(r.label for r in recs)
    fig, axes = _figure(ncols=max(len(classes), 1))
    for ax, label in zip(axes, classes):
        table = box_count_histogram(recs, label)
        bars = ax.bar(np.arange(len(table)), table["images"], color=CLASS_COLORS.get(label))
        ax.bar_label(bars, fontsize=8)
        ax.set_xticks(np.arange(len(table)), table["counts"], rotation=45 if len(table) > 12 else 0)
        ax.set_xlabel("boxes per image (bins of width 1.1)")
        ax.set_ylabel("images")
        ax.set_title(f"{label}: boxes per image")
    return fig


def plot_box_count_groups(records: Iterable[ImageRecord]) -> "Figure":
    """Bars of the images per box-count group, one per class."""
    table = box_count_groups(records)[list(COUNT_GROUPS)]
    fig, (ax,) = _figure()
    _bar_by_class(ax, table, "images", "Box-count groups (cow 4 / 6, pig 8 / 13)")
    return fig


def plot_box_shapes(records: Iterable[ImageRecord]) -> "Figure":
    """Bars of each class's share of boxes per shape bucket."""
    fig, (ax,) = _figure()
    _bar_by_class(ax, box_shape_table(records, normalize=True), "% of the class's boxes", "Box shape")
    return fig


def plot_box_sizes(records: Iterable[ImageRecord]) -> "Figure":
    """Bars of each class's share of boxes per size bucket."""
    fig, (ax,) = _figure(width=7.5)
    _bar_by_class(ax, box_size_table(records, normalize=True), "% of the class's boxes", "Box size (area in px^2)")
    return fig


def plot_box_ratio_comparison(records: Iterable[ImageRecord]) -> "Figure":
    """Box ratio w/(w+h), pig against cow: densities with the shape bucket lines, and empirical CDFs."""
    box = box_frame(records)
    fig, (ax_hist, ax_cdf) = _figure(ncols=2)
    bins = np.linspace(0, 1, 41)
    for label in _classes(box["label"]):
        r = np.sort(box.loc[box["label"] == label, "ratio"].dropna().to_numpy())
        ax_hist.hist(r, bins=bins, density=True, histtype="step", linewidth=2, label=label,
                     color=CLASS_COLORS.get(label))
        ax_cdf.plot(r, np.arange(1, len(r) + 1) / max(len(r), 1), label=label, color=CLASS_COLORS.get(label))
    for ax in (ax_hist, ax_cdf):
        for x in (1 - SHAPE_THRESHOLD, SHAPE_THRESHOLD):
            ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("w / (w + h)   (< 0.4 vertical, >= 0.6 horizontal)")
        ax.legend()
    ax_hist.set_ylabel("density")
    ax_hist.set_title("Box ratio per class")
    ax_cdf.set_ylabel("share of boxes")
    ax_cdf.set_title("Box ratio, cumulative")
    return fig


def plot_box_areas(records: Iterable[ImageRecord], max_area: float = SMALL_BOX_AREA) -> "Figure":
    """Box areas on a log scale per class, with the small-box line and the size bucket bounds."""
    box = box_frame(records)
    fig, (ax,) = _figure(width=7.5)
    positive = box.loc[box["area"] > 0, "area"]
    lo = max(float(positive.min()) if len(positive) else 1.0, 1.0)
    hi = max(float(positive.max()) if len(positive) else 10.0, lo * 10)
    bins = np.logspace(np.log10(lo), np.log10(hi), 50)
    for label in _classes(box["label"]):
        a = box.loc[(box["label"] == label) & (box["area"] > 0), "area"]
        ax.hist(a, bins=bins, histtype="step", linewidth=2, label=label, color=CLASS_COLORS.get(label))
    for name, bound in SIZE_BOUNDS:
        ax.axvline(bound, color="grey", linestyle=":", linewidth=1)
    ax.axvline(max_area, color="red", linestyle="--", linewidth=1, label=f"{max_area:,.0f} px^2")
    ax.set_xscale("log")
    ax.set_xlabel("box area (px^2)")
    ax.set_ylabel("boxes")
    ax.set_title("Box areas")
    ax.legend()
    return fig


def _thumbnail(path: str, max_side: int) -> np.ndarray | None:
    """The image as RGB, shrunk to about ``max_side`` (JPEG draft mode decodes at 1/2..1/8 directly)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (max_side, max_side))
            im = im.convert("RGB")
            im.thumbnail((max_side, max_side))
            return np.asarray(im)
    except (FileNotFoundError, OSError):
        return None


def plot_sample_frames(records: Iterable[ImageRecord], n_per_class: int = 3, seed: int = 0,
                       max_side: int = 640) -> "Figure | None":
    """A few random frames per class with their boxes drawn (the way missing cow labels were found).
    Images that cannot be read are passed over; None when no image of any class can be read."""
    from matplotlib.patches import Rectangle

    recs = list(records)
    rng = np.random.default_rng(seed)
    chosen: list[tuple[ImageRecord, np.ndarray]] = []
    for label in _classes(r.label for r in recs):
        pool = [r for r in recs if r.label == label]
        picked = 0
        for i in rng.permutation(len(pool)):
            if picked == n_per_class:
                break
            thumb = _thumbnail(pool[i].image_path, max_side)
            if thumb is not None:
                chosen.append((pool[i], thumb))
                picked += 1
    if not chosen:
        return None
    ncols = min(n_per_class, len(chosen))
    nrows = int(np.ceil(len(chosen) / ncols))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (r, thumb) in zip(axes, chosen):
        sx, sy = thumb.shape[1] / r.width, thumb.shape[0] / r.height
        ax.imshow(thumb)
        for x1, y1, x2, y2 in r.boxes:
            ax.add_patch(Rectangle((x1 * sx, y1 * sy), (x2 - x1) * sx, (y2 - y1) * sy, fill=False,
                                   edgecolor="yellow" if r.label == "cow" else "cyan", linewidth=1.2))
        ax.set_title(f"{r.image_id} ({r.label}, {r.n_boxes} boxes)", fontsize=8)
    return fig


# ---------------------------------------------------------------- run


def compute_tables(records: Sequence[ImageRecord]) -> dict[str, pd.DataFrame]:
    """Every EDA table, by name (the CSV file names of :func:`run_eda`)."""
    tables = {
        "summary": summary_table(records),
        "images_per_class": images_per_class(records),
        "image_sizes": image_sizes(records),
        "empty_images": empty_images(records),
        "small_boxes": small_boxes(records),
        "box_count_groups": box_count_groups(records),
        "box_shapes": box_shape_table(records),
        "box_shapes_pct": box_shape_table(records, normalize=True),
        "box_sizes": box_size_table(records),
        "box_sizes_pct": box_size_table(records, normalize=True),
        "box_ratio_stats": box_ratio_stats(records),
        "distribution_comparison": distribution_comparison(records),
    }
    for label in _classes(r.label for r in records):
        tables[f"box_count_histogram_{label}"] = box_count_histogram(records, label)
    return tables


def compute_figures(records: Sequence[ImageRecord], samples: int = 3, seed: int = 0) -> dict[str, "Figure"]:
    """Every EDA plot, by name (the PNG file names of :func:`run_eda`); ``samples`` frames per class
    (0: none; also left out when no image file can be read)."""
    figures = {
        "images_per_class": plot_images_per_class(records),
        "image_sizes": plot_image_sizes(records),
        "box_count_histograms": plot_box_count_histograms(records),
        "box_count_groups": plot_box_count_groups(records),
        "box_shapes": plot_box_shapes(records),
        "box_sizes": plot_box_sizes(records),
        "box_areas": plot_box_areas(records),
        "box_ratio_comparison": plot_box_ratio_comparison(records),
    }
    if samples > 0:
        frames = plot_sample_frames(records, n_per_class=samples, seed=seed)
        if frames is not None:
            figures["sample_frames"] = frames
    return figures


def run_eda(prepared_dir: str | os.PathLike, out_dir: str | os.PathLike, samples: int = 3,
            seed: int = 0) -> dict:
    """All tables and plots of a prepared folder, saved as ``out_dir/<name>.csv`` and ``out_dir/<name>.png``
    (each written atomically; re-running overwrites them).

    Returns ``{"records": n_images, "tables": {name: DataFrame}, "figures": {name: Figure}, "files": [Path]}``."""
    from tqdm.auto import tqdm

    records = load_prepared_records(prepared_dir)
    out_dir = Path(out_dir)
    tables = compute_tables(records)
    figures = compute_figures(records, samples=samples, seed=seed)
    files: list[Path] = []
    for name, table in tables.items():
        # tables indexed by a label / bucket keep that column; plain row numbers are dropped
        keep_index = not isinstance(table.index, pd.RangeIndex)
        files.append(atomic_write_csv(table, out_dir / f"{name}.csv", index=keep_index))
    for name, fig in tqdm(figures.items(), desc="plots", unit="png", mininterval=0.5, leave=False):
        files.append(atomic_write_figure(fig, out_dir / f"{name}.png"))
    return {"records": len(records), "tables": tables, "figures": figures, "files": files}


# ---------------------------------------------------------------- CLI


def cli_eda_args(parser: argparse.ArgumentParser) -> None:
    """The ``livestock eda`` options."""
    parser.add_argument("prepared_dir", nargs="?", default=str(paths.PREPARED_DIR),
                        help="prepared dataset folder with records.jsonl and images/ (default: %(default)s)")
    parser.add_argument("--out", default=str(paths.RUNS_DIR / "eda"), help="output folder (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=3, help="sample frames per class to draw (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="which sample frames are drawn")


def cli_eda(args: argparse.Namespace) -> int:
    """``livestock eda``: write every table and plot and print the two main tables."""
    if args.samples < 0:
        raise ValueError(f"--samples {args.samples}: must be 0 (no sample frames) or more")
    result = run_eda(args.prepared_dir, args.out, samples=args.samples, seed=args.seed)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(result["tables"]["summary"].to_string())
        print()
        print(result["tables"]["box_count_groups"].to_string())
    print(f"\n{result['records']} images: wrote {len(result['tables'])} tables and {len(result['figures'])} plots "
          f"to {args.out}")
    return 0
