"""PIM's token selector (docs/fidelity.md I9): tokens ranked by the log-odds of their largest softmax probability,
which float32 does not round to a constant, equal scores by lower token index — the same tokens, in the same order,
in PyTorch and in the exported ONNX file, where the authors' saturated confidences tie."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor, nn

from fgvc.errors import ConfigError
from fgvc.models.pim import PIM, confidence_log_odds, descending_order, selector_ranks

SELECTS = (40, 12, 2)  # of 64, 16 and 4 tokens at 64 px
# level 1's designed token logits (3 classes); every other token's are (0, 0, 0): p = 1/3, log-odds -ln 2
DESIGNED = {
    50: (0.0, 40.0, 0.0),  # 40 - ln 2; p rounds to 1 in float32
    7: (30.0, 0.0, 0.0),  # 30 - ln 2; p rounds to 1
    60: (0.0, 0.0, 30.0),  # 30 - ln 2, exactly token 7's: a tie
    3: (0.0, 20.0, 0.0),  # 20 - ln 2; p rounds to 1
    33: (1.0, 2.0, 0.0),  # 2 - log(e + 1) = 0.687
    40: (5.0, 5.0, 0.0),  # two top classes: 5 - log(e^5 + 1) = -0.0067 (the tied top class is not left out)
}


def designed_logits() -> Tensor:
    """(2, 64, 3): image 0 as DESIGNED, image 1 the same tokens mirrored (token t at 63 - t)."""
    first = torch.zeros(64, 3)
    for token, logits in DESIGNED.items():
        first[token] = torch.tensor(logits)
    return torch.stack([first, first.flip(0)])


def rest(*first: int, n: int = 64) -> list[int]:
    return [*first, *(t for t in range(n) if t not in first)]


# by hand: descending log-odds, then the 58 tokens at -ln 2 by index. Image 1: 50 -> 13, 7 -> 56, 60 -> 3, 3 -> 60,
# 33 -> 30, 40 -> 23; tokens 3 and 56 tie (30 - ln 2), so 3 comes first although it mirrors the later token 60
EXPECTED = [rest(50, 7, 60, 3, 33, 40), rest(13, 3, 56, 60, 30, 23)]


class ThreeMaps(nn.Module):
    """A small CNN backbone as PIM reads one: three maps at strides 8, 16, 32."""

    channels = (4, 8, 16)
    strides = (8, 16, 32)

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 4, 8, stride=8), nn.Conv2d(4, 8, 2, stride=2),
                                    nn.Conv2d(8, 16, 2, stride=2)])

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = []
        for conv in self.convs:
            x = conv(x)
            maps.append(x)
        return maps


class FixedLogits(nn.Module):
    """A token classifier whose output is given: (2, classes, S), plus the input times 0 so that the exported graph
    computes the ranks at run time instead of folding them into constants."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits.transpose(1, 2).contiguous())

    def forward(self, h: Tensor) -> Tensor:
        return self.logits + 0 * h[:, :1]


def designed_pim() -> PIM:
    torch.manual_seed(0)
    model = PIM(ThreeMaps(), 3, fpn_size=16, num_selects=SELECTS).eval()
    model.token_classifiers[0] = FixedLogits(designed_logits())
    for i, tokens in ((1, 16), (2, 4)):  # every token alike: the order is the index
        model.token_classifiers[i] = FixedLogits(torch.zeros(2, tokens, 3))
    return model


def test_saturated_confidences_tie_where_their_log_odds_do_not() -> None:
    logits = designed_logits()
    saturated = [50, 7, 60, 3]
    assert torch.softmax(logits, -1).max(-1).values[0, saturated].tolist() == [1.0] * 4
    assert torch.log_softmax(logits, -1).max(-1).values[0, saturated].tolist() == [0.0] * 4
    score = confidence_log_odds(logits)[0]
    ln2 = math.log(2)
    expected = {50: 40 - ln2, 7: 30 - ln2, 60: 30 - ln2, 3: 20 - ln2, 33: 2 - math.log(math.e + 1),
                40: 5 - math.log(math.exp(5) + 1), 0: -ln2}
    for token, value in expected.items():
        assert score[token].item() == pytest.approx(value, rel=1e-6, abs=1e-6), token
    assert score[7].item() == score[60].item()


def test_the_selector_ranks_by_log_odds_then_token_index() -> None:
    assert selector_ranks(designed_logits()).tolist() == EXPECTED


def test_the_pim_keeps_the_most_confident_tokens_lowest_index_first() -> None:
    model = designed_pim()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.ranks[0].tolist() == EXPECTED
    assert out.ranks[1].tolist() == [list(range(16))] * 2 and out.ranks[2].tolist() == [[0, 1, 2, 3]] * 2
    kept = torch.tensor([row[:40] for row in EXPECTED])
    assert torch.equal(out.selected_logits[0], designed_logits().gather(1, kept.unsqueeze(-1).expand(-1, -1, 3)))


def test_descending_order_is_a_stable_sort() -> None:
    generator = torch.Generator().manual_seed(0)
    score = torch.randint(0, 5, (4, 50), generator=generator).float()  # 5 values among 50 tokens: ties everywhere
    score[0, 7] = float("inf")
    expected = [sorted(range(50), key=lambda t, row=row: (-row[t], t)) for row in score.tolist()]
    assert descending_order(score).tolist() == expected
    assert descending_order(torch.tensor([[2.0], [-1.0]])).tolist() == [[0], [0]]  # one token
    assert descending_order(torch.full((2, 3), 0.5)).tolist() == [[0, 1, 2]] * 2  # all tied: by index


def test_rank_by_authors_is_their_softmax_order_and_other_names_are_refused() -> None:
    logits = torch.randn(3, 20, 5, generator=torch.Generator().manual_seed(1))  # distinct confidences
    theirs = torch.softmax(logits, -1).max(-1).values.argsort(-1, descending=True)
    assert torch.equal(selector_ranks(logits, "authors"), theirs)
    assert torch.equal(selector_ranks(logits), theirs)  # the same order where nothing ties
    assert PIM(ThreeMaps(), 3, fpn_size=16, num_selects=SELECTS, rank_by="authors").rank_by == "authors"
    with pytest.raises(ConfigError, match="model.options.rank_by must be one of log_odds, authors"):
        PIM(ThreeMaps(), 3, fpn_size=16, num_selects=SELECTS, rank_by="softmax")


class RanksAndLogits(nn.Module):
    def __init__(self, model: PIM) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        return (out.logits, *out.ranks)


def test_the_onnx_export_selects_the_same_tokens() -> None:
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'fgvc[export]'")
    pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install 'fgvc[export]'")
    from fgvc.export.formats import ONNX_OPSET

    wrapper = RanksAndLogits(designed_pim()).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        eager = wrapper(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, (x,), dynamo=True, opset_version=ONNX_OPSET, optimize=True,
                                    verbose=False)
    assert "TopK" in {node.op_type for node in program.model_proto.graph.node}  # ranked at run time, not folded
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, *ranks = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert ranks[0].tolist() == EXPECTED
    assert ranks[1].tolist() == [list(range(16))] * 2 and ranks[2].tolist() == [[0, 1, 2, 3]] * 2
    assert torch.allclose(torch.from_numpy(logits), eager[0], rtol=1e-4, atol=1e-5)
