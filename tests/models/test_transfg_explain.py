"""TransFG's explanation maps are the quantities its part selection uses, on the patch grid."""

import torch

from fgvc.models import create_model
from fgvc.models.transfg import class_attention


def test_the_maps_are_the_class_tokens_attention_and_the_selected_patches():
    torch.manual_seed(0)
    model = create_model("transfg", 3, backbone="vit_ti16", img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.explain_forward(x)
        plain = model(x)
        _, weights, _ = model._forward(x)
    torch.testing.assert_close(out.logits, plain.logits)  # the explanation does not change the prediction
    grid = out.extras["heatmap1"].shape[1:]
    heads = out.extras["part_indices"].shape[1]
    assert out.extras["heatmap2"].shape == (2, *grid)
    # every head selects one patch: the counts sum to the heads, and each selected patch is where a count lies
    assert out.extras["heatmap2"].flatten(1).sum(dim=1).tolist() == [heads, heads]
    for b in range(2):
        for index in out.extras["part_indices"][b].tolist():
            assert out.extras["heatmap2"][b].flatten()[index] >= 1
    # heatmap1 is the mean over heads of the attention whose per-head maximum is each head's selected patch
    attention = class_attention(weights)
    torch.testing.assert_close(out.extras["heatmap1"].flatten(1), attention.mean(dim=1))
    assert torch.equal(attention.argmax(dim=-1), out.extras["part_indices"])
