"""Monodepth2 teacher: official weights layout (strict), round trip, tiny training + resume, inference, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from pipeline import cli
from pipeline.checkpoints import TrainingState
from pipeline.curves import read_epoch_scalars
from pipeline.datasets.images import CropResize
from pipeline.shards import file_sha256, open_shard, write_group
from pipeline.teachers.monodepth2 import (flip_K, load_batch, load_weights, predict_depth, save_weights,
                                          train_depth_teacher)

NUM_CH_ENC = (64, 64, 128, 256, 512)
NUM_CH_DEC = (16, 32, 64, 128, 256)


def _random_like(shape, gen):
    return torch.rand(shape, generator=gen) + 0.5  # positive: valid BatchNorm variances too


def official_encoder_state(num_input_images: int, gen) -> dict:
    """Monodepth2's ResnetEncoder state dict: torchvision ResNet-18 keys under `encoder.` (incl. fc)."""
    net = torchvision.models.resnet18(weights=None)
    state = {}
    for k, v in net.state_dict().items():
        shape = (64, 3 * num_input_images, 7, 7) if k == "conv1.weight" else v.shape
        state[f"encoder.{k}"] = v.clone() if k.endswith("num_batches_tracked") else _random_like(shape, gen)
    return state


def official_depth_shapes() -> dict[str, tuple]:
    """Monodepth2 DepthDecoder keys, written out from its OrderedDict order: upconv (4,0), (4,1), ...,
    (0,1) as ConvBlocks `decoder.{i}.conv.conv.*`, then dispconv 0..3 as `decoder.{10+s}.conv.*`."""
    shapes, i = {}, 0
    for level in range(4, -1, -1):
        c_in = NUM_CH_ENC[-1] if level == 4 else NUM_CH_DEC[level + 1]
        for c in (c_in, NUM_CH_DEC[level] + (NUM_CH_ENC[level - 1] if level > 0 else 0)):
            shapes[f"decoder.{i}.conv.conv.weight"] = (NUM_CH_DEC[level], c, 3, 3)
            shapes[f"decoder.{i}.conv.conv.bias"] = (NUM_CH_DEC[level],)
            i += 1
    for s in range(4):
        shapes[f"decoder.{10 + s}.conv.weight"] = (1, NUM_CH_DEC[s], 3, 3)
        shapes[f"decoder.{10 + s}.conv.bias"] = (1,)
    return shapes


POSE_SHAPES = {"net.0.weight": (256, 512, 1, 1), "net.0.bias": (256,), "net.1.weight": (256, 256, 3, 3),
               "net.1.bias": (256,), "net.2.weight": (256, 256, 3, 3), "net.2.bias": (256,),
               "net.3.weight": (12, 256, 1, 1), "net.3.bias": (12,)}


def write_official_folder(folder, pose: bool = True, seed: int = 0) -> dict[str, dict]:
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"encoder.pth": {**official_encoder_state(1, gen), "height": 192, "width": 640, "use_stereo": False},
             "depth.pth": {k: _random_like(s, gen) for k, s in official_depth_shapes().items()}}
    if pose:
        files["pose_encoder.pth"] = official_encoder_state(2, gen)
        files["pose.pth"] = {k: _random_like(s, gen) for k, s in POSE_SHAPES.items()}
    for name, state in files.items():
        torch.save(state, folder / name)
    return files


def _assert_state_equal(module, reference: dict):
    got = module.state_dict()
    assert set(got) == {k for k in reference if k not in ("height", "width", "use_stereo")}
    for k, v in got.items():
        assert torch.equal(v, reference[k]), k


def test_official_layout_loads_strictly(tmp_path):
    assert sum(np.prod(s) for s in official_depth_shapes().values()) == 3_152_724  # DESIGN: 3.153 M
    files = write_official_folder(tmp_path / "w")
    assert files["encoder.pth"]["encoder.fc.weight"].shape == (1000, 512)
    model = load_weights(tmp_path / "w")
    assert (model.height, model.width, model.use_stereo) == (192, 640, False)
    _assert_state_equal(model.encoder, files["encoder.pth"])
    _assert_state_equal(model.depth_decoder, files["depth.pth"])
    _assert_state_equal(model.pose_encoder, files["pose_encoder.pth"])
    _assert_state_equal(model.pose_decoder, files["pose.pth"])
    assert not model.training
    out = model(torch.rand(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {("disp", s): (1, 1, 64 >> s, 96 >> s) for s in range(4)}


def test_depth_only_folder_loads_without_pose(tmp_path):
    write_official_folder(tmp_path / "w", pose=False)
    model = load_weights(tmp_path / "w")
    assert model.pose is None and model.pose_encoder is None


@pytest.mark.parametrize("name,key", [("depth.pth", "decoder.3.conv.conv.weight"),
                                      ("encoder.pth", "encoder.layer2.0.bn1.running_mean"),
                                      ("pose.pth", "net.2.bias")])
def test_renamed_key_fails_naming_key_and_file(tmp_path, name, key):
    write_official_folder(tmp_path / "w")
    state = torch.load(tmp_path / "w" / name, weights_only=True)
    state[key + "_renamed"] = state.pop(key)
    torch.save(state, tmp_path / "w" / name)
    with pytest.raises(ValueError) as err:
        load_weights(tmp_path / "w")
    msg = str(err.value)
    assert name in msg and f"'{key}'" in msg and f"'{key}_renamed'" in msg


def test_wrong_shape_and_missing_files_fail(tmp_path):
    write_official_folder(tmp_path / "w")
    state = torch.load(tmp_path / "w" / "pose.pth", weights_only=True)
    state["net.3.weight"] = torch.zeros(6, 256, 1, 1)
    torch.save(state, tmp_path / "w" / "pose.pth")
    with pytest.raises(ValueError, match="pose.pth"):
        load_weights(tmp_path / "w")
    (tmp_path / "w" / "pose.pth").unlink()
    with pytest.raises(FileNotFoundError, match="pose.pth"):
        load_weights(tmp_path / "w")
    with pytest.raises(FileNotFoundError, match="encoder.pth"):
        load_weights(tmp_path / "empty")


def test_save_load_round_trip_is_bit_exact(tmp_path):
    write_official_folder(tmp_path / "a", seed=3)
    model = load_weights(tmp_path / "a")
    paths = save_weights(model, tmp_path / "b", height=320, width=576)
    assert sorted(p.name for p in paths) == ["depth.pth", "encoder.pth", "pose.pth", "pose_encoder.pth"]
    enc = torch.load(tmp_path / "b" / "encoder.pth", weights_only=True)
    assert (enc["height"], enc["width"], enc["use_stereo"]) == (320, 576, False)
    assert "encoder.fc.bias" in enc
    again = load_weights(tmp_path / "b")
    assert (again.height, again.width) == (320, 576)
    for a, b in zip(model.state_dict().items(), again.state_dict().items()):
        assert a[0] == b[0] and torch.equal(a[1], b[1]), a[0]


def _frames_arrays(n=6, h=64, w=64, seed=0, target=None):
    """One sequence of n frames (64x64: the smallest size Monodepth2 runs at): a textured pattern
    drifting right, prev/next links, a pinhole K."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w + 2 * n, 3), dtype=np.uint8)
    images = np.stack([base[:, 2 * i:2 * i + w] for i in range(n)])
    K = np.tile(np.array([[0.58 * w, 0, w / 2], [0, 1.92 * h, h / 2], [0, 0, 1]], np.float32), (n, 1, 1))
    prev = np.arange(-1, n - 1, dtype=np.int32)
    nxt = np.arange(1, n + 1, dtype=np.int32)
    nxt[-1] = -1
    return {"image": images, "prev": prev, "next": nxt, "K": K,
            "target": np.ones(n, bool) if target is None else np.asarray(target, bool),
            "sequence": np.zeros(n, np.int32)}


def test_trainable_rows_need_target_and_both_neighbours():
    from pipeline.triplets import usable_targets

    arrays = _frames_arrays(target=[True, True, False, True, True, True])
    assert usable_targets(arrays).tolist() == [1, 3, 4]


def test_intrinsics_helpers():
    K = torch.tensor([[[100.0, 0, 30], [0, 50, 20], [0, 0, 1]]])
    assert flip_K(K, 64)[0, 0, 2] == 33.0 and flip_K(K, 64)[0, 1, 2] == 20.0
    # the one crop/resize mapping (pixel centres): u' = (u + 0.5) * s - 0.5
    resized = CropResize.resize((60, 40), (120, 20)).intrinsics(K)[0]
    assert torch.allclose(resized, torch.tensor([[200.0, 0, 60.5], [0, 25, 9.75], [0, 0, 1]]))


def test_load_batch_gathers_neighbours_and_augments_inputs_only():
    arrays = _frames_arrays()
    batch = load_batch(arrays, np.array([2, 4]), 64, 64)
    assert torch.equal(batch["prev"][0], torch.from_numpy(arrays["image"][1]).permute(2, 0, 1).float() / 255)
    assert torch.equal(batch["next"][1], torch.from_numpy(arrays["image"][5]).permute(2, 0, 1).float() / 255)
    aug = load_batch(arrays, np.array([2, 4] * 4), 64, 64, rng=np.random.default_rng(0))
    flipped = [b for b in range(8) if aug["K"][b, 0, 2] != arrays["K"][0, 0, 2]]
    assert 0 < len(flipped) < 8  # some samples mirrored, with cx -> 63 - cx
    assert all(torch.equal(aug["target"][b], batch["target"][b % 2].flip(-1)) for b in flipped)
    jittered = [b for b in range(8) if not torch.equal(aug["aug_target"][b], aug["target"][b])]
    assert 0 < len(jittered) < 8


def test_tiny_training_writes_official_folder_and_resumes(tmp_path):
    frames = write_group(tmp_path / "frames.zarr", _frames_arrays())
    g = open_shard(frames)
    kw = dict(height=64, width=64, batch_size=4, lr=1e-4, scheduler_step=1, device="cpu", seed=0, progress=False)
    state = TrainingState(tmp_path / "state", {"lr": 1e-4}, keep=0)
    train_depth_teacher(g, epochs=1, out_dir=tmp_path / "w1", state=state, **kw)  # 4 rows: 1 step
    assert sorted(p.name for p in (tmp_path / "w1").iterdir()) == ["depth.pth", "encoder.pth", "pose.pth",
                                                                    "pose_encoder.pth"]
    saved = state.latest()
    assert saved["epoch"] == 1 and saved["scheduler"]["last_epoch"] == 1
    model = train_depth_teacher(g, epochs=2, out_dir=tmp_path / "w2", state=state, **kw)
    assert state.latest()["epoch"] == 2 and sorted(state.epochs()) == [1, 2]
    loaded = load_weights(tmp_path / "w2")
    assert (loaded.height, loaded.width) == (64, 64)
    assert torch.equal(loaded.depth_decoder.state_dict()["decoder.0.conv.conv.weight"],
                       model.depth_decoder.state_dict()["decoder.0.conv.conv.weight"])
    first = load_weights(tmp_path / "w1").depth_decoder.state_dict()["decoder.0.conv.conv.weight"]
    assert not torch.equal(first, loaded.depth_decoder.state_dict()["decoder.0.conv.conv.weight"])
    other = TrainingState(tmp_path / "state", {"lr": 1e-3})  # other settings: the old states are stale
    assert other.latest() is None and not state.dir.exists()


def test_automask_switch_reaches_the_loss_and_only_ever_lowers_it(tmp_path, monkeypatch):
    """`automask=False` (Monodepth2's --disable_automasking) takes the photometric minimum over the warped
    sources only: on the same batch and network its loss is at least the auto-masked one (whose per-pixel
    minimum also sees the identity losses), and above it where an unwarped source wins somewhere (an
    untrained network). The switch reaches every training step."""
    from pipeline.teachers import monodepth2 as md

    frames = open_shard(write_group(tmp_path / "frames.zarr", _frames_arrays()))
    torch.manual_seed(0)
    model = md.Monodepth2(18, pose=True).train()
    batch = load_batch(frames, np.array([1, 2]), 64, 64)
    with torch.no_grad():
        masked = float(md.depth_teacher_loss(model, batch, 0.1, 100.0, automask=True))
        plain = float(md.depth_teacher_loss(model, batch, 0.1, 100.0, automask=False))
    assert plain > masked > 0
    seen = []
    real = md.depth_teacher_loss
    monkeypatch.setattr(md, "depth_teacher_loss", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    kw = dict(height=64, width=64, batch_size=2, lr=1e-4, scheduler_step=1, device="cpu", seed=0, progress=False)
    md.train_depth_teacher(frames, epochs=1, out_dir=tmp_path / "off", automask=False, **kw)
    md.train_depth_teacher(frames, epochs=1, out_dir=tmp_path / "on", **kw)
    assert seen == [False, False, True, True]  # 4 usable rows, batch 2: two steps each


def test_training_rejects_bad_inputs(tmp_path):
    arrays = _frames_arrays(n=2)
    with pytest.raises(ValueError, match="multiples of 32"):
        train_depth_teacher(arrays, height=32, width=64, epochs=1, batch_size=1, out_dir=tmp_path)
    with pytest.raises(ValueError, match="both a previous and a next"):
        train_depth_teacher(arrays, height=64, width=64, epochs=1, batch_size=1, out_dir=tmp_path)


def test_predict_depth_shape_and_range(tmp_path):
    write_official_folder(tmp_path / "w", pose=False)
    model = load_weights(tmp_path / "w")
    model.height, model.width = 64, 96  # resized to the trained size and back
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    depth = predict_depth(model, images, batch_size=2, device="cpu", min_depth=0.5, max_depth=20.0)
    assert depth.shape == (3, 40, 60) and depth.dtype == np.float32
    assert depth.min() >= 0.5 and depth.max() <= 20.0 and np.isfinite(depth).all()
    with pytest.raises(ValueError, match="uint8"):
        predict_depth(model, images.astype(np.float32))


def test_cli_train_and_pseudolabels(tmp_path):
    frames = write_group(tmp_path / "frames.zarr", _frames_arrays(target=[True, True, False, True, True, True]))
    out = tmp_path / "depth_teacher" / "weights"
    state_dir = tmp_path / "state" / "train_depth_teacher"
    rc = cli.main(["train-depth-teacher", "--frames", str(frames), "--out-dir", str(out), "--epochs", "1",
                   "--batch-size", "3", "--device", "cpu", "--color-aug", "false", "--automask", "false",
                   "--state-dir", str(state_dir),
                   "--lr", "1e-4", "--scheduler-step", "15", "--min-depth", "0.1", "--max-depth", "100",
                   "--seed", "0", "--log-dir", str(tmp_path / "tensorboard")])
    assert rc == 0 and (out / "pose.pth").is_file()
    curves = read_epoch_scalars(tmp_path / "tensorboard")  # the epoch's mean loss and its lr
    assert sorted(curves) == ["loss", "lr"] and curves["lr"] == [(1, pytest.approx(1e-4))]
    assert curves["loss"][0][0] == 1 and 0 < curves["loss"][0][1] < 10
    assert not state_dir.exists()  # removed when training finished
    shard = tmp_path / "depth_teacher" / "train_day.zarr"
    rc = cli.main(["depth-pseudolabels", "--frames", str(frames), "--weights", str(out), "--out", str(shard),
                   "--device", "cpu", "--max-depth", "80", "--min-depth", "0.1", "--batch-size", "4",
                   "--part", "0/1", "--rows-per-shard", "64"])
    assert rc == 0
    g = open_shard(shard)
    depth = g["depth"][:]
    assert depth.shape == (6, 64, 64) and depth.dtype == np.float16
    assert (depth[2] == 0).all()  # not a target row
    assert (depth[[0, 1, 3, 4, 5]] >= 0.0999).all() and (depth <= 80).all()
    assert g.attrs["teacher_sha256"]["depth.pth"] == file_sha256(out / "depth.pth")
    assert g.attrs["inputs"]["encoder.pth"] == file_sha256(out / "encoder.pth")
    assert g.attrs["rule"] == "depth_pseudolabels"
    assert cli.main(["depth-pseudolabels", "--frames", str(frames), "--weights", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "x.zarr"), "--device", "cpu", "--max-depth", "80", "--min-depth",
                     "0.1", "--batch-size", "4", "--part", "0/1", "--rows-per-shard", "64"]) == 2
