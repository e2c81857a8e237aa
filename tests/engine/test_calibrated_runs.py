"""Temperature scaling in runs: fitted after the last epoch on the validation split and stored in best.pt
and last.pt; finished after a kill; invisible to the RNG of a resumed run; and used by every command that
shows or averages probabilities (predict, evaluate, ensembles and views, serve), with top-1 unchanged."""

import contextlib
import csv
import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import fgvc.engine.trainer as trainer_module
from fgvc.cli import build_parser, main
from fgvc.data.synthetic import generate_dataset
from fgvc.engine.calibration import (
    CALIBRATION_KEY,
    Calibration,
    calibrate,
    expected_calibration_error,
    scaled_probabilities,
)
from fgvc.engine.checkpoint import load_checkpoint, save_checkpoint
from fgvc.engine.ensemble import Ensemble, with_views
from fgvc.engine.evaluate import infer
from fgvc.engine.predict import collect_test_images
from fgvc.engine.run import Run
from fgvc.engine.trainer import Trainer
from fgvc.models.output import ModelOutput
from tests.tiny import tiny_train_args

EPOCHS = 2


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of ours catches it."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """4 synthetic classes, 9 training images each, a third held out: 12 validation images, some mistaken."""
    root = tmp_path_factory.mktemp("calibration_data") / "data"
    generate_dataset(root, layout="competition", num_classes=4, per_class=12, size=64, seed=3, test_fraction=0.25)
    return root


def _train_args(data: Path, run: Path, *extra: str) -> list[str]:
    return tiny_train_args(data, run, *extra, sets={
        "data.val_fraction": 0.3, "model.backbone": "resnet18", "train.batch_size": 8, "train.eval_batch_size": 8,
        "train.epochs": EPOCHS, "optim.name": "sgd", "optim.lr": 0.01})


def _main(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, str]:
    """A run through `fgvc train` and what it printed."""
    run = tmp_path_factory.mktemp("calibrated") / "run"
    code, printed = _main(_train_args(data, run))
    assert code == 0
    return run, printed


def _validation_logits(checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 logits of a checkpoint's weights on its run's validation split, and the labels."""
    run = Run.open(checkpoint, device="cpu")
    model = run.trained_model(for_inference=False)
    result = infer(model, run.loader(run.evaluation_split("val"), False), run.device, None, with_loss=False)
    return result.logits, result.labels


def _with_temperature(source: Path, target: Path, temperature: float | None) -> Path:
    """A copy of the run folder whose best.pt carries ``temperature`` (None: no calibration at all, as
    a checkpoint written before fgvc fitted one)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("eval_*", "report.html", "last.pt"))
    state = load_checkpoint(target / "best.pt")
    if temperature is None:
        state.pop(CALIBRATION_KEY)
    else:
        state[CALIBRATION_KEY] = {**state[CALIBRATION_KEY], "temperature": temperature, "note": ""}
    save_checkpoint(target / "best.pt", state)
    return target


# -- training ----------------------------------------------------------------------------------------

def test_training_ends_with_a_temperature_fitted_on_validation_in_best_and_last(trained):
    run, printed = trained
    for name in ("best.pt", "last.pt"):
        stored = Calibration.from_dict(load_checkpoint(run / name)[CALIBRATION_KEY])
        logits, labels = _validation_logits(run / name)
        expected = calibrate(logits, labels)
        assert stored.images == len(labels) == 12
        assert bool((logits.argmax(dim=1) != labels).any())  # mistakes: a real fit, not the T = 1 fallback
        assert stored.temperature == pytest.approx(expected.temperature, rel=1e-6) and stored.temperature != 1.0
        assert stored.nll_after <= stored.nll_before
        assert stored.ece_before == pytest.approx(expected_calibration_error(logits.softmax(dim=1), labels))
        assert Run.open(run / name, device="cpu").temperature == stored.temperature
        assert f"{stored.describe()}; stored in " in printed
    assert printed.count("temperature ") == printed.count("stored in ") >= 1


@pytest.mark.parametrize(("extra", "said"), [
    (("--set", "data.val_fraction=0"), "no validation split: the temperature stays 1 (probabilities are the "
                                        "model's own, uncalibrated)\n"),
    (("--set", "train.calibrate=false"), "train.calibrate is off: the temperature stays 1 (probabilities are the "
                                         "model's own, uncalibrated)\n"),
])
def test_without_validation_or_with_calibration_off_the_temperature_stays_one_and_says_so(data, tmp_path, extra,
                                                                                          said):
    code, printed = _main(_train_args(data, tmp_path / "run", "--set", "train.epochs=1", *extra))
    assert code == 0 and printed.count(said) == 1
    assert CALIBRATION_KEY not in load_checkpoint(tmp_path / "run" / "best.pt")
    opened = Run.open(tmp_path / "run", device="cpu")
    assert opened.temperature == 1.0 and "holds no fitted temperature" in opened.describe_temperature()


@pytest.mark.parametrize("file_name", ["best.pt", "last.pt"])
def test_a_kill_during_the_fit_leaves_a_run_that_resume_finishes(trained, data, tmp_path, monkeypatch, file_name):
    original = trainer_module.save_checkpoint

    def dies_writing_the_temperature(path, state):
        if CALIBRATION_KEY in state and Path(path).name == file_name:
            (Path(path).parent / f".{file_name}.k1ll3d00.tmp").write_bytes(b"half a file")
            raise Killed
        return original(path, state)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(trainer_module, "save_checkpoint", dies_writing_the_temperature)
        with pytest.raises(Killed):
            main(_train_args(data, run))
    assert CALIBRATION_KEY not in load_checkpoint(run / file_name)
    code, printed = _main(["train", "--resume", str(run), "--no-progress", "--no-report"])
    assert code == 0 and "has finished all" in printed and "stored in" in printed
    assert not list(run.glob(".*.tmp"))
    reference, _ = trained
    for name in ("best.pt", "last.pt"):
        assert (load_checkpoint(run / name)[CALIBRATION_KEY]["temperature"]
                == load_checkpoint(reference / name)[CALIBRATION_KEY]["temperature"]), name
    code, printed = _main(["train", "--resume", str(run), "--no-progress", "--no-report"])
    assert code == 0 and "stored in" not in printed  # done once: a second resume fits nothing


def test_the_fit_leaves_every_random_stream_as_it_found_it(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(run / name)
        state.pop(CALIBRATION_KEY)
        save_checkpoint(run / name, state)
    trainer = Trainer(Run.resume(run), progress=False)
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    done = trainer.calibrate()  # builds a model to load best.pt into: weight init draws from torch's stream
    assert set(done) == {"best.pt", "last.pt"}
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])


def test_a_calibrated_run_resumes_as_one_that_was_never_calibrated(trained, data, tmp_path):
    """The fit changes nothing that --resume reads (weights, optimiser, RNG states, position), so training on
    gives the same weights as training on a run made with train.calibrate=false."""
    plain = tmp_path / "plain"
    assert _main(_train_args(data, plain, "--set", "train.calibrate=false"))[0] == 0
    a, b = load_checkpoint(trained[0] / "last.pt"), load_checkpoint(plain / "last.pt")
    assert set(a) - set(b) == {CALIBRATION_KEY}
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and a["rng"]["python"] == b["rng"]["python"]
    assert torch.equal(a["rng"]["numpy"]["keys"], b["rng"]["numpy"]["keys"]) and a["epoch"] == b["epoch"]
    calibrated = tmp_path / "calibrated"
    shutil.copytree(trained[0], calibrated)
    for run in (calibrated, plain):
        assert _main(["train", "--resume", str(run), "--set", f"train.epochs={EPOCHS + 1}", "--no-progress",
                      "--no-report"])[0] == 0
    a, b = load_checkpoint(calibrated / "last.pt"), load_checkpoint(plain / "last.pt")
    assert a["epoch"] == b["epoch"] == EPOCHS + 1
    for key, value in b["model"].items():
        assert torch.equal(a["model"][key], value), key
    assert CALIBRATION_KEY in a and CALIBRATION_KEY not in b  # the new last epoch got its own temperature


# -- what the commands show ---------------------------------------------------------------------------

def _predictions(args: list[str]) -> tuple[list[dict[str, str]], str]:
    code, printed = _main(args)
    assert code == 0
    out = Path(args[args.index("--out") + 1])
    with (out / "predictions.csv").open(newline="") as f:
        return list(csv.DictReader(f)), printed


def test_predict_shows_calibrated_confidences_with_the_same_top1(trained, data, tmp_path):
    run = _with_temperature(trained[0], tmp_path / "run", 2.5)
    common = ["--data", str(data), "--device", "cpu", "--no-progress", "--group", "g"]
    calibrated, said = _predictions(["predict", str(run), "--out", str(tmp_path / "on"), *common])
    plain, said_off = _predictions(["predict", str(run), "--out", str(tmp_path / "off"), "--no-calibration", *common])
    assert ", temperature 2.5 (fitted on 12 validation images)" in said.splitlines()[0]
    assert ", temperature 1: calibration turned off (--no-calibration)" in said_off.splitlines()[0]
    assert [r["class_id"] for r in calibrated] == [r["class_id"] for r in plain]  # T > 0 keeps every argmax

    opened = Run.open(run, device="cpu")
    index = collect_test_images(data, opened)
    result = infer(opened.trained_model(), opened.loader(index, False), opened.device, None, with_loss=False)
    for temperature, rows in ((2.5, calibrated), (1.0, plain)):
        expected = (result.logits / temperature).softmax(dim=1).max(dim=1).values
        assert [float(r["confidence"]) for r in rows] == pytest.approx(expected.tolist(), abs=1e-6)
    assert max(float(r["confidence"]) for r in calibrated) < max(float(r["confidence"]) for r in plain)


def test_evaluate_reports_the_ece_before_and_after_and_the_same_top1(trained, data, tmp_path):
    run = _with_temperature(trained[0], tmp_path / "run", 2.5)
    common = ["--data", str(data), "--device", "cpu", "--no-progress", "--no-report"]
    code, printed = _main(["evaluate", str(run), "--out", str(tmp_path / "on"), *common])
    assert code == 0 and "at temperature 2.5;" in printed
    on = json.loads((tmp_path / "on" / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--out", str(tmp_path / "off"), "--no-calibration", *common]) == 0
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())
    logits, labels = _validation_logits(run / "best.pt")
    assert on["top1"] == off["top1"] and on["confusion"] == off["confusion"]
    assert on["temperature"] == 2.5 and off["temperature"] == 1.0
    assert on["ece"] == pytest.approx(expected_calibration_error((logits / 2.5).softmax(dim=1), labels), abs=1e-6)
    assert on["ece_uncalibrated"] == off["ece"] == off["ece_uncalibrated"]
    assert off["ece"] == pytest.approx(expected_calibration_error(logits.softmax(dim=1), labels), abs=1e-6)


def test_a_checkpoint_without_a_temperature_loads_with_one(trained, data, tmp_path):
    run = _with_temperature(trained[0], tmp_path / "old", None)
    opened = Run.open(run, device="cpu")
    assert opened.temperature == 1.0 and opened.calibration is None
    code, printed = _main(["evaluate", str(run), "--data", str(data), "--device", "cpu", "--no-progress",
                           "--no-report"])
    assert code == 0 and f"temperature 1: {run / 'best.pt'} holds no fitted temperature" in printed


def test_an_ensemble_averages_each_members_calibrated_probabilities(trained, data, tmp_path):
    hot = _with_temperature(trained[0], tmp_path / "hot", 3.0)
    cold = _with_temperature(trained[0], tmp_path / "cold", 0.5)
    logits, labels = _validation_logits(hot / "best.pt")
    pair = Ensemble.open([hot, cold], device="cpu", weights=[0.25, 0.75])
    result = pair.infer(pair.evaluation_split("val", data), batch_size=8, amp=False)
    expected = 0.25 * scaled_probabilities(logits, 3.0) + 0.75 * scaled_probabilities(logits, 0.5)
    assert torch.allclose(result.probabilities, expected, atol=1e-5)
    assert torch.allclose(result.uncalibrated, logits.softmax(dim=1), atol=1e-5)
    metrics = pair.metrics(result, pair.evaluation_split("val", data))
    assert [m["temperature"] for m in metrics["ensemble"]["members"]] == [3.0, 0.5]
    assert metrics["top1"] == pytest.approx(float((expected.argmax(dim=1) == labels).float().mean()))
    assert metrics["ensemble"]["top1_uncalibrated"] == pytest.approx(
        float((logits.argmax(dim=1) == labels).float().mean()))
    assert metrics["ece"] == pytest.approx(expected_calibration_error(expected, labels), abs=1e-5)
    assert metrics["ece_uncalibrated"] == pytest.approx(expected_calibration_error(logits.softmax(dim=1), labels),
                                                        abs=1e-5)
    off = Ensemble.open([hot, cold], device="cpu", calibrate=False)
    assert torch.allclose(off.infer(off.evaluation_split("val", data), batch_size=8, amp=False).probabilities,
                          logits.softmax(dim=1), atol=1e-5)


class _PixelLogits(torch.nn.Module):
    """Logits = the top-left pixel's channels: the flipped view sees the top-right pixel instead."""

    def forward(self, x):
        return ModelOutput(logits=x[:, :, 0, 0])


def test_views_are_averaged_at_the_members_temperature():
    x = torch.zeros(1, 3, 4, 4)
    x[0, :, 0, 0] = torch.tensor([4.0, 0.0, 0.0])
    x[0, :, 0, -1] = torch.tensor([0.0, 2.0, 1.9])
    out = with_views(_PixelLogits(), "flip", temperature=2.0)(x)
    plain, mirrored = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 1.9]])
    expected = ((plain / 2).softmax(dim=1) + (mirrored / 2).softmax(dim=1)) / 2
    assert torch.allclose(out.logits.softmax(dim=1), expected, atol=1e-6)
    assert torch.allclose(out.branch_logits["uncalibrated"].softmax(dim=1),
                          (plain.softmax(dim=1) + mirrored.softmax(dim=1)) / 2, atol=1e-6)


def test_serve_answers_calibrated_top5_unless_told_not_to(trained, tmp_path, monkeypatch):
    from fgvc.serve.predictors import open_predictor

    run = _with_temperature(trained[0], tmp_path / "run", 2.5)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    on, off = open_predictor(run, "cpu"), open_predictor(run, "cpu", calibrate=False)
    assert "temperature 2.5" in on.description
    logits = on.model(on._normalise(images)).logits
    assert torch.allclose(on.forward(images).probabilities, (logits / 2.5).softmax(dim=1), atol=1e-6)
    assert torch.allclose(off.forward(images).probabilities, logits.softmax(dim=1), atol=1e-6)
    seen = {}
    monkeypatch.setattr("fgvc.serve.serve", lambda source, **kwargs: seen.update(kwargs))
    args = build_parser().parse_args(["serve", str(run), "--no-calibration"])
    assert args.func(args) == 0 and seen["settings"].calibrate is False
