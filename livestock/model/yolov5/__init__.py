"""The YOLOv5 engine (the `yolov5` pip package, 7.0.14) behind the engine interface
(:mod:`livestock.model.engine`): the names here are what :func:`livestock.model.engine.get_engine` hands a stage.

``compat`` makes the package run offline on current libraries; ``training`` trains and validates; ``detector``
yields raw candidates; ``models`` loads, initialises and exports model files.
"""
from livestock.model.yolov5.compat import (CONTEST_MAX_WEIGHT_MB, DEFAULT_HYP, HYP_KEYS, MODEL_NAMES,
                                           PretrainedWeightsError, WeightSizeError, ensure_yolov5, load_checkpoint,
                                           load_hyp)
from livestock.model.yolov5.detector import load_detector
from livestock.model.yolov5.models import export_onnx
from livestock.model.yolov5.training import can_resume, train, validate

NAME = "yolov5"
DEFAULT_MODEL = "yolov5n"

__all__ = ["CONTEST_MAX_WEIGHT_MB", "DEFAULT_HYP", "DEFAULT_MODEL", "HYP_KEYS", "MODEL_NAMES", "NAME",
           "PretrainedWeightsError", "WeightSizeError", "can_resume", "ensure_yolov5", "export_onnx", "load_checkpoint",
           "load_detector", "load_hyp", "train", "validate"]
