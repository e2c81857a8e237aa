"""The model contract: a model or backbone registered from outside fgvc (here, this file) runs
through every command; engine, explain and report name no model; resume takes what may change."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fgvc
from fgvc.cli import main
from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.run import Run
from fgvc.models import BACKBONE_REGISTRY, MODEL_REGISTRY, BackboneSpec, ModelSpec
from fgvc.models.backbones import Backbone
from fgvc.models.output import ModelOutput
from tests.tiny import tiny_train_args

SRC = Path(fgvc.__file__).parent
TOY_MEAN, TOY_STD = (0.25, 0.5, 0.75), (0.2, 0.3, 0.4)


class ToyModel(nn.Module):
    """Pooled stride-32 features -> its own head; logs one statistic per image."""

    def __init__(self, backbone: Backbone, num_classes: int, *, scale: float = 1.0) -> None:
        super().__init__()
        self.backbone, self.scale = backbone, scale
        self.toy_head = nn.Linear(backbone.channels[2], num_classes)

    def forward(self, x):
        logits = self.toy_head(self.backbone(x)[2].mean(dim=(2, 3))) * self.scale
        return ModelOutput(logits=logits, branch_logits={"toy": logits},
                           extras={"toy_count": torch.ones(len(x), device=x.device)})

    def loss(self, output, target, epoch=None):
        ce = F.cross_entropy(output.logits, target)
        return ce, {"ce": ce}


def toy_backbone(pretrained=False) -> Backbone:
    body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=8, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, stride=1, padding=1), nn.ReLU())
    units = [(str(i),) for i in range(len(body))]
    return Backbone(body, units, (2, 4, 8), (8, 12, 16), "toynet")  # its statistics: the spec's (below)


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(MODEL_REGISTRY, "toy", ModelSpec(
        "toy", ToyModel, head_prefixes=("toy_head.",), default_transform="plain", default_input_size=64,
        step_stats={"toy_count": "toy_images"}, extras=("toy_count",)))
    monkeypatch.setitem(BACKBONE_REGISTRY, "toynet", BackboneSpec("toynet", toy_backbone, TOY_MEAN, TOY_STD))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("contract") / "data"
    assert main(["data", "synth", str(root), "--classes", "3", "--per-class", "6", "--size", "64"]) == 0
    return root


def _train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return tiny_train_args(data, run, *extra, report=True, sets={"train.batch_size": 4, "train.eval_batch_size": 8})


def test_a_model_and_backbone_defined_here_run_through_every_command(toy_registered, small_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_args(small_data, run, "--set", "model.name=toy", "--set", "model.backbone=toynet",
                            "--set", "model.options.scale=2.0", "--set", "train.epochs=2")) == 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    split = json.loads((run / "split.json").read_text())
    train_images = len(list((small_data / "train").rglob("*.jpg"))) - len(split["val"])
    assert [float(r["train/toy_images"]) for r in rows] == [train_images // 4 * 4] * 2  # drop_last batches of 4
    assert (run / "report.html").is_file()

    assert main(["evaluate", str(run), "--data", str(small_data), "--device", "cpu", "--no-progress"]) == 0
    metrics = json.loads((run / "eval_val" / "metrics.json").read_text())
    assert metrics["images"] == len(split["val"]) and "acc_toy" in metrics
    assert main(["predict", str(run), "--data", str(small_data), "--out", str(tmp_path / "pred"), "--group", "g",
                 "--device", "cpu", "--no-progress"]) == 0
    submission = json.loads((tmp_path / "pred" / "submission.json").read_text())
    assert set(submission["images"]) == {p.name for p in (small_data / "test").iterdir()}
    image = sorted((small_data / "test").glob("*.jpg"))[0]
    assert main(["explain", str(run), str(image), "--out", str(tmp_path / "pics"), "--device", "cpu"]) == 0
    assert (tmp_path / "pics" / f"{image.stem}.png").is_file()
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--device", "cpu", "--no-progress"]) == 0
    assert 'id="metrics"' in (tmp_path / "r.html").read_text(encoding="utf-8")

    # the plain transform normalised with the toy backbone's own statistics
    opened = Run.open(run, device="cpu")
    loader = opened.loader(opened.dataset().split("test"), False)
    assert loader.batch_transform.mean.flatten().tolist() == pytest.approx(TOY_MEAN)
    assert loader.batch_transform.std.flatten().tolist() == pytest.approx(TOY_STD)


def test_transfer_reinitialises_the_heads_the_spec_names(toy_registered, small_data, tmp_path, capsys):
    source = tmp_path / "source"
    assert main(_train_args(small_data, source, "--set", "model.name=toy", "--set", "model.backbone=toynet",
                            "--set", "train.epochs=1")) == 0
    other = tmp_path / "other_data"
    assert main(["data", "synth", str(other), "--classes", "4", "--per-class", "6", "--size", "64", "--seed", "3"]) == 0
    target = tmp_path / "target"
    assert main(_train_args(other, target, "--set", "model.name=toy", "--set", "model.backbone=toynet",
                            "--set", "train.epochs=1", "--init-from", str(source / "last.pt"))) == 0
    out = capsys.readouterr().out
    assert "re-initialised 2 (toy_head.weight, toy_head.bias)" in out, out


def test_engine_explain_and_report_name_no_model_and_models_import_no_engine():
    files = [*sorted((SRC / "engine").glob("*.py")), SRC / "viz" / "explain.py", SRC / "viz" / "report.py"]
    classes = ("FBSD", "MMALNet", "MMAL", "Baseline", "FBSM", "AOLM", "APPM")
    for path in files:
        code = path.read_text(encoding="utf-8")
        for name in classes:
            assert not re.search(rf"\b{name}\b", code), f"{path.name} names {name}"
        assert not re.search(r"""["'](fbsd|mmal|plain|baseline)["']""", code), f"{path.name} names a recipe"
        assert not re.search(r"isinstance\([^)]*(models|Net|FBSD)", code), path.name
        assert "aolm_fallback" not in code and "fbsm" not in code, path.name
    for path in sorted((SRC / "models").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"from \.\.engine|import fgvc\.engine|from fgvc\.engine", text), path.name


def test_plain_transform_with_lite0_uses_lite0_statistics(small_data):
    from fgvc.config import load_config
    from fgvc.models.efficientnet_lite import LITE0_MEAN, LITE0_STD

    config = load_config("demo", ["model.backbone=efficientnet_lite0", "model.transform=plain",
                                  "model.input_size=64", "data.num_workers=0"])
    config.data.root = str(small_data)
    run = Run.start(config, "unused")
    assert run.stats == (LITE0_MEAN, LITE0_STD)
    loader = run.loader(run.dataset().split("test"), False)
    assert loader.batch_transform.mean.flatten().tolist() == pytest.approx(LITE0_MEAN)
    transform = run.eval_transform()
    normalise = transform.transforms[-1]
    assert tuple(normalise.mean) == pytest.approx(LITE0_MEAN) and tuple(normalise.std) == pytest.approx(LITE0_STD)


# -- resume ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_epoch_run(small_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "run"
    assert main(_train_args(small_data, run, "--set", "train.epochs=1", "--set", "train.amp=bf16",
                            "--no-report")) == 0
    return run


def test_resume_on_moved_data_extends_the_run(one_epoch_run, small_data, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(one_epoch_run, run)
    moved = tmp_path / "moved"
    shutil.copytree(small_data, moved)
    assert main(["train", "--resume", str(run), "--data", str(moved), "--set", "train.epochs=3",
                 "--no-progress", "--no-report"]) == 0
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 3 and state["config"]["train"]["epochs"] == 3
    assert state["config"]["data"]["root"] == str(moved.resolve())
    assert [float(r["step"]) for r in csv.DictReader((run / "metrics.csv").open())] == [1.0, 2.0, 3.0]
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "has finished all 3 epochs" in out and "--set train.epochs=N (N > 3)" in out


def test_resume_refuses_changes_that_make_another_run(one_epoch_run, capsys):
    for key, value in (("model.input_size", "96"), ("optim.lr", "0.5"), ("model.name", "fbsd")):
        assert main(["train", "--resume", str(one_epoch_run), "--set", f"{key}={value}", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--set {key} cannot change when resuming" in err


def test_resume_uses_the_runs_own_device_and_precision(one_epoch_run):
    run = Run.resume(one_epoch_run)
    assert run.amp_dtype == torch.bfloat16 and run.device == torch.device("cpu")
    assert Run.resume(one_epoch_run, overrides=["train.amp=off"]).amp_dtype is None


def test_data_root_is_stored_absolute(one_epoch_run):
    root = load_checkpoint(one_epoch_run / "last.pt")["config"]["data"]["root"]
    assert Path(root).is_absolute()


# -- errors ------------------------------------------------------------------------------------

def test_a_bug_is_an_internal_error_with_traceback(toy_registered, small_data, tmp_path, monkeypatch, capsys):
    def broken(self, x):
        raise KeyError("toy_missing_key")

    monkeypatch.setattr(ToyModel, "forward", broken)
    code = main(_train_args(small_data, tmp_path / "run", "--set", "model.name=toy", "--set", "model.backbone=toynet",
                            "--set", "train.epochs=1"))
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in err and "KeyError: 'toy_missing_key'" in err
    assert "internal error" in err and "bug in fgvc" in err


def test_an_expected_failure_is_one_line_exit_2(small_data, tmp_path, capsys):
    assert main(_train_args(small_data, tmp_path / "run", "--set", "model.name=nope")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.name: unknown model 'nope'" in err and "Traceback" not in err
