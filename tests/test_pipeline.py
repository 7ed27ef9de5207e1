"""The main job end to end on a tiny synthetic set: every notebook it runs executes headless, the executed
copies keep their outputs, the terminal shows each stage's progress with the time left, the answer file it leaves
passes the submission validator and its score is the contest metric's, and ``--from`` / ``--only`` run exactly the
stages they name."""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import fields, replace
from pathlib import Path

import nbformat
import pytest
import torch

from livestock import paths
from livestock.cli import main as cli_main
from livestock.evaluation.inference import score_answer
from livestock.evaluation.submission import validate_submission
from livestock.pipeline import GROUPS, PipelineConfig, cli_pipeline_args, repo_root, run_notebook, run_pipeline

TINY = PipelineConfig(n_train=48, n_test=12, imgsz=128, batch=16, evolve_trials=2, evolve_epochs=1, epochs=3,
                      workers=0)
ETA = r"\| job ~(\d+s|\d+m|\d+h\d\dm) left"


def _outputs_text(nb_path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", ""))
            chunks.extend(str(v) for k, v in out.get("data", {}).items() if k == "text/plain")
    return "\n".join(chunks)


def _has_image(nb_path) -> bool:
    nb = nbformat.read(nb_path, as_version=4)
    return any("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


def _fingerprint(path: Path) -> tuple[str, int]:
    """(sha256 of the bytes, mtime in ns): a file that was rewritten, even with the same bytes, changes it."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _printed_score(log: str) -> float:
    found = re.findall(r"^\[pipeline\] synthetic test set: mAP@0\.75 = (\S+) ", log, flags=re.M)
    assert len(found) == 1, log
    return float(found[0])


def _recomputed_score(work: Path) -> dict:
    """The contest metric of the answer file on disk: mAP@0.75, @0.5, @0.5:0.95 and per class (predictions too)."""
    result = score_answer(work / paths.TEST_ANSWER, work / "answer.csv")
    return {k: result[k] for k in ("map_75", "map_50", "map_50_95", "per_class")}


def _score_part(score: dict) -> dict:
    return {k: score[k] for k in ("map_75", "map_50", "map_50_95", "per_class")}


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    summary = run_pipeline(TINY, workdir=work)
    return work, summary, (work / "runs/pipeline/log.txt").read_text()


@pytest.mark.slow
def test_pipeline_runs_every_stage_and_leaves_a_valid_scored_answer(tiny_pipeline):
    work, summary, log = tiny_pipeline
    assert list(summary["timings_s"]) == ["synth", "prepare", "eda", "split_multilabel", "split_full", "split_mini",
                                          "evolve", "train", "analysis", "silver", "inference"]
    answer = work / "answer.csv"
    frame = validate_submission(answer, answer=work / paths.TEST_ANSWER, unknown_images="warn")
    assert len(frame) > 0
    # The score the job reports is the contest metric of the answer file it wrote, to the last bit, wherever it
    # is reported: the summary it returns, summary.json, the score file and the terminal. A few epochs at 128 px
    # may leave every AP at 0, so the per-class prediction counts of this very answer file are compared too.
    recomputed = _recomputed_score(work)
    assert sum(c["n_predictions"] for c in recomputed["per_class"].values()) == len(frame)
    assert _score_part(summary["score"]) == recomputed
    written = json.loads((work / "runs/pipeline/summary.json").read_text())
    assert _score_part(written["score"]) == recomputed
    assert _score_part(json.loads((work / "runs/inference/score.json").read_text())) == recomputed
    assert _printed_score(log) == recomputed["map_75"]
    # and says which machine made it, down to the instruction set its kernels used
    machine = written["machine"]
    assert machine["device"] == "cpu" and machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["torch_threads"] == torch.get_num_threads()


@pytest.mark.slow
def test_pipeline_prints_every_epoch_and_the_time_left(tiny_pipeline):
    _, _, log = tiny_pipeline
    for n in range(1, TINY.epochs + 1):
        line = (rf"^\[pipeline\] train  epoch {n}/{TINY.epochs}  loss \d+\.\d{{4}}  val mAP@0\.5 \d\.\d{{3}}  "
                rf"mAP@0\.5:0\.95 \d\.\d{{3}}  {ETA}$")
        assert len(re.findall(line, log, flags=re.M)) == 1, (n, log)
    for n in range(1, TINY.evolve_trials + 1):  # each trial's epochs, and the trial with its fitness
        assert re.search(rf"^\[pipeline\] evolve  trial {n}/{TINY.evolve_trials}  epoch 1/1  loss ", log, flags=re.M)
        assert re.search(rf"^\[pipeline\] evolve  trial {n}/{TINY.evolve_trials} done \(#\d+\)  fitness \d\.\d{{5}}  "
                         rf"best \d\.\d{{5}}  {ETA}$", log, flags=re.M), log
    assert re.search(rf"^\[pipeline\] analysis  detect \(val\): \d+/\d+ images  {ETA}$", log, flags=re.M)
    # every stage says when it starts and ends, with the estimate, and the job its total time
    for name in ("synth", "eda", "train", "inference"):
        assert re.search(rf"^\[pipeline\] {name} \.\.\. \(stage \d+/11; job ~\S+ left\)$", log, flags=re.M), name
        assert re.search(rf"^\[pipeline\] {name} done in \d+ s  {ETA}$", log, flags=re.M), name
    assert re.search(r"^\[pipeline\] finished in (\d+ s|\d+m \d\ds)$", log, flags=re.M)


@pytest.mark.slow
def test_pipeline_keeps_executed_notebooks_with_their_outputs(tiny_pipeline):
    work, _, _ = tiny_pipeline
    executed = work / "runs/pipeline"
    assert _has_image(executed / "EDA/EDA.ipynb")
    assert "little" in _outputs_text(executed / "EDA/Make_Dataset_Multilabel.ipynb")
    evolve_text = _outputs_text(executed / "exp/YOLOv5_hyp_evolution.ipynb")
    assert "best hyp" in evolve_text and "lr0" in evolve_text
    # two trials are too few to rank the keys: the notebook says so instead of showing made-up importances
    assert "parameter importances need 4 complete trials, the study has 2" in evolve_text
    assert _has_image(executed / "exp/YOLOv5_hyp_evolution.ipynb")
    assert (work / "runs/evolve/mini/best_hyp.yaml").is_file()
    assert "mAP@0.5" in _outputs_text(executed / "train/YOLOv5_MultiLabelSplit.ipynb")
    inference_text = _outputs_text(executed / "YOLOv5_inference.ipynb")
    assert "inference setting: conf" in inference_text and "test mAP@0.75" in inference_text
    assert (work / "runs/tune/multilabel/heatmap.png").is_file()
    assert "mAP@0.75" in _outputs_text(executed / "EDA/Data_Checking.ipynb")
    assert (work / "runs/analysis/per_class.csv").is_file()
    assert "recover_share" in _outputs_text(executed / "EDA/Data_Augmentation.ipynb")
    for mode in ("replace", "union"):
        assert (work / "data/silver" / mode / "data.yaml").is_file()


@pytest.mark.slow
def test_from_a_stage_reruns_it_and_every_later_one_and_nothing_before(tiny_pipeline):
    work, _, _ = tiny_pipeline
    executed = work / "runs/pipeline"
    earlier = [work / "data/prepared/records.jsonl", executed / "EDA/EDA.ipynb",
               work / "runs/evolve/mini/best_hyp.yaml", work / "trained_model/multilabel_best.pt",
               executed / "EDA/Data_Checking.ipynb", work / "data/silver/union/manifest.csv",
               executed / "EDA/Data_Augmentation.ipynb"]
    later = [executed / "YOLOv5_inference.ipynb", work / "answer.csv", work / "runs/inference/score.json"]
    before = {p: _fingerprint(p) for p in earlier + later}
    notebook_before = (executed / "YOLOv5_inference.ipynb").read_bytes()

    summary = run_pipeline(TINY, workdir=work, start_from="inference")

    assert summary["stages"] == ["inference"]
    for p in earlier:
        assert _fingerprint(p) == before[p], f"{p} was rewritten by a stage before --from"
    for p in later:
        assert _fingerprint(p)[1] > before[p][1], f"{p} was not rewritten by --from inference"
    assert (executed / "YOLOv5_inference.ipynb").read_bytes() != notebook_before  # new outputs, execution times
    log = (executed / "log.txt").read_text()
    recomputed = _recomputed_score(work)
    assert _score_part(summary["score"]) == recomputed and _printed_score(log) == recomputed["map_75"]


@pytest.mark.slow
def test_only_runs_exactly_the_named_stage_and_reports_no_stale_score(tiny_pipeline, capsys):
    work, _, _ = tiny_pipeline
    executed = work / "runs/pipeline"
    untouched = [work / "data/prepared/records.jsonl", executed / "EDA/Make_Dataset_Multilabel.ipynb",
                 executed / "YOLOv5_inference.ipynb", work / "answer.csv", work / "runs/inference/score.json"]
    before = {p: _fingerprint(p) for p in untouched}
    eda_before = _fingerprint(executed / "EDA/EDA.ipynb")

    assert cli_main(["pipeline", "--workdir", str(work), "--only", "eda"]) == 0

    summary = json.loads((executed / "summary.json").read_text())
    assert summary["stages"] == ["eda"]
    # runs/inference/score.json is still there from the full run, but it is not this call's result
    assert summary["score"] is None and "did not run" in summary["score_note"]
    assert "[pipeline] no score: the inference stage did not run" in capsys.readouterr().out
    assert _fingerprint(executed / "EDA/EDA.ipynb")[1] > eda_before[1]
    for p in untouched:
        assert _fingerprint(p) == before[p], f"{p} was rewritten by --only eda"


@pytest.mark.slow
def test_full_dataset_notebook_trains_the_final_model(tiny_pipeline, tmp_path):
    work, _, _ = tiny_pipeline
    out = tmp_path / "full.ipynb"
    run_notebook(repo_root() / "train/YOLOv5_FullDataset_hp_tune.ipynb", out, {
        "ROOT": str(work), "IMGSZ": 128, "EPOCHS": 1, "BATCH": 16, "WORKERS": 0, "NAME": "full_test",
        "OUT_WEIGHTS": "trained_model/full_test.pt",
    }, cwd=work)
    assert (work / "trained_model/full_test.pt").is_file()
    text = _outputs_text(out)
    assert "within_limit" in text and "mAP@0.5" in text


def test_unknown_stage_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown stage 'trian'"):
        run_pipeline(TINY, workdir=tmp_path, only=["trian"])
    with pytest.raises(ValueError, match="--expand"):
        run_pipeline(TINY, workdir=tmp_path, only=["expand"])


def test_wbf_without_tta_is_refused_before_any_stage(tmp_path):
    with pytest.raises(ValueError, match="needs TTA on"):
        run_pipeline(replace(TINY, fusion="wbf"), workdir=tmp_path)
    with pytest.raises(ValueError, match="fusion must be one of nms, wbf"):
        run_pipeline(replace(TINY, tta=True, fusion="soft"), workdir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing ran


def test_the_defaults_and_the_originals_settings_pass_the_check():
    from livestock.pipeline import check_config

    check_config(PipelineConfig())
    check_config(PipelineConfig(engine="ultralytics", model="yolo11n"))
    check_config(PipelineConfig(model="yolov5m6", weights="yolov5m6.pt", imgsz=1280, batch=10, epochs=20,
                                evolve_trials=7, evolve_epochs=7, device="cpu"))


def test_a_model_yaml_is_checked_as_training_would_check_it(tmp_path):
    """The same rule as training's (engine_files.check_model): a yaml that exists but describes no architecture is
    refused before any stage, as is a name of neither engine; a shipped name with ``.yaml`` passes."""
    from livestock.pipeline import check_config

    empty = tmp_path / "mine.yaml"
    empty.write_text("nc: 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{empty}: not a model yaml")):
        check_config(PipelineConfig(model=str(empty)))
    with pytest.raises(ValueError, match=re.escape("--model 'yolov5q': not a yolov5 model (yolov5n")):
        check_config(PipelineConfig(model="yolov5q"))
    check_config(PipelineConfig(model="yolov5s.yaml"))
    empty.write_text("backbone: []\nhead: []\n", encoding="utf-8")
    check_config(PipelineConfig(model=str(empty)))


@pytest.mark.parametrize("setting, message", [
    (dict(imgsz=0), "--imgsz 0"), (dict(epochs=0), "--epochs 0"), (dict(evolve_trials=0), "--evolve-trials 0"),
    (dict(device="bogus"), "bogus"), (dict(conf=2.0), "--conf 2.0"), (dict(iou=0.0), "--iou 0.0"),
    (dict(evolve_sampler="bogus"), "--evolve-sampler 'bogus'"), (dict(silver_modes="replace,bogus"), "--silver-modes"),
    (dict(evolve_keys="lr0,bogus"), "unknown hyper-parameter keys ['bogus']"), (dict(model="yolo11n"), "--model"),
    (dict(engine="bogus"), "--engine 'bogus'"), (dict(weights="nope.pt"), "nope.pt: start weights not found"),
])
def test_a_setting_no_stage_can_take_is_refused_before_any_stage(tmp_path, setting, message):
    with pytest.raises(ValueError if "weights" not in setting else FileNotFoundError, match=re.escape(message)):
        run_pipeline(replace(TINY, **setting), workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()  # nothing ran, no folder made


def test_help_explains_every_option_in_its_group():
    parser = argparse.ArgumentParser(prog="livestock pipeline")
    cli_pipeline_args(parser)
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    for group, description in GROUPS.items():
        assert f"{group}: {' '.join(description.split())}" in text
    by_flag = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    for f in fields(PipelineConfig):
        action = by_flag["--" + f.name.replace("_", "-")]
        assert action.help.startswith(f.metadata["help"]) and "%(default)" in action.help, f.name
        group = next(g for g in parser._action_groups if action in g._group_actions)
        assert group.title == f.metadata["group"], f.name
    # the original's settings, where the demo's differ
    assert "(the original: 1280) (default: 320)" in text and "yolo11n ... yolo26x (default: '')" in text
    assert "(the original: 20) (default: 30)" in text and "--only STAGES" in text and "--from STAGE" in text


@pytest.mark.slow
def test_the_second_engine_runs_the_whole_main_job(tmp_path):
    """``--engine ultralytics --model yolo26n``: every stage, from evolution of the engine's own hyp keys to the
    answer file, goes through the engine interface; the end-to-end head's answer is valid and scored."""
    cfg = PipelineConfig(n_train=32, n_test=8, imgsz=96, batch=16, evolve_trials=2, evolve_epochs=1, epochs=2,
                         workers=0, engine="ultralytics", model="yolo26n")
    summary = run_pipeline(cfg, workdir=tmp_path)
    assert list(summary["timings_s"])[-4:] == ["train", "analysis", "silver", "inference"]
    from livestock.model.engine import engine_of_weights

    assert engine_of_weights(tmp_path / "trained_model/multilabel_best.pt") == "ultralytics"
    best_hyp = (tmp_path / "runs/evolve/mini/best_hyp.yaml").read_text()
    assert "dfl:" in best_hyp and "obj_pw" not in best_hyp  # the engine's own hyp space, not YOLOv5's
    frame = validate_submission(tmp_path / "answer.csv", answer=tmp_path / paths.TEST_ANSWER, unknown_images="warn")
    assert len(frame) > 0
    assert _score_part(summary["score"]) == _recomputed_score(tmp_path)
