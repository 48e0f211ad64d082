"""The 3x3 mean of SSIM (eq. 6), fast on the CPU and bit-identical to ``F.avg_pool2d(x, 3, 1)``.

PyTorch's CPU kernel for a contiguous (B, C, H, W) tensor sums each window in a scalar loop; at the
demo's 192x96 it took 13.5 % of a student training step (torch.profiler) and 5.5 ms against 1.0 ms here
for the mean of a batch of two RGB images, forward + backward (`python -m benchmarks.ssim`). Here the window
sum is nine shifted whole-tensor adds, in the kernel's order (row by row from a zero start, then a
division by 9), and the backward adds grad / 9 back in the kernel's order (output positions row by
row), so forward and backward give the same bits as PyTorch's and training is unchanged to the bit
(`tests/test_boxfilter.py` checks both). Other devices and dtypes use ``F.avg_pool2d`` itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class _Mean3x3(torch.autograd.Function):
    """(B, C, H, W) -> (B, C, H - 2, W - 2): the mean of each 3x3 window (no padding, stride 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] - 2, x.shape[-1] - 2
        # the kernel's `sum = 0; sum += x[ih, iw]` over the window row by row: start from 0 + x
        # (not a copy of x, so that -0.0 becomes +0.0 exactly as there)
        s = x[..., 0:h, 0:w] + 0.0
        for kh in range(3):
            for kw in range(3):
                if kh or kw:
                    s.add_(x[..., kh:kh + h, kw:kw + w])
        ctx.in_shape = x.shape
        return s.div_(9)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # the kernel: for each output (oh, ow) row by row, grad_in[oh + kh, ow + kw] += grad[oh, ow] / 9;
        # an input pixel receives from the outputs above-left of it first, i.e. kh, kw descending
        delta = grad / 9
        h, w = grad.shape[-2], grad.shape[-1]
        grad_in = grad.new_zeros(ctx.in_shape)
        for kh in (2, 1, 0):
            for kw in (2, 1, 0):
                grad_in[..., kh:kh + h, kw:kw + w] += delta
        return grad_in


def mean3x3(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 3, 1)`` of a (B, C, H, W) tensor, H and W >= 3; same values and gradients."""
    if x.dim() != 4 or x.shape[-2] < 3 or x.shape[-1] < 3:
        raise ValueError(f"mean3x3: expected a (B, C, H, W) tensor with H, W >= 3, got {tuple(x.shape)}")
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return F.avg_pool2d(x, 3, 1)
    return _Mean3x3.apply(x)
