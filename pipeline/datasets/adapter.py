"""The dataset adapter interface, and `open_dataset`: the one place that chooses a dataset by name.

Every data verb talks to a dataset through `Dataset` only:

    ds = open_dataset("nuscenes", root, {"version": "v1.0-mini", "day_clear_only": True})
    splits, header = ds.derive_splits()          # split name -> frame ids, and how they were derived
    table = ds.frame_table(ids)                  # targets + the neighbours they need (K at the original size)
    rgb = ds.load_rgb(table.source[0])           # RGB uint8 (H, W, 3) at the original size
    frame = ds.load_frame(table.source[0], CropResize(crop, table.image_size, (w, h)))  # cut + resized
    depth, labels = ds.ground_truth(table.frame_id[0], table.source[0], crop=crop, size=(w, h))

`options` holds the dataset's config keys (`datasets.<name>.<key>`) that the calling stage uses; each
method reads only the keys it needs, so a rule passes only those (see each adapter's OPTIONS). A
missing key is an error naming `datasets.<name>.<key>`; an unknown key is an error too.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from pipeline.datasets.frames import FrameTable
from pipeline.datasets.images import CropResize


class Dataset(ABC):
    """One dataset root, opened with the stage's options. Subclasses: `nuscenes.NuScenes`,
    `robotcar_dataset.RobotCar`."""

    name: ClassVar[str]            # the config name: datasets.<name>
    title: ClassVar[str]           # how messages name the dataset
    OPTIONS: ClassVar[Mapping[str, str]]   # option key -> which methods read it

    def __init__(self, root: str | Path, options: Mapping[str, Any] | None = None):
        self.root = Path(root)
        self.options = dict(options or {})
        unknown = sorted(set(self.options) - set(self.OPTIONS))
        if unknown:
            raise ValueError(f"unknown {self.title} option(s) {unknown}; known: "
                             + ", ".join(f"datasets.{self.name}.{k} ({v})" for k, v in self.OPTIONS.items()))
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.title} root not found: {self.root} (config key datasets.{self.name}.root)")

    def option(self, key: str) -> Any:
        """The value of option `key`; an error naming the config key when the stage did not pass it."""
        if key not in self.OPTIONS:
            raise KeyError(f"{type(self).__name__} reads no option {key!r}")  # a programming error
        if key not in self.options:
            raise ValueError(f"{self.title}: option {key!r} is missing; set config key datasets.{self.name}.{key} "
                             f"(the rule passes it in --options)")
        return self.options[key]

    @abstractmethod
    def derive_splits(self) -> tuple[dict[str, list[str]], str]:
        """({split name: frame ids} for all of frames.SPLITS, a one-line description of the rule used)."""

    @abstractmethod
    def frame_table(self, ids: Sequence[str]) -> FrameTable:
        """Rows for the target frame `ids` plus their t-1 / t+1 neighbours; K at the original image size."""

    @abstractmethod
    def load_rgb(self, source: str) -> np.ndarray:
        """RGB uint8 (H, W, 3) of a frame's `source` (relative to the root) at the original size."""

    def load_frame(self, source: str, mapping: CropResize) -> np.ndarray:
        """A frame as extraction stores it: `load_rgb(source)` cut and resized by `mapping` (its `src_size`
        is checked). Adapters that can skip the work outside the crop box override it (same output)."""
        return mapping.image(self.load_rgb(source))

    @abstractmethod
    def ground_truth(self, frame_id: str, source: str, *, crop, size: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """(depth float32 (H, W), 0 = none; labels uint8 (H, W) Cityscapes train ids or None where the root has
        no label map) of one frame after the crop (left, top, right, bottom) and a resize to size = (W, H)."""


def open_dataset(name: str, root: str | Path, options: Mapping[str, Any] | None = None) -> Dataset:
    """The adapter of dataset `name` on `root`: the only place that dispatches on a dataset's name."""
    if name == "nuscenes":
        from pipeline.datasets.nuscenes import NuScenes

        return NuScenes(root, options)
    if name == "robotcar":
        from pipeline.datasets.robotcar_dataset import RobotCar

        return RobotCar(root, options)
    raise ValueError(f"unknown dataset {name!r}; expected nuscenes or robotcar")
