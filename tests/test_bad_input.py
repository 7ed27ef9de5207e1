"""Bad input gives one line that names the file and the problem, and a non-zero exit, in every command that
loads weights, reads images or reads a CSV."""
from __future__ import annotations

import pytest

from candidate_helpers import write_frames
from livestock.cli import main as cli_main


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_input") / "frames"
    write_frames(folder, n=2)
    return folder


def _one_line_error(capsys, argv: list[str], *expected: str) -> str:
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    # progress bars may precede it on stderr; the error itself is one line
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith(f"livestock {argv[0]}: error:")]
    assert len(errors) == 1, err
    for text in expected:
        assert text in errors[0], err
    return errors[0]


@pytest.mark.parametrize("content,kind", [(b"", "empty"), (b"PK\x03\x04 truncated zip", "truncated"),
                                          (b"not a checkpoint at all", "text")])
def test_unreadable_checkpoint_is_named(tmp_path, frames, capsys, content, kind):
    weights = tmp_path / f"{kind}.pt"
    weights.write_bytes(content)
    for command in (["detect", "--source", str(frames), "--out", str(tmp_path / "d.csv")],
                    ["tune", "--images", str(frames), "--answer", str(tmp_path / "a.csv"),
                     "--out", str(tmp_path / "t")]):
        first = sorted(frames.iterdir())[0].name  # an answer with a box: the checkpoint is the only thing wrong
        (tmp_path / "a.csv").write_text(f"ImageID,LabelName,XMin,XMax,YMin,YMax\n{first},cow,0.1,0.3,0.1,0.3\n")
        _one_line_error(capsys, [command[0], "--weights", str(weights), "--cache-dir", "none", *command[1:]],
                        f"{kind}.pt", "not a readable PyTorch checkpoint")


def test_corrupt_onnx_is_named(tmp_path, frames, capsys):
    weights = tmp_path / "broken.onnx"
    weights.write_bytes(b"\x08\x07\x12\x04junk")
    _one_line_error(capsys, ["detect", "--weights", str(weights), "--source", str(frames), "--cache-dir", "none"],
                    "broken.onnx", "not a valid ONNX model")


def test_detect_on_no_images_fails(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    empty_list = tmp_path / "images.txt"
    empty_list.write_text("\n")
    _one_line_error(capsys, ["detect", "--weights", str(weights), "--source", str(empty_list)],
                    "images.txt", "no images")
    assert not (tmp_path / "runs").exists()


def test_detect_checks_every_listed_image_before_loading_the_model(tmp_path, frames, capsys):
    weights = tmp_path / "w.pt"
    weights.write_text("not a checkpoint")
    listed = tmp_path / "images.txt"
    present = sorted(frames.iterdir())[0]
    listed.write_text(f"{present}\n{tmp_path / 'gone.jpg'}\n{tmp_path / 'gone2.jpg'}\n")
    line = _one_line_error(capsys, ["detect", "--weights", str(weights), "--source", str(listed), "--cache-dir", "none",
                                    "--out", str(tmp_path / "d.csv")],
                           f"{listed}: names a missing image {tmp_path / 'gone.jpg'} (and 1 more)")
    assert "w.pt" not in line
    assert not (tmp_path / "d.csv").exists()


def test_tune_on_a_missing_source_says_not_found(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    _one_line_error(capsys, ["tune", "--weights", str(weights), "--images", str(tmp_path / "nope")],
                    "nope", "not found")


def test_score_names_a_non_utf8_file(tmp_path, capsys):
    answer = tmp_path / "answer.csv"
    answer.write_text("ImageID,LabelName,XMin,XMax,YMin,YMax\nx.jpg,pig,0.1,0.2,0.1,0.2\n")
    pred = tmp_path / "pred.csv"
    pred.write_bytes("ImageID,LabelName,Conf,XMin,XMax,YMin,YMax\nx.jpg,돼지,0.9,0.1,0.2,0.1,0.2\n".encode("cp949"))
    _one_line_error(capsys, ["score", "--answer", str(answer), "--pred", str(pred)], "pred.csv", "not a UTF-8")


def test_an_output_path_under_a_file_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    _one_line_error(capsys, ["synth", "--out", "afile/data", "--test-out", "afile/data_test", "--n-train", "4",
                             "--n-test", "2"], "afile/data: Not a directory")


def test_tune_checks_its_grid_and_answer_before_loading_the_model(tmp_path, frames, capsys):
    """The model here is not even readable: each error below comes first, before any detection."""
    weights = tmp_path / "w.pt"
    weights.write_text("not a checkpoint")
    answer = tmp_path / "a.csv"
    answer.write_text("ImageID,LabelName,XMin,XMax,YMin,YMax\n")
    base = ["tune", "--weights", str(weights), "--images", str(frames), "--out", str(tmp_path / "t"),
            "--cache-dir", "none"]
    _one_line_error(capsys, [*base, "--answer", str(tmp_path / "nope.csv")], "nope.csv")
    _one_line_error(capsys, [*base, "--answer", str(answer), "--confs", "2"], "conf=2.0")
    _one_line_error(capsys, [*base, "--answer", str(answer), "--metric-iou", "0"], "metric IoU 0.0")
    # a header-only answer: every setting would score 0, and the table would look like a result
    _one_line_error(capsys, [*base, "--answer", str(answer)], f"{answer}: no answer rows")
    assert not (tmp_path / "t").exists()


def test_detect_and_analyze_check_their_settings_before_loading_the_model(tmp_path, frames, capsys):
    """The model is not even readable: each error below comes first."""
    weights = tmp_path / "w.pt"
    weights.write_text("not a checkpoint")
    (tmp_path / "afile").write_text("")
    detect = ["detect", "--weights", str(weights), "--source", str(frames), "--cache-dir", "none"]
    for option, message in ((["--conf", "1.5"], "--conf 1.5"), (["--iou", "0"], "--iou 0.0"),
                            (["--imgsz", "0"], "--imgsz >= 32"), (["--max-det", "-1"], "--max-det >= 1"),
                            (["--conf-floor", "5"], "--conf-floor 5.0"),
                            (["--out", str(tmp_path / "afile" / "d.csv")], "is a file")):
        _one_line_error(capsys, [*detect, *option], message)
    analyze = ["analyze", "--weights", str(weights), "--out", str(tmp_path / "analysis")]
    for option, message in ((["--conf", "2"], "--conf 2.0"), (["--nms-iou", "0"], "--nms-iou 0.0"),
                            (["--det-conf", "1"], "--det-conf 1.0"),
                            (["--missing-classes", "cow,horse"], "classes are pig, cow")):
        _one_line_error(capsys, [*analyze, *option], message)
    assert not (tmp_path / "analysis").exists()
