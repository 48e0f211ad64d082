"""Figures of `eval-tables`: qualitative panels (paper Fig. 3) and an Abs Rel bar chart (matplotlib, Agg).

Qualitative: for a few target frames of one dataset/split, the input image, the predicted depth
(shown as inverse depth with the magma colour map, normalised per image at the 95th percentile,
as Monodepth2 shows disparities) and the predicted classes in the Cityscapes palette.

Outputs are explicit paths whose file names are fixed by the metrics files (`figure_names`):
`qualitative_{variant}_{ds}_{split}.png` for each metrics file of the main variant and `abs_rel.png`.
`colorize_depth` is also the depth rendering of `inspect --preview`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import cityscapes
from pipeline.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 RGB: inverse depth through the magma colour map (near = bright),
    normalised over the valid (finite, > 0) pixels to [min, 95th percentile] as Monodepth2's
    `test_simple.py` shows disparities; invalid pixels black. Sparse maps (LiDAR ground truth: under
    half the pixels valid) have their points dilated to 3x3 so they can be seen."""
    import cv2

    d = np.asarray(depth, np.float32)
    valid = np.isfinite(d) & (d > 0)
    inv = np.zeros_like(d)
    inv[valid] = 1.0 / d[valid]
    if valid.any():
        lo, hi = float(inv[valid].min()), float(np.percentile(inv[valid], 95))
        inv = np.clip((inv - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(inv)
    img = cv2.cvtColor(cv2.applyColorMap((inv * 255).astype(np.uint8), cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)
    img[~valid] = 0
    if valid.mean() < 0.5:
        img = cv2.dilate(img, np.ones((3, 3), np.uint8))
    return img


def pick(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n) (all of them when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def qualitative(images: np.ndarray, depth: np.ndarray, seg: np.ndarray, titles: list[str], out,
                suptitle: str = "") -> Path:
    """One row per frame: input | predicted depth | predicted segmentation. Writes a PNG."""
    plt = _pyplot()
    n = len(images)
    if not (n == len(depth) == len(seg) == len(titles)) or n == 0:
        raise ValueError(f"qualitative: need as many images, depths, segs and titles (>0), got "
                         f"{len(images)}, {len(depth)}, {len(seg)}, {len(titles)}")
    fig, axes = plt.subplots(n, 3, figsize=(9, 1.9 * n + 0.5), squeeze=False)
    for i in range(n):
        panels = (images[i], colorize_depth(depth[i]), cityscapes.colorize(seg[i]))
        for j, (ax, img, name) in enumerate(zip(axes[i], panels, ("input", "depth (inverse)", "segmentation"))):
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
        axes[i][0].set_ylabel(titles[i], fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _save(fig, out)


def qualitative_from_files(record: dict, predictions, frames, out, k: int = 4, suptitle: str = "") -> Path:
    """Qualitative PNG of one metrics record from its predictions h5 (`evaluate`) and the frames shard it
    was predicted from; both are checked against the record (`check_predictions`)."""
    from pipeline.evaluate.predictions import read_predictions
    from pipeline.shards import open_shard

    pred = read_predictions(predictions)
    shard = open_shard(frames)
    check_predictions(record, pred, predictions, shard, frames)
    idx = pick(len(pred["row"]), k)
    images = shard["image"].oindex[pred["row"][idx]]
    return qualitative(images, pred["depth"][idx].astype(np.float32), pred["seg"][idx],
                       [str(f)[-24:] for f in pred["frame_id"][idx]], out, suptitle)


def check_predictions(record: dict, pred: dict, predictions, frames, frames_path) -> None:
    """The predictions h5 belongs to the metrics record (its dataset and split attrs, one prediction per
    evaluated frame) and to the frames shard (its frame ids at the predicted rows)."""
    where = f"{predictions} (given for {record['path']})"
    for key in ("dataset", "split"):
        if key in pred["attrs"] and pred["attrs"][key] != record[key]:
            raise ValueError(f"{where}: holds {key} {pred['attrs'][key]!r}, the metrics file {record[key]!r}")
    if len(pred["row"]) != record["n_frames"] or not len(pred["row"]):
        raise ValueError(f"{where}: holds {len(pred['row'])} predictions, the metrics file counts "
                         f"{record['n_frames']} frames")
    ids = np.asarray([str(x) for x in frames["frame_id"][:]])
    if pred["row"].min() < 0 or pred["row"].max() >= len(ids):
        raise ValueError(f"{where}: rows outside the {len(ids)} rows of the frames shard {frames_path}")
    if not np.array_equal(ids[pred["row"]], pred["frame_id"]):
        raise ValueError(f"{where}: frame ids differ from those of the frames shard {frames_path} at the "
                         f"predicted rows (not the frames it was predicted from?)")


def abs_rel_bars(values: dict[str, dict[str, float]], out, baselines: dict[str, dict[str, float]] | None = None,
                 title: str = "Abs Rel (lower is better)") -> Path:
    """Grouped bars: {variant: {"ds split": abs_rel}} -> PNG, one group per variant; `baselines` (same
    layout) are drawn as black ticks over the bars (the constant-depth baseline)."""
    plt = _pyplot()
    variants = list(values)
    groups = sorted({g for v in values.values() for g in v})
    if not variants or not groups:
        raise ValueError("abs_rel_bars: no values to plot")
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(variants) + 2), 3.2))
    x = np.arange(len(variants))
    for i, g in enumerate(groups):
        heights = [values[v].get(g, np.nan) for v in variants]
        xs = x + (i - (len(groups) - 1) / 2) * width
        ax.bar(xs, heights, width, label=g)
        if baselines:
            base = [baselines.get(v, {}).get(g, np.nan) for v in variants]
            ax.hlines(base, xs - width / 2, xs + width / 2, colors="black", linewidth=2,
                      label="constant depth" if i == 0 else None)
    ax.set_xticks(x, variants)
    ax.set_ylabel("Abs Rel")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out)


def qualitative_name(variant: str, dataset: str, split: str) -> str:
    return f"qualitative_{variant}_{dataset}_{split}.png"


ABS_REL_NAME = "abs_rel.png"


def figure_names(records: list[dict], main_variant: str | None) -> list[str]:
    """The figures `write_figures` makes: `qualitative_{variant}_{ds}_{split}.png` for each record of
    `main_variant`, and `abs_rel.png` when there is any record."""
    names = [qualitative_name(r["variant"], r["dataset"], r["split"]) for r in records if r["variant"] == main_variant]
    return names + ([ABS_REL_NAME] if records else [])


def match_outputs(requested, expected: list[str]) -> dict[str, Path]:
    """{figure name: requested path}, matching by file name; ValueError when the requested names are not
    exactly the expected ones (naming what is missing and what is unexpected) or repeat a name."""
    requested = [Path(p) for p in requested]
    names = [p.name for p in requested]
    repeated = sorted({n for n in names if names.count(n) > 1})
    missing, unexpected = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
    if repeated or missing or unexpected:
        raise ValueError("--figures must name exactly the figures the metrics files imply "
                         f"({sorted(expected) or 'none'}): missing {missing}, unexpected {unexpected}"
                         + (f", repeated {repeated}" if repeated else ""))
    return {p.name: p for p in requested}


def write_figures(records: list[dict], predictions: list, frames: list, outputs: dict[str, Path],
                  main_variant: str | None) -> list[Path]:
    """Qualitative PNG per record of `main_variant` (from its predictions h5 and frames shard: the lists
    `predictions` and `frames` are parallel to `records`) and the Abs Rel bar chart over all records,
    each written to `outputs[name]` (see `figure_names`, `match_outputs`). Returns the files."""
    written = []
    for r, h5, shard in zip(records, predictions, frames, strict=True):
        if r["variant"] != main_variant:
            continue
        out = outputs[qualitative_name(r["variant"], r["dataset"], r["split"])]
        demo = " (synthetic demo)" if r.get("synthetic_demo") else ""
        written.append(qualitative_from_files(r, h5, shard, out,
                                              suptitle=f"{r['dataset']} {r['split']} [{r['variant']}]{demo}"))
    bars: dict[str, dict[str, float]] = {}
    base: dict[str, dict[str, float]] = {}
    for r in records:
        bars.setdefault(r["variant"], {})[f"{r['dataset']} {r['split']}"] = r["depth"]["abs_rel"]
        base.setdefault(r["variant"], {})[f"{r['dataset']} {r['split']}"] = r["baseline_constant"]["abs_rel"]
    if bars:
        written.append(abs_rel_bars(bars, outputs[ABS_REL_NAME], base))
    return written


def _save(fig, out) -> Path:
    """PNG written atomically; the figure is closed."""
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        _pyplot().close(fig)
    return Path(out)
