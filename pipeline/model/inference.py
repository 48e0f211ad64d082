"""Fast inference path for the student (`DepthSegNet`) and for Monodepth2's depth network.

    fast = inference_model(model)           # a trained DepthSegNet (eval-mode weights are read, not changed)
    out = fast(images)                      # (B, 3, H, W) in [0, 1]; H, W multiples of 32
    out[("disp", 0)], out[("seg", 0)]       # (B, 1, H, W) sigmoid disparity, (B, C, H, W) seg logits

    fast_md2 = inference_depth_model(md2)   # pipeline.teachers.monodepth2.Monodepth2 (encoder + depth_decoder)
    fast_md2(images)[("disp", 0)]

Both are drop-in replacements where the evaluation / pseudo-label code reads those keys: the student's
fast module takes `use_light=` and has `min_depth`, `max_depth`, `width`, `height` and `depth(disp)`;
the depth module keeps `height`, `width` (and `use_stereo`) of the Monodepth2 it came from. Outputs are
the eval-mode network's within float32 rounding (tests/test_inference.py); they are inference tensors
(the forward runs under `torch.inference_mode`). The student's seg logits are a strided view of the
heads' channels-last output unless `contiguous_outputs=True`.

What makes it fast (each change is exact up to float rounding; the source network is not modified):
- batch norm folded into the preceding conv (`fuse_conv_bn_weights`); the encoder's input normalisation
  (x - 0.45) / 0.225 folded into its first conv (its zero padding becomes a 0.45 padding of the image);
- on CPU (float32) every conv is one oneDNN call with its ReLU / sigmoid / tanh and, in the ResNet blocks
  and the decoders, an add fused in, on weights reordered once per input shape (`F.conv2d` reorders the
  weights on every call, which costs as much as the conv itself for the small layers); these are the
  fused ops Inductor emits (`torch.ops.mkldnn._convolution_pointwise`); elsewhere `F.conv2d`;
- channels-last activations;
- one encoder pass feeding both decoders, and the two decoders run as one network: their convs of the
  shared encoder features are one conv each, their own convs one grouped conv each, their scale-0 heads
  one conv (block-diagonal weights);
- "nearest upsample x2, concat the skip, reflection pad, 3x3 conv" without the upsampled tensor or the
  concat: the 3x3 conv of the reflection-padded nearest upsampling of a map equals a stride-2 transposed
  conv (4x4 kernel built from the 3x3 one, 4/9 of the multiply-adds) of the replicate-padded small map;
  its output is added, inside the same oneDNN call, to the 3x3 conv of the skip features;
- the decoders' ELU written straight into the padded buffer the next conv reads (no separate pad pass);
- only the requested output scales (default: scale 0, all the evaluation reads);
- the light net's last conv (7x7, 64 -> 3 channels, which oneDNN runs at a third of its usual speed)
  as a 1x7 conv to 21 channels (3 outputs x 7 rows) and a 7x1 conv with 0/1 weights summing the
  shifted rows (adding the bias, applying the tanh);
- `tune_allocator` (on by default): glibc keeps freed memory instead of mapping every large activation
  afresh (page faults on every forward pass); a process-wide setting, worth ~10-25 % here.

`torch.compile` is not used: on this 2-core CPU, Inductor (freezing on) took ~400 s to compile the eval
network, a cost every evaluation job would pay, for ~2.2x over eager: about what the path above gives.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from pipeline.allocator import tune_allocator
from pipeline.geometry import disp_to_depth
from pipeline.model.decoders import NUM_CH_DEC, MultiScaleDecoder

__all__ = ["inference_model", "inference_depth_model", "FastDepthSegNet", "FastDepthNet", "tune_allocator"]

_CL = torch.channels_last
_ACTS = {None: None, "relu": torch.relu_, "sigmoid": torch.sigmoid_, "tanh": torch.tanh_}
_MAX_PACKED = 8  # packed-weight cache entries per conv (one per input shape seen)


def _mkldnn_available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return (torch.backends.mkldnn.is_available() and ops is not None
                and hasattr(ops, "_convolution_pointwise") and hasattr(ops, "_reorder_convolution_weight"))
    except Exception:  # pragma: no cover - torch builds without the ops
        return False


_MKLDNN = _mkldnn_available()


# ----------------------------------------------------------------------------- fused convolutions
class FusedConv(nn.Module):
    """conv2d (zero padding `padding`, `stride`, `groups`) with its bias, then an optional activation
    ("relu", "sigmoid", "tanh"); `forward(x, residual)` adds `residual` before the activation.

    On CPU float32 this is one oneDNN call (`torch.ops.mkldnn._convolution_pointwise`, as Inductor emits)
    on the weight reordered once per input shape; elsewhere `F.conv2d` + the activation. With
    `transposed=True` it is a transposed conv (`output_padding`), weight layout (in, out/groups, kh, kw)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, padding: int = 0,
                 groups: int = 1, act: str | None = None, transposed: bool = False, output_padding: int = 0):
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"FusedConv: act must be one of {sorted(a for a in _ACTS if a)} or None, got {act!r}")
        self.register_buffer("weight", weight.detach().clone().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone().contiguous())
        self.stride, self.padding, self.groups, self.act = int(stride), int(padding), int(groups), act
        self.transposed, self.output_padding = bool(transposed), int(output_padding)
        self._packed: dict = {}

    def _apply(self, fn, *args, **kwargs):  # .to(device / dtype) invalidates the packed weights
        self._packed = {}
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):  # copy / pickle without the (opaque oneDNN) packed weights
        state = self.__dict__.copy()
        state["_packed"] = {}
        return state

    def _use_mkldnn(self, x: torch.Tensor) -> bool:
        return (_MKLDNN and x.device.type == "cpu" and x.dtype == torch.float32
                and self.weight.dtype == torch.float32 and not torch.is_grad_enabled()
                and not (self.transposed and not hasattr(torch.ops.mkldnn, "_convolution_transpose_pointwise")))

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        w = self._packed.get(key)
        if w is None:
            if len(self._packed) >= _MAX_PACKED:
                self._packed.clear()
            p, s = [self.padding] * 2, [self.stride] * 2
            if self.transposed:
                w = torch.ops.mkldnn._reorder_convolution_transpose_weight(
                    self.weight, p, [self.output_padding] * 2, s, [1, 1], self.groups, list(key))
            else:
                w = torch.ops.mkldnn._reorder_convolution_weight(self.weight, p, s, [1, 1], self.groups, list(key))
            self._packed[key] = w
        return w

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if residual is not None and self.transposed:
            raise ValueError("FusedConv: no residual add for a transposed conv")
        mkldnn_failed = False
        if self._use_mkldnn(x):
            try:
                return self._mkldnn_forward(x, residual)
            except RuntimeError:  # e.g. a oneDNN build without this fusion: F.conv2d (below) from now on
                mkldnn_failed = True
        y = self._reference_forward(x, residual)
        if mkldnn_failed:
            global _MKLDNN
            _MKLDNN = False
        return y

    def _reference_forward(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        if self.transposed:
            y = F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                   self.groups)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        if residual is not None:
            y = y + residual
        act = _ACTS[self.act]
        return y if act is None else act(y)

    def _mkldnn_forward(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        p, s = [self.padding] * 2, [self.stride] * 2
        w, attr = self._packed_weight(x), self.act or "none"
        if self.transposed:
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x, w, self.bias, p, [self.output_padding] * 2, s, [1, 1], self.groups, attr, [], "")
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x, w, self.bias, p, s, [1, 1], self.groups, attr, [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, w, self.bias, p, s, [1, 1], self.groups, "add", None, self.act, [], "")


def _fold(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of `conv` with the eval-mode batch norm `bn` (running statistics) folded in."""
    w, b = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
    if bn is None:
        return w, b
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError("inference_model: batch norm without running statistics cannot be folded")
    transposed = isinstance(conv, nn.ConvTranspose2d)
    bn_w = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_mean)
    bn_b = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_mean)
    w, b = fuse_conv_bn_weights(w, b, bn.running_mean, bn.running_var, bn.eps, bn_w, bn_b, transpose=transposed)
    return w.detach(), b.detach()


def _conv(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, act: str | None = None) -> FusedConv:
    """`FusedConv` of a zero-padded nn.Conv2d (+ folded batch norm)."""
    if conv.padding_mode != "zeros" or conv.dilation != (1, 1) or len(set(conv.stride)) != 1 \
            or len(set(conv.padding)) != 1:
        raise ValueError(f"inference_model: unsupported conv {conv}")
    w, b = _fold(conv, bn)
    return FusedConv(w, b, conv.stride[0], conv.padding[0], conv.groups, act)


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=_CL)


# ----------------------------------------------------------------------------- light net
class FastLightNet(nn.Module):
    """`LightNet` folded: returns the ENHANCED image I + r (not r)."""

    def __init__(self, light: nn.Module):
        super().__init__()
        m = list(light.model)
        kinds = [type(layer) for layer in m]
        expected = [nn.ReflectionPad2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU,
                    nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.ReflectionPad2d, nn.Conv2d, nn.Tanh]
        if kinds != expected:
            raise ValueError("inference_model: light net layout differs from pipeline.model.light.LightNet")
        self.pad_in = int(m[0].padding[0])
        self.conv1 = _conv(m[1], m[2], "relu")
        self.conv2 = _conv(m[4], m[5], "relu")
        ct = m[7]
        if len({*ct.stride}) != 1 or len({*ct.padding}) != 1 or len({*ct.output_padding}) != 1 \
                or ct.dilation != (1, 1):
            raise ValueError(f"inference_model: unsupported transposed conv {ct}")
        w, b = _fold(ct, m[8])
        self.up = FusedConv(w, b, ct.stride[0], ct.padding[0], ct.groups, "relu", transposed=True,
                            output_padding=ct.output_padding[0])
        self.pad_out = int(m[10].padding[0])
        last = m[11]
        k = last.kernel_size[0]
        if last.kernel_size != (k, k) or last.stride != (1, 1) or last.padding != (0, 0) or last.groups != 1:
            raise ValueError(f"inference_model: unsupported last light conv {last}")
        self.c_out = last.out_channels
        # 1 x k conv to (rows x out channels): channel dy * C + c holds row dy's taps of output c
        w_rows = last.weight.detach().permute(2, 0, 1, 3).reshape(k * self.c_out, last.in_channels, 1, k)
        self.rows = FusedConv(w_rows, None)
        # then output c = sum over dy of channel dy * C + c shifted up by dy rows: a k x 1 conv with 0/1
        # weights (1/21 of the multiply-adds), which also adds the bias and applies the tanh
        select = w_rows.new_zeros(self.c_out, k * self.c_out, k, 1)
        for dy in range(k):
            for c in range(self.c_out):
                select[c, dy * self.c_out + c, dy, 0] = 1.0
        bias = last.bias.detach() if last.bias is not None else w_rows.new_zeros(self.c_out)
        self.shift_sum = FusedConv(select, bias, act="tanh")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        p, q = self.pad_in, self.pad_out
        x = self.conv1(_cl(F.pad(image, (p, p, p, p), mode="reflect")))
        x = self.up(self.conv2(x))
        r = self.shift_sum(self.rows(_cl(F.pad(x, (q, q, q, q), mode="reflect"))))
        return image + r


# ----------------------------------------------------------------------------- encoder
class FastResnetEncoder(nn.Module):
    """`ResnetEncoder` with batch norm and the input normalisation folded: image in [0, 1] -> 5 features."""

    NORM_MEAN, NORM_STD = 0.45, 0.225

    def __init__(self, encoder: nn.Module):
        super().__init__()
        from torchvision.models.resnet import BasicBlock, Bottleneck

        e = encoder.encoder
        self.in_channels = 3 * int(getattr(encoder, "num_input_images", 1))
        c1 = e.conv1
        if c1.padding_mode != "zeros" or c1.padding[0] != c1.padding[1] or c1.stride[0] != c1.stride[1]:
            raise ValueError(f"inference_model: unsupported first conv {c1}")
        w, b = _fold(c1, e.bn1)
        # conv(w, (x - m) / s) with zero padding == conv(w / s, x padded with m) - (m / s) * sum(w)
        self.stem_pad = int(c1.padding[0])
        self.stem = FusedConv(w / self.NORM_STD, b - (self.NORM_MEAN / self.NORM_STD) * w.sum(dim=(1, 2, 3)),
                              c1.stride[0], 0, c1.groups, "relu")
        mp = e.maxpool
        self.maxpool = nn.MaxPool2d(mp.kernel_size, mp.stride, mp.padding, mp.dilation, ceil_mode=mp.ceil_mode)
        self.layers = nn.ModuleList()
        for layer in (e.layer1, e.layer2, e.layer3, e.layer4):
            blocks = nn.ModuleList()
            for blk in layer:
                convs = nn.ModuleList()
                if isinstance(blk, BasicBlock):
                    convs.append(_conv(blk.conv1, blk.bn1, "relu"))
                    convs.append(_conv(blk.conv2, blk.bn2, "relu"))
                elif isinstance(blk, Bottleneck):
                    convs.append(_conv(blk.conv1, blk.bn1, "relu"))
                    convs.append(_conv(blk.conv2, blk.bn2, "relu"))
                    convs.append(_conv(blk.conv3, blk.bn3, "relu"))
                else:
                    raise ValueError(f"inference_model: unsupported ResNet block {type(blk).__name__}")
                down = None
                if blk.downsample is not None:
                    ds = list(blk.downsample)
                    if len(ds) != 2 or not isinstance(ds[0], nn.Conv2d) or not isinstance(ds[1], nn.BatchNorm2d):
                        raise ValueError("inference_model: unsupported ResNet downsample")
                    down = _conv(ds[0], ds[1])
                blocks.append(nn.ModuleDict({"convs": convs, **({"down": down} if down is not None else {})}))
            self.layers.append(blocks)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"ResnetEncoder: expected (B, {self.in_channels}, H, W), got {tuple(image.shape)}")
        p = self.stem_pad
        x = _cl(F.pad(image, (p, p, p, p), value=self.NORM_MEAN))
        f0 = self.stem(x)
        feats = [f0]
        x = self.maxpool(f0)
        for blocks in self.layers:
            for blk in blocks:
                convs = blk["convs"]
                identity = blk["down"](x) if "down" in blk else x
                y = x
                for conv in convs[:-1]:
                    y = conv(y)
                x = convs[-1](y, _cl(identity))
            feats.append(x)
        return feats


# ----------------------------------------------------------------------------- decoders
# A 3x3 conv (taps k = 0, 1, 2 along one axis) of a nearest-upsampled map u (u[y] = a[y // 2], reflection
# padded: u[-1] = a[0], u[2h] = a[h - 1], i.e. a replicate-padded a_r with a_r[j] = a[j - 1]) is, for even
# output rows 2m, w0 a_r[m] + (w1 + w2) a_r[m + 1] and, for odd rows 2m + 1, (w0 + w1) a_r[m + 1] + w2 a_r[m + 2]:
# per phase a 2-tap conv of a_r starting at row m + phase. _PHASE[phase][t, k] maps the 3 taps onto the 2.
_PHASE = (torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


def _upsample_conv_weights(w: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin, 3, 3) weight of a 3x3 conv applied to the reflection-padded nearest x2 upsampling of a
    map a -> (Cin, Cout, 4, 4) weight of the equivalent transposed conv (stride 2, padding 3) of the
    replicate-padded a. Output phase (py, px) tap (ty, tx) (a_r rows m + py + ty) sits at kernel
    position (3 - py - 2 ty, 3 - px - 2 tx)."""
    out = w.new_zeros(w.shape[1], w.shape[0], 4, 4)
    for py in (0, 1):
        for px in (0, 1):
            ky, kx = _PHASE[py].to(w), _PHASE[px].to(w)
            phase = torch.einsum("ak,bl,oikl->ioab", ky, kx, w)  # (Cin, Cout, 2, 2)
            for ty in (0, 1):
                for tx in (0, 1):
                    out[:, :, 3 - py - 2 * ty, 3 - px - 2 * tx] = phase[:, :, ty, tx]
    return out


class FastDecoders(nn.Module):
    """One or more `MultiScaleDecoder`s on the same encoder features, run as one network.

    Their features are kept stacked along channels (decoder 0's, then decoder 1's, ...). forward returns,
    per decoder, {scale: raw head output} for `scales`."""

    def __init__(self, decoders: list[MultiScaleDecoder], scales=(0,)):
        super().__init__()
        self.scales = sorted({int(s) for s in scales})
        if not self.scales or not set(self.scales) <= {0, 1, 2, 3}:
            raise ValueError(f"inference_model: scales must be a non-empty subset of 0..3, got {scales}")
        enc = decoders[0].num_ch_enc
        use_skips = decoders[0].use_skips
        for d in decoders:
            if d.num_ch_enc != enc or d.use_skips != use_skips:
                raise ValueError("inference_model: the decoders must share encoder channels and use_skips")
            for block in d.decoder[:10]:
                if not (isinstance(block.nonlin, nn.ELU) and block.nonlin.alpha == 1.0):
                    raise ValueError("inference_model: decoder blocks must use ELU(alpha=1)")
            missing = set(self.scales) - set(d.scales)
            if missing:
                raise ValueError(f"inference_model: a decoder has no head at scales {sorted(missing)}")
        self.n, self.use_skips = len(decoders), use_skips
        self.num_out = [d.num_output_channels for d in decoders]
        n = self.n
        self.pre, self.up, self.skip = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(4, -1, -1):
            c = NUM_CH_DEC[i]
            # upconv(i, 0): at i = 4 all decoders read the same f4 (one conv), below each its own (grouped)
            w0 = torch.cat([d.upconv(i, 0).conv.conv.weight.detach() for d in decoders], 0)
            b0 = torch.cat([d.upconv(i, 0).conv.conv.bias.detach() for d in decoders], 0)
            self.pre.append(FusedConv(w0, b0, groups=1 if i == 4 else n))
            # upconv(i, 1) = conv of cat(up(a), skip): a transposed conv of a (grouped) + one conv of the
            # skip features (all decoders at once) with the transposed conv's output added in the same call
            w1 = [d.upconv(i, 1).conv.conv.weight.detach() for d in decoders]
            b1 = [d.upconv(i, 1).conv.conv.bias.detach() for d in decoders]
            self.up.append(FusedConv(torch.cat([_upsample_conv_weights(w[:, :c]) for w in w1], 0),
                                     torch.cat(b1, 0), stride=2, padding=3, groups=n, transposed=True))
            has_skip = use_skips and i > 0
            self.skip.append(FusedConv(torch.cat([w[:, c:] for w in w1], 0), None) if has_skip else nn.Identity())
        # heads: one conv over the stacked features, block-diagonal (decoder d's outputs read only its channels)
        self.heads = nn.ModuleDict()
        for s in self.scales:
            c = NUM_CH_DEC[s]
            ref = decoders[0].head(s).conv.weight
            w = ref.new_zeros(sum(self.num_out), n * c, 3, 3)
            b = ref.new_zeros(sum(self.num_out))
            o = 0
            for j, d in enumerate(decoders):
                conv = d.head(s).conv
                w[o:o + conv.out_channels, j * c:(j + 1) * c] = conv.weight.detach()
                b[o:o + conv.out_channels] = conv.bias.detach()
                o += conv.out_channels
            if n == 1 and self.num_out[0] == 1 and isinstance(decoders[0], _sigmoid_decoders()):
                self.heads[str(s)] = FusedConv(w, b, act="sigmoid")
            else:
                self.heads[str(s)] = FusedConv(w, b)
        self.sigmoid_in_head = n == 1 and self.num_out[0] == 1 and isinstance(decoders[0], _sigmoid_decoders())

    def forward(self, features: list[torch.Tensor]) -> list[dict[int, torch.Tensor]]:
        if len(features) != 5:
            raise ValueError(f"decoder: expected the 5 encoder features, got {len(features)}")
        n = self.n
        outs = [{} for _ in range(n)]
        xp = _cl(F.pad(features[-1], (1, 1, 1, 1), mode="reflect"))  # the next conv's padded input
        lowest = self.scales[0]
        for k, i in enumerate(range(4, -1, -1)):
            if i < lowest:
                break
            a = _elu_padded(self.pre[k](xp), "replicate")
            x = self.up[k](a)  # (B, n*c, 2h, 2w)
            if self.use_skips and i > 0:
                x = self.skip[k](_cl(F.pad(features[i - 1], (1, 1, 1, 1), mode="reflect")), _cl(x))
            xp = _elu_padded(x, "reflect")
            if i in self.scales:
                y = self.heads[str(i)](xp)
                o = 0
                for j in range(n):
                    outs[j][i] = y[:, o:o + self.num_out[j]]
                    o += self.num_out[j]
        return outs


def _elu_padded(x: torch.Tensor, mode: str) -> torch.Tensor:
    """F.pad(F.elu(x), (1, 1, 1, 1), mode) ("reflect" or "replicate") in one pass over x: the ELU is
    written into the interior of a channels-last buffer, then its one-pixel border is copied in."""
    b, c, h, w = x.shape
    if h < 2 or w < 2:
        return _cl(F.pad(F.elu(x), (1, 1, 1, 1), mode=mode))
    buf = torch.empty((b, h + 2, w + 2, c), dtype=x.dtype, device=x.device)  # NHWC storage
    torch.ops.aten.elu.out(x.permute(0, 2, 3, 1), 1.0, 1, 1, out=buf[:, 1:-1, 1:-1])
    src = 2 if mode == "reflect" else 1  # the column / row the border copies
    buf[:, 1:-1, 0] = buf[:, 1:-1, src]
    buf[:, 1:-1, -1] = buf[:, 1:-1, -1 - src]
    buf[:, 0] = buf[:, src]
    buf[:, -1] = buf[:, -1 - src]
    return buf.permute(0, 3, 1, 2)


def _sigmoid_decoders():
    from pipeline.model.decoders import DepthDecoder
    return (DepthDecoder,)


def _finish_disp(x: torch.Tensor, fused: bool) -> torch.Tensor:
    """Sigmoid disparity as a contiguous (B, 1, H, W) tensor."""
    return x.contiguous() if fused else torch.sigmoid(x).contiguous()


# ----------------------------------------------------------------------------- public modules
class FastDepthSegNet(nn.Module):
    """Inference-only student. forward(image, use_light=True) -> {("disp", s): sigmoid disparity
    (B, 1, H/2**s, W/2**s), ("seg", s): logits (B, C, H/2**s, W/2**s)} for s in `scales` (default 0),
    as `DepthSegNet(image)[("disp", s)]` / `[("seg", s)]` in eval mode. The disparity is a contiguous
    tensor; the logits are a strided view of the heads' channels-last output (any torch op takes it;
    a copy to NCHW costs as much as a small conv) unless `contiguous_outputs`."""

    def __init__(self, model: nn.Module, scales=(0,), tune_malloc: bool = True, contiguous_outputs: bool = False):
        super().__init__()
        self.light = FastLightNet(model.light) if getattr(model, "light", None) is not None else None
        self.encoder = FastResnetEncoder(model.encoder)
        self.decoders = FastDecoders([model.depth_decoder, model.seg_decoder], scales)
        self.scales = self.decoders.scales
        self.min_depth, self.max_depth = float(model.min_depth), float(model.max_depth)
        self.width, self.height = getattr(model, "width", None), getattr(model, "height", None)
        self.num_classes = self.decoders.num_out[1]
        self.tune_malloc, self.contiguous_outputs = bool(tune_malloc), bool(contiguous_outputs)

    def forward(self, image: torch.Tensor, use_light: bool = True) -> dict:
        _check_image(image)
        if self.tune_malloc:
            tune_allocator()
        with torch.inference_mode():
            x = self.light(image) if (use_light and self.light is not None) else image
            depth, seg = self.decoders(self.encoder(x))
            out = {}
            for s in self.scales:
                out[("disp", s)] = torch.sigmoid(depth[s]).contiguous()
                out[("seg", s)] = seg[s].contiguous() if self.contiguous_outputs else seg[s]
            return out

    def depth(self, disp: torch.Tensor) -> torch.Tensor:
        """Sigmoid disparity -> depth in [min_depth, max_depth] (as `DepthSegNet.depth`)."""
        return disp_to_depth(disp, self.min_depth, self.max_depth)[1]


class FastDepthNet(nn.Module):
    """Inference-only Monodepth2 depth network: forward(image) -> {("disp", s): sigmoid disparity
    (B, 1, H/2**s, W/2**s)} for s in `scales` (default 0), as `Monodepth2(image)` in eval mode."""

    def __init__(self, model: nn.Module, scales=(0,), tune_malloc: bool = True):
        super().__init__()
        self.encoder = FastResnetEncoder(model.encoder)
        self.decoders = FastDecoders([model.depth_decoder], scales)
        self.scales = self.decoders.scales
        self.height, self.width = getattr(model, "height", None), getattr(model, "width", None)
        if hasattr(model, "use_stereo"):
            self.use_stereo = model.use_stereo
        self.tune_malloc = bool(tune_malloc)

    def forward(self, image: torch.Tensor) -> dict:
        _check_image(image)
        if self.tune_malloc:
            tune_allocator()
        with torch.inference_mode():
            (disp,) = self.decoders(self.encoder(image))
            fused = self.decoders.sigmoid_in_head
            return {("disp", s): _finish_disp(disp[s], fused) for s in self.scales}


def _check_image(image: torch.Tensor) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"inference model: expected a (B, 3, H, W) image, got {tuple(image.shape)}")
    if image.shape[2] % 32 or image.shape[3] % 32:
        raise ValueError(f"inference model: H and W must be multiples of 32, got {tuple(image.shape[2:])}")


def inference_model(model: nn.Module, scales=(0,), tune_malloc: bool = True,
                    contiguous_outputs: bool = False) -> FastDepthSegNet:
    """The trained student `model` (a `DepthSegNet`; its batch norms' running statistics are used, as in
    eval mode, whatever mode it is in) -> an inference-only `FastDepthSegNet` in eval mode on the model's
    device. `scales`: the output scales to compute (the evaluation reads scale 0 only). `tune_malloc`:
    call `tune_allocator()` (process-wide glibc setting) at the first forward. `contiguous_outputs`:
    return the seg logits as a contiguous NCHW tensor (default: a strided view). The model is not changed."""
    device = next(model.parameters()).device
    with torch.no_grad():
        fast = FastDepthSegNet(model, scales, tune_malloc, contiguous_outputs)
    return fast.to(device).eval()


def inference_depth_model(model: nn.Module, scales=(0,), tune_malloc: bool = True) -> FastDepthNet:
    """A Monodepth2 depth network (anything with `encoder`: ResnetEncoder and `depth_decoder`: DepthDecoder,
    e.g. `pipeline.teachers.monodepth2.Monodepth2`) -> an inference-only `FastDepthNet` in eval mode on the
    model's device, keeping its `height`, `width` (what `predict_depth` resizes to). The pose network is
    not part of it. The model is not changed."""
    device = next(model.encoder.parameters()).device
    with torch.no_grad():
        fast = FastDepthNet(model, scales, tune_malloc)
    return fast.to(device).eval()
