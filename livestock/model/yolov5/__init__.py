"""The YOLOv5 engine (the `yolov5` pip package, 7.0.14) behind the engine interface
(:mod:`livestock.model.engine`): the names here are what :func:`livestock.model.engine.get_engine` hands a stage.

``compat`` makes the package run offline on current libraries; ``training`` trains and validates; ``detector``
yields raw candidates; ``models`` loads, initialises and exports model files.
"""
from livestock.model.yolov5.compat import (DEFAULT_HYP, HYP_KEYS, MODEL_NAMES, OPTIMIZERS, PASSTHROUGH_OPTIONS,
                                           checkpoint_size_report, ensure_yolov5, load_checkpoint, load_hyp)
from livestock.model.yolov5.detector import load_detector
from livestock.model.yolov5.models import export_onnx, load_model, random_init_checkpoint
from livestock.model.yolov5.training import can_resume, train, validate

NAME = "yolov5"
DEFAULT_MODEL = "yolov5n"

__all__ = ["DEFAULT_HYP", "DEFAULT_MODEL", "HYP_KEYS", "MODEL_NAMES", "NAME", "OPTIMIZERS", "PASSTHROUGH_OPTIONS",
           "can_resume", "checkpoint_size_report", "ensure_yolov5", "export_onnx", "load_checkpoint", "load_detector",
           "load_hyp", "load_model", "random_init_checkpoint", "train", "validate"]
