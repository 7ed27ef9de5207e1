"""The main job's progress lines and time-left estimate (livestock.pipeline_progress), fed events with known times,
and the progress file follower (livestock.progress.follow_events)."""
from __future__ import annotations

import time

import pytest

from livestock import progress
from livestock.pipeline_progress import (PRIOR_S_PER_IMAGE_EPOCH, RUN_OVERHEAD_S, STAGE_OVERHEAD_S, STAGE_PRIORS,
                                         JobEstimate, JobSettings, format_duration, format_elapsed)

# 100 images, nothing on disk yet: mini 40 + 20, multilabel 80 + 20 by the fold shares; 20 test images.
SETTINGS = JobSettings(n_train=100, n_test=20, model="yolov5n", imgsz=320, evolve_trials=2, evolve_epochs=2,
                       epochs=3, silver_modes=("replace", "union"))


def _epoch(t: float, epoch: int, epochs: int, **metrics) -> dict:
    return {"time": t, "kind": "epoch", "epoch": epoch, "epochs": epochs, "loss": 0.08121, "P": 0.5, "R": 0.4,
            "mAP@0.5": 0.4123, "mAP@0.5:0.95": 0.1601, **metrics}


def _inference_prior() -> float:
    p = STAGE_PRIORS["inference"]
    return p.fixed + p.per_image * (20 + 20)  # validation + test images


def test_training_time_comes_from_the_prior_then_from_measured_epochs(tmp_path):
    est = JobEstimate(SETTINGS, tmp_path, ["train", "inference"])
    est.start_stage("train", now=0.0)
    overheads = STAGE_OVERHEAD_S + RUN_OVERHEAD_S
    assert est.rate() == (pytest.approx(PRIOR_S_PER_IMAGE_EPOCH), False)
    assert est.left_s(now=0.0) == pytest.approx(overheads + 3 * 100 * PRIOR_S_PER_IMAGE_EPOCH + _inference_prior())

    line = est.handle("train", _epoch(10.0, 1, 3))
    assert line == "epoch 1/3  loss 0.0812  val mAP@0.5 0.412  mAP@0.5:0.95 0.160"
    assert est.rate()[1] is False  # a run's first epoch carries its set-up: not a measurement
    est.handle("train", _epoch(14.0, 2, 3))
    assert est.rate() == (pytest.approx(4.0 / 100), True)
    # the stage is expected to take overheads + 300 image-epochs at 0.04 s; 14 s of it are gone
    assert est.left_s(now=14.0) == pytest.approx(overheads + 300 * 0.04 - 14.0 + _inference_prior())
    # late in the stage the remaining epoch still counts in full
    assert est.left_s(now=40.0) == pytest.approx(100 * 0.04 + _inference_prior())
    assert est.finish_stage("train", now=20.0) == 20.0
    assert est.left_s(now=20.0) == pytest.approx(_inference_prior())


def test_finished_notebook_stages_scale_the_remaining_priors(tmp_path):
    est = JobEstimate(SETTINGS, tmp_path, ["eda", "inference"])
    eda_prior = est.stage_prior("eda")
    est.start_stage("eda", now=0.0)
    assert est.left_s(now=1.0) == pytest.approx(eda_prior - 1.0 + _inference_prior())
    est.finish_stage("eda", now=2 * eda_prior)  # this machine is twice as slow as the priors
    assert est.speed_factor() == pytest.approx(2.0)
    assert est.left_s(now=2 * eda_prior) == pytest.approx(2 * _inference_prior())


def test_evolution_counts_trials_and_their_epochs(tmp_path):
    est = JobEstimate(SETTINGS, tmp_path, ["evolve"])
    est.start_stage("evolve", now=0.0)
    assert est.training_work("evolve") == 2 * 2 * 60
    assert est.handle("evolve", _epoch(5.0, 1, 2)).startswith("trial 1/2  epoch 1/2  loss 0.0812")
    est.handle("evolve", _epoch(8.0, 2, 2))
    assert est.rate() == (pytest.approx(3.0 / 60), True)
    line = est.handle("evolve", {"time": 9.0, "kind": "trial", "number": 0, "state": "COMPLETE",
                                 "fitness": 0.00041, "done": 1, "requested": 2, "best": 0.0012})
    assert line == "trial 1/2 done (#0)  fitness 0.00041  best 0.00120"
    assert est.handle("evolve", _epoch(12.0, 1, 2)).startswith("trial 2/2  epoch 1/2")
    assert est.rate() == (pytest.approx(3.0 / 60), True)  # a new trial's first epoch is no measurement
    # one epoch of one trial left: at least 60 image-epochs at 0.05 s
    assert est.left_s(now=100.0) == pytest.approx(60 * 0.05)


def test_gold_vs_silver_runs_are_told_apart(tmp_path):
    est = JobEstimate(SETTINGS, tmp_path, ["expand"])
    est.start_stage("expand", now=0.0)
    assert est.handle("expand", _epoch(1.0, 1, 1)).startswith("gold  epoch 1/1")
    assert est.handle("expand", _epoch(2.0, 1, 1)).startswith("gold+silver (replace)  epoch 1/1")
    assert est.handle("expand", _epoch(3.0, 1, 1)).startswith("gold+silver (union)  epoch 1/1")


def test_image_counts_are_throttled_but_the_first_and_last_always_shown(tmp_path):
    est = JobEstimate(SETTINGS, tmp_path, ["silver"])
    est.start_stage("silver", now=0.0)
    shown = [est.handle("silver", {"time": float(i), "kind": "images", "task": "plus set (union)", "done": i,
                                   "total": 50}) for i in range(1, 51)]
    assert [s for s in shown if s] == ["plus set (union): 1/50 images", "plus set (union): 11/50 images",
                                       "plus set (union): 21/50 images", "plus set (union): 31/50 images",
                                       "plus set (union): 41/50 images", "plus set (union): 50/50 images"]
    assert est.handle("silver", {"time": 0.0, "kind": "something new"}) is None


def test_durations_read_as_estimates():
    assert [format_duration(s) for s in (44.6, 61, 9 * 60 + 20, 3725)] == ["45s", "1m", "9m", "1h02m"]
    assert [format_elapsed(s) for s in (58, 898, 3723)] == ["58 s", "14m 58s", "1h 02m 03s"]


def test_follower_hands_over_every_event_in_order(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    path.write_text("")
    monkeypatch.setenv(progress.PROGRESS_ENV, str(path))
    seen = []
    with progress.follow_events(path, seen.append, interval_s=0.05):
        for i in range(3):
            progress.emit("epoch", epoch=i + 1, epochs=3)
        deadline = time.time() + 5
        while len(seen) < 3 and time.time() < deadline:
            time.sleep(0.05)
        assert [e["epoch"] for e in seen] == [1, 2, 3]  # read while the stage runs, not only at its end
        progress.emit("trial", number=0)
    assert [e["kind"] for e in seen] == ["epoch", "epoch", "epoch", "trial"]  # the last one on close


def test_a_failing_display_does_not_stop_the_work(tmp_path, monkeypatch, capsys):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(path))

    def broken(event):
        raise KeyError("loss")

    with progress.follow_events(path, broken, interval_s=0.05):
        progress.emit("epoch", epoch=1)
    assert "could not show event" in capsys.readouterr().err


def test_the_prior_speed_scales_up_with_image_area_and_model_but_not_below_the_measured_size(tmp_path):
    def prior(**changes) -> float:
        settings = JobSettings(**{**SETTINGS.__dict__, **changes})
        return JobEstimate(settings, tmp_path, ["train"]).prior_rate()

    assert prior(imgsz=128) == prior(imgsz=320) == pytest.approx(PRIOR_S_PER_IMAGE_EPOCH)
    assert prior(imgsz=1280, model="yolov5m6") == pytest.approx(PRIOR_S_PER_IMAGE_EPOCH * 16 * 50.0 / 4.5)
    assert prior(model="models/custom.yaml") == pytest.approx(PRIOR_S_PER_IMAGE_EPOCH)  # unknown: as yolov5n


def test_image_counts_come_from_the_split_lists_once_written(tmp_path):
    est = JobEstimate(SETTINGS, tmp_path, ["train"])
    assert est.training_work("train") == 3 * (80 + 20)
    folder = tmp_path / "data/splits/multilabel"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("".join(f"/img/{i}.jpg\n" for i in range(70)))
    (folder / "val.txt").write_text("".join(f"/img/v{i}.jpg\n" for i in range(17)))
    est.start_stage("train", now=0.0)  # counts are read again at each stage start
    assert est.training_work("train") == 3 * (70 + 17)
