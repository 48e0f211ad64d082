"""CycleGAN day <-> night translation, as the reference implementation builds and trains it.

Networks, losses and schedule follow junyanz/pytorch-CycleGAN-and-pix2pix (`models/networks.py`,
`models/cycle_gan_model.py`) with its defaults for `--model cycle_gan`: ResNet generator with
instance norm without affine parameters (so its convs carry biases), reflection padding, no
dropout, tanh output in [-1, 1]; 70x70 PatchGAN discriminator; LSGAN loss; cycle weight 10;
identity weight 0.5 x 10; image pool of 50; Adam 2e-4, betas (0.5, 0.999); constant learning rate
for `n_epochs` epochs, then linear decay over `n_epochs_decay` epochs; weights N(0, 0.02).
The generator's module order is the reference's, so state dicts share key names
(`model.1.weight`, `model.10.conv_block.1.weight`, ...) and load in both directions.

Naming: domain A is day, B is night. G_day2night is the reference's G_A, G_night2day its G_B;
D_night (the reference's D_A) judges night images, D_day (D_B) day images.
"""
from __future__ import annotations

import itertools
import logging
import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import checkpoints
from pipeline.checkpoints import TrainingState
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


# ----------------------------------------------------------------------------- networks
def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    """The reference's `norm='instance'`: no affine parameters, no running statistics."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """Residual block: x + [pad, conv3x3, IN, ReLU, pad, conv3x3, IN] (reference layout, no dropout)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            _instance_norm(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            _instance_norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """The reference ResNet generator (`resnet_9blocks` for n_blocks=9): 2 stride-2 downsamplings,
    `n_blocks` residual blocks at 4x ngf channels, 2 transposed-conv upsamplings, tanh output.

    Input and output are (B, C, H, W) in [-1, 1]; H and W must be multiples of 4 for the output
    to have the input's size. ngf=64, n_blocks=9: 48 state-dict keys, 11,378,179 parameters."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        if n_blocks < 0 or ngf < 1:
            raise ValueError(f"ResnetGenerator: need ngf >= 1 and n_blocks >= 0, got ngf={ngf}, n_blocks={n_blocks}")
        self.input_nc, self.output_nc, self.ngf, self.n_blocks = input_nc, output_nc, ngf, n_blocks
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=True),
                                   _instance_norm(ngf), nn.ReLU(True)]
        for i in range(2):  # downsampling
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, kernel_size=3, stride=2, padding=1, bias=True),
                       _instance_norm(2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):  # upsampling
            c = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=True),
                       _instance_norm(c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """The reference PatchGAN discriminator (n_layers=3: 70x70 receptive field), instance norm.

    Returns a (B, 1, h, w) map of raw scores (LSGAN: no sigmoid)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=2, padding=1, bias=True),
                       _instance_norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=1, padding=1, bias=True),
                   _instance_norm(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The reference's `init_type='normal'`: conv / linear weights N(0, gain), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


# ----------------------------------------------------------------------------- image pool
class ImagePool:
    """The reference's history of generated images (Shrivastava et al.): the discriminator sees a
    fake from the pool instead of the newest one with probability 0.5 once the pool is full.

    `rng` (a numpy Generator) makes the choice reproducible; its state is saved with checkpoints."""

    def __init__(self, pool_size: int = 50, rng: np.random.Generator | None = None):
        self.pool_size = int(pool_size)
        self.images: list[torch.Tensor] = []
        self.rng = rng if rng is not None else np.random.default_rng()

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch of the same size: each image is stored while the pool fills; once full,
        with p = 0.5 a random stored image is returned and replaced by the new one."""
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image)
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                i = int(self.rng.integers(0, self.pool_size))
                out.append(self.images[i].clone())
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out, 0)


# ----------------------------------------------------------------------------- losses
def lsgan_loss(pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """LSGAN objective (reference `gan_mode='lsgan'`): MSE of the patch scores against 1 (real) or 0 (fake)."""
    target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
    return nn.functional.mse_loss(pred, target)


def discriminator_loss(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Reference `backward_D_basic`: 0.5 * (LSGAN(D(real), 1) + LSGAN(D(fake), 0)), fake detached."""
    return 0.5 * (lsgan_loss(D(real), True) + lsgan_loss(D(fake.detach()), False))


def generator_losses(nets: dict, real_day: torch.Tensor, real_night: torch.Tensor,
                     lambda_cycle: float = 10.0, lambda_identity: float = 0.5) -> tuple[dict, dict]:
    """Reference `backward_G`: adversarial + lambda * L1 cycle + lambda_identity * lambda * L1 identity,
    both directions. Returns (loss terms, fakes for the discriminators)."""
    g_d2n, g_n2d = nets["G_day2night"], nets["G_night2day"]
    fake_night, fake_day = g_d2n(real_day), g_n2d(real_night)
    rec_day, rec_night = g_n2d(fake_night), g_d2n(fake_day)
    l1 = nn.functional.l1_loss
    terms = {
        "G_day2night": lsgan_loss(nets["D_night"](fake_night), True),
        "G_night2day": lsgan_loss(nets["D_day"](fake_day), True),
        "cycle_day": l1(rec_day, real_day) * lambda_cycle,
        "cycle_night": l1(rec_night, real_night) * lambda_cycle,
    }
    if lambda_identity > 0:
        terms["idt_day2night"] = l1(g_d2n(real_night), real_night) * lambda_cycle * lambda_identity
        terms["idt_night2day"] = l1(g_n2d(real_day), real_day) * lambda_cycle * lambda_identity
    return terms, {"fake_night": fake_night, "fake_day": fake_day}


def lr_factor(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """Reference `lr_policy='linear'` (epoch_count 1) for 0-based `epoch`: 1 for the first
    `n_epochs` epochs, then 1 - k / (n_epochs_decay + 1) in the k-th decay epoch."""
    return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


# ----------------------------------------------------------------------------- data
def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1] (the reference's Normalize(0.5, 0.5))."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), rounded and clipped."""
    x = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sample_crops(images, n: int, crop: int, rng: np.random.Generator) -> np.ndarray:
    """`n` random (crop, crop, 3) patches from random rows of `images` (uint8 (N, H, W, 3), numpy or
    zarr), each flipped horizontally with p = 0.5 (the reference's crop + flip preprocessing)."""
    num, h, w = images.shape[0], images.shape[1], images.shape[2]
    out = np.empty((n, crop, crop, 3), np.uint8)
    for k in range(n):
        i = int(rng.integers(0, num))
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        patch = np.asarray(images[i, y:y + crop, x:x + crop])
        out[k] = patch[:, ::-1] if rng.uniform() < 0.5 else patch
    return out


def _check_images(images, name: str) -> None:
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[3] != 3 or shape[0] == 0 or np.dtype(images.dtype) != np.uint8:
        raise ValueError(f"{name}: expected non-empty uint8 images (N, H, W, 3), got {np.dtype(images.dtype)} {shape}")


def _effective_crop(crop: int, *shapes) -> int:
    """The largest multiple of 4 that is <= crop and fits every image size."""
    limit = min(min(s[1], s[2]) for s in shapes)
    c = min(int(crop), limit) // 4 * 4
    if c < 4:
        raise ValueError(f"images of {limit} pixels are too small for a crop (need at least 4)")
    if c != crop:
        log.warning("crop %d does not fit the images (smallest side %d) or is not a multiple of 4: using %d",
                    crop, limit, c)
    return c


# ----------------------------------------------------------------------------- training
def build_cyclegan(ngf: int, n_blocks: int, seed: int, device: torch.device) -> dict[str, nn.Module]:
    """Two generators and two discriminators, initialised N(0, 0.02) from `seed`."""
    torch.manual_seed(seed)
    nets = {
        "G_day2night": ResnetGenerator(3, 3, ngf, n_blocks),
        "G_night2day": ResnetGenerator(3, 3, ngf, n_blocks),
        "D_night": NLayerDiscriminator(3, 64, 3),
        "D_day": NLayerDiscriminator(3, 64, 3),
    }
    return {k: init_weights(v).to(device) for k, v in nets.items()}


def train_step(nets: dict, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, pools: dict,
               real_day: torch.Tensor, real_night: torch.Tensor) -> dict[str, float]:
    """One reference `optimize_parameters`: update both generators (discriminators frozen), then
    both discriminators on pooled fakes. Returns the loss terms as floats."""
    discriminators = (nets["D_night"], nets["D_day"])
    for d in discriminators:
        d.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    terms, fakes = generator_losses(nets, real_day, real_night)
    sum(terms.values()).backward()
    opt_g.step()
    for d in discriminators:
        d.requires_grad_(True)
    opt_d.zero_grad(set_to_none=True)
    terms["D_night"] = discriminator_loss(nets["D_night"], real_night, pools["fake_night"].query(fakes["fake_night"]))
    terms["D_day"] = discriminator_loss(nets["D_day"], real_day, pools["fake_day"].query(fakes["fake_day"]))
    (terms["D_night"] + terms["D_day"]).backward()
    opt_d.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def _checkpoint_state(epoch, settings, nets, opt_g, opt_d, pools, rng) -> dict:
    return {
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "settings": settings,
        "nets": {k: v.state_dict() for k, v in nets.items()},
        "opt_G": opt_g.state_dict(),
        "opt_D": opt_d.state_dict(),
        "pools": {k: [t.cpu() for t in p.images] for k, p in pools.items()},
        "rng": {"data": rng.bit_generator.state,
                **{f"pool_{k}": p.rng.bit_generator.state for k, p in pools.items()}},
    }


def _restore(state: dict, nets, opt_g, opt_d, pools, rng, device) -> int:
    """Load a training state into the objects; return the number of completed epochs."""
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"not a CycleGAN training state of version {CHECKPOINT_VERSION}")
    for k, net in nets.items():
        net.load_state_dict(state["nets"][k])
    opt_g.load_state_dict(state["opt_G"])
    opt_d.load_state_dict(state["opt_D"])
    rng.bit_generator.state = state["rng"]["data"]
    for k, p in pools.items():
        p.images = [t.to(device) for t in state["pools"][k]]
        p.rng.bit_generator.state = state["rng"][f"pool_{k}"]
    return int(state["epoch"])


def train_cyclegan(day_images, night_images, *, ngf: int = 64, n_blocks: int = 9, n_epochs: int = 100,
                   n_epochs_decay: int = 100, crop: int = 256, batch_size: int = 1, lr: float = 2e-4,
                   device="cpu", seed: int = 0, state: TrainingState | None = None, progress: bool = True,
                   pool_size: int = 50, on_epoch=None) -> tuple[ResnetGenerator, ResnetGenerator]:
    """Train CycleGAN on unpaired uint8 (N, H, W, 3) day and night images (numpy or zarr arrays).

    An epoch is ceil(max(N_day, N_night) / batch_size) iterations of random `crop` x `crop` patches
    with random horizontal flips (unpaired: day and night rows drawn independently). With
    `state` (a `pipeline.checkpoints.TrainingState` keyed by the run's settings and inputs), the
    networks, optimisers, pools and random states are saved after every epoch and the newest saved
    epoch is resumed from. `on_epoch(epoch, scalars)`, if given, receives after each epoch (1-based)
    the mean of every loss term over its iterations and the learning rate (the training curves).
    Returns (G_day2night, G_night2day) in eval mode on CPU."""
    _check_images(day_images, "day_images")
    _check_images(night_images, "night_images")
    device = torch.device(device)
    crop = _effective_crop(crop, day_images.shape, night_images.shape)
    settings = {"ngf": ngf, "n_blocks": n_blocks, "crop": crop, "batch_size": batch_size, "lr": lr,
                "seed": seed, "pool_size": pool_size}
    nets = build_cyclegan(ngf, n_blocks, seed, device)
    opt_g = torch.optim.Adam(itertools.chain(nets["G_day2night"].parameters(), nets["G_night2day"].parameters()),
                             lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(itertools.chain(nets["D_night"].parameters(), nets["D_day"].parameters()),
                             lr=lr, betas=(0.5, 0.999))
    seeds = np.random.SeedSequence(seed).spawn(3)
    rng = np.random.default_rng(seeds[0])
    pools = {"fake_night": ImagePool(pool_size, np.random.default_rng(seeds[1])),
             "fake_day": ImagePool(pool_size, np.random.default_rng(seeds[2]))}
    total = n_epochs + n_epochs_decay
    saved = state.latest(total) if state is not None else None
    start = _restore(saved, nets, opt_g, opt_d, pools, rng, device) if saved is not None else 0
    iters = math.ceil(max(day_images.shape[0], night_images.shape[0]) / batch_size)
    for net in nets.values():
        net.train()
    for epoch in range(start, total):
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(epoch, n_epochs, n_epochs_decay)
        bar = progress_bar(range(iters), desc=f"cyclegan epoch {epoch + 1}/{total}", disable=not progress, leave=False)
        sums: dict[str, float] = {}
        for _ in bar:
            real_day = to_tensor(sample_crops(day_images, batch_size, crop, rng)).to(device)
            real_night = to_tensor(sample_crops(night_images, batch_size, crop, rng)).to(device)
            terms = train_step(nets, opt_g, opt_d, pools, real_day, real_night)
            sums = {k: sums.get(k, 0.0) + v for k, v in terms.items()}
            bar.set_postfix(G=f"{terms['G_day2night'] + terms['G_night2day']:.3f}",
                            D=f"{terms['D_night'] + terms['D_day']:.3f}")
        log.info("cyclegan epoch %d/%d lr %.2e %s", epoch + 1, total, opt_g.param_groups[0]["lr"],
                 " ".join(f"{k}={v / iters:.4f}" for k, v in sums.items()))
        if on_epoch is not None:
            on_epoch(epoch + 1, {**{k: v / iters for k, v in sums.items()}, "lr": opt_g.param_groups[0]["lr"]})
        if state is not None and state.due():
            state.save(epoch + 1, _checkpoint_state(epoch + 1, settings, nets, opt_g, opt_d, pools, rng))
    return nets["G_day2night"].cpu().eval(), nets["G_night2day"].cpu().eval()


# ----------------------------------------------------------------------------- generator files
def save_generator(G: ResnetGenerator, path) -> Path:
    """Save the generator's plain CPU state dict, as the reference saves `latest_net_G_A.pth`."""
    path = Path(path)
    checkpoints.save({k: v.detach().cpu() for k, v in G.state_dict().items()}, path)
    return path


def _clean_reference_state(state: dict) -> dict:
    """Drop what the reference's loader drops or never saved: a `module.` prefix (DataParallel),
    InstanceNorm `running_mean`/`running_var`/`num_batches_tracked` buffers from old torch versions
    (our InstanceNorm, like the reference's, keeps no running statistics), `_metadata`."""
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if re.search(r"\.(running_mean|running_var|num_batches_tracked)$", key):
            continue
        out[key] = value
    return out


def infer_generator_shape(state: dict) -> dict:
    """ngf, n_blocks, input_nc and output_nc of a reference generator state dict."""
    if "model.1.weight" not in state:
        raise KeyError("model.1.weight")
    w = state["model.1.weight"]
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    n_blocks = len(blocks)
    last = f"model.{17 + n_blocks}.weight"
    output_nc = int(state[last].shape[0]) if last in state else 3
    return {"ngf": int(w.shape[0]), "input_nc": int(w.shape[1]), "n_blocks": n_blocks, "output_nc": output_nc}


def load_generator(path, ngf: int | None = None, n_blocks: int | None = None) -> ResnetGenerator:
    """Load a ResNet generator saved by the reference implementation (`latest_net_G_A.pth`) or by
    `save_generator`, strictly; ngf and n_blocks are inferred from the file when not given.

    Raises FileNotFoundError for a missing file and ValueError naming the file and listing the
    missing / unexpected keys (or shape mismatches) when the file does not fit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CycleGAN generator not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a generator state dict (as the reference's latest_net_G_A.pth), "
                         f"got {type(state).__name__}")
    state = _clean_reference_state(state)
    try:
        shape = infer_generator_shape(state)
    except KeyError as exc:
        raise ValueError(f"{path}: not a ResNet generator state dict: missing key {exc}; "
                         f"keys start with {sorted(state)[:5]}") from None
    G = ResnetGenerator(shape["input_nc"], shape["output_nc"], ngf or shape["ngf"],
                        shape["n_blocks"] if n_blocks is None else n_blocks)
    expected = G.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: generator state dict does not match ResnetGenerator(ngf={G.ngf}, "
                         f"n_blocks={G.n_blocks}): missing keys {missing}, unexpected keys {unexpected}")
    bad = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
           for k, v in expected.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"{path}: shape mismatch for ResnetGenerator(ngf={G.ngf}, n_blocks={G.n_blocks}): "
                         + "; ".join(bad))
    G.load_state_dict(state, strict=True)
    return G.eval()


# ----------------------------------------------------------------------------- translation
def _pad_to_multiple(x: torch.Tensor, multiple: int = 4) -> torch.Tensor:
    """Reflect-pad (B, C, H, W) at the bottom/right so H and W are multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")


@torch.no_grad()
def translate(G: nn.Module, images, batch_size: int = 4, device="cpu", progress: bool = False) -> np.ndarray:
    """Translate uint8 (N, H, W, 3) images with generator `G`; returns uint8 (N, H, W, 3).

    Each batch is reflect-padded to a multiple of 4 and cropped back. AMP (fp16) on CUDA only."""
    _check_images(images, "translate: images")
    device = torch.device(device)
    G = G.to(device).eval()
    n, h, w = images.shape[:3]
    out = np.empty((n, h, w, 3), np.uint8)
    for start in progress_bar(range(0, n, batch_size), desc="translate", disable=not progress):
        x = to_tensor(np.asarray(images[start:start + batch_size])).to(device)
        with torch.autocast(device_type="cuda", enabled=device.type == "cuda"):
            y = G(_pad_to_multiple(x))
        out[start:start + len(x)] = to_uint8(y[..., :h, :w])
    return out
