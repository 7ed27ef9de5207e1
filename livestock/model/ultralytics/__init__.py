"""The Ultralytics engine (YOLOv8 / YOLO11 / YOLO26 from the `ultralytics` pip package) behind the engine interface
(:mod:`livestock.model.engine`): the names here are what :func:`livestock.model.engine.get_engine` hands a stage.

``compat`` keeps the package offline and away from the user's settings; ``adapter`` resolves models, weights and
hyp files, yields raw candidates (YOLO26's NMS-free head as end-to-end candidates, or its one-to-many head with
NMS) and exports; ``training`` trains, resumes an interrupted run and validates.
"""
from livestock.model.ultralytics.adapter import (DEFAULT_HYP, DEFAULT_MODEL, HYP_KEYS, MODEL_NAMES, NAME, OPTIMIZERS,
                                                 PASSTHROUGH_OPTIONS, VARIANTS, checkpoint_size_report, export_onnx,
                                                 load_checkpoint, load_detector, load_hyp, load_model,
                                                 random_init_checkpoint)
from livestock.model.ultralytics.training import can_resume, train, validate

__all__ = ["DEFAULT_HYP", "DEFAULT_MODEL", "HYP_KEYS", "MODEL_NAMES", "NAME", "OPTIMIZERS", "PASSTHROUGH_OPTIONS",
           "VARIANTS", "can_resume", "checkpoint_size_report", "export_onnx", "load_checkpoint", "load_detector",
           "load_hyp", "load_model", "random_init_checkpoint", "train", "validate"]
