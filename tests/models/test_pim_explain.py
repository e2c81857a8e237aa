"""PIM's explanation maps: per tapped stage, the tokens its selector keeps, on the stage's grid."""

import pytest
import torch

from fgvc.models import create_model
from fgvc.models.pim import explain_forward


@pytest.mark.parametrize(("backbone", "size", "stages"), [("swin_t", 224, 4), ("resnet18", 64, 3)])
def test_each_stage_map_marks_exactly_the_selected_tokens(backbone, size, stages):
    torch.manual_seed(0)
    options = {} if backbone == "swin_t" else {"num_selects": [40, 12, 2], "fpn_size": 32}
    model = create_model("pim", 3, backbone=backbone, **options).eval()
    with torch.no_grad():
        out = explain_forward(model, torch.randn(2, 3, size, size))
    maps = [out.extras[f"heatmap{i + 1}"] for i in range(stages)]
    assert f"heatmap{stages + 1}" not in out.extras
    for i, (heat, ranks, n) in enumerate(zip(maps, out.ranks, model.num_selects, strict=True)):
        stride = model.backbone.strides[i]
        assert heat.shape == (2, size // stride, size // stride)
        assert heat.flatten(1).sum(dim=1).tolist() == [n, n]  # exactly num_selects tokens marked
        for b in range(2):  # and they are the ones the selector ranked first
            assert set(torch.nonzero(heat[b].flatten()).flatten().tolist()) == set(ranks[b, :n].tolist())


def test_a_cnn_stage_map_rounds_up_as_its_strided_convolutions_do():
    torch.manual_seed(0)
    model = create_model("pim", 3, backbone="resnet18", num_selects=[40, 12, 2], fpn_size=32).eval()
    with torch.no_grad():
        out = explain_forward(model, torch.randn(1, 3, 72, 72))  # 72 px: stage maps 9, 5, 3 (72/16 = 4.5 -> 5)
    assert [tuple(out.extras[f"heatmap{i}"].shape[1:]) for i in (1, 2, 3)] == [(9, 9), (5, 5), (3, 3)]
