"""Test-time augmentation (TTA) and weighted boxes fusion (WBF) as dimensions of the tuning grid: a TTA + NMS cell
equals YOLOv5's own augmented inference (``detect.py --augment``) bit for bit; each view's rows replay that view's
own pass; a TTA + WBF cell equals a direct run (each view's NMS, then ``ensemble_boxes.weighted_boxes_fusion``);
the one-pass cells are today's grid; the chosen setting reaches the answer file; bad combinations are refused."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from candidate_helpers import assert_same, make_checkpoint, write_frames, yolov5_detections, yolov5_raw_outputs
from livestock.evaluation import detect as D
from livestock.evaluation.detect import cap_candidates, cap_views, collect_candidates, detect
from livestock.evaluation.fusion import (check_fusion, detections_at, fuse_views, grid_fused_detections,
                                        setting_name)
from livestock.evaluation.metrics import mean_average_precision_for_boxes
from livestock.evaluation.nms_replay import MAX_NMS, detections_for_setting, nms_from_candidates
from livestock.evaluation.submission import detections_to_submission, read_answer
from livestock.evaluation.tune import best_setting, tune_thresholds, write_tuning
from livestock.fileio import read_csv
from livestock.model.engine import TTA_VIEWS, Candidates
from livestock.model.yolov5.compat import ensure_yolov5
from livestock.model.yolov5.detector import Yolov5Detector
from livestock.records import Detections, save_records
from test_bad_input import _one_line_error

IMGSZ = 256
SETTINGS = [(0.0001, 0.45), (0.001, 0.68), (0.001, 0.3), (0.02, 0.6), (0.2, 0.5)]


def yolov5_views(weights, folder, imgsz: int):
    """YOLOv5's augmented forward taken apart with its own pieces (``scale_img``, ``_forward_once``,
    ``_descale_pred``, ``_clip_augmented``, as ``DetectionModel._forward_augment`` joins them), on ``detect.py``'s
    letterboxed inputs: ``[(image id, [each view's head rows (1, n, 7)], input hw, original shape)]``. The views
    joined are checked equal to ``model(im, augment=True)``, so each is exactly what the augmented forward holds."""
    ensure_yolov5()
    import torch
    from yolov5.models.common import DetectMultiBackend
    from yolov5.utils.dataloaders import LoadImages
    from yolov5.utils.torch_utils import scale_img

    model = DetectMultiBackend(str(weights.resolve()), device=torch.device("cpu"))
    net = model.model
    out = []
    for path, im, im0, _cap, _s in LoadImages(str(folder), img_size=imgsz, stride=model.stride, auto=model.pt):
        x = (torch.from_numpy(im).float() / 255)[None]
        with torch.inference_mode():
            whole = model(x, augment=True)[0]
            views = []
            for scale, flip in zip((1, 0.83, 0.67), (None, 3, None)):
                xi = scale_img(x.flip(flip) if flip else x, scale, gs=int(net.stride.max()))
                views.append(net._descale_pred(net._forward_once(xi)[0], flip, scale, x.shape[-2:]))
            views = net._clip_augmented(views)
        assert torch.equal(torch.cat(views, 1), whole)
        out.append((path.split("/")[-1], views, tuple(im.shape[1:]), im0.shape))
    return out


def direct_wbf(views_out, conf: float, iou: float, max_det: int = 300) -> list[Detections]:
    """A direct run of a TTA + WBF setting: YOLOv5's ``non_max_suppression`` + ``scale_boxes`` on each view, then
    ``ensemble_boxes.weighted_boxes_fusion`` of the views (boxes normalised by the image size, ``iou_thr`` the NMS
    IoU, ``skip_box_thr`` 0, ``conf_type`` avg), its ``max_det`` first boxes back in pixels."""
    from ensemble_boxes import weighted_boxes_fusion
    from yolov5.utils.general import non_max_suppression, scale_boxes

    out = []
    for image_id, views, hw, shape0 in views_out:
        per_view = []
        for v in views:
            det = non_max_suppression(v.clone(), conf, iou, max_det=max_det)[0]
            det[:, :4] = scale_boxes(hw, det[:, :4].clone(), shape0)
            per_view.append(det)
        h, w = shape0[:2]
        scale = np.array([w, h, w, h], dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            boxes, scores, labels = weighted_boxes_fusion(
                [d[:, :4].double().numpy() / scale for d in per_view], [d[:, 4].double().numpy() for d in per_view],
                [d[:, 5].long().numpy() for d in per_view], iou_thr=iou, skip_box_thr=0.0, conf_type="avg")
        out.append(Detections(image_id, w, h, boxes[:max_det] * scale, scores[:max_det],
                              labels[:max_det].astype(np.int64)))
    return out


def _equal(a: list[Detections], b: list[Detections]) -> None:
    assert [d.image_id for d in a] == [d.image_id for d in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.boxes, y.boxes, err_msg=x.image_id)
        np.testing.assert_array_equal(x.scores, y.scores, err_msg=x.image_id)
        np.testing.assert_array_equal(x.class_ids, y.class_ids, err_msg=x.image_id)


def _as_detections(reference, like) -> list[Detections]:
    return [Detections(i, o.width, o.height, d[:, :4].double().numpy(), d[:, 4].double().numpy(),
                       d[:, 5].long().numpy()) for (i, d), o in zip(reference, like)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta")
    records = write_frames(root / "frames", n=3, seed=5)
    weights = make_checkpoint(root / "shaped.pt", [r.image_path for r in records], seed=5)
    cache = collect_candidates(weights, root / "frames", IMGSZ, progress=False)
    tta_cache = collect_candidates(weights, root / "frames", IMGSZ, progress=False, tta=True)
    raw = yolov5_raw_outputs(weights, root / "frames", IMGSZ, augment=True)
    views = yolov5_views(weights, root / "frames", IMGSZ)
    # Ground truth that makes the grid informative: the model's confident one-pass boxes, nudged by up to 2 px.
    rng = np.random.default_rng(0)
    nudged = []
    for d in detections_for_setting(cache, 0.05, 0.3):
        b = d.boxes + rng.uniform(-2, 2, d.boxes.shape)
        b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)
        nudged.append(Detections(d.image_id, d.width, d.height, b, d.scores, d.class_ids))
    answer = detections_to_submission(nudged).drop(columns="Conf")
    assert len(answer) > 20
    return root, records, weights, cache, tta_cache, raw, views, answer


# ---------------------------------------------------------------- the candidates of the augmented forward


def test_tta_candidates_carry_every_view(setup):
    _root, _records, _weights, cache, tta_cache, _raw, views, _answer = setup
    for c, one, (image_id, v, _hw, _shape) in zip(tta_cache, cache, views):
        assert c.image_id == one.image_id == image_id and c.n_views == TTA_VIEWS and one.views is None
        assert list(np.unique(c.views)) == [0, 1, 2] and np.all(np.diff(c.views) >= 0)  # contiguous, in order
        assert c.input_shape == one.input_shape  # the same letterbox; the views are made inside the network
        # each view's rows are that view's head rows above the floor (YOLOv5's first NMS filter)
        for k in range(TTA_VIEWS):
            rows = v[k][0]
            above = ((rows[:, 4] > c.conf_floor) & ((rows[:, 5:] * rows[:, 4:5]).max(1).values > c.conf_floor))
            assert int(above.sum()) == int((c.views == k).sum())
        assert (c.confidences() > 0.001).sum() > 200  # plenty of candidates, so the equalities below mean something


def test_tta_nms_cells_equal_yolov5_augmented_inference(setup):
    """A TTA + NMS grid cell is YOLOv5's ``model(im, augment=True)`` + ``non_max_suppression`` + ``scale_boxes``
    (``detect.py --augment``), bit for bit, at every setting, with caps that bind and with multi-label NMS."""
    root, _records, weights, _cache, tta_cache, raw, _views, _answer = setup
    for max_det, kw in ((300, {}), (20, {}), (20, {"multi_label": True}), (50, {"agnostic": True})):
        grid = list(grid_fused_detections(tta_cache, SETTINGS, "nms", max_det=max_det, progress=False, **kw))
        assert [(c, t) for c, t, _ in grid] == sorted(SETTINGS, key=lambda s: [t for _, t in SETTINGS].index(s[1]))
        for conf, iou, dets in grid:
            reference = yolov5_detections(raw, conf, iou, max_det=max_det, **kw)
            assert_same(reference, dets)
            assert_same(reference, [detections_at(c, conf, iou, "nms", max_det, **kw) for c in tta_cache])
    # the one call of detect() with TTA is the same path
    assert_same(yolov5_detections(raw, 0.001, 0.68), detect(weights, root / "frames", IMGSZ, 0.001, 0.68,
                                                            tta=True, progress=False))


def test_each_views_rows_replay_that_views_own_pass(setup):
    """``Candidates.view(k)`` replayed through NMS equals YOLOv5's NMS on view k's own de-augmented head rows."""
    _root, _records, _weights, _cache, tta_cache, _raw, views, _answer = setup
    for conf, iou in SETTINGS:
        for k in range(TTA_VIEWS):
            reference = yolov5_detections([(i, v[k], hw, shape) for i, v, hw, shape in views], conf, iou)
            assert_same(reference, [nms_from_candidates(c.view(k), conf, iou) for c in tta_cache])


def test_wbf_cells_equal_a_direct_run(setup):
    _root, _records, _weights, _cache, tta_cache, _raw, views, _answer = setup
    fused_some = False
    for max_det in (300, 20):
        for conf, iou, dets in grid_fused_detections(tta_cache, SETTINGS, "wbf", max_det=max_det, progress=False):
            reference = direct_wbf(views, conf, iou, max_det)
            _equal(reference, dets)
            _equal(reference, [detections_at(c, conf, iou, "wbf", max_det) for c in tta_cache])
            # WBF merged boxes here (fewer boxes than the views had), so the equality covers real fusion
            per_view = sum(len(nms_from_candidates(c.view(k), conf, iou, max_det)) for c in tta_cache
                           for k in range(TTA_VIEWS))
            fused_some |= 0 < sum(len(d) for d in dets) < per_view
    assert fused_some


def test_fuse_views_normalises_and_returns_pixels():
    """Two views agreeing on a box and a third missing it: one box, the views' mean confidence scaled by 2/3."""
    a = Detections("x.jpg", 200, 100, [[10, 10, 50, 40]], [0.9], [1])
    b = Detections("x.jpg", 200, 100, [[12, 10, 52, 40]], [0.6], [1])
    empty = Detections("x.jpg", 200, 100)
    fused = fuse_views([a, b, empty], iou=0.5)
    assert len(fused) == 1 and fused.class_ids.tolist() == [1]
    np.testing.assert_allclose(fused.scores, [(0.9 + 0.6) / 2 * 2 / 3])
    np.testing.assert_allclose(fused.boxes, [[(10 * 0.9 + 12 * 0.6) / 1.5, 10, (50 * 0.9 + 52 * 0.6) / 1.5, 40]],
                               rtol=1e-6)  # WBF averages in float32
    assert len(fuse_views([empty, empty, empty], iou=0.5)) == 0
    with pytest.raises(ValueError, match="not all of this image"):
        fuse_views([a, Detections("y.jpg", 200, 100)], iou=0.5)


# ---------------------------------------------------------------- the per-view cap


def _views_prediction(n: int, seed: int):
    """``n`` head rows ``(1, n, 7)`` on a 640x640 input: boxes in 40 clusters (heavy overlap, so NMS is quick),
    objectness log-uniform over 1e-4..1."""
    import torch

    rng = np.random.default_rng(seed)
    k = rng.integers(0, 40, n)
    xy = rng.uniform(40, 600, (40, 2))[k] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(20, 90, (40, 2))[k] * rng.uniform(0.8, 1.25, (n, 2))
    obj = 10 ** rng.uniform(-4, 0, n)
    cls = rng.uniform(0, 1, (n, 2))
    return torch.from_numpy(np.concatenate([xy, wh, obj[:, None], cls], 1).astype(np.float32))[None]


def test_per_view_cap_is_exact_for_all_views_and_for_each():
    """Views of 32,000, 6,000 and 3,000 rows (the first view, at full scale, has the most): the first is cut to its
    30,000 most confident rows, and NMS over all views (TTA + NMS) and each view's NMS still equal YOLOv5's on the
    uncut rows."""
    import torch

    from livestock.model.yolov5.detector import head_rows_to_candidates

    sizes = (32000, 6000, 3000)
    pred = _views_prediction(sum(sizes), seed=3)
    view_of = torch.from_numpy(np.repeat(np.arange(3), sizes))
    views = [head_rows_to_candidates(pred[0, view_of == k], 1e-4) for k in range(3)]
    assert len(views[0][0]) > MAX_NMS  # the cap binds on the first view
    boxes, scores, obj = (np.concatenate([v[i] for v in views]) for i in range(3))
    labels = np.concatenate([np.full(len(v[0]), k, np.int8) for k, v in enumerate(views)])
    assert len(boxes) > MAX_NMS  # the cap binds on the whole
    capped = cap_views(boxes, scores, obj, labels)
    for k in range(3):
        expected = cap_candidates(*views[k])
        for got, want in zip(capped[:3], expected):
            np.testing.assert_array_equal(got[capped[3] == k], want)
    cands = Candidates("built.jpg", 1280, 720, (640, 640), *capped[:3], 1e-4, False, "yolov5", capped[3], 3)
    shape = (720, 1280, 3)
    for conf, iou in [(0.0001, 0.45), (0.001, 0.7)]:
        assert_same(yolov5_detections([("built.jpg", pred, (640, 640), shape)], conf, iou),
                    [nms_from_candidates(cands, conf, iou)])
        k = 1
        assert_same(yolov5_detections([("built.jpg", pred[:, view_of == k], (640, 640), shape)], conf, iou),
                    [nms_from_candidates(cands.view(k), conf, iou)])


# ---------------------------------------------------------------- the tuning grid


def test_tuning_grid_has_tta_and_wbf_cells_and_keeps_the_one_pass_grid(setup):
    root, _records, weights, cache, tta_cache, raw, views, answer = setup
    confs, ious = (0.0005, 0.001, 0.01), (0.45, 0.6)
    table = tune_thresholds(cache, answer, confs, ious, progress=False, tta_cache=tta_cache)
    assert list(table.columns) == ["tta", "fusion", "conf", "iou", "map", "ap_cow", "ap_pig", "n_detections",
                                   "original"]
    cells = list(dict.fromkeys(zip(table["tta"], table["fusion"])))
    assert cells == [(False, "nms"), (True, "nms"), (True, "wbf")] and len(table) == 3 * 7
    assert table["original"].sum() == 1 and not table[table["original"]]["tta"].any()
    assert set(table.attrs["grid"]) == {"one pass", "TTA + NMS", "TTA + WBF"}

    # TTA off: today's grid, row for row
    plain = tune_thresholds(cache, answer, confs, ious, progress=False)
    pd.testing.assert_frame_equal(table[~table["tta"]].reset_index(drop=True), plain)

    # TTA cells: the score of a direct run of the same setting
    ann = read_answer(answer)
    differ = 0
    for conf, iou in [(0.0005, 0.45), (0.001, 0.6), (0.01, 0.45), (0.001, 0.68)]:
        for fusion, reference in (("nms", _as_detections(yolov5_detections(raw, conf, iou), tta_cache)),
                                  ("wbf", direct_wbf(views, conf, iou))):
            sub = detections_to_submission(reference)
            expected, aps = mean_average_precision_for_boxes(ann, sub, iou_threshold=0.75)
            row = table[table["tta"] & (table["fusion"] == fusion) & (table["conf"] == conf)
                        & (table["iou"] == iou)].iloc[0]
            assert row["map"] == expected and row["n_detections"] == len(sub)
            assert row["ap_pig"] == aps["pig"][0] and row["ap_cow"] == aps["cow"][0]
        one = table[~table["tta"] & (table["conf"] == conf) & (table["iou"] == iou)].iloc[0]
        differ += len({one["map"], *table[table["tta"] & (table["conf"] == conf)
                                          & (table["iou"] == iou)]["map"]}) > 1
    assert differ  # the cells score differently somewhere: the grid has something to choose

    # only the fusions asked for
    only_nms = tune_thresholds(cache, answer, confs, ious, progress=False, tta_cache=tta_cache, tta_fusions=("nms",))
    pd.testing.assert_frame_equal(only_nms, table[table["fusion"] == "nms"].reset_index(drop=True))


def test_best_setting_prefers_the_cheaper_inference_on_a_tie():
    table = pd.DataFrame({
        "tta": [True, True, False, True], "fusion": ["wbf", "nms", "nms", "wbf"],
        "conf": [0.001, 0.001, 0.0005, 0.001], "iou": [0.5, 0.5, 0.5, 0.6],
        "map": [0.9, 0.9, 0.9, 0.95], "n_detections": [50, 80, 100, 70], "original": [False] * 4,
    })
    best = best_setting(table)
    assert (bool(best["tta"]), best["fusion"], best["iou"]) == (True, "wbf", 0.6)  # the highest map first
    best = best_setting(table.iloc[:3])
    assert (bool(best["tta"]), best["fusion"]) == (False, "nms")  # TTA off beats fewer detections
    best = best_setting(table.iloc[:2])
    assert (bool(best["tta"]), best["fusion"]) == (True, "nms")  # NMS before WBF


def test_written_files_name_the_chosen_setting(setup, tmp_path):
    _root, _records, _weights, cache, tta_cache, _raw, _views, answer = setup
    table = tune_thresholds(cache, answer, [0.001], [0.5], progress=False, tta_cache=tta_cache)
    written = write_tuning(table, tmp_path / "run")
    back = pd.read_csv(written["scores"])
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    best = json.loads(written["best"].read_text())
    top = best_setting(table)
    assert best["best"] == {"tta": bool(top["tta"]), "fusion": top["fusion"], "conf": top["conf"],
                            "iou": top["iou"], "map": top["map"], "n_detections": int(top["n_detections"])}
    assert best["cells"] == [{"tta": False, "fusion": "nms"}, {"tta": True, "fusion": "nms"},
                             {"tta": True, "fusion": "wbf"}]
    png = written["heatmap"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_the_chosen_setting_reaches_the_answer_file(setup, tmp_path):
    """``livestock tune --tta`` chooses a setting; ``write_answer`` and ``livestock detect`` apply it: the answer
    written at the chosen (TTA, fusion, conf, IoU) scores what its grid cell scored."""
    from livestock.cli import main
    from livestock.evaluation.inference import write_answer
    from livestock.evaluation.submission import load_detections

    root, records, weights, _cache, tta_cache, _raw, _views, answer = setup
    answer_csv = tmp_path / "answer_truth.csv"
    answer.to_csv(answer_csv, index=False)
    out = tmp_path / "tune"
    cache_dir = tmp_path / "cache"
    assert main(["tune", "--weights", str(weights), "--images", str(root / "frames"), "--answer", str(answer_csv),
                 "--out", str(out), "--imgsz", str(IMGSZ), "--confs", "0.001", "0.01", "--ious", "0.45",
                 "--cache-dir", str(cache_dir), "--tta"]) == 0
    scores = read_csv(out / "scores.csv")  # exactly as written: the score is compared bit for bit
    assert len(scores) == 3 * 3 and set(scores["fusion"]) == {"nms", "wbf"}
    assert (cache_dir / f"shaped-{D.weights_sha256(weights)[:16]}" / "imgsz256-floor0.0001-tta").is_dir()
    wbf = scores[scores["fusion"] == "wbf"].iloc[0]  # a WBF cell, chosen or not: the answer must score as it did
    frame = write_answer(weights, root / "frames", tmp_path / "answer.csv", imgsz=IMGSZ, conf=float(wbf["conf"]),
                         iou=float(wbf["iou"]), cache_dir=cache_dir, tta=True, fusion="wbf")
    assert mean_average_precision_for_boxes(read_answer(answer), frame, iou_threshold=0.75)[0] == wbf["map"]
    # the command line applies the same setting
    dets_csv = tmp_path / "dets.csv"
    assert main(["detect", "--weights", str(weights), "--source", str(root / "frames"), "--imgsz", str(IMGSZ),
                 "--conf", str(wbf["conf"]), "--iou", str(wbf["iou"]), "--tta", "--fusion", "wbf",
                 "--cache-dir", str(cache_dir), "--out", str(dets_csv)]) == 0
    _equal(load_detections(dets_csv), [detections_at(c, wbf["conf"], wbf["iou"], "wbf") for c in tta_cache])


# ---------------------------------------------------------------- the cache


def test_tta_cache_is_keyed_apart_and_resumes(setup, tmp_path, monkeypatch):
    root, _records, weights, cache, tta_cache, _raw, _views, _answer = setup
    sha = D.weights_sha256(weights)
    # one-pass keys and folders are those written before TTA existed: their caches stay valid
    assert D.cache_key(sha, IMGSZ, 1e-4) == f"{sha}|imgsz={IMGSZ}|floor=0.0001|format={D.CACHE_FORMAT}"
    one = D.cache_folder(tmp_path, weights, IMGSZ, 1e-4)
    assert one.name == f"imgsz{IMGSZ}-floor0.0001" and D.cache_folder(tmp_path, weights, IMGSZ, 1e-4, tta=True) != one
    assert D.cache_key(sha, IMGSZ, 1e-4, tta=True) != D.cache_key(sha, IMGSZ, 1e-4)
    first = collect_candidates(weights, root / "frames", IMGSZ, cache_dir=tmp_path, progress=False, tta=True)
    plain = collect_candidates(weights, root / "frames", IMGSZ, cache_dir=tmp_path, progress=False)
    assert all(c.views is None for c in plain)
    monkeypatch.setattr(Yolov5Detector, "__init__", lambda *a, **k: pytest.fail("model loaded"))
    again = collect_candidates(weights, root / "frames", IMGSZ, cache_dir=tmp_path, progress=False, tta=True,
                               in_memory=False)
    for a, b, c in zip(first, again, tta_cache):
        assert a.n_views == b.n_views == TTA_VIEWS
        for field in ("boxes", "scores", "objectness", "views"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            np.testing.assert_array_equal(getattr(a, field), getattr(c, field))
    # a grid from the files on disk equals the one in memory
    for (_c, _t, a), (_c2, _t2, b) in zip(grid_fused_detections(again, SETTINGS[:2], "wbf", progress=False),
                                          grid_fused_detections(tta_cache, SETTINGS[:2], "wbf", progress=False)):
        _equal(a, b)


# ---------------------------------------------------------------- refused


def test_bad_combinations_are_refused_with_one_line(setup, tmp_path, capsys):
    from livestock.evaluation.inference import write_answer

    root, records, weights, cache, tta_cache, _raw, _views, answer = setup
    with pytest.raises(ValueError, match="fusion wbf fuses the views of test-time augmentation: it needs TTA on"):
        check_fusion(False, "wbf")
    with pytest.raises(ValueError, match="fusion must be one of nms, wbf, not 'soft'"):
        check_fusion(True, "soft")
    with pytest.raises(ValueError, match="needs TTA on"):
        detect(weights, root / "frames", IMGSZ, fusion="wbf", progress=False)
    with pytest.raises(ValueError, match="needs TTA on"):
        write_answer(weights, records, tmp_path / "a.csv", imgsz=IMGSZ, conf=0.001, iou=0.6, fusion="wbf")
    with pytest.raises(ValueError, match="no views to fuse"):
        detections_at(cache[0], 0.001, 0.6, "wbf")
    with pytest.raises(ValueError, match="no views to fuse"):
        list(grid_fused_detections(cache, [(0.001, 0.6)], "wbf", progress=False))
    with pytest.raises(ValueError, match="no view 3 among 3"):
        tta_cache[0].view(3)
    with pytest.raises(ValueError, match="not of the same images"):
        tune_thresholds(cache, answer, [0.001], [0.6], progress=False, tta_cache=tta_cache[:2])
    with pytest.raises(ValueError, match="fusion must be one of"):
        tune_thresholds(cache, answer, [0.001], [0.6], progress=False, tta_cache=tta_cache, tta_fusions=("soft",))
    capsys.readouterr()
    _one_line_error(capsys, ["detect", "--weights", str(weights), "--source", str(root / "frames"), "--imgsz",
                             str(IMGSZ), "--fusion", "wbf", "--cache-dir", "none", "--out", str(tmp_path / "d.csv")],
                    "needs TTA on")
    records_path = save_records(records, tmp_path / "records.jsonl")
    _one_line_error(capsys, ["tune", "--weights", str(weights), "--images", str(records_path), "--fusions", "wbf",
                             "--out", str(tmp_path / "t")], "give --tta too")


@pytest.mark.slow
def test_an_exported_model_refuses_tta(setup, tmp_path, capsys):
    ensure_yolov5()
    from yolov5.export import run as export_run

    root, _records, weights, *_ = setup
    local = tmp_path / "shaped.pt"
    shutil.copyfile(weights, local)
    export_run(weights=str(local), include=("onnx",), imgsz=(IMGSZ, IMGSZ), device="cpu")
    onnx_path = local.with_suffix(".onnx")
    with pytest.raises(ValueError, match="shaped.onnx: test-time augmentation .* use the .pt checkpoint"):
        collect_candidates(onnx_path, root / "frames", IMGSZ, progress=False, tta=True)
    capsys.readouterr()
    _one_line_error(capsys, ["detect", "--weights", str(onnx_path), "--source", str(root / "frames"), "--imgsz",
                             str(IMGSZ), "--tta", "--cache-dir", "none", "--out", str(tmp_path / "d.csv")],
                    "shaped.onnx", "use the .pt checkpoint")


# ---------------------------------------------------------------- the inference notebook


@pytest.mark.slow
def test_inference_notebook_tunes_tta_and_applies_the_choice_to_the_test_set(tmp_path, monkeypatch):
    """``YOLOv5_inference.ipynb`` with ``TTA = True``: tuning on the validation fold scores the three cells, and the
    test set's answer and score carry the chosen (TTA, fusion, conf, IoU), the answer equal to a direct run of it."""
    from livestock.data.eda import load_prepared_records
    from livestock.data.split import make_all_splits
    from livestock.data.synth import generate_synthetic_dataset
    from livestock.data.yolo_format import prepare_dataset
    from livestock.evaluation.inference import write_answer
    from notebook_runner import execute_notebook

    generate_synthetic_dataset(tmp_path / "data", tmp_path / "data_test", train_counts={"cow": 16, "pig": 8},
                               test_counts={"cow": 3, "pig": 2}, seed=4, image_scale=0.125, progress=False)
    prepare_dataset(tmp_path / "data", tmp_path / "data" / "prepared", progress=False)
    make_all_splits(tmp_path / "data" / "prepared", tmp_path / "data" / "splits")
    frames = [r.image_path for r in load_prepared_records(tmp_path / "data" / "prepared")[:8]]
    weights = make_checkpoint(tmp_path / "trained_model" / "shaped.pt", frames, size=128)
    nb = execute_notebook("YOLOv5_inference.ipynb", tmp_path / "executed.ipynb",
                     {"ROOT": str(tmp_path), "WEIGHTS": str(weights), "IMGSZ": 128, "DEVICE": "cpu", "TTA": True},
                     tmp_path, monkeypatch)
    scores = pd.read_csv(tmp_path / "runs/tune/multilabel/scores.csv")
    assert list(dict.fromkeys(zip(scores["tta"], scores["fusion"]))) == [(False, "nms"), (True, "nms"), (True, "wbf")]
    best = json.loads((tmp_path / "runs/tune/multilabel/best.json").read_text())["best"]
    score = json.loads((tmp_path / "runs/inference/score.json").read_text())
    assert {k: score[k] for k in ("tta", "fusion", "conf", "iou")} == {k: best[k] for k in ("tta", "fusion", "conf",
                                                                                               "iou")}
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert (f"inference setting: conf {best['conf']:g}, NMS IoU {best['iou']:g}, "
            f"{setting_name(best['tta'], best['fusion'])}") in printed
    test_records = load_prepared_records(tmp_path / "data" / "prepared_test")
    write_answer(weights, test_records, tmp_path / "direct.csv", imgsz=128, conf=best["conf"], iou=best["iou"],
                 device="cpu", tta=best["tta"], fusion=best["fusion"])
    assert (tmp_path / "direct.csv").read_bytes() == (tmp_path / "answer.csv").read_bytes()
