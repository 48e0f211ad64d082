"""Mask2Former teacher: local checkpoints, dense probabilities, top-k shard, demo fitting."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline import cityscapes
from pipeline.cli import main
from pipeline.shards import file_sha256, open_shard, verify, write_group
from pipeline.teachers import mask2former as m2f

H, W = 64, 96
# Shrinks the demo config further so that each test builds and runs its model in about a second.
TINY = {"backbone_config": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]},
        "feature_size": 32, "mask_feature_size": 32, "hidden_dim": 32, "encoder_feedforward_dim": 64,
        "encoder_layers": 1, "decoder_layers": 2, "num_attention_heads": 2, "dim_feedforward": 64}


def _images(n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([np.stack([(xx * 2 + i * 40) % 256, (yy * 3) % 256, ((xx + yy) * i) % 256], -1)
                     for i in range(n)]).astype(np.uint8)


def _save_random_model(folder, overrides=None, seed=0):
    """A randomly initialised Mask2Former + processor saved like a downloaded checkpoint. Mask and
    class logits are scaled up so that predictions vary in space and are far from uniform."""
    from transformers import Mask2FormerForUniversalSegmentation

    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(m2f.demo_config({**TINY, **(overrides or {})})).eval()
    with torch.no_grad():
        model.model.pixel_level_module.decoder.mask_projection.weight.mul_(200.0)
        model.class_predictor.weight.mul_(100.0)
    model.save_pretrained(folder)
    m2f.demo_processor(H, W).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads make the fit ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _save_random_model(tmp_path_factory.mktemp("ckpt") / "m2f-cityscapes-tiny")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    path = tmp_path_factory.mktemp("frames") / "test_day.zarr"
    n = 4
    write_group(path, {
        "image": _images(n), "target": np.array([True, False, True, True]),
        "K": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)), "frame_id": np.array([f"f{i}" for i in range(n)]),
        "source": np.array([f"s{i}.jpg" for i in range(n)]), "prev": np.full(n, -1, np.int32),
        "next": np.full(n, -1, np.int32)}, {"rule": "test"})
    return path


def _reference(checkpoint, images):
    """Dense probabilities and the library's own semantic maps, straight from transformers."""
    from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

    model = Mask2FormerForUniversalSegmentation.from_pretrained(checkpoint, local_files_only=True).eval()
    processor = Mask2FormerImageProcessor.from_pretrained(checkpoint, local_files_only=True)
    inputs = processor(images=list(images), return_tensors="pt", input_data_format="channels_last")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"])
    masks = F.interpolate(out.masks_queries_logits, size=inputs["pixel_values"].shape[-2:], mode="bilinear",
                          align_corners=False).sigmoid()
    scores = torch.einsum("bqc,bqhw->bchw", out.class_queries_logits.softmax(-1)[..., :-1], masks)
    library = processor.post_process_semantic_segmentation(out, target_sizes=[(H, W)] * len(images),
                                                           return_segmentation_scores=True)
    return (scores / scores.sum(1, keepdim=True)).numpy(), library


def test_seg_pseudolabels_cli_matches_dense_probabilities(checkpoint, frames, tmp_path):
    out = tmp_path / "seg_teacher" / "test_day.zarr"
    assert main(["seg-pseudolabels", "--frames", str(frames), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--topk", "3", "--tau", "0.1", "--batch-size", "2", "--device", "cpu", "--part", "0/1",
                 "--rows-per-shard", "64"]) == 0
    group = open_shard(out)
    assert verify(out) == {}
    top_class, top_prob = group["topk_class"][:], group["topk_prob"][:]
    assert top_class.shape == top_prob.shape == (4, H, W, 3)
    assert top_class.dtype == top_prob.dtype == np.uint8
    assert not top_class[1].any() and not top_prob[1].any()  # non-target row stays 0

    rows = [0, 2, 3]
    dense, library = _reference(checkpoint, _images(4)[rows])
    np.testing.assert_allclose(dense.sum(1), 1.0, atol=1e-5)
    assert (dense.max(1) > 0.25).mean() > 0.2  # the model is far from uniform: the checks below bite

    # stored probabilities = dense probability of the stored class, rounded to 1/255
    stored = top_prob[rows].astype(np.float64) / 255
    gathered = np.take_along_axis(dense.transpose(0, 2, 3, 1), top_class[rows].astype(np.int64), axis=-1)
    assert np.abs(stored - gathered).max() <= 0.5 / 255 + 1e-4
    # stored classes = the dense top-3 in decreasing order, wherever the ranking has no near-tie
    order = np.argsort(-dense, axis=1)[:, :4].transpose(0, 2, 3, 1)
    ranked = -np.sort(-dense, axis=1)[:, :4].transpose(0, 2, 3, 1)
    clear = np.all(np.diff(-ranked, axis=-1) > 1e-4, axis=-1)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(top_class[rows][clear], order[..., :3][clear])

    # top-1 = argmax of transformers' post_process_semantic_segmentation where that is unambiguous
    # (the library resamples masks through a fixed 384x384 grid, so near-ties at edges may differ)
    classes_seen, sure_fraction = set(), []
    for i, row in enumerate(rows):
        scores = library[i]["segmentation_scores"]
        ranked_lib = (scores / scores.sum(0)).sort(0, descending=True).values
        sure = (ranked_lib[0] - ranked_lib[1] > 0.05).numpy()
        sure_fraction.append(sure.mean())
        np.testing.assert_array_equal(top_class[row, ..., 0][sure], library[i]["segmentation"].numpy()[sure])
        classes_seen |= set(np.unique(top_class[row, ..., 0][sure]).tolist())
    assert len(classes_seen) >= 2 and np.mean(sure_fraction) > 0.3

    attrs = dict(group.attrs)
    assert attrs["labels"] == list(cityscapes.NAMES) and attrs["k"] == 3
    assert attrs["teacher"]["checkpoint"] == checkpoint.name
    assert attrs["teacher"]["sha256"] == file_sha256(checkpoint / "model.safetensors")
    assert attrs["processor"]["size"] == {"shortest_edge": H, "longest_edge": W}
    assert attrs["rule"] == "seg_pseudolabels" and attrs["config"] == {"topk": 3, "tau": 0.1}
    # dropped mass: classes ranked 4th or lower with p > 0.1
    rest = -np.sort(-dense, axis=1)[:, 3:]
    lost = (rest * (rest > 0.1)).sum(1)
    report = attrs["dropped_mass"]
    assert report["tau"] == 0.1 and report["pixels"] == 3 * H * W
    assert report["mean"] == pytest.approx(lost.mean(), abs=1e-5) and report["max"] == pytest.approx(lost.max(), abs=1e-5)
    assert report["mean"] > 0


def test_class_probabilities_crops_padding_and_normalises():
    # query 0 says class 0 on the valid top-left 4x6 region; query 1 says class 1 on the padding only
    cls = torch.tensor([[[9.0, -9.0, -9.0], [-9.0, 9.0, -9.0]]])
    masks = torch.full((1, 2, 8, 12), -20.0)
    masks[0, 0, :4, :6] = 20.0
    masks[0, 1] = 20.0
    masks[0, 1, :4, :6] = -20.0
    pixel_mask = torch.zeros(1, 8, 12, dtype=torch.long)
    pixel_mask[0, :4, :6] = 1
    probs = m2f.class_probabilities(cls, masks, (8, 12), pixel_mask=pixel_mask)
    assert probs.shape == (1, 2, 8, 12) and probs.dtype == torch.float32
    torch.testing.assert_close(probs[:, 0], torch.ones(1, 8, 12), atol=1e-4, rtol=0)
    # one query, two classes: p = softmax without the null class, renormalised
    probs = m2f.class_probabilities(torch.tensor([[[1.0, 0.0, 5.0]]]), torch.zeros(1, 1, 2, 3), (4, 6))
    e = np.exp([1.0, 0.0])
    torch.testing.assert_close(probs[0, :, 0, 0], torch.tensor(e / e.sum(), dtype=torch.float32))
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 4, 6))


def test_topk_and_dropped_mass_hand_values():
    p = torch.tensor([0.05, 0.5, 0.1, 0.15, 0.2]).view(1, 5, 1, 1)
    top_class, top_prob = m2f.topk_labels(p, 2)
    assert top_class.shape == (1, 1, 1, 2)
    assert top_class[0, 0, 0].tolist() == [1, 4] and top_prob[0, 0, 0].tolist() == [128, 51]  # 127.5 -> 128
    assert m2f.dropped_mass(p, 1, tau=0.1).item() == pytest.approx(0.35)  # 0.2 + 0.15; 0.1 is not > tau
    assert m2f.dropped_mass(p, 3, tau=0.1).item() == pytest.approx(0.0)
    with pytest.raises(ValueError):
        m2f.topk_labels(p, 6)


def test_contiguous_batches_never_span_gaps():
    assert m2f.contiguous_batches([0, 2, 3, 4, 5, 9], 3) == [(0, 1), (2, 5), (5, 6), (9, 10)]
    assert m2f.contiguous_batches([], 3) == []
    # aligned to shard files of 4 rows: no batch spans rows 3|4 or 7|8 (the same batches in every job split)
    assert m2f.contiguous_batches([0, 2, 3, 4, 5, 6, 7, 8, 9], 3, align=4) == [(0, 1), (2, 4), (4, 7), (7, 8), (8, 10)]


def test_checkpoint_with_10_labels_fails_naming_the_folder(tmp_path, capsys, frames):
    labels = {i: f"class{i}" for i in range(10)}
    folder = _save_random_model(tmp_path / "ade-10", {"id2label": labels, "label2id": {v: k for k, v in labels.items()}})
    with pytest.raises(ValueError, match=r"ade-10.*19 labels, found 10.*class9"):
        m2f.load_teacher(folder, "cpu")
    assert main(["seg-pseudolabels", "--frames", str(frames), "--checkpoint", str(folder),
                 "--out", str(tmp_path / "x.zarr"), "--topk", "3", "--tau", "0.1", "--batch-size", "2",
                 "--device", "cpu", "--part", "0/1", "--rows-per-shard", "64"]) == 2
    assert "ade-10" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()


def test_missing_or_incomplete_folder_fails_naming_it(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match="no-such-checkpoint"):
        m2f.load_teacher(tmp_path / "no-such-checkpoint", "cpu")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(checkpoint / "config.json", partial)
    with pytest.raises(FileNotFoundError, match=r"partial.*preprocessor_config.json.*model.safetensors"):
        m2f.load_teacher(partial, "cpu")


def test_legacy_processor_size_is_completed(tmp_path, checkpoint):
    folder = tmp_path / "legacy"
    shutil.copytree(checkpoint, folder)
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    cfg["size"] = H  # as old checkpoints store it: shortest edge only
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
    model, processor = m2f.load_teacher(folder, "cpu")
    assert processor.size["longest_edge"] == m2f.LEGACY_LONGEST_EDGE
    (start, probs), = list(m2f.predict(model, processor, _images(2), 2, "cpu", progress=False))
    assert start == 0 and probs.shape == (2, 19, H, W)


def _demo_scene(n):
    """Sky above, road below, a car block; labels at half resolution with an ignored strip."""
    labels = np.full((n, H, W), 10, np.uint8)
    labels[:, H // 2:] = 0
    for i in range(n):
        labels[i, 28:48, 10 + 15 * i:40 + 15 * i] = 13
    labels[:, :, :4] = 255
    images = cityscapes.PALETTE[np.minimum(labels, 18)].copy()
    images = np.clip(images + np.random.default_rng(0).integers(-20, 20, images.shape), 0, 255).astype(np.uint8)
    return images, labels[:, ::2, ::2]


def test_fit_demo_teacher_cli_reduces_loss_and_reloads(tmp_path):
    images, labels = _demo_scene(5)
    n = len(images)
    frames = write_group(tmp_path / "train_day.zarr", {"image": images, "target": np.arange(n) < 4}, {"rule": "t"})
    gt = write_group(tmp_path / "gt_train_day.zarr", {"depth": np.ones((n, H // 2, W // 2), np.float32),
                                                      "labels": labels}, {"rule": "t"})
    out = tmp_path / "seg_teacher_demo"
    assert main(["fit-demo-seg-teacher", "--frames", str(frames), "--gt", str(gt), "--out-dir", str(out),
                 "--max-steps", "25", "--batch-size", "4", "--device", "cpu", "--seed", "0"]) == 0
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    log = json.loads((out / "fit_log.json").read_text())
    assert log["steps"] == 25
    assert log["losses"][-1] < 0.8 * log["losses"][0]
    model, processor = m2f.load_teacher(out, "cpu")
    assert model.config.id2label[13] == "car" and model.config.num_queries == 20
    (_, probs), = list(m2f.predict(model, processor, images[:2], 2, "cpu", progress=False))
    torch.testing.assert_close(probs.sum(1), torch.ones(2, H, W))


def test_fit_demo_teacher_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        m2f.fit_demo_teacher(np.zeros((2, H, W, 3), np.uint8), np.zeros((2, H, W // 2), np.uint8), tmp_path / "x",
                             max_steps=1)
    with pytest.raises(ValueError, match="ignore"):
        m2f.fit_demo_teacher(np.zeros((2, H, W, 3), np.uint8), np.full((2, H, W), 255, np.uint8), tmp_path / "x",
                             max_steps=1)
    with pytest.raises(KeyError, match="labels"):
        frames = write_group(tmp_path / "f.zarr", {"image": np.zeros((1, H, W, 3), np.uint8), "target": [True]})
        gt = write_group(tmp_path / "g.zarr", {"depth": np.zeros((1, H, W), np.float32)})
        from pipeline.cli import build_parser
        from pipeline.verbs import fit_demo_seg_teacher

        fit_demo_seg_teacher.run(build_parser().parse_args(
            ["fit-demo-seg-teacher", "--frames", str(frames), "--gt", str(gt), "--out-dir", str(tmp_path / "o"),
             "--max-steps", "1", "--batch-size", "1", "--device", "cpu", "--seed", "0"]))
