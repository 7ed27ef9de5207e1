"""livestock.model.search: the GA sampler against a hand computation of YOLOv5's rules, the samplers and pruners, the
storages, resume, and several worker processes sharing one study on a real PostgreSQL server and on a journal
file, one of them killed mid-trial."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from search_objectives import SlowQuadratic, epochs_quadratic, quadratic, run_worker, torch_threads

import livestock.model.evolve as V
import livestock.model.genetic as G
import livestock.model.search as S
from livestock.cli import main as cli_main
from livestock.model.yolov5.compat import load_hyp

BASE = load_hyp("hyp_scratch_cpu")
KEYS = G.DEFAULT_KEYS
BOUNDS = G.resolve_bounds(KEYS)
GAINS = {"lr0": 1.0, "lrf": 1.0, "momentum": 0.3}  # YOLOv5 7.0's mutation gains of the default keys

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study_with(fitness: list[float], params: list[dict], bounds=BOUNDS) -> optuna.Study:
    """An in-memory study holding complete trials with these fitness values and keys."""
    study = optuna.create_study(direction="maximize")
    space = S.search_space(bounds)
    for f, p in zip(fitness, params):
        study.add_trial(optuna.trial.create_trial(params=p, distributions={k: space[k] for k in p}, value=f))
    return study


def _propose(sampler: S.GeneticSampler, study: optuna.Study, number: int, bounds=BOUNDS) -> dict:
    return sampler.sample_relative(study, SimpleNamespace(number=number), S.search_space(bounds))


def _hand_ga(fitness, params, keys, bounds, seed, number, mp=0.8, sigma=0.2, gains=GAINS):
    """YOLOv5's evolve step written out from its rules, independently of livestock.model.evolve: returns
    (index of the chosen parent in the history, the child, how many factor draws it took)."""
    rng = np.random.default_rng([seed, number])
    order = sorted(range(len(fitness)), key=lambda i: -fitness[i])[:5]  # top 5 (ties: earlier first)
    f = np.array([fitness[i] for i in order])
    w = f - f.min() + 1e-6
    cdf = np.cumsum(w / w.sum())
    cdf /= cdf[-1]
    parent_index = order[int(cdf.searchsorted(rng.random(), side="right"))]  # Generator.choice(p=...)
    parent = params[parent_index]
    g = np.array([gains[k] for k in keys])

    def fit(k, x):
        low, high = bounds[k]
        return float(f"{min(max(x, low), high):.5g}")

    start = {k: fit(k, parent[k]) for k in keys}
    for draws in range(1, 1000):
        v = (g * (rng.random(len(keys)) < mp) * rng.standard_normal(len(keys)) * rng.random() * sigma + 1)
        v = v.clip(0.3, 3.0)
        child = {k: fit(k, parent[k] * v[i]) for i, k in enumerate(keys)}
        if child != start:
            return parent_index, child, draws
    raise AssertionError("no change in 1000 draws")


HISTORY_F = [0.10, 0.90, 0.50, 0.30, 0.80, 0.05, 0.85]
HISTORY_P = [{"lr0": 0.001 * (i + 1), "lrf": 0.1 + 0.05 * i, "momentum": 0.8 + 0.02 * i} for i in range(7)]


# ---------------------------------------------------------------- the GA sampler


def test_ga_first_proposal_is_the_base_and_infers_the_key_space():
    sampler = S.GeneticSampler(BASE, BOUNDS, seed=0)
    study = _study_with([], [])
    assert _propose(sampler, study, 0) == {k: BASE[k] for k in KEYS}
    space = sampler.infer_relative_search_space(study, None)
    assert list(space) == list(KEYS)
    assert all(isinstance(d, optuna.distributions.FloatDistribution) for d in space.values())
    assert space["lr0"].log and space["lrf"].log and not space["momentum"].log  # 4, 2 and < 2 decades
    outside = S.GeneticSampler({**BASE, "lr0": 0.5}, BOUNDS, seed=0)
    assert _propose(outside, study, 0)["lr0"] == 0.1  # the base is constrained to the bounds
    # Before any trial has finished (parallel workers) a later trial mutates the base.
    child = _propose(sampler, study, 1)
    assert child != {k: BASE[k] for k in KEYS}
    assert all(0.3 * BASE[k] - 1e-12 <= child[k] <= 3.0 * BASE[k] + 1e-12 for k in KEYS)


@pytest.mark.parametrize("seed,number", [(0, 7), (3, 8), (11, 12), (5, 30)])
def test_ga_proposal_matches_a_hand_computation(seed, number):
    study = _study_with(HISTORY_F, HISTORY_P)
    sampler = S.GeneticSampler(BASE, BOUNDS, seed=seed)
    parent_index, child, _ = _hand_ga(HISTORY_F, HISTORY_P, KEYS, BOUNDS, seed, number)
    assert _propose(sampler, study, number) == child
    assert HISTORY_F[parent_index] in sorted(HISTORY_F)[-5:]
    # The parent the sampler's history and rng lead to is the hand-computed one.
    rng = np.random.default_rng([seed, number])
    assert G.select_parent(sampler.history(study), KEYS, rng) == {k: HISTORY_P[parent_index][k] for k in KEYS}


def test_ga_parent_selection_weights_and_top_5():
    """Over many trial numbers the parents follow weights fitness - min + 1e-6 among the top 5 only."""
    study = _study_with(HISTORY_F, HISTORY_P)
    history = S.GeneticSampler(BASE, BOUNDS, seed=1).history(study)
    picks = [HISTORY_P.index({**G.select_parent(history, KEYS, np.random.default_rng([1, n]))})
             for n in range(3000)]
    counts = pd.Series(picks).value_counts()
    assert set(counts.index) <= {1, 6, 4, 2, 3}  # fitness 0.90, 0.85, 0.80, 0.50, 0.30
    assert counts.get(3, 0) < 10  # the worst of the top 5 has weight 1e-6
    w = np.array([0.90, 0.85, 0.80, 0.50]) - 0.30
    assert np.allclose([counts.get(i, 0) for i in (1, 6, 4, 2)], w / w.sum() * 3000, rtol=0.15)


def test_ga_factors_are_clipped_and_values_kept_in_bounds():
    wide = {"lr0": (1e-9, 1e9)}
    study = _study_with([0.5], [{"lr0": 1.0}], wide)
    wild = S.GeneticSampler(BASE, wide, seed=0, settings=S.GeneticSettings(sigma=50.0))  # factors far past 3
    ratios = np.array([_propose(wild, study, n, wide)["lr0"] for n in range(1, 400)])
    assert ratios.min() == pytest.approx(0.3) and ratios.max() == pytest.approx(3.0)
    assert ((ratios >= 0.3 - 1e-12) & (ratios <= 3.0 + 1e-12)).all()
    assert np.isclose(ratios, 0.3).sum() > 20 and np.isclose(ratios, 3.0).sum() > 20
    tight = {"lr0": (0.9, 1.1)}
    study = _study_with([0.5], [{"lr0": 1.0}], tight)
    values = np.array([_propose(S.GeneticSampler(BASE, tight, seed=0), study, n, tight)["lr0"] for n in range(1, 200)])
    assert values.min() == 0.9 and values.max() == 1.1 and (values != 1.0).all()


def test_ga_draws_again_until_a_key_changes():
    """With mutation probability 0.05 most draws change nothing; the sampler draws again, as the hand version."""
    keys, bounds = ("lr0",), {"lr0": BOUNDS["lr0"]}
    study = _study_with([0.5], [{"lr0": 0.01}], bounds)
    settings = S.GeneticSettings(mutation_prob=0.05)
    retried = 0
    for number in range(1, 30):
        _, child, draws = _hand_ga([0.5], [{"lr0": 0.01}], keys, bounds, 4, number, mp=0.05)
        retried += draws > 1
        assert _propose(S.GeneticSampler(BASE, bounds, seed=4, settings=settings), study, number, bounds) == child
        assert child["lr0"] != 0.01
    assert retried > 20  # the retry really happened, most of the time


def test_ga_in_a_study_replays_the_evolution_rules(tmp_path):
    """run_search with the GA proposes, trial after trial, what livestock.model.evolve.next_hyp gives for the history
    so far; the same seed gives the same trials, another seed others."""
    result = S.run_search(quadratic, trials=6, sampler="ga", base_hyp=BASE, seed=7, out=tmp_path / "a", progress=False)
    t = result.trials
    assert list(t["number"]) == list(range(6)) and (t["state"] == "COMPLETE").all()
    for i in range(6):
        history = t.loc[: i - 1, ["fitness", *KEYS]] if i else pd.DataFrame()
        expected = G.next_hyp(history, BASE, KEYS, BOUNDS, seed=7, generation=i)
        assert t.loc[i, list(KEYS)].to_dict() == {k: expected[k] for k in KEYS}
    again = S.run_search(quadratic, trials=6, sampler="ga", base_hyp=BASE, seed=7, out=tmp_path / "b", progress=False)
    other = S.run_search(quadratic, trials=6, sampler="ga", base_hyp=BASE, seed=8, out=tmp_path / "c", progress=False)
    assert again.trials[list(KEYS)].equals(t[list(KEYS)])
    assert not other.trials[list(KEYS)].equals(t[list(KEYS)])


# ---------------------------------------------------------------- samplers, pruners, outputs


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "random"])
def test_other_samplers_start_from_the_base_and_stay_in_bounds(sampler, tmp_path):
    result = S.run_search(quadratic, trials=7, sampler=sampler, base_hyp=BASE, seed=0, out=tmp_path, progress=False)
    t = result.trials
    assert (t["state"] == "COMPLETE").sum() == 7 and len(t) == 7
    assert t.loc[0, list(KEYS)].to_dict() == {k: BASE[k] for k in KEYS}  # the base is measured first
    for k, (low, high) in BOUNDS.items():
        assert t[k].between(low, high).all()
    assert t[list(KEYS)].drop_duplicates().shape[0] == 7
    assert result.best_fitness == t["fitness"].max()


def test_median_pruner_prunes_and_pruned_trials_count_as_finished(tmp_path):
    result = S.run_search(epochs_quadratic, trials=14, sampler="random", pruner="median", base_hyp=BASE, seed=1,
                          out=tmp_path, progress=False)
    states = result.trials["state"].value_counts()
    assert states.get("PRUNED", 0) >= 2 and states.get("COMPLETE", 0) >= 5
    assert states.get("PRUNED", 0) + states.get("COMPLETE", 0) == 14 == result.finished
    hyperband = S.run_search(epochs_quadratic, trials=6, sampler="tpe", pruner="hyperband", base_hyp=BASE,
                             out=tmp_path / "hb", progress=False)
    assert hyperband.finished == 6
    with pytest.raises(ValueError, match="pruner must be one of"):
        S.run_search(quadratic, trials=2, pruner="sometimes", out=tmp_path / "x", progress=False)


def test_reporter_raises_trial_pruned_when_the_pruner_says_so():
    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(pruner=Always())
    trial = study.ask()
    reporter = S.TrialReporter(trial)
    with pytest.raises(optuna.TrialPruned, match="epoch 3"):
        reporter.report(3, 0.5)
    assert study.trials[0].intermediate_values == {3: 0.5}
    reporter.record(P=np.float32(0.25), epochs_run=3)
    assert study.trials[0].user_attrs == {"P": 0.25, "epochs_run": 3}


def test_resume_extend_settings_and_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    first = S.run_search(quadratic, trials=3, storage=url, study_name="s", base_hyp=BASE, out=tmp_path, progress=False)
    more = S.run_search(quadratic, trials=5, storage=url, study_name="s", base_hyp=BASE, out=tmp_path, progress=False)
    assert more.finished == 5 and list(more.trials["number"]) == list(range(5))
    assert more.trials.loc[:2, ["fitness", *KEYS]].equals(first.trials[["fitness", *KEYS]])
    done = S.run_search(quadratic, trials=5, storage=url, study_name="s", base_hyp=BASE, out=tmp_path, progress=False)
    assert len(done.trials) == 5  # finished: nothing left to do
    with pytest.raises(ValueError, match=r"other settings \(keys: \['lr0', 'lrf', 'momentum'\] there, \['lr0'\] here"):
        S.run_search(quadratic, trials=5, keys="lr0", storage=url, study_name="s", base_hyp=BASE, out=tmp_path,
                     progress=False)
    with pytest.raises(ValueError, match="no study 'typo'"):
        S.run_search(quadratic, trials=5, storage=url, study_name="typo", join=True, out=tmp_path, progress=False)


def test_exclusive_start_retries_a_trial_left_running(tmp_path):
    journal = tmp_path / "study.log"
    S.run_search(quadratic, trials=2, storage=journal, base_hyp=BASE, out=tmp_path, progress=False)
    storage = S.open_storage(str(journal))
    study = optuna.load_study(study_name="search", storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # heartbeats expect optimize(); this trial is meant to be orphaned
        orphan = study.ask(S.search_space(BOUNDS))  # a trial whose worker vanished: RUNNING, never told
    result = S.run_search(quadratic, trials=3, storage=journal, base_hyp=BASE, out=tmp_path, exclusive=True,
                          progress=False)
    t = result.trials.set_index("number")
    assert t.loc[orphan.number, "state"] == "FAIL"
    retry = t[t["retry_of"] == orphan.number]
    assert len(retry) == 1 and retry["state"].iloc[0] == "COMPLETE"
    assert retry[list(KEYS)].iloc[0].to_dict() == orphan.params
    assert result.finished == 3


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_retried(tmp_path):
    """Optuna's RDB heartbeat never marks stale a trial that has no heartbeat yet (its worker died between creating
    it and starting it); the workers waiting for the last slot retry it once it has gone unclaimed for the grace
    period, instead of waiting for ever."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    S.run_search(quadratic, trials=2, storage=url, base_hyp=BASE, out=tmp_path, progress=False)
    study = optuna.load_study(study_name="search", storage=url)  # no heartbeat: as a worker killed at once
    orphan = study.ask()
    done: dict = {}
    worker = threading.Thread(daemon=True, target=lambda: done.update(result=S.run_search(
        quadratic, trials=3, storage=url, base_hyp=BASE, out=tmp_path, heartbeat_interval=1, grace_period=1,
        progress=False)))
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the worker waited for ever for the orphaned trial"
    result = done["result"]
    t = result.trials.set_index("number")
    assert t.loc[orphan.number, "state"] == "FAIL" and (t["retry_of"] == orphan.number).sum() == 1
    assert result.finished == 3


def test_several_workers_need_a_picklable_objective(tmp_path):
    with pytest.raises(ValueError, match="must be picklable"):
        S.run_search(lambda hyp, reporter: 0.0, trials=2, workers=2, out=tmp_path, progress=False)


@pytest.mark.parametrize("user_threads", [None, "1"])
def test_workers_on_one_machine_share_its_cpus(tmp_path, monkeypatch, user_threads):
    """Two worker processes train with half the usable CPUs each (PyTorch would give each a thread per core), unless
    the user set OMP_NUM_THREADS."""
    from livestock.model.run_record import usable_cpus

    if user_threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", user_threads)
    result = S.run_search(torch_threads, trials=2, workers=2, base_hyp=BASE, out=tmp_path, progress=False)
    expected = max(1, usable_cpus() // 2) if user_threads is None else int(user_threads)
    assert result.trials["fitness"].tolist() == [float(expected)] * 2


def test_a_trial_started_for_a_taken_slot_gives_it_up(tmp_path):
    """Two workers that passed the free-slot check at the same moment for the last slot: the lower trial number
    keeps it, the other trial is given up before the objective runs."""
    journal = tmp_path / "study.log"
    S.run_search(quadratic, trials=2, storage=journal, base_hyp=BASE, out=tmp_path, progress=False)
    plan = S._Plan(objective=quadratic, storage=str(journal), study_name="search", trials=3, bounds=BOUNDS,
                   base_hyp=BASE, sampler="ga", pruner="none", seed=0, ga=S.GeneticSettings(), heartbeat_interval=30,
                   grace_period=None)
    study = S._load_study(plan, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # heartbeats expect optimize(); these trials are driven by hand
        first, second = study.ask(), study.ask()
    run = S._optuna_objective(study, plan)
    with pytest.raises(S._SurplusTrial, match="all 3 slots were taken"):
        run(second)
    assert run(first) == quadratic({**BASE, **first.params}, None)
    assert study.trials[second.number].user_attrs[S.SURPLUS_ATTR] is True
    assert S.SURPLUS_ATTR not in study.trials[first.number].user_attrs


def test_storage_urls():
    assert S.storage_url(None, "runs/x") == str(Path("runs/x/study.log"))
    assert S.storage_url("postgresql://u:p@h/db", ".") == "postgresql+psycopg://u:p@h/db"
    assert S.storage_url("postgresql+psycopg://u:p@h/db", ".") == "postgresql+psycopg://u:p@h/db"
    assert S.storage_url("sqlite:///a.db", ".") == "sqlite:///a.db"
    assert S.storage_url(Path("x/j.log"), ".") == str(Path("x/j.log"))
    with pytest.raises(ValueError, match="ending in .log"):
        S.storage_url("x/j.txt", ".")
    assert S.display_url("postgresql+psycopg://u:secret@h/db") == "postgresql+psycopg://u:***@h/db"


def test_importances_need_enough_trials(tmp_path):
    few = S.run_search(quadratic, trials=2, base_hyp=BASE, out=tmp_path / "few", progress=False)
    assert few.importances.empty and "need 4 complete trials, the study has 2" in few.importance_note
    assert pd.read_csv(tmp_path / "few" / "importances.csv").empty
    many = S.run_search(quadratic, trials=10, sampler="random", base_hyp=BASE, out=tmp_path / "many", progress=False)
    assert sorted(many.importances["key"]) == sorted(KEYS)
    assert many.importances["importance"].sum() == pytest.approx(1.0)


def test_cli_search_with_a_cheap_objective(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli_main(["search", "--objective", "search_objectives:quadratic", "--sampler", "tpe", "--trials", "6",
                   "--study", "cli", "--out", str(out), "--keys", "lr0,momentum", "--bounds", "lr0=1e-4:1e-1",
                   "--seed", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 6 and (trials["state"] == "COMPLETE").all() and trials["lr0"].between(1e-4, 1e-1).all()
    best = trials.loc[trials["fitness"].idxmax()]
    assert f"best: trial {int(best['number'])} with fitness {best['fitness']:.5f}" in printed
    hyp = load_hyp(out / "best_hyp.yaml")
    assert hyp == {**BASE, "lr0": best["lr0"], "momentum": best["momentum"]}  # every key; lrf from the base
    assert (out / "study.log").is_file() and (out / "fitness.png").stat().st_size > 5000
    assert sorted(pd.read_csv(out / "importances.csv")["key"]) == ["lr0", "momentum"]
    assert cli_main(["search", "--trials", "2", "--out", str(tmp_path / "nodata")]) == 1
    assert "--data is required" in capsys.readouterr().err


def test_evolve_is_the_ga_search_with_the_original_files(tmp_path):
    args = dict(generations=4, keys="lr0,momentum", base_hyp="hyp_scratch_cpu", project=tmp_path, name="mini",
                seed=5, objective=quadratic)
    result = V.evolve(tmp_path / "data.yaml", **args)
    folder = tmp_path / "mini"
    history = pd.read_csv(folder / "evolve.csv")
    assert list(history.columns[:3]) == ["generation", "trial", "fitness"]
    assert list(history.columns[3:10]) == [*V.METRIC_COLUMNS, "epochs_run", "seconds"]
    assert list(history["generation"]) == [0, 1, 2, 3] and len(result.history) == 4
    search = pd.read_csv(folder / "trials.csv")
    for g in range(4):
        expected = G.next_hyp(history.loc[: g - 1] if g else pd.DataFrame(), BASE, ("lr0", "momentum"),
                              G.resolve_bounds(("lr0", "momentum")), seed=5, generation=g)
        assert history.loc[g, list(BASE)].to_dict() == pytest.approx(expected)
    assert history["fitness"].tolist() == search["fitness"].tolist()
    best = history.loc[history["fitness"].idxmax()]
    assert result.best_generation == int(best["generation"])
    assert load_hyp(folder / "best_hyp.yaml") == pytest.approx({k: float(best[k]) for k in BASE})
    assert V.evolve(tmp_path / "data.yaml", **args).history.equals(result.history)
    longer = V.evolve(tmp_path / "data.yaml", **{**args, "generations": 6})
    assert len(longer.history) == 6 and longer.history.loc[:3].equals(result.history)
    with pytest.raises(ValueError, match="other settings"):
        V.evolve(tmp_path / "data.yaml", **{**args, "seed": 6})


def test_training_objective_checks_its_inputs(tmp_path):
    with pytest.raises(ValueError, match="fitness must be one of"):
        S.training_objective(tmp_path / "data.yaml", epochs=1, fitness="map")
    with pytest.raises(FileNotFoundError):
        S.training_objective(tmp_path / "missing.yaml", epochs=1)
    with pytest.raises(ValueError, match=r"no training setting \['batch'\]"):  # TrainSettings calls it batch_size
        S.training_objective(tmp_path / "data.yaml", epochs=1, batch=16)


def test_training_objective_describes_a_study_as_stored_studies_do(tmp_path):
    # What a study stores for its workers to agree on; studies made before the objective held one TrainSettings
    # stored exactly this dict (a 3-epoch GA study from the pretrained weights), and must still be joinable.
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [cow, pig]\n")
    objective = S.training_objective(tmp_path / "data.yaml", epochs=3, imgsz=320, batch_size=16, workers=1, seed=2,
                                     weights=tmp_path / "pretrained_yolov5n_320.pt", project=tmp_path / "study")
    assert objective.describe() == {"kind": "training", "epochs": 3, "imgsz": 320, "batch": 16, "model": None,
                                    "weights": "pretrained_yolov5n_320.pt", "fitness": "contest", "optimizer": "SGD",
                                    "linear_lr": True, "engine": "yolov5"}
    t = objective.training  # what every trial's training gets
    assert (t.epochs, t.imgsz, t.batch_size, t.workers, t.seed) == (3, 320, 16, 1, 2)
    assert t.project == str(tmp_path / "study")
    assert t.weights == str(tmp_path / "pretrained_yolov5n_320.pt") and t.options == {}


# ---------------------------------------------------------------- several workers, one study


@pytest.fixture(params=["postgres", "journal"])
def shared_storage(request, tmp_path):
    """A storage URL several processes share: the real PostgreSQL server over TCP with a password, or a journal file."""
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        name = f"s{time.monotonic_ns()}"  # one study per test on the session's server
        return server.url(), name
    return str(tmp_path / "shared.log"), "shared"


def server_password(url: str) -> str:
    return url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


def _finished_study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=S.open_storage(url))


def test_two_worker_processes_finish_exactly_the_requested_trials(shared_storage, tmp_path):
    url, name = shared_storage
    marks = tmp_path / "marks"
    marks.mkdir()
    objective = SlowQuadratic(str(marks), sleep_s=0.25, parties=2)
    result = S.run_search(objective, trials=8, workers=2, sampler="tpe", storage=url, study_name=name, base_hyp=BASE,
                          out=tmp_path / "out", heartbeat_interval=1, grace_period=3, progress=False)
    trials = _finished_study(url, name).get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8 and not [t for t in trials if t.state in (TrialState.PRUNED, TrialState.RUNNING,
                                                                        TrialState.WAITING)]
    # Anything else is a trial given up for a slot another worker took first: it never ran the objective.
    assert all(t.user_attrs.get(S.SURPLUS_ATTR) for t in trials if t.state == TrialState.FAIL)
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 8  # no duplicate params
    assert len({t.user_attrs[S.WORKER_ATTR] for t in complete}) == 2  # both workers ran trials
    assert len(list(marks.glob("end-*"))) == 8  # the objective ran exactly 8 times
    assert result.finished == 8 and len(result.trials) == 8
    assert url.endswith(".log") or ("***" in result.storage and server_password(url) not in result.storage)
    best = max(complete, key=lambda t: t.value)
    assert result.best_trial == best.number
    assert load_hyp(tmp_path / "out" / "best_hyp.yaml") == {**BASE, **best.params}


@pytest.mark.slow
def test_a_killed_worker_s_trial_is_retried_and_the_study_completes(shared_storage, tmp_path):
    url, name = shared_storage
    marks = tmp_path / "marks"
    marks.mkdir()
    victim = 3
    objective = SlowQuadratic(str(marks), sleep_s=0.2, parties=2, victim=victim, victim_sleep_s=120)
    kwargs = dict(objective=objective, trials=8, sampler="ga", storage=url, study_name=name, base_hyp=BASE,
                  out=str(tmp_path / "out"), heartbeat_interval=1, grace_period=2, seed=3)
    ctx = multiprocessing.get_context("spawn")
    # Two workers joining one study, as two machines would.
    procs = [ctx.Process(target=run_worker, kwargs=kwargs) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 120  # a hang detector only
        while not list(marks.glob(f"start-{victim}-*")):
            assert time.monotonic() < deadline, "the victim trial never started"
            assert all(p.is_alive() for p in procs), [p.exitcode for p in procs]
            time.sleep(0.05)
        pid = int(next(marks.glob(f"start-{victim}-*")).name.rsplit("-", 1)[1])
        time.sleep(1.0)  # mid-trial, with a heartbeat recorded
        os.kill(pid, signal.SIGKILL)
        for p in procs:
            p.join(90)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    killed = next(p for p in procs if p.pid == pid)
    survivor = next(p for p in procs if p.pid != pid)
    assert killed.exitcode == -signal.SIGKILL and survivor.exitcode == 0

    trials = _finished_study(url, name).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[victim].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == by_number[victim].params and retries[0].system_attrs["retry_history"] == [victim]
    assert retries[0].user_attrs[S.WORKER_ATTR].endswith(f":{survivor.pid}")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 8 and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t.user_attrs.get(S.SURPLUS_ATTR) for t in trials if t.state == TrialState.FAIL and t.number != victim)
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert table.loc[table["number"] == retries[0].number, "retry_of"].item() == victim
    complete_rows = table[table["state"] == "COMPLETE"]
    assert len(complete_rows) == 8 and complete_rows["fitness"].notna().all()


@pytest.mark.parametrize("url, message", [("bogus://x", "bogus://x: cannot open the study's database"),
                                          ("sqlite:///{tmp}/nodir/x.db", "unable to open database file")])
def test_a_storage_that_cannot_open_is_one_line(tmp_path, capsys, url, message):
    rc = cli_main(["search", "--objective", "search_objectives:quadratic", "--trials", "1",
                   "--storage", url.format(tmp=tmp_path), "--out", str(tmp_path / "st")])
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err
