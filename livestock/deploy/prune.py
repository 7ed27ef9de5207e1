"""Pruning: global L1 (magnitude) unstructured pruning of every Conv weight, made permanent.

Zeros make the file compress better; they do not make dense CPU kernels faster, and ``livestock bench`` measures
exactly that. Without fine-tuning, 50 % sparsity loses most of the accuracy: :func:`prune_weights` takes a
fine-tune hook for that trade-off.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from livestock.model.yolov5 import models as yolov5_models

if TYPE_CHECKING:
    import torch


def conv_weight_sparsity(model: "torch.nn.Module") -> float:
    """Fraction of the Conv2d weights of ``model`` that are exactly zero."""
    import torch.nn as nn

    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    total = sum(w.numel() for w in convs)
    return float(sum(int((w == 0).sum()) for w in convs) / max(total, 1))


def prune_conv_weights(model: "torch.nn.Module", sparsity: float) -> float:
    """Prune ``model``'s Conv2d weights in place to ``sparsity``; returns the Conv weight sparsity reached.

    Global L1: the smallest magnitudes over all layers together go, and the masks are folded into the weights."""
    import torch.nn as nn
    from torch.nn.utils import prune

    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    prune.global_unstructured(convs, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    for module, name in convs:
        prune.remove(module, name)  # fold the mask into the weight: a plain parameter again, saved as such
    return conv_weight_sparsity(model)


def prune_weights(
    weights: str | os.PathLike,
    sparsity: float,
    out_path: str | os.PathLike,
    fine_tune: Callable[[Path], str | os.PathLike] | None = None,
) -> Path:
    """Write a copy of a checkpoint with its Conv weights pruned to ``sparsity`` to ``out_path``; returns it.

    ``fine_tune``, optional: called with the pruned checkpoint's path, returns the path of a fine-tuned
    checkpoint (for example a few epochs of ``livestock train`` from those weights). Dense training regrows the
    zeroed weights, so the fine-tuned weights are pruned again to the same sparsity (prune, fine-tune, re-prune).
    """
    out_path = Path(out_path)
    model = yolov5_models.load_model(weights)
    prune_conv_weights(model, sparsity)
    yolov5_models.save_model(model, out_path)
    if fine_tune is not None:
        tuned = Path(fine_tune(out_path))
        model = yolov5_models.load_model(tuned)
        prune_conv_weights(model, sparsity)
        yolov5_models.save_model(model, out_path)
    return out_path
