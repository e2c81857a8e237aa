"""FBSD pieces against hand-computed values and a plain per-strip re-statement of the reference."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from fgvc.errors import ConfigError
from fgvc.models import create_model, model_spec
from fgvc.models.fbsd import FBSM, FDM, TopKPool, strip_sizes


def _fbsm_reading_channel0(k: int) -> FBSM:
    """An FBSM whose strip score is the mean of channel 0 (conv picks it, BN is identity in eval)."""
    m = FBSM(in_channels=2, k=k).eval()
    with torch.no_grad():
        m.conv.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
        m.conv.bias.zero_()
    m.bn.eps = 0.0
    return m


def _strip_map(values, rows_per_strip=2, width=3):
    x = torch.ones(1, 2, len(values) * rows_per_strip, width)
    for i, v in enumerate(values):
        x[0, 0, i * rows_per_strip:(i + 1) * rows_per_strip] = v
    return x


def test_fbsm_boosts_by_softmax_and_suppresses_the_argmax_strip():
    m = _fbsm_reading_channel0(4)
    x = _strip_map([1.0, 3.0, 2.0, 0.5])
    boosted, suppressed, b = m(x)
    expected_b = torch.softmax(torch.tensor([1.0, 3.0, 2.0, 0.5]), 0)
    assert torch.allclose(b[0], expected_b, atol=1e-6)
    rows_b = expected_b.repeat_interleave(2).view(1, 1, 8, 1)
    assert torch.allclose(boosted, x + 0.5 * x * rows_b, atol=1e-6)
    multiplier = (suppressed / x)[0, 1, :, 0]  # channel 1 is all ones
    assert multiplier.tolist() == [1, 1, 0.5, 0.5, 1, 1, 1, 1]


def test_fbsm_ties_at_the_maximum_are_all_suppressed():
    m = _fbsm_reading_channel0(4)
    _, suppressed, _ = m(_strip_map([3.0, 1.0, 3.0, 0.0]))
    assert suppressed[0, 1, ::2, 0].tolist() == [0.5, 1, 0.5, 1]


def test_strips_when_the_height_does_not_divide():
    assert strip_sizes(56, 8) == [7] * 8  # the reference rule where it applies
    assert strip_sizes(10, 4) == [3, 3, 2, 2]
    assert strip_sizes(7, 2) == [4, 3]
    with pytest.raises(ConfigError, match="at least 64 px"):
        strip_sizes(1, 2)
    m = _fbsm_reading_channel0(4)
    x = torch.ones(1, 2, 10, 3)
    x[0, 0, :3], x[0, 0, 3:6], x[0, 0, 6:8], x[0, 0, 8:] = 1.0, 4.0, 2.0, 3.0
    _, suppressed, b = m(x)
    assert torch.allclose(b[0], torch.softmax(torch.tensor([1.0, 4.0, 2.0, 3.0]), 0), atol=1e-6)
    assert suppressed[0, 1, :, 0].tolist() == [1, 1, 1, 0.5, 0.5, 0.5, 1, 1, 1, 1]


def _reference_fbsm(m: FBSM, x: torch.Tensor):
    """The authors' forward, one conv+BN+ReLU+GAP call per strip (REFERENCE §1.3)."""
    h = x.shape[2] // m.k
    pooled = [F.adaptive_avg_pool2d(F.relu(m.bn(m.conv(s))), 1) for s in torch.split(x, h, dim=2)]
    b = torch.softmax(torch.cat(pooled, dim=2), dim=2)
    boosted = x + m.alpha * x * torch.repeat_interleave(b, h, dim=2)
    keep = torch.clamp((b < b.max(dim=2, keepdim=True)[0]).float(), min=m.beta)
    return boosted, x * torch.repeat_interleave(keep, h, dim=2), b.flatten(1)


@pytest.mark.parametrize("train", [True, False])
def test_vectorised_fbsm_equals_per_strip_calls_including_batchnorm_statistics(train):
    torch.manual_seed(0)
    ours = FBSM(in_channels=6, k=4)
    with torch.no_grad():
        ours.bn.running_mean.fill_(0.3)
        ours.bn.running_var.fill_(2.0)
        ours.bn.weight.fill_(1.7)
        ours.bn.bias.fill_(0.2)
    ref = copy.deepcopy(ours)
    ours.train(train)
    ref.train(train)
    x = torch.randn(3, 6, 8, 5)
    for got, want in zip(ours(x), _reference_fbsm(ref, x), strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(ours.bn.running_mean, ref.bn.running_mean, atol=1e-6)
    assert torch.allclose(ours.bn.running_var, ref.bn.running_var, atol=1e-6)
    assert ours.bn.num_batches_tracked.item() == ref.bn.num_batches_tracked.item()


def test_fdm_by_hand():
    # a: two positions with features (1, 0) and (0, 2); b: one position with (1, 0).
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).T.reshape(1, 2, 1, 2)
    b = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    new_a, new_b = FDM(factor=0.5)([a, b])  # a large factor: the subtraction below stays exact
    to_a, to_b = new_a - a, new_b - b  # the terms FDM added
    # negative cosine similarity: [-1, 0]; softmax over a's positions gives the weights for b
    p = [math.exp(-1) / (math.exp(-1) + 1), 1 / (math.exp(-1) + 1)]
    assert torch.allclose(to_b.flatten(), 0.5 * torch.tensor([p[0] * 1 + p[1] * 0, p[0] * 0 + p[1] * 2]))
    # softmax over b's single position is 1: every position of a receives b's raw feature
    assert torch.allclose(to_a.reshape(2, 2).T, 0.5 * torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_fdm_module_adds_every_pairs_terms_from_the_pre_update_maps():
    # The reference: three pairwise calls on the original maps, then att_i + gamma * (sum of its terms).
    torch.manual_seed(0)
    maps = [torch.randn(2, 6, 8, 8), torch.randn(2, 6, 4, 4), torch.randn(2, 6, 2, 2)]

    def pair(a, b):  # written out as the paper: negative cosine similarity, both softmax directions
        fa, fb = a.flatten(2), b.flatten(2)
        sim = -torch.bmm(F.normalize(fa, dim=1).transpose(1, 2), F.normalize(fb, dim=1))
        to_b = torch.bmm(fa, torch.softmax(sim, dim=1)).view_as(b)
        to_a = torch.bmm(fb, torch.softmax(sim.transpose(1, 2), dim=1)).view_as(a)
        return 0.01 * to_a, 0.01 * to_b

    d12, d21 = pair(maps[0], maps[1])
    d13, d31 = pair(maps[0], maps[2])
    d23, d32 = pair(maps[1], maps[2])
    expected = [maps[0] + 2.0 * (d12 + d13), maps[1] + 2.0 * (d21 + d23), maps[2] + 2.0 * (d31 + d32)]
    got = FDM(factor=0.01)(maps, gamma=2.0)
    for g, e, m in zip(got, expected, maps, strict=True):
        assert g.shape == m.shape
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)
        assert (g - m).abs().max() > 1e-3  # the terms are really there
    pair_only = FDM(factor=0.01)(maps[:2])
    for got, m, want in zip(pair_only, maps[:2], (d12, d21), strict=True):
        torch.testing.assert_close(got - m, want, atol=1e-6, rtol=1e-4)


def test_fdm_default_factor_is_the_references_rounded_value():
    model = create_model("fbsd", 3, backbone="resnet18")
    assert model.fdm.factor == round(1 / (28 * 28), 3) == 0.001


def test_topk_pool():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    assert TopKPool(5)(x).item() == pytest.approx((9 + 8 + 7 + 6 + 5) / 5)
    assert TopKPool(20)(x).item() == pytest.approx(5.0)  # fewer positions than k: all of them


def test_parameter_count_matches_the_reference_for_resnet50_and_200_classes():
    model = create_model("fbsd", 200, backbone="resnet50")
    groups = model_spec("fbsd").param_groups(model)  # "new" (FBSM, blocks, heads) and "backbone"
    count = lambda params: sum(p.numel() for p in params)  # noqa: E731
    assert count(model.parameters()) == 43_086_185
    assert count(groups["backbone"]) == 23_508_032
    assert count(groups["new"]) == 19_578_153


def test_loss_weights_and_prediction_sum():
    model = create_model("fbsd", 4, backbone="resnet18").eval()
    out = model(torch.randn(2, 3, 64, 64))
    y = torch.tensor([1, 2])
    total, terms = model.loss(out, y)
    ce = {k: F.cross_entropy(v, y) for k, v in out.branch_logits.items()}
    assert torch.allclose(total, 2 * (ce["part1"] + ce["part2"] + ce["part3"]) + ce["concat"])
    assert torch.allclose(out.logits, sum(out.branch_logits.values()))
    assert set(terms) == {"ce_part1", "ce_part2", "ce_part3", "ce_concat"}
