"""Edge export: ONNX FP32 / FP16 / INT8 against PyTorch, the Detect-head decode found from the graph, model-file
checks, pruning, and the ``livestock export`` / ``livestock bench`` commands.

Tolerances stated here, input for input (the same letterboxed tensor into every model):
- ONNX FP32 vs PyTorch: raw head output within 0.1 px (boxes) and 1e-4 (objectness, class scores); after NMS the
  same boxes within 1 px and confidences within 1e-3.
- ONNX FP16 vs FP32 (top 100 candidates): boxes within 1 px, confidences within 2e-3.
- ONNX INT8 vs FP32 on a trained model (top 20 candidates): boxes within 3% of the input size, confidences within
  0.05, and the confidences must not collapse to 0 (what quantising the head decode does). The same bounds for the
  INT8 file made for TensorRT (symmetric int8 activations), run here by ONNX Runtime.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from livestock.deploy.bench import (
    BENCH_COLUMNS, benchmark_models, compressed_size_mb, evaluate_map, plot_bench, validation_images,
)
from livestock.model.engine import CONTEST_MAX_WEIGHT_MB
from livestock.deploy import export as export_module
from livestock.deploy.export import _drop_repeated_casts, export_model, export_onnx_fp32, file_size_mb
from livestock.data.split import pick_evenly
from livestock.deploy.images import images_from, letterbox_input
from livestock.deploy.onnx_model import check_model_file, find_detect_head, sort_topologically
from livestock.deploy.prune import conv_weight_sparsity, prune_conv_weights, prune_weights
from livestock.deploy.quantize import quantize_onnx_int8, tensorrt_qdq_problems
from livestock.deploy.runtime import forward_raw, openvino_available
from livestock.model.onnx_file import check_onnx_model, load_onnx, save_onnx
from livestock.model.yolov5.models import load_model, random_init_checkpoint

IMG = 128  # export size for the random-init models: multiple of 64, so P6 models fit too
TRAINED_IMG = 64  # the size tests/conftest.py trains tiny_trained_model at; exported at that size
RAW_BOX_PX, RAW_SCORE = 0.1, 1e-4  # ONNX FP32 vs PyTorch, raw head output
NMS_BOX_PX, NMS_CONF = 1.0, 1e-3  # ONNX FP32 vs PyTorch, after NMS
FP16_BOX_PX, FP16_CONF = 1.0, 2e-3  # ONNX FP16 vs ONNX FP32, top candidates
INT8_BOX_FRACTION, INT8_CONF = 0.03, 0.05  # ONNX INT8 vs FP32 on a trained model: box error <= 3% of imgsz
DECODE_OPS = {"Reshape", "Transpose", "Sigmoid", "Split", "Mul", "Pow", "Add", "Concat"}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    from toy_yolo import make_toy_yolo_dataset

    return make_toy_yolo_dataset(tmp_path_factory.mktemp("toy"), n_train=12, n_val=6)


@pytest.fixture(scope="module")
def nano(tmp_path_factory, toy) -> dict:
    """A random-init YOLOv5n and its FP32 / FP16 / INT8 (ONNX Runtime and TensorRT) exports at ``IMG``."""
    root = tmp_path_factory.mktemp("nano")
    weights = random_init_checkpoint("yolov5n", root / "nano.pt")
    paths = export_model(weights, IMG, ("onnx", "onnx-fp16", "onnx-int8", "onnx-int8-trt"),
                         calib_images=toy.parent / "images" / "train", out_dir=root / "export", n_calib=6)
    return {"pt": weights, **paths}


@pytest.fixture(scope="session")
def trained(tiny_trained_model) -> tuple[Path, Path]:
    """(weights, data.yaml) of the suite's tiny trained YOLOv5n (tests/conftest.py)."""
    return tiny_trained_model


def _val_images(data_yaml: Path, n: int = 3) -> list[Path]:
    return pick_evenly(images_from(data_yaml, split="val"), n)


def _conf(raw: np.ndarray) -> np.ndarray:
    return raw[:, 4] * raw[:, 5:].max(1)


def _nms(raw: np.ndarray, conf: float = 0.001) -> np.ndarray:
    import torch
    from yolov5.utils.general import non_max_suppression

    return non_max_suppression(torch.from_numpy(raw), conf, 0.6)[0].numpy()


def _assert_same_detections(a: np.ndarray, b: np.ndarray, box_px: float, conf_tol: float, floor: float) -> int:
    """Every detection of ``a`` above ``floor`` has one in ``b`` of the same class within the tolerances
    (the floor keeps clear of the NMS threshold, where a 1e-7 difference may decide); returns how many matched."""
    matched = 0
    for row in a[a[:, 4] > floor]:
        same = b[b[:, 5] == row[5]]
        assert len(same), f"no detection of class {row[5]} in the other model"
        err = np.abs(same[:, :4] - row[:4]).max(1)
        k = int(err.argmin())
        assert err[k] <= box_px, f"closest box {err[k]:.3f} px away"
        assert abs(same[k, 4] - row[4]) <= conf_tol
        matched += 1
    return matched


# ---------------------------------------------------------------- the Detect head, from the graph (fast)


def _toy_head_graph(levels: int = 3):
    """A hand-built graph shaped like YOLOv5's: backbone Conv -> per level head Conv -> decode -> one Concat."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outs = [helper.make_node("Conv", ["images", "w0"], ["feat"], name="backbone")], [], []
    inits.append(numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w0"))
    inits.append(numpy_helper.from_array(np.array([1, 3, 7, 4], np.int64), "shape"))
    inits.append(numpy_helper.from_array(np.array([1, 12, 7], np.int64), "flat"))
    inits.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    for i in range(levels):
        inits.append(numpy_helper.from_array(np.ones((21, 4, 1, 1), np.float32), f"wh{i}"))
        nodes += [
            helper.make_node("Conv", ["feat", f"wh{i}"], [f"h{i}"], name=f"head{i}"),
            helper.make_node("Reshape", [f"h{i}", "shape"], [f"r{i}"], name=f"view{i}"),
            helper.make_node("Sigmoid", [f"r{i}"], [f"s{i}"], name=f"sig{i}"),
            helper.make_node("Mul", [f"s{i}", "two"], [f"m{i}"], name=f"mul{i}"),
            helper.make_node("Pow", [f"m{i}", "two"], [f"p{i}"], name=f"pow{i}"),
            helper.make_node("Reshape", [f"p{i}", "flat"], [f"o{i}"], name=f"flat{i}"),
        ]
        outs.append(f"o{i}")
    nodes.append(helper.make_node("Concat", outs, ["output0"], axis=1, name="cat"))
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 12 * levels, 7])], inits)
    return helper.make_model(graph)


@pytest.mark.parametrize("levels", [3, 4])
def test_find_detect_head_on_a_built_graph(levels):
    heads, decode = find_detect_head(_toy_head_graph(levels))
    assert heads == [f"head{i}" for i in range(levels)]
    expected = {f"{op}{i}" for i in range(levels) for op in ("view", "sig", "mul", "pow", "flat")} | {"cat"}
    assert set(decode) == expected
    assert "backbone" not in decode


def test_find_detect_head_without_conv_is_an_error():
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ValueError, match="no Conv"):
        find_detect_head(helper.make_model(graph))


def test_sort_topologically_restores_producer_order():
    model = _toy_head_graph(3)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[::-1])  # consumers before producers
    sort_topologically(model.graph)
    seen = {"images"} | {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        assert all(i in seen for i in node.input), node.name
        seen.update(node.output)
    assert len(model.graph.node) == len(nodes)


# ---------------------------------------------------------------- small helpers (fast)


def test_images_from_folder_list_and_data_yaml(tmp_path):
    import cv2

    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    for name in ("b.jpg", "a.png", "notes.txt"):
        if name.endswith(".txt"):
            (folder / name).write_text("x")
        else:
            cv2.imwrite(str(folder / name), np.zeros((8, 8, 3), np.uint8))
    listing = tmp_path / "train.txt"
    listing.write_text("./images/train/b.jpg\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: train.txt\nnames: {0: pig, 1: cow}\n")
    assert [p.name for p in images_from(folder)] == ["a.png", "b.jpg"]
    assert [p.name for p in images_from(listing)] == ["b.jpg"]
    assert [p.name for p in images_from(tmp_path / "data.yaml")] == ["a.png", "b.jpg"]
    assert [p.name for p in images_from(tmp_path / "data.yaml", split="val")] == ["b.jpg"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        images_from(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="'test'"):
        images_from(tmp_path / "data.yaml", split="test")
    assert pick_evenly(list(range(10)), 3) == [0, 4, 9]
    assert pick_evenly([1, 2], 5) == [1, 2]


def _label_detections(images: list[Path], conf: float, shift: float = 0.0) -> list:
    """Detections equal to each image's labels at confidence ``conf``, every box moved right by ``shift`` times
    its width (0.5: IoU 1/3 with its label, a miss at the contest's 0.75)."""
    import cv2

    from livestock.data.yolo_format import label_path_for, read_label_file, yolo_to_pixel
    from livestock.records import Detections

    out = []
    for image in images:
        h, w = cv2.imread(str(image)).shape[:2]
        ids, yolo = read_label_file(label_path_for(image))
        boxes = yolo_to_pixel(yolo, w, h)
        boxes[:, [0, 2]] += shift * (boxes[:, 2] - boxes[:, 0])[:, None]
        out.append(Detections(image.name, w, h, boxes, np.full(len(ids), conf), ids))
    return out


def test_evaluate_map_scores_what_the_labels_imply(toy, monkeypatch):
    """The first half of the images detected exactly (confidence 0.9), the rest with every box half a width off
    (0.5): each class's AP is then the share of its boxes in the first half, exactly."""
    from livestock.data.yolo_format import label_path_for, read_label_file
    from livestock.deploy import bench

    images = validation_images(toy, max_images=None)
    good, bad = images[: len(images) // 2], images[len(images) // 2:]
    calls = []

    def fake_detect(weights, images, imgsz, conf, iou, device, progress):
        calls.append((Path(weights).suffix, device, [p.name for p in images]))
        return _label_detections(good, 0.9) + _label_detections(bad, 0.5, shift=0.5)

    monkeypatch.setattr(bench, "detect", fake_detect)
    monkeypatch.setattr(bench, "check_model_file", lambda path, imgsz: {"names": {0: "pig", 1: "cow"}})
    boxes = {c: [0, 0] for c in (0, 1)}  # class -> [boxes in the first half, all boxes]
    for i, image in enumerate(images):
        for c in read_label_file(label_path_for(image))[0]:
            boxes[int(c)][0] += i < len(good)
            boxes[int(c)][1] += 1
    expected = np.mean([first / total for first, total in boxes.values()])
    assert 0.2 < expected < 0.8
    assert evaluate_map("model.onnx", images, IMG, device="cuda:0") == pytest.approx(expected, abs=1e-12)
    assert evaluate_map("model.pt", images, IMG, device="cuda:0") == pytest.approx(expected, abs=1e-12)
    # ONNX Runtime stays on the CPU; PyTorch weights go to the asked device.
    assert [c[:2] for c in calls] == [(".onnx", "cpu"), (".pt", "cuda:0")]
    assert calls[0][2] == [p.name for p in images]
    monkeypatch.setattr(bench, "detect", lambda *a, **k: _label_detections(images, 0.9))
    assert evaluate_map("model.onnx", images, IMG) == pytest.approx(1.0, abs=1e-12)
    monkeypatch.setattr(bench, "detect", lambda *a, **k: _label_detections(images, 0.9, shift=0.5))
    assert evaluate_map("model.onnx", images, IMG) == 0.0


def test_validation_images_are_capped_evenly(toy):
    every = images_from(toy, split="val")
    assert len(every) == 6
    assert validation_images(toy) == every
    assert validation_images(toy, max_images=3) == [every[0], every[2], every[5]]
    assert validation_images(toy, max_images=50) == every


def test_cli_bench_passes_device_and_max_images(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from livestock.cli import main
    from livestock.deploy import bench

    seen = []

    def fake_benchmark(**kwargs):
        seen.append(kwargs)
        df = pd.DataFrame([{c: 0 for c in BENCH_COLUMNS}])
        df.attrs["val_images"] = 0
        return df

    monkeypatch.setattr(bench, "benchmark_models", fake_benchmark)
    monkeypatch.setattr(bench, "plot_bench", lambda df, path: path)
    out = str(tmp_path / "bench")
    assert main(["bench", "--models", "yolov5n", "--device", "cpu", "--max-images", "7", "--out", out]) == 0
    assert main(["bench", "--models", "yolov5n", "--out", out]) == 0
    assert main(["bench", "--models", "yolov5n", "--max-images", "0", "--out", out]) == 0
    assert [(k["device"], k["max_val_images"]) for k in seen] == [("cpu", 7), ("cpu", 200), ("cpu", None)]
    assert main(["bench", "--models", "yolov5n", "--max-images", "-1", "--out", out]) == 1
    assert "--max-images" in capsys.readouterr().err


def test_bench_refuses_an_unknown_device_before_any_work(tmp_path, capsys):
    from livestock.cli import main

    assert main(["bench", "--models", "yolov5n", "--device", "tpu", "--out", str(tmp_path / "bench")]) == 1
    assert "unknown device" in capsys.readouterr().err
    for option, message in ((["--imgsz", "0"], "sizes are whole numbers of at least 32"),
                            (["--imgsz", "abc"], "--imgsz 'abc'"), (["--extra", "yolov5n@16"], "--extra"),
                            (["--runs", "0"], "--runs and --repeats must be at least 1"),
                            (["--threads", "0"], "must be at least 1"), (["--prune", "2"], "--prune 2.0"),
                            (["--weights", str(tmp_path / "nope.pt")], "nope.pt: weights not found")):
        assert main(["bench", "--models", "yolov5n", "--out", str(tmp_path / "bench"), *option]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_prune_conv_weights_reaches_the_global_sparsity():
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.Linear(4, 4))
    model[2].weight.data *= 3  # layers of different scales: global pruning takes more from the smaller one
    linear = model[3].weight.detach().clone()
    before = torch.cat([model[i].weight.detach().abs().flatten() for i in (0, 2)])
    got = prune_conv_weights(model, 0.6)
    assert got == pytest.approx(0.6, abs=1e-3)
    assert conv_weight_sparsity(model) == got
    # Permanent: plain parameters again, no masks or hooks left; other layers untouched.
    assert not any("orig" in n or "mask" in n for n, _ in model.named_parameters())
    assert not any("mask" in n for n, _ in model.named_buffers())
    assert torch.equal(model[3].weight, linear)
    # Global: the smallest magnitudes went, whatever their layer.
    after = torch.cat([model[i].weight.detach().flatten() for i in (0, 2)])
    assert before[after == 0].max() <= before[after != 0].min()
    assert (model[0].weight == 0).float().mean() > (model[2].weight == 0).float().mean()
    with pytest.raises(ValueError, match="sparsity"):
        prune_conv_weights(model, 1.0)


# ---------------------------------------------------------------- exports of a random-init model


@pytest.mark.slow
def test_exports_are_single_files_with_metadata(nano):
    for fmt, precision in (("onnx", "fp32"), ("onnx-fp16", "fp16"), ("onnx-int8", "int8"),
                           ("onnx-int8-trt", "int8")):
        path = nano[fmt]
        assert path.is_file() and not Path(f"{path}.data").exists(), "one self-contained file"
        info = check_onnx_model(path, imgsz=IMG, nc=2)
        assert info.input_shape == (1, 3, IMG, IMG)
        assert info.names == {0: "pig", 1: "cow"} and info.stride == 32 and info.precision == precision
        assert file_size_mb(path) < CONTEST_MAX_WEIGHT_MB
    sizes = {f: file_size_mb(nano[f]) for f in ("onnx", "onnx-fp16", "onnx-int8", "onnx-int8-trt")}
    assert sizes["onnx-fp16"] < 0.6 * sizes["onnx"] and sizes["onnx-int8"] < 0.4 * sizes["onnx"]
    assert sizes["onnx-int8-trt"] < 0.4 * sizes["onnx"]  # int8 weights; the float biases are a few kB


@pytest.mark.slow
def test_onnx_fp32_matches_pytorch(nano, toy):
    for image in _val_images(toy):
        x, _ = letterbox_input(image, IMG)
        ref, got = forward_raw(nano["pt"], x), forward_raw(nano["onnx"], x)
        assert got.shape == ref.shape
        assert np.abs(got[0, :, :4] - ref[0, :, :4]).max() <= RAW_BOX_PX
        assert np.abs(got[0, :, 4:] - ref[0, :, 4:]).max() <= RAW_SCORE
        a, b = _nms(ref), _nms(got)
        assert len(a) > 0
        assert _assert_same_detections(a, b, NMS_BOX_PX, NMS_CONF, floor=0.002) > 0
        assert _assert_same_detections(b, a, NMS_BOX_PX, NMS_CONF, floor=0.002) > 0


@pytest.mark.slow
def test_fp16_keeps_float32_io_and_a_float32_decode(nano, toy):
    import onnx

    model = onnx.load(str(nano["onnx-fp16"]))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    heads, decode = find_detect_head(model)
    ops = {n.name: n for n in model.graph.node}
    assert len(heads) == 3
    # Half precision up to the head Convs, a Cast back to float, then the decode as in the FP32 graph.
    decode_ops = Counter(ops[d].op_type for d in decode if ops[d].op_type != "Cast")
    assert decode_ops == Counter(n.op_type for n in (
        {m.name: m for m in onnx.load(str(nano["onnx"])).graph.node}[d] for d in find_detect_head(nano["onnx"])[1]))
    x, _ = letterbox_input(_val_images(toy, 1)[0], IMG)
    ref, half = forward_raw(nano["onnx"], x)[0], forward_raw(nano["onnx-fp16"], x)[0]
    top = np.argsort(-_conf(ref))[:100]
    assert np.abs(half[top, :4] - ref[top, :4]).max() <= FP16_BOX_PX
    assert np.abs(_conf(half)[top] - _conf(ref)[top]).max() <= FP16_CONF


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx-int8", "onnx-int8-trt"])
def test_int8_keeps_the_decode_in_float(nano, fmt):
    import onnx

    fp32 = onnx.load(str(nano["onnx"]))
    int8 = onnx.load(str(nano[fmt]))
    ops32 = {n.name: n.op_type for n in fp32.graph.node}
    ops8 = {n.name: n.op_type for n in int8.graph.node}
    heads, decode = find_detect_head(int8)
    assert len(heads) == 3
    # Quantised: the network before the head (QuantizeLinear / DequantizeLinear pairs everywhere)...
    assert Counter(ops8.values())["QuantizeLinear"] > 50
    # ...but after each head Conv's output quantisation, the decode ops are the FP32 graph's, unquantised.
    float_decode = [d for d in decode if ops8[d] not in ("QuantizeLinear", "DequantizeLinear")]
    assert Counter(ops8[d] for d in float_decode) == Counter(ops32[d] for d in find_detect_head(fp32)[1])
    assert Counter(ops8[d] for d in decode)["QuantizeLinear"] <= len(heads)
    assert set(ops8[d] for d in float_decode) <= DECODE_OPS


def _head_conv_weight_types(model) -> list[int]:
    """The stored type of each of the head's last Convs' weights (TensorProto.FLOAT, or TensorProto.INT8 dequantised
    in the graph)."""
    stored = {i.name: i.data_type for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    heads = [n for n in model.graph.node if n.name in find_detect_head(model)[0]]
    return [stored[producer[n.input[1]].input[0] if n.input[1] in producer else n.input[1]] for n in heads]


def test_int8_for_tensorrt_keeps_its_rules_where_the_cpu_file_breaks_them(nano):
    """TensorRT builds INT8 only from symmetric int8 Q/DQ with float biases; ONNX Runtime's CPU form breaks both."""
    from onnx import TensorProto, helper

    trt = load_onnx(nano["onnx-int8-trt"])
    assert tensorrt_qdq_problems(trt) == []
    assert {p.key: p.value for p in trt.metadata_props}["int8_target"] == "tensorrt"
    assert Counter(n.op_type for n in trt.graph.node)["QuantizeLinear"] > 50  # quantised, not left float
    # The head's last Convs stay float (weights included): symmetric int8 over their outputs was too coarse
    assert _head_conv_weight_types(trt) == [TensorProto.FLOAT] * 3
    cpu = tensorrt_qdq_problems(load_onnx(nano["onnx-int8"]))
    assert any("zero point uint8" in p for p in cpu)  # asymmetric uint8 activations (its int32 biases: below)
    # A per-channel weight scale along the input channels is caught too
    dq = next(n for n in trt.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in
              {c.input[1] for c in trt.graph.node if c.op_type == "Conv"})
    del dq.attribute[:]
    dq.attribute.append(helper.make_attribute("axis", 1))
    assert tensorrt_qdq_problems(trt) == [f"DequantizeLinear {dq.name}: per-channel along axis 1, TensorRT needs 0"]


def test_int8_head_convs_stay_float_unless_asked(nano, toy, tmp_path):
    """Both INT8 files keep the head's last Convs float; keep_head_float=False quantises them (the rest of the graph
    as before: uint8 activations in the CPU file)."""
    from onnx import TensorProto

    assert _head_conv_weight_types(load_onnx(nano["onnx-int8"])) == [TensorProto.FLOAT] * 3
    calib = sorted((toy.parent / "images" / "train").glob("*.jpg"))[:6]
    quantised = load_onnx(quantize_onnx_int8(nano["onnx"], tmp_path / "head_int8.onnx", calib, keep_head_float=False))
    assert _head_conv_weight_types(quantised) == [TensorProto.INT8] * 3
    problems = tensorrt_qdq_problems(quantised)
    assert any("zero point uint8" in p for p in problems)  # still the CPU form
    # The head Convs' biases quantised to int32, which TensorRT refuses (a random-init model's other Convs have zero
    # biases, left out of the quantised graph)
    assert any("int32 input" in p for p in problems)


def _int8_conv_weight_range(model) -> tuple[int, int]:
    """(lowest, highest) stored value over an INT8 graph's quantised Conv weights."""
    from onnx import TensorProto, numpy_helper

    conv_weights = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    values = [numpy_helper.to_array(i) for i in model.graph.initializer
              if i.name in conv_weights and i.data_type == TensorProto.INT8 and len(i.dims) == 4]  # Conv weights
    return min(int(v.min()) for v in values), max(int(v.max()) for v in values)


def _metadata(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_cpu_int8_weights_use_7_bits_and_tensorrt_8(nano):
    """x86 CPUs without VNNI saturate u8 x s8 products of 8-bit weights: the CPU file's weights stay in [-64, 64]."""
    cpu, trt = load_onnx(nano["onnx-int8"]), load_onnx(nano["onnx-int8-trt"])
    assert _metadata(cpu)["int8_weight_bits"] == "7"
    assert _metadata(trt)["int8_weight_bits"] == "8"
    low, high = _int8_conv_weight_range(cpu)
    assert -64 <= low and high <= 64 and max(-low, high) == 64  # 7 bits: each channel's largest weight at 64
    low, high = _int8_conv_weight_range(trt)
    assert max(-low, high) == 127  # 8 bits


def test_cli_exports_8_bit_cpu_weights_when_asked(nano, toy, tmp_path, capsys):
    """For a CPU known to have VNNI: ``--cpu-int8-weight-bits 8`` gives the CPU file the full int8 range."""
    from livestock.cli import main

    out = tmp_path / "out"
    assert main(["export", "--weights", str(nano["pt"]), "--imgsz", str(IMG), "--formats", "onnx-int8",
                 "--calib", str(toy.parent / "images" / "train"), "--n-calib", "6", "--out", str(out),
                 "--cpu-int8-weight-bits", "8"]) == 0
    cpu = load_onnx(out / "nano_128_int8.onnx")
    assert _metadata(cpu)["int8_weight_bits"] == "8"
    low, high = _int8_conv_weight_range(cpu)
    assert max(-low, high) == 127
    with pytest.raises(SystemExit):
        main(["export", "--weights", str(nano["pt"]), "--cpu-int8-weight-bits", "6"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be 7 or 8, not 6"):
        export_model(nano["pt"], IMG, ("onnx-int8",), calib_images=toy.parent / "images" / "train",
                     out_dir=out, cpu_int8_weight_bits=6)


def test_int8_target_must_be_known(nano, tmp_path):
    with pytest.raises(ValueError, match="unknown INT8 target 'tflite'"):
        quantize_onnx_int8(nano["onnx"], tmp_path / "x.onnx", [np.zeros((IMG, IMG, 3), np.uint8)], target="tflite")


@pytest.mark.slow
def test_head_decode_found_on_a_p6_graph(tmp_path):
    weights = random_init_checkpoint("yolov5n6", tmp_path / "n6.pt")
    path = export_onnx_fp32(weights, IMG, tmp_path / "n6.onnx")
    info = check_onnx_model(path, imgsz=IMG)
    assert info.stride == 64
    heads, decode = find_detect_head(path)
    assert len(heads) == 4  # P3, P4, P5, P6
    model_ops = {n.name: n for n in load_onnx(path).graph.node}
    assert {model_ops[d].op_type for d in decode} <= DECODE_OPS
    assert Counter(model_ops[d].op_type for d in decode)["Pow"] == 4  # one anchor-size decode per level
    last = [n for n in model_ops.values() if "output0" in n.output][0]
    assert last.name in decode
    for h in heads:  # each head Conv predicts 3 anchors x (5 + 2 classes)
        weight = next(t for t in load_onnx(path).graph.initializer if t.name == model_ops[h].input[1])
        assert weight.dims[0] == 3 * (5 + 2)


# ---------------------------------------------------------------- clear errors naming the file


@pytest.mark.slow
def test_corrupt_and_missing_files_name_the_file(nano, toy, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(nano["onnx"].read_bytes()[: 200_000])
    with pytest.raises(ValueError, match="truncated.onnx"):
        check_onnx_model(truncated)
    with pytest.raises(ValueError, match="truncated.onnx"):
        check_model_file(truncated, imgsz=IMG)
    from livestock.evaluation.detect import detect

    with pytest.raises(ValueError, match="truncated.onnx"):
        detect(truncated, _val_images(toy, 1), imgsz=IMG, device="cpu", progress=False)
    bad_pt = tmp_path / "broken.pt"
    bad_pt.write_bytes(nano["pt"].read_bytes()[:5000])
    with pytest.raises(ValueError, match="broken.pt"):
        export_model(bad_pt, IMG, formats=("onnx",), out_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        check_onnx_model(tmp_path / "absent.onnx")
    with pytest.raises(ValueError, match="calibration"):
        export_model(nano["pt"], IMG, formats=("onnx", "onnx-int8"), out_dir=tmp_path)


@pytest.mark.slow
def test_mismatched_model_names_the_file(nano, toy, tmp_path):
    from livestock.evaluation.detect import detect

    with pytest.raises(ValueError, match=rf"{nano['onnx'].name}.*exported for a fixed {IMG}x{IMG}"):
        check_onnx_model(nano["onnx"], imgsz=IMG + 32)
    with pytest.raises(ValueError, match=rf"{nano['onnx'].name}.*2 classes"):
        check_onnx_model(nano["onnx"], nc=3)
    with pytest.raises(ValueError, match="stride"):
        export_model(nano["pt"], 100, formats=("onnx",), out_dir=tmp_path)
    # The inference path refuses a size other than the export's too.
    with pytest.raises(ValueError, match=nano["onnx"].name):
        detect(nano["onnx"], _val_images(toy, 1), imgsz=IMG + 32, device="cpu", progress=False)


# ---------------------------------------------------------------- the deployment path


@pytest.mark.slow
def test_exported_onnx_runs_through_predict_detect(nano, toy):
    """``livestock.evaluation.detect.detect`` (DetectMultiBackend) on the export gives the boxes of this module's
    letterbox + raw output + YOLOv5 NMS: the calibration input is the inference input."""
    import torch
    from yolov5.utils.general import scale_boxes

    from livestock.evaluation.detect import detect

    images = _val_images(toy, 2)
    for fmt in ("onnx", "onnx-int8"):
        dets = detect(nano[fmt], images, imgsz=IMG, conf=0.001, iou=0.6, device="cpu", progress=False)
        assert [d.image_id for d in dets] == [p.name for p in images]
        for det, image in zip(dets, images):
            x, (h, w) = letterbox_input(image, IMG)
            mine = _nms(forward_raw(nano[fmt], x))
            boxes = scale_boxes(x.shape[2:], torch.from_numpy(mine[:, :4]), (h, w)).numpy()
            assert (det.width, det.height) == (w, h)
            assert len(det) == len(mine) > 0
            np.testing.assert_allclose(det.boxes, boxes, atol=1e-3)
            np.testing.assert_allclose(det.scores, mine[:, 4], atol=1e-6)


@pytest.mark.slow
def test_quantising_the_decode_collapses_confidences(nano, toy, tmp_path):
    """The reason the decode stays float: quantised with everything else, every confidence becomes 0."""
    images = images_from(toy.parent / "images" / "train")[:4]
    collapsed = quantize_onnx_int8(nano["onnx"], tmp_path / "all_int8.onnx", images, keep_decode_float=False)
    x, _ = letterbox_input(_val_images(toy, 1)[0], IMG)
    assert _conf(forward_raw(collapsed, x)[0]).max() == 0.0
    assert _conf(forward_raw(nano["onnx-int8"], x)[0]).max() > 0.0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx-int8", "onnx-int8-trt"])
def test_int8_of_a_trained_model_stays_close_to_fp32(trained, tmp_path, fmt):
    weights, data_yaml = trained
    imgsz = TRAINED_IMG
    paths = export_model(weights, imgsz, formats=("onnx", fmt), calib_images=data_yaml, out_dir=tmp_path,
                         n_calib=16)
    worst_box, worst_conf, top32, top8 = 0.0, 0.0, 0.0, 0.0
    for image in _val_images(data_yaml, 4):
        x, _ = letterbox_input(image, imgsz)
        ref, q = forward_raw(paths["onnx"], x)[0], forward_raw(paths[fmt], x)[0]
        top = np.argsort(-_conf(ref))[:20]  # the candidates that become detections
        worst_box = max(worst_box, float(np.abs(q[top, :4] - ref[top, :4]).max()))
        worst_conf = max(worst_conf, float(np.abs(_conf(q)[top] - _conf(ref)[top]).max()))
        top32, top8 = max(top32, float(_conf(ref).max())), max(top8, float(_conf(q).max()))
    print(f"{fmt} vs FP32 at {imgsz}: worst box {worst_box:.2f} px, worst conf {worst_conf:.4f}, "
          f"top conf {top8:.4f} (FP32 {top32:.4f})")
    assert top8 >= 0.5 * top32 > 0, "INT8 confidences collapsed"
    assert worst_conf <= INT8_CONF
    assert worst_box <= INT8_BOX_FRACTION * imgsz


# ---------------------------------------------------------------- pruning


@pytest.mark.slow
def test_prune_weights_with_a_fine_tune_hook(nano, tmp_path):
    import torch

    calls = []

    def densify(path: Path) -> Path:
        """Stands in for training: every weight moves, the zeros included."""
        calls.append(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        for p in ckpt["model"].parameters():
            p.data += 1e-3
        out = tmp_path / "tuned.pt"
        torch.save(ckpt, out)
        return out

    plain = prune_weights(nano["pt"], 0.5, tmp_path / "pruned.pt")
    tuned = prune_weights(nano["pt"], 0.5, tmp_path / "pruned_tuned.pt", fine_tune=densify)
    assert calls == [tmp_path / "pruned_tuned.pt"]
    for path in (plain, tuned):
        assert conv_weight_sparsity(load_model(path)) == pytest.approx(0.5, abs=0.01)
    # Zeros compress; the dense file does not shrink.
    assert compressed_size_mb(plain) < 0.8 * compressed_size_mb(nano["pt"])
    assert file_size_mb(plain) == pytest.approx(file_size_mb(nano["pt"]), rel=0.05)


# ---------------------------------------------------------------- the commands


@pytest.mark.slow
def test_cli_export_and_its_errors(nano, toy, tmp_path, capsys):
    from livestock.cli import main

    out = tmp_path / "out"
    assert main(["export", "--weights", str(nano["pt"]), "--imgsz", str(IMG), "--formats", "onnx-fp16",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # The FP32 source of the FP16 file was not asked for: no scratch file, link or .onnx.data left behind.
    assert [p.name for p in out.iterdir()] == ["nano_128_fp16.onnx"]
    assert "onnx-fp16" in printed and " MB" in printed
    assert main(["export", "--weights", str(tmp_path / "missing.pt"), "--out", str(out)]) == 1
    assert "missing.pt: weights not found" in capsys.readouterr().err  # not "needs calibration images"
    for option in (["--imgsz", "0"], ["--n-calib", "0"]):
        assert main(["export", "--weights", str(nano["pt"]), "--formats", "onnx", "--out", str(out), *option]) == 1
        assert "need imgsz >= 32 and n_calib >= 1" in capsys.readouterr().err
    assert main(["export", "--weights", str(nano["pt"]), "--formats", "tflite", "--out", str(out)]) == 1
    assert "tflite" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_bench_writes_table_csv_and_plot(tmp_path, capsys):
    import pandas as pd

    from livestock.cli import main

    out = tmp_path / "bench"
    assert main(["bench", "--models", "yolov5n", "--imgsz", "64", "--runs", "2", "--repeats", "1",
                 "--prune", "0", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    df = pd.read_csv(out / "bench.csv")
    assert (out / "bench.png").stat().st_size > 10_000
    assert list(df.columns) == BENCH_COLUMNS
    assert list(df["variant"]) == ["pytorch-fp32", "onnx-fp32", "onnx-fp16", "onnx-int8",
                                   *(["openvino"] if openvino_available() else [])]
    assert (df["latency_ms"] > 0).all() and df["map75"].isna().all() and (df["sparsity"] == 0).all()
    assert (df["device"] == "cpu").all()
    int8 = df.set_index("variant").loc["onnx-int8"]
    assert int8["x_smaller_than_onnx_fp32"] > 3 and int8["under_100mb"]
    assert "onnx-int8" in printed and "x_faster_than_pytorch" in printed
    assert not (out / "models").exists()
    assert main(["bench", "--models", "yolov5n", "--extra", "yolov5m6", "--out", str(out)]) == 1
    assert "model@size" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_times_pytorch_on_the_gpu_and_onnx_on_the_cpu(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    df = benchmark_models(models=("yolov5n",), imgsz=(64,), extra=(), runs=2, repeats=1, prune_sparsity=None,
                          work_dir=tmp_path, device="cuda:0")
    devices = df.set_index("variant")["device"]
    assert devices["pytorch-fp32"] == "cuda:0"
    assert (devices.drop("pytorch-fp32") == "cpu").all()
    assert (df["latency_ms"] > 0).all()


@pytest.mark.slow
def test_bench_scores_a_trained_model(trained, tmp_path, monkeypatch):
    weights, data_yaml = trained
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        benchmark_models(models=(), weights=tmp_path / "absent.pt")
    # a path relative to the working folder, as a user types it (YOLOv5 alone would look it up on the Hub)
    monkeypatch.chdir(weights.parent)
    df = benchmark_models(models=(), imgsz=(TRAINED_IMG,), extra=(), runs=2, repeats=1, weights=Path(weights.name),
                            data_yaml=data_yaml, prune_sparsity=0.3, work_dir=tmp_path / "work",
                            max_val_images=4)
    ov = ["openvino"] if openvino_available() else []
    # pytorch, onnx fp32 / fp16 / int8, openvino where installed, and pruned pytorch / onnx fp32 / int8
    assert list(df["variant"]) == ["pytorch-fp32", "onnx-fp32", "onnx-fp16", "onnx-int8", *ov,
                                   "pytorch-fp32", "onnx-fp32", "onnx-int8"]
    scored = validation_images(data_yaml, max_images=4)
    assert df.attrs["val_images"] == len(scored) == 4 < len(images_from(data_yaml, split="val"))
    # Each row is the score of its own file on those four images.
    for _, row in df.iloc[[0, 1, len(df) - 1]].iterrows():
        path = weights.resolve() if row["variant"] == "pytorch-fp32" and row["sparsity"] == 0 else \
            tmp_path / "work" / f"{weights.stem}_{TRAINED_IMG}" / row["file"]
        assert row["map75"] == pytest.approx(evaluate_map(path, scored, TRAINED_IMG), abs=1e-9), row["file"]
    pruned = df[df["sparsity"] > 0]
    assert list(pruned["variant"]) == ["pytorch-fp32", "onnx-fp32", "onnx-int8"]
    dense_zip = df[df["sparsity"] == 0].set_index("variant")["size_zip_mb"]
    assert (pruned.set_index("variant")["size_zip_mb"] < dense_zip[pruned["variant"]]).all(), "zeros compress"
    dense = df[df["sparsity"] == 0].set_index("variant")["map75"]
    assert dense.isna().tolist() == [False] * 4 + [True] * len(ov)  # OpenVINO is timed, not scored
    # How close FP16 stays to FP32 is checked on the raw head outputs (test_fp16_keeps_float32_io_and_a_float32_
    # decode): an mAP over four images of a toy model moves by more than 0.05 when one detection swaps its rank.
    plot_bench(df, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def _graph_with_a_tensor_cast_twice(second_to: int):
    """What onnxruntime's float16 converter before 1.32 writes when a kept-float node reads one FP16 tensor twice:
    two Cast nodes with the same output name."""
    from onnx import TensorProto, helper

    casts = [helper.make_node("Cast", ["h"], ["h_cast_to_fp32"], to=TensorProto.FLOAT, name="h_cast_to_fp32_node"),
             helper.make_node("Cast", ["h"], ["h_cast_to_fp32"], to=second_to, name="h_cast_to_fp32_node")]
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16), *casts,
             helper.make_node("Mul", ["h_cast_to_fp32", "h_cast_to_fp32"], ["y"])]
    info = helper.make_tensor_value_info("h_cast_to_fp32", TensorProto.FLOAT, [2])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], value_info=[info, info])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_repeated_casts_of_older_float16_converters_are_merged_into_one():
    import onnx

    model = _graph_with_a_tensor_cast_twice(onnx.TensorProto.FLOAT)
    with pytest.raises(onnx.checker.ValidationError, match="single static assignment"):
        onnx.checker.check_model(model)
    _drop_repeated_casts(model.graph)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Cast", "Cast", "Mul"]
    assert [v.name for v in model.graph.value_info] == ["h_cast_to_fp32"]
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.array([1.5, -2.0], dtype=np.float32)})[0]
    np.testing.assert_array_equal(y, [2.25, 4.0])
    other = _graph_with_a_tensor_cast_twice(onnx.TensorProto.FLOAT16)  # a different Cast, the same name
    with pytest.raises(ValueError, match="two different Cast nodes write 'h_cast_to_fp32'"):
        _drop_repeated_casts(other.graph)


def test_an_invalid_fp16_conversion_stops_before_writing_the_file(nano, tmp_path, monkeypatch):
    def breaks_ssa(graph):  # a converter fault: a second node writing a tensor another node writes
        first = next(n for n in graph.node if n.op_type == "Cast")
        graph.node.append(first)

    monkeypatch.setattr(export_module, "_drop_repeated_casts", breaks_ssa)
    dst = tmp_path / "nano_fp16.onnx"
    with pytest.raises(ValueError, match=f"{dst}: not a valid ONNX graph, nothing written"):
        export_module.convert_onnx_fp16(nano["onnx"], dst)
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_graph_leaves_the_file_it_would_replace_as_it_was(tmp_path):
    """save_onnx, the one writer of every ONNX file (both engines' exports, FP16, INT8), checks before it writes."""
    import onnx

    dst = tmp_path / "model.onnx"
    earlier = _graph_with_a_tensor_cast_twice(onnx.TensorProto.FLOAT)
    _drop_repeated_casts(earlier.graph)
    save_onnx(earlier, dst)
    before = dst.read_bytes()
    with pytest.raises(ValueError, match=f"{dst}: not a valid ONNX graph, nothing written: .*single static"):
        save_onnx(_graph_with_a_tensor_cast_twice(onnx.TensorProto.FLOAT), dst)
    assert dst.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
