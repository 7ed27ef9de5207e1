"""Data_Checking, Data_Augmentation and YOLOv5_ExpandDataset_hp_tune executed headless with papermill on a tiny
synthetic set (small frames, a model trained for a moment): outputs exist and the tables reach the notebook."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from livestock.fileio import read_csv
from notebook_runner import REPO, execute_notebook

NOTEBOOKS = ["EDA/Data_Checking.ipynb", "EDA/Data_Augmentation.ipynb", "train/YOLOv5_ExpandDataset_hp_tune.ipynb"]
TINY = {"IMGSZ": 64, "DEVICE": "cpu", "CACHE_DIR": ""}


@pytest.fixture(scope="module")
def work(tmp_path_factory, request) -> Path:
    """data/ (synthetic zips + truth), data/prepared, data/prepared_test, data/splits, data_test/answer.csv and
    a tiny model's weights at trained_model/tiny.pt, laid out as in the repository. The model is the suite's
    shared ``tiny_trained_model`` when there is one, else a YOLOv5n trained here for one epoch (its quality does
    not matter: these tests check that the notebooks run and show their tables)."""
    from livestock.data.split import make_all_splits
    from livestock.data.synth import generate_synthetic_dataset
    from livestock.data.yolo_format import prepare_dataset

    root = tmp_path_factory.mktemp("nb_silver")
    generate_synthetic_dataset(root / "data", root / "data_test", train_counts={"cow": 24, "pig": 6},
                               test_counts={"cow": 4, "pig": 2}, seed=3, missing_cow_rate=0.3, image_scale=0.125,
                               progress=False)
    prepare_dataset(root / "data", root / "data" / "prepared", progress=False)
    prepare_dataset(root / "data_test", root / "data" / "prepared_test", images_only=True, progress=False)
    make_all_splits(root / "data" / "prepared", root / "data" / "splits")
    try:
        weights, _ = request.getfixturevalue("tiny_trained_model")
    except pytest.FixtureLookupError:
        from livestock.model.yolov5.training import train

        weights = train(root / "data/splits/multilabel/data.yaml", model="yolov5n", hyp="hyp_scratch_cpu",
                        imgsz=64, epochs=1, batch_size=8, device="cpu", workers=0, project=root / "runs/train",
                        name="tiny", exist_ok=True, plots=False).best
    (root / "trained_model").mkdir()
    (root / "trained_model" / "tiny.pt").write_bytes(Path(weights).read_bytes())
    return root


def _execute(notebook: str, work: Path, monkeypatch, **parameters) -> dict:
    return execute_notebook(notebook, work / "executed" / Path(notebook).name, {"ROOT": str(work), **parameters},
                            work, monkeypatch)


def _text_outputs(nb: dict) -> str:
    found = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                found.append("".join(o["text"]))
            for kind in ("text/plain", "text/html"):
                if kind in o.get("data", {}):
                    found.append("".join(o["data"][kind]))
    return "\n".join(found)


def _n_images(nb: dict) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def test_notebooks_are_clean():
    for name in NOTEBOOKS:
        nb = json.loads((REPO / name).read_text())
        assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), name
        assert code[0]["metadata"].get("tags") == ["parameters"], name
        params = "".join(code[0]["source"])
        for p in ("ROOT", "IMGSZ", "DEVICE", "MOUNT_DRIVE"):
            assert f"\n{p} = " in f"\n{params}", (name, p)
        # only the training notebook builds a model; the others read it from the weights
        assert ("\nMODEL = " in f"\n{params}") == name.startswith("train/"), name
        assert "'google.colab' in sys.modules" in "".join(code[1]["source"]).replace('"', "'"), name


@pytest.mark.slow
def test_data_checking_notebook(work, monkeypatch):
    nb = _execute("EDA/Data_Checking.ipynb", work, monkeypatch, WEIGHTS="trained_model/tiny.pt",
                  OUT_DIR="runs/analysis", MISSING_CONF=0.0, **TINY)
    out = work / "runs" / "analysis"
    for name in ("per_class.csv", "boxes_per_image.csv", "missing_ranked.csv", "missing_finder_score.csv"):
        assert (out / name).is_file(), name
    for name in ("boxes_per_image.png", "overlays.png", "missing_thumbnails.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    table = pd.read_csv(out / "per_class.csv")
    assert list(table["class"]) == ["pig", "cow", "all"]
    text = _text_outputs(nb)
    assert "mAP@0.75" in text and "mAP@0.5:0.95" in text  # the per-class table is shown
    assert "n_candidates" in text and "precision" in text  # the ranked list and the finder's score
    assert _n_images(nb) >= 3


@pytest.mark.slow
def test_data_augmentation_and_expand_notebooks(work, monkeypatch):
    nb = _execute("EDA/Data_Augmentation.ipynb", work, monkeypatch, WEIGHTS="trained_model/tiny.pt",
                  OUT_DIR="data/silver", MIN_BOXES=1, CONF=0.001, N_BACKGROUNDS=2, BACKGROUND_SOURCE="render",
                  **TINY)
    silver_dir = work / "data" / "silver"
    quality = pd.read_csv(silver_dir / "silver_quality.csv")
    assert list(quality["mode"]) == ["replace", "union"]
    assert (quality["left_out"] > 0).all()
    val_ids = {Path(p).name for p in (work / "data/splits/multilabel/val.txt").read_text().split()}
    for mode in ("replace", "union"):
        data = yaml.safe_load((silver_dir / mode / "data.yaml").read_text())
        assert Path(data["val"]) == (work / "data/splits/multilabel/val.txt").resolve()
        manifest = pd.read_csv(silver_dir / mode / "manifest.csv", keep_default_na=False)
        assert (manifest["kind"] == "background").sum() == 2
        assert not set(manifest["source_image_id"]) & val_ids  # nothing from validation enters training
    text = _text_outputs(nb)
    assert "recover_share" in text and "wrong_share" in text  # the quality table is shown
    assert "background" in text
    assert _n_images(nb) >= 1  # the gold vs silver examples

    nb = _execute("train/YOLOv5_ExpandDataset_hp_tune.ipynb", work, monkeypatch, MODEL="yolov5n", EPOCHS=1,
                  BATCH=8, WORKERS=0, OUT_DIR="runs/expand", IMGSZ=64, DEVICE="cpu")
    results = read_csv(work / "runs" / "expand" / "expand_results.csv")  # exact: scores compared bit for bit
    assert list(results["set"]) == ["gold", "gold+silver (replace)", "gold+silver (union)"]
    assert (results["epochs"] == 1).all()
    # each set's test score is its weights' score by the final score's path, against the test truth
    from livestock.evaluation.detect import detect
    from livestock.evaluation.inference import score_detections
    from livestock.records import load_records

    test_images = load_records(work / "data/prepared_test/records.jsonl")
    for _, row in results.iterrows():
        direct = score_detections(detect(row["weights"], test_images, imgsz=64, conf=0.001, iou=0.68, device="cpu",
                                         progress=False), work / "data_test/answer.csv")
        assert row["test_mAP@0.75"] == direct["mAP@0.75"] and row["test_mAP@0.5"] == direct["mAP@0.5"]
    # replace adds silver copies; union relabels in place (plus 2 background frames each)
    n_gold = results.loc[0, "train_images"]
    assert results.loc[2, "train_images"] == n_gold + 2
    assert results.loc[1, "train_images"] > n_gold + 2
    text = _text_outputs(nb)
    assert "test_mAP@0.75" in text and "vs gold only" in text


def test_gold_set_holds_backgrounds_and_no_silver(work, tmp_path):
    """``--mode gold``: every gold training image once plus the background frames, no silver box (what background
    frames do alone); the silver quality files measure the silver sets only; without frames it is refused."""
    from livestock.evaluation import silver

    split = work / "data/splits/multilabel"
    kw = dict(prepared_dir=work / "data/prepared", split_dir=split, imgsz=64, device="cpu", cache_dir=None)
    with pytest.raises(ValueError, match="'gold' set is gold plus background frames: give n_backgrounds >= 1"):
        silver.build_silver_sets(work / "trained_model/tiny.pt", out_dir=tmp_path / "never", modes=("gold",), **kw)
    written = silver.build_silver_sets(work / "trained_model/tiny.pt", out_dir=tmp_path / "sets",
                                       modes=("gold", "union"), n_backgrounds=3, **kw)
    manifest = pd.read_csv(tmp_path / "sets/gold/manifest.csv", keep_default_na=False)
    train_ids = sorted(Path(p).name for p in (split / "train.txt").read_text().split())
    assert sorted(manifest.loc[manifest["kind"] == "gold", "image_id"]) == train_ids
    assert set(manifest["kind"]) == {"gold", "background"} and (manifest["kind"] == "background").sum() == 3
    gold_lines = Path(yaml.safe_load(written["gold"].read_text())["train"]).read_text().split()
    assert len(gold_lines) == len(train_ids) + 3
    assert set(pd.read_csv(written["quality"])["mode"]) == {"union"}
