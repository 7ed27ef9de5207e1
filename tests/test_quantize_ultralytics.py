"""INT8 and FP16 of the Ultralytics engine's ONNX exports, whose heads differ from YOLOv5's: YOLO11 (anchor-free,
class scores only, box sides decoded from distance bins by a DFL Conv), YOLO26's one-to-one head (its own top-k,
NMS-free) and YOLO26's one-to-many head (dense rows for NMS).

The models are the suite's tiny runs (tests/ultralytics_runs.py: trained at 64 px on the toy set), exported at 64 px
through ``livestock export``'s functions, INT8 calibrated on 32 training frames (``export_model``'s default; with 16
the one-to-one head's top confidence on one frame moved by 0.07). Tolerances, the same letterboxed
tensor into every model, on the 16 validation frames:

- INT8 vs FP32, raw output: the 20 highest confidences within 0.12, rank for rank: a bound that changes of at most
  0.12 row for row also keep (sorting moves no value by more than the largest change of one row), and one that needs
  no row correspondence, which the top-k head does not keep. Every confident row (FP32 confidence >= 0.25) has an INT8
  row of its class, the same anchor for the dense heads and the best overlap for the top-k head, with IoU >= 0.75
  (boxes are 10 to 20 px at this size: one pixel moves the IoU by about 0.1) and confidence within 0.12.
  The tiny runs end in different models on different CPUs and with different numbers of torch threads (float
  rounding differs, and 20 epochs from scratch amplify it), and the bounds must hold for any of them. Measured worst
  cases: with two threads the changes stayed within 0.05 on an AMD EPYC and reached 0.060 on an Intel Xeon (YOLO26n's
  one-to-one head, top confidence 0.796 -> 0.736); with one thread (a pytest-xdist worker on 2 cores) on the AMD
  EPYC, 0.082 (YOLO26n's one-to-one head), a confident row's IoU 0.80 and a detection's 0.77. A broken quantisation
  (a wrong scale, an uncalibrated range) moves confidences by tenths and boxes by their size.
- INT8 vs FP32, detections through the deployment path (``livestock.evaluation.detect.detect``, Ultralytics'
  ``AutoBackend`` on the file; NMS IoU 0.7 for the dense heads): the best box of each animal (an FP32 detection at
  conf >= 0.25 that overlaps no more confident one of its class by IoU 0.5: toy animals never overlap) has an INT8
  detection of its class with IoU >= 0.7 and confidence within 0.12. Looser than the raw rows because NMS may keep a
  neighbouring anchor of nearly equal confidence in one model and not in the other.
- FP16 vs FP32: the 20 highest confidences within 2e-3, confident rows' boxes at IoU >= 0.98.
- The decode quantised too (``keep_decode_float=False``): the graph ends in one DequantizeLinear over box pixels
  and confidences together, so its step is the whole output range (box coordinates in pixels) / 255, and every
  confidence comes out a whole multiple of that step: as the expected value ``step * round(FP32 / step)``, wherever
  the FP32 confidence is more than 0.08 (``ROUNDING_MARGIN``) from a rounding boundary. For YOLO11 at 64 px the step
  is about 1.9 (its box widths reach 480 px), so every confidence is 0, as YOLOv5's were.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from livestock.data.split import pick_evenly
from livestock.deploy.export import convert_onnx_fp16, export_model
from livestock.deploy.images import images_from, letterbox_input
from livestock.deploy.onnx_model import find_detect_head
from livestock.deploy.quantize import quantize_onnx_int8, tensorrt_qdq_problems
from livestock.deploy.runtime import forward_raw
from livestock.model.onnx_file import check_onnx_model, load_onnx
from livestock.model.ultralytics import compat as C

# Ultralytics reads its config folder when first imported: point it at ours before anything imports it.
C.set_ultralytics_environment()

IMGSZ = 64  # the size the tiny runs train at
N_CALIB = 32
CONFIDENT = 0.25  # FP32 confidence of the rows and detections compared box for box
INT8_CONF, INT8_ROW_IOU, INT8_DET_IOU = 0.12, 0.75, 0.7
ROUNDING_MARGIN = 0.08  # the quantised-decode test: FP32 confidences this far from a rounding boundary
FP16_CONF, FP16_ROW_IOU = 2e-3, 0.98
TOP = 20
KINDS = ("yolo11n", "yolo26n", "yolo26n-one2many")


# ---------------------------------------------------------------- the decode of a DFL head, from a built graph (fast)


def _dfl_head_graph(levels: int = 3, bins: int = 4, nc: int = 2):
    """A graph shaped like YOLO11's head: per level a box Conv (4 x bins) and a class Conv, flattened and joined;
    boxes: softmax over the bins and a fixed 1x1 Conv (the DFL); classes: sigmoid; one output (4 + nc, anchors)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))

    inits: list = []
    const("w0", np.ones((8, 3, 1, 1), np.float32))
    const("wdfl", np.arange(bins, dtype=np.float32).reshape(1, bins, 1, 1))
    const("rows_box", np.array([1, 4 * bins, -1], np.int64))
    const("rows_cls", np.array([1, nc, -1], np.int64))
    const("bins", np.array([1, 4, bins, 2 * levels], np.int64))
    const("sides", np.array([1, 4, 2 * levels], np.int64))
    nodes = [helper.make_node("Conv", ["images", "w0"], ["feat"], name="backbone"),
             helper.make_node("Sigmoid", ["feat"], ["feat_s"], name="act"),
             helper.make_node("Mul", ["feat", "feat_s"], ["feat_act"], name="silu")]
    for i in range(levels):
        const(f"wb{i}", np.ones((4 * bins, 8, 1, 1), np.float32))
        const(f"wc{i}", np.ones((nc, 8, 1, 1), np.float32))
        nodes += [helper.make_node("Conv", ["feat_act", f"wb{i}"], [f"b{i}"], name=f"box{i}"),
                  helper.make_node("Conv", ["feat_act", f"wc{i}"], [f"c{i}"], name=f"cls{i}"),
                  helper.make_node("Reshape", [f"b{i}", "rows_box"], [f"br{i}"], name=f"box_rows{i}"),
                  helper.make_node("Reshape", [f"c{i}", "rows_cls"], [f"cr{i}"], name=f"cls_rows{i}")]
    nodes += [
        helper.make_node("Concat", [f"br{i}" for i in range(levels)], ["boxes"], axis=2, name="cat_boxes"),
        helper.make_node("Concat", [f"cr{i}" for i in range(levels)], ["scores"], axis=2, name="cat_scores"),
        helper.make_node("Reshape", ["boxes", "bins"], ["binned"], name="dfl_view"),
        helper.make_node("Transpose", ["binned"], ["binned_t"], perm=[0, 2, 1, 3], name="dfl_transpose"),
        helper.make_node("Softmax", ["binned_t"], ["probs"], axis=1, name="dfl_softmax"),
        helper.make_node("Conv", ["probs", "wdfl"], ["expected"], name="dfl_conv"),
        helper.make_node("Reshape", ["expected", "sides"], ["dist"], name="dfl_out"),
        helper.make_node("Sigmoid", ["scores"], ["probs_cls"], name="cls_sigmoid"),
        helper.make_node("Concat", ["dist", "probs_cls"], ["output0"], axis=1, name="cat"),
    ]
    graph = helper.make_graph(
        nodes, "dfl", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 2, 1])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + nc, 2 * levels])], inits)
    return helper.make_model(graph)


def test_the_dfl_conv_is_decode_and_the_box_convs_are_the_head():
    """The DFL Conv is the first Conv met walking back from the box output, but it convolves rows the decode has
    reshaped: it is decode, and the head's box Convs lie behind it."""
    heads, decode = find_detect_head(_dfl_head_graph())
    assert heads == [name for i in range(3) for name in (f"box{i}", f"cls{i}")]
    assert {"dfl_softmax", "dfl_conv", "cls_sigmoid", "cat"} <= set(decode)
    assert not {"backbone", "act", "silu"} & set(decode)


# ---------------------------------------------------------------- exports of the tiny runs


def _best(kind: str, request) -> Path:
    run = request.getfixturevalue("tiny_yolo11_run" if kind == "yolo11n" else "tiny_yolo26_run")
    return run[0].best


@pytest.fixture(scope="module", params=KINDS)
def exported(request, ultralytics_toy, tmp_path_factory) -> dict:
    """FP32 / FP16 / INT8 files of one head at ``IMGSZ``, INT8 with the decode quantised too, the calibration and
    the validation images. YOLO26's default export holds its one-to-one head; the one-to-many one is asked for."""
    from livestock.model.ultralytics import adapter as U

    kind = request.param
    weights = _best(kind, request)
    out = tmp_path_factory.mktemp(kind)
    calib = pick_evenly(images_from(ultralytics_toy, "train"), N_CALIB)  # the images export_model calibrates on
    if kind.endswith("one2many"):
        fp32 = U.export_onnx(weights, IMGSZ, out / "one2many.onnx", variant="one2many")
        files = {"onnx": fp32, "onnx-fp16": convert_onnx_fp16(fp32, out / "one2many_fp16.onnx"),
                 "onnx-int8": quantize_onnx_int8(fp32, out / "one2many_int8.onnx", calib)}
    else:
        files = export_model(weights, IMGSZ, ("onnx", "onnx-fp16", "onnx-int8"), calib_images=ultralytics_toy,
                             out_dir=out, n_calib=N_CALIB)
    files["int8-all"] = quantize_onnx_int8(files["onnx"], out / "all_int8.onnx", calib, keep_decode_float=False)
    files["onnx-int8-trt"] = quantize_onnx_int8(files["onnx"], out / "int8_trt.onnx", calib, target="tensorrt")
    return {"kind": kind, "weights": weights, **files, "calib": calib,
            "val": images_from(ultralytics_toy, "val"), "head": check_onnx_model(files["onnx"]).head}


def _rows(raw: np.ndarray, head: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corner boxes, confidences, classes) of one image's raw output: ``class`` columns (4 + nc, anchors) of
    centre xywh and class scores, or ``end_to_end`` rows (k, 6) of corners, confidence and class."""
    if head == "class":
        xy, wh, scores = raw[:2].T, raw[2:4].T, raw[4:]
        return np.concatenate([xy - wh / 2, xy + wh / 2], 1), scores.max(0), scores.argmax(0)
    assert head == "end_to_end"
    return raw[:, :4], raw[:, 4], raw[:, 5].astype(int)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], 1)
    return inter / (area - inter)


def _compare(exported: dict, other: str) -> dict:
    """Worst differences between the FP32 file and ``other`` over the validation frames: top-``TOP`` confidences
    rank for rank, and each confident FP32 row against its counterpart (same anchor, or best overlap of its class
    for the top-k head): the lowest IoU and the largest confidence change."""
    head = exported["head"]
    worst = {"top_conf": 0.0, "row_iou": 1.0, "row_conf": 0.0, "confident": 0, "fp32_top": 0.0, "other_top": 0.0}
    for image in exported["val"]:
        x, _ = letterbox_input(image, IMGSZ)
        boxes, conf, cls = _rows(forward_raw(exported["onnx"], x)[0], head)
        boxes_o, conf_o, cls_o = _rows(forward_raw(exported[other], x)[0], head)
        top, top_o = np.sort(conf)[::-1][:TOP], np.sort(conf_o)[::-1][:TOP]
        worst["top_conf"] = max(worst["top_conf"], float(np.abs(top - top_o).max()))
        worst["fp32_top"], worst["other_top"] = max(worst["fp32_top"], top[0]), max(worst["other_top"], top_o[0])
        for i in np.flatnonzero(conf >= CONFIDENT):
            if head == "class":
                j = i
            else:
                same = np.flatnonzero(cls_o == cls[i])
                assert len(same), f"{image.name}: no {other} row of class {cls[i]}"
                j = same[int(np.argmax(_iou(boxes[i], boxes_o[same])))]
            worst["row_iou"] = min(worst["row_iou"], float(_iou(boxes[i], boxes_o[j:j + 1])[0]))
            worst["row_conf"] = max(worst["row_conf"], float(abs(conf_o[j] - conf[i])))
            worst["confident"] += 1
    return worst


# ---------------------------------------------------------------- the head, found in the real graphs


@pytest.mark.slow
def test_head_and_decode_found_in_each_graph(exported):
    import onnx

    fp32 = load_onnx(exported["onnx"])
    ops = {n.name: n for n in fp32.graph.node}
    heads, decode = find_detect_head(fp32)
    weights = {t.name: t for t in fp32.graph.initializer}
    channels = Counter(weights[ops[h].input[1]].dims[0] for h in heads)
    decode_ops = Counter(ops[d].op_type for d in decode)
    # a box Conv and a class Conv (2 classes) per pyramid level
    if exported["kind"] == "yolo11n":
        assert channels == {4 * 16: 3, 2: 3}  # 16 distance bins per box side
        assert decode_ops["Softmax"] == 1 and decode_ops["Conv"] == 1  # the DFL, decode
    else:
        assert channels == {4: 3, 2: 3}  # YOLO26: one distance per side, no DFL
        assert decode_ops["Conv"] == 0
    assert decode_ops["TopK"] == (2 if exported["head"] == "end_to_end" else 0)
    assert decode_ops["Sigmoid"] == 1

    # INT8: the network quantised; after each head Conv's output, the decode unquantised. Its arithmetic on
    # constants (the anchor grid, shapes) was folded before quantisation, so fewer Mul / Add / Shape nodes remain.
    int8 = onnx.load(str(exported["onnx-int8"]))
    ops8 = {n.name: n.op_type for n in int8.graph.node}
    heads8, decode8 = find_detect_head(int8)
    assert len(heads8) == len(heads)
    assert Counter(ops8.values())["QuantizeLinear"] > 50
    float_decode = Counter(ops8[d] for d in decode8 if ops8[d] not in ("QuantizeLinear", "DequantizeLinear"))
    assert set(float_decode) <= set(decode_ops)
    for op in ("Softmax", "Conv", "Sigmoid", "TopK", "GatherElements", "Concat"):
        assert float_decode[op] == decode_ops[op], op
    assert Counter(ops8[d] for d in decode8)["QuantizeLinear"] <= len(heads)

    # FP16: float32 in and out, the decode float32 as well
    fp16 = onnx.load(str(exported["onnx-fp16"]))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert fp16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ops16 = {n.name: n.op_type for n in fp16.graph.node}
    decode16 = Counter(ops16[d] for d in find_detect_head(fp16)[1])
    del decode16["Cast"]  # the converter's, back to float32 after each head Conv, and the top-k head's own
    assert decode16 == decode_ops - Counter({"Cast": decode_ops["Cast"]})


# ---------------------------------------------------------------- INT8 confidences survive


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx-int8", "onnx-int8-trt"])
def test_int8_confidences_and_boxes_stay_close_to_fp32(exported, fmt):
    meta = {p.key: p.value for p in load_onnx(exported[fmt]).metadata_props}
    assert meta["precision"] == "int8" and meta["engine"] == "ultralytics"
    assert meta["variant"] == ("one2one" if exported["head"] == "end_to_end" else "one2many")
    assert meta["int8_target"] == ("tensorrt" if fmt.endswith("trt") else "onnxruntime")
    if fmt.endswith("trt"):  # YOLO11's attention (MatMul, Softmax) and YOLO26's top-k included
        assert tensorrt_qdq_problems(load_onnx(exported[fmt])) == []
    w = _compare(exported, fmt)
    print(f"{exported['kind']} {fmt} vs FP32 at {IMGSZ}: top-{TOP} conf {w['top_conf']:.4f}, {w['confident']} "
          f"confident rows: IoU >= {w['row_iou']:.3f}, conf within {w['row_conf']:.4f}; top conf "
          f"{w['other_top']:.3f} (FP32 {w['fp32_top']:.3f})")
    assert w["fp32_top"] >= 0.4 and w["confident"] >= 10  # a model sure enough of something to compare
    assert w["top_conf"] <= INT8_CONF
    assert w["row_iou"] >= INT8_ROW_IOU and w["row_conf"] <= INT8_CONF


@pytest.mark.slow
def test_int8_detections_match_fp32_through_the_deployment_path(exported):
    from livestock.evaluation.detect import detect

    def run(path, conf):
        return detect(path, exported["val"], IMGSZ, conf=conf, iou=0.7, device="cpu", progress=False)

    matched = 0
    # INT8 at a lower threshold: a box whose confidence moves across CONFIDENT is still found
    for ref, q in zip(run(exported["onnx"], CONFIDENT), run(exported["onnx-int8"], CONFIDENT - INT8_CONF)):
        for k in range(len(ref)):
            same = ref.class_ids[:k] == ref.class_ids[k]  # detections come most confident first
            if same.any() and _iou(ref.boxes[k], ref.boxes[:k][same]).max() >= 0.5:
                continue  # a second box on an animal: NMS keeps or drops it by a hair
            mine = np.flatnonzero(q.class_ids == ref.class_ids[k])
            assert len(mine), f"{ref.image_id}: no INT8 detection of class {ref.class_ids[k]}"
            ious = _iou(ref.boxes[k], q.boxes[mine])
            j = int(np.argmax(ious))
            assert ious[j] >= INT8_DET_IOU, f"{ref.image_id}: best INT8 box at IoU {ious[j]:.3f}"
            assert abs(q.scores[mine[j]] - ref.scores[k]) <= INT8_CONF
            matched += 1
    assert matched >= 10


@pytest.mark.slow
def test_quantising_the_decode_puts_confidences_on_the_box_pixel_grid(exported):
    """What keeping the decode float avoids, for each head: see the module docstring."""
    from onnx import numpy_helper

    model = load_onnx(exported["int8-all"])
    producer = {out: n for n in model.graph.node for out in n.output}
    last = producer[model.graph.output[0].name]
    assert last.op_type == "DequantizeLinear"
    step = float(numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == last.input[1])))
    # MinMax calibration: the range of the whole output on the calibration images, zero included, over 255 levels
    outputs = [forward_raw(exported["onnx"], letterbox_input(image, IMGSZ)[0]) for image in exported["calib"]]
    low, high = min(0.0, min(float(o.min()) for o in outputs)), max(0.0, max(float(o.max()) for o in outputs))
    assert step == pytest.approx((high - low) / 255, rel=1e-3)

    head, compared, nonzero, top = exported["head"], 0, 0, 0.0
    for image in exported["val"]:
        x, _ = letterbox_input(image, IMGSZ)
        conf = np.sort(_rows(forward_raw(exported["onnx"], x)[0], head)[1])
        conf_q = np.sort(_rows(forward_raw(exported["int8-all"], x)[0], head)[1])
        levels = conf_q / step
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # whole multiples of the step
        clear = np.abs(conf / step - np.floor(conf / step) - 0.5) * step > ROUNDING_MARGIN
        np.testing.assert_allclose(conf_q[clear], step * np.round(conf[clear] / step), atol=1e-5)
        compared += int(clear.sum())
        nonzero += int((conf_q > 0).sum())
        top = max(top, float(conf[-1]))
    print(f"{exported['kind']}: decode quantised, confidence step {step:.3f}; {nonzero} of the rows non-zero")
    assert compared > 0
    if exported["kind"] == "yolo11n":  # box widths reach hundreds of pixels: every confidence rounds to 0
        assert step / 2 > top + ROUNDING_MARGIN and nonzero == 0


# ---------------------------------------------------------------- FP16


@pytest.mark.slow
def test_fp16_stays_close_to_fp32(exported):
    assert check_onnx_model(exported["onnx-fp16"]).precision == "fp16"
    w = _compare(exported, "onnx-fp16")
    assert w["top_conf"] <= FP16_CONF
    assert w["row_iou"] >= FP16_ROW_IOU and w["row_conf"] <= FP16_CONF


# ---------------------------------------------------------------- `livestock export` on an Ultralytics checkpoint


@pytest.mark.slow
def test_cli_export_of_an_ultralytics_checkpoint(tiny_yolo11_run, ultralytics_toy, tmp_path, capsys):
    from livestock.cli import main

    weights = tiny_yolo11_run[0].best
    out = tmp_path / "out"
    assert main(["export", "--weights", str(weights), "--imgsz", str(IMGSZ), "--formats", "onnx-int8",
                 "--calib", str(ultralytics_toy), "--n-calib", "4", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == [f"{weights.stem}_{IMGSZ}_int8.onnx"]  # the FP32 source was scratch
    assert "onnx-int8" in capsys.readouterr().out
    with pytest.raises(ValueError, match=rf"{weights.name}.*not a multiple of the model's stride 32"):
        export_model(weights, 100, formats=("onnx",), out_dir=tmp_path)
