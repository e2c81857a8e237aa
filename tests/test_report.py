"""`write_report`: one self-contained page whose numbers are the evaluation's numbers."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc.engine.calibration import expected_calibration_error, scaled_probabilities
from fgvc.engine.evaluate import infer
from fgvc.engine.run import Run
from fgvc.errors import UserError
from fgvc.viz.explain import explain_images
from fgvc.viz.report import _explained_rows, _jpeg, find_metrics, write_report
from tests.seeing_fixtures import baseline_run, fresh_copy, mmal_run, seeing_data  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")


class Page(HTMLParser):
    """Elements by id, every src/href, the metrics cells and section ids of a report."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str]] = {}
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.cells: list[dict[str, str]] = []
        self.tags: list[str] = []
        self._cell: dict[str, str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if "id" in a:
            self.ids[a["id"]] = {"tag": tag, **a}
        for key in ("src", "href"):
            if key in a:
                self.links.append((tag, key, a[key]))
        if tag == "td" and "data-key" in a:
            self._cell = {**a, "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


def decoded_image(uri: str) -> Image.Image:
    header, payload = uri.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image


@pytest.fixture(scope="module")
def mmal_report(mmal_run, tmp_path_factory):  # noqa: F811
    """A report of a run folder that holds no evaluation yet: write_report evaluates first."""
    run = fresh_copy(mmal_run, tmp_path_factory.mktemp("report") / "run")
    assert find_metrics(run) is None
    started = time.perf_counter()
    path = write_report(run, device="cpu")
    return run, path, time.perf_counter() - started


def test_report_evaluates_the_validation_split_and_shows_its_numbers(mmal_report):
    run, path, _ = mmal_report
    assert path == run / "report.html"
    metrics_file = run / "eval_val" / "metrics.json"
    assert find_metrics(run) == metrics_file
    metrics = json.loads(metrics_file.read_text())
    page = Page(path.read_text(encoding="utf-8"))
    assert page.ids["metrics"]["tag"] == "table"
    shown = {c["data-key"]: c for c in page.cells}
    expected = {k for k, v in metrics.items() if isinstance(v, int | float) and k != "processes"}
    assert set(shown) == expected
    assert {"top1", "mean_class_accuracy", "acc_raw", "acc_object", "localisation_accuracy", "mean_iou"} <= expected
    for key, cell in shown.items():
        assert json.loads(cell["data-value"]) == metrics[key]
        if key.startswith(("top", "acc_")) or key in ("mean_class_accuracy", "localisation_accuracy"):
            assert cell["text"] == f"{100 * metrics[key]:.2f}%"
        elif key == "images":
            assert cell["text"] == str(metrics["images"])


def _calibration_cells(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r'data-calibration="(\w+)" data-value="([^"]+)"', text)}


def test_report_shows_the_ece_before_and_after_the_temperature_with_a_reliability_diagram(mmal_report, seeing_data):  # noqa: F811
    run, path, _ = mmal_report
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    opened = Run.open(run, device="cpu")
    part = opened.evaluation_split("val", seeing_data)
    result = infer(opened.trained_model(), opened.loader(part, False), opened.device, opened.amp_dtype,
                   with_loss=False)
    before = expected_calibration_error(result.logits.softmax(dim=1), result.labels)
    after = expected_calibration_error(scaled_probabilities(result.logits, opened.temperature), result.labels)
    assert _calibration_cells(text) == pytest.approx({"ece_before": before, "ece_after": after}, abs=1e-9)
    assert f"{100 * after:.2f}%</td>" in text and f"{100 * before:.2f}%</td>" in text
    shown = {c["data-key"]: json.loads(c["data-value"]) for c in page.cells}  # evaluate's figures, the same
    assert shown["ece"] == pytest.approx(after, abs=1e-6) and shown["ece_uncalibrated"] == pytest.approx(before)
    assert shown["temperature"] == opened.temperature
    diagram = decoded_image(page.ids["reliability"]["src"])
    assert diagram.format == "PNG" and diagram.size[0] > diagram.size[1]  # two diagrams side by side
    assert page.ids["calibration"]["tag"] == "section" and '<a href="#calibration">' in text


def test_report_is_self_contained(mmal_report):
    _, path, _ = mmal_report
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.links, "expected embedded images"
    for tag, attribute, value in page.links:
        assert value.startswith(("data:", "#")), (tag, attribute, value[:80])
    assert "<script" not in text and "@import" not in text and "url(" not in text
    assert "default-src 'none'" in text  # the browser may fetch nothing else
    images = [value for tag, _, value in page.links if tag == "img"]
    assert all(decoded_image(uri).size[0] > 0 for uri in images)


def test_report_sections_for_mmal(mmal_report, mmal_run):  # noqa: F811
    run, path, _ = mmal_report
    page = Page(path.read_text(encoding="utf-8"))
    metrics = json.loads((run / "eval_val" / "metrics.json").read_text())
    for section in ("summary", "confusion-matrix", "curves", "confused-pairs", "per-class", "localisation", "config"):
        assert section in page.ids, section
    confusion = decoded_image(page.ids["confusion"]["src"])
    assert confusion.format == "PNG" and min(confusion.size) >= 500
    text = path.read_text(encoding="utf-8")
    assert "best IoU" in text and "worst IoU" in text
    assert f"{100 * metrics['localisation_accuracy']:.2f}%" in text
    assert (run / "config.yaml").read_text().splitlines()[0] in text  # the resolved config, verbatim
    wrong = sum(1 for row in metrics["most_confused"] for _ in range(row["count"]))
    if wrong:
        assert "misclassified" in page.ids
        assert text.count("<tr><td>") >= len(metrics["most_confused"])


def test_newest_evaluation_wins_and_missing_data_costs_only_the_examples(mmal_report, tmp_path, monkeypatch):
    run, _, _ = mmal_report
    metrics = json.loads((run / "eval_val" / "metrics.json").read_text())
    other = run / "eval_other" / "metrics.json"
    other.parent.mkdir()
    other.write_text(json.dumps({**metrics, "top1": 0.125}))
    os.utime(other, (time.time() + 5, time.time() + 5))
    try:
        path = write_report(run, tmp_path / "r.html", device="cpu")
        assert path == tmp_path / "r.html"
        page = Page(path.read_text(encoding="utf-8"))
        top1 = next(c for c in page.cells if c["data-key"] == "top1")
        assert json.loads(top1["data-value"]) == 0.125 and top1["text"] == "12.50%"
        assert "localisation" in page.ids and "no example images" not in path.read_text(encoding="utf-8")

        def gone(*args, **kwargs):
            raise UserError("data folder not found")

        monkeypatch.setattr("fgvc.engine.run.Run.dataset", gone)
        path = write_report(run, tmp_path / "r2.html", metrics_path=run / "eval_val" / "metrics.json")
        text = path.read_text(encoding="utf-8")
        page = Page(text)
        top1 = next(c for c in page.cells if c["data-key"] == "top1")
        assert json.loads(top1["data-value"]) == metrics["top1"]  # metrics_path overrides the newest
        assert "confusion" in page.ids and "per-class" in page.ids and "misclassified" not in page.ids
        assert "no example images: data folder not found" in text
    finally:
        shutil.rmtree(other.parent)


def test_report_of_a_baseline_run_without_data(baseline_run, tmp_path):  # noqa: F811
    run = fresh_copy(baseline_run, tmp_path / "run")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("root: ", f"root: {tmp_path / 'moved'} #", 1))
    path = write_report(run)
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert "metrics" not in page.ids and "no metrics" in text and "fgvc evaluate" in text
    assert "curves" in page.ids and "config" in page.ids
    assert not (run / "eval_val").exists()


def test_an_ensemble_metrics_file_whose_members_name_no_run_is_one_line(baseline_run, tmp_path):  # noqa: F811
    run = fresh_copy(baseline_run, tmp_path / "run")
    metrics = tmp_path / "ensemble_eval_val" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"split": "val", "images": 4, "ensemble": {"members": [{"name": "a"}]}}))
    with pytest.raises(UserError) as caught:
        write_report(run, tmp_path / "report.html", metrics_path=metrics)
    assert str(caught.value) == (f"{metrics}: the ensemble's set-up does not name each member's run (written by "
                                 "another version?); evaluate the ensemble again with `fgvc evaluate RUN RUN ...`")
    assert not (tmp_path / "report.html").exists()


def explained_figures(text: str) -> list[tuple[str, str, bytes]]:
    """(verdict, file name, JPEG bytes) of each figure of the explanations section, in page order."""
    section = text[text.index('<section id="explanations">'):]
    section = section[:section.index("</section>")]
    figures = []
    for chunk in section.split('<figure class="wide">')[1:]:
        src = chunk[chunk.index('src="') + 5:]
        payload = src[:src.index('"')].split(",", 1)[1]
        caption = chunk[chunk.index("<figcaption>") + 12:chunk.index("</figcaption>")]
        verdict = "misclassified" if ">misclassified<" in caption else "correct"
        figures.append((verdict, caption.rsplit(": ", 1)[1], base64.b64decode(payload)))
    return figures


def test_explained_rows_are_the_most_confident_mistakes_then_correct_images():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    predictions = torch.tensor([0, 2, 2, 1, 0, 2, 0])  # rows 1, 3, 4 wrong
    confidence = torch.tensor([0.5, 0.6, 0.9, 0.95, 0.4, 0.7, 0.8])
    assert _explained_rows(labels, predictions, confidence) == [3, 1, 2, 6]
    assert _explained_rows(labels[:1], predictions[:1], confidence[:1]) == [0]
    assert _explained_rows(labels, labels, confidence) == [3, 2, 6, 5]


def check_explanations_match_fgvc_explain(run_dir: Path, text: str, data: Path) -> list[tuple[str, str, bytes]]:
    """Each picture is exactly `fgvc explain`'s picture of that file, and its verdict is the one that
    picture's own prediction gives."""
    figures = explained_figures(text)
    assert 1 <= len(figures) <= 4
    verdicts = [v for v, _, _ in figures]
    assert verdicts == sorted(verdicts, key=lambda v: v != "misclassified")  # mistakes first
    run = Run.open(run_dir, device="cpu")
    paths = {p.name: p for p in data.rglob("*.jpg")}
    explained = list(explain_images(run, [paths[name] for _, name, _ in figures], data))
    for (verdict, name, jpeg), e in zip(figures, explained, strict=True):
        assert jpeg == _jpeg(e.picture), name
        assert verdict == ("correct" if e.top5[0][0] == e.true_class else "misclassified"), name
    return figures


def test_report_shows_explain_pictures_of_mistakes_first(mmal_report, seeing_data):  # noqa: F811
    run, path, _ = mmal_report
    text = path.read_text(encoding="utf-8")
    assert "explanations" in Page(text).ids and "part windows" in text
    check_explanations_match_fgvc_explain(run, text, seeing_data)


def test_report_of_a_baseline_run_has_grad_cam_pictures(baseline_run, seeing_data, tmp_path):  # noqa: F811
    run = fresh_copy(baseline_run, tmp_path / "run")
    text = write_report(run, device="cpu").read_text(encoding="utf-8")
    assert "Grad-CAM heatmap of the predicted class" in text
    for _, _, jpeg in check_explanations_match_fgvc_explain(run, text, seeing_data):
        with Image.open(io.BytesIO(jpeg)) as picture:  # input, heatmap and top-5 side by side
            assert picture.width > 2 * picture.height


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}", "--enable-logging=stderr",
               "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(mmal_report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed; install Debian's chromium: apt-get install -y chromium")
    _, path, _ = mmal_report
    url = path.resolve().as_uri()
    shot = tmp_path / "report.png"
    result = chromium([f"--screenshot={shot}", "--window-size=1280,2000", url], tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = chromium(["--dump-dom", url], tmp_path / "profile2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    log = result.stderr + dom.stderr
    for problem in ("CONSOLE", "Refused to", "net::ERR", "Uncaught"):
        assert problem not in log, [line for line in log.splitlines() if problem in line][:5]
    assert '<table id="metrics">' in dom.stdout and 'id="confusion" src="data:image/png;base64,' in dom.stdout
    # the check is not vacuous: with the report's policy, a page that reaches out is logged
    text = path.read_text(encoding="utf-8")
    policy = text[text.index("<meta http-equiv"):text.index(">", text.index("<meta http-equiv")) + 1]
    leaky = tmp_path / "leaky.html"
    leaky.write_text(f'<!DOCTYPE html><html><head>{policy}</head><body><img src="https://example.com/a.png">'
                     "</body></html>")
    assert "CONSOLE" in chromium(["--dump-dom", leaky.as_uri()], tmp_path / "profile3").stderr

    with Image.open(shot) as img:
        assert img.format == "PNG" and img.size == (1280, 2000)
        pixels = np.asarray(img.convert("RGB")).astype(int)
    assert pixels.std() > 20  # not blank
    near = lambda colour, tol: (np.abs(pixels - np.asarray(colour)).max(axis=2) <= tol).sum()  # noqa: E731
    assert near((43, 93, 138), 2) > 5000  # the metrics table's row headers (#2b5d8a, used nowhere else)
    page = Page(path.read_text(encoding="utf-8"))
    confusion = np.asarray(decoded_image(page.ids["confusion"]["src"]).convert("RGB")).astype(int)
    flat = confusion.reshape(-1, 3)
    blue = flat[flat[:, 2] - flat[:, 0] > 60]  # the matrix cells, not the black text
    colours, counts = np.unique(blue, axis=0, return_counts=True)
    cell = tuple(colours[counts.argmax()])
    assert near(cell, 3) > 0.5 * counts.max()  # the confusion matrix is on screen, at its own size
