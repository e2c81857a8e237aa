"""Every model: forward and backward at batch 1-3 and several input sizes; the ModelOutput contract."""

import pytest
import torch

from fgvc.errors import ConfigError
from fgvc.models import MODEL_REGISTRY as MODELS
from fgvc.models import create_model

SIZES = {"baseline": (224, 448), "fbsd": (224, 448), "mmal": (224, 320, 448), "pmg": (224, 300, 448),
         "cal": (224, 300, 448), "transfg": (64, 96), "pim": (224, 320)}
# a model that takes no CNN: the backbone it is tested on (not resnet18/50) and the stem whose gradient is checked
BACKBONES = {"transfg": "vit_ti16"}
STEMS = {"transfg": lambda model: model.backbone.patch_embed}
CASES = [(name, size, batch) for name in MODELS for size in SIZES[name] for batch in (1, 2, 3)]


def _step(name: str, backbone: str, size: int, batch: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, 5, backbone=BACKBONES.get(name, backbone)).train()
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % 5
    out = model(x)
    assert out.logits.shape == (batch, 5)
    total, terms = model.loss(out, y, epoch=1)
    assert torch.isfinite(total) and all(torch.isfinite(t) for t in terms.values())
    total.backward()
    stem = STEMS.get(name, lambda model: model.backbone.body.conv1)(model).weight.grad
    assert stem is not None and stem.abs().sum() > 0  # gradients reach the backbone
    if name == "mmal":
        n = model.preset.num_parts
        assert out.branch_logits["parts"].shape == (batch, n, 5)
        assert out.object_boxes.shape == (batch, 4) and out.part_boxes.shape == (batch, n, 4)
        assert (out.object_boxes[:, 2:] <= size - 1).all() and (out.object_boxes >= 0).all()
        assert set(terms) == {"ce_raw", "ce_object", "ce_parts"}


@pytest.mark.parametrize(("name", "size", "batch"), [c for c in CASES if c[1] <= 320 or c[2] < 3])
def test_train_step_resnet18(name, size, batch):
    _step(name, "resnet18", size, batch)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size", "batch"), CASES)
def test_train_step_resnet50(name, size, batch):
    _step(name, "resnet50", size, batch)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size", "batch"), [c for c in CASES if c[1] > 320 and c[2] == 3])
def test_train_step_resnet18_448_batch3(name, size, batch):
    _step(name, "resnet18", size, batch)


def test_mmal_eval_skips_the_part_branch_unless_asked():
    model = create_model("mmal", 5, backbone="resnet18", windows="cars").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        assert "parts" not in out.branch_logits and out.part_boxes is None
        assert torch.equal(out.logits, out.branch_logits["object"])
        full = model(x, parts=True)
    assert full.branch_logits["parts"].shape == (2, 6, 5)
    assert torch.equal(full.logits, out.logits)
    assert full.extras["window_indices"].shape == (2, 6)
    # eval loss has no window term on zero logits (REFERENCE M12)
    _, terms = model.loss(out, torch.tensor([0, 1]), epoch=5)
    assert set(terms) == {"ce_raw", "ce_object"}


def test_mmal_first_epoch_trains_the_raw_branch_only():
    model = create_model("mmal", 5, backbone="resnet18").train()
    out = model(torch.randn(2, 3, 224, 224))
    y = torch.tensor([0, 1])
    first, terms = model.loss(out, y, epoch=0)
    later, _ = model.loss(out, y, epoch=1)
    assert torch.equal(first, terms["ce_raw"])
    assert torch.allclose(later, terms["ce_raw"] + terms["ce_object"] + terms["ce_parts"])


def test_mmal_raw_plus_object_prediction():
    model = create_model("mmal", 5, backbone="resnet18", predict="raw+object").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert torch.allclose(out.logits, out.branch_logits["raw"] + out.branch_logits["object"])


def test_mmal_rejects_sizes_off_the_stride():
    model = create_model("mmal", 5, backbone="resnet18").eval()
    with pytest.raises(ConfigError, match="multiple of 32"):
        model(torch.randn(1, 3, 230, 224))


def test_fbsd_works_at_sizes_the_reference_rejects():
    model = create_model("fbsd", 5, backbone="resnet18").eval()
    with torch.no_grad():
        for size in (480, 416, 96):  # REFERENCE F4: 416 and 480 raise in the authors' code
            assert torch.isfinite(model(torch.randn(1, 3, size, size)).logits).all()


def test_unknown_model_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'mmal'"):
        create_model("mmall", 5)
