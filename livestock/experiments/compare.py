"""``livestock compare EXPERIMENT``: the README's comparisons over seeds, resumable (run the same command again to
continue one that was cut off; finished cells are not trained again)."""
from __future__ import annotations

import argparse
from pathlib import Path

from livestock import paths
from livestock.deploy.export import comma_list
from livestock.experiments.runner import gold_test_set

EXPERIMENTS = ("engines",)


def cli_compare_args(p: argparse.ArgumentParser) -> None:
    """The ``livestock compare`` options."""
    p.add_argument("experiment", choices=EXPERIMENTS,
                   help="engines: YOLOv5n vs YOLO11n vs YOLO26n (test mAP, training time, parameters, ONNX FP32 / "
                        "INT8 / OpenVINO latency and size, INT8 loss)")
    p.add_argument("--data", default=str(paths.SPLITS_DIR / "multilabel" / "data.yaml"),
                   help="training set (%(default)s, written by the main job's split stage)")
    p.add_argument("--test-dir", default=str(paths.TEST_DIR), help="test zips (%(default)s)")
    p.add_argument("--prepared-test", default=str(paths.PREPARED_TEST_DIR), help="prepared test images (%(default)s)")
    p.add_argument("--answer", default=str(paths.TEST_ANSWER),
                   help="ground truth, used only when written for exactly those test images (%(default)s)")
    p.add_argument("--models", default="yolov5:yolov5n,ultralytics:yolo11n,ultralytics:yolo26n",
                   help="engine:model items (%(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (%(default)s)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of every training (%(default)s)")
    p.add_argument("--imgsz", "--img", dest="imgsz", type=int, default=320, help="image size (%(default)s)")
    p.add_argument("--batch", type=int, default=16, help="batch size (%(default)s)")
    p.add_argument("--device", default="cpu", help="training and PyTorch device (%(default)s)")
    p.add_argument("--workers", type=int, default=2, help="data-loader workers (%(default)s)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the latency timing (%(default)s)")
    p.add_argument("--out", default=None, help="folder of the comparison (default runs/compare/EXPERIMENT)")


def cli_compare(args: argparse.Namespace) -> int:
    """Run ``livestock compare`` with parsed ``args``; returns the exit code."""
    from livestock.experiments.engines import compare_engines, parse_models

    out = Path(args.out or paths.RUNS_DIR / "compare" / args.experiment)
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"{args.data}: training set not found (run `livestock pipeline` up to the split "
                                "stage first, or pass --data)")
    test = gold_test_set(args.test_dir, args.prepared_test, args.answer)
    _, table = compare_engines(args.data, test, out, models=parse_models(args.models),
                               seeds=[int(s) for s in comma_list(args.seeds)], epochs=args.epochs, imgsz=args.imgsz,
                               batch=args.batch, device=args.device, workers=args.workers, threads=args.threads)
    print((out / "table.md").read_text(encoding="utf-8"))
    return 0
