"""The real AI Hub set's figures the synthetic generator is calibrated to, and the seed codes of its streams."""
from __future__ import annotations

# Image counts of the real AI Hub bbox training set (EDA of the original entry).
TRAIN_IMAGES = {"cow": 12_152, "pig": 4_303}
TRAIN_PIG_SIZES = {(1920, 1080): 3_131, (1280, 960): 1_172}
# Real test set: images per class in the contest answer file (one more test image has no box at all).
TEST_IMAGES = {"cow": 1_519, "pig": 538}
# Pig test frames by size, recovered from the answer file: 389 frames carry coordinates beyond 1, i.e.
# 1920x1080 frames that the original scoring notebook normalised by 1280x960.
TEST_PIG_SIZES = {(1920, 1080): 389, (1280, 960): 149}

# Labelled boxes per cow training image, n = 0..11: the original's EDA histogram (bins of width 1.1),
# its first bin split into the 3 empty images and 1 box, its last bin (17) split 13 / 4 between 10 and 11.
TRAIN_COW_LABELLED_COUNT_HIST = (3, 1987, 2408, 2985, 2099, 1314, 661, 400, 222, 56, 13, 4)

# Per (class, frame size), from the real contest answer (shared/real/contest_answer.csv, 10,647 boxes),
# pig 1920x1080 boxes first re-normalised by their true frame size:
#   count_hist  images with n = 0, 1, 2, ... boxes;
#   log_size_q  21 quantiles (0, 5, ..., 100 %) of each image's mean log sqrt(w*h) (w, h normalised by the
#               frame's width / height), taken at box-centre y = 0.5;
#   size_slope  within-image slope of log sqrt(w*h) against box-centre y (perspective: nearer is bigger);
#   size_sd     within-image residual standard deviation of log sqrt(w*h);
#   xc_q, yc_q  21 quantiles of normalised box centres.
CALIBRATION: dict[str, dict] = {
    "cow_1920x1080": dict(
        count_hist=(0, 274, 290, 370, 257, 154, 91, 48, 29, 5, 1),
        size_slope=2.266, size_sd=0.284, edge_share=0.050, size_gain=1.13,
        log_size_range=(-3.049, -0.934),
        log_size_q=(-3.208, -2.499, -2.329, -2.265, -2.221, -2.186, -2.154, -2.128, -2.106, -2.080, -2.048,
                    -2.019, -1.982, -1.955, -1.924, -1.875, -1.817, -1.703, -1.605, -1.448, -1.013),
        xc_q=(0.018, 0.099, 0.146, 0.185, 0.243, 0.290, 0.329, 0.370, 0.403, 0.451, 0.491, 0.530, 0.586,
              0.621, 0.655, 0.705, 0.735, 0.765, 0.827, 0.881, 0.983),
        yc_q=(0.051, 0.275, 0.306, 0.340, 0.376, 0.420, 0.456, 0.477, 0.495, 0.518, 0.538, 0.558, 0.574,
              0.596, 0.620, 0.656, 0.693, 0.720, 0.760, 0.799, 0.914),
    ),
    "pig_1280x960": dict(
        count_hist=(0, 0, 0, 0, 2, 5, 21, 26, 29, 22, 23, 17, 2, 0, 2),
        size_slope=1.843, size_sd=0.138, edge_share=0.040, size_gain=1.04,
        log_size_range=(-2.967, -1.100),
        log_size_q=(-2.454, -2.368, -2.360, -2.344, -2.336, -2.331, -2.324, -2.318, -2.291, -1.841, -1.785,
                    -1.771, -1.760, -1.752, -1.742, -1.701, -1.688, -1.679, -1.669, -1.664, -1.590),
        xc_q=(0.079, 0.589, 0.600, 0.608, 0.613, 0.627, 0.634, 0.649, 0.664, 0.677, 0.689, 0.698, 0.738,
              0.757, 0.781, 0.825, 0.848, 0.858, 0.889, 0.908, 0.954),
        yc_q=(0.183, 0.317, 0.349, 0.373, 0.410, 0.429, 0.472, 0.488, 0.498, 0.518, 0.587, 0.605, 0.649,
              0.698, 0.730, 0.736, 0.780, 0.859, 0.870, 0.914, 0.953),
    ),
    "pig_1920x1080": dict(
        count_hist=(0, 0, 0, 0, 0, 1, 1, 9, 13, 43, 59, 73, 58, 56, 51, 20, 5),
        size_slope=0.413, size_sd=0.168, edge_share=0.286, size_gain=1.05,
        log_size_range=(-2.244, -1.228),
        log_size_q=(-1.932, -1.781, -1.729, -1.706, -1.688, -1.666, -1.653, -1.637, -1.626, -1.613, -1.600,
                    -1.589, -1.579, -1.569, -1.555, -1.545, -1.537, -1.519, -1.498, -1.468, -1.383),
        xc_q=(0.098, 0.158, 0.179, 0.225, 0.260, 0.290, 0.328, 0.369, 0.399, 0.425, 0.459, 0.499, 0.526,
              0.560, 0.595, 0.633, 0.677, 0.721, 0.748, 0.773, 0.943),
        yc_q=(0.037, 0.072, 0.091, 0.109, 0.125, 0.144, 0.159, 0.190, 0.242, 0.294, 0.363, 0.415, 0.483,
              0.570, 0.647, 0.713, 0.753, 0.792, 0.823, 0.855, 0.900),
    ),
}
MIN_VISIBLE_SHARE = 0.35  # an animal is boxed when this share of its pixels is visible (in frame, not hidden)
# Mixed into every image's seed, so each (seed, class, split, image number) draws from its own random stream.
SPLIT_CODE = {"train": 0, "test": 1}
CLASS_CODE = {"pig": 0, "cow": 1}


def scene_style(label: str, size: tuple[int, int]) -> dict:
    """The calibration of ``label``'s scenes at frame ``size`` (full width, height); ValueError when there is none."""
    key = f"{label}_{size[0]}x{size[1]}"
    if key not in CALIBRATION:
        raise ValueError(f"no synthetic scene style for {label!r} at {size[0]}x{size[1]}; known: {sorted(CALIBRATION)}")
    return CALIBRATION[key]


def split_by_class_ratio(n_images: int, split: str = "train") -> dict[str, int]:
    """Split an image total between cow and pig in the real ratio of ``split`` ('train' or 'test'),
    with at least one image of each class when ``n_images >= 2``."""
    if split not in SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n_images < 0:
        raise ValueError(f"image count must be >= 0, got {n_images}")
    real = TRAIN_IMAGES if split == "train" else TEST_IMAGES
    n_cow = int(round(n_images * real["cow"] / (real["cow"] + real["pig"])))
    if n_images >= 2:
        n_cow = min(max(n_cow, 1), n_images - 1)
    return {"cow": n_cow, "pig": n_images - n_cow}
