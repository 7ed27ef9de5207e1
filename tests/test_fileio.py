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
