"""BatchNorm folding and channels_last: the prepared model answers like the trained one."""

import copy

import pytest
import torch
from torch import nn

from fgvc.models import create_model
from fgvc.models.inference import conv_bn_pairs, fold_batch_norms, prepare_for_inference


def _randomise_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def _bn2d_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(("backbone", "expected"), [("resnet18", 1 + 8 * 2 + 3), ("resnet50", 1 + 16 * 3 + 4)])
def test_every_backbone_batch_norm_is_found(backbone, expected):
    # stem + two (BasicBlock) or three (Bottleneck) per block + one per downsample
    model = create_model("baseline", 5, backbone=backbone)
    assert len(conv_bn_pairs(model)) == expected == _bn2d_count(model)


def test_only_a_convolution_feeding_its_batch_norm_directly_is_folded():
    assert conv_bn_pairs(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))) == [("0", "1")]
    assert conv_bn_pairs(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))) == []
    assert conv_bn_pairs(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))) == []

    class BatchNormAct(nn.BatchNorm2d):  # like timm's BatchNormAct2d: folding would drop the activation
        def forward(self, x):
            return torch.relu(super().forward(x))

    assert conv_bn_pairs(nn.Sequential(nn.Conv2d(3, 4, 1), BatchNormAct(4))) == []


@pytest.mark.parametrize(("name", "options", "leftover"), [
    ("baseline", {}, 0),
    ("fbsd", {"dropout": 0.2}, 3),  # FBSM's 1-channel BatchNorms are applied to a conv output read twice
    ("mmal", {"windows": "cub"}, 0),
])
def test_folded_channels_last_model_gives_the_same_outputs(name, options, leftover):
    torch.manual_seed(0)
    model = _randomise_batch_norms(create_model(name, 7, backbone="resnet18", **options))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        reference = model(x)
        prepared = prepare_for_inference(copy.deepcopy(model))
        out = prepared(x)
    assert _bn2d_count(prepared) == leftover
    assert next(prepared.parameters()).is_contiguous(memory_format=torch.channels_last)
    # Tolerance: folding rounds the scaled weights and channels_last runs other kernels, which sum a
    # conv's K = C_in*kh*kw products in another order: about sqrt(K)*eps relative to the size of the
    # terms per layer, and sqrt(L*K)*eps over L layers (rounding errors add like a random walk), so
    # atol is scaled by the logits' size. ResNet-18 (K=4608, L=20): 3.6e-5; ResNet-50 (L=53): 5.9e-5;
    # 1e-4 covers both (eval mode: BatchNorm uses fixed statistics and amplifies nothing). Measured
    # 0.5e-6 to 1.2e-6 here with 1 or 2 threads and with oneDNN off; a wrongly folded BatchNorm is off
    # by O(1).
    scale = reference.logits.abs().max()
    torch.testing.assert_close(out.logits, reference.logits, atol=1e-4 * scale, rtol=1e-4)
    for branch, logits in reference.branch_logits.items():
        torch.testing.assert_close(out.branch_logits[branch], logits, atol=1e-4 * scale, rtol=1e-4)
    if reference.object_boxes is not None:
        assert torch.equal(out.object_boxes, reference.object_boxes)
    # the loss is the model's own
    y = torch.tensor([1, 3])
    torch.testing.assert_close(prepared.loss(out, y)[0], model.loss(reference, y)[0], atol=1e-4, rtol=1e-4)


def test_folding_a_bottleneck_resnet_matches_and_removes_every_batch_norm():
    torch.manual_seed(1)
    model = _randomise_batch_norms(create_model("baseline", 3, backbone="resnet50"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(x).logits
        folded = copy.deepcopy(model)
        assert fold_batch_norms(folded) == 53
        out = folded(x).logits
    assert _bn2d_count(folded) == 0
    # the bound derived in test_folded_channels_last_model_gives_the_same_outputs; measured 1e-6 here
    torch.testing.assert_close(out, reference, atol=1e-4 * reference.abs().max(), rtol=1e-4)
