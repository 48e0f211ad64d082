"""The trainers' per-epoch TensorBoard scalars: tag `epoch/<name>` at step = the 1-based epoch.

Kept apart from `pipeline.curves` (which reads and plots them) so that the trainers' code digests do
not cover the plotting: editing a plot does not re-train anything.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

EPOCH_PREFIX = "epoch/"


@contextmanager
def epoch_logger(log_dir: str | Path):
    """`on_epoch(epoch, scalars)` for a trainer: each scalar becomes TensorBoard tag `epoch/<name>` at
    step `epoch`, in event files under `log_dir` (created)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))

    def on_epoch(epoch: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            writer.add_scalar(EPOCH_PREFIX + name, float(value), int(epoch))
        writer.flush()

    try:
        yield on_epoch
    finally:
        writer.close()
