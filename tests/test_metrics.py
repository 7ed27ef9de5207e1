"""The contest metric against the contest's own scorer (map-boxes) on many generated cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from livestock.evaluation import metrics
from livestock.evaluation.metrics import mean_average_precision_for_boxes

map_boxes = pytest.importorskip("map_boxes")

REAL_ANSWER = Path(__file__).resolve().parents[2] / "shared/real/contest_answer.csv"
ANSWER_COLUMNS = list(metrics.ANSWER_COLUMNS)
PREDICTION_COLUMNS = list(metrics.PREDICTION_COLUMNS)


def reference(ann, pred, iou_threshold, exclude_not_in_annotations=False):
    return map_boxes.mean_average_precision_for_boxes(
        ann, pred, iou_threshold=iou_threshold, exclude_not_in_annotations=exclude_not_in_annotations, verbose=False)


def assert_same(ours, ref, tol=1e-9):
    assert abs(ours[0] - ref[0]) <= tol, (ours[0], ref[0])
    assert set(ours[1]) == set(map(str, ref[1]))
    for label, (ap, n) in ref[1].items():
        assert abs(ours[1][str(label)][0] - ap) <= tol, (label, ours[1][str(label)], (ap, n))
        assert ours[1][str(label)][1] == n


# ---------------------------------------------------------------- generated cases

GRIDS = (8, 10, 16, 3)  # coarse grids make equal IoUs, IoUs exactly at thresholds and touching boxes common
THRESHOLDS = (0.5, 0.75, 0.3, 0.6, 0.9, 1.0, 0.25, 0.0, 1 / 3, 0.55)


def _grid_box(rng: np.random.Generator, grid: int) -> list[float]:
    x = np.sort(rng.integers(0, grid + 1, 2)) / grid
    y = np.sort(rng.integers(0, grid + 1, 2)) / grid
    if rng.random() < 0.1:  # degenerate or inverted boxes
        x = x[::-1]
    return [x[0], x[1], y[0], y[1]]


def _jitter(rng: np.random.Generator, box: list[float], grid: int) -> list[float]:
    step = 1.0 / (grid * rng.choice([1, 2, 4]))
    moved = np.asarray(box) + rng.integers(-2, 3, 4) * step
    return list(np.clip(moved, 0.0, 1.0))


def generate_case(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    grid = int(rng.choice(GRIDS))
    classes = ["cow", "pig", "sheep"][: rng.integers(1, 4)]
    n_images = int(rng.integers(1, 9))
    images = [f"img_{seed}_{i}.jpg" for i in range(n_images)]
    ann_rows = []
    for image in images:
        for label in classes:
            if rng.random() < 0.35:
                continue  # image without GT of this class (or without any GT: it then stays out of the answer)
            for _ in range(int(rng.integers(1, 6))):
                box = _grid_box(rng, grid)
                ann_rows.append([image, label, *box])
                if rng.random() < 0.15:
                    ann_rows.append([image, label, *box])  # duplicate ground truth
    if not ann_rows:
        ann_rows.append([images[0], classes[0], *_grid_box(rng, grid)])
    ann = pd.DataFrame(ann_rows, columns=["ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax"])
    ann = ann.iloc[rng.permutation(len(ann))].reset_index(drop=True)

    conf_pool = np.round(rng.random(int(rng.integers(1, 6))), 2)  # few distinct values: many ties
    pred_rows = []
    extra_images = [f"extra_{seed}_{i}.jpg" for i in range(int(rng.integers(0, 3)))]
    pred_labels = classes + (["goat"] if rng.random() < 0.3 else [])
    for _, gt in ann.iterrows():
        for _ in range(int(rng.integers(0, 4))):
            box = [gt.XMin, gt.XMax, gt.YMin, gt.YMax]
            kind = rng.random()
            if kind < 0.3:
                pass  # exact copy: IoU 1
            elif kind < 0.85:
                box = _jitter(rng, box, grid)
            else:
                box = _grid_box(rng, grid)
            label = gt.LabelName if rng.random() < 0.9 else rng.choice(pred_labels)
            conf = rng.choice(conf_pool) if rng.random() < 0.7 else float(np.float32(rng.random()))
            pred_rows.append([gt.ImageID, label, conf, *box])
    for _ in range(int(rng.integers(0, 10))):  # false positives anywhere, also on images outside the answer
        image = rng.choice(images + extra_images)
        pred_rows.append([image, rng.choice(pred_labels), rng.choice(conf_pool), *_grid_box(rng, grid)])
    pred = pd.DataFrame(pred_rows, columns=PREDICTION_COLUMNS)
    order = rng.random()
    if order < 0.4:
        pred = pred.iloc[rng.permutation(len(pred))]
    elif order < 0.8:  # each image's rows by confidence, as a well-formed submission
        pred = pred.sort_values(["ImageID", "Conf"], ascending=[True, False], kind="stable")
    return ann, pred.reset_index(drop=True)


@pytest.mark.parametrize("block", range(8))
def test_matches_map_boxes_on_generated_cases(block):
    for seed in range(block * 25, block * 25 + 25):  # 200 cases in all
        ann, pred = generate_case(seed)
        rng = np.random.default_rng(10_000 + seed)
        for threshold in rng.choice(THRESHOLDS, 2, replace=False):
            ours = mean_average_precision_for_boxes(ann, pred, iou_threshold=float(threshold))
            ref = reference(ann, pred, float(threshold))
            assert_same(ours, ref)


def test_multi_threshold_helpers_equal_single_threshold_calls():
    for seed in range(20):
        ann, pred = generate_case(seed)
        at = metrics.map_at_thresholds(ann, pred, metrics.COCO_IOU_THRESHOLDS)
        for t, value in at.items():
            assert value == reference(ann, pred, t)[0]
        expected = np.mean([reference(ann, pred, t)[0] for t in at])
        assert metrics.map_50_95(ann, pred) == pytest.approx(expected, abs=1e-12)
        assert metrics.map_50(ann, pred) == reference(ann, pred, 0.5)[0]
        assert metrics.map_at(ann, pred) == reference(ann, pred, 0.75)[0]


def test_per_class_table_agrees_with_the_metric():
    ann, pred = generate_case(3)
    table = metrics.per_class_table(ann, pred, iou_threshold=0.75)
    ref = reference(ann, pred, 0.75)
    assert list(table.index) == sorted(map(str, ref[1]))
    for label, (ap, n) in ref[1].items():
        assert table.loc[str(label), "AP@0.75"] == pytest.approx(ap, abs=1e-12)
        assert table.loc[str(label), "n_annotations"] == n
        assert table.loc[str(label), "AP@0.5"] == pytest.approx(reference(ann, pred, 0.5)[1][label][0], abs=1e-12)
    assert table["AP@0.75"].mean() == pytest.approx(ref[0], abs=1e-12)
    counts = pred[pred.ImageID.isin(ann.ImageID) & pred.LabelName.isin(ann.LabelName)].groupby("LabelName").size()
    assert table["n_predictions"].to_dict() == {k: int(counts.get(k, 0)) for k in table.index}
    text = metrics.format_score_table(table)
    assert "mAP@0.75" in text and "mAP@0.5:0.95" in text
    # a headline at 0.5 does not duplicate the AP@0.5 column
    assert list(metrics.per_class_table(ann, pred, iou_threshold=0.5).columns).count("AP@0.5") == 1


# ---------------------------------------------------------------- the quirks, one by one


def _frame(rows, columns):
    return pd.DataFrame(rows, columns=columns)


def test_file_order_decides_matching_not_confidence():
    ann = _frame([["a", "cow", 0.0, 0.5, 0.0, 0.5]], ANSWER_COLUMNS)
    good = ["a", "cow", 0.9, 0.0, 0.5, 0.0, 0.5]
    poor = ["a", "cow", 0.1, 0.0, 0.5, 0.0, 0.45]  # IoU 0.9
    by_conf = _frame([good, poor], PREDICTION_COLUMNS)
    low_first = _frame([poor, good], PREDICTION_COLUMNS)
    assert mean_average_precision_for_boxes(ann, by_conf, 0.5)[0] == pytest.approx(1.0)
    # The low-confidence row comes first in the file: it takes the box, the confident one is a false positive.
    low = mean_average_precision_for_boxes(ann, low_first, 0.5)
    assert low[0] == pytest.approx(0.5)
    assert_same(low, reference(ann, low_first, 0.5))


def test_no_fallback_to_second_best_box_and_sub_threshold_claims_do_not_take_it():
    ann = _frame([["a", "cow", 0.0, 0.4, 0.0, 0.4], ["a", "cow", 0.5, 0.9, 0.0, 0.4]], ANSWER_COLUMNS)
    rows = [
        ["a", "cow", 0.3, 0.0, 0.2, 0.0, 0.4],  # claims box 0 with IoU 0.5 < 0.75: not taken
        ["a", "cow", 0.9, 0.0, 0.4, 0.0, 0.4],  # claims box 0 with IoU 1: TP
        ["a", "cow", 0.8, 0.0, 0.4, 0.0, 0.39],  # claims box 0 again: FP (does not fall back to box 1)
        ["a", "cow", 0.7, 0.5, 0.9, 0.0, 0.4],  # box 1: TP
    ]
    pred = _frame(rows, PREDICTION_COLUMNS)
    ours = mean_average_precision_for_boxes(ann, pred, 0.75)
    assert_same(ours, reference(ann, pred, 0.75))
    tp = metrics._true_positives(metrics._prepare(ann, pred).per_class[0], 0.75)
    assert tp.tolist() == [0, 1, 0, 1]


def test_images_outside_answer_and_classes_only_in_predictions_are_ignored():
    ann = _frame([["a", "cow", 0.0, 0.5, 0.0, 0.5]], ANSWER_COLUMNS)
    base = _frame([["a", "cow", 0.9, 0.0, 0.5, 0.0, 0.5]], PREDICTION_COLUMNS)
    noisy = pd.concat([base, _frame([["zzz", "cow", 0.99, 0.0, 0.5, 0.0, 0.5],
                                     ["a", "goat", 0.99, 0.0, 0.5, 0.0, 0.5]], PREDICTION_COLUMNS)])
    for exclude in (False, True):
        result = mean_average_precision_for_boxes(ann, noisy, 0.75, exclude_not_in_annotations=exclude)
        assert result[0] == 1.0 and set(result[1]) == {"cow"}
        assert_same(result, reference(ann, noisy, 0.75, exclude))


def test_predictions_of_a_class_on_an_image_without_that_class_are_false_positives():
    ann = _frame([["a", "cow", 0.0, 0.5, 0.0, 0.5], ["b", "pig", 0.0, 0.5, 0.0, 0.5]], ANSWER_COLUMNS)
    pred = _frame([["a", "cow", 0.5, 0.0, 0.5, 0.0, 0.5], ["b", "cow", 0.9, 0.0, 0.5, 0.0, 0.5]], PREDICTION_COLUMNS)
    ours = mean_average_precision_for_boxes(ann, pred, 0.5)
    assert ours[1]["cow"][0] == pytest.approx(0.5) and ours[1]["pig"] == (0.0, 1.0)
    assert_same(ours, reference(ann, pred, 0.5))


def test_iou_exactly_at_threshold_counts():
    ann = _frame([["a", "cow", 0.0, 0.5, 0.0, 1.0]], ANSWER_COLUMNS)
    pred = _frame([["a", "cow", 0.9, 0.0, 0.25, 0.0, 1.0]], PREDICTION_COLUMNS)  # IoU exactly 0.5
    assert mean_average_precision_for_boxes(ann, pred, 0.5)[0] == 1.0
    assert mean_average_precision_for_boxes(ann, pred, 0.5000001)[0] == 0.0
    assert_same(mean_average_precision_for_boxes(ann, pred, 0.5), reference(ann, pred, 0.5))


@pytest.mark.parametrize("gt_x, det_x, matched", [
    ((0.2, 0.6), (0.2, 0.5), False),  # IoU 0.75 in float64 arithmetic, 0.74999995 on float32 coordinates
    ((0.1, 0.9), (0.1, 0.7), True),  # 0.7499999999999999 in float64, 0.75000001 on float32 coordinates
])
def test_float32_coordinates_decide_borderline_matches(gt_x, det_x, matched):
    ann = _frame([["a", "cow", *gt_x, 0.0, 1.0]], ANSWER_COLUMNS)
    pred = _frame([["a", "cow", 0.9, *det_x, 0.0, 1.0]], PREDICTION_COLUMNS)
    ours = mean_average_precision_for_boxes(ann, pred, 0.75)
    assert ours[0] == (1.0 if matched else 0.0)
    assert_same(ours, reference(ann, pred, 0.75))


def test_input_types_csv_array_and_dataframe(tmp_path):
    ann, pred = generate_case(7)
    ann_csv, pred_csv = tmp_path / "ann.csv", tmp_path / "pred.csv"
    ann.to_csv(ann_csv, index=False)
    pred.to_csv(pred_csv, index=False)
    ref = reference(str(ann_csv), str(pred_csv), 0.75)
    assert_same(mean_average_precision_for_boxes(str(ann_csv), str(pred_csv)), ref)
    assert_same(mean_average_precision_for_boxes(ann_csv, pred_csv), ref)  # Path objects too
    ann_arr, pred_arr = ann.to_numpy(), pred.to_numpy()
    assert_same(mean_average_precision_for_boxes(ann_arr, pred_arr), reference(ann_arr, pred_arr, 0.75))
    # a DataFrame with extra columns in another order: columns are picked by name
    shuffled = pred[PREDICTION_COLUMNS[::-1]].assign(extra=1)
    assert_same(mean_average_precision_for_boxes(ann, shuffled), ref)


def test_str_array_input_parses_like_map_boxes():
    ann = np.array([["a", "cow", "0.1", "0.6", "0.1", "0.7"]])
    pred = np.array([["a", "cow", "0.3", "0.1", "0.6", "0.15", "0.7"]])
    assert_same(mean_average_precision_for_boxes(ann, pred, 0.8), reference(ann, pred, 0.8))


def test_ids_that_print_alike_are_visited_twice_like_map_boxes():
    # An object column holding 1 and "1": map-boxes lists "1" twice among answer images and scores it twice.
    ann = np.array([[1, "cow", 0.0, 0.5, 0.0, 0.5], ["1", "cow", 0.5, 1.0, 0.5, 1.0], [2, "cow", 0, 1, 0, 1]],
                   dtype=object)
    pred = np.array([["1", "cow", 0.9, 0.0, 0.5, 0.0, 0.5], [1, "cow", 0.8, 0.6, 1.0, 0.5, 1.0],
                     [2, "cow", 0.7, 0.0, 0.5, 0.0, 0.5]], dtype=object)
    ref = reference(ann, pred, 0.5)
    assert_same(mean_average_precision_for_boxes(ann, pred, 0.5), ref)
    assert ref[1]["cow"][1] == 5.0  # image "1" counted twice


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # map-boxes' own arithmetic on inf / NaN
def test_non_finite_coordinates_and_confidences_follow_the_reference():
    rng = np.random.default_rng(5)
    for seed in range(30):
        ann, pred = generate_case(100 + seed)
        pred = pred.copy()
        for column in ["XMin", "XMax", "YMin", "YMax", "Conf"]:
            hit = rng.random(len(pred)) < 0.1
            pred.loc[hit, column] = rng.choice([np.nan, np.inf, -np.inf], int(hit.sum()))
        if seed % 2 == 0:  # NaN or infinite ground truth as well (Python's min/max treat NaN by argument order)
            ann = ann.copy()
            for column in ["XMin", "XMax", "YMin", "YMax"]:
                hit = rng.random(len(ann)) < 0.15
                ann.loc[hit, column] = rng.choice([np.nan, np.inf], int(hit.sum()))
        for threshold in (0.5, 0.0):
            assert_same(mean_average_precision_for_boxes(ann, pred, threshold), reference(ann, pred, threshold))


def test_empty_inputs():
    ann, pred = generate_case(11)
    empty_pred = pred.iloc[:0]
    assert_same(mean_average_precision_for_boxes(ann, empty_pred), reference(ann, empty_pred, 0.75))
    empty_ann = ann.iloc[:0]
    assert mean_average_precision_for_boxes(empty_ann, pred) == (0.0, {})
    assert reference(empty_ann, pred, 0.75) == (0, {})


def test_large_groups_use_padded_buckets_and_chunks():
    # 40 and 70 boxes in one image: the power-of-two buckets with padding, and more pairs than one chunk holds.
    rng = np.random.default_rng(0)
    rows, preds = [], []
    for image, n in (("big", 70), ("mid", 40), ("small", 3)):
        boxes = np.sort(rng.random((n, 2, 2)), axis=2).reshape(n, 4)
        rows += [[image, "cow", *b] for b in boxes]
        for b in boxes[rng.integers(0, n, 1200)]:
            preds.append([image, "cow", float(rng.random()), *np.clip(b + rng.normal(0, 0.02, 4), 0, 1)])
    ann, pred = _frame(rows, ANSWER_COLUMNS), _frame(preds, PREDICTION_COLUMNS)
    assert_same(mean_average_precision_for_boxes(ann, pred, 0.6), reference(ann, pred, 0.6))


def test_missing_columns_and_files_give_clear_errors(tmp_path):
    ann, pred = generate_case(1)
    with pytest.raises(ValueError, match="Conf"):
        mean_average_precision_for_boxes(ann, pred.drop(columns="Conf"))
    bad = tmp_path / "bad.csv"
    pred.drop(columns="XMin").to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"bad\.csv.*XMin"):
        mean_average_precision_for_boxes(ann, bad)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        mean_average_precision_for_boxes(tmp_path / "nope.csv", pred)


def test_verbose_prints_a_summary(capsys):
    ann, pred = generate_case(2)
    mean_average_precision_for_boxes(ann, pred, verbose=True)
    assert "mAP@0.75" in capsys.readouterr().out
    mean_average_precision_for_boxes(ann, pred)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- real scale


def jittered_predictions(answer: pd.DataFrame, per_box: int, n_false: int, seed: int, sort: bool) -> pd.DataFrame:
    """``per_box`` noisy copies of every answer box plus ``n_false`` random boxes, normalised coordinates."""
    rng = np.random.default_rng(seed)
    gt = answer[["XMin", "XMax", "YMin", "YMax"]].to_numpy()
    idx = np.repeat(np.arange(len(answer)), per_box)
    size = np.stack([gt[:, 1] - gt[:, 0]] * 2 + [gt[:, 3] - gt[:, 2]] * 2, axis=1)[idx]
    boxes = np.clip(gt[idx] + rng.normal(0.0, 0.05, (len(idx), 4)) * size, 0.0, 1.0)
    conf = np.round(rng.uniform(0.01, 1.0, len(idx)), 3)  # rounded: ties in confidence
    false_idx = rng.integers(0, len(answer), n_false)
    corner = rng.random((n_false, 2)) * 0.8
    false_boxes = np.concatenate([corner[:, :1], corner[:, :1] + 0.1, corner[:, 1:], corner[:, 1:] + 0.15], axis=1)
    pred = pd.DataFrame({
        "ImageID": np.concatenate([answer.ImageID.to_numpy()[idx], answer.ImageID.to_numpy()[false_idx]]),
        "LabelName": np.concatenate([answer.LabelName.to_numpy()[idx], answer.LabelName.to_numpy()[false_idx]]),
        "Conf": np.concatenate([conf, np.round(rng.uniform(0.01, 0.5, n_false), 3)]),
        "XMin": np.concatenate([np.minimum(boxes[:, 0], boxes[:, 1]), false_boxes[:, 0]]),
        "XMax": np.concatenate([np.maximum(boxes[:, 0], boxes[:, 1]), false_boxes[:, 1]]),
        "YMin": np.concatenate([np.minimum(boxes[:, 2], boxes[:, 3]), false_boxes[:, 2]]),
        "YMax": np.concatenate([np.maximum(boxes[:, 2], boxes[:, 3]), false_boxes[:, 3]]),
    })
    pred = pred.iloc[rng.permutation(len(pred))]
    if sort:
        pred = pred.sort_values(["ImageID", "Conf"], ascending=[True, False], kind="stable")
    return pred.reset_index(drop=True)


@pytest.fixture(scope="module", params=["real", "generated"])
def contest_answer(request) -> Path:
    """The real contest answer file where it lies beside the repository, and one of the same size and shape from
    the generator (always), so a fresh clone checks parity at contest scale too."""
    if request.param == "real":
        if not REAL_ANSWER.is_file():
            pytest.skip(f"{REAL_ANSWER} not present")
        return REAL_ANSWER
    return request.getfixturevalue("generated_contest_answer")


def test_contest_sized_answer_with_jittered_predictions(contest_answer, tmp_path):
    real_answer = pd.read_csv(contest_answer)
    sorted_pred = jittered_predictions(real_answer, per_box=2, n_false=2000, seed=0, sort=True)
    shuffled_pred = jittered_predictions(real_answer, per_box=2, n_false=2000, seed=1, sort=False)
    pred_csv = tmp_path / "pred.csv"
    sorted_pred.to_csv(pred_csv, index=False)
    ours = mean_average_precision_for_boxes(str(contest_answer), str(pred_csv), 0.75)
    assert_same(ours, reference(str(contest_answer), str(pred_csv), 0.75))
    counts = real_answer["LabelName"].value_counts()
    assert ours[1]["pig"][1] == counts["pig"] and ours[1]["cow"][1] == counts["cow"]
    assert len(real_answer) > 10_000  # contest scale: the real file has 10,647 boxes
    shuffled = mean_average_precision_for_boxes(real_answer, shuffled_pred, 0.5)
    assert_same(shuffled, reference(real_answer, shuffled_pred, 0.5))
    # file order matters: the same kind of predictions score clearly lower unsorted
    assert shuffled[0] < mean_average_precision_for_boxes(real_answer, sorted_pred, 0.5)[0]
