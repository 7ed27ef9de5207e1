"""livestock.model.evolve: mutation of chosen keys only and within bounds, parent selection, determinism, the contest
fitness, and an evolution that survives being killed mid-generation."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from killed_training import kill_when

import livestock.model.evolve as V
import livestock.model.objective as O
import livestock.model.genetic as G
from livestock.model.yolov5.compat import HYP_KEYS, load_hyp

BASE = load_hyp("experiment_hyp_v1")


def _history(fitness: list[float], **keys: list[float]) -> pd.DataFrame:
    rows = []
    for g, f in enumerate(fitness):
        rows.append({"generation": g, "fitness": f, **BASE, **{k: v[g] for k, v in keys.items()}})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- keys, bounds


def test_parse_keys_and_bounds():
    assert G.parse_keys("lr0, lrf,momentum") == ("lr0", "lrf", "momentum")
    assert G.parse_keys(["box"]) == ("box",)
    with pytest.raises(ValueError, match="unknown hyper-parameter keys \\['lr_0'\\]"):
        G.parse_keys("lr_0")
    with pytest.raises(ValueError, match="repeated"):
        G.parse_keys("lr0,lr0")
    with pytest.raises(ValueError, match="no hyper-parameter keys"):
        G.parse_keys(" , ")
    assert G.parse_bounds("lr0=1e-4:1e-2, momentum=0.8:0.95") == {"lr0": (1e-4, 1e-2), "momentum": (0.8, 0.95)}
    with pytest.raises(ValueError, match="key=low:high"):
        G.parse_bounds("lr0=0.1")
    assert G.resolve_bounds(G.DEFAULT_KEYS) == {"lr0": (1e-5, 1e-1), "lrf": (0.01, 1.0), "momentum": (0.6, 0.98)}
    assert G.resolve_bounds(["lr0"], {"lr0": (1e-3, 1e-2)}) == {"lr0": (1e-3, 1e-2)}
    with pytest.raises(ValueError, match="not evolved"):
        G.resolve_bounds(["lr0"], {"lrf": (0.1, 0.2)})
    with pytest.raises(ValueError, match="lower"):
        G.resolve_bounds(["lr0"], {"lr0": (0.2, 0.1)})


# ---------------------------------------------------------------- mutation


def test_mutation_changes_only_chosen_keys_within_bounds():
    keys = G.DEFAULT_KEYS
    bounds = G.resolve_bounds(keys)
    # Parents at and near the bounds: mutations push past them and must be clipped back.
    history = _history([0.5, 0.7, 0.6, 0.2, 0.9, 0.1],
                       lr0=[1e-5, 0.1, 0.009, 0.05, 0.02, 0.001], lrf=[0.01, 1.0, 0.08, 0.5, 0.3, 0.02],
                       momentum=[0.6, 0.98, 0.94, 0.7, 0.9, 0.65])
    seen_change = {k: 0 for k in keys}
    for gen in range(1, 151):
        hyp = G.next_hyp(history, BASE, keys, bounds, seed=7, generation=gen)
        assert set(hyp) == set(BASE)
        for k in HYP_KEYS:
            if k not in keys:
                assert hyp[k] == BASE[k], k
        for k, (low, high) in bounds.items():
            assert low <= hyp[k] <= high, (k, hyp[k])
        parents = [history.loc[i, list(keys)].to_dict() for i in range(len(history))]
        assert any(hyp[k] != p[k] for p in parents for k in keys)  # never an exact copy of a parent
        for k in keys:
            seen_change[k] += hyp[k] not in set(history[k])
    assert all(n > 50 for n in seen_change.values()), seen_change  # every chosen key does move


def test_mutation_factor_is_yolov5s():
    """Factors are 1 + gain * N(0,1) * U(0,1) * sigma, clipped to [0.3, 3]: momentum (gain 0.3) moves less."""
    rng = np.random.default_rng(0)
    bounds = {"lr0": (0.0, 1e9), "momentum": (0.0, 1e9)}
    factors = np.array([list(G.mutate({"lr0": 1.0, "momentum": 1.0}, ["lr0", "momentum"], bounds, rng).values())
                        for _ in range(4000)])
    assert factors.min() >= 0.3 and factors.max() <= 3.0
    lr_dev, mom_dev = np.abs(factors[:, 0] - 1), np.abs(factors[:, 1] - 1)
    assert mom_dev.mean() == pytest.approx(0.3 * lr_dev.mean(), rel=0.15)
    # E|N(0,1)| * E[U] * sigma * P(mutate) = 0.798 * 0.5 * 0.2 * 0.8 for lr0 (before the retry on no change).
    assert lr_dev.mean() == pytest.approx(0.798 * 0.5 * 0.2 * 0.8, rel=0.15)
    assert (factors[:, 0] == 1).mean() == pytest.approx(0.2, abs=0.04)  # mutation probability 0.8


def test_mutation_changes_a_key_after_the_bounds_apply():
    """A parent at a bound (lrf = 0.01, the lower bound) mutated downwards would be clipped back to itself;
    the retry happens after clipping, so every generation tries a new value."""
    rng = np.random.default_rng(0)
    bounds = {"lrf": (0.01, 1.0)}
    children = [G.mutate({"lrf": 0.01}, ["lrf"], bounds, rng)["lrf"] for _ in range(200)]
    assert min(children) > 0.01 and max(children) <= 1.0
    with pytest.raises(ValueError, match="pinned"):
        G.mutate({"lrf": 0.5}, ["lrf"], {"lrf": (0.5, 0.5)}, rng)


def test_parent_selection_is_weighted_among_the_top_n():
    history = _history([0.10, 0.90, 0.50, 0.30, 0.80, 0.05, 0.85], lr0=[0.001 * (i + 1) for i in range(7)])
    rng = np.random.default_rng(1)
    picks = [G.select_parent(history, ["lr0"], rng, top_n=5)["lr0"] for _ in range(2000)]
    counts = pd.Series(picks).value_counts()
    top5 = {0.002, 0.007, 0.005, 0.003, 0.004}  # fitness 0.90, 0.85, 0.80, 0.50, 0.30
    assert set(counts.index) <= top5
    assert 0.001 not in counts.index and 0.006 not in counts.index  # outside the top 5: never
    assert counts.get(0.004, 0) < 10  # the worst of the top 5 has weight ~1e-6
    w = np.array([0.90, 0.85, 0.80, 0.50]) - 0.30  # weights fitness - min
    expected = w / w.sum() * 2000
    observed = np.array([counts.get(v, 0) for v in (0.002, 0.007, 0.005, 0.003)])
    assert np.allclose(observed, expected, rtol=0.2)
    assert G.select_parent(history, ["lr0"], rng, top_n=1)["lr0"] == 0.002


def test_next_hyp_is_deterministic_and_generation_zero_is_the_base():
    keys, bounds = G.DEFAULT_KEYS, G.resolve_bounds(G.DEFAULT_KEYS)
    history = _history([0.4, 0.6], lr0=[0.009, 0.02], lrf=[0.08, 0.1], momentum=[0.94, 0.9])
    assert G.next_hyp(pd.DataFrame(), BASE, keys, bounds, seed=0, generation=0) == BASE
    a = G.next_hyp(history, BASE, keys, bounds, seed=3, generation=2)
    assert a == G.next_hyp(history, BASE, keys, bounds, seed=3, generation=2)
    others = [G.next_hyp(history, BASE, keys, bounds, seed=s, generation=g) for s, g in ((4, 2), (3, 3))]
    assert all(o != a for o in others)
    outside = {**BASE, "lr0": 0.5}
    assert G.next_hyp(pd.DataFrame(), outside, keys, bounds, 0, 0)["lr0"] == 0.1  # the base is constrained too


def test_resume_refuses_other_settings(tmp_path):
    settings = V._settings(data="d.yaml", model=None, weights=None, base_hyp=BASE, keys=["lr0"],
                           bounds={"lr0": [1e-5, 0.1]}, fitness="yolov5", imgsz=128, epochs=1, batch_size=8,
                           optimizer="SGD", linear_lr=True, seed=0, top_n=5, mutation_prob=0.8, sigma=0.2)
    V._check_resume(tmp_path, settings)  # first start: writes the settings
    V._check_resume(tmp_path, dict(settings))  # same: fine
    with pytest.raises(ValueError, match=r"evolve_settings\.yaml.*keys: \['lr0'\] there, \['lrf'\] now"):
        V._check_resume(tmp_path, {**settings, "keys": ["lrf"]})


def test_evolve_refuses_a_training_setting_it_does_not_pass(tmp_path):
    """evolve() forwards only the trial settings it names; a typo or a per-run setting is refused before any folder
    is made."""
    with pytest.raises(ValueError, match=r"evolve\(\) takes no training setting \['batch'\]; it takes model, weights"):
        V.evolve(tmp_path / "data.yaml", batch=8, project=tmp_path, name="never")
    assert not (tmp_path / "never").exists()


def test_resume_refuses_an_evolution_of_other_data(tmp_path):
    """New zips behind the same data.yaml path: the evolution folder of the old ones is not continued."""
    from livestock.provenance import StaleError

    settings = V._settings(data="d.yaml", inputs="aaa", model=None, weights=None, base_hyp=BASE, keys=["lr0"],
                           bounds={"lr0": [1e-5, 0.1]}, fitness="yolov5", imgsz=128, epochs=1, batch_size=8,
                           optimizer="SGD", linear_lr=True, seed=0, top_n=5, mutation_prob=0.8, sigma=0.2)
    V._check_resume(tmp_path, settings)
    with pytest.raises(StaleError, match=r"evolved on other data than d\.yaml now describes.*another --name"):
        V._check_resume(tmp_path, {**settings, "inputs": "bbb"})


# ---------------------------------------------------------------- contest fitness (slow: needs a trained model)


@pytest.mark.slow
def test_contest_fitness_is_the_final_score_path(tiny_trained_model, tiny_train_result, tmp_path):
    """The fitness equals, to the last digit, the contest score of an answer.csv written by the inference stage's
    own functions (detect at the default NMS setting -> submission -> metric) for the same images."""
    from livestock.data.yolo_format import split_records
    from livestock.evaluation.detect import DEFAULT_CONF, DEFAULT_IOU, detect
    from livestock.evaluation.inference import score_answer
    from livestock.evaluation.submission import records_to_answer, write_submission

    weights, data_yaml = tiny_trained_model
    imgsz = tiny_train_result.imgsz
    records = split_records(data_yaml, "val")
    n_labels = sum(len(p.read_text().split()) // 5 for p in (data_yaml.parent / "labels" / "val").glob("*.txt"))
    assert sum(r.n_boxes for r in records) == n_labels == tiny_train_result.metrics.loc["all", "instances"]
    records_to_answer(records).to_csv(tmp_path / "answer.csv", index=False)
    write_submission(detect(weights, records, imgsz, DEFAULT_CONF, DEFAULT_IOU, device="cpu", progress=False),
                     tmp_path / "submission.csv")
    final = score_answer(tmp_path / "answer.csv", tmp_path / "submission.csv")
    score = O.contest_fitness(weights, data_yaml, imgsz=imgsz, device="cpu")
    assert score == final["map_75"]
    assert score > 0.05  # the tiny model has learned its toy set: the equality above is not 0 == 0
    # Looser IoU, higher score: the metric really is computed at the threshold asked for.
    assert O.contest_fitness(weights, data_yaml, imgsz=imgsz, device="cpu", iou_threshold=0.5) > score


# ---------------------------------------------------------------- evolution killed and resumed (slow)


@pytest.mark.slow
def test_evolution_resumes_after_being_killed(tmp_path):
    from toy_yolo import make_toy_yolo_dataset

    data = make_toy_yolo_dataset(tmp_path / "toy", n_train=16, n_val=8)
    args = dict(generations=3, epochs=2, keys="lr0,momentum", fitness="contest", imgsz=64, batch_size=8,
                device="cpu", workers=0, project=str(tmp_path / "evolve"), name="mini", seed=5)
    cmd = [sys.executable, "-m", "livestock.cli", "evolve", "--data", str(data)]
    for k, v in args.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    folder = tmp_path / "evolve" / "mini"
    # killed 0.3 s into generation 2's training (trial 1), which takes seconds even at this size
    kill_when(cmd, lambda: (folder / "trial_001" / "hyp.yaml").exists(), cwd=tmp_path, delay_s=0.3)
    first = pd.read_csv(folder / "evolve.csv")
    assert list(first["generation"]) == [0]  # generation 2 was interrupted: no row for it
    first_text = (folder / "evolve.csv").read_text().splitlines()

    result = V.evolve(data, **args)  # the same call continues
    history = pd.read_csv(folder / "evolve.csv")
    assert list(history["generation"]) == [0, 1, 2] and len(result.history) == 3
    assert (folder / "evolve.csv").read_text().splitlines()[:2] == first_text  # generation 1's row unchanged
    for k in HYP_KEYS:
        if k in ("lr0", "momentum"):
            assert history[k].between(*G.YOLOV5_EVOLVE_META[k][1:]).all()
        else:
            assert (history[k] == load_hyp("hyp_scratch_cpu")[k]).all(), k
    assert history.loc[0, ["lr0", "momentum"]].tolist() == [0.01, 0.937]  # generation 0 trains the base hyp
    assert history["fitness"].equals(history["mAP@0.75"]) and history["fitness"].between(0, 1).all()
    best = history.loc[history["fitness"].idxmax()]
    assert result.best_generation == int(best["generation"]) and result.best_fitness == pytest.approx(best["fitness"])
    assert load_hyp(folder / "best_hyp.yaml") == pytest.approx({k: float(best[k]) for k in HYP_KEYS})
    assert (folder / "fitness.png").stat().st_size > 5000
    assert not (folder / "trial_000" / "weights").exists()  # scored generations drop their weights by default
    # The interrupted trial 1 failed and was trained again, first, with the same hyp (as trial 2).
    trials = pd.read_csv(folder / "trials.csv")
    assert trials.loc[trials["number"] == 1, "state"].item() == "FAIL"
    assert trials.loc[trials["number"] == 2, "retry_of"].item() == 1
    assert list(history["trial"]) == [0, 2, 3]
    assert history.loc[1, list(HYP_KEYS)].to_dict() == pytest.approx(load_hyp(folder / "trial_001" / "hyp.yaml"))
    assert V.evolve(data, **args).history.equals(result.history)  # finished: nothing left to do
    with pytest.raises(ValueError, match="other settings"):
        V.evolve(data, **{**args, "epochs": 3})


@pytest.mark.parametrize("argv, message", [(["--device", "bogus"], "bogus"), (["--img", "0"], "imgsz >= 32"),
                                           (["--batch", "0"], "batch_size >= 1")])
@pytest.mark.parametrize("command", ["evolve", "search"])
def test_settings_no_trial_can_take_fail_before_the_first_trial(tmp_path, capsys, monkeypatch, command, argv, message):
    from livestock.cli import main as cli_main
    from toy_yolo import make_toy_yolo_dataset

    monkeypatch.chdir(tmp_path)
    data = make_toy_yolo_dataset(tmp_path / "toy", n_train=4, n_val=2)
    out = ["--project", "ev", "--name", "mini"] if command == "evolve" else ["--trials", "2", "--out", "ev/mini"]
    assert cli_main([command, "--data", str(data), *out, *argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "Trial 0 failed" not in err
    assert not (tmp_path / "ev").exists()
