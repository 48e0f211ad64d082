"""CycleGAN: the reference generator layout, strict loading, translation, training + resume, image pool."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline import cli
from pipeline.checkpoints import TrainingState
from pipeline.curves import read_epoch_scalars
from pipeline.shards import file_sha256, open_shard, write_group
from pipeline.synth.cyclegan import (ImagePool, NLayerDiscriminator, ResnetGenerator, load_generator, lr_factor,
                                     save_generator, to_tensor, to_uint8, train_cyclegan, translate)


def reference_generator_shapes(ngf: int = 64, n_blocks: int = 9) -> dict[str, tuple]:
    """Key names and shapes of the reference `resnet_9blocks` G (instance norm: convs have biases),
    written out by hand from models/networks.py's layer order."""
    shapes = {"model.1.weight": (ngf, 3, 7, 7), "model.1.bias": (ngf,),
              "model.4.weight": (2 * ngf, ngf, 3, 3), "model.4.bias": (2 * ngf,),
              "model.7.weight": (4 * ngf, 2 * ngf, 3, 3), "model.7.bias": (4 * ngf,)}
    for b in range(10, 10 + n_blocks):
        for conv in (1, 5):
            shapes[f"model.{b}.conv_block.{conv}.weight"] = (4 * ngf, 4 * ngf, 3, 3)
            shapes[f"model.{b}.conv_block.{conv}.bias"] = (4 * ngf,)
    up1, up2, last = 10 + n_blocks, 13 + n_blocks, 17 + n_blocks
    shapes.update({f"model.{up1}.weight": (4 * ngf, 2 * ngf, 3, 3), f"model.{up1}.bias": (2 * ngf,),
                   f"model.{up2}.weight": (2 * ngf, ngf, 3, 3), f"model.{up2}.bias": (ngf,),
                   f"model.{last}.weight": (3, ngf, 7, 7), f"model.{last}.bias": (3,)})
    return shapes


def test_generator_has_reference_layout():
    ref = reference_generator_shapes()
    assert len(ref) == 48
    assert sum(math.prod(s) for s in ref.values()) == 11_378_179
    G = ResnetGenerator(3, 3, 64, 9)
    ours = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    assert ours == ref
    assert ours["model.1.weight"] == (64, 3, 7, 7)
    assert "model.10.conv_block.1.weight" in ours and "model.18.conv_block.5.bias" in ours
    assert sum(p.numel() for p in G.parameters()) == 11_378_179
    # 70x70 PatchGAN: 2,764,737 parameters for ndf 64, a 6x6 score map on a 70x70 input
    D = NLayerDiscriminator(3, 64, 3)
    assert sum(p.numel() for p in D.parameters()) == 2_764_737
    assert D(torch.zeros(1, 3, 70, 70)).shape == (1, 1, 6, 6)


def test_load_reference_state_dict_strictly(tmp_path):
    torch.manual_seed(0)
    ref = {k: torch.randn(s) for k, s in reference_generator_shapes().items()}
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(ref, path)
    G = load_generator(path)
    assert (G.ngf, G.n_blocks) == (64, 9)
    for k, v in G.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_load_handles_module_prefix_and_old_instance_norm_buffers(tmp_path):
    ref = {f"module.{k}": torch.randn(s) for k, s in reference_generator_shapes(8, 2).items()}
    ref["module.model.2.running_mean"] = torch.zeros(8)  # InstanceNorm buffers of torch < 0.4
    ref["module.model.2.running_var"] = torch.ones(8)
    ref["module.model.10.conv_block.2.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / "g.pth"
    torch.save(ref, path)
    G = load_generator(path)
    assert (G.ngf, G.n_blocks) == (8, 2)
    assert torch.equal(G.state_dict()["model.1.weight"], ref["module.model.1.weight"])


def test_renamed_key_fails_naming_key_and_file(tmp_path):
    ref = {k: torch.zeros(s) for k, s in reference_generator_shapes(8, 2).items()}
    ref["model.4.weight_renamed"] = ref.pop("model.4.weight")
    path = tmp_path / "bad_G.pth"
    torch.save(ref, path)
    with pytest.raises(ValueError) as err:
        load_generator(path)
    msg = str(err.value)
    assert "bad_G.pth" in msg and "model.4.weight_renamed" in msg and "'model.4.weight'" in msg


def test_wrong_explicit_size_and_missing_file_fail(tmp_path):
    path = save_generator(ResnetGenerator(3, 3, 8, 1), tmp_path / "g.pth")
    with pytest.raises(ValueError, match="g.pth"):
        load_generator(path, ngf=16)
    with pytest.raises(ValueError, match="missing keys"):
        load_generator(path, n_blocks=2)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_generator(tmp_path / "nope.pth")


def test_save_load_round_trip_is_plain_state_dict(tmp_path):
    torch.manual_seed(1)
    G = ResnetGenerator(3, 3, 8, 1)
    path = save_generator(G, tmp_path / "g.pth")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == set(G.state_dict())  # nothing but the reference's keys
    G2 = load_generator(path)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(G(x), G2(x))


def test_uint8_tensor_round_trip():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    t = to_tensor(x)
    assert t.shape == (1, 3, 16, 16) and t.min() == -1 and t.max() == 1
    assert np.array_equal(to_uint8(t), x)


def constant_generator(value: float) -> ResnetGenerator:
    """A generator whose output is `value` everywhere: zero weights, final bias atanh(value)."""
    G = ResnetGenerator(3, 3, 4, 1)
    with torch.no_grad():
        for p in G.parameters():
            p.zero_()
        G.model[-2].bias.fill_(math.atanh(value))
    return G


@pytest.mark.parametrize("h,w", [(32, 40), (30, 38)])
def test_translate_keeps_shape_and_dtype(h, w):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    out = translate(ResnetGenerator(3, 3, 8, 1), images, batch_size=2, device="cpu")
    assert out.shape == (3, h, w, 3) and out.dtype == np.uint8
    # constant output 0.5 in [-1, 1] -> (0.5 + 1) * 127.5 = 191.25 -> 191
    out = translate(constant_generator(0.5), images, batch_size=2, device="cpu")
    assert (out == 191).all()


def test_translate_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        translate(ResnetGenerator(3, 3, 4, 1), np.zeros((1, 8, 8, 3), np.float32))


def test_lr_schedule_matches_reference_linear_policy():
    assert lr_factor(0, 100, 100) == 1.0
    assert lr_factor(99, 100, 100) == 1.0
    assert lr_factor(100, 100, 100) == pytest.approx(1 - 1 / 101)
    assert lr_factor(199, 100, 100) == pytest.approx(1 / 101)


class FixedRng:
    """A stand-in for numpy's Generator with fixed draws."""

    def __init__(self, u: float, i: int):
        self.u, self.i = u, i

    def uniform(self, *_):
        return self.u

    def integers(self, *_):
        return self.i


def test_image_pool_fills_then_swaps():
    pool = ImagePool(2, FixedRng(0.9, 1))
    a = torch.full((2, 3, 4, 4), 1.0)
    assert torch.equal(pool.query(a), a) and len(pool.images) == 2  # fills up to its size
    b = torch.full((1, 3, 4, 4), 2.0)
    out = pool.query(b)  # p > 0.5: returns stored image 1, stores b in its place
    assert torch.equal(out, a[1:2]) and torch.equal(pool.images[1], b) and len(pool.images) == 2
    pool.rng = FixedRng(0.1, 0)  # p <= 0.5: returns the new image, pool unchanged
    c = torch.full((1, 3, 4, 4), 3.0)
    assert torch.equal(pool.query(c), c) and torch.equal(pool.images[0], a[:1])
    assert torch.equal(ImagePool(0).query(c), c)


def test_image_pool_returns_stored_half_the_time():
    pool = ImagePool(5, np.random.default_rng(0))
    pool.query(torch.zeros(5, 1, 1, 1))
    values = torch.arange(1, 2001, dtype=torch.float32)
    out = pool.query(values.view(-1, 1, 1, 1)).flatten()
    stored = int((out != values).sum())  # not the image just passed in: one from the pool
    assert 900 < stored < 1100
    assert all(v.item() < i + 1 for i, v in enumerate(out) if v != values[i])  # always an older image


def _images(seed: int, n: int = 4, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


TINY = dict(ngf=8, n_blocks=1, n_epochs_decay=0, crop=32, batch_size=1, lr=2e-4, device="cpu", seed=0,
            progress=False)


def test_tiny_training_runs_and_resumes_exactly(tmp_path):
    day, night = _images(1), _images(2)
    full = TrainingState(tmp_path / "full", {"run": "full"})
    g_full, _ = train_cyclegan(day, night, n_epochs=2, state=full, **TINY)
    assert full.latest()["epoch"] == 2
    init = ResnetGenerator(3, 3, 8, 1)
    assert any(not torch.equal(a, b) for a, b in zip(g_full.state_dict().values(), init.state_dict().values()))
    # stop after one epoch, then resume for the second: same weights as the uninterrupted run
    state = TrainingState(tmp_path / "state", {"run": "split"})
    g_one, _ = train_cyclegan(day, night, n_epochs=1, state=state, **TINY)
    assert state.latest()["epoch"] == 1
    g_resumed, n2d = train_cyclegan(day, night, n_epochs=2, state=state, **TINY)
    assert state.latest()["epoch"] == 2
    for k, v in g_full.state_dict().items():
        assert torch.equal(v, g_resumed.state_dict()[k]), k
    assert not torch.equal(g_one.state_dict()["model.1.weight"], g_resumed.state_dict()["model.1.weight"])
    assert isinstance(n2d, ResnetGenerator)


def _frames_shard(path, images, target):
    n = len(images)
    return write_group(path, {"image": images, "target": np.asarray(target, bool),
                              "prev": np.full(n, -1, np.int32), "next": np.full(n, -1, np.int32)})


def _outs(out):
    return ["--out-day2night", str(out / "G_day2night.pth"), "--out-night2day", str(out / "G_night2day.pth"),
            "--state-dir", str(out / "state"), "--log-dir", str(out / "tensorboard")]


def test_cli_train_and_translate(tmp_path):
    day = _frames_shard(tmp_path / "day.zarr", _images(3, 2), [True, True])
    night = _frames_shard(tmp_path / "night.zarr", _images(4, 2), [True, False])
    out = tmp_path / "cyclegan"
    rc = cli.main(["train-cyclegan", "--day", str(day), "--night", str(night), *_outs(out),
                   "--ngf", "8", "--n-blocks", "1", "--epochs", "1", "--epochs-decay", "0", "--crop", "32",
                   "--device", "cpu", "--batch-size", "1", "--lr", "2e-4", "--seed", "0"])
    assert rc == 0
    assert load_generator(out / "G_day2night.pth").ngf == 8 and (out / "G_night2day.pth").is_file()
    assert not (out / "state").exists()  # removed once training finished
    curves = read_epoch_scalars(out / "tensorboard")  # one mean per epoch and term, and the lr
    assert set(curves) == {"G_day2night", "G_night2day", "cycle_day", "cycle_night", "idt_day2night",
                           "idt_night2day", "D_night", "D_day", "lr"}, sorted(curves)
    assert curves["lr"] == [(1, pytest.approx(2e-4))] and all(len(v) == 1 for v in curves.values())

    gen = save_generator(constant_generator(0.5), tmp_path / "const.pth")
    synth = tmp_path / "synth.zarr"
    rc = cli.main(["translate", "--frames", str(night), "--generator", str(gen), "--out", str(synth),
                   "--device", "cpu", "--batch-size", "1", "--part", "0/1", "--rows-per-shard", "64"])
    assert rc == 0
    g = open_shard(synth)
    img = g["image"][:]
    assert img.shape == (2, 32, 32, 3) and img.dtype == np.uint8
    assert (img[0] == 191).all() and (img[1] == 0).all()  # target row translated, the other left at 0
    assert g.attrs["inputs"]["generator"] == file_sha256(gen)
    assert g.attrs["rule"] == "translate" and "frames" in g.attrs["inputs"]


def test_cli_pretrained_generators_are_validated_and_copied(tmp_path):
    good = save_generator(ResnetGenerator(3, 3, 8, 1), tmp_path / "good.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    out = tmp_path / "out"
    args = ["train-cyclegan", "--day", "x.zarr", "--night", "y.zarr", *_outs(out), "--ngf", "8", "--n-blocks", "1",
            "--epochs", "1", "--epochs-decay", "0", "--crop", "32", "--device", "cpu", "--batch-size", "1", "--lr",
            "2e-4", "--seed", "0"]
    assert cli.main(args + ["--pretrained-day2night", str(good), "--pretrained-night2day", str(good)]) == 0
    assert file_sha256(out / "G_night2day.pth") == file_sha256(good)
    assert cli.main(args + ["--pretrained-day2night", str(good), "--pretrained-night2day", str(bad)]) == 2
    assert cli.main(args + ["--pretrained-day2night", str(good)]) == 2


def test_resumable_state_is_keyed_by_its_record(tmp_path):
    """One stale-state policy (pipeline.checkpoints): a run of other settings or inputs never resumes a
    state, and removes it; the same record resumes the newest epoch; `keep` prunes older epochs."""
    a = TrainingState(tmp_path / "s", {"inputs": ["day-1", "night-1"]}, keep=2)
    for epoch in (1, 2, 3):
        a.save(epoch, {"w": torch.tensor([float(epoch)])})
    assert sorted(a.epochs()) == [2, 3]
    again = TrainingState(tmp_path / "s", {"inputs": ["day-1", "night-1"]})
    assert again.latest()["w"].item() == 3.0 and again.latest(max_epoch=2)["epoch"] == 2
    b = TrainingState(tmp_path / "s", {"inputs": ["day-2", "night-1"]})
    assert b.latest() is None and not a.dir.exists()  # the stale state of other inputs is removed
    b.save(1, {})
    b.clear()
    assert not (tmp_path / "s").exists()
