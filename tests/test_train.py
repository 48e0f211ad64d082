"""The student's training: dataset over the shards, the step (eq. 1-18, switches), the loop (overfit,
atomic checkpoints, exact resume), the `train` verb under torchrun DDP (CPU, gloo)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch
from torch.utils.data import DataLoader

from pipeline import train as train_mod
from pipeline.data import ROLES, TrainingSet
from pipeline.triplets import usable_targets
from pipeline.model import build_model
from pipeline.shards import open_shard, write_group
from pipeline.checkpoints import seed_everything
from pipeline.config import TrainSettings, validated
from pipeline.train import SKY, training_step

H, W, K_TOP = 64, 64, 3  # 64x32 is too small: the decoder reflection-pads the 1/32 features (need >= 2 px)
DS = "toy"
REPO = Path(__file__).resolve().parents[1]
MODEL_CFG = {"light": {"base_channels": 8}, "width": 64, "height": 64}


def _texture(rng, n_frames, brightness):
    """A smooth random texture seen by a camera panning 2 px per frame: (n, H, W, 3) uint8."""
    coarse = rng.random((H // 4, (W + 4 * n_frames) // 4, 3))
    big = np.kron(coarse, np.ones((4, 4, 1)))
    frames = np.stack([big[:, 2 * i:2 * i + W] for i in range(n_frames)])
    return np.clip(frames * 255 * brightness, 0, 255).astype(np.uint8)


def _split(root, split, sequences, brightness, synth_brightness, seed, with_depth):
    """frames, synth, seg_teacher (and depth_teacher) shards of one split; the first frame of the first
    sequence is a target WITHOUT a previous frame (must not be used)."""
    rng = np.random.default_rng(seed)
    images, prev, nxt, target, seq = [], [], [], [], []
    for s, n in enumerate(sequences):
        start = len(prev)
        images.append(_texture(rng, n, brightness))
        for i in range(n):
            prev.append(start + i - 1 if i > 0 else -1)
            nxt.append(start + i + 1 if i < n - 1 else -1)
            target.append(0 < i < n - 1 or (s == 0 and i == 0))
            seq.append(s)
    images = np.concatenate(images)
    n = len(images)
    target = np.array(target)
    K = np.tile(np.array([[0.58 * W, 0, W / 2 - 0.5], [0, 1.92 * H, H / 2 - 0.5], [0, 0, 1]], np.float32), (n, 1, 1))
    write_group(root / DS / "frames" / f"{split}.zarr", {
        "image": images, "prev": np.array(prev, np.int32), "next": np.array(nxt, np.int32), "target": target,
        "K": K, "sequence": np.array(seq, np.int32), "frame_id": np.array([f"{split}/{i}" for i in range(n)])})
    synth = np.where(target[:, None, None, None], np.clip(images * synth_brightness, 0, 255), 0).astype(np.uint8)
    write_group(root / DS / "synth" / f"{split}.zarr", {"image": synth})
    cls = np.zeros((n, H, W, K_TOP), np.uint8)
    cls[:, : H // 3, :, 0] = SKY                      # top-1: sky on top, building, road below
    cls[:, H // 3: 2 * H // 3, :, 0] = 2
    cls[:, 2 * H // 3:, :, 0] = 0
    cls[..., 1], cls[..., 2] = 13, 8
    prob = np.tile(np.array([200, 40, 15], np.uint8), (n, H, W, 1))
    write_group(root / DS / "seg_teacher" / f"{split}.zarr", {"topk_class": cls, "topk_prob": prob})
    if with_depth:
        rows = np.linspace(8.0, 1.0, H, dtype=np.float32)[None, :, None]
        depth = np.where(target[:, None, None], np.broadcast_to(rows, (n, H, W)), 0).astype(np.float16)
        write_group(root / DS / "depth_teacher" / f"{split}.zarr", {"depth": depth}, compress=["depth"])


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the timings are per core, and the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    _split(root, "train_day", [5, 5], 1.0, 0.3, seed=1, with_depth=True)   # 6 usable targets (+1 without prev)
    _split(root, "train_night", [6], 0.25, 3.0, seed=2, with_depth=False)  # 4 usable (+1 without prev)
    return root


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model({"model": MODEL_CFG})


def shard_paths(results) -> dict:
    """role -> shard path, as the train_student rule passes them."""
    stage = {"frames": "frames", "synth": "synth", "seg": "seg_teacher", "depth": "depth_teacher"}
    return {role: results / DS / stage[role.split("_")[1]] / f"train_{role.split('_')[0]}.zarr" for role in ROLES}


def _set(results, real_night=True, synthetic=True, teacher_depth=True, flip=False, seed=0):
    return TrainingSet(shard_paths(results), DS, real_night=real_night, synthetic=synthetic,
                       teacher_depth=teacher_depth, flip=flip, seed=seed)


def _batch(results, n=2, **kw):
    ds = _set(results, **kw)
    return next(iter(DataLoader(ds, batch_size=n, shuffle=False)))


# ------------------------------------------------------------------------------------------ data

def test_dataset_items_rows_and_shapes(results):
    ds = _set(results)
    assert len(ds) == 6  # targets with both neighbours; the target without a previous frame is left out
    day = open_shard(results / DS / "frames" / "train_day.zarr")
    assert list(ds.day_rows) == list(usable_targets(day)) == [1, 2, 3, 6, 7, 8]
    item = ds[0]
    for key in ("day_prev", "day", "day_next", "syn_night", "night_prev", "night", "night_next", "syn_day"):
        assert item[key].shape == (3, H, W) and item[key].dtype == torch.float32, key
        assert 0 <= float(item[key].min()) and float(item[key].max()) <= 1, key
    assert item["day_topk_class"].shape == (K_TOP, H, W) and item["day_topk_class"].dtype == torch.uint8
    assert item["day_teacher_depth"].shape == (1, H, W) and float(item["day_teacher_depth"].max()) == 8.0
    row = item["day_row"]
    assert torch.equal(item["day"], torch.from_numpy(day["image"][row]).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["day_prev"], torch.from_numpy(day["image"][row - 1]).permute(2, 0, 1).float() / 255)
    assert item["night_row"] in (1, 2, 3, 4)
    # synthetic night is the twin of the SAME row, darker
    assert float(item["syn_night"].mean()) < 0.5 * float(item["day"].mean())


def test_read_only_shard_rows_become_tensors_without_a_warning():
    """`RowReader` rows are read-only views of the bytes read; `torch.from_numpy` warns about them once a
    process (a warning in every training log). Run in a fresh interpreter, as torch warns only once."""
    code = ("import numpy as np, torch\n"
            "from pipeline.data import _image, _labels\n"
            "row = np.frombuffer(bytes(range(24)), np.uint8).reshape(1, 2, 4, 3)\n"
            "assert not row.flags.writeable\n"
            "img, lab = _image(row, 0), _labels(row, 0)\n"
            "assert img.shape == (3, 2, 4) and abs(float(img[2, 1, 3]) - 23 / 255) < 1e-7\n"
            "assert lab.shape == (3, 2, 4) and int(lab[1, 0, 2]) == 7 and lab.is_contiguous()\n"
            "assert _labels(row[..., :1], 0).shape == (1, 2, 4)\n")  # k = 1: the transpose is contiguous
    run = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_dataset_night_pick_is_seeded_per_epoch_and_index(results):
    ds = _set(results, seed=3)
    picks0 = [ds[i]["night_row"] for i in range(len(ds))]
    assert picks0 == [ds[i]["night_row"] for i in range(len(ds))]  # reproducible
    ds.set_epoch(1)
    picks1 = [ds[i]["night_row"] for i in range(len(ds))]
    assert picks0 != picks1


def test_dataset_flip_is_consistent_and_flips_cx(results):
    plain = _set(results, flip=False, seed=0)
    flip = _set(results, flip=True, seed=0)
    flags = []
    for epoch in range(4):
        flip.set_epoch(epoch)
        flags += [flip[i]["flipped"] for i in range(len(flip))]
    assert 0.2 < np.mean(flags) < 0.8  # p = 0.5 per item, seeded by (seed, epoch, index)
    flipped = [i for i in range(len(flip)) if flip[i]["flipped"]]
    plain.set_epoch(3)
    i = flipped[0]
    a, b = plain[i], flip[i]
    for key in ("day_prev", "day", "day_next", "syn_night", "night", "syn_day", "day_topk_class",
                "night_topk_prob", "day_teacher_depth"):
        assert torch.equal(b[key], a[key].flip(-1)), key
    for side in ("day", "night"):
        assert float(b[f"{side}_K"][0, 2]) == pytest.approx(W - 1 - float(a[f"{side}_K"][0, 2]))
        assert torch.equal(b[f"{side}_K"][1], a[f"{side}_K"][1])


def test_dataset_switches_skip_reads_and_workers_match(results):
    small = _set(results, real_night=False, synthetic=False, teacher_depth=False)
    item = small[0]
    assert "night" not in item and "syn_night" not in item and "day_teacher_depth" not in item
    ds = _set(results)
    a = next(iter(DataLoader(ds, batch_size=3, num_workers=0)))
    b = next(iter(DataLoader(ds, batch_size=3, num_workers=2)))
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_dataset_errors_on_misaligned_shards(tmp_path, results):
    import shutil
    shutil.copytree(results / DS, tmp_path / DS)
    write_group(tmp_path / DS / "synth" / "train_day.zarr", {"image": np.zeros((3, H, W, 3), np.uint8)})
    with pytest.raises(ValueError, match="row-aligned"):
        _set(tmp_path)


# ------------------------------------------------------------------------------------------ step

ALL_TERMS = {"light_day", "light_night", "light", "sf_day", "sf_syn", "sf_night", "sf", "cst_real", "cst_syn",
             "cst", "ds", "seg_day", "seg_syn", "seg_night", "seg", "total"}


@pytest.mark.parametrize("switch, removed", [
    (None, set()),
    ("distillation", {"ds"}),
    ("real_night", {"sf_night", "cst_syn", "seg_night"}),
    ("synthetic_night", {"sf_syn", "cst_real", "cst_syn", "cst", "seg_syn"}),
    ("light", {"light_day", "light_night", "light"}),
])
def test_each_switch_removes_its_terms(results, switch, removed):
    model = _model()
    switches = {switch: False} if switch else {}
    batch = _batch(results, n=1)
    with torch.no_grad():
        terms = training_step(batch, model, switches)
    assert set(terms) == ALL_TERMS - removed
    assert all(torch.isfinite(v) for v in terms.values())
    w = {"light": 0.01, "sf": 1.0, "cst": 1.0, "ds": 1.0, "seg": 1.0}
    expected = sum(w[k] * terms[k] for k in w if k in terms)
    assert float(terms["total"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(terms["sf"]) == pytest.approx(float(terms["sf_day"] + terms.get("sf_syn", 0)
                                                      + 0.1 * terms.get("sf_night", 0)), rel=1e-6)


def test_without_real_night_the_step_needs_no_night_inputs(results):
    batch = _batch(results, n=1, real_night=False)
    assert "night" not in batch
    with torch.no_grad():
        terms = training_step(batch, _model(), {"real_night": False})
    assert "seg_night" not in terms and "light_night" in terms  # the synthetic night still has eq. 2


def test_step_errors_name_the_problem(results):
    batch = _batch(results, n=1)
    del batch["night_prev"]
    with pytest.raises(KeyError, match="night_prev"):
        training_step(batch, _model())
    with pytest.raises(ValueError, match="unknown ablation switches"):
        training_step(_batch(results, n=1), _model(), {"nightmode": False})


def test_light_switch_leaves_light_net_without_gradient(results):
    model = _model()
    terms = training_step(_batch(results, n=1), model, {"light": False})
    terms["total"].backward()
    assert all(p.grad is None for p in model.light.parameters())
    unused = {"encoder.encoder.fc.weight", "encoder.encoder.fc.bias"}  # Monodepth2's unused fc layer
    assert all((p.grad is not None) == (n not in unused) for n, p in model.pose.named_parameters())
    assert all(p.grad is not None for p in model.seg_decoder.parameters())  # every scale's head is trained


def test_overfitting_one_batch_halves_the_loss(results):
    torch.manual_seed(0)
    model = _model()
    batch = _batch(results, n=1)
    opt = train_mod.make_optimizer(model, 5e-4)
    losses = []
    t0 = time.perf_counter()
    for _ in range(100):
        terms = training_step(batch, model)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        losses.append(terms["total"].item())
    dt = time.perf_counter() - t0
    print(f"\noverfit 100 steps: total {losses[0]:.4f} -> {losses[-1]:.4f} (x{losses[-1] / losses[0]:.3f}), "
          f"{dt:.1f} s, {1000 * dt / 100:.0f} ms/step; final terms "
          + ", ".join(f"{k} {v.item():.4f}" for k, v in terms.items()))
    assert losses[-1] <= 0.5 * losses[0]


# ------------------------------------------------------------------------------------------ loop

def _settings(**kw):
    train = {**validated(yaml.safe_load((REPO / "config.yaml").read_text()))["train"], "epochs": 2,
             "batch_size": 2, "max_steps_per_epoch": 2, "flip": True, "image_every": 1, **kw}
    return TrainSettings.from_config(train, 0, {})


def _run(results, out, settings, record=None, state_every_s=0.0):
    model = _model(seed=123)
    seed_everything(settings.seed)
    sets = {DS: _set(results, flip=settings.flip, seed=settings.seed)}
    record = record or {"train": {"epochs": settings.epochs}, "seed": settings.seed}
    train_mod.train(model, sets, out / "last.pt", out / "tensorboard", out / "state", settings, torch.device("cpu"),
                    record=record, state_every_s=state_every_s)
    return model


def _states(out):
    return sorted(p.name for p in (out / "state").rglob("epoch_*.pt"))


def test_tensorboard_holds_the_epoch_mean_of_every_loss_term(results, tmp_path):
    """The training curves (pipeline.curves): tag epoch/<term> at step = epoch is the mean of that
    term's per-step values loss/<term> over the epoch's steps, for every term of eq. 18; epoch/lr follows
    the StepLR schedule."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    from pipeline.curves import read_epoch_scalars

    s = _settings(epochs=2, scheduler_step=1)  # 2 steps per epoch, lr x0.1 after epoch 1
    _run(results, tmp_path, s)
    curves = read_epoch_scalars(tmp_path / "tensorboard")
    assert {"total", "light", "sf", "cst", "ds", "seg", "lr"} <= set(curves)
    assert curves["lr"] == [(1, pytest.approx(s.lr)), (2, pytest.approx(s.lr * 0.1))]
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={SCALARS: 0})
    acc.Reload()
    for term, points in curves.items():
        if term == "lr":
            continue
        steps = {ev.step: ev.value for ev in acc.Scalars(f"loss/{term}")}
        assert sorted(steps) == [1, 2, 3, 4], term
        expected = [(1, (steps[1] + steps[2]) / 2), (2, (steps[3] + steps[4]) / 2)]
        assert [e for e, _ in points] == [1, 2]
        assert [v for _, v in points] == pytest.approx([v for _, v in expected], rel=1e-5), term


def test_resume_after_a_kill_ends_with_identical_weights(results, tmp_path, monkeypatch):
    # 3 epochs with the learning rate stepped after epoch 2: the resumed run must restore the schedule too
    # (a fresh StepLR would keep epoch 3 at the initial rate)
    s = _settings(epochs=3, scheduler_step=2)
    full = _run(results, tmp_path / "full", s)
    last = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["global_step"] == 6
    assert last["scheduler"]["last_epoch"] == 3 and last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        s.lr * 0.1)
    assert not (tmp_path / "full" / "state").exists()  # a finished run clears its resumable state
    assert any((tmp_path / "full" / "tensorboard").iterdir())

    # killed in the first step of epoch 2: the epoch-1 state is there, last.pt is not
    real_step, calls = train_mod.training_step, []

    def dying_step(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kw)

    monkeypatch.setattr(train_mod, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        _run(results, tmp_path / "killed", s)
    killed = tmp_path / "killed"
    assert _states(killed) == ["epoch_001.pt"]
    assert not (killed / "last.pt").exists()
    assert not list(killed.rglob(".*tmp*"))
    calls.clear()
    monkeypatch.setattr(train_mod, "training_step", lambda *a, **kw: calls.append(1) or real_step(*a, **kw))

    resumed = _run(results, killed, s)
    assert len(calls) == 4  # only epochs 2 and 3 ran
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"weights differ after resume: {diff[:5]}"
    assert torch.load(killed / "last.pt", weights_only=True)["global_step"] == 6


def test_student_learning_rate_is_steplr_by_epoch(results, tmp_path, monkeypatch):
    """The rate of epoch k is lr * gamma ** (k // scheduler_step) (Monodepth2's StepLR), read from the optimizer
    as each epoch starts."""
    lrs, real_epoch = [], train_mod.run_epoch

    def spy(net, model, loaders, optimizer, *args, **kw):
        lrs.append(optimizer.param_groups[0]["lr"])
        return real_epoch(net, model, loaders, optimizer, *args, **kw)

    monkeypatch.setattr(train_mod, "run_epoch", spy)
    s = _settings(epochs=5, max_steps_per_epoch=1, lr=1e-3, scheduler_step=2, scheduler_gamma=0.3)
    _run(results, tmp_path, s)
    assert lrs == pytest.approx([1e-3 * 0.3 ** (k // 2) for k in range(5)], rel=1e-12)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["scheduler"]["last_epoch"] == 5


def test_color_aug_feeds_jittered_images_to_the_networks_and_originals_to_the_losses(results, monkeypatch):
    """train.color_aug off: the networks see exactly the loaded images. On (fixed seed): the depth/seg input and
    PoseNet's inputs differ from the photometric target exactly in the items whose jitter was drawn."""
    from pipeline.data import NETWORK_IMAGES

    model = _model()
    net_in, pose_in, targets = [], [], []
    model.register_forward_pre_hook(lambda module, args: net_in.append(args[0].detach().clone()))
    real_transform = model.pose.transform
    monkeypatch.setattr(model.pose, "transform", lambda t, s, **kw: pose_in.append(t.detach().clone())
                        or real_transform(t, s, **kw))
    real_loss = train_mod.self_supervised_loss
    monkeypatch.setattr(train_mod, "self_supervised_loss",
                        lambda target, *a, **kw: targets.append(target.detach().clone()) or real_loss(target, *a, **kw))
    for aug in (False, True):
        ds = TrainingSet(shard_paths(results), DS, real_night=True, synthetic=True, teacher_depth=True, flip=True,
                         seed=0, color_aug=aug)
        batch = next(iter(DataLoader(ds, batch_size=len(ds), shuffle=False)))
        net_in.clear(), pose_in.clear(), targets.clear()
        with torch.no_grad():
            training_step(batch, model)
        b = batch["day"].shape[0]
        day_in, day_pose_in, day_target = net_in[0][:b], pose_in[0][:b], targets[0]
        assert torch.equal(day_target, batch["day"])  # the photometric target is the loaded image
        if not aug:
            assert not any(k.startswith("aug_") for k in batch) and "color_aug" not in batch
            assert torch.equal(net_in[0], torch.cat([batch[n] for n in ("day", "syn_night", "night", "syn_day")]))
            assert torch.equal(day_pose_in, batch["day"])
            continue
        drawn = batch["color_aug"].tolist()
        assert 0 < sum(drawn) < len(drawn), drawn  # the seed gives both kinds of items
        assert {k[4:] for k in batch if k.startswith("aug_")} == set(NETWORK_IMAGES)
        for i, jittered in enumerate(drawn):
            differs = [not torch.equal(day_in[i], day_target[i]), not torch.equal(day_pose_in[i], day_target[i]),
                       not torch.equal(net_in[0][2 * b + i], batch["night"][i])]
            assert differs == [jittered] * 3, (i, jittered, differs)


def test_only_the_newest_states_are_kept_and_other_settings_never_resume(results, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod.TrainingState, "clear", lambda self: None)  # look before the run clears
    _run(results, tmp_path, _settings(epochs=3, max_steps_per_epoch=1, keep_checkpoints=2))
    assert _states(tmp_path) == ["epoch_002.pt", "epoch_003.pt"]
    calls = []
    real_step = train_mod.training_step
    monkeypatch.setattr(train_mod, "training_step", lambda *a, **kw: calls.append(1) or real_step(*a, **kw))
    _run(results, tmp_path, _settings(epochs=3, max_steps_per_epoch=1, keep_checkpoints=2),
         record={"train": {"lr": 1.0}})  # other settings: starts afresh, the old states are removed
    assert len(calls) == 3 and _states(tmp_path) == ["epoch_002.pt", "epoch_003.pt"]
    assert len(list((tmp_path / "state").iterdir())) == 1


def test_states_are_written_at_most_every_state_every_s(results, tmp_path, monkeypatch):
    """A fake clock: each step takes 25 s. With states at most every 60 s, 4 one-step epochs write one
    state, after epoch 3 (75 s); with 0 s, every epoch writes one. The weights do not depend on it."""
    from pipeline import checkpoints

    clock = [1000.0]
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(train_mod.TrainingState, "clear", lambda self: None)  # look before the run clears
    real_step = train_mod.training_step

    def step_of_25_s(*a, **kw):
        clock[0] += 25.0
        return real_step(*a, **kw)

    monkeypatch.setattr(train_mod, "training_step", step_of_25_s)
    s = _settings(epochs=4, max_steps_per_epoch=1, keep_checkpoints=0)
    sparse = _run(results, tmp_path / "sparse", s, state_every_s=60.0)
    assert _states(tmp_path / "sparse") == ["epoch_003.pt"]
    dense = _run(results, tmp_path / "dense", s, state_every_s=0.0)
    assert _states(tmp_path / "dense") == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt", "epoch_004.pt"]
    a, b = sparse.state_dict(), dense.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="interval between resumable states must be >= 0"):
        checkpoints.TrainingState(tmp_path / "bad", {}, every_s=-1)


# ------------------------------------------------------------------------------------------ settings + CLI

def _cli_settings(**train):
    cfg = validated(yaml.safe_load((REPO / "config.yaml").read_text()))
    t = {k: v for k, v in cfg["train"].items() if k not in ("variants", "ablations", "datasets", "gpus")}
    t.update({"epochs": 1, "batch_size": 1, "max_steps_per_epoch": 2, **train})
    return {"model": MODEL_CFG, "train": t, "variant": "full", "switches": {}, "seed": 0}


def _cli(results, out, settings):
    return ["train", "--shards", json.dumps({DS: {k: str(v) for k, v in shard_paths(results).items()}}),
            "--out", str(out / "last.pt"), "--log-dir", str(out / "tensorboard"), "--state-dir", str(out / "state"),
            "--settings", json.dumps(settings), "--device", "cpu"]


def test_settings_come_from_the_schema_validated_config():
    s = TrainSettings.from_config(_cli_settings()["train"], 0, {})
    assert (s.epochs, s.batch_size, s.max_steps_per_epoch, s.switches["real_night"]) == (1, 1, 2, True)
    for key, value in [("epochs", 0), ("batch_size", "2"), ("learning_rate", 1), ("keep_checkpoints", -1)]:
        with pytest.raises(ValueError, match=f"train"):
            validated({"train": {key: value}})
    with pytest.raises(ValueError, match="switches"):
        TrainSettings.from_config(_cli_settings()["train"], 0, {"RN": False})


def test_torchrun_two_ranks_ddp_on_cpu(results, tmp_path):
    out = tmp_path / "train" / "full"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipeline", *_cli(results, out, _cli_settings())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    print(f"\ntorchrun 2 ranks: {time.perf_counter() - t0:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "last.pt").is_file() and not (out / "state").exists()
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["global_step"] == 2 and last["epoch"] == 1
    assert last["settings"]["variant"] == "full"
    assert not any(k.startswith("module.") for k in last["model"])  # the bare DepthSegNet's keys
    model = build_model({"model": last["settings"]["model"]})
    model.load_state_dict(last["model"])  # loads strictly
    assert proc.stderr.count("training done") == 1  # rank 0 only
    assert len(list((out / "tensorboard").iterdir())) == 1


def test_cli_does_not_resume_epochs_trained_on_other_inputs(results, tmp_path, caplog, monkeypatch):
    """Snakemake re-runs `train` when a teacher shard changes; a killed run's epochs must not be resumed."""
    import logging
    import shutil

    from pipeline import checkpoints
    from pipeline.cli import main
    monkeypatch.setattr(checkpoints, "STATE_EVERY_S", 0.0)  # a state after every epoch, not every 5 minutes
    local = tmp_path / "results"
    shutil.copytree(results, local)
    out = tmp_path / "run"
    argv = _cli(local, out, _cli_settings(epochs=2, max_steps_per_epoch=1))
    real_step, calls = train_mod.training_step, []

    def dying_step(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kw)

    monkeypatch.setattr(train_mod, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert _states(out) == ["epoch_001.pt"]
    monkeypatch.setattr(train_mod, "training_step", real_step)
    depth = open_shard(local / DS / "depth_teacher" / "train_day.zarr")["depth"][:]
    write_group(local / DS / "depth_teacher" / "train_day.zarr", {"depth": depth * 2}, compress=["depth"])
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "resumable state of other settings or input data" in caplog.text  # the stale epoch was dropped
    second = torch.load(out / "last.pt", weights_only=True)
    assert second["global_step"] == 2  # both epochs trained afresh
    assert set(second["settings"]["inputs"]) >= {f"{DS}/day_frames", f"{DS}/day_depth", f"{DS}/night_seg"}


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    """torch reports a full disk as "enforce fail at inline_container.cc ... unexpected pos": the save
    raises OSError naming the file and the free space, and the checkpoint already there is untouched."""
    from pipeline import checkpoints

    path = tmp_path / "state" / "epoch_001.pt"
    checkpoints.save({"w": torch.arange(4.0)}, path)
    before = path.read_bytes()

    def full_disk(obj, f):
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 156317376 vs 156317268")

    monkeypatch.setattr(checkpoints.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write .*epoch_001\.pt: .*unexpected pos.* GB free"):
        checkpoints.save({"w": torch.zeros(4)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch_001.pt"]  # no temporary left
    monkeypatch.undo()
    assert torch.equal(checkpoints.load(path)["w"], torch.arange(4.0))
