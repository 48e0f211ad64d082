"""pipeline.boxfilter.mean3x3: the same bits as F.avg_pool2d(x, 3, 1), forward and backward."""
import pytest
import torch
import torch.nn.functional as F

from pipeline.boxfilter import mean3x3
from pipeline.losses import SSIM_C1, SSIM_C2, ssim


def _both(x: torch.Tensor, grad: torch.Tensor):
    a = x.detach().clone().requires_grad_(True)
    b = x.detach().clone().requires_grad_(True)
    ya, yb = F.avg_pool2d(a, 3, 1), mean3x3(b)
    ya.backward(grad)
    yb.backward(grad)
    return ya, yb, a.grad, b.grad


@pytest.mark.parametrize("shape", [(2, 3, 98, 194), (1, 1, 3, 3), (3, 2, 7, 11), (1, 5, 34, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mean3x3_is_avg_pool_to_the_bit(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g, dtype=dtype) * 10 ** torch.randint(-3, 4, shape, generator=g)
    grad = torch.randn(*shape[:2], shape[2] - 2, shape[3] - 2, generator=g, dtype=dtype)
    ya, yb, ga, gb = _both(x, grad)
    assert yb.shape == ya.shape == grad.shape
    assert torch.equal(ya, yb)          # exact, not allclose: training must not change by a bit
    assert torch.equal(ga, gb)


def test_mean3x3_hand_values_and_signed_zero():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # window means of a ramp: the centre values 5, 6, 9, 10
    assert torch.equal(mean3x3(x), torch.tensor([[[[5.0, 6.0], [9.0, 10.0]]]]))
    z = torch.full((1, 1, 3, 3), -0.0)
    out = mean3x3(z)
    assert torch.equal(torch.signbit(out), torch.signbit(F.avg_pool2d(z, 3, 1)))   # 0 + (-0.0) is +0.0


def test_mean3x3_channels_last_input():
    x = torch.randn(2, 3, 9, 8).contiguous(memory_format=torch.channels_last)
    ya, yb, ga, gb = _both(x, torch.randn(2, 3, 7, 6))
    assert torch.allclose(ya, yb, rtol=0, atol=1e-6) and torch.allclose(ga, gb, rtol=0, atol=1e-6)


def test_ssim_unchanged_to_the_bit():
    def reference(x, y):  # Monodepth2's SSIM module, on F.avg_pool2d
        x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
        mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
        sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
        sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
        sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
        n = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
        d = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
        return torch.clamp((1 - n / d) / 2, 0, 1)

    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 3, 24, 40, generator=g), torch.rand(2, 3, 24, 40, generator=g)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ra, rb = reference(a, y), ssim(b, y)
    ra.sum().backward()
    rb.sum().backward()
    assert torch.equal(ra, rb) and torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("shape", [(3, 9, 9), (1, 1, 2, 9), (1, 1, 9, 2)])
def test_mean3x3_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="mean3x3"):
        mean3x3(torch.zeros(shape))
