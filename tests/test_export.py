"""`fgvc export`: each model to each format, verified on real images; the file alone predicts.

The runs are the tiny seeing runs (ResNet-18 trained one epoch on synthetic birds; baseline and FBSD
at 64 px, MMAL-Net at 96 px); the images are their validation and test images.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from fgvc.cli import main
from fgvc.data.classes import ClassTable
from fgvc.engine.run import Run
from fgvc.export import RELATIVE_TOLERANCE, exported_format, load_exported
from fgvc.export.verify import verification_images
from tests.seeing_fixtures import build_data, fresh_copy
from tests.serve.exports import export

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'fgvc[export]'")

MODELS = ("baseline", "fbsd", "mmal", "pmg", "cal")
FORMATS = ("onnx", "torchscript", "exported-program")
# the longest exports (FBSD's graph is the largest), 10-15 s each on 2 cores; `make test` runs them
SLOW = {("fbsd", "onnx"), ("fbsd", "exported-program"), ("mmal", "exported-program")}
CANNOT = {("fbsd", "torchscript"): "torchscript cannot trace this model with a free batch size"}


def _cases():
    for model in MODELS:
        for fmt in FORMATS:
            if (model, fmt) in CANNOT:
                continue
            marks = [pytest.mark.slow] if (model, fmt) in SLOW else []
            yield pytest.param(model, fmt, marks=marks, id=f"{model}-{fmt}")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def data(base) -> Path:
    """The seeing runs' dataset (with a test/ folder of unlabelled images)."""
    return build_data(base)


def _eager_and_exported(run_dir: Path, path: Path):
    """The run's inference model and the exported file, on the run's validation images."""
    run = Run.open(run_dir, device="cpu")
    exported = load_exported(path, "cpu")
    images = verification_images(run)
    x = images.tensor(exported.preprocessing)
    with torch.no_grad():
        eager = run.trained_model()(x)
    return run, eager, exported(x), images


@pytest.mark.parametrize(("model", "fmt"), list(_cases()))
def test_each_model_exports_verified_and_the_written_file_reproduces_the_run(base, model, fmt):
    done = export(base, model, fmt)
    assert done.code == 0, done.err
    n = len(verification_images(Run.open(done.run, device="cpu")).paths)
    assert f"OK: top-1 agrees on {n}/{n}" in done.out and "verified on" in done.out, done.out
    assert exported_format(done.path) == fmt

    run, eager, got, images = _eager_and_exported(done.run, done.path)
    assert got.logits.argmax(dim=1).tolist() == eager.logits.argmax(dim=1).tolist()
    relative = (got.logits - eager.logits).abs().amax(dim=1) / eager.logits.abs().amax(dim=1)
    assert float(relative.max()) <= RELATIVE_TOLERANCE
    if run.spec.localises:
        assert "object_boxes" in done.out and torch.equal(got.object_boxes, eager.object_boxes.to(torch.int64))
        assert "object boxes equal on" in done.out
    else:
        assert got.object_boxes is None


def test_the_file_alone_carries_the_class_table_and_the_preprocessing(base):
    run = Run.open(export(base, "mmal", "onnx").run, device="cpu")
    classes = ClassTable.load(run.run_dir / "classes.json")
    for fmt in ("onnx", "torchscript", "exported-program"):
        path = export(base, "mmal", fmt).path
        if fmt == "onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            text = props["fgvc"]
        else:
            with zipfile.ZipFile(path) as archive:
                text = archive.read(next(n for n in archive.namelist() if n.endswith("/extra/fgvc.json"))).decode()
        meta = json.loads(text)
        assert meta["classes"] == [{"index": i, "id": cid, "name": name}
                                   for i, (cid, name) in enumerate(zip(classes.ids, classes.names, strict=True))]
        mean, std = run.stats
        assert meta["preprocessing"] == {
            "recipe": "mmal", "resize": [96, 96], "crop": None, "interpolation": "bilinear", "antialias": True,
            "mean": list(mean), "std": list(std), "value_scale": 255.0, "channel_order": "RGB",
            "train_crop_padding": None, "train_flip": True,
            "train_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.0}, "train_augment": []}
        assert meta["outputs"] == ["logits", "object_boxes"] and meta["batch"] is None and meta["format"] == fmt
        assert any("not exported" in note for note in meta["notes"])
        assert meta["temperature"] == run.temperature  # calibrated probabilities: softmax(logits / temperature)


def test_torchscript_cannot_trace_fbsd_with_a_free_batch_and_says_so_in_one_line(base):
    done = export(base, "fbsd", "torchscript")
    assert done.code == 2 and not done.path.exists()
    assert done.err.count("\n") == 1 and done.err.startswith("fgvc: error: fbsd/resnet18: ")
    assert CANNOT[("fbsd", "torchscript")] in done.err and "--batch N" in done.err, done.err


@pytest.mark.slow
def test_torchscript_exports_fbsd_at_a_fixed_batch_through_torch_export(base):
    done = export(base, "fbsd", "torchscript", "--batch", "3")
    assert done.code == 0, done.err
    assert "fixed batch of 3" in done.out and "traced through torch.export" in done.out
    _, eager, got, _ = _eager_and_exported(done.run, done.path)  # 4 images: a full chunk of 3 and a padded one
    assert got.logits.argmax(dim=1).tolist() == eager.logits.argmax(dim=1).tolist()
    assert load_exported(done.path, "cpu").metadata.batch == 3


def test_input_size_exports_at_another_size_and_records_it(base):
    done = export(base, "baseline", "exported-program", "--input-size", "96")
    assert done.code == 0, done.err
    assert "(batch, 3, 96, 96)" in done.out and "OK: top-1 agrees" in done.out
    assert load_exported(done.path, "cpu").preprocessing.input_size == 96


def _predict(source: Path, data: Path, out: Path, *flags: str) -> list[dict]:
    assert main(["predict", str(source), "--data", str(data), "--out", str(out), "--group", "g", "--device", "cpu",
                 "--no-progress", *flags]) == 0
    return list(csv.DictReader((out / "predictions.csv").open()))


@pytest.mark.parametrize(("model", "fmt"), [("mmal", "onnx"), ("baseline", "torchscript")])
def test_predict_with_an_exported_file_gives_the_runs_predictions(base, data, tmp_path, model, fmt, capsys):
    done = export(base, model, fmt)
    from_run = _predict(done.run, data, tmp_path / "run")
    from_file = _predict(done.path, data, tmp_path / "file")
    said = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"predicted {len(from_run)} images with {done.path}") for line in said), said
    assert [r["file"] for r in from_file] == [r["file"] for r in from_run] and len(from_run) > 0
    assert [r["class_id"] for r in from_file] == [r["class_id"] for r in from_run]
    assert [r["class_name"] for r in from_file] == [r["class_name"] for r in from_run]
    for a, b in zip(from_file, from_run, strict=True):
        assert float(a["confidence"]) == pytest.approx(float(b["confidence"]), abs=1e-4)
    assert (json.loads((tmp_path / "file" / "submission.json").read_text())
            == json.loads((tmp_path / "run" / "submission.json").read_text()))


def test_an_exported_file_carries_the_runs_temperature_and_predicts_its_confidences(base, data, tmp_path, capsys):
    from fgvc.engine.calibration import CALIBRATION_KEY
    from fgvc.engine.checkpoint import load_checkpoint, save_checkpoint

    run = fresh_copy(export(base, "baseline", "torchscript").run, tmp_path / "run")
    (run / "best.pt").unlink()
    state = load_checkpoint(run / "last.pt")
    state[CALIBRATION_KEY] = {"temperature": 2.5, "images": 4, "nll_before": 1.0, "nll_after": 0.9,
                              "ece_before": 0.3, "ece_after": 0.1}
    save_checkpoint(run / "best.pt", state)
    path = tmp_path / "model.torchscript.pt"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(path)]) == 0
    assert "softmax(logits / 2.5)" in capsys.readouterr().out
    assert load_exported(path, "cpu").temperature == 2.5
    for flag in ([], ["--no-calibration"]):
        from_run = _predict(run, data, tmp_path / "run_out", *flag)
        from_file = _predict(path, data, tmp_path / "file_out", *flag)
        assert [r["class_id"] for r in from_file] == [r["class_id"] for r in from_run]
        assert ([float(r["confidence"]) for r in from_file]
                == pytest.approx([float(r["confidence"]) for r in from_run], abs=1e-5)), flag
    calibrated = _predict(path, data, tmp_path / "on")
    assert max(float(r["confidence"]) for r in calibrated) < max(float(r["confidence"]) for r in from_file)


def test_a_failed_verification_prints_the_comparison_and_writes_nothing(base, monkeypatch, tmp_path, capsys):
    import fgvc.export.build as build

    real = build.load_exported

    def drifting(*args, **kwargs):
        model = real(*args, **kwargs)
        runner = model.runner

        def shifted(x):
            logits, *rest = runner(x)
            return (logits + 0.5 * torch.arange(logits.shape[1]), *rest)  # the top-1 moves to the last class

        model.runner = shifted
        return model

    monkeypatch.setattr(build, "load_exported", drifting)
    run = export(base, "baseline", "onnx").run
    out = tmp_path / "drift.pt2"
    assert main(["export", str(run), "--format", "exported-program", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "FAILED: top-1 agrees on" in err and "<- differs" in err
    assert err.splitlines()[-1].startswith("fgvc: error: the exported-program export of baseline/resnet18 does not "
                                           "reproduce the model") and f"nothing written to {out}" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_export_mistakes_are_one_line_naming_the_flag(base, tmp_path, capsys):
    run = export(base, "mmal", "onnx").run
    assert main(["export", str(run), "--input-size", "100", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--input-size 100 does not suit mmal/resnet18" in err and "multiple of 32" in err

    assert main(["export", str(run), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--out {tmp_path} is a folder" in err

    moved = fresh_copy(run, tmp_path / "moved_run")  # its dataset is elsewhere: verification needs images
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(moved), "--data", str(empty), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no images to verify the export on in --data {empty}" in err
    assert not (tmp_path / "m.onnx").exists()


def test_predict_and_load_refuse_files_that_are_not_fgvc_exports(base, data, tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    assert main(["predict", str(foreign), "--data", str(data), "--out", str(tmp_path / "p"), "--group", "g",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no fgvc metadata" in err and "fgvc export" in err

    done = export(base, "baseline", "torchscript")
    assert main(["predict", str(done.path), str(done.run), "--data", str(data), "--out", str(tmp_path / "p"),
                 "--group", "g"]) == 2
    assert "is an exported file: it predicts alone" in capsys.readouterr().err
    assert exported_format(done.run / "best.pt") is None  # a checkpoint is not mistaken for an export


def test_import_fgvc_loads_no_exporter_and_no_web_framework():
    code = ("import sys, fgvc, fgvc.cli, fgvc.export, fgvc.serve, fgvc.engine.trainer\n"
            "fgvc.cli.build_parser()\n"
            "loaded = [m for m in ('onnx', 'onnxruntime', 'onnxscript', 'fastapi', 'uvicorn', 'starlette') "
            "if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
