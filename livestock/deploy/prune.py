"""Pruning: global L1 (magnitude) unstructured pruning of every Conv weight, made permanent.

Zeros make the file compress better; they do not make dense CPU kernels faster, and ``livestock bench`` measures
exactly that. Without fine-tuning, 50 % sparsity loses most of the accuracy: :func:`prune_weights` takes a
fine-tune hook for that trade-off.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from livestock.model.engine import engine_of_weights, get_engine, save_model_checkpoint

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
    """Write a copy of a checkpoint (of either engine) with its Conv weights pruned to ``sparsity`` to
    ``out_path``; returns it.

    ``fine_tune``, optional: called with the pruned checkpoint's path, returns the path of a fine-tuned
    checkpoint (for example a few epochs of ``livestock train`` from those weights). Dense training regrows the
    zeroed weights, so the fine-tuned weights are pruned again to the same sparsity (prune, fine-tune, re-prune).
    """
    out_path = Path(out_path)
    _prune_file(weights, sparsity, out_path)
    if fine_tune is not None:
        _prune_file(Path(fine_tune(out_path)), sparsity, out_path)
    return out_path


def _prune_file(source: str | os.PathLike, sparsity: float, out_path: Path) -> None:
    # Unfused: the checkpoint keeps the architecture its engine trains and exports (each fuses at load).
    model = get_engine(engine_of_weights(source)).load_model(source, fuse=False)
    prune_conv_weights(model, sparsity)
    save_model_checkpoint(model, out_path)
