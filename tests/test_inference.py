"""The fast inference path (pipeline.model.inference) gives the eval-mode network's outputs.

Tolerance: every output element within 1e-4 x the largest |value| of that reference output (plus 1e-6
absolute): float32 rounding of the folded weights and of the reordered sums only; a real mistake (a
wrong tap, a missed bias, a swapped channel) is orders of magnitude larger. Seg logits must also give
the same argmax almost everywhere (ties aside).
"""
import copy

import numpy as np
import pytest
import torch

from pipeline.model import build_model
from pipeline.model import inference as inf
from pipeline.model.inference import inference_depth_model, inference_model

RTOL_OF_RANGE, ATOL = 1e-4, 1e-6
SIZES = [(64, 96), (96, 160)]  # (H, W), both multiples of 32


def assert_matches(fast: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert fast.shape == ref.shape, what
    assert torch.isfinite(fast).all(), what
    tol = RTOL_OF_RANGE * ref.abs().max().item() + ATOL
    err = (fast.float() - ref.float()).abs().max().item()
    assert err <= tol, f"{what}: max |fast - eval| = {err:.3g} > {tol:.3g}"


def randomise_batch_norms(model: torch.nn.Module, seed: int) -> None:
    """A few train-mode passes (real running statistics), then random affine parameters and
    perturbed statistics, so that folding the batch norms is really exercised."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 3, 64, 96, generator=g))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.add_(0.2 * torch.randn(n, generator=g))
                m.running_var.mul_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
    model.eval()


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    model = build_model({"model": {"width": 160, "height": 96}})
    model.pose = None
    with torch.no_grad():  # a trained light net: its last conv starts at zero (r = 0), which would test nothing
        last = model.light.model[-2]
        last.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(4))
        last.bias.uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(5))
    randomise_batch_norms(model, seed=1)
    assert model.light(torch.rand(1, 3, 32, 32)).abs().mean() > 0.05
    return model


@pytest.fixture(scope="module")
def monodepth2():
    from pipeline.teachers.monodepth2 import Monodepth2

    torch.manual_seed(2)
    model = Monodepth2(num_layers=18, pose=False)
    randomise_batch_norms(model, seed=3)
    model.height, model.width = 96, 160
    return model


def images(hw, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *hw, generator=g)


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("use_light", [True, False])
def test_student_fast_path_matches_eval_network(student, hw, use_light):
    x = images(hw)
    with torch.no_grad():
        ref = student(x, use_light=use_light)
    out = inference_model(student)(x, use_light=use_light)
    assert set(out) == {("disp", 0), ("seg", 0)}
    assert_matches(out[("disp", 0)], ref[("disp", 0)], f"disp {hw} light={use_light}")
    assert_matches(out[("seg", 0)], ref[("seg", 0)], f"seg {hw} light={use_light}")
    # a meaningful comparison: outputs vary across the image and the classes
    assert ref[("disp", 0)].std() > 1e-3 and ref[("seg", 0)].std() > 1e-2
    agree = (out[("seg", 0)].argmax(1) == ref[("seg", 0)].argmax(1)).float().mean().item()
    assert agree > 0.999


def test_student_all_scales_and_contiguous_outputs(student):
    x = images(SIZES[1], batch=1, seed=5)
    with torch.no_grad():
        ref = student(x)
    fast = inference_model(student, scales=(0, 1, 2, 3), contiguous_outputs=True)
    out = fast(x)
    assert set(out) == {(k, s) for k in ("disp", "seg") for s in range(4)}
    for key, value in out.items():
        assert value.is_contiguous(), key
        assert_matches(value, ref[key], str(key))


def test_student_drop_in_attributes_and_model_untouched(student):
    state = {k: v.clone() for k, v in student.state_dict().items()}
    fast = inference_model(student)
    assert fast.min_depth == student.min_depth and fast.max_depth == student.max_depth
    assert (fast.width, fast.height) == (160, 96) and fast.num_classes == 19
    assert not fast.training
    disp = torch.rand(1, 1, 4, 4)
    assert torch.equal(fast.depth(disp), student.depth(disp))
    for k, v in student.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(ValueError, match="multiples of 32"):
        fast(torch.rand(1, 3, 70, 96))
    x = images(SIZES[0], batch=1)
    out = fast(x)  # packs the oneDNN weights; copies drop them and pack their own
    again = copy.deepcopy(fast)(x)
    for key in out:
        assert torch.equal(out[key], again[key]), key


def test_student_without_light_net():
    torch.manual_seed(4)
    model = build_model({"model": {"light": {"enabled": False}}})
    model.pose = None
    randomise_batch_norms(model, seed=5)
    x = images(SIZES[0])
    with torch.no_grad():
        ref = model(x)
    out = inference_model(model)(x)
    assert_matches(out[("disp", 0)], ref[("disp", 0)], "disp")
    assert_matches(out[("seg", 0)], ref[("seg", 0)], "seg")


def test_reference_convolution_path_matches(student, monkeypatch):
    """The F.conv2d path (other devices / torch builds without the oneDNN fused ops) gives the same."""
    monkeypatch.setattr(inf, "_MKLDNN", False)
    x = images(SIZES[0], seed=7)
    with torch.no_grad():
        ref = student(x)
    out = inference_model(student)(x)
    assert_matches(out[("disp", 0)], ref[("disp", 0)], "disp")
    assert_matches(out[("seg", 0)], ref[("seg", 0)], "seg")


def test_resnet50_encoder_bottleneck_blocks():
    from pipeline.teachers.monodepth2 import Monodepth2

    torch.manual_seed(6)
    model = Monodepth2(num_layers=50, pose=False)
    randomise_batch_norms(model, seed=7)
    x = images(SIZES[0], batch=1)
    with torch.no_grad():
        ref = model(x)
    out = inference_depth_model(model)(x)
    assert_matches(out[("disp", 0)], ref[("disp", 0)], "disp")


@pytest.mark.parametrize("hw", SIZES)
def test_monodepth2_fast_path_matches_eval_network(monodepth2, hw):
    x = images(hw, seed=11)
    with torch.no_grad():
        ref = monodepth2(x)
    fast = inference_depth_model(monodepth2, scales=(0, 1, 2, 3))
    out = fast(x)
    assert set(out) == {("disp", s) for s in range(4)}
    for key, value in out.items():
        assert value.is_contiguous(), key
        assert_matches(value, ref[key], f"{key} {hw}")
    assert ref[("disp", 0)].std() > 1e-3
    assert set(inference_depth_model(monodepth2)(x)) == {("disp", 0)}


def test_monodepth2_fast_path_in_predict_depth(monodepth2):
    """Drop-in for the teacher's predict_depth (resize to the trained size, disparity back, depth)."""
    from pipeline.teachers.monodepth2 import predict_depth

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 90, 150, 3), dtype=np.uint8)
    fast = inference_depth_model(monodepth2)
    assert (fast.height, fast.width) == (96, 160)
    ref = predict_depth(monodepth2, frames, batch_size=2)
    out = predict_depth(fast, frames, batch_size=2)
    assert out.shape == ref.shape == (3, 90, 150)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
