"""Ensembles and test-time views: probabilities averaged over models and views, class tables
remapped, refusals in one line, and the files `predict` and `evaluate` write (tiny synthetic runs)."""

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from fgvc.cli import build_parser, main
from fgvc.data.classes import ClassTable
from fgvc.data.synthetic import generate_dataset
from fgvc.engine.calibration import expected_calibration_error, scaled_probabilities
from fgvc.engine.checkpoint import load_checkpoint, save_checkpoint
from fgvc.engine.ensemble import (
    TTA_SCHEMES,
    Ensemble,
    average_probabilities,
    crop_boxes,
    evaluate_runs,
    parse_weights,
    tta_views,
    view_count,
    with_views,
)
from fgvc.engine.evaluate import evaluate_checkpoint, infer
from fgvc.engine.predict import collect_test_images
from fgvc.engine.run import Run
from fgvc.engine.trainer import train
from fgvc.models import model_spec
from fgvc.models.output import ModelOutput
from tests.engine.conftest import tiny_config

# Members: ResNet-18 from scratch at 64 px, 6 epochs, differently seeded, on 4 synthetic classes
# (60 training images, a quarter held out for validation, the same split for both).
MEMBER = {"data.val_fraction": 0.25, "train.epochs": 6, "train.batch_size": 8}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ensemble_data") / "data"
    generate_dataset(root, layout="competition", num_classes=4, per_class=20, size=64, seed=1, test_fraction=0.25)
    return root


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> tuple[Path, Path]:
    """Two runs of the same recipe and split, seeds 0 and 1, side by side in one folder."""
    folder = tmp_path_factory.mktemp("ensemble_runs")
    for name, seed in (("a", 0), ("b", 1)):
        train(tiny_config(data, **MEMBER, **{"train.seed": seed}), folder / name, progress=False)
    return folder / "a", folder / "b"


@pytest.fixture(scope="module")
def small_run(data, tmp_path_factory) -> Path:
    """Another input size and transform recipe (48 px, the FBSD crop and statistics), one epoch."""
    run = tmp_path_factory.mktemp("ensemble_small") / "small"
    train(tiny_config(data, **{**MEMBER, "train.epochs": 1, "train.seed": 2, "model.input_size": 48,
                               "model.transform": "fbsd"}), run, progress=False)
    return run


def _edited_copy(source: Path, target: Path, edit) -> Path:
    """A run folder holding ``source``'s best.pt after ``edit(state)``, with matching classes.json and split.json."""
    target.mkdir()
    shutil.copy(source / "config.yaml", target / "config.yaml")
    state = load_checkpoint(source / "best.pt")
    edit(state)
    save_checkpoint(target / "best.pt", state)
    ClassTable.from_dict(state["classes"]).save(target / "classes.json")
    (target / "split.json").write_text(json.dumps({"val": sorted(state["val_ids"])}))
    return target


def _reverse_classes(state: dict) -> None:
    """The same classes at reversed indices, with the head's rows reversed to match: the same model."""
    state["classes"] = {key: values[::-1] for key, values in state["classes"].items()}
    classes = len(state["classes"]["ids"])
    prefixes = model_spec(state["config"]["model"]["name"]).head_prefixes
    for key, value in state["model"].items():
        if key.startswith(prefixes) and value.shape[:1] == (classes,):
            state["model"][key] = value.flip(0)


def _rename_last_class(state: dict) -> None:
    state["classes"]["ids"][-1] = "99999"
    state["classes"]["names"][-1] = "Imaginary Bird"


def _drop_a_validation_image(state: dict) -> None:
    state["val_ids"] = state["val_ids"][1:]


def _cli(*args) -> list[str]:
    return [*map(str, args), "--device", "cpu", "--no-progress"]


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "predictions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# -- averaging ------------------------------------------------------------------------------------

class _PixelLogits(nn.Module):
    """A stub whose logits are ``scale`` x the top-left pixel's channels: its flipped view sees the
    top-right pixel instead."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return ModelOutput(logits=self.scale * x[:, :, 0, 0])


def _softmax(values: list[float]) -> list[float]:
    e = [math.exp(v) for v in values]
    return [v / sum(e) for v in e]


def test_probabilities_not_logits_are_averaged_over_views_and_models():
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 0] = torch.tensor([4.0, 0.0, 0.0])  # the image: confidently class 0
    x[0, :, 0, 1] = torch.tensor([0.0, 2.0, 1.9])  # its mirror: classes 1 and 2
    weights = parse_weights("3,1", 2)
    assert weights == [0.75, 0.25]

    members = [with_views(_PixelLogits(scale), "flip")(x).logits.softmax(dim=1) for scale in (1.0, 3.0)]
    ensemble = average_probabilities(members, weights)

    def by_hand(scale: float) -> list[float]:
        plain, mirrored = _softmax([4 * scale, 0, 0]), _softmax([0, 2 * scale, 1.9 * scale])
        return [(p + m) / 2 for p, m in zip(plain, mirrored, strict=True)]

    expected = [0.75 * a + 0.25 * b for a, b in zip(by_hand(1.0), by_hand(3.0), strict=True)]
    torch.testing.assert_close(ensemble, torch.tensor([expected]), rtol=0, atol=1e-6)
    mean_logits = 0.75 * torch.tensor([2.0, 1.0, 0.95]) + 0.25 * torch.tensor([6.0, 3.0, 2.85])
    assert not torch.allclose(ensemble, mean_logits.softmax(dim=0)[None], atol=1e-2)  # what averaging logits gives


def test_flip_and_crops_are_seven_views_of_the_input_size():
    x = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).view(2, 3, 64, 64)
    views = list(tta_views(x, "flip+crops"))
    assert len(views) == view_count("flip+crops") == 7 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(-1))
    assert crop_boxes(64, 64) == [(4, 4, 56, 56), (0, 0, 56, 56), (0, 8, 56, 56), (8, 0, 56, 56), (8, 8, 56, 56)]
    assert torch.equal(views[3][..., 0, 0], x[..., 0, 0])  # the top-left crop keeps the top-left pixel
    assert [len(list(tta_views(x, s))) for s in TTA_SCHEMES] == [1, 2, 7]
    for scheme in TTA_SCHEMES:  # the command line offers what the engine knows
        argv = ["predict", "RUN", "--data", "D", "--out", "O", "--group", "g", "--tta", scheme]
        assert build_parser().parse_args(argv).tta == scheme


def test_flip_views_of_a_mirror_symmetric_input_predict_as_the_input_alone(runs):
    model = Run.open(runs[0], device="cpu").trained_model()  # eval mode, BatchNorm folded
    torch.manual_seed(0)
    noise = torch.rand(4, 3, 64, 64)
    symmetric = noise + noise.flip(-1)
    assert torch.equal(symmetric, symmetric.flip(-1))
    with torch.no_grad():
        plain = model(symmetric).logits.softmax(dim=1)
        flipped = with_views(model, "flip")(symmetric).logits.softmax(dim=1)
        asymmetric = with_views(model, "flip")(noise).logits.softmax(dim=1)
    torch.testing.assert_close(flipped, plain, rtol=0, atol=1e-6)
    assert not torch.allclose(asymmetric, model(noise).logits.softmax(dim=1), atol=1e-6)  # the flip is applied


# -- members --------------------------------------------------------------------------------------

def test_one_run_without_views_predicts_what_its_model_gives(runs, data, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(_cli("predict", runs[0], "--data", data, "--out", out, "--group", "g")) == 0
    run = Run.open(runs[0], device="cpu")  # the run's model over the images, at its temperature, by hand
    index = collect_test_images(data, run)
    result = infer(run.trained_model(), run.loader(index, False, batch_size=32), run.device, with_loss=False)
    top_p, top_i = scaled_probabilities(result.logits, run.temperature).max(dim=1)
    expected = {index.samples[pos].image_id: (run.classes.id_of(i), f"{p:.6f}")
                for pos, p, i in zip(result.indices.tolist(), top_p.tolist(), top_i.tolist(), strict=True)}
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv", "submission.json"]
    with (out / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "class_id", "class_name", "confidence", "top5"]  # no member columns
    assert {r["file"]: (r["class_id"], r["confidence"]) for r in rows} == expected
    submission = json.loads((out / "submission.json").read_text())
    assert submission == {"images": {f: cid for f, (cid, _) in expected.items()}, "groupname": "g"}


def test_a_run_with_the_same_classes_in_another_order_is_remapped(runs, data, tmp_path, capsys):
    reordered = _edited_copy(runs[0], tmp_path / "reordered", _reverse_classes)
    alone = Ensemble.open([runs[0]], device="cpu")
    pair = Ensemble.open([runs[0], reordered], device="cpu")
    assert pair.members[1].columns is not None and pair.members[0].columns is None
    index = collect_test_images(data, alone.reference)
    expected = alone.infer(index, batch_size=8, amp=False).probabilities
    result = pair.infer(index, batch_size=8, amp=False)
    torch.testing.assert_close(result.members[1], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.probabilities, expected, rtol=0, atol=1e-6)

    out = tmp_path / "pred"
    assert main(_cli("predict", runs[0], reordered, "--data", data, "--out", out, "--group", "g")) == 0
    rows = _rows(out)
    assert list(rows[0])[5:] == ["model1_class_id", "model2_class_id"]
    assert all(r["model1_class_id"] == r["model2_class_id"] == r["class_id"] for r in rows)
    setup = json.loads((out / "ensemble.json").read_text())
    assert [m["classes_reordered"] for m in setup["members"]] == [False, True]
    assert json.loads((out / "submission.json").read_text())["images"] == {r["file"]: r["class_id"] for r in rows}


def test_members_with_other_input_sizes_and_transforms_each_use_their_own(runs, small_run, data):
    pair = Ensemble.open([runs[0], small_run], device="cpu", weights=[0.6, 0.4])
    assert [m.run.config.model.input_size for m in pair.members] == [64, 48]
    index = collect_test_images(data, pair.reference)
    result = pair.infer(index, batch_size=8, amp=False)
    small_alone = Ensemble.open([small_run], device="cpu").infer(index, batch_size=8, amp=False)
    torch.testing.assert_close(result.members[1], small_alone.probabilities, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.probabilities, 0.6 * result.members[0] + 0.4 * result.members[1])


# -- evaluate -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ensemble_evaluation(runs, data) -> tuple[dict, list[float], Path]:
    """`fgvc evaluate a b` (metrics.json, its folder) and each member's own evaluation's top-1."""
    members = [evaluate_checkpoint(run, data, "val", device="cpu", progress=False).metrics["top1"] for run in runs]
    own = runs[0] / "eval_val" / "metrics.json"
    before = own.read_bytes()
    assert main(_cli("evaluate", *runs, "--data", data)) == 0
    assert own.read_bytes() == before  # a member's own evaluation is left alone
    folder = runs[0].parent / "ensemble_eval_val_a+b"
    return json.loads((folder / "metrics.json").read_text()), members, folder


def test_an_ensemble_evaluation_records_each_members_top1_and_the_gain(ensemble_evaluation, runs):
    metrics, members, folder = ensemble_evaluation
    ensemble = metrics["ensemble"]
    assert [m["top1"] for m in ensemble["members"]] == pytest.approx(members)
    assert [m["gain_top1"] for m in ensemble["members"]] == pytest.approx([metrics["top1"] - t for t in members])
    assert ensemble["gain_over_best_member"] == pytest.approx(metrics["top1"] - max(members))
    assert ensemble["weights"] == [0.5, 0.5] and ensemble["tta"] == "none"
    assert metrics["images"] == len(load_checkpoint(runs[0] / "best.pt")["val_ids"])
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="ensemble"' in page and 'data-member="model2"' in page and "gain over the best member" in page
    assert not (runs[0] / "report.html").exists()  # the first member's own report is not replaced


def test_an_ensembles_report_is_the_ensembles_own(ensemble_evaluation, runs, data):
    """Titled after the ensemble, each member's curves, and the ensemble's own mistakes and calibration."""
    metrics, _, folder = ensemble_evaluation
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "<title>fgvc report: ensemble of a + b</title>" in page and "<h1>fgvc report: ensemble of a + b</h1>" in page
    assert page.count('alt="training curves of model') == 2 and "Training curves of each member" in page
    assert page.count("<details><summary>model") == 2  # each member's config
    pair = Ensemble.open(list(runs), device="cpu")
    part = pair.evaluation_split("val", data)
    result = pair.infer(part, batch_size=32, amp=True)
    labels = result.reference.labels
    wrong = int((result.probabilities.argmax(dim=1) != labels).sum())
    assert wrong == round((1 - metrics["top1"]) * metrics["images"]) > 0
    assert '<section id="misclassified">' in page and f"of {wrong}, most confident first)" in page
    shown = {k: float(v) for k, v in re.findall(r'data-calibration="(\w+)" data-value="([^"]+)"', page)}
    assert shown == pytest.approx({"ece_after": expected_calibration_error(result.probabilities, labels),
                                   "ece_before": expected_calibration_error(result.uncalibrated, labels)}, abs=1e-9)


@pytest.fixture(scope="module")
def learned_members(tmp_path_factory) -> tuple[Path, tuple[Path, Path]]:
    """Two members that learned something: EfficientNet-Lite0's ImageNet weights fine-tuned for 4 epochs
    at 128 px on 6 synthetic classes, seeds 0 and 1 (about 25 s together on 2 cores)."""
    base = tmp_path_factory.mktemp("ensemble_learned")
    root = base / "data"
    generate_dataset(root, layout="competition", num_classes=6, per_class=24, size=128, seed=1, test_fraction=0.25)
    recipe = {"data.val_fraction": 0.25, "train.epochs": 4, "train.batch_size": 8, "model.input_size": 128,
              "model.backbone": "efficientnet_lite0", "model.pretrained": True, "optim.name": "adamw",
              "optim.lr": 0.001, "optim.weight_decay": 0.01}
    for name, seed in (("a", 0), ("b", 1)):
        train(tiny_config(root, **recipe, **{"train.seed": seed}), base / name, progress=False)
    return root, (base / "a", base / "b")


@pytest.mark.pretrained
def test_an_ensemble_of_two_seeds_is_right_where_both_are(learned_members, tmp_path):
    """A fact of probability averaging that holds on any CPU, checked on members that learned something:
    an image both members classify correctly the ensemble classifies correctly (p1[y] > p1[k] and
    p2[y] > p2[k] give the mean the same order). Whether the ensemble also beats its better member depends
    on the floats of the CPU."""
    data, members = learned_members
    pair = Ensemble.open(list(members), device="cpu")
    index = pair.reference.evaluation_split("val", data)
    result = pair.infer(index, batch_size=8, amp=False)
    y = result.reference.labels
    right = [m.argmax(dim=1) == y for m in result.members]
    assert min(float(r.float().mean()) for r in right) > 1 / 6  # both learned something (chance 1/6)
    ensemble_right = result.probabilities.argmax(dim=1) == y
    assert bool(ensemble_right[right[0] & right[1]].all())
    both = evaluate_runs(list(members), data, "val", out_dir=tmp_path / "both", device="cpu", progress=False)
    assert both.metrics["top1"] == pytest.approx(float(ensemble_right.float().mean()))


def test_one_run_with_flip_views_reports_its_gain_over_the_plain_view(runs, data, tmp_path):
    plain = evaluate_checkpoint(runs[0], data, "val", out_dir=tmp_path / "plain", device="cpu", progress=False)
    views = evaluate_runs([runs[0]], data, "val", out_dir=tmp_path / "flip", device="cpu", tta="flip", progress=False)
    assert views.ensemble is not None and views.ensemble["views"] == 2
    member = views.ensemble["members"][0]
    assert member["top1_without_tta"] == pytest.approx(plain.metrics["top1"])
    assert member["gain_top1_over_without_tta"] == pytest.approx(views.metrics["top1"] - plain.metrics["top1"])
    assert json.loads((tmp_path / "flip" / "metrics.json").read_text())["ensemble"]["tta"] == "flip"


# -- refusals -------------------------------------------------------------------------------------

def test_refusals_are_one_line(runs, data, tmp_path, capsys):
    a = runs[0]
    other_classes = _edited_copy(a, tmp_path / "other_classes", _rename_last_class)
    other_split = _edited_copy(a, tmp_path / "other_split", _drop_a_validation_image)
    out = tmp_path / "out"
    cases = [
        (["predict", a, other_classes, "--data", data, "--out", out, "--group", "g"],
         ["trained on different classes", "1 only in", "99999"]),
        (["evaluate", a, other_split, "--data", data, "--out", out], ["validated on different images", "split.json"]),
        (["predict", a, a, "--data", data, "--out", out, "--group", "g", "--weights", "0.6"],
         ["--weights has 1 value(s) for 2 run(s)"]),
        (["evaluate", a, a, "--data", data, "--weights", "1,-1"], ["--weights must be positive"]),
        (["evaluate", a, a, "--data", data, "--weights", "0.6,x"], ["--weights 0.6,x: 'x' is not a number"]),
    ]
    for argv, expected in cases:
        assert main(_cli(*argv)) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("fgvc: error: "), err
        assert all(text in err for text in expected), err
    assert not out.exists()
