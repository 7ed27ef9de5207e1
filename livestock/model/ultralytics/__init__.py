"""The Ultralytics engine (YOLOv8 / YOLO11 / YOLO26 from the `ultralytics` pip package) behind the engine interface
(:mod:`livestock.model.engine`): the names here are what :func:`livestock.model.engine.get_engine` hands a stage.

``compat`` keeps the package offline and away from the user's settings; ``adapter`` trains, validates, yields raw
candidates (YOLO26's NMS-free head as end-to-end candidates, or its one-to-many head with NMS) and exports.
"""
from livestock.model.ultralytics.adapter import (DEFAULT_HYP, DEFAULT_MODEL, HYP_KEYS, MODEL_NAMES, NAME, VARIANTS,
                                                 checkpoint_size_report, export_onnx, load_checkpoint, load_detector,
                                                 load_hyp, train, validate)

__all__ = ["DEFAULT_HYP", "DEFAULT_MODEL", "HYP_KEYS", "MODEL_NAMES", "NAME", "VARIANTS", "checkpoint_size_report",
           "export_onnx",
           "load_checkpoint", "load_detector", "load_hyp", "train", "validate"]
