"""PIM against the authors' code: golden tensors their PluginMoodel produced on a reduced Swin from their vendored
timm (tests/models/golden/pim_golden.json says how: the configuration, the reference commit, the seeds), loaded
through the documented key mapping."""

from __future__ import annotations

import pytest
import torch

from fgvc.errors import ConfigError
from fgvc.models import create_model, model_spec
from fgvc.models.pim import PIM, PIMOutput
from fgvc.models.swin import swin_backbone

from . import parity
from .parity import assert_close, load_golden
from .parity import golden_inputs as inputs

SELECTS = (128, 32, 8, 2)
LEVELS = ("layer1", "layer2", "layer3", "layer4")


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("pim_golden")


def tiny_swin(size: int = 96):
    """The harness's Swin (their timm 0.4.12 class) as timm's: embed 4, depths 2/2/2/1, window 3, mlp ratio 2."""
    return swin_backbone("swin_tiny_patch4_window7_224", False, name="tiny_swin", img_size=size, embed_dim=4,
                         depths=(2, 2, 2, 1), num_heads=(1, 2, 2, 4), window_size=3, mlp_ratio=2.0,
                         drop_path_rate=0.0)


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return parity.renamed("pim", state, dropped_ok=True)


def build(golden: dict) -> PIM:
    model = PIM(tiny_swin(), 5, fpn_size=16, num_selects=SELECTS).double()
    model.load_state_dict(_renamed(golden["state_dict"]), strict=True)
    return model


def assert_outputs(out: PIMOutput, expected: dict, ranks: dict, what: str) -> None:
    for i, level in enumerate(LEVELS):
        assert torch.equal(out.ranks[i], ranks[level]), f"{what}: {level}: the selector's token order"
        assert_close(out.token_logits[i], expected[level], f"{what}: {level} token logits")
        assert_close(out.selected_logits[i], expected[f"select_{level}"], f"{what}: {level} selected")
        assert_close(out.dropped_logits[i], expected[f"drop_{level}"], f"{what}: {level} dropped")
        assert_close(out.branch_logits[level], expected[level].mean(1), f"{what}: {level} (token mean)")
    assert_close(out.logits, expected["comb_outs"], f"{what}: combiner (the prediction)")


def test_every_tensor_of_the_authors_model_has_one_place(golden: dict) -> None:
    layout = model_spec("pim").authors_layout
    dropped = sorted(k for k in golden["state_dict"] if layout.rename(k) is None)
    assert {k.rsplit(".", 1)[-1] for k in dropped} == {"weight", "bias", "relative_position_index", "attn_mask"}
    assert [k for k in dropped if k.endswith(("weight", "bias"))] == [
        "backbone.head.bias", "backbone.head.weight", "backbone.norm.bias", "backbone.norm.weight"]
    assert set(_renamed(golden["state_dict"])) == set(build(golden).state_dict())
    assert layout.rename("backbone.layers.0.downsample.reduction.weight") == \
        "backbone.body.layers.1.downsample.reduction.weight"
    assert layout.rename("fpn.Up_layer2.weight") == "up.0.weight"
    with pytest.raises(KeyError):
        layout.rename("fpn.Up_layer2.extra")


def test_eval_outputs_equal_the_authors(golden: dict) -> None:
    model = build(golden).eval()
    with torch.no_grad():
        out = model(inputs(golden))
    assert_outputs(out, golden["eval"], golden["eval_ranks"], "eval")
    assert isinstance(model.up[2], torch.nn.Identity)  # layer4 and layer3 have as many tokens: no mixing, as theirs


def test_one_training_step_equals_the_authors(golden: dict) -> None:
    """model.train() forward (the combiner's dropout drawn from the same seed), every loss term of their main.py
    and the total with their weights, every gradient, then the weights and BatchNorm statistics after their
    SGD step (nesterov, momentum 0.9, weight decay 5e-4)."""
    step = golden["train"]
    model = build(golden).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    torch.manual_seed(step["dropout_seed"])
    out = model(inputs(golden))
    assert_outputs(out, step["outs"], step["ranks"], "train")
    y = golden["labels"]
    total, terms = model.loss(out, y, epoch=0)
    for i, level in enumerate(LEVELS):
        assert_close(terms[f"ce_layer{i + 1}"], step["terms"][level], f"ce {level}")
        assert_close(terms[f"drop{i + 1}"], step["terms"][f"drop_{level}"], f"drop {level}")
    assert_close(terms["ce_combiner"], step["terms"]["comb_outs"], "ce combiner")
    assert not any(k.startswith("ce_select") for k in terms)  # lambda_s = 0: not computed, as theirs
    assert_close(total, step["total"], "total")
    total.backward()
    rename = model_spec("pim").authors_layout.rename
    want = {rename(k): g for k, g in step["grads"].items()}
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == set(want) == {n for n, _ in model.named_parameters()}
    for name, grad in want.items():
        assert_close(grads[name], grad, f"gradient of {name}")
    optimizer.step()
    after = _renamed(golden["state_dict_after"])
    state = model.state_dict()
    assert set(after) == set(state)
    for name, value in after.items():
        assert_close(state[name].double(), value.double(), f"after the step: {name}")


def test_the_selected_tokens_loss_when_weighted(golden: dict) -> None:
    model = build(golden).train()
    model.lambdas["s"] = 1.0
    torch.manual_seed(golden["train"]["dropout_seed"])
    total, terms = model.loss(model(inputs(golden)), golden["labels"])
    for i, level in enumerate(LEVELS):
        assert_close(terms[f"ce_select{i + 1}"], golden["train"]["terms"][f"select_{level}"], f"ce select {level}")
    assert_close(total - golden["train"]["total"], golden["train"]["select_ce_sum"], "the selected tokens' part")


def test_batch_of_one(golden: dict) -> None:
    model = build(golden)
    x = inputs(golden)[1:2]
    model.eval()
    with torch.no_grad():
        one, three = model(x), model(inputs(golden))
    assert_close(one.logits, three.logits[1:2], "batch of one vs the same image in a batch of three")
    model.train()
    total, _ = model.loss(model(x), golden["labels"][1:2], epoch=0)
    total.backward()
    assert torch.isfinite(total)


def test_the_swin_refuses_a_size_its_windows_do_not_split() -> None:
    with pytest.raises(ConfigError) as e:
        PIM(tiny_swin(), 5, input_size=112)
    message = str(e.value)
    assert "\n" not in message and "model.input_size: 112" in message and "96" in message


def test_a_size_too_small_for_the_selection_is_refused() -> None:
    with pytest.raises(ConfigError, match="model.input_size 96: too small for num_selects .*stage 1 has 144 tokens"):
        PIM(tiny_swin(), 5, num_selects=(144, 32, 8, 2))


def test_a_cnn_backbone_takes_the_authors_cnn_pyramid() -> None:
    model = create_model("pim", 4, backbone="resnet18").train()
    out = model(torch.randn(2, 3, 224, 224))
    assert [t.shape[1] for t in out.token_logits] == [784, 196, 49]
    assert out.logits.shape == (2, 4) and set(out.branch_logits) == {"layer1", "layer2", "layer3", "combiner"}
    with pytest.raises(ConfigError, match="too small for num_selects"):
        model(torch.randn(1, 3, 160, 160))
