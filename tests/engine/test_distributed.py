"""Two CPU processes with gloo under torchrun: training runs, and evaluation scores every image once."""

import json
import subprocess
import sys

import pytest

from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.evaluate import evaluate_checkpoint


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fgvc", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_two_process_training_and_exact_evaluation(tiny_data, tmp_path):
    run = tmp_path / "ddp_run"
    overrides = [f"--set={k}" for k in ("data.num_workers=0", "data.val_fraction=0.5", "model.input_size=64",
                                        "train.batch_size=2", "train.eval_batch_size=2", "train.epochs=1",
                                        "train.accumulate=2", "optim.name=sgd")]
    result = _torchrun("train", "--config", "demo", "--data", str(tiny_data), "--out", str(run), "--no-progress",
                       *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("epoch 1/1") == 1  # rank 0 logs alone
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1 and len(state["val_ids"]) == 9  # odd count: shards of 5 and 4, no padding
    # the temperature is fitted from both shards' logits, written and announced by rank 0 alone
    assert result.stdout.count("stored in best.pt and last.pt") == 1
    assert state["calibration"]["images"] == 9 == load_checkpoint(run / "best.pt")["calibration"]["images"]

    single = evaluate_checkpoint(run, tiny_data, "val", out_dir=tmp_path / "single", progress=False, device="cpu")
    result = _torchrun("evaluate", str(run), "--data", str(tiny_data), "--split", "val", "--out",
                       str(tmp_path / "multi"), "--no-progress", "--batch-size", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    multi = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    assert multi["processes"] == 2
    assert multi["images"] == single.metrics["images"] == 9
    assert multi["confusion"] == single.metrics["confusion"]
    assert abs(multi["top1"] - single.metrics["top1"]) < 1e-12
    # batches of 2 vs 32 may run other conv kernels: logits agree to ~1e-4 relative (the bound derived in
    # test_training's channels_last test), and cross-entropy moves by at most twice the largest logit change
    assert multi["loss"] == pytest.approx(single.metrics["loss"], rel=1e-3)


METHOD_SETS = {
    "pmg": ("model.name=pmg", "model.transform=fbsd", "model.options.feature_size=16", "model.options.part_feature=32"),
    "cal": ("model.name=cal", "model.transform=cal", "model.options.attentions=4", "model.options.inference=validate"),
    "transfg": ("model.name=transfg", "model.backbone=vit_ti16", "model.transform=transfg"),
    "pim": ("model.name=pim", "model.transform=pim", "model.options.num_selects=[40, 12, 2]",
            "model.options.fpn_size=32"),
}


@pytest.mark.parametrize("method", ["pmg", "cal", "transfg", "pim"])
def test_two_process_training_of_the_newer_methods(tiny_data, tmp_path, method):
    """PMG's passes each leave some heads without a gradient (ModelSpec.unused_parameters): DDP must look for
    them, or the second pass fails with "Expected to have finished reduction". CAL runs two forwards before its
    one backward."""
    run = tmp_path / f"ddp_{method}"
    overrides = [f"--set={k}" for k in ("data.num_workers=0", "data.val_fraction=0.5", "model.input_size=64",
                                        *METHOD_SETS[method], "train.batch_size=2",
                                        "train.eval_batch_size=2", "train.epochs=1", "optim.name=sgd")]
    result = _torchrun("train", "--config", "demo", "--data", str(tiny_data), "--out", str(run), "--no-progress",
                       *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
