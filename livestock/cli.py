"""``livestock`` command line: one sub-command per pipeline stage.

Each sub-command lives in its stage module as two functions, ``cli_<name>_args(parser)`` and
``cli_<name>(args) -> int``. Only the chosen stage's module is imported, so ``livestock score``
does not pay for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("livestock.data.synth.dataset", "write a synthetic AI Hub-format dataset (six zips + test answer)"),
    "prepare": ("livestock.data.yolo_format", "read + validate AI Hub zips/folders, write the YOLO-format dataset"),
    "eda": ("livestock.data.eda", "tables and plots of a prepared dataset"),
    "split": ("livestock.data.split", "multilabel-stratified split, full and mini sets (manifest + data.yaml)"),
    "train": ("livestock.model.training", "train a detector (YOLOv5 or Ultralytics) on a data.yaml"),
    "val": ("livestock.model.training", "validate weights on a data.yaml (per-class table)"),
    "evolve": ("livestock.model.evolve", "genetic evolution of chosen hyper-parameters"),
    "search": ("livestock.model.search", "hyper-parameter search on Optuna (GA, TPE, CMA-ES), shared by many workers"),
    "pretrain": ("livestock.model.pretrain",
                 "barn-pretrained starting weights from a larger shifted-style synthetic set"),
    "detect": ("livestock.evaluation.detect", "run a detector on images, cache raw candidates, write detections"),
    "tune": ("livestock.evaluation.tune", "score a grid of NMS IoU x confidence from cached candidates"),
    "submit": ("livestock.evaluation.submission", "turn detections into a contest answer.csv"),
    "check-submission": ("livestock.evaluation.submission", "validate a submission file"),
    "score": ("livestock.evaluation.submission", "score a submission against an answer file (contest metric)"),
    "analyze": ("livestock.evaluation.analysis", "error analysis: per-class table, overlays, likely missing labels"),
    "silver": ("livestock.evaluation.silver", "pseudo-label (silver) dataset from a trained model"),
    "export": ("livestock.deploy.export", "export weights to ONNX FP32 / FP16 / INT8"),
    "bench": ("livestock.deploy.bench", "size / latency / accuracy report of exported models"),
    "pipeline": ("livestock.pipeline", "the main job: every notebook in order on the synthetic set"),
    "truth": ("livestock.provenance", "record that your ground-truth file describes the images now in a folder"),
    "compare": ("livestock.experiments.compare", "trainings compared over seeds (engines: YOLOv5n vs YOLO11n vs "
                                                 "YOLO26n), resumable"),
    "rehearsal": ("livestock.rehearsal", "data and evaluation stages at the real dataset's size, timed and measured"),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livestock",
        description="Livestock (pig / cow) detection pipeline: AI Hub zips -> YOLOv5 -> answer.csv -> contest score.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {c:<17} {h}" for c, (_, h) in COMMANDS.items()),
    )
    p.add_argument("command", choices=list(COMMANDS), metavar="command", help="stage to run (see below)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one ``livestock`` sub-command (``argv`` defaults to the command line); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv or ["--help"])
        return 2
    command, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[command]
    module = importlib.import_module(module_name)
    attr = command.replace("-", "_")
    parser = argparse.ArgumentParser(prog=f"livestock {command}", description=help_text)
    getattr(module, f"cli_{attr}_args")(parser)
    args = parser.parse_args(rest)
    try:
        return int(getattr(module, f"cli_{attr}")(args) or 0)
    except (OSError, ValueError) as e:
        # Bad input: one clear line naming the file and the problem, no traceback. An OSError of the system (an output
        # path under a file, a folder where a file goes, no permission) names its file in ``filename``.
        message = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename and e.strerror else e
        print(f"livestock {command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
