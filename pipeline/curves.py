"""Training curves: the per-epoch scalars of a TensorBoard log folder, read with TensorBoard's own reader.

Every trainer of the pipeline (the student, CycleGAN, the Monodepth2 teacher) writes one value per
epoch and tag under `epoch/` (`pipeline.epoch_log`), with the 1-based epoch number as the step: the mean of
each loss term over the epoch's steps, and the learning rate. (The student also logs each step under
`loss/`; those are not curves per epoch and are left out here.) `read_epoch_scalars` returns them,
`plot_curves` draws one panel per tag and writes a PNG for the report.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.atomic import atomic_path
from pipeline.epoch_log import EPOCH_PREFIX

# the terms of eq. (18) first, in the paper's order, then the rest by name, the learning rate last
FIRST = ("total", "light", "sf", "cst", "ds", "seg")


def read_epoch_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag without the prefix: [(epoch, value), ...] by epoch} of every `epoch/` scalar of the event
    files in `log_dir`. A run resumed into the same folder may have written an epoch twice: the value
    written last wins. Raises if the folder is missing or holds no per-epoch scalar."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"TensorBoard log folder not found: {log_dir}")
    acc = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})  # 0: keep every value
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        if tag.startswith(EPOCH_PREFIX):
            by_epoch = {int(ev.step): float(ev.value) for ev in acc.Scalars(tag)}
            out[tag[len(EPOCH_PREFIX):]] = sorted(by_epoch.items())
    if not out:
        raise ValueError(f"{log_dir} holds no per-epoch scalars (TensorBoard tags {EPOCH_PREFIX}*): "
                         f"tags found: {sorted(acc.Tags()['scalars']) or 'none'}")
    return out


def ordered_tags(tags) -> list[str]:
    """The eq. (18) terms first, then the other tags by name, the learning rate last."""
    first = [t for t in FIRST if t in tags]
    return first + sorted(t for t in tags if t not in first and t != "lr") + (["lr"] if "lr" in tags else [])


def plot_curves(scalars: dict[str, list[tuple[int, float]]], out: str | Path, title: str, ncols: int = 4) -> Path:
    """One panel per tag (value against epoch, a marker per epoch), `title` above; a PNG written atomically."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    tags = ordered_tags(scalars)
    ncols = min(ncols, len(tags))
    nrows = math.ceil(len(tags) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows + 0.6), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        epochs, values = zip(*scalars[tag])
        ax.plot(epochs, values, "o-", ms=4)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        if len(epochs) <= 12:  # a tick per epoch (and a sane axis for one epoch)
            ax.set_xticks(epochs)
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return Path(out)
