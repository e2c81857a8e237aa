"""CAL against the authors' code: golden tensors their code produced (tests/models/golden/cal_golden.json says
how: the reduced configuration, the reference commit, the seeds), loaded through the documented key mapping."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fgvc.errors import ConfigError
from fgvc.models import model_spec
from fgvc.models.backbones import Backbone
from fgvc.models.cal import CAL, attention_crop_boxes, attention_drop, cal_train_passes

from . import parity
from .narrow import narrow_resnet
from .parity import RTOL, assert_close, load_golden
from .parity import golden_inputs as inputs

GRAD_ATOL = 2e-11  # times each gradient's largest element: see test_training_step_equals_the_authors


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("cal_eval")


@pytest.fixture(scope="module")
def step() -> dict:
    return load_golden("cal_train_step")


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return parity.renamed("cal", state)


def build(golden: dict, center: torch.Tensor | None = None, **options) -> CAL:
    model = CAL(narrow_resnet((4, 8, 16, 32), (1, 1, 1, 1)), 5, attentions=4, **options).double()
    state = _renamed(golden["state_dict"])
    state["feature_center"] = torch.zeros(5, 4 * 128, dtype=torch.float64) if center is None else center.clone()
    model.load_state_dict(state, strict=True)
    return model


def seed(value: int) -> None:
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


# -- the checkpoint layout --------------------------------------------------------------------------

def test_every_tensor_of_the_authors_model_has_one_place(golden: dict) -> None:
    state = _renamed(golden["state_dict"])
    assert set(state) | {"feature_center"} == set(build(golden).state_dict())
    layout = model_spec("cal").authors_layout
    assert layout.rename("module.features.7.0.conv2.weight") == "backbone.body.layer4.0.conv2.weight"
    assert layout.rename("features.4.0.downsample.1.running_var") == "backbone.body.layer1.0.downsample.1.running_var"
    assert layout.container == "state_dict_key" and dict(layout.buffers) == {"feature_center": "feature_center"}


def test_last_stride_one_is_their_resnet(golden: dict) -> None:
    model = build(golden)
    assert model.backbone.strides == (8, 16, 16)
    assert model.backbone.body.layer4[0].conv2.stride == (1, 1)
    assert model.backbone.body.layer4[0].downsample[0].stride == (1, 1)
    with torch.no_grad():
        assert model.eval().backbone(inputs(golden))[2].shape[-2:] == (4, 4)


# -- evaluation -----------------------------------------------------------------------------------

def test_eval_outputs_equal_the_authors(golden: dict) -> None:
    model = build(golden, inference="raw").eval()
    x = inputs(golden)
    with torch.no_grad():
        out = model(x)
        p, aux, feature_matrix, maps = model._pass(x)
    assert_close(out.logits, golden["p"], "p")
    assert_close(out.branch_logits["aux"], golden["aux"], "aux (p - counterfactual logits)")
    assert_close(feature_matrix, golden["feature_matrix"], "feature matrix")
    assert_close(out.extras["attention_maps"].mean(dim=1, keepdim=True), golden["attention_map"], "mean map")
    assert torch.equal(out.object_boxes, golden["infer_crop3_box"])


def test_infer_equals_the_authors_test_procedure(golden: dict) -> None:
    model = build(golden).eval()
    x = inputs(golden)
    with torch.no_grad():
        out = model(x)
        _, _, _, maps_m = model._pass(x.flip(3))
    assert_close(out.logits, golden["infer_y_pred"], "infer: 8-view logits")
    assert_close(out.branch_logits["aux"], golden["infer_y_pred_aux"], "infer: 8-view aux")
    assert_close(out.branch_logits["raw"], golden["p"], "infer: raw")
    mean_map = out.extras["attention_maps"].mean(dim=1, keepdim=True)
    for j, (theta, padding) in enumerate(((0.3, 0.1), (0.2, 0.1), (0.1, 0.05))):
        box, _ = attention_crop_boxes(mean_map, theta, padding, (64, 64))
        assert torch.equal(box, golden[f"infer_crop{j + 1}_box"]), j
        box_m, _ = attention_crop_boxes(maps_m.mean(dim=1, keepdim=True), theta, padding, (64, 64))
        assert torch.equal(box_m, golden[f"infer_crop{j + 1}_m_box"]), j
    assert any(not torch.equal(golden[f"infer_crop{j}_box"], torch.tensor([[0, 0, 63, 63]] * 3)) for j in (1, 2))
    assert torch.equal(out.object_boxes, golden["infer_crop3_box"])


def test_validate_equals_the_authors_validation(golden: dict) -> None:
    model = build(golden, inference="validate").eval()
    with torch.no_grad():
        out = model(inputs(golden))
    assert_close(out.logits, golden["validate_y_pred"], "validate logits")
    assert_close(out.branch_logits["aux"], golden["validate_y_pred_aux"], "validate aux")
    assert_close(out.branch_logits["crop"], golden["infer_crop3_p"], "validate crop logits")


# -- one training step ----------------------------------------------------------------------------

def run_step(golden: dict, step: dict, labels: torch.Tensor, **options) -> tuple[CAL, dict, list]:
    model = build(golden, step["feature_center_before"], **options).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=step["lr"], momentum=step["momentum"],
                                weight_decay=step["weight_decay"])
    outputs = []

    def forward(x: torch.Tensor):
        outputs.append(model(x))
        return outputs[-1]

    seed(int(step["seed"]))
    optimizer.zero_grad()
    passes = list(cal_train_passes(model, forward, inputs(golden), labels, 0))
    assert len(passes) == 1 and not passes[0].step
    passes[0].loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer.step()
    return model, {"pass": passes[0], "grads": grads}, outputs


def test_training_step_equals_the_authors(golden: dict, step: dict) -> None:
    model, result, outputs = run_step(golden, step, step["labels"])
    done = result["pass"]
    assert_close(done.loss, step["loss"], "total loss")
    for name in ("ce_raw", "ce_aux", "ce_aug", "center"):
        assert_close(done.terms[name], step[f"term_{name}"], name)
    raw, aug = outputs
    assert_close(raw.logits, step["y_pred_raw"], "raw logits")
    assert_close(raw.branch_logits["aux"], step["y_pred_aux"], "raw aux")
    assert_close(aug.logits, step["y_pred_aug"], "crop+drop logits")
    assert_close(aug.branch_logits["aux"], step["y_pred_aux_aug"], "crop+drop aux")
    assert_close(raw.extras["feature_matrix"], step["feature_matrix"], "feature matrix")
    assert_close(raw.extras["attention_pair"], step["attention_pair"], "the two chosen maps")
    choice = torch.cat([raw.extras["attention_choice"], aug.extras["attention_choice"]])
    assert torch.equal(choice, step["map_choice"])
    assert torch.equal(done.output.object_boxes, step["crop_boxes"])
    assert not done.output.extras["crop_fallback"].any()
    grads = _renamed(step["grads"])
    assert set(grads) == set(result["grads"])
    for name, grad in grads.items():
        # The crop images come from one grid_sample (C3), within 3e-14 of their per-image interpolate; through
        # the second forward's BatchNorm backward that reaches ~1e-11 of a gradient's largest element (with a
        # per-image interpolate in place of crop_resize the gradients are bit-identical, checked when written).
        scale = grad.abs().max().item()
        torch.testing.assert_close(result["grads"][name], grad, rtol=RTOL, atol=GRAD_ATOL * scale,
                                   msg=lambda m, name=name: f"grad {name}: {m}")
    after = _renamed(step["state_dict_after"])
    state = model.state_dict()
    for name, value in after.items():
        if value.is_floating_point():
            assert_close(state[name], value, f"after the step: {name}")
        else:
            assert torch.equal(state[name], value), name
    assert_close(model.feature_center, step["feature_center_after"], "feature centres")


def test_repeated_label_centres(golden: dict, step: dict) -> None:
    """C1: ``center_update="authors"`` keeps one update per class, as their indexed assignment; the default adds
    every image's update."""
    repeated = step["repeated"]
    labels = repeated["labels"]
    theirs, result, _ = run_step(golden, step, labels, center_update="authors")
    assert_close(result["pass"].loss, repeated["loss"], "total loss")
    assert_close(theirs.feature_center, repeated["feature_center_after"], "feature centres (authors)")
    ours, result, outputs = run_step(golden, step, labels)
    assert_close(result["pass"].loss, repeated["loss"], "total loss (the loss does not depend on the update)")
    before = step["feature_center_before"]
    fm = outputs[0].extras["feature_matrix"].detach()
    delta = 0.05 * (fm - F.normalize(before[labels], dim=-1))
    expected = before.clone()
    expected[2] += delta[0] + delta[1]
    expected[4] += delta[2]
    assert_close(ours.feature_center, expected, "feature centres (sum)")
    assert not torch.allclose(ours.feature_center[2], theirs.feature_center[2])
    assert_close(ours.feature_center[[0, 1, 3, 4]], theirs.feature_center[[0, 1, 3, 4]], "classes seen once")


# -- shapes, sizes, options -----------------------------------------------------------------------

def small_model(**options) -> CAL:
    torch.manual_seed(0)
    return CAL(narrow_resnet((4, 8, 16, 32), (1, 1, 1, 1)), 5, **{"attentions": 4, **options})


@pytest.mark.parametrize("size", [72, 96])
@pytest.mark.parametrize("batch", [1, 2])
def test_any_input_size_and_batch_one(size: int, batch: int) -> None:
    model = small_model()
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % 5
    seed(1)
    model.train()
    (done,) = cal_train_passes(model, model, x, y, 0)
    done.loss.backward()
    assert torch.isfinite(done.loss) and done.output.logits.shape == (batch, 5)
    assert done.output.object_boxes.shape == (batch, 4)
    model.eval()
    for mode in ("infer", "validate", "raw"):
        model.inference = mode
        with torch.no_grad():
            out = model(x)
        assert out.logits.shape == (batch, 5), mode
        box = out.object_boxes
        assert box.shape == (batch, 4) and (box[:, :2] >= 0).all() and (box[:, 2] < size).all()
        assert (box[:, :2] <= box[:, 2:]).all()
        assert out.extras["attention_maps"].shape[:2] == (batch, 4)


def test_last_stride_one_needs_layer4() -> None:
    body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=8), nn.Conv2d(4, 8, 3, stride=2), nn.Conv2d(8, 16, 3, stride=2))
    backbone = Backbone(body, [("0",), ("1",), ("2",)], (1, 2, 3), (4, 8, 16), "plain_cnn")
    with pytest.raises(ConfigError, match="model.options.last_stride") as info:
        CAL(backbone, 5, attentions=4)
    assert "\n" not in str(info.value) and "last_stride: 2" in str(info.value)
    model = CAL(backbone, 5, attentions=4, last_stride=2)
    assert model.backbone.strides == (8, 16, 32)


@pytest.mark.parametrize("option", [{"inference": "tta"}, {"center_update": "mean"}, {"last_stride": 4},
                                    {"attentions": 0}])
def test_bad_options_are_config_errors(option: dict) -> None:
    with pytest.raises(ConfigError, match="model.options"):
        small_model(**option)


# -- crops and drops against a per-image reading of the authors' rule ------------------------------

def per_image_box(amap: torch.Tensor, theta: float, padding: float, h: int, w: int) -> list[int] | None:
    """One image's crop box, one image at a time with Python numbers (the rule their code states)."""
    up = F.interpolate(amap[None], size=(h, w), mode="bilinear", align_corners=True)[0, 0]
    rows, cols = torch.nonzero(up >= theta * amap.max(), as_tuple=True)
    if len(rows) == 0:
        return None
    top, bottom = max(int(rows.min().item() - padding * h), 0), min(int(rows.max().item() + padding * h), h)
    left, right = max(int(cols.min().item() - padding * w), 0), min(int(cols.max().item() + padding * w), w)
    return [left, top, right - 1, bottom - 1]


@pytest.mark.parametrize("size", [(64, 64), (72, 96), (448, 448), (50, 37)])
def test_crop_boxes_batched_equal_per_image(size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(3)
    maps = F.relu(torch.randn(16, 1, (size[0] + 15) // 16, (size[1] + 15) // 16, generator=g, dtype=torch.float64))
    for theta, padding in ((0.1, 0.05), (0.3, 0.1), (0.55, 0.1)):
        boxes, fallback = attention_crop_boxes(maps, theta, padding, size)
        for i in range(len(maps)):
            expected = per_image_box(maps[i], theta, padding, *size)
            assert expected is not None and not fallback[i]
            assert boxes[i].tolist() == expected, (i, theta)
    thetas = [random.Random(i).uniform(0.2, 0.5) for i in range(16)]
    dropped = attention_drop(torch.ones(16, 3, *size, dtype=torch.float64), maps, thetas)
    for i in range(16):
        up = F.interpolate(maps[i:i + 1], size=size, mode="bilinear", align_corners=True)
        assert torch.equal(dropped[i, 0], (up[0, 0] < thetas[i] * maps[i].max()).double())


def test_empty_crop_mask_falls_back_to_the_whole_image() -> None:
    """C2: a single peak that no upsampled pixel samples (66 px from 4 cells: 65 / 3 is not whole) and a
    threshold close to 1 leave the mask empty; their code raises, fgvc crops the whole image and flags it."""
    maps = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    maps[:, 0, 1, 1] = 1.0
    boxes, fallback = attention_crop_boxes(maps, 0.99, 0.1, (66, 66))
    assert fallback.all() and boxes.tolist() == [[0, 0, 65, 65]] * 2
    boxes, fallback = attention_crop_boxes(maps, 0.99, 0.1, (64, 64))  # 63 / 3 = 21: the peak is sampled
    assert not fallback.any() and boxes.tolist() == [[14, 14, 26, 26]] * 2


def test_map_choice_draws_what_numpy_choice_draws() -> None:
    model = small_model()
    g = torch.Generator().manual_seed(5)
    maps = F.relu(torch.randn(6, 4, 5, 5, generator=g))
    np.random.seed(11)
    chosen = model._choose_maps(maps)
    np.random.seed(11)
    for i in range(6):
        w = torch.sqrt(maps[i].sum(dim=(1, 2)) + 1e-6)
        w = F.normalize(w, p=1, dim=0)
        assert chosen[i].tolist() == np.random.choice(4, 2, p=w.numpy()).tolist()
