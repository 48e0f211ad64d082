"""The student's training set over the shards of one dataset (paper section 3.2, Fig. 2).

One item = a real-day triplet (t-1, t, t+1) with its synthetic-night twin, the day teacher labels and
teacher depth, plus a real-night triplet drawn independently (seeded by seed, epoch and index) with its
synthetic-day twin and its teacher labels; intrinsics of each. Items of one dataset share one image size,
so a batch holds one dataset (different datasets may have different sizes: one loader per dataset).

Keys of an item (images float32 (3, H, W) in [0, 1]):
    day_prev, day, day_next, syn_night, day_K (3, 3), day_topk_class / day_topk_prob uint8 (k, H', W'),
    day_teacher_depth float32 (1, H'', W''), day_row;
    night_prev, night, night_next, syn_day, night_K, night_topk_class / night_topk_prob, night_row;
    flipped (bool), color_aug (bool);
    with `color_aug`: aug_<name> for every image the networks see (day_prev, day, day_next, syn_night,
    night_prev, night, night_next, syn_day): the network's input, colour-jittered in half of the items.
The night keys are left out with `real_night=False`, syn_night / syn_day with `synthetic=False`, the
teacher depth with `teacher_depth=False` (the ablation switches of Table 5: nothing unused is read).

Shards are read one row (one chunk) at a time and opened lazily in each process, so the set works in
DataLoader workers (num_workers > 0) and with pin_memory.

Colour augmentation (`color_aug`, config `train.color_aug`) is Monodepth2's (`datasets/mono_dataset.py`
lines 67-80 and 140, 175-181): with probability 0.5 per item, one colour jitter (brightness, contrast,
saturation in [0.8, 1.2], hue in [-0.1, 0.1], applied in a random order as torchvision's ColorJitter) is
drawn and applied to every image of the item, stored as `aug_<name>`; the losses keep the un-augmented
images (Monodepth2 feeds `color_aug` to the networks and computes its losses on `color`). The draws come
from the item's generator (seed, epoch, index), after the night pick and the flip, so they are the same
in any worker and after a resume.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.geometry import flip_K
from pipeline.shards import RowReader, open_shard
from pipeline.triplets import usable_targets

ROLES = ("day_frames", "day_synth", "day_seg", "day_depth", "night_frames", "night_synth", "night_seg")
NETWORK_IMAGES = ("day_prev", "day", "day_next", "syn_night", "night_prev", "night", "night_next", "syn_day")
# Monodepth2 datasets/mono_dataset.py lines 70-73 (ColorJitter ranges) and 140 (p = 0.5)
JITTER = {"brightness": (0.8, 1.2), "contrast": (0.8, 1.2), "saturation": (0.8, 1.2), "hue": (-0.1, 0.1)}
COLOR_AUG_P = 0.5


def color_jitter(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """One ColorJitter draw applied to a stack of images (N, 3, H, W) in [0, 1]: factors uniform in JITTER,
    the four adjustments in a random order (torchvision's ColorJitter.get_params, drawn from `rng`),
    applied with torchvision's functional ops."""
    from torchvision.transforms.v2 import functional as TF

    order = rng.permutation(4)
    factors = [float(rng.uniform(*JITTER[k])) for k in ("brightness", "contrast", "saturation", "hue")]
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    out = images
    for i in order:
        out = ops[i](out, factors[i])
    return out.clamp(0, 1)


def _image(arr, row: int) -> torch.Tensor:
    """uint8 (H, W, 3) row -> float32 (3, H, W) in [0, 1]. Shard rows are read-only views of the bytes
    read (`RowReader`), which torch warns about on any conversion: the float copy is made in NumPy."""
    return torch.from_numpy(np.asarray(arr[int(row)]).astype(np.float32)).permute(2, 0, 1).div_(255.0)


def _labels(arr, row: int) -> torch.Tensor:
    """uint8 (H, W, k) row -> uint8 (k, H, W), a writable copy (see `_image`)."""
    return torch.from_numpy(np.array(np.asarray(arr[int(row)]).transpose(2, 0, 1), order="C"))


class TrainingSet(Dataset):
    """Training items of one dataset from its shards `paths` (role -> path, roles in ROLES: the rule
    passes them; only those the switches need are opened). See the module docstring for the keys.

    `flip`: horizontal flip with probability 0.5, one decision per item applied to every image, label
    and depth map of the item and to the cx of both intrinsics. `color_aug`: Monodepth2's colour jitter of
    the network inputs (see the module docstring). Night rows, flips and jitters are drawn from a
    generator seeded by (seed, epoch, index): call `set_epoch` before each epoch."""

    def __init__(self, paths: dict, dataset: str, *, real_night: bool, synthetic: bool, teacher_depth: bool,
                 flip: bool, seed: int, color_aug: bool = False):
        self.dataset = dataset
        self.paths = {role: Path(p) for role, p in paths.items()}
        self.real_night, self.synthetic, self.teacher_depth = real_night, synthetic, teacher_depth
        self.flip, self.seed, self.epoch = flip, int(seed), 0
        self.color_aug = bool(color_aug)
        needed = ["day_frames", "day_seg"] + (["day_synth"] if synthetic else []) \
            + (["day_depth"] if teacher_depth else [])
        if real_night:
            needed += ["night_frames", "night_seg"] + (["night_synth"] if synthetic else [])
        self.needed = needed
        missing = [role for role in needed if role not in self.paths]
        if missing:
            raise ValueError(f"dataset {dataset}: no shard given for {missing} (needed by the enabled switches)")
        groups = {role: open_shard(self.paths[role]) for role in needed}  # validates every shard now
        self.day_rows = usable_targets(groups["day_frames"])
        if not len(self.day_rows):
            raise ValueError(f"{self.paths['day_frames']}: no target row with both a previous and a next frame")
        self.night_rows = usable_targets(groups["night_frames"]) if real_night else np.zeros(0, np.int64)
        if real_night and not len(self.night_rows):
            raise ValueError(f"{self.paths['night_frames']}: no target row with both a previous and a next frame")
        self._check_aligned(groups)
        self._groups = None  # opened again lazily in each process (DataLoader workers)
        self._pid = None

    def _check_aligned(self, groups) -> None:
        for side in ("day", "night"):
            if f"{side}_frames" not in groups:
                continue
            n, hw = groups[f"{side}_frames"]["image"].shape[0], groups[f"{side}_frames"]["image"].shape[1:3]
            for role, key in ((f"{side}_synth", "image"), (f"{side}_seg", "topk_class"),
                              (f"{side}_seg", "topk_prob"), (f"{side}_depth", "depth")):
                if role in groups:
                    if key not in groups[role]:
                        raise ValueError(f"{self.paths[role]}: missing array {key!r}")
                    if groups[role][key].shape[0] != n:
                        raise ValueError(f"{self.paths[role]}: {groups[role][key].shape[0]} rows, but "
                                         f"{self.paths[f'{side}_frames']} has {n}: shards are not row-aligned")
            if f"{side}_synth" in groups and groups[f"{side}_synth"]["image"].shape[1:3] != hw:
                raise ValueError(f"{self.paths[f'{side}_synth']}: images {groups[f'{side}_synth']['image'].shape[1:3]}"
                                 f" differ from the frames' {hw}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.day_rows)

    def _open(self) -> dict:
        """Per process: images through RowReader (one pread per frame), prev/next/K held in memory."""
        if self._groups is None or self._pid != os.getpid():
            groups = {role: open_shard(self.paths[role]) for role in self.needed}
            for role, g in groups.items():
                view = dict(g.arrays())
                if "image" in view:
                    view["image"] = RowReader(g["image"], Path(self.paths[role]) / "image")
                for small in ("prev", "next", "K"):
                    if small in view:
                        view[small] = view[small][:]
                groups[role] = view
            self._groups = groups
            self._pid = os.getpid()
        return self._groups

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_groups"], state["_pid"] = None, None  # never ship open stores to workers
        return state

    def __getitem__(self, index: int) -> dict:
        g = self._open()
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        night_pick = int(rng.integers(len(self.night_rows))) if self.real_night else -1
        flipped = bool(self.flip and rng.random() < 0.5)
        item = self._side(g, "day", int(self.day_rows[index]))
        if self.real_night:
            item.update(self._side(g, "night", int(self.night_rows[night_pick])))
        item["flipped"] = flipped
        if flipped:
            for key, value in item.items():
                if key.endswith("_K"):
                    item[key] = flip_K(value, item[key.replace("_K", "")].shape[-1])
                elif isinstance(value, torch.Tensor) and value.dim() == 3:
                    item[key] = value.flip(-1).contiguous()
        if self.color_aug:
            item["color_aug"] = bool(rng.random() < COLOR_AUG_P)
            names = [n for n in NETWORK_IMAGES if n in item]
            if item["color_aug"]:  # one jitter for every image of the item, as Monodepth2
                jittered = color_jitter(torch.stack([item[n] for n in names]), rng)
                item.update({f"aug_{n}": jittered[i] for i, n in enumerate(names)})
            else:
                item.update({f"aug_{n}": item[n] for n in names})
        return item

    def _side(self, g: dict, side: str, row: int) -> dict:
        frames = g[f"{side}_frames"]
        prev, nxt = int(frames["prev"][row]), int(frames["next"][row])
        img = frames["image"]
        out = {f"{side}_prev": _image(img, prev), side: _image(img, row), f"{side}_next": _image(img, nxt),
               f"{side}_K": torch.from_numpy(np.asarray(frames["K"][row], np.float32)),
               f"{side}_topk_class": _labels(g[f"{side}_seg"]["topk_class"], row),
               f"{side}_topk_prob": _labels(g[f"{side}_seg"]["topk_prob"], row),
               f"{side}_row": row}
        if self.synthetic:
            out["syn_night" if side == "day" else "syn_day"] = _image(g[f"{side}_synth"]["image"], row)
        if side == "day" and self.teacher_depth:
            depth = np.asarray(g["day_depth"]["depth"][row], np.float32)
            out["day_teacher_depth"] = torch.from_numpy(depth).unsqueeze(0)
        return out
