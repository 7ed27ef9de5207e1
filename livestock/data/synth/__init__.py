"""Synthetic AI Hub-format dataset: rendered barn frames with pigs or cows, zipped like the real data.

The real AI Hub images cannot be shipped, so every stage of the pipeline is exercised on a set that
has the real set's *shape*: the same six zip names, file names, label JSON schema (pixel-corner boxes
and a misleading ``category_id``), image sizes, class ratio, boxes-per-image distributions, box sizes,
incomplete cow labels, and a test answer file in the contest format.

Frames are drawn with OpenCV primitives: a barn background (walls, floor, pens, fences), animals built
from ellipses and polygons (body, head, ears, legs, tail), occluders in front of them, lighting,
blur, sensor noise and JPEG compression. Every true box is the tight box of the animal's *visible*
pixels, read back from an id map rasterised with the same polygons.

Geometry (what is where) and appearance (colours, lighting, noise) come from two separate random
streams per image, so ``labels_only=True`` gives exactly the labels of the fully rendered set while
skipping the rendering cost.

Modules: ``calibration`` (the real set's figures), ``shapes`` (animal polygons), ``scene`` (what is where),
``render`` (drawing a frame and its true boxes), ``dataset`` (the zips, truth and answer files, the CLI) and
``answer_stats`` (comparing answer files).
"""
from livestock.data.synth.answer_stats import answer_statistics, compare_with_answer, undo_pig_overscaling
from livestock.data.synth.calibration import (
    CALIBRATION,
    MIN_VISIBLE_SHARE,
    TEST_IMAGES,
    TEST_PIG_SIZES,
    TRAIN_COW_LABELLED_COUNT_HIST,
    TRAIN_IMAGES,
    TRAIN_PIG_SIZES,
    split_by_class_ratio,
)
from livestock.data.synth.dataset import BEHAVIOUR_CATEGORIES, SynthSummary, generate_synthetic_dataset, label_json
from livestock.data.synth.render import SynthImage, image_name, render_empty_frame, render_image

__all__ = [
    "BEHAVIOUR_CATEGORIES", "CALIBRATION", "MIN_VISIBLE_SHARE", "SynthImage", "SynthSummary", "TEST_IMAGES",
    "TEST_PIG_SIZES", "TRAIN_COW_LABELLED_COUNT_HIST", "TRAIN_IMAGES", "TRAIN_PIG_SIZES", "answer_statistics",
    "compare_with_answer", "generate_synthetic_dataset", "image_name", "label_json", "render_empty_frame",
    "render_image", "split_by_class_ratio", "undo_pig_overscaling",
]
