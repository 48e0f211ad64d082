"""Training losses of DepthSegNet24 (paper section 3.3); one function per equation, numbered as the paper.

Images are float RGB in [0, 1], (B, 3, H, W). Every function takes and returns tensors; weights and
switches are plain arguments (the config is read by the caller).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from pipeline.boxfilter import mean3x3
from pipeline.geometry import disp_to_depth, warp_image

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2
DEFAULT_WEIGHTS = {"light": 0.01, "sf": 1.0, "cst": 1.0, "ds": 1.0, "seg": 1.0}  # eq. (18)


def _check_same_shape(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: expected tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


# ---------------------------------------------------------------------------------------------
# Photometric pieces (Monodepth2)
# ---------------------------------------------------------------------------------------------

def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Monodepth2's SSIM loss map clamp((1 - SSIM) / 2, 0, 1) on 3x3 windows with reflection padding,
    same shape as the (B, C, H, W) inputs."""
    _check_same_shape("ssim", x, y)
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = mean3x3(x)
    mu_y = mean3x3(y)
    sigma_x = mean3x3(x * x) - mu_x ** 2
    sigma_y = mean3x3(y * y) - mu_y ** 2
    sigma_xy = mean3x3(x * y) - mu_x * mu_y
    n = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    d = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return torch.clamp((1 - n / d) / 2, 0, 1)


def reprojection_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Photometric error L_pe, (B, 1, H, W): 0.85 * SSIM loss + 0.15 * L1, each averaged over channels."""
    # eq. (6), alpha = 0.85; ssim() already holds (1 - SSIM) / 2
    _check_same_shape("reprojection_loss", pred, target)
    l1 = (target - pred).abs().mean(1, keepdim=True)
    return 0.85 * ssim(pred, target).mean(1, keepdim=True) + 0.15 * l1


def smoothness_loss(disp: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness, scalar: |dx d*| e^-|dx I| + |dy d*| e^-|dy I| on the mean-normalised
    disparity d* = disp / (mean(disp) + 1e-7) (Monodepth2's get_smooth_loss)."""
    # eq. (7)
    if disp.dim() != 4 or disp.shape[1] != 1 or img.dim() != 4 or disp.shape[-2:] != img.shape[-2:]:
        raise ValueError(f"smoothness_loss: expected disp (B, 1, H, W) and img (B, C, H, W) of the same H, W, "
                         f"got {tuple(disp.shape)} and {tuple(img.shape)}")
    disp = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    grad_disp_x = (disp[:, :, :, :-1] - disp[:, :, :, 1:]).abs()
    grad_disp_y = (disp[:, :, :-1, :] - disp[:, :, 1:, :]).abs()
    grad_img_x = (img[:, :, :, :-1] - img[:, :, :, 1:]).abs().mean(1, keepdim=True)
    grad_img_y = (img[:, :, :-1, :] - img[:, :, 1:, :]).abs().mean(1, keepdim=True)
    return (grad_disp_x * torch.exp(-grad_img_x)).mean() + (grad_disp_y * torch.exp(-grad_img_y)).mean()


def min_reprojection_automask(target: torch.Tensor, warped_list: Sequence[torch.Tensor],
                              sources_list: Sequence[torch.Tensor] | None = None,
                              noise_std: float = 1e-5,
                              generator: torch.Generator | None = None,
                              identity: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel minimum over sources of the reprojection loss, with Monodepth2's auto-masking.

    With `sources_list` (the unwarped sources), their identity losses (+ N(0, noise_std) tie-break noise,
    drawn from `generator`; noise_std=0 for none) compete in the minimum: pixels where an unwarped source
    wins are masked. `identity`: those losses already computed (`identity_losses`; they do not depend on
    the depth, so a multi-scale caller computes them once). Returns (loss map (B, 1, H, W), automask
    (B, 1, H, W) float, 1 = a warped source won; all ones without sources_list). The caller takes the mean."""
    if len(warped_list) == 0:
        raise ValueError("min_reprojection_automask: warped_list is empty")
    losses = torch.cat([reprojection_loss(w, target) for w in warped_list], 1)
    if sources_list is None:
        return losses.min(1, keepdim=True)[0], torch.ones_like(losses[:, :1])
    if len(sources_list) != len(warped_list):
        raise ValueError(f"min_reprojection_automask: {len(warped_list)} warped images but "
                         f"{len(sources_list)} sources")
    identity = identity_losses(target, sources_list) if identity is None else identity
    if noise_std:
        noise = torch.randn(identity.shape, generator=generator, device="cpu" if generator is None
                            else generator.device, dtype=identity.dtype)
        identity = identity + noise.to(identity.device) * noise_std
    combined = torch.cat([identity, losses], 1)
    loss, idx = combined.min(1, keepdim=True)
    return loss, (idx >= identity.shape[1]).to(loss.dtype)


def identity_losses(target: torch.Tensor, sources_list: Sequence[torch.Tensor]) -> torch.Tensor:
    """Reprojection losses of the unwarped sources against the target, (B, n_sources, H, W): the
    auto-mask's competitors (without their tie-break noise)."""
    return torch.cat([reprojection_loss(s, target) for s in sources_list], 1)


def _disp_list(disps) -> list[torch.Tensor]:
    """Multi-scale disparities as a list by scale, from a list or the model's {("disp", s): ...} dict."""
    if isinstance(disps, Mapping):
        scales = sorted(k[1] for k in disps if isinstance(k, tuple) and k[0] == "disp")
        if scales != list(range(len(scales))) or not scales:
            raise ValueError(f"disparities: expected keys ('disp', 0..n-1), got {list(disps)}")
        return [disps[("disp", s)] for s in scales]
    return list(disps)


def _resize(img: torch.Tensor, size) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def self_supervised_loss(target: torch.Tensor, sources: Sequence[torch.Tensor], disps,
                         poses: Sequence[torch.Tensor], K: torch.Tensor, inv_K: torch.Tensor,
                         min_depth: float = 0.1, max_depth: float = 100.0, smooth_weight: float = 1e-3,
                         automask: bool = True, noise_std: float = 1e-5,
                         generator: torch.Generator | None = None,
                         identity: torch.Tensor | None = None) -> torch.Tensor:
    """L_sf-real / L_sf-syn, scalar, computed as Monodepth2 does over the scales of `disps`.

    target (B, 3, H, W) real image I_t; sources: real I_s (B, 3, H, W), one per pose; disps: list by scale
    or the model's {("disp", s)} dict, scale s at (H/2**s, W/2**s); poses: T_t->s (B, 4, 4); K, inv_K
    (B, 4, 4) at full resolution. At each scale s the disparity is upsampled (bilinear) to full
    resolution, turned into depth and used to warp the sources (eq. 4/9); the photometric term is the
    mean of the auto-masked per-pixel minimum, and the smoothness term (weight smooth_weight / 2**s)
    compares disp at scale s with I_t resized to that scale (bilinear, antialiased). Mean over scales.
    Eq. (10) (synthetic night) is the same call with the disparities of the SYNTHETIC image and the real
    target, sources and pose. `identity`: `identity_losses(target, sources)` when the caller has them
    (computed here otherwise, once for all scales)."""
    # eq. (8) / eq. (10)
    disps = _disp_list(disps)
    if len(sources) != len(poses) or not sources:
        raise ValueError(f"self_supervised_loss: need one pose per source, got {len(sources)} sources, "
                         f"{len(poses)} poses")
    h, w = target.shape[-2:]
    total = target.new_zeros(())
    if automask and identity is None:
        identity = identity_losses(target, sources)  # the same at every scale
    for s, disp in enumerate(disps):
        _, depth = disp_to_depth(_resize(disp, (h, w)), min_depth, max_depth)
        warped = [warp_image(src, depth, T, K, inv_K) for src, T in zip(sources, poses)]
        pe, _ = min_reprojection_automask(target, warped, sources if automask else None, noise_std, generator,
                                          identity)
        smooth = smoothness_loss(disp, _resize(target, disp.shape[-2:]))
        total = total + pe.mean() + smooth_weight * smooth / (2 ** s)
    return total / len(disps)


def sf_loss(real_day: torch.Tensor | None, syn_night: torch.Tensor | None, real_night: torch.Tensor | None,
            night_weight: float = 0.1) -> torch.Tensor | None:
    """L_sf = L_sf-real(day) + L_sf-syn(synthetic night) + 0.1 L_sf-real(night); None terms are off
    (None when all are)."""
    # eq. (11)
    return _sum_terms([real_day, syn_night, None if real_night is None else night_weight * real_night])


def _sum_terms(terms) -> torch.Tensor | None:
    terms = [t for t in terms if t is not None]
    return sum(terms[1:], terms[0]) if terms else None


# ---------------------------------------------------------------------------------------------
# Light enhancement (DANNet)
# ---------------------------------------------------------------------------------------------

def tv_loss(r: torch.Tensor) -> torch.Tensor:
    """DANNet's L_TV: 2 * (sum dy^2 / ((H-1) W) + sum dx^2 / (H (W-1))) / B on the light map r."""
    b, _, h, w = r.shape
    if h < 2 or w < 2:
        raise ValueError(f"tv_loss: light map must be at least 2x2, got {tuple(r.shape)}")
    h_tv = ((r[:, :, 1:, :] - r[:, :, :-1, :]) ** 2).sum()
    w_tv = ((r[:, :, :, 1:] - r[:, :, :, :-1]) ** 2).sum()
    return 2 * (h_tv / ((h - 1) * w) + w_tv / (h * (w - 1))) / b


def mean_brightness(image: torch.Tensor) -> torch.Tensor:
    """(B,) mean grey level (mean over channels and pixels) of each image."""
    return image.mean((1, 2, 3))


def exposure_loss(enhanced: torch.Tensor, target_brightness, patch: int = 32) -> torch.Tensor:
    """DANNet's L_exp: mean of (avg_pool_patch(grey(enhanced)) - target_brightness)^2; target_brightness a
    float or a (B,) tensor (one per image, e.g. mean_brightness of the paired day image)."""
    if enhanced.shape[-2] < patch or enhanced.shape[-1] < patch:
        raise ValueError(f"exposure_loss: image {tuple(enhanced.shape)} smaller than the {patch}x{patch} patch")
    pooled = F.avg_pool2d(enhanced.mean(1, keepdim=True), patch)
    t = torch.as_tensor(target_brightness, dtype=pooled.dtype, device=pooled.device)
    if t.dim() == 1:
        t = t.view(-1, 1, 1, 1)
    return ((pooled - t) ** 2).mean()


def light_loss(r: torch.Tensor, image: torch.Tensor, is_night: bool, day_mean_brightness=None,
               w_tv: float = 10.0, w_exp: float = 1.0, w_ssim: float = 1.0) -> torch.Tensor:
    """L_light-day = 10 TV(r) + SSIM(I + r, I)             (eq. 1, is_night False)
    L_light-night = 10 TV(r) + L_exp(I + r) + SSIM(I + r, I)  (eq. 2, is_night True; needs the paired
    day image's mean brightness, a float or (B,) tensor). SSIM is the mean of the ssim() loss map."""
    # eq. (1) / eq. (2)
    _check_same_shape("light_loss", r, image)
    enhanced = image + r
    loss = w_tv * tv_loss(r) + w_ssim * ssim(enhanced, image).mean()
    if is_night:
        if day_mean_brightness is None:
            raise ValueError("light_loss: is_night=True needs day_mean_brightness (of the paired day image)")
        loss = loss + w_exp * exposure_loss(enhanced, day_mean_brightness)
    return loss


def light_loss_total(day: torch.Tensor | None, night: torch.Tensor | None) -> torch.Tensor | None:
    """L_light = L_light-day + L_light-night (None terms are off)."""
    # eq. (3)
    return _sum_terms([day, night])


# ---------------------------------------------------------------------------------------------
# Consistency, distillation
# ---------------------------------------------------------------------------------------------

def cst_real_loss(depth_day_real: torch.Tensor, depth_night_syn: torch.Tensor) -> torch.Tensor:
    """L_cst-real = mean (D^d - D̄^n)^2, D^d detached (pseudo-label)."""
    # eq. (12)
    _check_same_shape("cst_real_loss", depth_day_real, depth_night_syn)
    return ((depth_day_real.detach() - depth_night_syn) ** 2).mean()


def cst_syn_loss(depth_day_syn: torch.Tensor, depth_night_real: torch.Tensor, sky_mask: torch.Tensor) -> torch.Tensor:
    """L_cst-syn = (1/N) sum (M (D̄^d - D^n))^2 over ALL N pixels (as the equation: masked pixels add 0),
    D̄^d detached; sky_mask M (B, 1, H, W) bool/float, 1 = keep (not sky)."""
    # eq. (13)
    _check_same_shape("cst_syn_loss", depth_day_syn, depth_night_real)
    if sky_mask.shape[0] != depth_day_syn.shape[0] or sky_mask.shape[-2:] != depth_day_syn.shape[-2:]:
        raise ValueError(f"cst_syn_loss: sky_mask {tuple(sky_mask.shape)} does not match depth "
                         f"{tuple(depth_day_syn.shape)}")
    m = sky_mask.to(depth_night_real.dtype)
    return ((m * (depth_day_syn.detach() - depth_night_real)) ** 2).mean()


def consistency_loss(depth_day_real=None, depth_night_syn=None, depth_day_syn=None, depth_night_real=None,
                     sky_mask=None) -> torch.Tensor | None:
    """L_cst = L_cst-real + L_cst-syn; a pair given as None is off (None when both are). Depths (B, 1, H, W)."""
    # eq. (14)
    real = None if depth_day_real is None or depth_night_syn is None else cst_real_loss(depth_day_real, depth_night_syn)
    syn = None
    if depth_day_syn is not None and depth_night_real is not None:
        if sky_mask is None:
            raise ValueError("consistency_loss: the synthetic-day/real-night pair needs sky_mask (eq. 13)")
        syn = cst_syn_loss(depth_day_syn, depth_night_real, sky_mask)
    return _sum_terms([real, syn])


def distillation_loss(depth_day: torch.Tensor, teacher_depth: torch.Tensor) -> torch.Tensor:
    """L_ds = mean (D^d - D̂^d)^2 + (1 - mean SSIM(D^d, D̂^d)) over pixels where the teacher depth > 0.

    SSIM here is the SSIM value map 1 - 2 * ssim() (3x3, reflection padding), so 1 - mean SSIM =
    2 * mean ssim() loss map. Depths (B, 1, H, W) at the same resolution, teacher without gradient."""
    # eq. (15)
    _check_same_shape("distillation_loss", depth_day, teacher_depth)
    teacher_depth = teacher_depth.detach()
    valid = teacher_depth > 0
    if not valid.any():
        raise ValueError("distillation_loss: teacher depth has no valid (> 0) pixel")
    mse = ((depth_day - teacher_depth) ** 2)[valid].mean()
    one_minus_ssim = 2 * ssim(depth_day, teacher_depth)[valid].mean()
    return mse + one_minus_ssim


# ---------------------------------------------------------------------------------------------
# Segmentation, total
# ---------------------------------------------------------------------------------------------

def thresholded_ce(logits: torch.Tensor, topk_class: torch.Tensor, topk_prob: torch.Tensor,
                   tau: float = 0.1) -> torch.Tensor:
    """Cross-entropy against top-k soft labels, counting only (pixel, class) with y > tau:
    -sum 1[y > tau] y log softmax(logits) / (B H W), i.e. summed over classes, averaged over pixels.

    logits (B, C, H, W); topk_class (B, k, H, W) integer class ids; topk_prob (B, k, H, W) float in
    [0, 1] (uint8 is read as probability x 255, the shard format). Labels and logits must have the same
    H, W: resize the logits to the label size first (bilinear)."""
    # eq. (16)
    if topk_class.shape != topk_prob.shape or topk_class.dim() != 4:
        raise ValueError(f"thresholded_ce: topk_class {tuple(topk_class.shape)} and topk_prob "
                         f"{tuple(topk_prob.shape)} must both be (B, k, H, W)")
    if logits.dim() != 4 or logits.shape[0] != topk_class.shape[0] or logits.shape[-2:] != topk_class.shape[-2:]:
        raise ValueError(f"thresholded_ce: logits {tuple(logits.shape)} must be (B, C, H, W) with the labels' "
                         f"B, H, W {tuple(topk_class.shape)}: resize the logits first")
    cls = topk_class.long()
    if cls.numel() and (cls.min() < 0 or cls.max() >= logits.shape[1]):
        raise ValueError(f"thresholded_ce: class ids must be in [0, {logits.shape[1]}), "
                         f"got [{int(cls.min())}, {int(cls.max())}]")
    prob = topk_prob.to(logits.dtype) / 255.0 if topk_prob.dtype == torch.uint8 else topk_prob.to(logits.dtype)
    log_p = torch.gather(F.log_softmax(logits, 1), 1, cls)
    weight = torch.where(prob > tau, prob, torch.zeros_like(prob))
    b, _, h, w = logits.shape
    return -(weight * log_p).sum() / (b * h * w)


def seg_loss(day: torch.Tensor | None, syn_night: torch.Tensor | None,
             real_night: torch.Tensor | None) -> torch.Tensor | None:
    """L_seg = CE(y^d, p^d) + CE(y^d, p̄^n) + CE(y^n, p^n); None terms are off (None when all are)."""
    # eq. (17)
    return _sum_terms([day, syn_night, real_night])


def total_loss(terms: Mapping[str, torch.Tensor | None],
               weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """L = 0.01 L_light + L_sf + L_cst + L_ds + L_seg (DEFAULT_WEIGHTS, overridden by `weights`);
    None terms are skipped. Raises on an unknown term name or when every term is None."""
    # eq. (18)
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = set(terms) - set(w)
    if unknown:
        raise ValueError(f"total_loss: unknown loss terms {sorted(unknown)}, expected some of {sorted(w)}")
    total = _sum_terms([w[k] * v for k, v in terms.items() if v is not None])
    if total is None:
        raise ValueError("total_loss: every loss term is None")
    return total
