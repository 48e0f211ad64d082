"""Figures of `eval-tables`: qualitative panels (paper Fig. 3) and an Abs Rel bar chart (matplotlib, Agg).

Qualitative: for a few target frames of one dataset/split, the input image, the predicted depth
(shown as inverse depth with the magma colour map, normalised per image at the 95th percentile,
as Monodepth2 shows disparities) and the predicted classes in the Cityscapes palette.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline import cityscapes

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 magma image of 1 / depth over [min, 95th percentile]
    (Monodepth2's `test_simple.py` normalisation)."""
    import matplotlib

    depth = np.asarray(depth, dtype=np.float32)
    inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0)
    vmin, vmax = float(inv.min()), float(np.percentile(inv, 95))
    scaled = (inv - vmin) / (vmax - vmin) if vmax > vmin else np.zeros_like(inv)
    rgba = matplotlib.colormaps["magma"](np.clip(scaled, 0.0, 1.0))
    return (rgba[..., :3] * 255).astype(np.uint8)


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


def qualitative_from_files(predictions, frames, out, k: int = 4, suptitle: str = "") -> Path:
    """Qualitative PNG from a predictions h5 (`evaluate`) and the frames shard it was predicted from."""
    from pipeline.evaluate.predict import read_predictions
    from pipeline.shards import open_shard

    pred = read_predictions(predictions)
    if not len(pred["row"]):
        raise ValueError(f"{predictions}: holds no predictions")
    idx = pick(len(pred["row"]), k)
    images = open_shard(frames)["image"].oindex[pred["row"][idx]]
    return qualitative(images, pred["depth"][idx].astype(np.float32), pred["seg"][idx],
                       [str(f)[-24:] for f in pred["frame_id"][idx]], out, suptitle)


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


def write_figures(records: list[dict], figures_dir, main_variant: str | None,
                  predictions: dict | None = None) -> list[Path]:
    """Qualitative PNG per dataset/split of `main_variant` and the Abs Rel bar chart; returns the files.

    `predictions` maps a metrics path to its h5; by default the h5 beside the metrics file (same
    stem). A missing h5 or frames shard skips that figure with a warning."""
    figures_dir = Path(figures_dir)
    written = []
    for r in records:
        if r["variant"] != main_variant:
            continue
        h5 = Path((predictions or {}).get(r["path"]) or Path(r["path"]).with_suffix(".h5"))
        frames = r.get("frames")
        if not h5.is_file() or frames is None or not Path(frames).exists():
            log.warning("no qualitative figure for %s: predictions %s or frames %s missing", r["path"], h5, frames)
            continue
        demo = " (synthetic demo)" if r.get("synthetic_demo") else ""
        written.append(qualitative_from_files(h5, frames, figures_dir / f"qualitative_{r['dataset']}_{r['split']}.png",
                                              suptitle=f"{r['dataset']} {r['split']} [{r['variant']}]{demo}"))
    bars: dict[str, dict[str, float]] = {}
    base: dict[str, dict[str, float]] = {}
    for r in records:
        bars.setdefault(r["variant"], {})[f"{r['dataset']} {r['split']}"] = r["depth"]["abs_rel"]
        base.setdefault(r["variant"], {})[f"{r['dataset']} {r['split']}"] = r["baseline_constant"]["abs_rel"]
    if bars:
        written.append(abs_rel_bars(bars, figures_dir / "abs_rel.png", base))
    return written


def _save(fig, out) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)
    return out
