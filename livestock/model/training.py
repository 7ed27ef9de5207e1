"""``livestock train`` and ``livestock val``: one command line for every engine (``--engine``), dispatched through
the engine interface (:func:`livestock.model.engine.get_engine`)."""
from __future__ import annotations

import argparse

from livestock.model.engine import CONTEST_MAX_WEIGHT_MB, DEFAULT_ENGINE, ENGINES, engine_of_weights, get_engine


def cli_train_args(p: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock train`` to ``parser``."""
    p.add_argument("--engine", choices=list(ENGINES), default=DEFAULT_ENGINE, help="detection engine (%(default)s)")
    p.add_argument("--data", required=True, help="dataset yaml (e.g. data/splits/multilabel/data.yaml)")
    p.add_argument("--model", default=None, help="architecture by name (yolov5n ... yolov5x6; yolo11n, yolo26n, ... "
                                                "with --engine ultralytics) or a yaml (default: the engine's smallest "
                                                "from scratch, else the checkpoint's own)")
    p.add_argument("--weights", default="", help="'' = from scratch; a checkpoint path; a pretrained name "
                                                 "(yolov5m6.pt: trained_model/ or download); auto: the barn-pretrained "
                                                 "file for the model and size (scratch when there is none)")
    p.add_argument("--hyp", default=None, help="hyp yaml path or shipped name (default: the engine's CPU scratch hyp)")
    p.add_argument("--img", "--imgsz", dest="imgsz", type=int, default=640)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu, 0, 0,1 (default %(default)s)")
    p.add_argument("--workers", type=int, default=8, help="data-loader workers")
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="reuse project/name instead of making name2, name3, ...")
    p.add_argument("--linear-lr", action=argparse.BooleanOptionalAction, default=True,
                   help="linear LR decay (default); --no-linear-lr for cosine")
    p.add_argument("--optimizer", choices=["SGD", "Adam", "AdamW"], default="SGD")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=100, help="early-stopping patience in epochs")
    p.add_argument("--cache", choices=["ram", "disk"], default=None, help="cache images in ram or on disk")
    p.add_argument("--freeze", type=int, nargs="+", default=None, help="freeze the first N layers (10: backbone)")
    p.add_argument("--max-weight-mb", type=float, default=CONTEST_MAX_WEIGHT_MB)
    p.add_argument("--fail-on-oversize", action="store_true", help="error (exit 1) when best.pt exceeds the limit")
    p.add_argument("--verbose", action="store_true", help="the engine's full log")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run PROJECT/NAME from its weights/last.pt (its own settings apply)")


def cli_train(args: argparse.Namespace) -> int:
    """Run ``livestock train`` with parsed ``args``; returns the exit code."""
    from livestock.model.pretrain import command_start_weights

    engine = get_engine(args.engine)
    options = {"freeze": args.freeze} if args.freeze else {}
    weights = None if args.resume else command_start_weights(args.weights, args.model, args.imgsz, args.engine)
    result = engine.train(
        args.data, model=args.model, weights=weights, hyp=args.hyp or engine.DEFAULT_HYP,
        imgsz=args.imgsz, epochs=args.epochs, batch_size=args.batch_size, device=args.device, workers=args.workers,
        project=args.project, name=args.name, exist_ok=args.exist_ok, linear_lr=args.linear_lr,
        optimizer=args.optimizer, seed=args.seed, patience=args.patience, cache=args.cache,
        max_weight_mb=args.max_weight_mb, fail_on_oversize=args.fail_on_oversize, verbose=args.verbose,
        resume=args.resume, **options,
    )
    if result is not None:
        print(result.summary())
    return 0


def cli_val_args(p: argparse.ArgumentParser) -> None:
    """Add the options of ``livestock val`` to ``parser``."""
    p.add_argument("--engine", choices=list(ENGINES), default=None,
                   help="detection engine (default: the one that wrote --weights)")
    p.add_argument("--weights", required=True, help="checkpoint (.pt) or exported model (.onnx)")
    p.add_argument("--data", required=True, help="dataset yaml")
    p.add_argument("--img", "--imgsz", dest="imgsz", type=int, default=640)
    p.add_argument("--conf", type=float, default=0.001, help="confidence threshold (default %(default)s)")
    p.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold (default %(default)s)")
    p.add_argument("--split", choices=["train", "val", "test"], default="val")
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=None,
                   help="images per validation batch (default: 32 at 640 px, fewer at larger sizes, 8 at 1280)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--project", default="runs/val")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--save-txt", action="store_true", help="also write labels/<stem>.txt with confidences")
    p.add_argument("--verbose", action="store_true")


def cli_val(args: argparse.Namespace) -> int:
    """Run ``livestock val`` with parsed ``args``; returns the exit code."""
    engine = get_engine(args.engine or engine_of_weights(args.weights))
    table = engine.validate(
        args.weights, args.data, imgsz=args.imgsz, conf=args.conf, iou=args.iou, device=args.device,
        split=args.split, batch_size=args.batch_size, workers=args.workers, project=args.project, name=args.name,
        exist_ok=args.exist_ok, save_txt=args.save_txt, verbose=args.verbose,
    )
    print(table.round(4).to_string())
    print(f"saved to {table.attrs['save_dir']}")
    return 0
