"""PMG against the authors' code: golden tensors their code produced (tests/models/golden/pmg_golden.json says
how: the reduced configuration, the reference commit, the seeds), loaded through the documented key mapping."""

from __future__ import annotations

import functools
import random

import pytest
import torch

from fgvc.models import model_spec
from fgvc.models.pmg import PMG, jigsaw, jigsaw_permutation, pmg_train_passes

from . import parity
from .narrow import narrow_resnet
from .parity import load_golden

# float64 end to end: what is left is the order of summation (a few ulps of the largest value)
RTOL, ATOL = 1e-9, 1e-12
assert_close = functools.partial(parity.assert_close, rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden("pmg_golden")


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return parity.renamed("pmg", state, dropped_ok=True)


def build(golden: dict) -> PMG:
    model = PMG(narrow_resnet((2, 4, 8, 16)), 5, feature_size=8).double()
    model.load_state_dict(_renamed(golden["state_dict"]), strict=True)
    return model


def inputs(golden: dict) -> torch.Tensor:
    return (golden["images"].double() / 255 - 0.5) / 0.5


def test_every_tensor_of_the_authors_model_has_one_place(golden: dict) -> None:
    state = _renamed(golden["state_dict"])
    dropped = sorted(k for k in golden["state_dict"] if model_spec("pmg").authors_layout.rename(k) is None)
    assert dropped == ["features.fc.bias", "features.fc.weight"]
    assert set(state) == set(build(golden).state_dict())


def test_eval_logits_of_every_head_equal_the_authors(golden: dict) -> None:
    model = build(golden).eval()
    with torch.no_grad():
        out = model(inputs(golden))
    for name, expected in zip(("part1", "part2", "part3", "concat"), golden["eval_logits"], strict=True):
        assert_close(out.branch_logits[name], expected, name)
    assert_close(out.logits, sum(golden["eval_logits"]), "the prediction (the authors' combined output)")


def test_one_training_iteration_equals_the_authors(golden: dict) -> None:
    """Four passes: each pass's loss and trained head's logits, every gradient, then the weights and BatchNorm
    statistics after the four SGD steps; the jigsaw drawn from the same seeded ``random``."""
    model = build(golden).train()
    groups = model_spec("pmg").param_groups(model)
    optimizer = torch.optim.SGD([{"params": groups["new"], "lr": 0.002}, {"params": groups["backbone"], "lr": 0.0002}],
                                momentum=0.9, weight_decay=5e-4)
    x, y = inputs(golden), golden["labels"]
    random.seed(golden["seeds"]["python_random"])
    torch.manual_seed(golden["seeds"]["torch"])
    rename = model_spec("pmg").authors_layout.rename
    passes = pmg_train_passes(model, model, x, y, 0)
    for i, expected in enumerate(golden["train_passes"]):
        optimizer.zero_grad(set_to_none=True)
        step = next(passes)
        assert step.step
        assert_close(step.loss, expected["loss"], f"pass {i + 1} loss")
        head = ("part1", "part2", "part3", "concat")[i]
        assert list(step.output.branch_logits) == [head]  # the one head this pass trains
        assert_close(step.output.logits, expected["logits"][i], f"pass {i + 1} {head}")
        step.loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        want = {rename(k): g for k, g in expected["grads"].items()}
        assert set(grads) == set(want), f"pass {i + 1}: parameters with a gradient differ"
        for name, grad in want.items():
            assert_close(grads[name], grad, f"pass {i + 1} gradient of {name}")
        optimizer.step()
    assert next(passes, None) is None
    after = _renamed(golden["state_dict_after"])
    for name, value in model.state_dict().items():
        assert_close(value.double() if value.is_floating_point() else value.double(), after[name].double(), name)


def test_jigsaw_permutation_is_the_authors_sequence_of_swaps() -> None:
    # by hand for n = 2 with the list shuffled to (1,1), (0,0), (1,0), (0,1): swaps of position 0 with 3, 0, 2, 1
    order = [[1, 1], [0, 0], [1, 0], [0, 1]]
    perm = jigsaw_permutation(2, shuffle=lambda items: items.__setitem__(slice(None), order))
    # [0,1,2,3] -> swap(0,3) [3,1,2,0] -> swap(0,0) -> swap(0,2) [2,1,3,0] -> swap(0,1) [1,2,3,0]
    assert perm == [1, 2, 3, 0]
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = jigsaw(x, 2, perm)
    # position 0 (top-left) holds source patch 1 (top-right): rows 0-1, columns 2-3
    assert out[0, 0, :2, :2].tolist() == [[2.0, 3.0], [6.0, 7.0]]
    assert out[0, 0, 2:, 2:].tolist() == [[0.0, 1.0], [4.0, 5.0]]


def test_jigsaw_keeps_the_pixels_beyond_whole_patches() -> None:
    x = torch.arange(2 * 3 * 10 * 7, dtype=torch.float64).view(2, 3, 10, 7)
    out = jigsaw(x, 3, [8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert torch.equal(out[:, :, 9:, :], x[:, :, 9:, :]) and torch.equal(out[:, :, :, 6:], x[:, :, :, 6:])
    assert torch.equal(out[:, :, :3, :2], x[:, :, 6:9, 4:6])  # position 0 holds the last patch
    assert sorted(out.flatten().tolist()) == sorted(x.flatten().tolist())


@pytest.mark.parametrize("size", [64, 72, 100])
def test_any_input_size_and_a_batch_of_one(size: int) -> None:
    model = PMG(narrow_resnet((2, 4, 8, 16)), 3, feature_size=8)
    model.train()
    passes = list(pmg_train_passes(model, model, torch.randn(1, 3, size, size), torch.tensor([2]), 0))
    assert [sorted(p.terms) for p in passes] == [["ce_part1"], ["ce_part2"], ["ce_part3"], ["ce_concat"]]
    model.eval()
    assert model(torch.randn(1, 3, size, size)).logits.shape == (1, 3)
