"""TransFG: its explanation maps are the quantities its part selection uses; gradient checkpointing changes nothing."""

import torch

from fgvc.models import create_model
from fgvc.models.transfg import class_attention


def test_the_maps_are_the_class_tokens_attention_and_the_selected_patches():
    torch.manual_seed(0)
    model = create_model("transfg", 3, backbone="vit_ti16", img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.explain_forward(x)
        weights: list[torch.Tensor] = []  # every encoder block's attention, as the blocks return it
        hooks = [block.register_forward_hook(lambda _m, _i, output: weights.append(output[1]))
                 for block in model.backbone.blocks]
        plain = model(x)
        for hook in hooks:
            hook.remove()
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


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients_with_dropout_on(monkeypatch):
    import fgvc.models.transfg as transfg

    calls = []
    original = transfg.checkpoint
    monkeypatch.setattr(transfg, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    grads = []
    for checkpointing in (False, True):
        calls.clear()
        torch.manual_seed(0)
        model = create_model("transfg", 3, backbone="vit_ti16", img_size=64, dropout=0.1,
                             checkpointing=checkpointing).double().train()
        x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(2)  # the dropout draws
        out = model(x)
        loss, _ = model.loss(out, torch.tensor([0, 2]))
        loss.backward()
        assert len(calls) == (len(model.backbone.blocks) if checkpointing else 0)  # each encoder block, once
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-12, atol=1e-14, msg=name)
