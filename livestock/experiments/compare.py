"""``livestock compare EXPERIMENT``: the README's comparisons over seeds, resumable (run the same command again to
continue one that was cut off; finished cells are not trained again).

- ``engines``: YOLOv5n vs YOLO11n vs YOLO26n, trained the same way, with exports, INT8 loss and latency
  (:mod:`livestock.experiments.engines`);
- ``hyps``: hyp files (base vs evolved), ``--hyps name=path,...``;
- ``sets``: training sets (gold vs gold + silver, with or without background frames), ``--sets name=data.yaml,...``,
  under one budget (``--budget``);
- ``starts``: start weights (barn-pretrained vs scratch), ``--starts name=weights,...`` (``auto``: the pretrained
  file for the model and size; empty: from scratch);
- ``samplers``: the search's samplers (GA, TPE, CMA-ES, random), one study per sampler and seed on the mini set,
  each best hyp re-trained on ``--data`` (:mod:`livestock.experiments.samplers`).

Every cell is scored by the final score's path on the test set (``--score-on test``, ground truth written for
exactly those images) or on the data's validation split (``--score-on val``: the images and truth of a search
trial's fitness, to measure the seed-to-seed spread in the search's own units).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from livestock import paths
from livestock.data.yolo_format import load_data_yaml
from livestock.deploy.export import comma_list
from livestock.experiments.runner import (GoldSet, Say, TrainingCell, format_mean_sd, gold_test_set, mean_sd,
                                          run_cells)
from livestock.experiments.training_sets import set_cells
from livestock.fileio import atomic_write_csv, atomic_write_text
from livestock.model.engine import DEFAULT_ENGINE, ENGINES, get_engine
from livestock.model.engine_files import find_start_weights
from livestock.model.pretrain import AUTO, command_start_weights, resolve_start_weights

EXPERIMENTS = ("engines", "hyps", "sets", "starts", "samplers")
TABLE_COLUMNS: dict[str, tuple] = {
    "test_mAP@0.75": ("mAP@0.75", ".3f"), "test_mAP@0.5": ("mAP@0.5", ".3f"),
    "test_mAP@0.5:0.95": ("mAP@0.5:0.95", ".3f"), "epochs": ("epochs", ".0f"),
    "train_s": ("training (min)", ".1f", 1 / 60),
}


def named_items(text: str, what: str) -> dict[str, str]:
    """``name=value,...`` as an ordered dict (a value may be empty)."""
    items: dict[str, str] = {}
    for item in comma_list(text):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--{what} {item!r}: write name=value, e.g. base=hyp/hyp_scratch_cpu.yaml")
        if name.strip() in items:
            raise ValueError(f"--{what}: the name {name.strip()!r} is given twice")
        items[name.strip()] = value.strip()
    if not items:
        raise ValueError(f"--{what}: nothing to compare")
    return items


def comparison_cells(experiment: str, items: dict[str, str], *, data_yaml: str, seeds: list[int], engine: str,
                     model: str | None, weights: str | None, hyp: str | None, imgsz: int, epochs: int, batch: int,
                     budget: str, device: str, workers: int) -> list[TrainingCell]:
    """The cells of a ``hyps``, ``sets`` or ``starts`` comparison: one per item and seed, every other setting equal;
    ``weights``: the common start, already resolved (:func:`resolve_start_weights`), None for scratch."""
    def start(value: str) -> str | None:
        resolved, _ = resolve_start_weights(value, model or "", imgsz, engine=engine)
        return resolved or None

    trainer = get_engine(engine)
    for name, value in items.items():  # every item is checked before the first cell trains for minutes
        if experiment == "hyps" and value:
            trainer.load_hyp(value)
        elif experiment == "sets":
            load_data_yaml(value)
        elif experiment == "starts" and value != AUTO:
            try:  # the training's own rule: a file, or a pretrained name it finds or fetches
                find_start_weights(value, trainer.MODEL_NAMES)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{value}: start weights of {name!r} not found") from e
    common = dict(engine=engine, model=model, weights=weights, hyp=hyp, imgsz=imgsz, batch_size=batch,
                  device=device, workers=workers)
    if experiment == "sets":
        return set_cells(items, epochs=epochs, budget=budget, seeds=seeds, **common)
    vary = {name: {"hyp": value or None} if experiment == "hyps" else {"weights": start(value)}
            for name, value in items.items()}
    # seed-major, as every comparison: a run cut off at a session's end already compares every item
    return [TrainingCell.of(name, data_yaml, seed=seed, epochs=epochs, **{**common, **vary[name]})
            for seed in seeds for name in items]


def run_comparison(cells: list[TrainingCell], scored: GoldSet, out: Path, say: Say = print
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the cells, write ``rows.csv``, ``table.csv`` and ``table.md`` (mean ± sd over seeds) into ``out``."""
    rows = run_cells(cells, scored, out, say=say)
    rows["epochs"] = [c.training.epochs for c in cells]
    atomic_write_csv(rows, out / "rows.csv")
    table = mean_sd(rows)
    atomic_write_csv(table, out / "table.csv")
    md = format_mean_sd(table, TABLE_COLUMNS) + f"\nmAP: contest metric on the {scored.name}.\n"
    atomic_write_text(out / "table.md", md)
    return rows, table


def cli_compare_args(p: argparse.ArgumentParser) -> None:
    """The ``livestock compare`` options."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("experiment", choices=EXPERIMENTS, help="what varies between the cells (see above)")
    p.add_argument("--data", default=str(paths.SPLITS_DIR / "multilabel" / "data.yaml"),
                   help="training set (%(default)s, written by the main job's split stage)")
    p.add_argument("--hyps", default="", help="hyps: name=hyp.yaml items")
    p.add_argument("--sets", default="", help="sets: name=data.yaml items; the first is the budget's reference")
    p.add_argument("--starts", default="", help="starts: name=weights items (auto: the pretrained file; empty: "
                                                "scratch)")
    p.add_argument("--budget", choices=("epochs", "images"), default="epochs",
                   help="sets: the same epochs for every set, or the same images seen (%(default)s)")
    p.add_argument("--models", default="yolov5:yolov5n,ultralytics:yolo11n,ultralytics:yolo26n",
                   help="engines: engine:model items (%(default)s)")
    p.add_argument("--samplers", default="ga,tpe,cmaes,random", help="samplers: which (%(default)s)")
    p.add_argument("--mini-data", default=str(paths.SPLITS_DIR / "mini" / "data.yaml"),
                   help="samplers: the search's training set, its validation split the fitness (%(default)s)")
    p.add_argument("--trials", type=int, default=20, help="samplers: trials per study (%(default)s)")
    p.add_argument("--search-epochs", type=int, default=3, help="samplers: epochs per trial (%(default)s)")
    p.add_argument("--keys", default="lr0,lrf,momentum", help="samplers: hyp keys searched (%(default)s)")
    p.add_argument("--engine", choices=list(ENGINES), default=DEFAULT_ENGINE,
                   help="hyps, sets, starts, samplers: the engine")
    p.add_argument("--model", default=None, help="hyps, sets, starts, samplers: the architecture (the engine's "
                                                 "smallest)")
    p.add_argument("--weights", default="", help="hyps, sets, samplers: start weights (auto: the pretrained file "
                                                 "for the model and size; default: scratch)")
    p.add_argument("--hyp", default=None, help="sets, starts: hyp file; samplers: the base hyp (the engine's CPU "
                                               "scratch hyp)")
    p.add_argument("--score-on", choices=("test", "val"), default="test",
                   help="test: the test images and their truth; val: the data's validation split (%(default)s)")
    p.add_argument("--test-dir", default=str(paths.TEST_DIR), help="test zips (%(default)s)")
    p.add_argument("--prepared-test", default=str(paths.PREPARED_TEST_DIR), help="prepared test images (%(default)s)")
    p.add_argument("--answer", default=str(paths.TEST_ANSWER),
                   help="ground truth, used only when written for exactly those test images (%(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (%(default)s)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of every training (samplers: of the re-training "
                                                         "of each best hyp) (%(default)s)")
    p.add_argument("--imgsz", "--img", dest="imgsz", type=int, default=320, help="image size (%(default)s)")
    p.add_argument("--batch", type=int, default=16, help="batch size (%(default)s)")
    p.add_argument("--device", default="cpu", help="training and PyTorch device (%(default)s)")
    p.add_argument("--workers", type=int, default=2, help="data-loader workers (%(default)s)")
    p.add_argument("--threads", type=int, default=2, help="engines: CPU threads of the latency timing (%(default)s)")
    p.add_argument("--out", default=None, help="folder of the comparison (default runs/compare/EXPERIMENT)")


def cli_compare(args: argparse.Namespace) -> int:
    """Run ``livestock compare`` with parsed ``args``; returns the exit code."""
    out = Path(args.out or paths.RUNS_DIR / "compare" / args.experiment)
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"{args.data}: training set not found (run `livestock pipeline` up to the split "
                                "stage first, or pass --data)")
    seeds = comma_list(args.seeds)
    if not seeds or not all(s.isdigit() for s in seeds):
        raise ValueError(f"--seeds {args.seeds!r}: comma-separated non-negative whole numbers, e.g. 0,1,2")
    seeds = [int(s) for s in seeds]
    scored = (GoldSet.val_split(args.data, out) if args.score_on == "val"
              else gold_test_set(args.test_dir, args.prepared_test, args.answer))
    start = None  # the start weights of every cell but the engines' (from scratch) and the `starts` items
    if args.experiment != "engines":
        start = command_start_weights(args.weights, args.model, args.imgsz, engine=args.engine)
    if args.experiment == "engines":
        from livestock.experiments.engines import compare_engines, parse_models

        compare_engines(args.data, scored, out, models=parse_models(args.models), seeds=seeds, epochs=args.epochs,
                        imgsz=args.imgsz, batch=args.batch, device=args.device, workers=args.workers,
                        threads=args.threads)
    elif args.experiment == "samplers":
        from livestock.experiments.samplers import compare_samplers

        compare_samplers(args.mini_data, args.data, scored, out, samplers=comma_list(args.samplers), seeds=seeds,
                         trials=args.trials, epochs=args.search_epochs, retrain_epochs=args.epochs, keys=args.keys,
                         base_hyp=args.hyp, weights=start, model=args.model, engine=args.engine,
                         imgsz=args.imgsz, batch=args.batch, device=args.device, workers=args.workers)
    else:
        items = named_items(getattr(args, args.experiment), args.experiment)
        cells = comparison_cells(args.experiment, items, data_yaml=args.data, seeds=seeds, engine=args.engine,
                                 model=args.model, weights=start, hyp=args.hyp, imgsz=args.imgsz,
                                 epochs=args.epochs, batch=args.batch, budget=args.budget, device=args.device,
                                 workers=args.workers)
        run_comparison(cells, scored, out)
    print((out / "table.md").read_text(encoding="utf-8"))
    return 0
