"""PMG, CAL, TransFG and PIM through the whole workflow on a tiny configuration (ResNet-18 or ViT-Ti from scratch,
64 px, 3 synthetic classes): a run stopped mid-epoch resumes to the very weights of an unbroken run, then evaluate,
predict, explain, serve and export take it like any other model."""

from __future__ import annotations

import pytest
import torch

from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.evaluate import evaluate_checkpoint
from fgvc.engine.run import Run
from fgvc.engine.trainer import Trainer, resume, train
from fgvc.models import MODEL_REGISTRY
from fgvc.viz.explain import explain_images
from tests.engine.conftest import tiny_config

METHODS = {
    "pmg": {"model.name": "pmg", "model.transform": "fbsd", "model.options.feature_size": 16,
            "model.options.part_feature": 32, "optim.backbone_lr": 0.001},
    "cal": {"model.name": "cal", "model.options.attentions": 4, "model.options.inference": "validate"},
    "transfg": {"model.name": "transfg", "model.backbone": "vit_ti16", "model.transform": "transfg"},
    "pim": {"model.name": "pim", "model.transform": "pim", "model.options.num_selects": "[40, 12, 2]",
            "model.options.fpn_size": 32},  # on the ResNet-18 of the tiny config (I7)
}
BRANCHES = {"pmg": {"acc_part1", "acc_part2", "acc_part3", "acc_concat"}, "cal": {"acc_raw"}, "transfg": set(),
            "pim": {"acc_combiner"}}


def methods() -> list:
    return [pytest.param(m, marks=pytest.mark.skipif(m not in MODEL_REGISTRY, reason=f"{m} is not registered"))
            for m in METHODS]


def _config(data, method: str, **extra):
    return tiny_config(data, **{**METHODS[method], "train.epochs": 2, "train.batch_size": 3, **extra})


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "last.pt")["model"]


@pytest.mark.parametrize("method", methods())
def test_stopped_mid_epoch_and_resumed_equals_an_unbroken_run(tiny_data, tmp_path, method, monkeypatch):
    straight = tmp_path / "straight"
    train(_config(tiny_data, method), straight, progress=False)

    stopped = tmp_path / "stopped"
    calls = {"n": 0}
    original = Trainer._run_passes

    def stop_after_two_batches(self, x, y, step_now):
        result = original(self, x, y, step_now)
        calls["n"] += 1
        if calls["n"] == 2:  # the stop a SIGTERM requests, at a named point: after the second batch
            self._stop_requested = True
        return result

    monkeypatch.setattr(Trainer, "_run_passes", stop_after_two_batches)
    trainer = train(_config(tiny_data, method), stopped, progress=False)
    assert trainer.interrupted and load_checkpoint(stopped / "last.pt")["step_in_epoch"] == 2
    monkeypatch.setattr(Trainer, "_run_passes", original)
    resume(stopped)
    a, b = _weights(straight), _weights(stopped)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def trained_once(tiny_data, tmp_path_factory):
    """A tiny run per method (one epoch), trained once for the evaluate/explain/serve, ensemble and export tests."""
    runs: dict = {}

    def run(method: str):
        if method not in runs:
            runs[method] = tmp_path_factory.mktemp(f"once_{method}") / method
            train(_config(tiny_data, method, **{"train.epochs": 1}), runs[method], progress=False)
        return runs[method]

    return run


@pytest.mark.parametrize("method", methods())
def test_evaluate_predict_explain_and_serve(trained_once, tiny_data, method):
    run_dir = trained_once(method)
    report = evaluate_checkpoint(run_dir, tiny_data, "test", progress=False, device="cpu")
    assert BRANCHES[method] <= set(report.metrics) and report.metrics["images"] > 0

    run = Run.open(run_dir, device="cpu")
    images = sorted((tiny_data / "test").glob("*.jpg"))
    pictures = list(explain_images(run, images[:2]))
    assert len(pictures) == 2 and all(p.picture.width > 300 for p in pictures)

    from fgvc.serve.predictors import TorchPredictor

    predictor = TorchPredictor.from_run(run_dir, device="cpu")
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    result = predictor.forward(x)
    assert result.probabilities.shape == (2, 3)
    torch.testing.assert_close(result.probabilities.sum(dim=1), torch.ones(2))
    assert predictor.explain(images[0].name, images[0].read_bytes())[:8] == b"\x89PNG\r\n\x1a\n"


def test_pmg_and_cal_join_an_ensemble_with_fbsd_and_mmal_under_tta(tmp_path_factory, capsys):
    """Ensembles average calibrated probabilities of any runs: the four methods together, with flipped views."""
    import json

    from fgvc.cli import main
    from tests.seeing_fixtures import build_data, build_run

    base = tmp_path_factory.getbasetemp()
    data = build_data(base)
    runs = [str(build_run(base, m)) for m in ("fbsd", "mmal", "pmg", "cal")]
    out = tmp_path_factory.mktemp("ensemble4")
    assert main(["evaluate", *runs, "--data", str(data), "--split", "val", "--tta", "flip", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0, capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] > 0 and 0.0 <= metrics["top1"] <= 1.0
    members = metrics["ensemble"]["members"]
    assert len(members) == 4 and all(0.0 <= m["top1"] <= 1.0 for m in members), metrics["ensemble"]


@pytest.mark.skipif(not {"transfg", "pim"} <= set(MODEL_REGISTRY), reason="transfg/pim are not registered")
def test_transfg_and_pim_join_an_ensemble_with_a_cnn_under_tta(trained_once, tiny_data, tmp_path, capsys):
    """A ViT, a PIM and an FBSD run in one ensemble, with flipped views: each member keeps its own preprocessing
    (ViT statistics and resize for TransFG, the CNN's for the others) and the members' calibrated probabilities
    are averaged into one prediction per test image."""
    import json

    from fgvc.cli import main

    fbsd = {"model.name": "fbsd", "model.transform": "fbsd", "train.epochs": 1, "train.batch_size": 3}
    train(tiny_config(tiny_data, **fbsd), tmp_path / "fbsd", progress=False)
    runs = [str(trained_once("transfg")), str(trained_once("pim")), str(tmp_path / "fbsd")]
    out = tmp_path / "ensemble"
    assert main(["evaluate", *runs, "--data", str(tiny_data), "--split", "test", "--tta", "flip", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0, capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    test_images = len(list((tiny_data / "test").glob("*.jpg")))
    assert metrics["images"] == test_images
    members = metrics["ensemble"]["members"]
    assert len(members) == 3 and all(0.0 <= m["top1"] <= 1.0 for m in members), metrics["ensemble"]
    recipes = [Run.open(r, device="cpu").preprocessing.recipe for r in runs]
    assert recipes == ["transfg", "pim", "fbsd"]  # three preprocessings in one ensemble
    predicted = tmp_path / "predicted"
    assert main(["predict", *runs, "--data", str(tiny_data), "--tta", "flip", "--out", str(predicted),
                 "--device", "cpu", "--no-progress"]) == 0, capsys.readouterr().out
    rows = (predicted / "predictions.csv").read_text().strip().splitlines()  # file, class_id, ...
    classes = {d.name.split("_", 1)[0] for d in (tiny_data / "train").iterdir()}
    assert len(rows) == 1 + test_images, rows[:3]  # a header, then one row per test image
    assert all(row.split(",")[1] in classes for row in rows[1:]), rows[:3]


@pytest.mark.parametrize("method", methods())
def test_bf16_autocast_and_channels_last_train_and_evaluate(tiny_data, tmp_path, method):
    """AMP (bf16 autocast on the CPU) and channels_last through the training passes and evaluation."""
    run_dir = tmp_path / method
    trainer = train(_config(tiny_data, method, **{"train.epochs": 1, "train.amp": "bf16",
                                                   "train.channels_last": True}), run_dir, progress=False)
    assert trainer.amp_dtype == torch.bfloat16
    row = trainer.history[-1]
    assert torch.isfinite(torch.tensor(row["train/loss"])) and "val/top1" in row


@pytest.mark.parametrize("fmt", ["onnx", "exported-program", "torchscript"])
@pytest.mark.parametrize("method", ["transfg", "pim"])
def test_the_transformer_methods_export_verified(trained_once, tmp_path, method, fmt, capsys):
    """`fgvc export` loads the written file back and compares it with the run on real images before keeping it."""
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'fgvc[export]'")
    from fgvc.cli import main

    run_dir = trained_once(method)
    out = tmp_path / {"onnx": "model.onnx", "exported-program": "model.pt2", "torchscript": "model.torchscript.pt"}[fmt]
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.is_file() and "OK: top-1 agrees" in capsys.readouterr().out
