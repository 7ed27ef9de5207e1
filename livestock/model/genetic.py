"""The original entry's genetic algorithm: YOLOv5 7.0's ``train.py --evolve`` over the keys the user names.

- keys and bounds: any hyp key, with YOLOv5's bounds (:data:`YOLOV5_EVOLVE_META`) unless overridden;
- parents: the ``top_n`` (5) fittest so far; one is drawn at random with weights ``fitness - min(fitness) + 1e-6``;
- mutation: per chosen key, with probability ``mutation_prob`` (0.8), a factor
  ``1 + gain * N(0, 1) * U(0, 1) * sigma`` (sigma 0.2, one uniform draw shared by all keys, as in YOLOv5),
  clipped to [0.3, 3.0]; drawn again until at least one value changes. ``gain`` is YOLOv5's per-key mutation scale
  (1 for lr0 / lrf, 0.3 for momentum; a key YOLOv5 never mutates gets 1 when chosen here);
- the mutated values are clipped to the key's bounds and rounded to 5 significant digits. A value of 0 stays 0.

Random draws come from ``numpy.random.default_rng([seed, trial number])``: the same seed and history give the same
proposal, in any worker and after a restart. :class:`GeneticSampler` makes these rules an Optuna sampler, so the
search machinery (:mod:`livestock.model.search`) runs them like any other sampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from livestock.model.yolov5.compat import HYP_KEYS

LOG_SCALE_RATIO = 100.0  # keys whose bounds span two decades or more (lr0, lrf) are searched on a log scale
DEFAULT_KEYS: tuple[str, ...] = ("lr0", "lrf", "momentum")
# Per key: (mutation gain, lower bound, upper bound), the table YOLOv5 7.0's train.py evolves with.
YOLOV5_EVOLVE_META: dict[str, tuple[float, float, float]] = {
    "lr0": (1, 1e-5, 1e-1), "lrf": (1, 0.01, 1.0), "momentum": (0.3, 0.6, 0.98),
    "weight_decay": (1, 0.0, 0.001), "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95),
    "warmup_bias_lr": (1, 0.0, 0.2), "box": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0),
    "obj": (1, 0.2, 4.0), "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0),
    "fl_gamma": (0, 0.0, 2.0), "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0), "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001), "flipud": (1, 0.0, 1.0), "fliplr": (0, 0.0, 1.0), "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0), "copy_paste": (1, 0.0, 1.0),
}


# ---------------------------------------------------------------- keys, bounds, mutation


def parse_keys(keys: str | Iterable[str], allowed: Sequence[str] = HYP_KEYS) -> tuple[str, ...]:
    """``"lr0,lrf"`` or ``["lr0", "lrf"]`` -> ``("lr0", "lrf")``; every key must be one of ``allowed`` (the
    engine's hyp keys; YOLOv5's by default)."""
    items = [k.strip() for k in (keys.split(",") if isinstance(keys, str) else keys) if k and k.strip()]
    if not items:
        raise ValueError("no hyper-parameter keys to evolve")
    unknown = [k for k in items if k not in allowed]
    if unknown:
        raise ValueError(f"unknown hyper-parameter keys {unknown}; choose from {', '.join(allowed)}")
    if len(set(items)) != len(items):
        raise ValueError(f"repeated keys in {items}")
    return tuple(items)


def resolve_bounds(keys: Sequence[str], bounds: Mapping[str, tuple[float, float]] | None = None
                   ) -> dict[str, tuple[float, float]]:
    """Bounds per chosen key: ``bounds[key]`` where given, else YOLOv5's."""
    out = {}
    for k in keys:
        low, high = (bounds or {}).get(k, YOLOV5_EVOLVE_META[k][1:])
        low, high = float(low), float(high)
        if not low <= high:
            raise ValueError(f"bounds of {k}: lower {low} > upper {high}")
        out[k] = (low, high)
    extra = set(bounds or {}) - set(keys)
    if extra:
        raise ValueError(f"bounds given for keys that are not evolved: {sorted(extra)}")
    return out


def parse_bounds(text: str | None) -> dict[str, tuple[float, float]]:
    """``"lr0=1e-4:1e-2,momentum=0.8:0.95"`` -> ``{"lr0": (1e-4, 1e-2), "momentum": (0.8, 0.95)}``."""
    out: dict[str, tuple[float, float]] = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        try:
            key, rng = item.split("=")
            low, high = rng.split(":")
            out[key.strip()] = (float(low), float(high))
        except ValueError as e:
            raise ValueError(f"bad bounds {item!r}: expected key=low:high") from e
    return out


def _round(x: float) -> float:
    return float(f"{x:.5g}")


def constrain(hyp: Mapping[str, float], bounds: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Chosen keys clipped to their bounds and rounded to 5 significant digits; the rest untouched."""
    out = dict(hyp)
    for k, (low, high) in bounds.items():
        out[k] = _round(min(max(float(out[k]), low), high))
    return out


def select_parent(history: pd.DataFrame, keys: Sequence[str], rng: np.random.Generator, top_n: int = 5
                  ) -> dict[str, float]:
    """The chosen keys' values of one of the ``top_n`` fittest generations, drawn with weights
    ``fitness - min + 1e-6`` (better generations more often, the worst of the top ones almost never)."""
    if history.empty:
        raise ValueError("no finished generation to select a parent from")
    top = history.sort_values("fitness", ascending=False, kind="stable").head(top_n)
    f = top["fitness"].to_numpy(dtype=float)
    w = f - f.min() + 1e-6
    row = top.iloc[int(rng.choice(len(top), p=w / w.sum()))]
    return {k: float(row[k]) for k in keys}


def mutate(parent: Mapping[str, float], keys: Sequence[str], bounds: Mapping[str, tuple[float, float]],
           rng: np.random.Generator, mutation_prob: float = 0.8, sigma: float = 0.2,
           factor_clip: tuple[float, float] = (0.3, 3.0)) -> dict[str, float]:
    """YOLOv5's mutation applied to ``keys`` only (see the module docstring); returns the mutated chosen keys."""
    gains = np.array([YOLOV5_EVOLVE_META[k][0] or 1.0 for k in keys], dtype=float)
    n = len(keys)
    key_bounds = {k: bounds[k] for k in keys}
    start = constrain({k: float(parent[k]) for k in keys}, key_bounds)
    for _ in range(1000):
        v = (gains * (rng.random(n) < mutation_prob) * rng.standard_normal(n) * rng.random() * sigma + 1)
        v = v.clip(*factor_clip)
        mutated = constrain({k: float(parent[k]) * float(v[i]) for i, k in enumerate(keys)}, key_bounds)
        # At least one key must change after the bounds are applied (YOLOv5 checks before, so a key pushed
        # past its bound, e.g. lrf below 0.01, could repeat the parent and waste a generation).
        if any(mutated[k] != start[k] for k in keys):
            return mutated
    raise ValueError(f"cannot mutate {dict(start)} within bounds {key_bounds}: every key is pinned at a bound")


def next_hyp(history: pd.DataFrame, base_hyp: Mapping[str, float], keys: Sequence[str],
             bounds: Mapping[str, tuple[float, float]], seed: int, generation: int, top_n: int = 5,
             mutation_prob: float = 0.8, sigma: float = 0.2) -> dict[str, float]:
    """The hyp of ``generation``: the base (chosen keys constrained) for generation 0, else the base with the
    chosen keys replaced by a mutated parent drawn from ``history``. Deterministic in (seed, generation, history).
    With an empty history (parallel workers: a generation that starts before any other has finished) the parent
    is the base itself."""
    hyp = constrain(base_hyp, bounds)
    if generation == 0:
        return hyp
    rng = np.random.default_rng([int(seed), int(generation)])
    parent = select_parent(history, keys, rng, top_n) if len(history) else {k: hyp[k] for k in keys}
    hyp.update(mutate(parent, keys, bounds, rng, mutation_prob, sigma))
    return hyp


# ---------------------------------------------------------------- contest fitness


# ---------------------------------------------------------------- as an Optuna sampler


def search_space(bounds: Mapping[str, tuple[float, float]]) -> dict[str, FloatDistribution]:
    """One float distribution per key; log scale where the bounds are positive and span two decades or more."""
    return {k: FloatDistribution(float(low), float(high), log=bool(low > 0 and high / low >= LOG_SCALE_RATIO))
            for k, (low, high) in bounds.items()}


@dataclass(frozen=True)
class GeneticSettings:
    """YOLOv5's genetic algorithm settings: parents among the ``top_n`` fittest, mutation probability, sigma."""

    top_n: int = 5
    mutation_prob: float = 0.8
    sigma: float = 0.2


class GeneticSampler(optuna.samplers.BaseSampler):
    """YOLOv5 7.0's ``train.py --evolve`` as an Optuna sampler, over the chosen keys only (the original's change).

    Trial 0 proposes the base hyp (its keys constrained to the bounds). Every later trial draws a parent among the
    ``top_n`` finished (COMPLETE) trials by fitness, with weights ``fitness - min + 1e-6`` (YOLOv5's 'single'
    selection), and mutates it: per key, with probability ``mutation_prob``, a factor
    ``1 + gain * N(0, 1) * U(0, 1) * sigma`` (one uniform shared by all keys), clipped to [0.3, 3.0], drawn again
    until some key changes; values are clipped to the bounds and rounded to 5 significant digits
    (:func:`livestock.model.evolve.next_hyp`). A trial that starts before any has finished mutates the base. Random
    draws come from ``numpy.random.default_rng([seed, trial number])``: the same seed and history give the same proposal
    in any worker. Fitness is maximised.
    """

    def __init__(self, base_hyp: Mapping[str, float], bounds: Mapping[str, tuple[float, float]], seed: int = 0,
                 settings: GeneticSettings = GeneticSettings()) -> None:
        self._base = dict(base_hyp)
        self._bounds = {k: (float(lo), float(hi)) for k, (lo, hi) in bounds.items()}
        self._keys = tuple(self._bounds)
        self._space = search_space(self._bounds)
        self._seed = int(seed)
        self._settings = settings
        self._independent = optuna.samplers.RandomSampler(seed=seed)  # only for parameters outside the keys

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The searched keys' distributions: every trial samples them together."""
        return dict(self._space)

    def history(self, study: optuna.Study) -> pd.DataFrame:
        """The finished trials a parent may come from: fitness and the keys, in trial order."""
        rows = [{"fitness": t.value, **{k: t.params[k] for k in self._keys}}
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if all(k in t.params for k in self._keys)]
        return pd.DataFrame(rows, columns=["fitness", *self._keys])

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The GA's proposal for ``trial`` (see the class docstring)."""
        if not search_space:
            return {}
        s = self._settings
        hyp = next_hyp(self.history(study), self._base, self._keys, self._bounds, self._seed, trial.number,
                       s.top_n, s.mutation_prob, s.sigma)
        return {k: hyp[k] for k in search_space}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """A random value for a parameter outside the searched keys."""
        return self._independent.sample_independent(study, trial, param_name, param_distribution)
