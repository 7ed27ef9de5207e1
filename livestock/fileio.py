"""Atomic file writes: every output appears whole or not at all.

A file is written to a temp file beside its destination (``.<name>.<random>.tmp``, so readers that walk a folder
can pass over it) and renamed into place, so a reader never sees a half-written file and an interrupted write
leaves the old file, or none, behind. Finished files get the mode ``open()`` would give them.

The training engines write their checkpoints themselves; :func:`atomic_checkpoints` makes those writes atomic too.
:func:`read_csv` reads a CSV table back with every float as it was written.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pandas as pd

if TYPE_CHECKING:  # matplotlib is needed only by whoever makes the figure
    from matplotlib.figure import Figure


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a finished output gets the mode open() would give it. Read once, at import: setting
# the umask on every write would briefly change it for every other thread of the process.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file's path beside ``path``; on success it becomes ``path``, on any error it is removed."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; on success it becomes ``path`` (a folder there before is
    replaced whole), on any error it is removed with what was written in it.

    Two renames swap the folders (a rename cannot replace a folder that has files): a reader sees the old folder,
    for an instant none, or the new one, never a partial one; the old one is removed afterwards."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)  # mkdtemp makes 0700 folders; a finished one gets the mode mkdir would give it
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, UTF-8 encoded."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(df: pd.DataFrame, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write ``df`` to ``path`` as CSV atomically; ``kwargs`` go to ``DataFrame.to_csv`` (no index by default)."""
    kwargs.setdefault("index", False)
    return atomic_write_text(path, df.to_csv(**kwargs))


def read_csv(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` with every float read back exactly as written: pandas before 3.0 parses decimals to within
    one unit in the last place by default, so a table it wrote would not read back the same (Colab ships 2.2)."""
    kwargs.setdefault("float_precision", "round_trip")
    return pd.read_csv(path, **kwargs)


def atomic_write_figure(fig: "Figure", path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure to ``path`` as PNG atomically."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


CHECKPOINT_SUFFIX = ".pt"  # the checkpoints both engines write: last.pt, best.pt, epochN.pt


@contextmanager
def atomic_checkpoints() -> Iterator[None]:
    """While active, a training engine's checkpoint writes go to a temp file beside the checkpoint and are renamed
    into place, so a run killed in the middle of a save keeps the previous ``last.pt`` whole, to resume from.

    The engines save in place once an epoch (tens of ms for a nano model, seconds for YOLOv5m6 with its optimiser
    state) and have no hook before a save, so the two calls they save with are wrapped for the duration of the
    training, and restored afterwards:

    - ``torch.save`` to a path (YOLOv5's checkpoints; Ultralytics' final stripping of ``last.pt`` / ``best.pt``);
      a buffer or an open file has nothing to rename and is passed through;
    - ``Path.write_bytes`` of a ``.pt`` file (Ultralytics serialises a checkpoint into memory first, then writes
      those bytes to ``last.pt`` and ``best.pt``); other files are written as before.
    """
    import torch

    plain_save = torch.save
    plain_write_bytes = Path.write_bytes

    def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if not isinstance(f, (str, os.PathLike)):
            return plain_save(obj, f, *args, **kwargs)
        with atomic_output(f) as tmp:
            plain_save(obj, tmp, *args, **kwargs)

    def write_bytes(self: Path, data: bytes) -> int:
        if self.suffix != CHECKPOINT_SUFFIX:
            return plain_write_bytes(self, data)
        with atomic_output(self) as tmp:
            return plain_write_bytes(tmp, data)

    torch.save = save
    Path.write_bytes = write_bytes  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.save = plain_save
        Path.write_bytes = plain_write_bytes  # type: ignore[method-assign]


def atomic_link_or_copy(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Put file ``src`` at ``path`` atomically: a hard link where the file system allows it, else a copy."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        tmp.unlink()  # os.link will not overwrite: free the random name for it
        try:
            os.link(src, tmp)
        except OSError:
            # another file system, or one without hard links; the copy is a new file of ours, so it gets our mode
            shutil.copyfile(src, tmp)
            os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def file_sha256(*paths: str | os.PathLike) -> str:
    """The sha256 (hex) of the files' bytes read in order as one stream (one file, or a file and its companion such
    as an ONNX model's external ``.data``), read a megabyte at a time so large weights never sit in memory."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()
