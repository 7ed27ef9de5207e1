"""The files every engine takes from the user, read by one rule for all of them: the start weights
(:func:`find_start_weights`), the model (:func:`check_model`, :func:`model_yaml_path`) and hyp files (:func:`read_hyp`).
Each engine adds only what is its own (where its shipped yamls and hyp files live, how it fetches pretrained weights).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence


def find_start_weights(weights: str | os.PathLike | None, model_names: Sequence[str],
                       download_dir: str | os.PathLike | None = None) -> tuple[str, Path | None]:
    """Where training starts, the same rule for every engine: ``(absolute path, None)`` for a file that exists,
    ``("", None)`` to train from scratch (``weights`` None or empty), and ``("", where)`` for a bare pretrained
    name of ``model_names`` (``yolov5m6.pt`` or ``yolov5m6``) that is neither in the working directory nor in
    ``download_dir`` (default ``trained_model/``): ``where`` is the file it belongs in, for the engine to fetch or
    to name in its error. Anything else that does not exist is a :class:`FileNotFoundError`."""
    from livestock.paths import TRAINED_MODEL_DIR

    if weights is None or str(weights).strip() in ("", "''", '""'):
        return "", None
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path.resolve()), None
    name = path.name if path.suffix else f"{path.name}.pt"
    if str(weights) != path.name or name[:-3] not in model_names:
        raise FileNotFoundError(f"{path}: weights file not found")
    local = (Path(download_dir) if download_dir is not None else TRAINED_MODEL_DIR) / name
    if local.is_file():
        return str(local.resolve()), None
    return "", local


def model_yaml_path(model: str | os.PathLike, model_names: Sequence[str]) -> Path:
    """A model yaml given by path, checked: it exists and describes an architecture (a mapping with ``backbone``
    and ``head``, as both engines' yamls do), so an empty or foreign file fails here, named, not deep in the
    engine's model builder. Anything else is a ValueError listing ``model_names``."""
    import yaml

    path = Path(model)
    if path.suffix not in (".yaml", ".yml"):
        raise ValueError(f"unknown model {str(model)!r}: use one of {', '.join(model_names)} or a model yaml path")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model yaml not found")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable YAML file ({type(e).__name__})") from e
    if not isinstance(content, dict) or not {"backbone", "head"} <= set(content):
        raise ValueError(f"{path}: not a model yaml (expected 'backbone' and 'head' entries)")
    return path.resolve()


def shipped_model_name(model: str | os.PathLike, model_names: Sequence[str]) -> str | None:
    """The name in ``model_names`` that ``model`` gives, bare or with ``.yaml`` (``yolov5m6``, ``yolov5m6.yaml``);
    None for anything else, a path with a folder included (that is a yaml of the user's)."""
    name = Path(str(model)).name
    stem = name[:-5] if name.endswith(".yaml") else name
    return stem if str(model) in (stem, name) and stem in model_names else None


def check_model(model: str | os.PathLike, engine: str, model_names: Sequence[str]) -> None:
    """A ``--model`` an engine can build: one of its ``model_names`` (with or without ``.yaml``) or a model yaml
    that :func:`model_yaml_path` accepts. Checked before any work, by the commands that build a model later."""
    if shipped_model_name(model, model_names):
        return
    if Path(model).suffix not in (".yaml", ".yml"):
        raise ValueError(f"--model {str(model)!r}: not a {engine} model ({', '.join(model_names)}) nor a model yaml")
    model_yaml_path(model, model_names)  # exists and describes an architecture; its errors name the file


def read_hyp(hyp: str | os.PathLike | dict, hyp_path: Callable[[str | os.PathLike], Path], keys: Sequence[str],
             optional: Sequence[str] = ()) -> dict:
    """An engine's hyper-parameters from a dict or a yaml file (``hyp_path`` finds it: a path or a shipped name):
    every key of ``keys`` as a float, and those of ``optional`` present as they are. Missing, unknown (a typo would
    otherwise be ignored silently) or non-numeric keys are errors naming the file."""
    import yaml

    if isinstance(hyp, dict):
        source, values = "hyp", dict(hyp)
    else:
        path = hyp_path(hyp)
        source = str(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of hyper-parameters")
    missing = [k for k in keys if k not in values]
    unknown = [k for k in values if k not in keys and k not in optional]
    if missing or unknown:
        raise ValueError(f"{source}: " + "; ".join(
            ([f"missing keys {missing}"] if missing else []) + ([f"unknown keys {unknown}"] if unknown else [])))
    bad = [k for k, v in values.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        raise ValueError(f"{source}: non-numeric values for {bad}")
    return {k: float(values[k]) for k in keys} | {k: values[k] for k in optional if k in values}
