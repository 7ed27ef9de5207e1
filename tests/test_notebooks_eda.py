"""The EDA and Make_Dataset notebooks, executed headless with papermill on a tiny prepared set."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from notebook_runner import REPO, execute_notebook
from synthetic_records import write_tiny_prepared

NOTEBOOKS = ["EDA.ipynb", "Make_Dataset_Multilabel.ipynb", "Make_Dataset_Full.ipynb", "Make_Dataset_Mini.ipynb"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("nb_eda")
    write_tiny_prepared(work / "prep", n_images=30, seed=0)
    return work


def _execute(notebook: str, work: Path, monkeypatch, **parameters) -> dict:
    return execute_notebook(f"EDA/{notebook}", work / "executed" / notebook, parameters, work, monkeypatch)


def _outputs(nb: dict, kind: str) -> list:
    """Every output of the executed code cells with this MIME type (text/plain, image/png) or stream text."""
    found = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if kind == "stream" and o["output_type"] == "stream":
                found.append("".join(o["text"]))
            elif kind in o.get("data", {}):
                found.append(o["data"][kind])
    return found


def test_notebooks_are_clean():
    for name in NOTEBOOKS:
        nb = json.loads((REPO / "EDA" / name).read_text())
        assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), name
        assert code[0]["metadata"].get("tags") == ["parameters"], name


@pytest.mark.slow
def test_eda_notebook(workdir, monkeypatch):
    nb = _execute("EDA.ipynb", workdir, monkeypatch, ROOT=str(workdir), PREPARED_DIR="prep", OUT_DIR="eda_out")
    out = workdir / "eda_out"
    for name in ("images_per_class", "image_sizes", "box_count_histograms", "box_count_groups", "box_shapes",
                 "box_sizes", "box_areas", "box_ratio_comparison", "sample_frames"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert (out / "summary.csv").is_file() and (out / "box_count_histogram_cow.csv").is_file()
    assert len(_outputs(nb, "image/png")) >= 9  # plots shown inline
    tables = "\n".join("".join(t) for t in _outputs(nb, "text/plain"))
    assert "images with no box" in tables and "little" in tables


@pytest.mark.slow
@pytest.mark.parametrize("which", ["multilabel", "full", "mini"])
def test_make_dataset_notebooks(workdir, monkeypatch, which):
    notebook = f"Make_Dataset_{which.capitalize()}.ipynb"
    splits = workdir / "splits"
    nb = _execute(notebook, workdir, monkeypatch, ROOT=str(workdir), PREPARED_DIR=str(workdir / "prep"),
                  SPLITS_DIR="splits")
    set_dir = splits / which
    for name in ("train.txt", "val.txt", "manifest.csv"):
        assert (set_dir / name).is_file(), name
    data = yaml.safe_load((set_dir / "data.yaml").read_text())
    assert data["train"] == str((set_dir / "train.txt").resolve()) and data["names"] == ["pig", "cow"]
    train = (set_dir / "train.txt").read_text().split()
    assert all(Path(p).is_file() for p in train)  # absolute paths of the prepared images
    printed = "\n".join(_outputs(nb, "stream"))
    assert "little" in printed and "medium" in printed and "many" in printed and "images" in printed
    assert "train" in printed and "val" in printed
    if which == "full":
        assert len(train) == 30
