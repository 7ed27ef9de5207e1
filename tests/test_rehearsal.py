"""The full-scale rehearsal: generation in several processes gives the same bytes, the m6@1280 stand-in candidates
(row count, score distribution, found in the cache without a network), and the rehearsal itself at a tiny scale
(every stage measured, summary files, resume)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from livestock import cli, rehearsal
from livestock.data.synth import generate_synthetic_dataset
from livestock.evaluation import detect
from livestock.evaluation.detect import CandidateFiles, collect_candidates, load_candidates
from livestock.evaluation.nms_replay import MAX_NMS
from livestock.evaluation.standin import (M6_HEAD_ROWS, M6_IMGSZ, SourceImage, head_rows, pick_source, sample_head,
                                          standin_head, write_standin_cache)
from livestock.records import ImageRecord


def _zip_digests(root: Path) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for z in sorted(root.rglob("*.zip")):
        with zipfile.ZipFile(z) as zf:
            out[z.relative_to(root).as_posix()] = [(i.filename, hashlib.sha256(zf.read(i)).hexdigest())
                                                   for i in zf.infolist()]
    return out


def test_two_process_generation_equals_one_process(tmp_path):
    args = dict(train_counts={"cow": 5, "pig": 3}, test_counts={"cow": 2, "pig": 2}, seed=5, image_scale=0.25,
                progress=False)
    one = generate_synthetic_dataset(tmp_path / "one" / "data", tmp_path / "one" / "test", **args)
    two = generate_synthetic_dataset(tmp_path / "two" / "data", tmp_path / "two" / "test", workers=2, **args)
    a, b = _zip_digests(tmp_path / "one"), _zip_digests(tmp_path / "two")
    assert a == b and sum(len(v) for v in a.values()) == 2 * 8 + 4
    for name in ("data/synth_truth.csv", "test/answer.csv"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert one.train_images == two.train_images and one.test_boxes == two.test_boxes
    for zip_path in (tmp_path / "two").rglob("*.zip"):  # whole files, not only members: same bytes
        assert zip_path.read_bytes() == (tmp_path / "one" / zip_path.relative_to(tmp_path / "two")).read_bytes()


def _source(n: int = 3000, seed: int = 0, label: str = "cow", size: tuple[int, int] = (1920, 1080)) -> SourceImage:
    """A head sample shaped like a detector's: mostly weak rows, a few strong ones clustered on two animals."""
    rng = np.random.default_rng(seed)
    obj = np.where(rng.random(n) < 0.05, rng.beta(5, 2, n), rng.beta(0.6, 40, n)).astype(np.float32)
    cls = rng.beta(4, 1, (n, 2)).astype(np.float32)
    centre = rng.random((n, 2))
    strong = obj > 0.3
    centre[strong] = np.array([[0.3, 0.5], [0.7, 0.4]])[rng.integers(0, 2, strong.sum())] + rng.normal(0, 0.01, (
        strong.sum(), 2))
    wh = rng.uniform(0.02, 0.2, (n, 2))
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
    return SourceImage(f"src_{seed}.jpg", label, *size, boxes, cls, obj)


def test_m6_head_size():
    assert head_rows((1280, 1280)) == M6_HEAD_ROWS == 102_000
    assert head_rows((192, 320), strides=(8, 16, 32)) == 3_780  # YOLOv5n at 320 px on a 1920 x 1080 frame


def test_standin_head_has_n_rows_and_the_source_score_distribution():
    src = _source()
    rng = np.random.default_rng(1)
    boxes, scores, obj = standin_head(src, 1920, 1080, rng)
    assert boxes.shape == (M6_HEAD_ROWS, 4) and scores.shape == (M6_HEAD_ROWS, 2) and obj.shape == (M6_HEAD_ROWS,)
    assert boxes.dtype == scores.dtype == obj.dtype == np.float32
    q = np.linspace(0.05, 0.95, 19)
    conf = (scores * obj[:, None]).max(1)
    for mine, theirs in ((obj, src.objectness), (scores[:, 1], src.scores[:, 1]), (conf, src.confidences())):
        # quantiles within 10 % (relative): resampling noise and the 0.05 logit jitter stay well inside that
        np.testing.assert_allclose(np.quantile(mine, q), np.quantile(theirs, q), rtol=0.10)
    # a 1920 x 1080 frame fills the 1280 x 1280 letterbox's width and 720 px of its height, centred (the jitter
    # moves a few centres a little past the frame's edge, as a head's boxes may)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    margin = 5 * 0.05 * 0.2 * 1280  # five standard deviations of the shift of the widest source box
    assert -margin <= centres[:, 0].min() and centres[:, 0].max() <= 1280 + margin
    assert 280 - margin <= centres[:, 1].min() and centres[:, 1].max() <= 1000 + margin
    assert np.quantile(centres[:, 1], 0.01) < 300 and np.quantile(centres[:, 1], 0.99) > 980
    # strong rows stay clustered on the source's animals: heavy overlap for NMS to work through
    strong = centres[obj > 0.3] / [1280, 720] - [0, 280 / 720]
    assert np.min(np.hypot(*(strong[:, None, :] - np.array([[0.3, 0.5], [0.7, 0.4]])).transpose(2, 0, 1)),
                  axis=1).mean() < 0.05


@pytest.mark.slow
def test_standin_from_a_trained_model_keeps_its_score_distribution(tiny_trained_model, tmp_path):
    weights, _ = tiny_trained_model
    records = _frames(tmp_path / "frames", 2)
    sources = sample_head(weights, records, 64, device="cpu", progress=False)
    # a floor of 0 keeps every row: at 64 px both frames letterbox to 64 x 64 (3 anchors at strides 8, 16, 32)
    assert [len(s.objectness) for s in sources] == [head_rows((64, 64), strides=(8, 16, 32))] * 2
    assert [s.label for s in sources] == ["cow", "pig"]
    boxes, scores, obj = standin_head(sources[0], 1920, 1080, np.random.default_rng(0))
    assert len(obj) == M6_HEAD_ROWS
    q = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(np.quantile((scores * obj[:, None]).max(1), q),
                               np.quantile(sources[0].confidences(), q), rtol=0.10)


def test_pick_source_prefers_same_class_and_frame_size():
    sources = [_source(10, 0, "cow"), _source(10, 1, "pig", (1280, 960)), _source(10, 2, "pig")]
    assert pick_source(sources, ImageRecord("livestock_pig_bbox_000001.jpg", "x", 1280, 960, "pig")) is sources[1]
    assert pick_source(sources, ImageRecord("livestock_cow_bbox_000001.jpg", "x", 1280, 960, "cow")) is sources[0]
    with pytest.raises(ValueError):
        pick_source([], ImageRecord("livestock_cow_bbox_000001.jpg", "x", 1280, 960, "cow"))


def _frames(folder: Path, n: int) -> list[ImageRecord]:
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        label, (w, h) = (("cow", (1920, 1080)), ("pig", (1280, 960)))[i % 2]
        path = folder / f"livestock_{label}_bbox_{i + 1:06d}.jpg"
        cv2.imwrite(str(path), np.full((h, w, 3), 40 + 30 * i, np.uint8))
        records.append(ImageRecord(path.name, str(path), w, h, label))
    return records


def test_standin_cache_is_found_without_a_model(tmp_path, monkeypatch):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"only hashed: the detector must never load it")
    records = _frames(tmp_path / "frames", 3)
    sources = [_source(3000, 0, "cow"), _source(3000, 1, "pig", (1280, 960))]
    written = write_standin_cache(weights, records, sources, tmp_path / "cache", 1e-4, progress=False)
    assert written.images == 3 and written.head_rows == M6_HEAD_ROWS
    assert written.rows_above_floor > MAX_NMS and written.rows_cached == MAX_NMS  # the cap bites, as for m6
    strict = write_standin_cache(weights, records, sources, tmp_path / "cache", 0.05, progress=False)
    assert 0 < strict.rows_cached == strict.rows_above_floor < MAX_NMS

    monkeypatch.setattr(detect, "load_detector", lambda *a, **k: pytest.fail("a network was loaded"))
    cache = collect_candidates(weights, records, M6_IMGSZ, conf_floor=1e-4, cache_dir=tmp_path / "cache",
                               in_memory=False, progress=False)
    assert isinstance(cache, CandidateFiles) and cache.image_ids() == [r.image_id for r in records]
    for c, r in zip(cache, records):
        assert (c.width, c.height, c.input_shape, len(c)) == (r.width, r.height, (M6_IMGSZ, M6_IMGSZ), MAX_NMS)
    dets = detect.detect(weights, records, M6_IMGSZ, conf=0.05, iou=0.7, cache_dir=tmp_path / "cache",
                         progress=False)
    assert [d.image_id for d in dets] == [r.image_id for r in records] and all(len(d) > 0 for d in dets)

    # the same files from two worker processes: each image draws from its own seeded stream
    write_standin_cache(weights, records, sources, tmp_path / "cache2", 1e-4, workers=2, progress=False)
    for f in Path(written.folder).glob("*.npz"):
        a, _ = load_candidates(f)
        b, _ = load_candidates(tmp_path / "cache2" / f.relative_to(tmp_path / "cache"))
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)


def test_disk_mb_counts_each_file_once_and_no_links(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.bin").write_bytes(b"x" * 2**20)
    os.link(tmp_path / "a" / "f.bin", tmp_path / "a" / "hard.bin")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "sym.bin").symlink_to(tmp_path / "a" / "f.bin")
    (tmp_path / "c.bin").write_bytes(b"y" * 2**19)
    assert rehearsal.disk_mb([tmp_path / "a", tmp_path / "b", tmp_path / "c.bin"]) == pytest.approx(1.5)
    assert rehearsal.disk_mb([tmp_path / "b"]) == 0


def test_missing_weights_and_too_small_scale_are_refused(tmp_path, capsys):
    assert cli.main(["rehearsal", "--out", str(tmp_path), "--weights", str(tmp_path / "none.pt")]) == 1
    err = capsys.readouterr().err
    assert "none.pt" in err and "make pipeline" in err and "--weights" in err
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"x")
    with pytest.raises(ValueError, match="folds"):
        rehearsal.run_rehearsal(rehearsal.RehearsalConfig(out=tmp_path, scale=0.0005, weights=weights))
    with pytest.raises(ValueError, match="--imgsz 0: at least 32"):
        rehearsal.run_rehearsal(rehearsal.RehearsalConfig(out=tmp_path, weights=weights, imgsz=0))
    with pytest.raises(ValueError, match="model.pt: not a readable PyTorch checkpoint"):  # before 18,500 frames
        rehearsal.run_rehearsal(rehearsal.RehearsalConfig(out=tmp_path, weights=weights))
    assert not (tmp_path / "stages").exists()


# ---------------------------------------------------------------- the rehearsal at a tiny scale


@pytest.fixture(scope="module")
def tiny_rehearsal(tiny_trained_model, tmp_path_factory):
    """One rehearsal at scale 0.002 (33 training and 4 test frames at the real sizes) with the tiny model at 64 px."""
    weights, _ = tiny_trained_model
    cfg = rehearsal.RehearsalConfig(out=tmp_path_factory.mktemp("rehearsal"), scale=0.002, weights=weights,
                                    imgsz=64)
    return cfg, rehearsal.run_rehearsal(cfg)


@pytest.mark.slow
def test_rehearsal_measures_every_stage(tiny_rehearsal):
    cfg, summary = tiny_rehearsal
    on_disk = json.loads((cfg.out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert list(summary["stages"]) == list(rehearsal.STAGE_NAMES)
    for name, r in summary["stages"].items():
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 50 and r["disk_mb"] > 0, name
    assert summary["settings"]["train_frames"] == {"cow": 24, "pig": 9}
    d = summary["stages"]
    assert d["generate"]["details"]["train_images"] == {"cow": 24, "pig": 9}
    assert d["prepare"]["details"]["images"] == 33 + 4
    assert d["tune"]["details"]["settings"] == 210
    m6 = d["m6_cache"]["details"]["tune"]
    assert m6["head_rows"] == 102_000 and 0 < m6["rows_cached"] <= MAX_NMS
    t = d["m6_tune"]["details"]
    assert t["measured_images"] == t["images"] == d["tune"]["details"]["images"] and t["measured_settings"] == 10
    assert t["extrapolated_seconds"] == pytest.approx(21 * t["tuning_seconds"])
    assert d["m6_silver"]["details"]["images"] == d["silver"]["details"]["images"] > 0
    assert all(v["met"] is None for v in summary["targets"].values())  # a scaled run meets or misses nothing
    md = (cfg.out / "summary.md").read_text()
    assert "| stage | what | seconds | peak RSS (MB) | disk (MB) |" in md
    for name in rehearsal.STAGE_NAMES:
        assert f"| {name} |" in md


@pytest.mark.slow
def test_rehearsal_resumes_without_rerunning_done_stages(tiny_rehearsal, monkeypatch):
    cfg, first = tiny_rehearsal
    markers = {n: cfg.out / "stages" / f"{n}.json" for n in rehearsal.STAGE_NAMES}
    before = {n: (m.stat().st_mtime_ns, m.read_text()) for n, m in markers.items()}
    real_measure = rehearsal.measure_stage

    monkeypatch.setattr(rehearsal, "measure_stage", lambda *a, **k: pytest.fail("a done stage ran again"))
    again = rehearsal.run_rehearsal(cfg)
    assert again["stages"] == json.loads(json.dumps(first["stages"]))
    assert {n: (m.stat().st_mtime_ns, m.read_text()) for n, m in markers.items()} == before

    # other settings for the m6 stages: they run again (from m6_cache on, every later stage), the rest stays
    ran: list[str] = []

    def counting(cfg_, stage):
        ran.append(stage.name)
        return real_measure(cfg_, stage)

    monkeypatch.setattr(rehearsal, "measure_stage", counting)
    subset = dataclasses.replace(cfg, m6_images=4)
    summary = rehearsal.run_rehearsal(subset)
    assert ran == ["m6_cache", "m6_tune", "m6_silver"]
    after = {n: (m.stat().st_mtime_ns, m.read_text()) for n, m in markers.items()}
    assert {n: v for n, v in after.items() if n not in ran} == {n: v for n, v in before.items() if n not in ran}
    t = summary["stages"]["m6_tune"]["details"]
    assert (t["measured_images"], t["half_images"]) == (4, 2) and t["images"] > 4
    assert t["extrapolated_seconds"] == pytest.approx(t["tuning_seconds"] * 21 * t["images"] / 4)
    assert t["rss_mb_per_frame"] >= 0 and t["pass_rss_mb"] >= t["half_pass_rss_mb"] - 5 > 0
    assert t["extrapolated_peak_rss_mb"] >= t["pass_rss_mb"] + t["rss_mb_per_frame"] * (t["images"] - 4)
    assert summary["targets"]["m6_tune_peak_rss_mb"]["how"] == f"extrapolated from 4 of {t['images']} validation frames"
