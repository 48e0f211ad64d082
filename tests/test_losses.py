"""Losses of paper section 3.3 on tiny tensors, against hand-computed values."""
import math

import pytest
import torch

from pipeline import losses as L
from pipeline.geometry import K3_to_K4, get_translation_matrix, warp_image

C1, C2 = 0.01 ** 2, 0.03 ** 2


def _ssim_const(a, b):
    """SSIM loss of two constant images (variances 0): (1 - (2ab + C1) / (a^2 + b^2 + C1)) / 2."""
    return (1 - (2 * a * b + C1) / (a * a + b * b + C1)) / 2


def _K(fx=10.0, cx=3.0, cy=2.0):
    K = K3_to_K4(torch.tensor([[fx, 0, cx], [0, fx, cy], [0, 0, 1]]))
    return K, torch.linalg.inv(K)


def test_ssim_identical_is_zero_and_constants_match_hand_value():
    x = torch.rand(2, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    assert L.ssim(x, x).shape == x.shape
    assert torch.allclose(L.ssim(x, x), torch.zeros_like(x), atol=1e-6)
    # float64: E[x^2] - mu^2 cancels to ~1e-5 in float32 (Monodepth2's formula), too coarse for a hand check
    a = torch.full((1, 3, 4, 4), 0.2, dtype=torch.float64)
    b = torch.full((1, 3, 4, 4), 0.6, dtype=torch.float64)
    assert torch.allclose(L.ssim(a, b), torch.full_like(a, _ssim_const(0.2, 0.6)), atol=1e-6)
    with pytest.raises(ValueError):
        L.ssim(a, b[..., :3])


def test_reprojection_of_constant_offset():
    target = torch.full((1, 3, 4, 5), 0.2, dtype=torch.float64)
    pred = torch.full((1, 3, 4, 5), 0.6, dtype=torch.float64)
    out = L.reprojection_loss(pred, target)
    assert out.shape == (1, 1, 4, 5)
    expected = 0.85 * _ssim_const(0.6, 0.2) + 0.15 * 0.4
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-6)


def test_smoothness_constant_is_zero_and_ramp_hand_value():
    img = torch.rand(1, 3, 3, 4)
    assert L.smoothness_loss(torch.full((1, 1, 3, 4), 0.3), img).item() == pytest.approx(0.0, abs=1e-7)
    ramp = torch.arange(1.0, 5.0).expand(1, 1, 3, 4)  # mean 2.5 -> normalised x step 0.4
    flat = torch.zeros(1, 3, 3, 4)
    assert L.smoothness_loss(ramp, flat).item() == pytest.approx(0.4, rel=1e-5)
    edge = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(1, 3, 3, 4)  # image step between columns 1 and 2
    assert L.smoothness_loss(ramp, edge).item() == pytest.approx(0.4 * (2 + math.exp(-1)) / 3, rel=1e-5)


def test_identity_pose_warps_target_onto_itself():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 5, 7, generator=g)
    depth = 0.5 + 20 * torch.rand(2, 1, 5, 7, generator=g)
    K, inv_K = _K()
    warped = warp_image(target, depth, torch.eye(4).repeat(2, 1, 1), K.repeat(2, 1, 1), inv_K.repeat(2, 1, 1))
    assert torch.allclose(warped, target, atol=1e-5)
    loss, mask = L.min_reprojection_automask(target, [warped], None)
    assert torch.allclose(loss, torch.zeros_like(loss), atol=1e-5) and torch.all(mask == 1)


def test_automask_selects_identity_when_the_source_equals_the_target():
    g = torch.Generator().manual_seed(2)
    target = torch.rand(1, 3, 6, 6, generator=g)
    other = torch.rand(1, 3, 6, 6, generator=g)
    # static camera: the unwarped source equals the target -> identity loss 0 wins, pixel masked
    loss, mask = L.min_reprojection_automask(target, [other], [target], noise_std=0.0)
    assert torch.all(mask == 0) and torch.allclose(loss, torch.zeros_like(loss), atol=1e-6)
    # perfect warp of a different source -> warped wins everywhere
    loss, mask = L.min_reprojection_automask(target, [target], [other], noise_std=0.0)
    assert torch.all(mask == 1)
    # two sources: per-pixel minimum
    loss, _ = L.min_reprojection_automask(target, [other, target], None)
    assert torch.allclose(loss, torch.zeros_like(loss), atol=1e-6)
    # noise drawn from a generator is reproducible
    a = L.min_reprojection_automask(target, [other], [other], generator=torch.Generator().manual_seed(5))[0]
    b = L.min_reprojection_automask(target, [other], [other], generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)


def test_photometric_loss_is_zero_with_the_right_depth_and_pose():
    g = torch.Generator().manual_seed(3)
    H, W = 6, 9
    target = torch.rand(1, 3, H, W, generator=g)
    source = torch.roll(target, 1, dims=3)  # source[u] = target[u - 1]
    K, inv_K = _K(cx=4.0, cy=2.5)
    T = get_translation_matrix(torch.tensor([[1.0, 0.0, 0.0]]))  # depth 10, fx 10: one pixel
    right = warp_image(source, torch.full((1, 1, H, W), 10.0), T, K, inv_K)
    wrong = warp_image(source, torch.full((1, 1, H, W), 3.0), T, K, inv_K)
    loss_right, _ = L.min_reprojection_automask(target, [right], None)
    loss_wrong, _ = L.min_reprojection_automask(target, [wrong], None)
    assert loss_right[..., : W - 2].abs().max() < 1e-5  # last columns: border padding
    assert loss_wrong.mean() > loss_right.mean() + 0.05


def test_self_supervised_loss_static_scene_is_smoothness_only():
    H, W = 8, 16
    target = torch.full((1, 3, H, W), 0.5)
    K, inv_K = _K(cx=7.5, cy=3.5)
    ramp0 = torch.arange(1.0, W + 1).expand(1, 1, H, W) / 100
    ramp1 = torch.arange(1.0, W // 2 + 1).expand(1, 1, H // 2, W // 2) / 100
    disps = {("disp", 0): ramp0, ("disp", 1): ramp1}
    loss = L.self_supervised_loss(target, [target], disps, [torch.eye(4)[None]], K, inv_K, noise_std=0.0)
    # ramp 1..n has mean (n+1)/2: normalised x step 2/(n+1); y step 0; flat image
    expected = (1e-3 * 2 / (W + 1) + 1e-3 * (2 / (W // 2 + 1)) / 2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError):
        L.self_supervised_loss(target, [target, target], disps, [torch.eye(4)[None]], K, inv_K)


def test_self_supervised_loss_gradient_reaches_the_disparity():
    g = torch.Generator().manual_seed(4)
    target = torch.rand(1, 3, 8, 8, generator=g)
    source = torch.roll(target, 1, dims=3)
    K, inv_K = _K(cx=3.5, cy=3.5)
    disp = torch.full((1, 1, 8, 8), 0.5, requires_grad=True)
    T = get_translation_matrix(torch.tensor([[0.3, 0.0, 0.0]]))
    L.self_supervised_loss(target, [source], [disp], [T], K, inv_K, noise_std=0.0).backward()
    assert disp.grad is not None and disp.grad.abs().sum() > 0


def test_sf_loss_weights_real_night():
    assert L.sf_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(10.0)).item() == pytest.approx(4.0)
    assert L.sf_loss(torch.tensor(1.0), None, None).item() == pytest.approx(1.0)
    assert L.sf_loss(None, None, None) is None


def test_light_loss_tv_exposure_ssim():
    assert L.tv_loss(torch.full((2, 3, 4, 4), 0.7)).item() == 0.0
    r = torch.arange(3.0).expand(1, 1, 2, 3)  # x steps 1, y steps 0: 2 * (0 / 3 + 4 / 4) / 1
    assert L.tv_loss(r).item() == pytest.approx(2.0)
    img = torch.full((2, 3, 32, 64), 0.2, dtype=torch.float64)
    zero = torch.zeros_like(img)
    assert L.light_loss(zero, img, is_night=False).item() == pytest.approx(0.0, abs=1e-6)
    night = L.light_loss(zero, img, is_night=True, day_mean_brightness=torch.tensor([0.5, 0.2], dtype=torch.float64))
    assert night.item() == pytest.approx((0.3 ** 2 + 0.0) / 2, rel=1e-5)  # mean over the 2 images' patches
    shift = torch.full_like(img, 0.1)  # r constant: TV 0, exposure (0.3 - 0.5)^2, SSIM(0.3, 0.2)
    expected = 0.04 + _ssim_const(0.3, 0.2)
    assert L.light_loss(shift, img, True, 0.5).item() == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError):
        L.light_loss(zero, img, is_night=True)
    assert L.light_loss_total(torch.tensor(1.0), torch.tensor(2.0)).item() == 3.0
    assert torch.allclose(L.mean_brightness(img), torch.tensor([0.2, 0.2], dtype=torch.float64))


def test_consistency_masks_sky_and_detaches_day_side():
    day_syn = torch.ones(1, 1, 2, 2, requires_grad=True)
    night_real = torch.tensor([[[[3.0, 1.0], [1.0, 100.0]]]], requires_grad=True)
    sky = torch.tensor([[[[1, 1], [1, 0]]]], dtype=torch.bool)  # bottom-right is sky
    loss = L.cst_syn_loss(day_syn, night_real, sky)
    assert loss.item() == pytest.approx(4.0 / 4)  # eq. (13): 1/N over all pixels
    night_real2 = night_real.detach().clone()
    night_real2[0, 0, 1, 1] = -50.0
    assert L.cst_syn_loss(day_syn, night_real2, sky).item() == pytest.approx(loss.item())
    loss.backward()
    assert day_syn.grad is None
    assert night_real.grad is not None and night_real.grad[0, 0, 0, 0] != 0 and night_real.grad[0, 0, 1, 1] == 0

    day_real = torch.full((1, 1, 2, 2), 2.0, requires_grad=True)
    night_syn = torch.zeros(1, 1, 2, 2, requires_grad=True)
    total = L.consistency_loss(day_real, night_syn, day_syn, night_real.detach(), sky)
    assert total.item() == pytest.approx(4.0 + 1.0)
    total.backward()
    assert day_real.grad is None and night_syn.grad is not None
    assert L.consistency_loss(day_real, night_syn).item() == pytest.approx(4.0)
    assert L.consistency_loss() is None
    with pytest.raises(ValueError):
        L.consistency_loss(depth_day_syn=day_syn, depth_night_real=night_real)


def test_distillation_loss_values():
    d = torch.full((1, 1, 4, 4), 2.0, dtype=torch.float64)
    t = torch.full((1, 1, 4, 4), 1.0, dtype=torch.float64)
    assert L.distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert L.distillation_loss(d, t).item() == pytest.approx(1.0 + 2 * _ssim_const(2.0, 1.0), rel=1e-5)
    with pytest.raises(ValueError):
        L.distillation_loss(d, torch.zeros_like(d))
    # teacher pixels <= 0 do not enter the MSE: with a 4x4 image, pixel (0,0) invalid
    t2 = t.clone()
    t2[0, 0, 0, 0] = 0.0
    d2 = t.clone()
    d2[0, 0, 0, 0] = 1000.0
    assert L.distillation_loss(d2, t2).item() < 1.0


def test_thresholded_ce_hand_value_and_threshold():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, :, 0, 1] = torch.log(torch.tensor([1.0, 2.0, 3.0]))  # pixel 1: softmax 1/6, 2/6, 3/6
    cls = torch.tensor([[0, 2], [1, 0]], dtype=torch.uint8).view(1, 2, 1, 2)
    prob = torch.tensor([[0.7, 0.5], [0.05, 0.3]]).view(1, 2, 1, 2)
    loss = L.thresholded_ce(logits, cls, prob)
    expected = (0.7 * math.log(3) + 0.5 * math.log(2) + 0.3 * math.log(6)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    prob_zero = prob.clone()
    prob_zero[0, 1, 0, 0] = 0.0  # y <= tau: no change
    assert L.thresholded_ce(logits, cls, prob_zero).item() == pytest.approx(expected, rel=1e-5)
    prob_tau = prob.clone()
    prob_tau[0, 1, 0, 1] = 0.1  # y == tau is not counted
    assert L.thresholded_ce(logits, cls, prob_tau).item() == pytest.approx(expected - 0.3 * math.log(6) / 2, rel=1e-5)
    u8 = torch.round(prob * 255).to(torch.uint8)  # shard encoding
    assert L.thresholded_ce(logits, cls, u8).item() == pytest.approx(expected, rel=1e-2)
    with pytest.raises(ValueError):
        L.thresholded_ce(logits[..., :1], cls, prob)
    with pytest.raises(ValueError):
        L.thresholded_ce(logits, cls + 5, prob)


def test_seg_and_total_loss():
    assert L.seg_loss(torch.tensor(1.0), None, torch.tensor(2.0)).item() == 3.0
    terms = {"light": torch.tensor(1.0), "sf": torch.tensor(2.0), "cst": None, "ds": torch.tensor(3.0),
             "seg": torch.tensor(4.0)}
    assert L.total_loss(terms).item() == pytest.approx(0.01 + 2 + 3 + 4)
    assert L.total_loss(terms, {"ds": 0.5}).item() == pytest.approx(0.01 + 2 + 1.5 + 4)
    with pytest.raises(ValueError):
        L.total_loss({"bogus": torch.tensor(1.0)})
    with pytest.raises(ValueError):
        L.total_loss({"sf": None})


def test_precomputed_identity_losses_are_the_automask_competitors():
    # the student passes day's identity losses once to eq. (8) and eq. (10); they must be what the
    # loss would compute itself, and a caller's value must be the one used
    g = torch.Generator().manual_seed(5)
    target = torch.rand(1, 3, 8, 12, generator=g)
    sources = [torch.roll(target, 1, dims=3), torch.rand(1, 3, 8, 12, generator=g)]
    K, inv_K = _K(cx=5.5, cy=3.5)
    T = [get_translation_matrix(torch.tensor([[0.2, 0.0, 0.0]])), torch.eye(4)[None]]
    disps = [torch.rand(1, 1, 8, 12, generator=g), torch.rand(1, 1, 4, 6, generator=g)]
    identity = L.identity_losses(target, sources)
    assert identity.shape == (1, 2, 8, 12)
    assert torch.allclose(identity[:, 1:], L.reprojection_loss(sources[1], target))
    own = L.self_supervised_loss(target, sources, disps, T, K, inv_K, noise_std=0.0)
    given = L.self_supervised_loss(target, sources, disps, T, K, inv_K, noise_std=0.0, identity=identity)
    assert given.item() == own.item()
    # identity losses of 0 win every pixel's minimum: only the smoothness term is left
    zero = L.self_supervised_loss(target, sources, disps, T, K, inv_K, noise_std=0.0,
                                  identity=torch.zeros_like(identity))
    smooth = sum(1e-3 * L.smoothness_loss(d, L._resize(target, d.shape[-2:])) / 2 ** s
                 for s, d in enumerate(disps)) / 2
    assert zero.item() == pytest.approx(smooth.item(), rel=1e-6)
