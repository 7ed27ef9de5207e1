"""Detection through the raw-candidate cache equals YOLOv5's own detect path, bit for bit, at every setting
(max_det and max_nms caps that bind, tied confidences, agnostic and multi-label NMS); the cache is keyed by the
weights, image size, floor and image bytes, and resumes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from candidate_helpers import (assert_same, m6_sized_head, make_checkpoint, write_frames, yolov5_detections,
                               yolov5_raw_outputs)
from livestock.evaluation import detect as predict
from livestock.evaluation.detect import Candidates, collect_candidates, detect
from livestock.evaluation.nms_replay import GridStats, detections_for_setting, grid_detections, nms_from_candidates
from livestock.evaluation.submission import detections_to_submission, load_detections
from livestock.model.yolov5.detector import Yolov5Detector, head_rows_to_candidates

IMGSZ = 256


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    records = write_frames(root / "frames", n=3)
    weights = make_checkpoint(root / "shaped.pt", [r.image_path for r in records])
    raw = yolov5_raw_outputs(weights, root / "frames", IMGSZ)
    cache = collect_candidates(weights, root / "frames", IMGSZ, progress=False)
    return root, records, weights, raw, cache


def _as_detections(reference, like):
    """YOLOv5's (image id, tensor) pairs as Detections with the image sizes of ``like``."""
    from livestock.records import Detections

    return [Detections(i, o.width, o.height, d[:, :4].double().numpy(), d[:, 4].double().numpy(),
                       d[:, 5].long().numpy()) for (i, d), o in zip(reference, like)]


# ---------------------------------------------------------------- equality with YOLOv5 on a real head output


MODES = {
    "classwise": dict(agnostic=False, multi_label=False),
    "agnostic": dict(agnostic=True, multi_label=False),
    "multi_label": dict(agnostic=False, multi_label=True),
}
SETTINGS = [(0.0001, 0.45), (0.0005, 0.9), (0.001, 0.68), (0.001, 0.3), (0.02, 0.6), (0.2, 0.5)]


@pytest.mark.parametrize("mode,max_det", [("classwise", 300), ("classwise", 20), ("agnostic", 20),
                                          ("multi_label", 20)])
def test_every_setting_equals_yolov5(setup, mode, max_det):
    _root, _records, _weights, raw, cache = setup
    kw = MODES[mode]
    stats = GridStats()
    grid = {(c, t): d for c, t, d in grid_detections(cache, SETTINGS, max_det=max_det, progress=False,
                                                      stats=stats, **kw)}
    assert list(grid) == sorted(grid, key=lambda s: [t for _, t in SETTINGS].index(s[1]))  # grouped by IoU
    capped = 0
    for conf, iou in SETTINGS:
        reference = yolov5_detections(raw, conf, iou, max_det=max_det, **kw)
        assert_same(reference, grid[(conf, iou)])
        assert_same(reference, detections_for_setting(cache, conf, iou, max_det=max_det, **kw))
        capped += sum(len(d) == max_det for _, d in reference)
    assert stats.images == len(cache) and stats.settings == len(SETTINGS)
    if max_det == 20:
        assert capped >= 6  # the cap binds (the test would not see a cap applied in the wrong place otherwise)
    # the same detections make the same submission
    reference = yolov5_detections(raw, 0.001, 0.68, max_det=max_det, **kw)
    ours = grid[(0.001, 0.68)]
    assert detections_to_submission(_as_detections(reference, ours)).equals(detections_to_submission(ours))


def test_candidates_are_plentiful_and_overlapping(setup):
    """Guard on the fixture itself: the equality above is only worth something with many overlapping boxes."""
    *_, raw, cache = setup
    for c in cache:
        conf = c.confidences()
        assert len(c) > 1000 and (conf > 0.001).sum() > 200 and (conf > 0.1).sum() > 3
    nms_kept = sum(len(d) for _, d in yolov5_detections(raw, 0.001, 0.9))
    assert nms_kept < sum(int((c.confidences() > 0.001).sum()) for c in cache)


# ---------------------------------------------------------------- equality on built head outputs: caps and ties


def _built_prediction(n: int, seed: int, levels: int | None = None):
    """A head output ``(1, n, 7)`` on a 640x640 input: boxes in 40 clusters (heavy overlap, so NMS is quick),
    objectness log-uniform over 1e-5..1; ``levels`` quantises obj and cls so that confidences tie exactly."""
    import torch

    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 600, (40, 2))
    k = rng.integers(0, 40, n)
    xy = centres[k] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(20, 90, (40, 2))[k] * rng.uniform(0.8, 1.25, (n, 2))
    obj = 10 ** rng.uniform(-5, 0, n)
    cls = rng.uniform(0, 1, (n, 2))
    if levels:
        obj = np.ceil(obj * levels) / levels
        cls = np.ceil(cls * 8) / 8
    rows = np.concatenate([xy, wh, obj[:, None], cls], 1).astype(np.float32)
    return torch.from_numpy(rows)[None]


def _candidates_from(pred, floor=1e-4, size=(1280, 720)) -> Candidates:
    """The candidates collection keeps of a head output: the floor filter, then the 30,000-row cap."""
    return Candidates("built.jpg", size[0], size[1], (640, 640),
                      *predict.cap_candidates(*head_rows_to_candidates(pred[0], floor)), floor)


def _reference(pred, conf, iou, size=(1280, 720), **kw):
    return yolov5_detections([("built.jpg", pred, (640, 640), (size[1], size[0], 3))], conf, iou, **kw)


@pytest.mark.parametrize("case", ["max_nms_binds", "ties", "ties_multi_label"])
def test_caps_and_ties_equal_yolov5(case):
    multi = case == "ties_multi_label"
    pred = _built_prediction(40000 if case == "max_nms_binds" else 6000, seed=1,
                             levels=None if case == "max_nms_binds" else 50)
    cands = _candidates_from(pred)
    if case == "max_nms_binds":
        # more than 30,000 rows pass the floor, and the cap cut them to 30,000: the equality below proves the cap
        # changes no detection at any setting
        assert len(head_rows_to_candidates(pred[0], 1e-4)[0]) > 30000 and len(cands) == 30000
    if case == "max_nms_binds":  # NMS over 30000 boxes: a few settings suffice
        settings, max_dets = [(0.0001, 0.45), (0.0001, 0.7), (0.001, 0.45), (0.3, 0.7)], (300,)
    else:
        settings, max_dets = [(c, t) for t in (0.45, 0.7) for c in (0.0001, 0.001, 0.02, 0.3)], (300, 5000)
    for max_det in max_dets:
        stats = GridStats()
        grid = list(grid_detections([cands], settings, max_det=max_det, multi_label=multi, progress=False,
                                    stats=stats))
        for conf, iou, dets in grid:
            reference = _reference(pred, conf, iou, max_det=max_det, multi_label=multi)
            assert_same(reference, dets)
            assert_same(reference, [nms_from_candidates(cands, conf, iou, max_det=max_det, multi_label=multi)])
        if case != "max_nms_binds":
            # YOLOv5's unstable sort reorders tied confidences, and here tied rows overlap: those settings replayed
            # NMS on YOLOv5's own order
            assert stats.own_order_settings > 0 and stats.replayed_settings > 0


def test_chance_ties_at_m6_volume_need_no_nms_of_their_own():
    """A head of YOLOv5m6@1280's size (102,000 rows) with unquantised scores: float32 confidences tie only by chance,
    a few rows an image, and YOLOv5's unstable sort puts some of those pairs the other way round. Where the tied
    rows do not overlap, the shared NMS in YOLOv5's order is the answer: equal to YOLOv5 at every setting, with no
    NMS beyond the one per IoU."""
    pred = m6_sized_head(seed=0)
    cands = Candidates("built.jpg", 1920, 1080, (1280, 1280),
                       *predict.cap_candidates(*head_rows_to_candidates(pred[0], 1e-4)), 1e-4)
    conf = cands.confidences()
    assert len(cands) == 30000 and 0 < len(conf) - len(np.unique(conf)) < 20  # a few chance ties
    settings = [(c, t) for t in (0.45, 0.7) for c in (0.0001, 0.001, 0.01)]
    stats = GridStats()
    for conf_, iou, dets in grid_detections([cands], settings, progress=False, stats=stats):
        assert_same(yolov5_detections([("built.jpg", pred, (1280, 1280), (1080, 1920, 3))], conf_, iou), dets)
    assert stats.own_order_settings > 0
    assert stats.reordered_settings == stats.own_order_settings and stats.replayed_settings == 0
    assert stats.shared_nms_calls == 2


def test_confidence_filter_is_a_prefix_when_nothing_ties():
    """Without ties, all settings share one NMS per IoU (no setting needs its own)."""
    pred = _built_prediction(3000, seed=2)
    cands = _candidates_from(pred)
    conf = cands.confidences()
    assert len(np.unique(conf)) == len(conf)
    stats = GridStats()
    settings = [(c, t) for t in (0.3, 0.5, 0.7) for c in (0.0001, 0.0003, 0.001, 0.01)]
    for conf_, iou, dets in grid_detections([cands], settings, progress=False, stats=stats):
        assert_same(_reference(pred, conf_, iou), dets)
    assert stats.own_order_settings == 0 and stats.shared_nms_calls == 3


def test_setting_below_the_floor_is_refused(setup):
    *_, cache = setup
    with pytest.raises(ValueError, match="floor"):
        nms_from_candidates(cache[0], conf=0.00005, iou=0.5)
    with pytest.raises(ValueError, match="IoU"):
        list(grid_detections(cache, [(0.001, 1.5)], progress=False))


# ---------------------------------------------------------------- the cache on disk


class _CountingRaw:
    """Wraps ``Yolov5Detector.candidates`` to count the images that went through the network."""

    def __init__(self, monkeypatch):
        self.images = 0
        original = Yolov5Detector.candidates

        def candidates(det, batch, conf_floor):
            self.images += len(batch)
            return original(det, batch, conf_floor)

        monkeypatch.setattr(Yolov5Detector, "candidates", candidates)


def _rows(cache):
    return [np.concatenate([c.boxes, c.scores, c.objectness[:, None]], 1) for c in cache]


def test_cache_resumes_and_skips_the_network(setup, tmp_path, monkeypatch):
    root, records, weights, _raw, fresh = setup
    frames = sorted((root / "frames").glob("*.jpg"))
    counter = _CountingRaw(monkeypatch)
    first = collect_candidates(weights, frames[:2], IMGSZ, cache_dir=tmp_path, progress=False)
    assert counter.images == 2
    folder = predict.cache_folder(tmp_path, weights, IMGSZ, predict.DEFAULT_CONF_FLOOR)
    assert sorted(p.name for p in folder.glob("*.npz")) == [f.name + ".npz" for f in frames[:2]]
    # interrupted after two images: the next run computes only the third
    again = collect_candidates(weights, root / "frames", IMGSZ, cache_dir=tmp_path, progress=False)
    assert counter.images == 3
    for a, b in zip(_rows(again), _rows(fresh)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_rows(first), _rows(fresh)):
        np.testing.assert_array_equal(a, b)
    # everything cached: the model is not even loaded
    monkeypatch.setattr(Yolov5Detector, "__init__", lambda *a, **k: pytest.fail("model loaded"))
    cached = collect_candidates(weights, records, IMGSZ, cache_dir=tmp_path, progress=False)
    assert [c.image_id for c in cached] == [r.image_id for r in records]
    by_id = {d.image_id: d for d in detections_for_setting(cached, 0.001, 0.68)}
    reference = yolov5_detections(_raw, 0.001, 0.68)  # folder order
    assert_same(reference, [by_id[image_id] for image_id, _ in reference])


def test_stale_cache_is_never_used(setup, tmp_path, monkeypatch):
    root, records, weights_a, _raw, fresh_a = setup
    weights = tmp_path / "model.pt"
    shutil.copyfile(weights_a, weights)
    frames = [r.image_path for r in records]
    collect_candidates(weights, frames, IMGSZ, cache_dir=tmp_path / "cache", progress=False)
    old_folder = predict.cache_folder(tmp_path / "cache", weights, IMGSZ, predict.DEFAULT_CONF_FLOOR)

    # new weights under the same file name: a new key, every image recomputed, new results
    make_checkpoint(weights, frames, seed=7)
    counter = _CountingRaw(monkeypatch)
    new = collect_candidates(weights, frames, IMGSZ, cache_dir=tmp_path / "cache", progress=False)
    assert counter.images == len(frames)
    new_folder = predict.cache_folder(tmp_path / "cache", weights, IMGSZ, predict.DEFAULT_CONF_FLOOR)
    assert new_folder != old_folder
    assert not any(np.array_equal(a, b) for a, b in zip(_rows(new), _rows(fresh_a)))
    uncached = collect_candidates(weights, frames, IMGSZ, progress=False)
    for a, b in zip(_rows(new), _rows(uncached)):
        np.testing.assert_array_equal(a, b)

    # a file from other weights planted under the new key is recognised by its header and replaced
    planted = new_folder / f"{records[0].image_id}.npz"
    shutil.copyfile(old_folder / planted.name, planted)
    # a corrupt file is replaced too
    (new_folder / f"{records[1].image_id}.npz").write_bytes(b"not an npz")
    # and an image whose bytes changed under the same name is recomputed
    changed = Path(frames[2])
    changed_frame = changed.parent / "copy" / changed.name
    changed_frame.parent.mkdir()
    changed_frame.write_bytes(changed.read_bytes())
    import cv2

    im = cv2.imread(str(changed_frame))
    cv2.imwrite(str(changed_frame), 255 - im)
    counter.images = 0
    again = collect_candidates(weights, [frames[0], frames[1], changed_frame], IMGSZ,
                               cache_dir=tmp_path / "cache", progress=False)
    assert counter.images == 3
    for a, b in zip(_rows(again)[:2], _rows(uncached)[:2]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_rows(again)[2], _rows(uncached)[2])

    # a different image size or floor is a different key as well
    assert predict.cache_folder(tmp_path, weights, 320, 1e-4) != predict.cache_folder(tmp_path, weights, 256, 1e-4)
    assert predict.cache_folder(tmp_path, weights, 256, 1e-3) != predict.cache_folder(tmp_path, weights, 256, 1e-4)


def test_batched_run_groups_images_of_one_shape(setup, tmp_path, monkeypatch):
    root, records, weights, _raw, fresh = setup
    sources = []
    for r in records[:2]:  # each frame twice under another name: pairs of the same letterboxed shape
        twin = tmp_path / f"twin_{r.image_id}"
        shutil.copyfile(r.image_path, twin)
        sources += [Path(r.image_path), twin]
    batches = []
    original = Yolov5Detector.candidates
    monkeypatch.setattr(Yolov5Detector, "candidates",
                        lambda det, b, floor: batches.append(b.shape) or original(det, b, floor))
    batched = collect_candidates(weights, sources, IMGSZ, batch=4, progress=False)
    assert [b[0] for b in batches] == [2, 2]  # a shape change closes the batch
    assert [c.image_id for c in batched] == [s.name for s in sources]
    by_id = {c.image_id: c for c in fresh}
    for k, r in enumerate(records[:2]):
        a, b, ref = batched[2 * k], batched[2 * k + 1], by_id[r.image_id]
        assert a.input_shape == b.input_shape == ref.input_shape
        assert (a.width, a.height) == (b.width, b.height) == (ref.width, ref.height)
        # batched convolutions round a little differently from single ones, even for two equal images
        for c in (a, b):
            assert abs(len(c) - len(ref)) <= 0.01 * len(ref)
            np.testing.assert_allclose(np.sort(c.objectness)[-50:], np.sort(ref.objectness)[-50:], rtol=1e-4)


# ---------------------------------------------------------------- detect() and the CLI


def test_detect_and_cli(setup, tmp_path):
    from livestock.cli import main

    root, records, weights, raw, _cache = setup
    dets = detect(weights, root / "frames", IMGSZ, conf=0.001, iou=0.68, progress=False)
    assert_same(yolov5_detections(raw, 0.001, 0.68), dets)
    out = tmp_path / "detections.csv"
    rc = main(["detect", "--weights", str(weights), "--source", str(root / "frames"), "--imgsz", str(IMGSZ),
               "--conf", "0.001", "--iou", "0.68", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    loaded = load_detections(out)
    assert [d.image_id for d in loaded] == [d.image_id for d in dets]
    for a, b in zip(loaded, dets):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)


def test_bad_input_is_named(setup, tmp_path):
    root, records, weights, _raw, _cache = setup
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        collect_candidates(tmp_path / "missing.pt", root / "frames", IMGSZ, progress=False)
    with pytest.raises(ValueError, match="model.h5"):
        collect_candidates(tmp_path / "model.h5", root / "frames", IMGSZ, progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        collect_candidates(weights, tmp_path / "nowhere", IMGSZ, progress=False)
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        collect_candidates(weights, [root / "frames" / "gone.jpg"], IMGSZ, progress=False)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"no jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        collect_candidates(weights, [bad], IMGSZ, progress=False)
    r = records[0]
    wrong = type(r)(r.image_id, r.image_path, r.width + 1, r.height, r.label, r.boxes)
    with pytest.raises(ValueError, match="record says"):
        collect_candidates(weights, [wrong], IMGSZ, progress=False)
    twin = tmp_path / records[0].image_id
    shutil.copyfile(records[0].image_path, twin)
    with pytest.raises(ValueError, match="also names"):
        collect_candidates(weights, [records[0].image_path, twin], IMGSZ, progress=False)


# ---------------------------------------------------------------- ONNX through the same pipeline


@pytest.mark.slow
def test_onnx_export_goes_through_the_same_pipeline(setup, tmp_path):
    from livestock.model.yolov5.compat import ensure_yolov5

    ensure_yolov5()
    from yolov5.export import run as export_run

    root, _records, weights, _raw, _cache = setup
    local = tmp_path / "shaped.pt"
    shutil.copyfile(weights, local)
    export_run(weights=str(local), include=("onnx",), imgsz=(IMGSZ, IMGSZ), device="cpu")
    onnx_path = local.with_suffix(".onnx")
    assert onnx_path.is_file()
    raw = yolov5_raw_outputs(onnx_path, root / "frames", IMGSZ)
    assert all(hw == (IMGSZ, IMGSZ) for _, _, hw, _ in raw)  # fixed-shape input, as detect.py uses for ONNX
    cache = collect_candidates(onnx_path, root / "frames", IMGSZ, cache_dir=tmp_path / "cache", progress=False)
    settings = [(0.001, 0.68), (0.0002, 0.4)]
    for conf, iou, dets in grid_detections(cache, settings, progress=False):
        assert_same(yolov5_detections(raw, conf, iou), dets)
    with pytest.raises(ValueError, match="exported for input"):
        collect_candidates(onnx_path, root / "frames", IMGSZ * 2, progress=False)


@pytest.mark.parametrize("end_to_end", [False, True])
def test_inverted_boxes_are_dropped_and_change_nothing_else(end_to_end):
    """YOLO26's heads can predict a box with x2 < x1 (no DFL: raw side distances). Such a row overlaps nothing, so
    NMS keeps every other row as it would without it; the replay then drops it, and the submission takes the rest."""
    boxes = np.array([[100, 100, 200, 220], [110, 105, 205, 215], [300, 400, 250, 300], [400, 50, 480, 90]],
                     np.float32)  # row 2 inverted (x2 < x1 and y2 < y1), and the most confident
    scores = np.array([[0.80, 0.0], [0.70, 0.0], [0.95, 0.0], [0.0, 0.60]], np.float32)

    def cands(rows):
        return Candidates("built.jpg", 640, 640, (640, 640), boxes[rows], scores[rows], None, 1e-3, end_to_end,
                          "ultralytics")

    with_inverted, without = cands([0, 1, 2, 3]), cands([0, 1, 3])
    for iou in (0.3, 0.9):  # rows 0 and 1 overlap at IoU 0.76: one setting suppresses row 1, one keeps it
        dets = nms_from_candidates(with_inverted, 0.01, iou)
        expected = nms_from_candidates(without, 0.01, iou)
        np.testing.assert_array_equal(dets.boxes, expected.boxes)
        np.testing.assert_array_equal(dets.scores, expected.scores)
        assert len(dets) == (3 if end_to_end or iou == 0.9 else 2)
        (_, _, grid), = grid_detections([with_inverted], [(0.01, iou)], progress=False)
        np.testing.assert_array_equal(grid[0].boxes, expected.boxes)
        assert len(detections_to_submission([dets], ["cow", "pig"])) == len(dets)
