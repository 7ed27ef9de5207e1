"""Atomic writes: whole files or none, no temp files left behind, the mode open() would give."""
from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from livestock import fileio


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_writes_replace_whole_files_with_the_usual_mode(tmp_path):
    path = fileio.atomic_write_text(tmp_path / "new" / "a.txt", "first")
    assert path.read_text() == "first" and _mode(path) == 0o666 & ~_umask()
    fileio.atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    fileio.atomic_write_csv(pd.DataFrame({"x": [1, 2]}), tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == "x\n1\n2\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "new", "t.csv"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = fileio.atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_output(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_output_streams_into_place(tmp_path):
    with fileio.atomic_output(tmp_path / "big.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".big.bin.") and tmp.name.endswith(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(3):
                f.write(b"chunk")
        assert not (tmp_path / "big.bin").exists()
    assert (tmp_path / "big.bin").read_bytes() == b"chunk" * 3
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]


def test_atomic_output_dir_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "sub" / "model_openvino_model"
    with fileio.atomic_output_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".model_openvino_model.") and not target.exists()
        (tmp / "a.xml").write_text("first")
        (tmp / "a.bin").write_bytes(b"1")
    assert sorted(p.name for p in target.iterdir()) == ["a.bin", "a.xml"] and _mode(target) == 0o777 & ~_umask()
    with fileio.atomic_output_dir(target) as tmp:
        (tmp / "b.xml").write_text("second")
    assert [p.name for p in target.iterdir()] == ["b.xml"], "the old folder's files are gone with it"
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_output_dir(target) as tmp:
            (tmp / "c.xml").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in target.iterdir()] == ["b.xml"]
    assert [p.name for p in target.parent.iterdir()] == ["model_openvino_model"], "no temp or old folder left"


class _FailsHalfwayThroughPickling:
    """Pickling this raises after the bytes before it are written: a save interrupted mid-file."""

    def __reduce__(self):
        raise KeyboardInterrupt("killed during the save")


def test_atomic_checkpoints_keep_the_previous_file_when_a_save_is_interrupted(tmp_path):
    """A save cut short inside atomic_checkpoints leaves the previous last.pt whole and no temp file behind; a
    save that completes replaces it; outside the context torch.save is torch's own again."""
    import torch

    plain_save = torch.save
    last = tmp_path / "weights" / "last.pt"
    last.parent.mkdir()
    torch.save({"epoch": 1, "w": torch.arange(4)}, last)
    with fileio.atomic_checkpoints():
        with pytest.raises(KeyboardInterrupt):
            torch.save({"epoch": 2, "w": torch.zeros(100_000), "tail": _FailsHalfwayThroughPickling()}, last)
        assert torch.load(last)["epoch"] == 1
        assert [p.name for p in last.parent.iterdir()] == ["last.pt"]
        torch.save({"epoch": 2, "w": torch.arange(4)}, str(last))
    assert torch.load(last)["epoch"] == 2
    assert torch.save is plain_save
    with pytest.raises(KeyboardInterrupt):  # outside the context a cut save leaves a broken file, as torch does
        torch.save({"epoch": 3, "w": torch.zeros(100_000), "tail": _FailsHalfwayThroughPickling()}, last)
    with pytest.raises(Exception):
        torch.load(last)


def test_atomic_checkpoints_write_bytes_of_a_checkpoint_through_a_rename(tmp_path):
    """Ultralytics serialises a checkpoint into memory and writes the bytes with Path.write_bytes: inside
    atomic_checkpoints a .pt file gets a new file renamed into place (a new inode, the usual mode, no temp file
    left), any other file is written in place as before; outside, write_bytes is pathlib's own again."""
    from pathlib import Path

    plain_write_bytes = Path.write_bytes
    last, other = tmp_path / "last.pt", tmp_path / "results.txt"
    last.write_bytes(b"epoch 1")
    other.write_bytes(b"row 1")
    inodes = (os.stat(last).st_ino, os.stat(other).st_ino)
    keep = tmp_path / "keep_inode"  # a second link keeps the old inode alive, so its number cannot be reused
    os.link(last, keep)
    with fileio.atomic_checkpoints():
        assert last.write_bytes(b"epoch 2") == 7
        other.write_bytes(b"row 2")
    assert last.read_bytes() == b"epoch 2" and keep.read_bytes() == b"epoch 1"
    assert os.stat(last).st_ino != inodes[0] and _mode(last) == 0o666 & ~_umask()
    assert other.read_bytes() == b"row 2" and os.stat(other).st_ino == inodes[1]
    assert Path.write_bytes is plain_write_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep_inode", "last.pt", "results.txt"]


def test_link_or_copy(tmp_path, monkeypatch):
    src = tmp_path / "src.jpg"
    src.write_bytes(b"jpeg")
    os.chmod(src, 0o640)
    linked = fileio.atomic_link_or_copy(src, tmp_path / "out" / "a.jpg")
    assert linked.read_bytes() == b"jpeg" and src.stat().st_nlink == 2 and _mode(src) == 0o640

    def no_links(*args, **kwargs):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    copied = fileio.atomic_link_or_copy(src, tmp_path / "out" / "a.jpg")  # replaces the link
    assert copied.read_bytes() == b"jpeg" and src.stat().st_nlink == 1
    assert _mode(copied) == 0o666 & ~_umask()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg"]


def test_figure(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [0, 1])
    path = fileio.atomic_write_figure(fig, tmp_path / "f.png", dpi=20)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_file_sha256_streams_files_in_order(tmp_path):
    """One file's hash is sha256 of its bytes; a file and its companion hash as one stream (an ONNX model and its
    external .data), so the digest changes when either does."""
    import hashlib

    from livestock.fileio import file_sha256

    a, b = tmp_path / "m.onnx", tmp_path / "m.onnx.data"
    a.write_bytes(b"graph" * 300_000)  # over one read block
    b.write_bytes(b"weights")
    assert file_sha256(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert file_sha256(a, b) == hashlib.sha256(a.read_bytes() + b"weights").hexdigest()
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "none.pt")


def test_read_csv_reads_every_float_back_as_written(tmp_path):
    """pandas before 3.0 parses decimals to within one unit in the last place: 0.014898869246695333 read back as
    0.0148988692466953, a score that no longer equals the one it was written from."""
    floats = [0.014898869246695333, 134.72999572753906, 1 / 3, 2.5e-300, -0.1]
    fileio.atomic_write_csv(pd.DataFrame({"x": floats, "name": list("abcde")}), tmp_path / "t.csv")
    back = fileio.read_csv(tmp_path / "t.csv")
    assert back["x"].tolist() == floats and back["name"].tolist() == list("abcde")
