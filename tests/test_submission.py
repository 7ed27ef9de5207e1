"""Submission writer, detections CSV, validators and the submit / check-submission / score commands."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from livestock import cli
from livestock.evaluation import metrics
from livestock.records import Detections, ImageRecord
from livestock.evaluation.submission import (
    ANSWER_COLUMNS,
    DETECTION_COLUMNS,
    ORIGINAL_NORMALISATION,
    SUBMISSION_COLUMNS,
    SubmissionError,
    detections_to_submission,
    image_class_from_id,
    load_detections,
    order_warnings,
    read_answer,
    records_to_answer,
    save_detections,
    submission_to_detections,
    validate_submission,
    write_submission,
)

REAL_ANSWER = Path(__file__).resolve().parents[2] / "shared/real/contest_answer.csv"


def cow_image() -> Detections:
    # 1920x1080; the second box sticks out of the image on the left and the bottom.
    return Detections("livestock_cow_bbox_000001.jpg", 1920, 1080,
                      boxes=[[100, 100, 400, 300], [-50, 900, 200, 1200], [960, 0, 1920, 540], [2000, 10, 2100, 50]],
                      scores=[0.5, 0.9, 0.5, 0.99], class_ids=[1, 1, 1, 1])


def pig_image() -> Detections:
    return Detections("livestock_pig_bbox_000002.jpg", 1280, 960, boxes=[[0, 0, 640, 480], [640, 480, 1280, 960]],
                      scores=[0.2, 0.7], class_ids=[0, 0])


# ---------------------------------------------------------------- writer


def test_rows_are_clipped_normalised_by_own_size_and_sorted_by_confidence():
    sub = detections_to_submission([cow_image(), pig_image(), Detections("empty.jpg", 640, 480)])
    assert list(sub.columns) == list(SUBMISSION_COLUMNS)
    cow = sub[sub.ImageID == "livestock_cow_bbox_000001.jpg"]
    # the box entirely outside the image (conf 0.99) is dropped; ties (0.5, 0.5) keep their input order
    assert cow.Conf.tolist() == [0.9, 0.5, 0.5]
    assert cow.iloc[0][["XMin", "XMax", "YMin", "YMax"]].tolist() == pytest.approx([0.0, 200 / 1920, 900 / 1080, 1.0])
    assert cow.iloc[1][["XMin", "XMax", "YMin", "YMax"]].tolist() == pytest.approx(
        [100 / 1920, 400 / 1920, 100 / 1080, 300 / 1080])
    assert cow.iloc[2][["XMin", "XMax", "YMin", "YMax"]].tolist() == [0.5, 1.0, 0.0, 0.5]
    pig = sub[sub.ImageID == "livestock_pig_bbox_000002.jpg"]
    assert pig.LabelName.tolist() == ["pig", "pig"] and pig.Conf.tolist() == [0.7, 0.2]
    assert pig.iloc[0][["XMin", "XMax", "YMin", "YMax"]].tolist() == [0.5, 1.0, 0.5, 1.0]
    assert sub.ImageID.tolist()[:3] == ["livestock_cow_bbox_000001.jpg"] * 3  # images in the order given
    assert order_warnings(sub) == []
    validate_submission(sub)  # what the writer produces passes the validator


def test_original_normalisation_divides_by_the_fixed_size_of_the_class():
    pig_1080p = Detections("livestock_pig_bbox_000003.jpg", 1920, 1080, boxes=[[1280, 540, 1920, 1080]], scores=[0.8],
                           class_ids=[0])
    sub = detections_to_submission([pig_1080p, cow_image()], normalise_by=ORIGINAL_NORMALISATION)
    assert sub.iloc[0][["XMin", "XMax", "YMin", "YMax"]].tolist() == [1.0, 1.5, 0.5625, 1.125]
    assert sub[sub.LabelName == "cow"].XMax.max() == 1.0
    assert image_class_from_id("livestock_cow_bbox_000123.jpg") == "cow"
    with pytest.raises(ValueError, match="class"):
        image_class_from_id("frame_0001.jpg")


def test_empty_input_gives_the_columns_and_no_rows():
    sub = detections_to_submission([])
    assert list(sub.columns) == list(SUBMISSION_COLUMNS) and len(sub) == 0


@pytest.mark.parametrize("bad, match", [
    (Detections("a.jpg", 100, 100, [[0, 0, 10, 10]], [1.5], [0]), "confidence"),
    (Detections("a.jpg", 100, 100, [[0, 0, 10, 10]], [0.5], [7]), "class id 7"),
    (Detections("a.jpg", 100, 100, [[10, 0, 0, 10]], [0.5], [0]), "x1 <= x2"),
    (Detections("a.jpg", 100, 100, [[0, 0, np.nan, 10]], [0.5], [0]), "non-finite"),
    (Detections("a.jpg", 0, 100, [[0, 0, 10, 10]], [0.5], [0]), "size"),
])
def test_writer_rejects_bad_detections(bad, match):
    with pytest.raises(ValueError, match=match):
        detections_to_submission([bad])


def test_write_is_atomic_and_replaces_the_old_file(tmp_path):
    out = tmp_path / "sub" / "answer.csv"
    assert write_submission([cow_image()], out) == out
    first = out.read_text()
    write_submission([pig_image()], out)
    assert "livestock_pig_bbox_000002.jpg" in out.read_text() and out.read_text() != first
    with pytest.raises(ValueError):
        write_submission([Detections("a.jpg", 100, 100, [[0, 0, 10, 10]], [0.5], [9])], out)
    assert "livestock_pig_bbox_000002.jpg" in out.read_text()  # a failed write leaves the last good file
    assert [p.name for p in out.parent.iterdir()] == ["answer.csv"]  # no temp files left behind
    back = pd.read_csv(out)
    assert back.XMax.tolist() == [1.0, 0.5]  # written at full precision
    # the temp file's private 0600 mode does not leak into the output: it gets what open() would give
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_round_trip_to_pixel_detections_and_a_perfect_score(tmp_path):
    dets = [cow_image(), pig_image()]
    path = write_submission(dets, tmp_path / "answer.csv")
    frame = validate_submission(path)
    back = submission_to_detections(frame, sizes={d.image_id: (d.width, d.height) for d in dets})
    assert [d.image_id for d in back] == [d.image_id for d in dets]
    clipped = np.array([[0, 900, 200, 1080], [100, 100, 400, 300], [960, 0, 1920, 540]], dtype=float)
    np.testing.assert_allclose(back[0].boxes, clipped, atol=1e-9)
    assert back[0].scores.tolist() == [0.9, 0.5, 0.5] and back[1].class_ids.tolist() == [0, 0]
    normalised = submission_to_detections(frame)
    assert normalised[1].width == 1 and normalised[1].boxes.max() == 1.0
    with pytest.raises(ValueError, match="no image size"):
        submission_to_detections(frame, sizes={})

    # The same boxes as ground truth: the writer's output scores 1.0 with the contest metric.
    records = [ImageRecord(d.image_id, "", d.width, d.height, "cow" if "cow" in d.image_id else "pig",
                           d.boxes) for d in back]
    answer = records_to_answer(records)
    assert list(answer.columns) == list(ANSWER_COLUMNS) and len(answer) == 5
    assert metrics.map_at(answer, frame) == 1.0


# ---------------------------------------------------------------- detections CSV


def test_detections_csv_round_trip_keeps_images_without_detections(tmp_path):
    dets = [cow_image(), Detections("livestock_cow_bbox_000009.jpg", 1920, 1080), pig_image()]
    path = save_detections(dets, tmp_path / "dets.csv")
    table = pd.read_csv(path)
    assert list(table.columns) == list(DETECTION_COLUMNS) and len(table) == 4 + 1 + 2
    back = load_detections(path)
    assert [d.image_id for d in back] == [d.image_id for d in dets]
    for a, b in zip(dets, back):
        assert (a.width, a.height) == (b.width, b.height)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
    assert load_detections(save_detections([], tmp_path / "none.csv")) == []


@pytest.mark.parametrize("line, match", [
    ("a.jpg,100,100,dog,0.5,0,0,10,10", "line 3.*unknown label 'dog'"),
    ("a.jpg,100,100,cow,zz,0,0,10,10", "line 3.*conf is not a finite number"),
    ("a.jpg,100,100,cow,0.5,0,0,,10", "line 3.*x2 is empty"),
    ("a.jpg,100,100,cow,0.5,20,0,10,10", "line 3.*out of order"),
    ("a.jpg,100,-5,cow,0.5,0,0,10,10", "line 3.*height must be a positive integer"),
    ("a.jpg,100,100,,0.5,,,,", "line 3.*conf given on a row without a label"),
    ("a.jpg,200,100,cow,0.5,0,0,10,10", "line 3.*another width/height"),
    ("a.jpg,100,100,cow,0.5,0,0,10", "line 3: 8 fields"),
])
def test_detections_csv_errors_name_file_and_line(tmp_path, line, match):
    path = tmp_path / "dets.csv"
    path.write_text(",".join(DETECTION_COLUMNS) + "\na.jpg,100,100,cow,0.9,1,1,50,50\n" + line + "\n")
    with pytest.raises(ValueError, match=match) as err:
        load_detections(path)
    assert str(path) in str(err.value)


def test_detections_csv_missing_file_and_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_detections(tmp_path / "nope.csv")
    path = tmp_path / "dets.csv"
    path.write_text("image_id,width,height,label,conf,x1,y1,x2\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['y2'\]"):
        load_detections(path)


# ---------------------------------------------------------------- validator

GOOD_ROWS = [
    "livestock_cow_bbox_000001.jpg,cow,0.9,0.1,0.2,0.1,0.3",
    "livestock_cow_bbox_000001.jpg,cow,0.5,0.5,0.6,0.5,0.7",
    "livestock_pig_bbox_000002.jpg,pig,0.8,0.0,1.0,0.0,1.0",
]


def write_csv(tmp_path: Path, rows: list[str], header: str = ",".join(SUBMISSION_COLUMNS), name="sub.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_a_good_submission_is_returned_typed_in_file_order(tmp_path):
    frame = validate_submission(write_csv(tmp_path, GOOD_ROWS))
    assert list(frame.columns) == list(SUBMISSION_COLUMNS) and len(frame) == 3
    assert frame.Conf.tolist() == [0.9, 0.5, 0.8] and frame.XMax.dtype == np.float64
    assert frame.attrs["warnings"] == []
    header_only = validate_submission(write_csv(tmp_path, [], name="empty.csv"))
    assert len(header_only) == 0


@pytest.mark.parametrize("row, match", [
    ("livestock_cow_bbox_000003.jpg,dog,0.9,0.1,0.2,0.1,0.3", "unknown class 'dog'"),
    ("livestock_cow_bbox_000003.jpg,cow,nan,0.1,0.2,0.1,0.3", "Conf is empty or NaN"),
    ("livestock_cow_bbox_000003.jpg,cow,,0.1,0.2,0.1,0.3", "Conf is empty or NaN"),
    ("livestock_cow_bbox_000003.jpg,cow,0.9,abc,0.2,0.1,0.3", "XMin is not a number: 'abc'"),
    ("livestock_cow_bbox_000003.jpg,cow,0.9,0.1,1.2,0.1,0.3", r"XMax = 1.2 is outside \[0, 1\]"),
    ("livestock_cow_bbox_000003.jpg,cow,0.9,-0.1,0.2,0.1,0.3", r"XMin = -0.1 is outside \[0, 1\]"),
    ("livestock_cow_bbox_000003.jpg,cow,1.5,0.1,0.2,0.1,0.3", r"Conf = 1.5 is outside \[0, 1\] \(a confidence\)"),
    ("livestock_cow_bbox_000003.jpg,cow,0.9,0.1,0.2,0.1,inf", r"YMax = inf is outside"),
    ("livestock_cow_bbox_000003.jpg,cow,0.9,0.3,0.2,0.1,0.3", "XMin 0.3 > XMax 0.2"),
    ("livestock_cow_bbox_000003.jpg,cow,0.9,0.1,0.2,0.4,0.3", "YMin 0.4 > YMax 0.3"),
    (",cow,0.9,0.1,0.2,0.1,0.3", "ImageID is empty"),
])
def test_each_problem_names_file_row_and_line(tmp_path, row, match):
    # a blank line before the bad row: the line number counts it, the data row does not
    path = write_csv(tmp_path, GOOD_ROWS + ["", row])
    with pytest.raises(SubmissionError, match=match) as err:
        validate_submission(path)
    message = str(err.value)
    assert message.startswith(f"{path}: invalid submission")
    assert "row 4 (line 6)" in message
    assert isinstance(err.value, ValueError)


def test_structural_errors(tmp_path):
    path = write_csv(tmp_path, GOOD_ROWS, header="ImageID,LabelName,XMin,XMax,YMin,YMax,Score")
    with pytest.raises(SubmissionError, match=r"missing column\(s\) \['Conf'\]"):
        validate_submission(path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SubmissionError, match="empty file"):
        validate_submission(empty)
    ragged = write_csv(tmp_path, GOOD_ROWS + ["a.jpg,cow,0.9"], name="ragged.csv")
    with pytest.raises(SubmissionError, match="line 5: 3 fields where the header has 7"):
        validate_submission(ragged)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        validate_submission(tmp_path / "nope.csv")


def test_many_problems_are_counted_and_the_first_ones_listed(tmp_path):
    rows = [f"img{i}.jpg,cow,0.9,0.5,0.2,0.1,0.3" for i in range(25)]
    with pytest.raises(SubmissionError, match=r"25 problem\(s\)(.|\n)*and 15 more") as err:
        validate_submission(write_csv(tmp_path, rows))
    assert "row 1 (line 2)" in str(err.value) and "row 11 (line 12)" not in str(err.value)


def test_dataframe_input_names_rows(tmp_path):
    frame = pd.read_csv(write_csv(tmp_path, GOOD_ROWS))
    frame.loc[1, "YMax"] = np.nan
    with pytest.raises(SubmissionError, match=r"<submission DataFrame>(.|\n)*row 2: YMax is empty or NaN"):
        validate_submission(frame)
    frame.loc[1, "YMax"] = 0.7
    assert validate_submission(frame).YMax.tolist() == [0.3, 0.7, 1.0]


def test_unknown_images_against_an_answer(tmp_path):
    answer = write_csv(tmp_path, [
        "livestock_cow_bbox_000001.jpg,cow,0.1,0.2,0.1,0.3",
        "livestock_cow_bbox_000004.jpg,cow,0.1,0.2,0.1,0.3",
    ], header=",".join(ANSWER_COLUMNS), name="answer.csv")
    sub = write_csv(tmp_path, GOOD_ROWS)
    with pytest.raises(SubmissionError, match=r"row 3 \(line 4\): ImageID 'livestock_pig_bbox_000002.jpg' is not in"):
        validate_submission(sub, answer)
    frame = validate_submission(sub, answer, unknown_images="warn")
    text = "\n".join(frame.attrs["warnings"])
    assert "1 ImageID(s) are not in the answer file" in text
    assert "1 answer image(s) have no prediction (first: 'livestock_cow_bbox_000004.jpg')" in text
    quiet = validate_submission(sub, answer, unknown_images="ignore")
    assert not any("ImageID(s)" in w for w in quiet.attrs["warnings"])


def test_order_and_extra_column_warnings(tmp_path):
    rows = [GOOD_ROWS[1] + ",x", GOOD_ROWS[0] + ",y", GOOD_ROWS[2] + ",z"]
    frame = validate_submission(write_csv(tmp_path, rows, header=",".join(SUBMISSION_COLUMNS) + ",note"))
    text = "\n".join(frame.attrs["warnings"])
    assert "extra column(s) ['note']" in text
    assert "1 image(s) list boxes out of confidence order (first: 'livestock_cow_bbox_000001.jpg', data row 2)" in text


def test_answer_reader(tmp_path):
    good = write_csv(tmp_path, ["a_cow_1.jpg,cow,0.1,0.2,0.1,0.3", "a_cow_1.jpg,cow,0.1,1.2,0.1,0.3"],
                     header=",".join(ANSWER_COLUMNS), name="answer.csv")
    frame = read_answer(good)
    assert len(frame) == 2 and "1 answer box(es) have coordinates outside [0, 1]" in frame.attrs["warnings"][0]
    bad = write_csv(tmp_path, ["a.jpg,horse,0.1,0.2,0.1,0.3", "a.jpg,cow,0.3,0.2,0.1,0.3"],
                    header=",".join(ANSWER_COLUMNS), name="bad_answer.csv")
    with pytest.raises(SubmissionError, match=r"bad_answer.csv: invalid answer file, 2 problem(.|\n)*row 1 \(line 2\)"
                                              r": unknown class 'horse'(.|\n)*row 2 \(line 3\): XMin 0.3 > XMax 0.2"):
        read_answer(bad)
    # An answer that goes beyond [0, 1] allows submissions in the same convention (with a warning).
    sub = write_csv(tmp_path, ["a_cow_1.jpg,cow,0.9,0.1,1.2,0.1,0.3"])
    assert "outside [0, 1]" in validate_submission(sub, good).attrs["warnings"][0]
    with pytest.raises(SubmissionError, match="outside"):
        validate_submission(sub)


def test_real_answer_file_reads_with_its_convention_noted():
    if not REAL_ANSWER.is_file():
        pytest.skip(f"{REAL_ANSWER} not present")
    frame = read_answer(REAL_ANSWER)
    assert len(frame) == 10647 and frame.ImageID.nunique() == 2057
    assert frame.groupby("LabelName").size().to_dict() == {"cow": 4931, "pig": 5716}
    assert any("outside [0, 1]" in w for w in frame.attrs["warnings"])


# ---------------------------------------------------------------- CLI


def test_cli_submit_check_and_score(tmp_path, capsys):
    dets_csv = save_detections([cow_image(), pig_image()], tmp_path / "dets.csv")
    out = tmp_path / "answer.csv"
    assert cli.main(["submit", "--detections", str(dets_csv), "--out", str(out)]) == 0
    assert "5 rows, 2 images" in capsys.readouterr().out
    assert cli.main(["check-submission", str(out)]) == 0
    assert "valid submission" in capsys.readouterr().out

    # ground truth = the detections themselves: a perfect score
    truth = validate_submission(out).drop(columns="Conf")
    truth_csv = tmp_path / "truth.csv"
    truth.to_csv(truth_csv, index=False)
    assert cli.main(["score", "--answer", str(truth_csv), "--pred", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mAP@0.75: 1.000000" in printed and "mAP@0.5: 1.000000" in printed and "mAP@0.5:0.95: 1.000000" in printed
    assert "cow" in printed and "pig" in printed

    assert cli.main(["score", "--answer", str(truth_csv), "--pred", str(out), "--iou", "0.5"]) == 0
    assert "AP@0.5 " in capsys.readouterr().out

    original = tmp_path / "original.csv"
    assert cli.main(["submit", "--detections", str(dets_csv), "--out", str(original), "--normalise", "original"]) == 0
    assert pd.read_csv(original).XMax.max() == 1.0


def test_cli_rejects_bad_submissions_with_a_clear_error(tmp_path, capsys):
    answer = write_csv(tmp_path, ["livestock_cow_bbox_000001.jpg,cow,0.1,0.2,0.1,0.3"],
                       header=",".join(ANSWER_COLUMNS), name="answer.csv")
    bad = write_csv(tmp_path, ["livestock_cow_bbox_000001.jpg,cow,0.9,0.1,0.2,0.1,3"], name="bad.csv")
    assert cli.main(["score", "--answer", str(answer), "--pred", str(bad)]) == 1
    err = capsys.readouterr()
    assert "mAP" not in err.out
    assert f"livestock score: error: {bad}: invalid submission" in err.err and "row 1 (line 2)" in err.err
    assert cli.main(["check-submission", str(bad)]) == 1
    assert "YMax = 3 is outside" in capsys.readouterr().err

    stranger = write_csv(tmp_path, GOOD_ROWS, name="stranger.csv")
    assert cli.main(["score", "--answer", str(answer), "--pred", str(stranger)]) == 1
    assert "is not in the answer file" in capsys.readouterr().err
    assert cli.main(["score", "--answer", str(answer), "--pred", str(stranger), "--allow-unknown-images"]) == 0
    assert "warning:" in capsys.readouterr().out
    assert cli.main(["check-submission", str(stranger), "--answer", str(answer), "--allow-unknown-images"]) == 0


def test_cli_refuses_files_without_any_box(tmp_path, capsys):
    """submit, check-submission and score share one rule: a file without a single box is a mistake, refused with
    one line naming the file, and submit writes no answer."""
    header = ",".join(DETECTION_COLUMNS)
    out = tmp_path / "answer.csv"
    for name, body, found in (("header_only.csv", "", "no detection rows"),
                              ("no_boxes.csv", "a.jpg,100,100,,,,,,\n", "no box inside any of its 1 image(s)")):
        dets = tmp_path / name
        dets.write_text(header + "\n" + body)
        assert cli.main(["submit", "--detections", str(dets), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"livestock submit: error: {dets}: {found}") and len(err.splitlines()) == 1
        assert not out.exists()

    empty_sub = write_csv(tmp_path, [], name="empty_sub.csv")
    empty_answer = write_csv(tmp_path, [], header=",".join(ANSWER_COLUMNS), name="empty_answer.csv")
    answer = write_csv(tmp_path, ["livestock_cow_bbox_000001.jpg,cow,0.1,0.2,0.1,0.3"],
                       header=",".join(ANSWER_COLUMNS), name="answer.csv")
    good = write_csv(tmp_path, ["livestock_cow_bbox_000001.jpg,cow,0.9,0.1,0.2,0.1,0.3"], name="good.csv")
    for argv, where, found in ((["check-submission", str(empty_sub)], empty_sub, "no submission rows"),
                               (["check-submission", str(empty_sub), "--answer", str(answer)], empty_sub,
                                "no submission rows"),
                               (["score", "--answer", str(answer), "--pred", str(empty_sub)], empty_sub,
                                "no submission rows"),
                               (["score", "--answer", str(empty_answer), "--pred", str(good)], empty_answer,
                                "no answer rows")):
        assert cli.main(argv) == 1
        printed = capsys.readouterr()
        assert printed.err.startswith(f"livestock {argv[0]}: error: {where}: {found}"), printed.err
        assert len(printed.err.splitlines()) == 1 and "mAP" not in printed.out


def test_cli_submit_names_the_detections_file_of_a_bad_confidence(tmp_path, capsys):
    dets = tmp_path / "dets.csv"
    dets.write_text(",".join(DETECTION_COLUMNS) + "\nimg_1.jpg,100,100,cow,1.5,1,1,5,5\n")
    out = tmp_path / "answer.csv"
    assert cli.main(["submit", "--detections", str(dets), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"livestock submit: error: {dets}: invalid detections file" in err
    assert "row 1 (line 2): conf = 1.5 is outside [0, 1]" in err
    assert not out.exists()


@pytest.mark.parametrize("normalise,expected_x2", [("image", 960 / 1920), ("original", 960 / 1280)])
def test_every_answer_writer_takes_the_normalisation(tmp_path, monkeypatch, normalise, expected_x2):
    """The inference stage's writer, the submit command and tuning share one normalisation option: a 1920x1080 pig
    frame's box reaching x = 960 is written as 0.5 (own size) or 0.75 (the real answer's 1280x960 divisor)."""
    from livestock.evaluation import inference

    det = Detections("livestock_pig_bbox_000001.jpg", 1920, 1080, [[0, 0, 960, 540]], [0.9], [0])
    monkeypatch.setattr(inference, "detect", lambda *a, **k: [det])
    frame = inference.write_answer("unused.pt", [], tmp_path / "answer.csv", imgsz=320, conf=0.001, iou=0.68,
                                   normalise=normalise)
    assert frame["XMax"].tolist() == [expected_x2]
    assert pd.read_csv(tmp_path / "answer.csv")["XMax"].tolist() == [expected_x2]
    save_detections([det], tmp_path / "dets.csv")
    assert cli.main(["submit", "--detections", str(tmp_path / "dets.csv"), "--out", str(tmp_path / "sub.csv"),
                     "--normalise", normalise]) == 0
    assert pd.read_csv(tmp_path / "sub.csv")["XMax"].tolist() == [expected_x2]
    with pytest.raises(ValueError, match="normalisation must be one of"):
        inference.write_answer("unused.pt", [], tmp_path / "x.csv", imgsz=320, conf=0.001, iou=0.68, normalise="own")
