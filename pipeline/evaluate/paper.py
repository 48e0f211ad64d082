"""The paper's reported numbers (DepthSegNet24, ACCV 2024, Tables 1-5), transcribed from its text.

Plain data, no logic: `tables.py` prints these rows, marked "(paper)", beside the measured ones.
Depth metrics follow `pipeline.evaluate.depth.METRIC_KEYS` (a1..a3 = delta < 1.25, 1.25^2, 1.25^3);
mIoU and IoU are percentages, as printed in the paper. None = "-" in the paper.

Table 5: the text extraction of the paper lost the check marks of its RN/SN/LE/PD columns. The
rows are taken as leave-one-out variants in column order (row 1 = without RN, ..., row 4 = without
PD) and row 5 = all four (it equals "Ours" of Tables 2 and 3). Section 4.4 agrees for LE and PD:
without PD every metric is worse except night RMSE; without LE night RMSE is better. The variant
names are those of `config.yaml` (`train.ablations`).
"""
from __future__ import annotations

DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")

# Table 1: depth on Oxford RobotCar, cap 40 m. {split: [(method, (abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3))]}
TABLE1_ROBOTCAR = {
    "test_night": [
        ("Monodepth2 (day)", (0.477, 5.389, 9.163, 0.466, 0.351, 0.635, 0.826)),
        ("Monodepth2 (night)", (0.661, 25.213, 12.187, 0.553, 0.551, 0.849, 0.914)),
        ("HR-Depth", (0.512, 5.800, 8.726, 0.484, 0.388, 0.666, 0.827)),
        ("ADDS-DepthNet", (0.233, 2.344, 6.859, 0.270, 0.631, 0.908, 0.962)),
        ("Ours", (0.195, 1.714, 5.936, 0.240, 0.734, 0.917, 0.970)),
    ],
    "test_day": [
        ("Monodepth2 (day)", (0.117, 0.673, 3.747, 0.161, 0.867, 0.973, 0.991)),
        ("Monodepth2 (night)", (0.306, 2.313, 5.468, 0.325, 0.545, 0.842, 0.937)),
        ("HR-Depth", (0.121, 0.732, 3.947, 0.166, 0.848, 0.970, 0.991)),
        ("ADDS-DepthNet", (0.109, 0.584, 3.578, 0.153, 0.880, 0.976, 0.992)),
        ("Ours", (0.113, 0.604, 3.490, 0.161, 0.865, 0.974, 0.991)),
    ],
}
TABLE1_MAX_DEPTH = 40.0

# Table 2: depth on nuScenes, cap 80 m. Columns per split: (abs_rel, rmse, a1).
TABLE2_KEYS = ("abs_rel", "rmse", "a1")
TABLE2_NUSCENES = [  # (method, train, day-clear, night)
    ("Monodepth2", "M", (0.137, 6.692, 0.850), (0.283, 9.729, 0.518)),
    ("Monodepth2-naive", "M", (0.215, 9.256, 0.660), (0.256, 11.018, 0.565)),
    ("RNW", "M", (0.287, 9.185, 0.562), (0.333, 10.098, 0.437)),
    ("PackNet-SfM", "M", (0.157, 7.230, 0.826), (0.262, 11.063, 0.566)),
    ("STEPS", "M", (0.258, 9.864, 0.858), (0.287, 9.120, 0.572)),
    ("md4all", "M+v", (0.137, 6.452, 0.846), (0.192, 8.507, 0.710)),
    ("Ours", "M", (0.151, 6.712, 0.816), (0.211, 8.899, 0.661)),
]
TABLE2_MAX_DEPTH = 80.0

# Table 3: segmentation (mIoU and per-class IoU, %). (a) nuScenes against ground-truth labels,
# (b) Oxford RobotCar against the Mask2Former teacher's labels.
TABLE3_NUSCENES_CLASSES = ("road", "sidewalk", "fence", "vegetation", "terrain", "person", "car", "truck")
TABLE3_NUSCENES = [  # (method, split, miou, per-class IoU in TABLE3_NUSCENES_CLASSES order)
    ("Mask2Former", "test_day", 68.31, (95.97, 58.52, 28.41, 86.59, 62.34, 60.76, 77.29, 76.62)),
    ("Ours", "test_day", 57.74, (93.15, 41.02, 25.09, 82.45, 57.44, 40.47, 68.61, 54.18)),
    ("Mask2Former", "test_night", 39.71, (87.14, 32.14, 24.68, 67.34, 27.62, 7.42, 58.36, 12.94)),
    ("Ours", "test_night", 35.05, (86.37, 37.24, 5.93, 67.94, 12.93, 1.91, 61.23, 6.81)),
]
TABLE3_ROBOTCAR_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "vegetation", "sky", "car")
TABLE3_ROBOTCAR = [
    ("Ours", "test_day", 64.31, (97.52, 70.12, 88.36, 24.05, 8.35, 37.70, 70.19, 92.99, 89.5)),
    ("Ours", "test_night", 49.73, (91.36, 49.93, 73.54, 43.85, 11.3, 13.88, 62.19, 19.67, 81.86)),
]

# Table 4: efficiency at 576x320 on an RTX 4090 (GMACs in thop's convention, parameters in M, seconds/image).
TABLE4_MODULES = ("light", "encoder", "depth_decoder", "seg_decoder")
TABLE4 = [  # (model, gmacs per module + total, params per module + total, time_s)
    ("Ours (depth+semantics)", (20.573, 6.699, 5.358, 6.254, 38.884), (0.167, 11.177, 3.153, 3.192, 17.688), 0.0020),
    ("Monodepth2 (depth)", (None, 6.699, 5.358, None, 12.057), (None, 11.177, 3.153, None, 14.330), 0.0016),
    ("Mask2Former (semantics)", (None, None, None, None, 152.639), (None, None, None, None, 209.660), 0.0267),
]
TABLE4_SIZE = (576, 320)  # (width, height)

# Table 5: ablations on nuScenes. Per split: (miou %, abs_rel, rmse, a1). See the module docstring.
TABLE5_KEYS = ("miou", "abs_rel", "rmse", "a1")
TABLE5_FLAGS = ("RN", "SN", "LE", "PD")
TABLE5_NUSCENES = [  # (variant, flags present, day-clear, night)
    ("no_RN", ("SN", "LE", "PD"), (56.26, 0.157, 6.897, 0.811), (34.95, 0.210, 8.803, 0.668)),
    ("no_SN", ("RN", "LE", "PD"), (55.39, 0.155, 6.761, 0.811), (35.43, 0.211, 8.747, 0.666)),
    ("no_LE", ("RN", "SN", "PD"), (54.14, 0.156, 6.760, 0.812), (34.42, 0.214, 8.794, 0.655)),
    ("no_PD", ("RN", "SN", "LE"), (56.13, 0.166, 7.115, 0.803), (33.87, 0.214, 8.765, 0.651)),
    ("full", ("RN", "SN", "LE", "PD"), (57.74, 0.151, 6.712, 0.816), (35.05, 0.211, 8.899, 0.661)),
]
