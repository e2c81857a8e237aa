"""The papers' presets as a user types them: `fgvc train --config pmg_resnet50_cub --data CUB_200_2011` (and CAL's,
TransFG's, PIM's) runs a training step at the paper's size on a folder in CUB-200-2011's layout: ResNet-50/101 and
ViT-B at 448 px, Swin-L at 384, on a CPU: slow."""

from __future__ import annotations

import pytest

from fgvc.cli import main
from fgvc.engine.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper") / "CUB_200_2011"
    # 2 classes x 3 images: 2 train + 1 test each (--test-fraction 0.34), at CUB's typical size
    assert main(["data", "synth", str(root), "--layout", "cub", "--classes", "2", "--per-class", "3",
                 "--size", "500", "--test-fraction", "0.34"]) == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "model", "size", "paper"), [("pmg_resnet50_cub", "pmg", 448, 89.6),
                                                                ("cal_resnet101_cub", "cal", 448, 90.6),
                                                                ("transfg_vitb16_cub", "transfg", 448, 91.7),
                                                                ("pim_swinl_cub", "pim", 384, 92.8)])
def test_the_papers_preset_trains_one_step_at_its_size_on_a_cub_folder(cub, tmp_path, preset, model, size, paper,
                                                                        capsys):
    run = tmp_path / "run"
    # no ImageNet download here (offline); one step: 4 training images, batch 4 (a CPU's memory, not the preset's
    # 16), no validation split to score
    status = main(["train", "--config", preset, "--data", str(cub), "--out", str(run), "--no-progress", "--no-report",
                   "--set", "model.pretrained=false", "--set", "train.epochs=1", "--set", "train.batch_size=4",
                   "--set", "data.val_fraction=0", "--set", "data.num_workers=0", "--set", "train.amp=off"])
    out = capsys.readouterr().out
    assert status == 0, out
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1 and state["config"]["model"]["name"] == model
    assert state["config"]["model"]["input_size"] == size and state["config"]["paper"]["top1"] == paper
    assert f"run {run}: {model}/" in out and "on 4 train, 0 val images, 2 classes" in out
