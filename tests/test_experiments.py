"""Comparisons over seeds (livestock.experiments): resumable cells scored by the final score's path, mean ± sd, and
the engine comparison at toy size."""
from __future__ import annotations

import json
import math

import pandas as pd
import yaml
import pytest

from livestock.data.yolo_format import prepare_dataset
from livestock.evaluation.detect import detect
from livestock.evaluation.inference import score_detections
from livestock.experiments import runner
from livestock.experiments.engines import compare_engines, parse_models
from livestock.model.engine import get_engine
from livestock.experiments.runner import TrainingCell, format_mean_sd, gold_test_set, mean_sd, run_cells

TOY_CELL = dict(imgsz=64, epochs=1, batch_size=8, device="cpu", workers=0)


def test_mean_sd_over_seeds():
    rows = pd.DataFrame({"name": ["a", "a", "a", "b"], "seed": [0, 1, 2, 0], "m": [0.1, 0.2, 0.6, 0.5],
                         "label": ["x", "y", "z", "w"]})
    table = mean_sd(rows)
    assert table["name"].tolist() == ["a", "b"] and table["seeds"].tolist() == [3, 1]
    assert table.loc[0, "m"] == pytest.approx(0.3) and table.loc[0, "m_sd"] == pytest.approx(math.sqrt(0.07))
    assert math.isnan(table.loc[1, "m_sd"]) and "label" not in table
    md = format_mean_sd(table, {"m": ("mAP", ".2f")})
    assert md.splitlines()[2] == "| a | 3 | 0.30 ± 0.26 |" and md.splitlines()[3] == "| b | 1 | 0.50 |"
    # a signed format (a difference from a reference) signs the mean only
    assert format_mean_sd(table, {"m": ("gain", "+.2f")}).splitlines()[2] == "| a | 3 | +0.30 ± 0.26 |"


def test_models_are_engine_colon_model():
    assert parse_models("yolov5:yolov5n, ultralytics:yolo26n") == [("yolov5", "yolov5n"), ("ultralytics", "yolo26n")]
    with pytest.raises(ValueError, match="engine:model"):
        parse_models("yolo11n")


@pytest.fixture(scope="module")
def toy_sets(synth_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    train = prepare_dataset(synth_data.train_dir, root / "prepared", progress=False)
    return train.data_yaml, gold_test_set(synth_data.test_dir, root / "prepared_test", synth_data.answer_csv), root


def test_a_test_set_needs_truth_written_for_its_images(synth_data, tmp_path):
    other = tmp_path / "answer.csv"
    other.write_bytes(synth_data.answer_csv.read_bytes())  # the same rows, but no record of which images
    with pytest.raises(ValueError, match="cannot score the comparison: .*has no record"):
        gold_test_set(synth_data.test_dir, tmp_path / "prepared_test", other)


def test_a_cell_is_keyed_by_what_its_result_depends_on(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("train: images/train\nval: images/val\nnames: [cow, pig]\n")
    cell = TrainingCell.of("base", data_yaml, seed=2, imgsz=320, epochs=30, batch_size=16, device="cpu", workers=2)
    key = cell.settings()
    # The names every stored comparison result is keyed by (results made before the cell held a TrainSettings
    # carry exactly these, and must still be found done): a cell with default settings adds none.
    assert set(key) == {"name", "data_yaml", "seed", "engine", "model", "weights", "hyp", "imgsz", "epochs", "batch",
                        "hyp_values", "data_sha256", "weights_sha256"}
    assert (key["seed"], key["batch"], key["model"], key["weights"], cell.key) == (2, 16, "yolov5n", None,
                                                                                   "base-seed2")
    # speed and bookkeeping do not change the key; a setting that changes the result does, the loader workers too
    same = TrainingCell.of("base", data_yaml, seed=2, imgsz=320, epochs=30, batch_size=16, device="auto",
                           cache="ram", verbose=True)
    assert same.settings() == key
    one_worker = TrainingCell.of("base", data_yaml, seed=2, imgsz=320, epochs=30, batch_size=16, workers=1)
    assert one_worker.settings() == {**key, "workers": 1}
    other = TrainingCell.of("base", data_yaml, seed=2, imgsz=320, epochs=30, batch_size=16, optimizer="AdamW",
                            options={"freeze": [10]})
    assert other.settings() == {**key, "optimizer": "AdamW", "options": {"freeze": [10]}}


@pytest.mark.slow
def test_cells_score_the_test_set_and_are_not_trained_twice(toy_sets, monkeypatch):
    data_yaml, test, root = toy_sets
    cells = [TrainingCell.of("scratch", data_yaml, seed=s, **TOY_CELL) for s in (0, 1)]
    lines: list[str] = []
    rows = run_cells(cells, test, root / "cells", say=lines.append)
    assert rows["cell"].tolist() == ["scratch-seed0", "scratch-seed1"] and rows["epochs_run"].tolist() == [1, 1]
    assert test.name == "synthetic test set" and (rows["train_s"] > 0).all()
    for _, row in rows.iterrows():  # the score is the final score's path: detect at the setting, contest metric
        direct = score_detections(detect(row["best"], list(test.records), imgsz=64, conf=runner.TEST_CONF,
                                         iou=runner.TEST_IOU, device="cpu", progress=False), test.answer)
        assert row["test_mAP@0.75"] == direct["mAP@0.75"] and row["test_mAP@0.5"] == direct["mAP@0.5"]
    # the seeds differ: different trainings (the checkpoints' bytes would differ anyway: they hold a date)
    assert _train_losses(root / "cells/scratch-seed0") != _train_losses(root / "cells/scratch-seed1")
    # the same cell trained again repeats its losses exactly: a result depends only on what its key holds (that the
    # loader-worker count is among them was measured outside the suite: a toy cell trained with a loader worker
    # inside a pytest-xdist worker was followed by that worker dying, twice, so the suite does not train one)
    run_cells([TrainingCell.of("scratch", data_yaml, seed=0, **TOY_CELL)], test, root / "cells_again", say=lines.append)
    assert _train_losses(root / "cells_again/scratch-seed0") == _train_losses(root / "cells/scratch-seed0")

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("livestock.model.yolov5.train", no_training)
    again = run_cells(cells, test, root / "cells", say=lines.append)
    pd.testing.assert_frame_equal(again, rows)
    assert sum("done already" in ln for ln in lines) == 2
    # other settings in the same folder: refused, naming the folder and the difference, nothing overwritten
    (root / "cells/scratch-seed0/result.json").unlink()
    with pytest.raises(ValueError, match=r"scratch-seed0: holds a comparison cell with other settings .*'epochs': "
                                         r"\(1, 2\)"):
        run_cells([TrainingCell.of("scratch", data_yaml, seed=0, **{**TOY_CELL, "epochs": 2})], test,
                  root / "cells", say=lines.append)
    record = json.loads((root / "cells/scratch-seed0/record.json").read_text())
    assert record["settings"]["epochs"] == 1


def _train_losses(cell_folder) -> list[float]:
    """A cell's training losses, epoch by epoch (YOLOv5's results.csv pads its column names with spaces)."""
    table = pd.read_csv(cell_folder / "train" / "results.csv", skipinitialspace=True)
    return table[[c for c in table.columns if c.strip().startswith("train/")]].to_numpy().ravel().tolist()


@pytest.mark.slow
def test_engine_comparison_at_toy_size(toy_sets):
    data_yaml, test, root = toy_sets
    models = parse_models("yolov5:yolov5n,ultralytics:yolo11n,ultralytics:yolo26n")
    rows, table = compare_engines(data_yaml, test, root / "engines", models=models, seeds=(0, 1), epochs=1, imgsz=64,
                                  batch=8, workers=0, runs=2, repeats=1, say=lambda _: None)
    assert rows["name"].tolist() == ["yolov5n", "yolo11n", "yolo26n"] * 2 and rows["seed"].tolist() == [0] * 3 + [1] * 3
    assert table["name"].tolist() == ["yolov5n", "yolo11n", "yolo26n"] and (table["seeds"] == 2).all()
    for _, row in rows.iterrows():
        int8 = next((root / "engines" / row["cell"] / "export").glob("*_int8.onnx"))
        direct = score_detections(detect(int8, list(test.records), imgsz=64, conf=runner.TEST_CONF,
                                         iou=runner.TEST_IOU, device="cpu", progress=False), test.answer)
        assert row["int8_test_mAP@0.75"] == direct["mAP@0.75"]
        assert row["int8_loss_mAP@0.75"] == pytest.approx(row["test_mAP@0.75"] - direct["mAP@0.75"])
        assert row["onnx-int8_mb"] < row["onnx_mb"]
    # one latency per architecture, the same for both seeds
    for fmt in ("pytorch_ms", "onnx_ms", "onnx-int8_ms"):
        assert (rows[fmt] > 0).all() and rows.groupby("name")[fmt].nunique().eq(1).all()
    assert rows.groupby("name")["parameters"].nunique().eq(1).all()
    assert table.set_index("name").loc["yolo11n", "parameters"] > table.set_index("name").loc["yolov5n", "parameters"]
    md = (root / "engines" / "table.md").read_text()
    assert md.startswith("| name | seeds | test mAP@0.75 | test mAP@0.5 | training (min) |") and "yolo26n" in md


@pytest.mark.slow
def test_compare_hyps_on_the_validation_split_is_the_search_fitness(toy_sets, tmp_path, capsys):
    from livestock.cli import main as cli_main
    from livestock.evaluation.inference import split_map

    data_yaml, _, _ = toy_sets
    hyp = tmp_path / "low_lr.yaml"
    hyp.write_text(yaml.safe_dump({**get_engine("yolov5").load_hyp("hyp_scratch_cpu"), "lr0": 0.001}))
    out = tmp_path / "hyps"
    rc = cli_main(["compare", "hyps", "--data", str(data_yaml), "--hyps", f"base=,low={hyp}", "--seeds", "0",
                   "--epochs", "1", "--imgsz", "64", "--batch", "8", "--workers", "0", "--score-on", "val",
                   "--weights", "auto", "--out", str(out)])
    assert rc == 0
    # no pretrained file at 64 px: `auto` trains from scratch, and says so before any cell runs
    assert "start weights: from scratch (auto: no pretrained weights" in capsys.readouterr().out.splitlines()[0]
    rows = pd.read_csv(out / "rows.csv")
    assert rows["cell"].tolist() == ["base-seed0", "low-seed0"]
    settings = [json.loads((out / c / "result.json").read_text())["settings"] for c in rows["cell"]]
    assert [s["hyp_values"]["lr0"] for s in settings] == [0.01, 0.001]
    for _, row in rows.iterrows():  # the search's fitness of the same weights: contest mAP on the val split
        assert row["test_mAP@0.75"] == pytest.approx(split_map(row["best"], data_yaml, imgsz=64, device="cpu"))
    printed = (out / "table.md").read_text(encoding="utf-8")
    assert "| name | seeds | mAP@0.75 |" in printed and "validation split of" in printed


def test_named_items_are_checked():
    from livestock.experiments.compare import named_items

    assert named_items("a=x, b=", "hyps") == {"a": "x", "b": ""}
    for bad, match in (("a", "write name=value"), ("a=x,a=y", "given twice"), ("", "nothing to compare")):
        with pytest.raises(ValueError, match=match):
            named_items(bad, "hyps")


@pytest.mark.parametrize("seeds", ["", "a,b", "0,-1"])
def test_seeds_that_are_no_seeds_are_refused_before_any_cell(tmp_path, capsys, seeds):
    from livestock.cli import main as cli_main

    (tmp_path / "data.yaml").write_text("train: x\nval: x\nnames: [pig, cow]\n")
    argv = ["compare", "hyps", "--hyps", "a=", "--data", str(tmp_path / "data.yaml"), "--seeds", seeds,
            "--out", str(tmp_path / "cmp")]
    assert cli_main(argv) == 1
    assert f"--seeds {seeds!r}: comma-separated" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("experiment, items, message", [
    ("hyps", "a=hyp_scratch_cpu,b=nope.yaml", "nope.yaml: hyp file not found"),
    ("starts", "a=,b=nope.pt", "nope.pt: start weights of 'b' not found"),
    ("sets", "a=DATA,b=nope.yaml", "nope.yaml"),
])
def test_every_item_is_checked_before_the_first_cell(tmp_path, capsys, experiment, items, message):
    from livestock.cli import main as cli_main
    from toy_yolo import make_toy_yolo_dataset

    data = make_toy_yolo_dataset(tmp_path / "toy", n_train=4, n_val=2)
    argv = ["compare", experiment, f"--{experiment}", items.replace("DATA", str(data)), "--data", str(data),
            "--score-on", "val", "--out", str(tmp_path / "cmp")]
    assert cli_main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cmp" / "rows.csv").exists() and not list(tmp_path.glob("cmp/*-seed*"))


@pytest.mark.slow
def test_sampler_comparison_at_toy_size(toy_sets, tmp_path):
    from livestock.experiments.samplers import compare_samplers

    data_yaml, test, _ = toy_sets
    out = tmp_path / "samplers"
    curves, table = compare_samplers(data_yaml, data_yaml, test, out, samplers=("ga", "random"), seeds=(0,), trials=2,
                                     epochs=1, retrain_epochs=1, imgsz=64, batch=8, workers=0, say=lambda _: None)
    assert curves[["sampler", "trials"]].values.tolist() == [["ga", 1], ["ga", 2], ["random", 1], ["random", 2]]
    for sampler in ("ga", "random"):
        trials = pd.read_csv(out / f"{sampler}-seed0" / "trials.csv")
        best = curves[curves["sampler"] == sampler]["best"].tolist()
        assert best == [trials["fitness"][0], max(trials["fitness"])]  # best so far
    # every sampler's first trial is the base hyp itself (the GA's by its rules, the others' enqueued), so the
    # samplers start from the same measurement; random search draws its own from trial 1 on
    ga, rnd = (pd.read_csv(out / f"{s}-seed0" / "trials.csv") for s in ("ga", "random"))
    for first in (ga.loc[0], rnd.loc[0]):
        assert first["lr0"] == pytest.approx(0.01) and first["momentum"] == pytest.approx(0.937)
    assert rnd.loc[1, "lr0"] != pytest.approx(0.01)
    rows = pd.read_csv(out / "rows.csv")
    assert rows["cell"].tolist() == ["ga-seed0", "random-seed0"] and rows["best_after_2"].tolist() == [
        curves.iloc[1]["best"], curves.iloc[3]["best"]]
    # the GA is the reference: every other sampler's scores also as differences from it at the same seed
    for c in ("best_after_2", "test_mAP@0.75"):
        assert pd.isna(rows[f"{c}_minus_ga"][0]) and rows[f"{c}_minus_ga"][1] == pytest.approx(rows[c][1] - rows[c][0])
    retrained = json.loads((out / "retrain" / "ga-seed0" / "result.json").read_text())["settings"]["hyp_values"]
    assert retrained["lr0"] == pytest.approx(ga.loc[ga["fitness"].idxmax(), "lr0"])
    md = (out / "table.md").read_text()
    assert (out / "best_after.png").stat().st_size > 0 and "| re-trained: test mAP@0.75 |" in md
    assert "| best val mAP@0.75 after 2 trials |" in md
    assert "| re-trained: test mAP@0.75, minus ga (paired by seed) |" in md
    assert table["name"].tolist() == ["ga", "random"]
