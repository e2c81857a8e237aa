"""One inference path (issue 19): a trained run, an exported file and an ensemble are model sources run
by one function (:func:`fgvc.engine.ensemble.infer_source`); one place builds a loader; no stand-in for a Run.

The sources are compared where they must agree: an ensemble of one run without views is that run, an
exported file is its run (top-1, file names, boxes; probabilities within the export's float tolerance),
and the one function gives what the loop written before it gave (the model over the run's loader,
softmax at the run's temperature).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import fgvc
from fgvc.engine.calibration import scaled_probabilities
from fgvc.engine.ensemble import Ensemble, evaluate_ensemble, infer_source
from fgvc.engine.evaluate import evaluate_checkpoint, infer
from fgvc.engine.inference import RunSource
from fgvc.engine.predict import collect_test_images, predict_ensemble, prediction_rows
from fgvc.engine.run import Run
from tests.seeing_fixtures import baseline_run, build_data, seeing_data  # noqa: F401  (fixtures)

SRC = Path(fgvc.__file__).parent


def _lines(pattern: str) -> list[str]:
    """``path:line`` of every source line of the package matching ``pattern`` (class statements left out)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.search(pattern, line) and not line.lstrip().startswith("class "):
                found.append(f"{path.relative_to(SRC).as_posix()}:{number}")
    return found


def test_exactly_one_place_builds_a_loader():
    built = _lines(r"\b(DataLoader|FGVCLoader)\(")
    assert len(built) == 1 and built[0].startswith("engine/run.py:"), built
    line = int(built[0].split(":")[1])
    text = (SRC / "engine" / "run.py").read_text(encoding="utf-8").splitlines()
    enclosing = next(t for t in reversed(text[:line]) if t.startswith("def ") or t.lstrip().startswith("def "))
    assert enclosing.startswith("def data_loader("), enclosing


def test_no_simple_namespace_stands_in_for_a_run():
    assert _lines(r"SimpleNamespace") == []


def test_an_ensemble_of_one_run_is_that_run_and_the_loop_as_before(baseline_run, seeing_data):  # noqa: F811
    run = Run.open(baseline_run, device="cpu")
    part = run.evaluation_split("val", seeing_data)
    alone = infer_source(RunSource(run), part, batch_size=4, amp=False)
    ensemble = Ensemble.open([baseline_run], device="cpu")
    together = infer_source(ensemble, part, batch_size=4, amp=False)
    assert len(part) > 0 and torch.equal(alone.reference.indices, together.reference.indices)
    assert torch.equal(alone.probabilities, together.probabilities)
    assert torch.equal(alone.uncalibrated, together.uncalibrated)
    before = infer(run.trained_model(), run.loader(part, False, batch_size=4), run.device, None, with_loss=False)
    assert torch.equal(alone.reference.indices, before.indices)
    assert torch.equal(alone.probabilities, scaled_probabilities(before.logits, run.temperature))
    rows = prediction_rows(part, ensemble.classes, alone)
    assert rows == predict_ensemble(ensemble, part, batch_size=4, progress=False)
    assert [r.file for r in rows] == [part.samples[i].image_id for i in before.indices.tolist()]


def test_evaluate_of_a_run_and_of_an_ensemble_of_it_alone_agree(baseline_run, seeing_data, tmp_path):  # noqa: F811
    plain = evaluate_checkpoint(baseline_run, seeing_data, "val", out_dir=tmp_path / "run", device="cpu",
                                progress=False).metrics
    ensemble = evaluate_ensemble([baseline_run], seeing_data, "val", out_dir=tmp_path / "ensemble", device="cpu",
                                 progress=False).metrics
    shared = [k for k in plain if k not in ("loss", "calibration") and not k.startswith("acc_")]
    assert {"top1", "top4", "per_class", "confusion", "ece", "ece_uncalibrated", "temperature"} <= set(shared)
    for key in shared:  # what evaluate_checkpoint reports beyond these: the loss and each branch's accuracy
        assert ensemble[key] == plain[key], key
    assert plain["images"] > 0 and plain["loss"] is not None


@pytest.mark.parametrize(("model", "fmt"), [("baseline", "torchscript"), ("mmal", "onnx")])
def test_an_exported_file_is_its_run_through_the_one_function(tmp_path_factory, model, fmt):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'fgvc[export]'")
    from fgvc.export import load_exported
    from fgvc.export.predict import ExportSource, predict_exported
    from tests.serve.exports import export

    base = tmp_path_factory.getbasetemp()
    done = export(base, model, fmt)
    assert done.code == 0, done.err
    run, file = Run.open(done.run, device="cpu"), ExportSource(load_exported(done.path, "cpu"))
    assert file.classes.ids == run.classes.ids and file.temperature == run.temperature
    assert file.localises == RunSource(run).localises == (model == "mmal")
    for index in (run.evaluation_split("val", build_data(base)), collect_test_images(build_data(base), file)):
        from_file = infer_source(file, index, batch_size=4, amp=False)
        from_run = infer_source(RunSource(run), index, batch_size=4, amp=False)
        assert len(index) > 0 and torch.equal(from_file.reference.indices, from_run.reference.indices)
        assert torch.equal(from_file.probabilities.argmax(dim=1), from_run.probabilities.argmax(dim=1))
        assert torch.allclose(from_file.probabilities, from_run.probabilities, atol=1e-5)
        if model == "mmal":
            assert torch.equal(from_file.reference.object_boxes, from_run.reference.object_boxes.round().long())
        else:
            assert from_file.reference.object_boxes is None and from_run.reference.object_boxes is None
        rows = predict_exported(file.exported, index, batch_size=4, progress=False)
        run_rows = prediction_rows(index, run.classes, from_run)
        assert [(r.file, r.class_id, r.class_name) for r in rows] == [(r.file, r.class_id, r.class_name)
                                                                      for r in run_rows]
