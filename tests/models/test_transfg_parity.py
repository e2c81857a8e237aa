"""TransFG against the authors' code: golden tensors their code produced (tests/models/golden/transfg_golden.json
says how: the reduced configuration, the reference commit, the seeds), loaded through the documented key mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fgvc.errors import ConfigError
from fgvc.models import create_model, model_spec
from fgvc.models.backbones import PretrainedWeightsError
from fgvc.models.transfg import TransFG, contrastive_loss, select_parts
from fgvc.models.vit import VisionTransformer, ViTConfig, load_weights, resize_grid_bilinear

from . import parity
from .narrow import narrow_resnet
from .parity import GOLDEN, assert_close, load_golden
from .parity import golden_inputs as inputs

# parity.RTOL/ATOL: float64 end to end, what is left is the order of summation (the part selection's row-vector
# products, V1; torch's label-smoothed cross-entropy against their LabelSmoothing)
TINY = ViTConfig(width=32, depth=3, heads=4, mlp=64, patch=16, npz=None)  # the golden data's configuration


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("transfg_eval")


@pytest.fixture(scope="module")
def step() -> dict:
    return load_golden("transfg_train_step")


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return parity.renamed("transfg", state)


def build(golden: dict | None = None, **options) -> TransFG:
    options = {"img_size": 64, **options}
    model = TransFG(VisionTransformer(TINY, "vit_tiny_golden"), 5, **options).double()
    if golden is not None:
        model.load_state_dict(_renamed(golden["state_dict"]), strict=True)
    return model


# -- the checkpoint layout --------------------------------------------------------------------------

def test_every_tensor_of_the_authors_model_has_one_place(golden: dict) -> None:
    state = _renamed(golden["state_dict"])
    assert set(state) == set(build().state_dict())
    layout = model_spec("transfg").authors_layout
    assert layout.rename("module.transformer.encoder.layer.10.attn.out.bias") == "backbone.blocks.10.attn.proj.bias"
    assert layout.rename("transformer.encoder.part_layer.ffn_norm.weight") == "part_layer.norm2.weight"
    assert layout.rename("transformer.encoder.part_norm.bias") == "backbone.norm.bias"
    assert layout.rename("part_head.weight") == "head.weight"
    for key in ("transformer.encoder.layer.x.attn.out.bias", "transformer.encoder.part_select.w", "head.weight",
                "transformer.embeddings.patch_embeddings.weight2"):
        with pytest.raises(KeyError):
            layout.rename(key)


# -- evaluation -----------------------------------------------------------------------------------

def test_eval_equals_the_authors(golden: dict) -> None:
    model = build(golden).eval()
    with torch.no_grad():
        out = model(inputs(golden))
    assert_close(out.logits, golden["logits"], "logits")
    assert torch.equal(out.extras["part_indices"], golden["part_index"])
    assert_close(out.extras["class_token"], golden["class_token"], "class token after the final LayerNorm")
    assert golden["part_margin"] > 1e-3  # the selection is not decided by rounding


def test_part_selection_is_their_matrix_product_row(golden: dict) -> None:
    """V1: the class token's row by vector-matrix products = row 0 of their full product, the same argmax."""
    weights = list(golden["attention_weights"].unbind(1))
    full = weights[0]
    for w in weights[1:]:
        full = torch.matmul(w, full)
    assert torch.equal(full[:, :, 0, 1:].max(dim=2).indices, golden["part_index"])
    assert torch.equal(select_parts(weights), golden["part_index"])
    model = build(golden).eval()
    captured = []
    for block in model.backbone.blocks:
        block.register_forward_hook(lambda m, i, o: captured.append(o[1]))
    with torch.no_grad():
        model(inputs(golden))
    assert_close(torch.stack(captured, dim=1), golden["attention_weights"], "attention weights of the L-1 layers")


def test_losses_equal_the_authors(golden: dict) -> None:
    model = build(golden, smoothing=float(golden["smoothing"])).eval()
    with torch.no_grad():
        out = model(inputs(golden))
        _, terms = model.loss(out, golden["labels"])
    assert_close(terms["ce"], golden["smooth_loss"], "label smoothing 0.1")
    assert_close(terms["contrast"], golden["eval_contrast"], "contrastive loss")
    assert_close(contrastive_loss(golden["class_token"], golden["labels"]), golden["eval_contrast"], "con_loss")


# -- one training step ----------------------------------------------------------------------------

def test_training_step_equals_the_authors(golden: dict, step: dict) -> None:
    """Their train.py step, dropout 0.1 drawn from the same seed in the same order: loss, every gradient, and the
    weights after clip_grad_norm_(1.0) and SGD (V6: the clipping the trainer's ``optim.clip_grad_norm`` does)."""
    model = build(golden).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=float(step["lr"]), momentum=float(step["momentum"]))
    torch.manual_seed(int(step["step_seed"]))
    out = model(inputs(golden))
    total, terms = model.loss(out, step["labels"], epoch=0)
    assert_close(out.logits, step["train_logits"], "training logits (dropout on)")
    assert torch.equal(out.extras["part_indices"], step["train_part_index"])
    assert_close(out.extras["class_token"], step["train_class_token"], "training class token")
    assert_close(terms["ce"], step["ce"], "cross-entropy")
    assert_close(terms["contrast"], step["contrast"], "contrastive loss")
    assert_close(total, step["loss"], "total loss")
    total.backward()
    grads = _renamed(step["grads"])
    assert set(grads) == {n for n, p in model.named_parameters() if p.grad is not None}
    params = dict(model.named_parameters())
    for name, grad in grads.items():
        assert_close(params[name].grad, grad, f"grad {name}")
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(step["max_grad_norm"]))
    assert_close(norm, step["grad_norm"], "gradient norm before clipping")
    optimizer.step()
    state = model.state_dict()
    for name, value in _renamed(step["state_dict_after"]).items():
        assert_close(state[name], value, f"after the step: {name}")


# -- position embeddings and other sizes ------------------------------------------------------------

def test_position_embedding_is_unchanged_at_its_own_grid(golden: dict) -> None:
    model = build(golden)
    assert model.grid == 5
    assert model.position_embedding((5, 5)) is model.backbone.pos_embed
    assert model.position_embedding((7, 6)).shape == (1, 1 + 42, 32)
    assert torch.equal(model.position_embedding((7, 6))[:, 0], model.backbone.pos_embed[:, 0])


def test_checkpoint_grid_is_resized_as_their_load_from() -> None:
    """Their load_from: scipy.ndimage.zoom(order=1) of the checkpoint's grid = bilinear with aligned corners."""
    ndimage = pytest.importorskip("scipy.ndimage")
    pos = torch.randn(1, 1 + 14 * 14, 8, dtype=torch.float64)
    ours = resize_grid_bilinear(pos, (37, 37))
    grid = pos[0, 1:].reshape(14, 14, 8).numpy()
    theirs = ndimage.zoom(grid, (37 / 14, 37 / 14, 1), order=1).reshape(1, 37 * 37, 8)
    assert_close(ours[:, 1:], torch.from_numpy(theirs), "resized grid")
    assert torch.equal(ours[:, :1], pos[:, :1])
    assert resize_grid_bilinear(pos, (14, 14)) is pos
    vit = VisionTransformer(TINY, "tiny")
    with torch.no_grad():
        vit.pos_embed.normal_()
    expected = resize_grid_bilinear(vit.pos_embed.detach().clone(), (37, 37))
    model = TransFG(vit, 5)  # img_size 448, slide_step 12: 37 x 37 patches
    assert model.grid == 37 and model.backbone.patch_embed.stride == (12, 12)
    assert torch.equal(model.backbone.pos_embed.detach(), expected)


@pytest.mark.parametrize("size", [64, 80])
@pytest.mark.parametrize("batch", [1, 2])
def test_trains_and_evaluates_at_other_sizes_and_batch_one(golden: dict, size: int, batch: int) -> None:
    model = build(golden).float()
    x = torch.randn(batch, 3, size, size + 16)
    y = torch.arange(batch) % 5
    model.train()
    out = model(x)
    total, terms = model.loss(out, y, epoch=1)
    assert torch.isfinite(total) and set(terms) == {"ce", "contrast"}
    total.backward()
    assert model.backbone.pos_embed.grad.abs().sum() > 0 and model.backbone.patch_embed.weight.grad.abs().sum() > 0
    assert out.extras["part_indices"].shape == (batch, 4)
    model.eval()
    with torch.no_grad():
        logits = model(x).logits
    assert logits.shape == (batch, 5) and torch.isfinite(logits).all()


def test_one_head_keeps_the_part_axis() -> None:
    """V2: one head (K = 1) works; their squeeze(1) drops the part axis and crashes."""
    model = TransFG(VisionTransformer(ViTConfig(16, 2, 1, 32, 16, None), "one_head"), 3, img_size=48).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 48))
    assert out.extras["part_indices"].shape == (2, 1)


def test_contract_and_options() -> None:
    spec = model_spec("transfg")
    assert spec.head_prefixes == ("head.",) and spec.param_groups is None
    assert spec.default_transform == "transfg" and spec.default_input_size == 448
    with pytest.raises(ConfigError, match="Vision Transformer"):
        TransFG(narrow_resnet(), 5)
    with pytest.raises(ConfigError, match="split"):
        build(split="tiles")
    non_overlap = build(split="non-overlap")
    assert non_overlap.grid == 4 and non_overlap.backbone.patch_embed.stride == (16, 16)
    pretrained_part = VisionTransformer(TINY, "tiny")
    last = pretrained_part.blocks[-1]
    assert TransFG(pretrained_part, 5, img_size=64, part_layer_init="pretrained").part_layer is last
    model = create_model("transfg", 5, backbone="vit_ti16")
    assert model.grid == 37 and len(model.backbone.blocks) == 11 and model.num_parts == 3
    assert model.backbone.blocks[0].mlp.drop.p == 0.1 and model.backbone.blocks[0].attn.attn_drop.p == 0.0


def test_label_smoothing_is_their_formula() -> None:
    logits, target = torch.randn(4, 7, dtype=torch.float64), torch.tensor([0, 3, 6, 3])
    logp = logits.log_softmax(dim=-1)
    theirs = (0.9 * -logp.gather(1, target[:, None])[:, 0] + 0.1 * -logp.mean(dim=-1)).mean()
    assert_close(F.cross_entropy(logits, target, label_smoothing=0.1), theirs, "smoothing")


# -- Google's .npz checkpoints ----------------------------------------------------------------------

def test_npz_checkpoint_is_read_as_their_load_from() -> None:
    """A small .npz in Google's layout, read by their load_from into their model at 64 px (5 x 5 grid from a stored
    4 x 4: their ndimage.zoom); fgvc reads it into the ViT and TransFG resizes the grid. Float32, as their numpy
    arrays: the resize is the only arithmetic (aligned-corner bilinear weights, ~1 ulp)."""
    vit = VisionTransformer(ViTConfig(32, 3, 4, 64, 16, None, img_size=64), "vit_tiny_npz")
    load_weights(vit, str(GOLDEN / "transfg_vit_tiny.npz"))
    model = TransFG(vit, 5, img_size=64)
    theirs = _renamed(torch.load(GOLDEN / "transfg_npz_loaded.pt", weights_only=True))
    state = model.state_dict()
    assert set(state) - set(theirs) == {k for k in state if k.startswith(("part_layer.", "head."))}  # V4
    for name, value in theirs.items():
        torch.testing.assert_close(state[name], value, rtol=1e-6, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
    with pytest.raises(PretrainedWeightsError, match="no"):
        load_weights(VisionTransformer(ViTConfig(32, 4, 4, 64, 16, None, img_size=64), "deeper"),
                     str(GOLDEN / "transfg_vit_tiny.npz"))
