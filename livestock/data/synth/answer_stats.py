"""Box statistics of contest answer files, to compare a synthetic test set with the real one."""
from __future__ import annotations

import os

import pandas as pd

from livestock.data.eda import COUNT_GROUPS, count_groups
from livestock.evaluation.submission import read_answer


def undo_pig_overscaling(answer: pd.DataFrame) -> pd.DataFrame:
    """Re-normalise pig rows of images whose coordinates pass 1.01: the original scoring notebook divided
    every pig box by 1280x960, so 1920x1080 pig frames reach x = 1.5 and y = 1.125 in the real answer."""
    out = answer.copy()
    pig = out["LabelName"] == "pig"
    reach = out[pig].groupby("ImageID")[["XMax", "YMax"]].max().max(axis=1)
    wide = out["ImageID"].isin(reach.index[reach > 1.01]) & pig
    out.loc[wide, ["XMin", "XMax"]] *= 1280 / 1920
    out.loc[wide, ["YMin", "YMax"]] *= 960 / 1080
    return out


def answer_statistics(answer_csv: str | os.PathLike, fix_pig_normalisation: bool = True) -> pd.DataFrame:
    """Per-class box statistics of an answer file: images, boxes, boxes per image (mean, box-count group
    shares), normalised box width / height quantiles."""
    df = read_answer(answer_csv)  # validated: a clear line naming the file and row of a bad answer
    if fix_pig_normalisation:
        df = undo_pig_overscaling(df)
    w, h = df["XMax"] - df["XMin"], df["YMax"] - df["YMin"]
    stats = {}
    for label, g in df.groupby("LabelName"):
        per_image = g.groupby("ImageID").size()
        groups = count_groups([label] * len(per_image), per_image.to_numpy())
        s = {"images": float(len(per_image)), "boxes": float(len(g)), "boxes_per_image_mean": float(per_image.mean())}
        s.update({f"share_{name}": float((groups == name).mean()) for name in COUNT_GROUPS})
        for q in (0.05, 0.25, 0.5, 0.75, 0.95):
            s[f"w_q{int(q * 100):02d}"] = float(w[g.index].quantile(q))
            s[f"h_q{int(q * 100):02d}"] = float(h[g.index].quantile(q))
        stats[label] = s
    return pd.DataFrame(stats)


def compare_with_answer(answer_csv_a: str | os.PathLike, answer_csv_b: str | os.PathLike,
                        fix_pig_normalisation: bool = True) -> pd.DataFrame:
    """Side-by-side statistics of two answer files (e.g. a synthetic one and the real one): one row per
    (class, statistic), columns ``a``, ``b`` and ``ratio`` = a / b."""
    a = answer_statistics(answer_csv_a, fix_pig_normalisation).stack()
    b = answer_statistics(answer_csv_b, fix_pig_normalisation).stack()
    out = pd.concat({"a": a, "b": b}, axis=1)
    out.index = out.index.swaplevel(0, 1)
    out.index.names = ["label", "statistic"]
    out = out.sort_index(level=0, sort_remaining=False)
    out["ratio"] = out["a"] / out["b"].where(out["b"] != 0)
    return out
