"""Provenance: derived files know which inputs they were made from, and ground truth scores only its own images.

The synthetic and the real set share their file names, so the cases here drop *other* zips of the same names over a
set (another seed of the generator, or a user's zip) and check that nothing made from the old zips, and no truth
written for them, is used for the new ones."""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from aihub_builders import cow_name, tiny_jpeg, write_basic_set, write_zip
from livestock import paths, provenance
from livestock.cli import main as cli_main
from livestock.data.eda import load_prepared_records
from livestock.data.split import make_all_splits, split_records
from livestock.data.synth import generate_synthetic_dataset
from livestock.data.yolo_format import prepare_dataset, prepared_from
from livestock.evaluation.analysis import default_truth_csv
from livestock.provenance import StaleError

# Small and quick: frames an eighth of the real size, plain grey pixels. Pigs have no training image, so their test
# numbers are 1, 2, ... for every seed: another seed's test zips hold images of the very same names.
SMALL = dict(train_counts={"cow": 8, "pig": 4}, test_counts={"cow": 3, "pig": 2}, image_scale=0.125,
             labels_only=True, progress=False)


def _generate(root: Path, seed: int, **kw) -> tuple[Path, Path]:
    generate_synthetic_dataset(root / "data", root / "data_test", seed=seed, **{**SMALL, **kw})
    return root / "data", root / "data_test"


def _members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as z:
        return {Path(i.filename).name: z.read(i) for i in z.infolist() if not i.is_dir()}


def _drop_zips(src: Path, dest: Path, names) -> None:
    """Copy zips over others, as a user does (a new file: new time), leaving the destination's other files alone."""
    for name in names:
        shutil.copyfile(src / name, dest / name)


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_changes_with_size_or_mtime_and_only_then(tmp_path):
    data = tmp_path / "data"
    write_basic_set(data)
    first = provenance.input_fingerprint(data)
    assert provenance.input_fingerprint(data) == first  # nothing changed
    zip_path = data / "[원천]소_bbox.zip"
    st = zip_path.stat()

    os.utime(zip_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same bytes, touched
    assert provenance.input_fingerprint(data) != first
    os.utime(zip_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert provenance.input_fingerprint(data) == first  # back as it was: same fingerprint

    with open(zip_path, "ab") as f:  # one byte more, time put back: the size tells
        f.write(b"\0")
    os.utime(zip_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert provenance.input_fingerprint(data) != first

    # the generic form: a folder is walked recursively, names relative to its parent
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "x.jpg").write_bytes(b"12")
    before = provenance.fingerprint([tree])
    assert provenance.fingerprint([tree]) == before
    (tree / "a" / "b" / "x.jpg").write_bytes(b"123")
    assert provenance.fingerprint([tree]) != before
    with pytest.raises(FileNotFoundError, match="nowhere"):
        provenance.fingerprint([tmp_path / "nowhere"])


def test_extracted_folder_fingerprint_ignores_outputs_and_records_inside_it(tmp_path):
    data = tmp_path / "data"
    (data / "소").mkdir(parents=True)
    (data / "소" / cow_name(1, "jpg")).write_bytes(tiny_jpeg())
    (data / "소" / cow_name(1, "json")).write_bytes(b"{}")
    first = provenance.input_fingerprint(data)
    # a prepared set inside the data folder (it holds a record), a truth file's record, notes: not data
    (data / "prepared" / "images").mkdir(parents=True)
    (data / "prepared" / "images" / cow_name(9, "jpg")).write_bytes(tiny_jpeg())
    provenance.write_record(data / "prepared", inputs=first, dataset="user", made_by="livestock prepare", data=data)
    (data / "notes.txt").write_text("mine")
    (data / "answer.csv.source.json").write_text("{}")
    assert provenance.input_fingerprint(data) == first
    (data / "소" / cow_name(2, "jpg")).write_bytes(tiny_jpeg())  # a new image is data
    assert provenance.input_fingerprint(data) != first


# ---------------------------------------------------------------- the synthetic marker


def test_synthetic_zips_and_truth_carry_their_marker(tmp_path):
    data, test = _generate(tmp_path, seed=0)
    for folder, names in ((data, paths.TRAIN_ZIPS.values()), (test, paths.TEST_ZIPS.values())):
        assert all(provenance.is_synthetic_zip(folder / n) for n in names)
        assert provenance.dataset_kind(folder) == "synthetic"
    for truth, folder in ((data / paths.SYNTH_TRUTH.name, data), (test / paths.TEST_ANSWER.name, test)):
        record = json.loads((truth.parent / (truth.name + ".source.json")).read_text())
        assert record["dataset"] == "synthetic" and record["made_by"] == "livestock synth" and record["seed"] == 0
        assert record["inputs"] == provenance.input_fingerprint(folder)  # the zips as written, nothing else
        found = provenance.ground_truth_for(truth, folder)
        assert found and found.path == truth and found.dataset == "synthetic"
    assert provenance.ground_truth_for(test / "answer.csv", test).set_name() == "synthetic test set"

    user = tmp_path / "user"
    write_basic_set(user)
    assert not any(provenance.is_synthetic_zip(z) for z in user.glob("*.zip"))
    assert provenance.dataset_kind(user) == "user"


def test_generator_never_overwrites_a_users_zip(tmp_path, capsys):
    data, test = tmp_path / "data", tmp_path / "data_test"
    test.mkdir()
    users = write_zip(test / paths.TEST_ZIPS["cow"], {f"소/{cow_name(1, 'jpg')}": tiny_jpeg()})
    before, stamp = users.read_bytes(), users.stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"data_test/\[원천\]소_bbox\.zip: not written by `livestock synth`"):
        generate_synthetic_dataset(data, test, seed=0, **SMALL)
    assert users.read_bytes() == before and users.stat().st_mtime_ns == stamp  # byte-identical, untouched
    assert sorted(p.name for p in test.iterdir()) == [users.name] and not data.exists()  # nothing else written

    rc = cli_main(["synth", "--out", str(data), "--test-out", str(test), "--n-train", "4", "--n-test", "2",
                   "--image-scale", "0.1", "--labels-only", "--quiet"])
    assert rc == 1 and "not written by `livestock synth`" in capsys.readouterr().err
    assert users.read_bytes() == before

    # a user's own answer file is as safe as a zip; the generator's own files it replaces freely
    users.unlink()
    _generate(tmp_path, seed=0)
    _generate(tmp_path, seed=1)  # its own set: overwritten
    (test / "answer.csv.source.json").unlink()  # now an answer file of unknown origin
    with pytest.raises(ValueError, match="answer.csv: not written by"):
        _generate(tmp_path, seed=2)


def test_pipeline_synth_stage_leaves_user_test_zips_alone(tmp_path):
    from livestock.pipeline import PipelineConfig, run_pipeline

    test = tmp_path / "data_test"
    test.mkdir()
    users = write_zip(test / paths.TEST_ZIPS["pig"], {"돼지/frame_1.jpg": tiny_jpeg()})
    before = users.read_bytes()
    with pytest.raises(ValueError, match=r"돼지_bbox\.zip: not written by `livestock synth`.*training zips"):
        run_pipeline(PipelineConfig(n_train=8, n_test=2), workdir=tmp_path, only=["synth"])
    assert users.read_bytes() == before


# ---------------------------------------------------------------- ground truth for other images


def test_ground_truth_is_refused_for_other_images(tmp_path):
    data, test = _generate(tmp_path / "a", seed=0)
    other_data, other_test = _generate(tmp_path / "b", seed=1)
    answer = test / "answer.csv"
    assert provenance.ground_truth_for(answer, test)

    _drop_zips(other_test, test, paths.TEST_ZIPS.values())  # same names, other images; answer.csv stays
    found = provenance.ground_truth_for(answer, test)
    assert not found and found.path is None
    assert "written for other images" in found.reason and "answer.csv" in found.reason

    # a zip touched after the truth was written: not provably the same images any more
    data_found = provenance.ground_truth_for(data / "synth_truth.csv", data)
    assert data_found
    zip_path = data / paths.TRAIN_ZIPS[("cow", "images")]
    st = zip_path.stat()
    os.utime(zip_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert not provenance.ground_truth_for(data / "synth_truth.csv", data)

    # truth without a record, or no truth at all: nothing to score against
    (other_test / "answer.csv.source.json").unlink()
    assert "no record" in provenance.ground_truth_for(other_test / "answer.csv", other_test).reason
    assert "not found" in provenance.ground_truth_for(tmp_path / "none.csv", other_test).reason


def test_a_user_can_record_their_own_ground_truth(tmp_path, capsys):
    data = tmp_path / "data_test"
    write_basic_set(data)
    answer = tmp_path / "my_answer.csv"
    answer.write_text("ImageID,LabelName,XMin,XMax,YMin,YMax\nlivestock_pig_bbox_000001.jpg,pig,0,1,0,1\n")
    assert "`livestock truth` records it" in provenance.ground_truth_for(answer, data).reason
    assert cli_main(["truth", str(answer), "--for", str(data)]) == 0
    found = provenance.ground_truth_for(answer, data)
    assert found and found.dataset == "user" and found.set_name() == "your test set"
    record = (tmp_path / "my_answer.csv.source.json").read_text()
    assert cli_main(["truth", str(tmp_path / "none.csv"), "--for", str(data)]) == 1
    assert "none.csv: truth file not found" in capsys.readouterr().err
    # what is no ground truth, or describes nothing, is refused and leaves the record as it was
    (tmp_path / "empty").mkdir()
    header_only, semicolons = tmp_path / "header.csv", tmp_path / "semicolons.csv"
    header_only.write_text("ImageID,LabelName,XMin,XMax,YMin,YMax\n")
    semicolons.write_text("ImageID;LabelName;XMin;XMax;YMin;YMax\nlivestock_pig_bbox_000001.jpg;pig;0;1;0;1\n")
    for truth, folder, expected in ((header_only, data, "header.csv: no boxes"), (semicolons, data, "semicolons.csv"),
                                    (answer, tmp_path / "empty", "empty: no zips or extracted files")):
        assert cli_main(["truth", str(truth), "--for", str(folder)]) == 1
        assert expected in capsys.readouterr().err
    assert (tmp_path / "my_answer.csv.source.json").read_text() == record


def test_a_score_names_its_data_set_and_none_is_left_for_other_images(tmp_path):
    from livestock.evaluation import inference

    _, test = _generate(tmp_path / "a", seed=0)
    _, other_test = _generate(tmp_path / "b", seed=1)
    answer = test / "answer.csv"
    submission = tmp_path / "submission.csv"
    pd.read_csv(answer).assign(Conf=0.9)[["ImageID", "LabelName", "Conf", "XMin", "XMax", "YMin", "YMax"]].to_csv(
        submission, index=False)
    out = tmp_path / "score.json"
    result = inference.score_if_truth(provenance.ground_truth_for(answer, test), submission, out, conf=0.1)
    assert result["test_set"] == "synthetic test set" and result["map_75"] == pytest.approx(1.0)
    assert json.loads(out.read_text())["dataset"] == "synthetic"

    _drop_zips(other_test, test, paths.TEST_ZIPS.values())
    assert inference.score_if_truth(provenance.ground_truth_for(answer, test), submission, out) is None
    assert not out.exists()  # the score of the old images is gone, not left to pass for one of these


# ---------------------------------------------------------------- derived files of other inputs


def test_prepare_records_its_inputs_and_rebuilds_on_other_ones(tmp_path):
    _, test = _generate(tmp_path, seed=0)
    out = tmp_path / "prepared_test"
    prepare_dataset(test, out, images_only=True, progress=False)
    record = json.loads((out / "source.json").read_text())
    assert record["inputs"] == provenance.input_fingerprint(test) and record["dataset"] == "synthetic"
    assert record["made_by"] == "livestock prepare" and record["images_only"] is True
    assert record["data"] == "../data_test"
    assert prepared_from(test, out, images_only=True) and not prepared_from(test, out, images_only=False)

    # Other images of the same names and the same byte sizes (a byte of each JPEG's pixel data changed): only the
    # fingerprint can tell, and every image must be extracted again.
    for name in paths.TEST_ZIPS.values():
        members = _members(test / name)
        changed = {n: b[:-10] + bytes([b[-10] ^ 0xFF]) + b[-9:] for n, b in members.items()}
        folder = "소_bbox" if "소" in name else "돼지_bbox"
        write_zip(test / name, {f"{folder}/{n}": b for n, b in changed.items()})
    assert not prepared_from(test, out, images_only=True)
    with pytest.raises(StaleError, match=r"prepared_test: made by `livestock prepare` from other data.*prepare stage"):
        load_prepared_records(out)
    res = prepare_dataset(test, out, images_only=True, progress=False)
    expected = {n: b for z in paths.TEST_ZIPS.values() for n, b in _members(test / z).items()}
    assert {r.image_id: Path(r.image_path).read_bytes() for r in res.records} == expected
    assert json.loads((out / "source.json").read_text())["dataset"] == "user"  # no longer the generator's zips
    assert prepared_from(test, out, images_only=True)


def test_a_prepared_set_stays_usable_once_its_zips_are_deleted(tmp_path):
    _, test = _generate(tmp_path, seed=0)
    out = tmp_path / "prepared_test"
    prepare_dataset(test, out, images_only=True, progress=False)
    for name in paths.TEST_ZIPS.values():
        (test / name).unlink()  # to save space: nothing newer replaces them
    assert prepared_from(test, out, images_only=True) and len(load_prepared_records(out)) == 5
    assert provenance.ground_truth_for(test / "answer.csv", out)


def test_stages_refuse_splits_and_truth_of_other_training_zips(tmp_path, capsys):
    data, _ = _generate(tmp_path / "work", seed=0)
    other_data, _ = _generate(tmp_path / "other", seed=1)
    prepared, splits = data / "prepared", data / "splits"
    prepare_dataset(data, prepared, progress=False)
    make_all_splits(prepared, splits)
    split_record = json.loads((splits / "multilabel" / "source.json").read_text())
    assert split_record["inputs"] == provenance.input_fingerprint(data) and split_record["made_by"] == "livestock split"
    assert len(split_records(prepared, splits / "multilabel")) > 0
    assert default_truth_csv(prepared) == data / "synth_truth.csv"  # the truth of these very zips
    # an evolution folder with a finished trial and its best hyp, made on these zips
    evolution = tmp_path / "evolve" / "mini"
    provenance.continue_folder(evolution, splits / "mini" / "data.yaml", "livestock search", marker="trials.csv")
    (evolution / "trials.csv").write_text("number,fitness\n0,0.1\n")
    shutil.copyfile(Path(__file__).resolve().parents[1] / "hyp" / "hyp_scratch_cpu.yaml", evolution / "best_hyp.yaml")

    _drop_zips(other_data, data, paths.TRAIN_ZIPS.values())  # new training zips; the old outputs stay behind
    with pytest.raises(StaleError, match=r"prepared.*other data than .*data holds now; re-run the prepare stage"):
        split_records(prepared, splits / "multilabel")
    with pytest.raises(StaleError, match=r"multilabel.*\(and .*prepared, made before it\).*prepare stage"):
        provenance.require_current(splits / "multilabel" / "data.yaml")

    prepare_dataset(data, prepared, progress=False)  # prepared again, the splits not yet
    with pytest.raises(StaleError, match=r"multilabel: made by `livestock split`.*--from split_multilabel"):
        split_records(prepared, splits / "multilabel")
    from livestock.model.evolve import evolve

    with pytest.raises(StaleError, match=r"mini/data\.yaml: made by `livestock split`"):
        evolve(splits / "mini" / "data.yaml", generations=1, epochs=1, project=tmp_path / "evolve",
               objective=lambda *a, **k: pytest.fail("must not train on a stale split"))
    rc = cli_main(["analyze", "--weights", str(tmp_path / "w.pt"), "--prepared", str(prepared),
                   "--split", str(splits / "multilabel"), "--out", str(tmp_path / "analysis")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "split_multilabel" in err

    # The training truth was written for the old zips: never used for the new ones, and refused when asked for.
    assert default_truth_csv(prepared) is None
    with pytest.raises(ValueError, match="synth_truth.csv was written for other images"):
        default_truth_csv(prepared, data / "synth_truth.csv")

    make_all_splits(prepared, splits)
    assert len(split_records(prepared, splits / "multilabel")) > 0
    assert provenance.require_current(prepared, splits / "mini" / "data.yaml")["dataset"] == "synthetic"

    # The evolved hyp of the old zips: training refuses it, and the evolution folder is never continued.
    from livestock.model.search import run_search, training_objective
    from livestock.model.yolov5.training import train

    with pytest.raises(StaleError, match=r"best_hyp\.yaml: made by `livestock search`.*evolve stage.*new evolution"):
        train(splits / "multilabel" / "data.yaml", hyp=evolution / "best_hyp.yaml", epochs=1, imgsz=64,
              project=tmp_path / "runs")
    with pytest.raises(StaleError, match=r"mini: holds work on other data than .*mini/data\.yaml now describes"):
        run_search(training_objective(splits / "mini" / "data.yaml", epochs=1), trials=1, out=evolution,
                   progress=False)
    assert not (tmp_path / "runs").exists()  # nothing was trained


# ---------------------------------------------------------------- end to end: new test zips after a run


def _notebook_text(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    chunks = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            chunks.append("".join(out.get("text", "")))
            chunks.extend("".join(v) for k, v in out.get("data", {}).items() if k == "text/plain")
    return "\n".join(chunks)


@pytest.mark.slow
def test_new_test_zips_after_a_run_are_never_scored_against_the_old_truth(tmp_path, tiny_trained_model, monkeypatch):
    """The main job's stages on a synthetic set; then other test zips of the same names go into data_test/ (as a
    user drops the real ones) and the inference notebook runs again: its answer covers the new images, and no
    score against the old answer.csv appears in the notebook, score.json or the summary."""
    from livestock.pipeline import PipelineConfig, run_pipeline

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    work = tmp_path / "work"
    _generate(work, seed=0, labels_only=False)
    weights, _ = tiny_trained_model
    (work / "trained_model").mkdir()
    shutil.copyfile(weights, work / "trained_model" / "multilabel_best.pt")
    cfg = PipelineConfig(imgsz=64, device="cpu", tune=False, workers=0)
    executed = work / "runs" / "pipeline" / "YOLOv5_inference.ipynb"

    first = run_pipeline(cfg, workdir=work, only=["synth", "prepare", "inference"])
    assert first["score"]["test_set"] == "synthetic test set" and first["score"]["dataset"] == "synthetic"
    assert "synthetic test set (5 images): test mAP@0.75 =" in _notebook_text(executed)
    old_ids = set(pd.read_csv(work / "data_test" / "answer.csv")["ImageID"])

    _, other_test = _generate(tmp_path / "other", seed=1, labels_only=False)
    _drop_zips(other_test, work / "data_test", paths.TEST_ZIPS.values())  # not its answer.csv, nor its record
    new_images = {n: b for z in paths.TEST_ZIPS.values() for n, b in _members(work / "data_test" / z).items()}
    assert old_ids & set(new_images)  # the same names: only provenance tells the sets apart

    second = run_pipeline(cfg, workdir=work, only=["inference"])
    records = load_prepared_records(work / paths.PREPARED_TEST_DIR)
    assert {r.image_id: Path(r.image_path).read_bytes() for r in records} == new_images  # re-prepared, new pixels
    answer = pd.read_csv(work / "answer.csv")
    assert len(answer) and set(answer["ImageID"]) <= set(new_images)
    text = _notebook_text(executed)
    assert "no ground truth for these test images" in text and "written for other images" in text
    assert "mAP@0.75 =" not in text and "test mAP" not in text
    assert not (work / "runs" / "inference" / "score.json").exists()
    assert second["score"] is None and "no ground truth for these test images" in second["score_note"]
    assert json.loads((work / "runs" / "pipeline" / "summary.json").read_text())["score"] is None
