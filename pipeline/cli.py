"""`python -m pipeline VERB ...`: the one entry point every Snakemake rule calls.

One small function per verb: it parses explicit paths and values, calls the package, and
nothing else. The config is read here (the edge) and passed down as plain values.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("pipeline")

def _bool_arg(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({exc})") from exc


# ----------------------------------------------------------------------------- inspect
def add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="a .zarr group written by the pipeline")
    p.add_argument("--verify", action="store_true", help="recompute the per-array checksums; exit 1 on a mismatch")
    p.add_argument("--preview", type=Path, metavar="OUT.png", help="render one row to a PNG")
    p.add_argument("--index", type=int, default=0, help="row to preview (default 0)")


def cmd_inspect(args) -> int:
    from pipeline import inspect as inspect_mod

    print(inspect_mod.describe(args.path))
    status = 0
    if args.verify:
        bad = inspect_mod.verify_report(args.path)
        print(bad["text"])
        status = 0 if bad["ok"] else 1
    if args.preview:
        out = inspect_mod.preview(args.path, args.index, args.preview)
        print(f"preview of row {args.index} written to {out}")
    return status


# ----------------------------------------------------------------------------- data verbs (lead)
def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=["nuscenes", "robotcar"])
    p.add_argument("--root", required=True, type=Path, help="dataset root")
    p.add_argument("--version", default="v1.0-mini", help="nuScenes version folder")


def add_demo_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=["nuscenes", "robotcar"])
    p.add_argument("--out", required=True, type=Path, help="dataset root to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keyframes-per-scene", type=int, default=8)
    p.add_argument("--sweeps-between", type=int, default=2)
    p.add_argument("--frames-per-run", type=int, default=40)


def cmd_demo_data(args) -> int:
    import shutil
    import tempfile

    from pipeline.datasets import demo
    from pipeline.shards import replace_dir

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.tmp-", dir=args.out.parent))
    try:
        if args.dataset == "nuscenes":
            summary = demo.write_nuscenes_demo(tmp, seed=args.seed, keyframes_per_scene=args.keyframes_per_scene,
                                               sweeps_between=args.sweeps_between)
        else:
            summary = demo.write_robotcar_demo(tmp, seed=args.seed, frames_per_run=args.frames_per_run)
        replace_dir(tmp, args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("demo %s written to %s: %s", args.dataset, args.out, summary)
    return 0


def add_splits(p: argparse.ArgumentParser) -> None:
    _add_dataset_args(p)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--split-files", type=_json_arg, default={}, help='JSON {"split": "file"}; others are derived')
    p.add_argument("--day-clear-only", type=_bool_arg, default=True)
    p.add_argument("--runs", type=_json_arg, default={}, help='RobotCar: JSON {"day": [...], "night": [...]}')
    p.add_argument("--test-every", type=int, default=5)
    p.add_argument("--test-fraction", type=float, default=0.3)


def cmd_splits(args) -> int:
    from pipeline.datasets import frames as fr

    derived, header = _derive_splits(args)
    for split in fr.SPLITS:
        if split in args.split_files:
            ids = fr.read_split_file(args.split_files[split])
            note = f"{split}: from the user's split file {args.split_files[split]}"
        else:
            ids = derived[split]
            note = f"{split}: derived ({header})"
        fr.write_split_file(args.out_dir / f"{split}.txt", ids, header=note)
        log.info("%s: %d frames -> %s", split, len(ids), args.out_dir / f"{split}.txt")
    unknown = set(args.split_files) - set(fr.SPLITS)
    if unknown:
        raise ValueError(f"split_files names unknown splits {sorted(unknown)}; expected {list(fr.SPLITS)}")
    return 0


def _derive_splits(args):
    if args.dataset == "nuscenes":
        from pipeline.datasets import nuscenes as ns

        nusc = ns.open_nuscenes(args.root, args.version)
        return (ns.derive_splits(nusc, args.version, args.day_clear_only),
                f"official {ns.VERSION_SPLITS.get(args.version)} scenes of {args.version}, night by scene description"
                + (", rain scenes left out of day" if args.day_clear_only else ""))
    from pipeline.datasets import robotcar_splits as rs

    return (rs.derive_splits(args.root, args.runs, test_every=args.test_every, test_fraction=args.test_fraction),
            f"runs {args.runs}; test = last {args.test_fraction:.0%} of each run, every {args.test_every}-th frame with LiDAR")


def _table_and_loader(args, ids):
    """Frame table + `load_rgb(source)` for the dataset."""
    if args.dataset == "nuscenes":
        from pipeline.datasets import nuscenes as ns
        from pipeline.datasets.images import read_rgb

        nusc = ns.open_nuscenes(args.root, args.version)
        table = ns.frame_table(nusc, ids, neighbours=args.neighbours)
        return table, (lambda source: read_rgb(args.root / source)), nusc
    from pipeline.datasets import robotcar_splits as rs

    table, load = rs.frame_table(args.root, ids)
    return table, load, None


def add_extract_frames(p: argparse.ArgumentParser) -> None:
    _add_dataset_args(p)
    p.add_argument("--split-file", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--crop", nargs=4, type=int, default=[0, 0, 0, 0], metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"))
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--neighbours", default="sweeps", help="nuScenes: sweeps | keyframes | none")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows-per-shard", type=int, default=64)


def cmd_extract_frames(args) -> int:
    from pipeline import shards
    from pipeline.datasets import frames as fr

    ids = fr.read_split_file(args.split_file)
    table, load, _ = _table_and_loader(args, ids)
    attrs = shards.provenance("extract_frames", {
        "dataset": args.dataset, "root": str(args.root), "version": args.version, "crop": args.crop,
        "width": args.width, "height": args.height, "neighbours": args.neighbours},
        {"split_file": shards.file_sha256(args.split_file)})
    attrs["image_size_original"] = list(table.image_size)
    fr.extract_frames(table, load, args.out, crop=args.crop, size=(args.width, args.height), attrs=attrs,
                      threads=args.threads, rows_per_shard=args.rows_per_shard)
    log.info("%s: %d rows (%d targets)", args.out, len(table), int(table.target.sum()))
    return 0


def add_gt_depth(p: argparse.ArgumentParser) -> None:
    _add_dataset_args(p)
    p.add_argument("--frames", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--eval-width", type=int, required=True)
    p.add_argument("--eval-height", type=int, required=True)
    p.add_argument("--lidar-window-us", type=int, default=4_000_000, help="RobotCar LMS accumulation window")


def cmd_gt_depth(args) -> int:
    from pipeline import shards
    from pipeline.datasets import ground_truth

    frames = shards.open_shard(args.frames)
    crop = frames.attrs["config"]["crop"]  # the frames' own crop: GT covers exactly what the network sees
    depth, K, labels = ground_truth.build(args.dataset, args.root, args.version, frames, crop=crop,
                                          size=(args.eval_width, args.eval_height),
                                          lidar_window_us=args.lidar_window_us)
    attrs = shards.provenance("gt_depth", {
        "dataset": args.dataset, "root": str(args.root), "version": args.version, "crop": crop,
        "eval_width": args.eval_width, "eval_height": args.eval_height}, {"frames": shards.digest(args.frames)})
    arrays = {"depth": depth, "K": K}
    if labels is not None:
        arrays["labels"] = labels
    shards.write_group(args.out, arrays, attrs, compress=["depth", "labels"])
    valid = depth[frames["target"][:]] > 0
    log.info("%s: %d target frames, %.2f%% of pixels with depth", args.out, int(frames["target"][:].sum()),
             100.0 * valid.mean() if valid.size else 0.0)
    return 0


# ----------------------------------------------------------------------------- teacher verbs
def add_fit_demo_seg_teacher(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, required=True, metavar="TRAIN_DAY.zarr", help="frames shard (target rows used)")
    p.add_argument("--gt", type=Path, required=True, metavar="GT_TRAIN_DAY.zarr", help="ground-truth shard with `labels`")
    p.add_argument("--out-dir", type=Path, required=True, help="checkpoint folder (save_pretrained format)")
    p.add_argument("--minutes", type=float, default=2.0, help="wall-clock training budget")
    p.add_argument("--max-steps", type=int, default=None, help="step cap (reproducible runs); default: time only")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--seed", type=int, default=0)


def cmd_fit_demo_seg_teacher(args) -> int:
    import numpy as np

    from pipeline.shards import open_shard
    from pipeline.teachers import mask2former

    frames, gt = open_shard(args.frames), open_shard(args.gt)
    if "labels" not in gt:
        raise KeyError(f"{args.gt}: ground-truth shard has no `labels` array (needed to fit the demo teacher)")
    if gt["labels"].shape[0] != frames["image"].shape[0]:
        raise ValueError(f"{args.gt} has {gt['labels'].shape[0]} rows, {args.frames} has {frames['image'].shape[0]}")
    rows = np.flatnonzero(np.asarray(frames["target"][:], bool))
    if not len(rows):
        raise ValueError(f"{args.frames}: no target rows to fit the demo teacher on")
    images = frames["image"].oindex[rows]
    labels = mask2former.resize_labels(gt["labels"].oindex[rows], *images.shape[1:3])
    report = mask2former.fit_demo_teacher(images, labels, args.out_dir, minutes=args.minutes, device=args.device,
                                          seed=args.seed, max_steps=args.max_steps, batch_size=args.batch_size)
    log.info("demo seg teacher: %d steps, loss %.3f -> %.3f, saved to %s",
             report["steps"], report["first_loss"], report["last_loss"], args.out_dir)
    return 0


def add_seg_pseudolabels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, required=True, metavar="F.zarr", help="frames shard (target rows labelled)")
    p.add_argument("--checkpoint", type=Path, required=True, metavar="DIR", help="local Mask2Former save_pretrained folder")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.zarr", help="seg_teacher shard, aligned with --frames")
    p.add_argument("--topk", type=int, default=3, help="classes kept per pixel")
    p.add_argument("--tau", type=float, default=0.1, help="threshold of eq. 16, for the dropped-mass report")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def cmd_seg_pseudolabels(args) -> int:
    from pipeline.devices import resolve_device
    from pipeline.shards import digest, provenance
    from pipeline.teachers import mask2former

    device = resolve_device(args.device)
    model, processor = mask2former.load_teacher(args.checkpoint, device)
    teacher = mask2former.teacher_id(args.checkpoint)
    attrs = provenance("seg_pseudolabels", {"topk": args.topk, "tau": args.tau},
                       {"frames": digest(args.frames), "teacher": teacher["sha256"]})
    mask2former.write_pseudolabels(args.frames, args.out, model, processor, teacher=teacher, k=args.topk,
                                   tau=args.tau, batch_size=args.batch_size, device=device, attrs=attrs)
    return 0


def _resume_file(stem: Path, *input_digests: str) -> Path:
    """Resumable-state file named by the input data's digests: a run on other inputs never resumes it.
    States of other inputs beside it are stale and removed."""
    key = hashlib.sha256("".join(input_digests).encode()).hexdigest()[:12]
    path = stem.with_name(f"{stem.name}-{key}.pt")
    for stale in stem.parent.glob(f"{stem.name}*.pt"):
        if stale != path:
            log.warning("removing %s: resumable state of other input data", stale)
            stale.unlink()
    return path


def add_train_cyclegan(p: argparse.ArgumentParser) -> None:
    p.add_argument("--day", type=Path, required=True, metavar="DAY.zarr", help="frames shard of day images")
    p.add_argument("--night", type=Path, required=True, metavar="NIGHT.zarr", help="frames shard of night images")
    p.add_argument("--out-dir", type=Path, required=True, help="writes G_day2night.pth and G_night2day.pth here")
    p.add_argument("--ngf", type=int, default=64, help="generator base channels (reference: 64)")
    p.add_argument("--n-blocks", type=int, default=9, help="residual blocks (reference: 9)")
    p.add_argument("--epochs", type=int, default=100, help="epochs at constant learning rate (reference: 100)")
    p.add_argument("--epochs-decay", type=int, default=100, help="epochs of linear decay to 0 (reference: 100)")
    p.add_argument("--crop", type=int, default=256, help="random crop size (reference: 256)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrained-day2night", type=Path, metavar="PATH",
                   help="use this generator (reference format) instead of training; needs --pretrained-night2day")
    p.add_argument("--pretrained-night2day", type=Path, metavar="PATH")


def cmd_train_cyclegan(args) -> int:
    import shutil

    from pipeline.devices import resolve_device
    from pipeline.shards import digest, open_shard
    from pipeline.synth import cyclegan

    args.out_dir.mkdir(parents=True, exist_ok=True)
    outs = {"day2night": args.out_dir / "G_day2night.pth", "night2day": args.out_dir / "G_night2day.pth"}
    pretrained = {"day2night": args.pretrained_day2night, "night2day": args.pretrained_night2day}
    if any(pretrained.values()):
        if not all(pretrained.values()):
            raise ValueError("--pretrained-day2night and --pretrained-night2day must be given together")
        for key, src in pretrained.items():
            G = cyclegan.load_generator(src)  # validates the file
            log.info("using pretrained %s generator %s (ngf %d, %d blocks)", key, src, G.ngf, G.n_blocks)
            shutil.copyfile(src, outs[key])
        return 0
    day, night = open_shard(args.day), open_shard(args.night)
    ckpt = _resume_file(args.out_dir / "train_state", digest(args.day), digest(args.night))
    g_d2n, g_n2d = cyclegan.train_cyclegan(
        day["image"], night["image"], ngf=args.ngf, n_blocks=args.n_blocks, n_epochs=args.epochs,
        n_epochs_decay=args.epochs_decay, crop=args.crop, batch_size=args.batch_size, lr=args.lr,
        device=resolve_device(args.device), seed=args.seed, checkpoint_path=ckpt)
    cyclegan.save_generator(g_d2n, outs["day2night"])
    cyclegan.save_generator(g_n2d, outs["night2day"])
    ckpt.unlink(missing_ok=True)  # finished: a later run with other settings must start afresh
    log.info("wrote %s and %s", outs["day2night"], outs["night2day"])
    return 0


def add_translate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, required=True, metavar="F.zarr", help="frames shard to translate")
    p.add_argument("--generator", type=Path, required=True, metavar="G.pth", help="generator (reference format)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.zarr", help="synth shard, aligned with --frames")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def cmd_translate(args) -> int:
    import numpy as np

    from pipeline.devices import resolve_device
    from pipeline.shards import ShardWriter, digest, file_sha256, open_shard, provenance
    from pipeline.synth import cyclegan

    frames = open_shard(args.frames)
    G = cyclegan.load_generator(args.generator)
    device = resolve_device(args.device)
    images, target = frames["image"], np.asarray(frames["target"][:], bool)
    attrs = provenance("translate", {"ngf": G.ngf, "n_blocks": G.n_blocks},
                       {"frames": digest(args.frames), "generator": file_sha256(args.generator)})
    with ShardWriter(args.out, images.shape[0], attrs) as w:  # non-target rows stay 0
        w.fill_rows("image", images.shape[1:], np.uint8, target, desc="translate",
                    compute=lambda rows: cyclegan.translate(G, images.oindex[rows], args.batch_size, device))
    log.info("translated %d target rows of %s into %s", int(target.sum()), args.frames, args.out)
    return 0


def add_train_depth_teacher(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, required=True, metavar="TRAIN_DAY.zarr", help="day frames shard")
    p.add_argument("--out-dir", type=Path, required=True, metavar="WEIGHTS_DIR",
                   help="writes encoder.pth, depth.pth, pose_encoder.pth, pose.pth (Monodepth2 layout)")
    p.add_argument("--height", type=int, help="training height, multiple of 32 (default: the shard's)")
    p.add_argument("--width", type=int, help="training width, multiple of 32 (default: the shard's)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--scheduler-step", type=int, default=15, help="StepLR step in epochs (x0.1)")
    p.add_argument("--min-depth", type=float, default=0.1)
    p.add_argument("--max-depth", type=float, default=100.0)
    p.add_argument("--no-color-aug", action="store_true", help="disable colour-jitter augmentation")
    p.add_argument("--pretrained", type=Path, metavar="RESNET18.pth",
                   help="local torchvision ResNet-18 weights for both encoders (default: random init)")
    p.add_argument("--checkpoint", type=Path, help="resumable training state "
                   "(default: OUT_DIR.train_state.pt beside the folder; removed when training finishes)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--seed", type=int, default=0)


def cmd_train_depth_teacher(args) -> int:
    from pipeline.devices import resolve_device
    from pipeline.shards import digest, open_shard
    from pipeline.teachers import monodepth2

    frames = open_shard(args.frames)
    h, w = frames["image"].shape[1:3]
    ckpt = args.checkpoint or _resume_file(args.out_dir.with_name(args.out_dir.name + ".train_state"),
                                           digest(args.frames))
    monodepth2.train_depth_teacher(
        frames, height=args.height or h, width=args.width or w, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, scheduler_step=args.scheduler_step, min_depth=args.min_depth, max_depth=args.max_depth,
        device=resolve_device(args.device), seed=args.seed, out_dir=args.out_dir, checkpoint_path=ckpt,
        color_aug=not args.no_color_aug, pretrained_path=args.pretrained)
    ckpt.unlink(missing_ok=True)  # finished: a later run with other settings must start afresh
    log.info("wrote Monodepth2 weights to %s", args.out_dir)
    return 0


def add_depth_pseudolabels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, required=True, metavar="F.zarr", help="frames shard")
    p.add_argument("--weights", type=Path, required=True, metavar="WEIGHTS_DIR", help="Monodepth2 weights folder")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.zarr",
                   help="depth_teacher shard, aligned with --frames")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--min-depth", type=float, default=0.1)
    p.add_argument("--max-depth", type=float, default=100.0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def cmd_depth_pseudolabels(args) -> int:
    import numpy as np

    from pipeline.devices import resolve_device
    from pipeline.shards import ShardWriter, digest, file_sha256, open_shard, provenance
    from pipeline.teachers import monodepth2

    frames = open_shard(args.frames)
    device = resolve_device(args.device)
    model = monodepth2.load_weights(args.weights, device)
    teacher = {name: file_sha256(args.weights / name) for name in ("encoder.pth", "depth.pth")}
    attrs = provenance("depth_pseudolabels", {"min_depth": args.min_depth, "max_depth": args.max_depth,
                                              "teacher_height": model.height, "teacher_width": model.width},
                       {"frames": digest(args.frames), **teacher})
    attrs["teacher_sha256"] = teacher
    images, target = frames["image"], np.asarray(frames["target"][:], bool)
    with ShardWriter(args.out, images.shape[0], attrs) as w:  # non-target rows stay 0
        w.fill_rows("depth", tuple(images.shape[1:3]), np.float16, target, compress=True, desc="depth pseudo-labels",
                    compute=lambda rows: monodepth2.predict_depth(model, images.oindex[rows], args.batch_size, device,
                                                                  args.min_depth, args.max_depth))
    log.info("depth pseudo-labels for %d target rows of %s written to %s", int(target.sum()), args.frames, args.out)
    return 0


# ----------------------------------------------------------------------------- train verbs
def add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-dir", type=Path, required=True, help="reads {ds}/frames, synth, seg_teacher, depth_teacher")
    p.add_argument("--datasets", nargs="+", required=True, help="dataset folders under --results-dir, e.g. nuscenes robotcar")
    p.add_argument("--out-dir", type=Path, required=True, help="writes checkpoints/ (epoch_NNN.pt, last.pt) and tensorboard/")
    p.add_argument("--settings", type=_json_arg, required=True,
                   help='JSON {"model": {...}, "train": {...}, "variant", "switches": {...}, "seed", "datasets": {...}}')
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]; under torchrun each rank takes cuda:LOCAL_RANK")


def cmd_train(args) -> int:
    from pipeline import distributed
    from pipeline import train as tr
    from pipeline.data import TrainingSet, shard_paths
    from pipeline.devices import resolve_device
    from pipeline.model import build_model
    from pipeline.shards import digest

    s = tr.parse_settings(args.settings, args.datasets)
    info, device = distributed.init(resolve_device(args.device))
    try:
        tr.seed_everything(s.seed)
        model = build_model({"model": args.settings["model"]})
        sw = s.switches
        sets = {ds: TrainingSet(args.results_dir, ds, real_night=sw["real_night"], synthetic=sw["synthetic_night"],
                                teacher_depth=sw["distillation"], flip=s.flip, seed=s.seed) for ds in args.datasets}
        # the input shards' digests are part of the resume key: new teacher outputs never resume stale epochs
        inputs = {f"{ds}/{role}": digest(path) for ds in args.datasets
                  for role, path in shard_paths(args.results_dir, ds).items() if path.exists()}
        record = {**args.settings, "datasets_trained": list(args.datasets), "inputs": inputs}
        tr.train(model, sets, args.out_dir, s, device, info, record=record)
    finally:
        distributed.cleanup()
    return 0


# ----------------------------------------------------------------------------- eval verbs
def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, metavar="LAST.pt", help="student checkpoint of `train`")
    p.add_argument("--frames", type=Path, required=True, metavar="F.zarr", help="frames shard (target rows evaluated)")
    p.add_argument("--gt", type=Path, required=True, metavar="GT.zarr", help="gt_depth shard (`depth`, optional `labels`)")
    p.add_argument("--seg-teacher", type=Path, metavar="S.zarr",
                   help="seg_teacher shard: the seg reference when the gt has no labels; scored itself otherwise")
    p.add_argument("--dataset", required=True, choices=["nuscenes", "robotcar"])
    p.add_argument("--split", required=True, help="e.g. test_day, test_night")
    p.add_argument("--max-depth", type=float, required=True, help="evaluation cap in m (RobotCar 40, nuScenes 80)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--out", type=Path, required=True, metavar="METRICS.json")
    p.add_argument("--predictions", type=Path, required=True, metavar="PRED.h5",
                   help="h5: depth float16 at the gt size, seg uint8 at the reference size, frame_id, row")


def cmd_evaluate(args) -> int:
    from pipeline.devices import resolve_device
    from pipeline.evaluate.predict import run_evaluate

    if args.max_depth <= 0:
        raise ValueError(f"--max-depth must be > 0, got {args.max_depth}")
    r = run_evaluate(args.checkpoint, args.frames, args.gt, args.seg_teacher, dataset=args.dataset, split=args.split,
                     max_depth=args.max_depth, batch_size=args.batch_size, device=resolve_device(args.device),
                     out=args.out, predictions=args.predictions)
    log.info("%s %s: %d frames, abs_rel %.4f (constant depth %.4f, untrained network %.4f), mIoU %s "
             "(untrained %s) vs %s -> %s", args.dataset, args.split, r["n_frames"], r["depth"]["abs_rel"],
             r["baseline_constant"]["abs_rel"], r["baseline_untrained"]["depth"]["abs_rel"], r["seg"]["miou"],
             r["baseline_untrained"]["seg_miou"], r["seg_reference"], args.out)
    return 0


def add_evaluate_depth_teacher(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, type=Path, help="Monodepth2 weights folder")
    p.add_argument("--frames", required=True, type=Path)
    p.add_argument("--gt", required=True, type=Path)
    p.add_argument("--dataset", required=True, choices=["nuscenes", "robotcar"])
    p.add_argument("--split", required=True)
    p.add_argument("--max-depth", required=True, type=float, help="evaluation cap (m)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, type=Path)


def cmd_evaluate_depth_teacher(args) -> int:
    from pipeline.devices import resolve_device
    from pipeline.evaluate.predict import evaluate_depth_teacher

    r = evaluate_depth_teacher(args.weights, args.frames, args.gt, dataset=args.dataset, split=args.split,
                               max_depth=args.max_depth, batch_size=args.batch_size,
                               device=resolve_device(args.device), out=args.out)
    log.info("depth teacher on %s %s: abs_rel %.4f, constant-depth baseline %.4f (%d frames) -> %s", args.dataset,
             args.split, r["depth"]["abs_rel"], r["baseline_constant"]["abs_rel"], r["n_frames"], args.out)
    return 0


def add_efficiency(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, metavar="LAST.pt", help="student checkpoint of `train`")
    p.add_argument("--width", type=int, required=True, help="input width (paper Table 4: 576)")
    p.add_argument("--height", type=int, required=True, help="input height (paper Table 4: 320)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]; CPU latency is always measured")
    p.add_argument("--runs", type=int, default=20, help="timed forward passes per latency")
    p.add_argument("--warmup", type=int, default=3, help="untimed forward passes first")
    p.add_argument("--out", type=Path, required=True, metavar="EFF.json")


def cmd_efficiency(args) -> int:
    from pipeline.devices import resolve_device
    from pipeline.evaluate.efficiency import run_efficiency
    from pipeline.evaluate.predict import write_json_atomic

    r = run_efficiency(args.checkpoint, args.width, args.height, resolve_device(args.device), args.runs, args.warmup)
    write_json_atomic(args.out, r)
    for name, entry in r["models"].items():
        t = entry["modules"]["total"]
        log.info("%s: %.3f M params, %.3f GMACs (thop), %.3f GMACs (FlopCounterMode), CPU %.4f s/image", name,
                 t["params_m"], t["gmacs_thop"], t["gmacs_flop_counter"], entry["latency_s"]["cpu"])
    return 0


def add_eval_tables(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", type=Path, nargs="*", default=[], metavar="M.json",
                   help="evaluate outputs results/eval/{variant}/{ds}_{split}.json")
    p.add_argument("--efficiency", type=Path, metavar="EFF.json", help="efficiency output (Table 4)")
    p.add_argument("--teacher-metrics", type=Path, nargs="*", default=[], metavar="T.json",
                   help="evaluate-depth-teacher outputs (Monodepth2 rows of Tables 1-2)")
    p.add_argument("--out-dir", type=Path, required=True, help="writes tables.md, tables.csv, tables.tex")
    p.add_argument("--figures-dir", type=Path, required=True, help="writes qualitative_{ds}_{split}.png, abs_rel.png")
    p.add_argument("--predictions", type=Path, nargs="*", default=None, metavar="PRED.h5",
                   help="one per --metrics, in order (default: the .h5 beside each metrics file)")


def cmd_eval_tables(args) -> int:
    from pipeline.evaluate import figures, tables

    if args.predictions is not None and len(args.predictions) != len(args.metrics):
        raise ValueError(f"--predictions gives {len(args.predictions)} files for {len(args.metrics)} --metrics files")
    records = [tables.load_metrics(p) for p in args.metrics]
    eff = tables.load_efficiency(args.efficiency) if args.efficiency else None
    teachers = [tables.load_teacher_metrics(p) for p in args.teacher_metrics]
    built = tables.build_tables(records, eff, teachers)
    paths = tables.write_tables(built, args.out_dir, tables.header_text(records))
    preds = dict(zip(map(str, args.metrics), args.predictions)) if args.predictions is not None else None
    figs = figures.write_figures(records, args.figures_dir, tables.main_variant(tables.index_metrics(records)), preds)
    log.info("tables: %s; figures: %s", ", ".join(map(str, paths.values())), ", ".join(map(str, figs)) or "none")
    return 0



COMMANDS = {
    "fit-demo-seg-teacher": (add_fit_demo_seg_teacher, cmd_fit_demo_seg_teacher,
                             "fit the demo's small Mask2Former on label maps; save_pretrained folder"),
    "seg-pseudolabels": (add_seg_pseudolabels, cmd_seg_pseudolabels,
                         "Mask2Former top-k soft pseudo-labels for the target rows of a frames shard"),
    "demo-data": (add_demo_data, cmd_demo_data, "render the embedded demo dataset in the real on-disk format"),
    "splits": (add_splits, cmd_splits, "write results/{ds}/splits/{split}.txt (derived or from user split files)"),
    "extract-frames": (add_extract_frames, cmd_extract_frames, "decode, crop, resize a split into frames/{split}.zarr"),
    "gt-depth": (add_gt_depth, cmd_gt_depth, "LiDAR ground-truth depth (and label maps if present) per frame"),
    "inspect": (add_inspect, cmd_inspect, "print arrays, attrs and statistics of a shard; verify; preview"),
    "train-cyclegan": (add_train_cyclegan, cmd_train_cyclegan,
                       "train (or adopt pretrained) CycleGAN day<->night generators"),
    "translate": (add_translate, cmd_translate,
                  "translate the target rows of a frames shard with a CycleGAN generator"),
    "train-depth-teacher": (add_train_depth_teacher, cmd_train_depth_teacher,
                            "train the Monodepth2 day-depth teacher; write its official weights folder"),
    "depth-pseudolabels": (add_depth_pseudolabels, cmd_depth_pseudolabels,
                           "Monodepth2 depth (float16) for the target rows of a frames shard"),
    "train": (add_train, cmd_train, "train the student (DepthSegNet24); resumes; DDP under torchrun"),
    "evaluate": (add_evaluate, cmd_evaluate,
                 "depth (Monodepth2 protocol) and segmentation metrics of a student on a test split; predictions h5"),
    "evaluate-depth-teacher": (add_evaluate_depth_teacher, cmd_evaluate_depth_teacher,
                               "the Monodepth2 day teacher on a test split (Tables 1-2 Monodepth2 rows)"),
    "efficiency": (add_efficiency, cmd_efficiency,
                   "parameters, GMACs (thop and FlopCounterMode) and latency per module, with Monodepth2 (Table 4)"),
    "eval-tables": (add_eval_tables, cmd_eval_tables,
                    "the paper's Tables 1-5 with measured rows beside them (md, csv, tex) and figures"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (add, _, help_text) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _, run, _ = COMMANDS[args.verb]
    try:
        return int(run(args) or 0)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        # Expected failures (bad input, missing files, bad config): one clear line, no traceback.
        log.debug("traceback", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
