"""PIM on its own backbone family: Swin-T (timm, random weights) at its smallest size, 224 px, through training,
evaluation, explanation and serving — the token path (FPN over stage tokens, Conv1d upsampling) that the ResNet-18
workflow tests do not take."""

from __future__ import annotations

import pytest
import torch

from fgvc.engine.evaluate import evaluate_checkpoint
from fgvc.engine.run import Run
from fgvc.engine.trainer import train
from fgvc.models import MODEL_REGISTRY
from fgvc.viz.explain import explain_images
from tests.engine.conftest import tiny_config

pytest.importorskip("timm", reason="Swin backbones come from timm (pip install 'fgvc[timm]')")
pytestmark = pytest.mark.skipif("pim" not in MODEL_REGISTRY, reason="pim is not registered")


def test_pim_on_swin_t_trains_evaluates_explains_and_serves(tiny_data, tmp_path):
    config = tiny_config(tiny_data, **{"model.name": "pim", "model.backbone": "swin_t", "model.input_size": 224,
                                       "model.transform": "pim", "model.options.fpn_size": 32,
                                       "train.epochs": 1, "train.batch_size": 4, "optim.lr": 0.001})
    run_dir = tmp_path / "pim_swin"
    train(config, run_dir, progress=False)

    run = Run.open(run_dir, device="cpu")
    model = run.trained_model(for_inference=False)
    counts = model.backbone.token_counts()
    assert counts == [28 * 28, 14 * 14, 7 * 7, 7 * 7]  # 224 px over strides 8, 16, 32, 32
    assert all(0 < n < c for n, c in zip(model.num_selects, counts, strict=True))  # some kept, some dropped

    report = evaluate_checkpoint(run_dir, tiny_data, "test", progress=False, device="cpu")
    assert report.metrics["images"] == len(list((tiny_data / "test").glob("*.jpg")))
    assert {"acc_combiner", "acc_layer1", "acc_layer4"} <= set(report.metrics)

    images = sorted((tiny_data / "test").glob("*.jpg"))
    pictures = list(explain_images(run, images[:1]))
    assert len(pictures) == 1 and pictures[0].picture.width > 300

    from fgvc.serve.predictors import TorchPredictor

    predictor = TorchPredictor.from_run(run_dir, device="cpu")
    result = predictor.forward(torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8))
    assert result.probabilities.shape == (2, 3)
    torch.testing.assert_close(result.probabilities.sum(dim=1), torch.ones(2))
