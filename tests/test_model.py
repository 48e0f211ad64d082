"""Student network: Table 4 sizes, Monodepth2 state-dict layout, shapes, build_model."""
import pytest
import torch
import torchvision

from pipeline.geometry import transformation_from_parameters
from pipeline.model import (DepthDecoder, LightNet, PoseDecoder, PoseNet, ResnetEncoder, SegDecoder,
                            build_model, count_macs, count_parameters)

# paper Table 4 at 576x320: (params M, GMACs thop)
# the paper's network (workflow/configs/paper.yaml: 576x320, light net with 64 base channels; the demo's has 16)
PAPER = {"model": {"width": 576, "height": 320, "light": {"enabled": True, "base_channels": 64}}}
TABLE4 = {"light": (0.167, 20.573), "encoder": (11.177, 6.699), "depth_decoder": (3.153, 5.358),
          "seg_decoder": (3.192, 6.254)}
NUM_CH_DEC = [16, 32, 64, 128, 256]
NUM_CH_ENC = [64, 64, 128, 256, 512]


@pytest.fixture(scope="module")
def paper_model():
    return build_model(PAPER)


def test_lightnet_has_exactly_166787_parameters():
    assert count_parameters(LightNet(64)) == 166_787


def test_parameter_counts_match_table4(paper_model):
    for name, (paper_m, _) in TABLE4.items():
        n = count_parameters(getattr(paper_model, name))
        print(f"{name:14s} {n / 1e6:8.3f} M params (paper {paper_m:.3f} M)")
        assert abs(n / 1e6 - paper_m) / paper_m < 0.03
    assert count_parameters(paper_model.encoder) == 11_176_512  # ResNet-18 without fc
    assert count_parameters(paper_model.encoder, exclude_fc=False) == 11_689_512
    assert round(count_parameters(paper_model.depth_decoder) / 1e6, 3) == 3.153
    assert round(count_parameters(paper_model.seg_decoder) / 1e6, 3) == 3.192


def test_macs_match_table4_on_meta_device():
    model = build_model(PAPER).to("meta")  # shapes only: no arithmetic is run
    x = torch.empty(1, 3, 320, 576, device="meta")
    feats = model.encoder(x)
    inputs = {"light": (x,), "encoder": (x,), "depth_decoder": (feats,), "seg_decoder": (feats,)}
    for name, (_, paper_g) in TABLE4.items():
        g = count_macs(getattr(model, name), inputs[name], "thop") / 1e9
        print(f"{name:14s} {g:8.3f} GMACs thop (paper {paper_g:.3f})")
        assert g == pytest.approx(paper_g, abs=5e-4)
    # true conv cost of the light net (transposed conv charged per input pixel)
    assert count_macs(model.light, (x,), "flop_counter") / 1e9 == pytest.approx(10.263, abs=5e-4)
    with pytest.raises(ValueError):
        count_macs(model.light, (x,), "fvcore")


def test_output_shapes_at_small_size():
    torch.manual_seed(0)
    model = build_model({"model": {"width": 96, "height": 64}}).eval()
    image = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        out = model(image)
    assert out["light_map"].shape == image.shape
    assert out["light_map"].abs().max() <= 1.0
    assert torch.allclose(out["enhanced"], image + out["light_map"])
    for s in range(4):
        assert out[("disp", s)].shape == (2, 1, 64 // 2 ** s, 96 // 2 ** s)
        assert out[("seg", s)].shape == (2, 19, 64 // 2 ** s, 96 // 2 ** s)
        assert 0 <= out[("disp", s)].min() and out[("disp", s)].max() <= 1
    depth = model.depth(out[("disp", 0)])
    assert depth.min() >= 0.1 - 1e-6 and depth.max() <= 100.0 + 1e-3
    with torch.no_grad():
        plain = model(image, use_light=False)
    assert plain["light_map"] is None and plain["enhanced"] is image
    feats = model.encoder(image)
    assert [f.shape[1] for f in feats] == NUM_CH_ENC
    assert [f.shape[-1] for f in feats] == [48, 24, 12, 6, 3]


def test_build_model_reads_the_config():
    model = build_model({"model": {"num_classes": 7, "light": {"enabled": False}, "min_depth": 0.5,
                                   "max_depth": 40.0, "width": 64, "height": 32}})
    assert model.light is None
    assert model.seg_decoder.decoder[-1].conv.out_channels == 7
    assert (model.min_depth, model.max_depth, model.width, model.height) == (0.5, 40.0, 64, 32)
    assert set(dict(model.named_children())) == {"encoder", "depth_decoder", "seg_decoder", "pose"}
    default = build_model({"results_dir": "x"})  # the schema's defaults: config.yaml's demo model
    assert isinstance(default.light, LightNet) and (default.width, default.height) == (192, 96)
    with pytest.raises(ValueError, match="model.width"):
        build_model({"model": {"width": 100}})
    with pytest.raises(ValueError, match="model.height"):
        build_model({"model": {"height": 0}})
    with pytest.raises(ValueError, match="model.encoder.num_layers"):
        build_model({"model": {"encoder": {"num_layers": 19}}})
    with pytest.raises(ValueError, match="model.min_depth"):
        build_model({"model": {"min_depth": 10.0, "max_depth": 1.0}})
    with pytest.raises(FileNotFoundError, match="model.encoder.pretrained"):
        build_model({"model": {"encoder": {"pretrained": "/nonexistent/resnet18.pth"}}})


def test_pretrained_torchvision_weights_load_into_both_encoders(tmp_path):
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(ref, path)
    model = build_model({"model": {"encoder": {"pretrained": str(path)}, "width": 64, "height": 64}})
    assert torch.equal(model.encoder.encoder.layer3[1].conv2.weight, ref["layer3.1.conv2.weight"])
    pose_conv1 = model.pose.encoder.encoder.conv1.weight
    assert pose_conv1.shape == (64, 6, 7, 7)
    assert torch.allclose(pose_conv1, torch.cat([ref["conv1.weight"]] * 2, 1) / 2)
    # the Monodepth2 day teacher starts from the same file (model.encoder.pretrained), both encoders
    from pipeline.teachers.monodepth2 import Monodepth2

    teacher = Monodepth2(18, pose=True, pretrained_path=path)
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(teacher.encoder.encoder.state_dict()[key], ref[key]), key
    assert torch.allclose(teacher.pose_encoder.encoder.conv1.weight, torch.cat([ref["conv1.weight"]] * 2, 1) / 2)
    assert torch.equal(teacher.pose_encoder.encoder.layer1[0].conv1.weight, ref["layer1.0.conv1.weight"])
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="conv1.weight"):
        ResnetEncoder(18, tmp_path / "bad.pth")


def _official_depth_decoder_layout(num_output_channels):
    """Monodepth2's DepthDecoder keys/shapes, derived from its OrderedDict insertion order."""
    convs = []
    for i in range(4, -1, -1):
        cin = NUM_CH_ENC[-1] if i == 4 else NUM_CH_DEC[i + 1]
        convs.append(("block", cin, NUM_CH_DEC[i]))
        cin = NUM_CH_DEC[i] + (NUM_CH_ENC[i - 1] if i > 0 else 0)
        convs.append(("block", cin, NUM_CH_DEC[i]))
    for s in range(4):
        convs.append(("head", NUM_CH_DEC[s], num_output_channels))
    layout = {}
    for k, (kind, cin, cout) in enumerate(convs):
        prefix = f"decoder.{k}.conv.conv" if kind == "block" else f"decoder.{k}.conv"
        layout[f"{prefix}.weight"] = (cout, cin, 3, 3)
        layout[f"{prefix}.bias"] = (cout,)
    return layout


@pytest.mark.parametrize("cls, channels", [(DepthDecoder, 1), (SegDecoder, 19)])
def test_decoder_state_dict_has_the_official_layout(cls, channels):
    dec = cls(NUM_CH_ENC)
    layout = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert list(layout) == list(_official_depth_decoder_layout(channels))
    assert layout == _official_depth_decoder_layout(channels)
    if cls is DepthDecoder:
        assert layout["decoder.0.conv.conv.weight"] == (256, 512, 3, 3)
        assert layout["decoder.10.conv.weight"] == (1, 16, 3, 3)
        assert layout["decoder.13.conv.weight"] == (1, 128, 3, 3)


def test_state_dicts_round_trip_strictly():
    torch.manual_seed(2)
    a = build_model({"model": {"width": 64, "height": 64}}).eval()
    torch.manual_seed(3)
    b = build_model({"model": {"width": 64, "height": 64}}).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(a(image)[("disp", 0)], b(image)[("disp", 0)])
    # Monodepth2 files are per module: encoder.pth, depth.pth, pose_encoder.pth, pose.pth
    b.encoder.load_state_dict(a.encoder.state_dict(), strict=True)
    b.depth_decoder.load_state_dict(a.depth_decoder.state_dict(), strict=True)
    b.load_state_dict(a.state_dict(), strict=True)
    with torch.no_grad():
        oa, ob = a(image), b(image)
    for key in [("disp", 0), ("disp", 3), ("seg", 0)]:
        assert torch.equal(oa[key], ob[key])
    enc_keys = set(a.encoder.state_dict())
    assert {"encoder.conv1.weight", "encoder.bn1.running_mean", "encoder.layer4.1.bn2.weight",
            "encoder.fc.weight", "encoder.fc.bias"} <= enc_keys
    assert enc_keys == {"encoder." + k for k in torchvision.models.resnet18().state_dict()}


def test_pose_network_official_keys_and_output():
    pose = PoseNet(18)
    dec = {k: tuple(v.shape) for k, v in pose.decoder.state_dict().items()}
    assert dec == {"net.0.weight": (256, 512, 1, 1), "net.0.bias": (256,),
                   "net.1.weight": (256, 256, 3, 3), "net.1.bias": (256,),
                   "net.2.weight": (256, 256, 3, 3), "net.2.bias": (256,),
                   "net.3.weight": (12, 256, 1, 1), "net.3.bias": (12,)}
    assert pose.encoder.state_dict()["encoder.conv1.weight"].shape == (64, 6, 7, 7)
    torch.manual_seed(4)
    pose.eval()
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        axisangle, translation = pose(a, b)
        T_next = pose.transform(a, b, source_is_previous=False)
        T_prev = pose.transform(b, a, source_is_previous=True)
    assert axisangle.shape == translation.shape == (2, 2, 1, 3)
    assert T_next.shape == (2, 4, 4)
    assert torch.allclose(T_next, transformation_from_parameters(axisangle[:, 0], translation[:, 0]))
    # same ordered pair (a, b): b's transform to a is the inverse of a's transform to b
    assert torch.allclose(T_prev @ T_next, torch.eye(4).expand(2, 4, 4), atol=1e-5)
    with pytest.raises(ValueError):
        PoseDecoder(NUM_CH_ENC)([])


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        LightNet()(torch.rand(1, 3, 33, 32))
    with pytest.raises(ValueError):
        ResnetEncoder(18)(torch.rand(1, 6, 32, 32))
    with pytest.raises(ValueError):
        ResnetEncoder(17)
    with pytest.raises(ValueError):
        DepthDecoder(NUM_CH_ENC)([torch.rand(1, 64, 8, 8)])


def test_light_net_starts_as_the_identity_and_learns():
    """r = 0 at initialisation (I + r = I), the first conv is the default draw of the same seed (zeroing
    the last one is done after the default initialisation), and the last conv gets a gradient, so one
    step moves r off 0."""
    torch.manual_seed(0)
    net = LightNet(16)
    image = torch.rand(2, 3, 32, 48)
    r = net(image)
    assert torch.equal(r, torch.zeros_like(r))
    torch.manual_seed(0)
    default = torch.nn.Conv2d(3, 16, kernel_size=7, padding=0, bias=False)  # the first layer, drawn first
    assert torch.equal(net.model[1].weight, default.weight)
    (image + r - 0.9).abs().mean().backward()
    assert net.model[-2].weight.grad.abs().sum() > 0
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert net(image).abs().max() > 0
