"""``fgvc report``: one self-contained HTML page about a run, for a person to read instead of logs.

``write_report(run_dir)`` writes ``run_dir/report.html`` with the resolved config, the training
curves (``metrics.csv``), the final metrics table (the newest ``eval_*/metrics.json`` of the run;
when there is none the validation split is evaluated first, which writes ``eval_val/metrics.json``),
the calibration (expected calibration error before and after the run's temperature, with a reliability
diagram), the confusion matrix as a picture with the most-confused pairs and example images, per-class
accuracy, for models that localise the localisation accuracy with the best and worst boxes, the
misclassified images, and ``fgvc explain``'s pictures of a few of them (what the model looked at: the
pictures its spec names, or a Grad-CAM heatmap).

The report of an ensemble (a ``metrics.json`` of ``fgvc evaluate RUN RUN ...`` or ``--tta``) is the
ensemble's: its title names the members, its curves and configs are each member's, and its confusions,
calibration and misclassified images are the ensemble's own predictions (no ``fgvc explain`` pictures:
those are one model's).

The page opens offline: every picture is a ``data:`` URI, there is no script, no external style
sheet or font, and a Content-Security-Policy forbids the browser any other fetch. Stable element
ids: ``metrics`` (the metrics table), ``calibration`` (with ``calibration-table`` and ``reliability``),
``confusion`` (the confusion-matrix image), ``curves``, ``confused-pairs``, ``per-class``, ``localisation``,
``misclassified``, ``explanations``, ``config``.

Example images need the evaluated images: the report runs the checkpoint once more over the split
its metrics describe (the validation split unless ``fgvc evaluate --split test`` was newer), on
the data recorded in ``metrics.json``. Without that data the page still has everything else.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from ..config import paper_note
from ..data.classes import ClassTable
from ..data.decode import ImageDecodeError, load_rgb
from ..data.index import DatasetIndex, Sample
from ..engine.calibration import ECE_BINS, Reliability, reliability
from ..errors import FgvcError, UserError
from ..fileio import atomic_write_text
from ..ops.boxes import paired_iou_inclusive, scale_box, true_boxes_in_input
from . import draw, plots

__all__ = ["write_report", "REPORT_FILE", "find_metrics"]

REPORT_FILE = "report.html"
PAIRS = 20  # most-confused pairs shown
MISCLASSIFIED = 24  # misclassified images shown
LOCALISATION_EXAMPLES = 8  # best and worst IoU images shown, each
THUMB = 160  # px, longer side of example thumbnails
EXPLAINED = 4  # images drawn with `fgvc explain`'s pictures: the most confident mistakes, then correct ones
EXPLAINED_WRONG = 2

_ACCURACY_KEYS = ("top1", "mean_class_accuracy", "localisation_accuracy", "ece", "ece_uncalibrated")
_LABELS = {"images": "images", "top1": "top-1 accuracy", "mean_class_accuracy": "mean class accuracy",
           "loss": "loss", "localisation_accuracy": "localisation accuracy (IoU ≥ 0.5)", "mean_iou": "mean IoU",
           "temperature": "temperature", "ece": f"expected calibration error ({ECE_BINS} bins)",
           "ece_uncalibrated": "expected calibration error before temperature", "nll": "negative log-likelihood",
           "nll_uncalibrated": "negative log-likelihood before temperature"}
_NOT_METRICS = {"checkpoint", "checkpoint_note", "split", "data", "processes", "per_class", "most_confused",
                "confusion"}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1b1b1b;
background:#fafafa;line-height:1.4}
main{max-width:1240px;margin:0 auto;padding:12px 24px 48px}
header{background:#1f3b5a;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;font-size:13px;color:#d5e2f0}
nav{font-size:13px;margin:10px 0}nav a{margin-right:14px;color:#1f5b99}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 18px;margin:14px 0}
h2{font-size:18px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
thead th{background:#1f3b5a;color:#fff}
#metrics{min-width:360px}#metrics th{background:#2b5d8a;color:#fff;font-weight:600}
#metrics td{font-variant-numeric:tabular-nums;text-align:right}
img{max-width:100%;height:auto}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:170px;font-size:12px}figure img{display:block;border:1px solid #ccc}
figcaption{margin-top:3px;word-wrap:break-word}figure.wide{width:auto;margin:0 0 14px}
.wrong{color:#b00020}.right{color:#007a33}.note{color:#666;font-size:13px}
.pairs td{vertical-align:top}.pairs img{height:96px;width:auto;margin:0 4px 4px 0}
pre{background:#f4f4f4;padding:10px;font-size:12px;overflow:auto;max-height:520px}
"""


# -- inputs -------------------------------------------------------------------------------------

def find_metrics(run_dir: Path) -> Path | None:
    """The newest ``eval_*/metrics.json`` in the run folder."""
    found = [p for p in Path(run_dir).glob("eval_*/metrics.json") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def _read_run(run_dir: Path) -> tuple[dict[str, Any], str, ClassTable]:
    """(config as a dict, config text, classes) from the run folder, else from its checkpoint."""
    config_file, classes_file = run_dir / "config.yaml", run_dir / "classes.json"
    if config_file.is_file() and classes_file.is_file():
        text = config_file.read_text(encoding="utf-8")
        return yaml.safe_load(text) or {}, text, ClassTable.load(classes_file)
    from ..engine.checkpoint import load_checkpoint
    from ..engine.run import choose_checkpoint

    state = load_checkpoint(choose_checkpoint(run_dir)[0])
    return state["config"], yaml.safe_dump(state["config"], sort_keys=False), ClassTable.from_dict(state["classes"])


def _evaluate_validation(run_dir: Path, config: dict[str, Any], device: str, progress: bool) -> Path:
    from ..engine.evaluate import evaluate_checkpoint

    data = (config.get("data") or {}).get("root")
    if not data or not Path(data).exists():
        raise UserError(f"no evaluation in {run_dir} (eval_*/metrics.json) and the training data "
                        f"({data or 'data.root not set'}) is not there to evaluate the validation split; "
                        f"run `fgvc evaluate {run_dir} --data ROOT`, then `fgvc report {run_dir}`")
    return evaluate_checkpoint(run_dir, data, "val", device=device, progress=progress).json_path


@dataclass
class _Examples:
    """The evaluated split, run through the model once more, for example images."""

    index: DatasetIndex
    labels: torch.Tensor  # (N,) class index
    probabilities: torch.Tensor  # (N, C) as shown: at the temperature (each member's, for an ensemble)
    uncalibrated: torch.Tensor  # (N, C) at temperature 1
    samples: list[Sample]  # (N,) in result order
    orig_sizes: torch.Tensor  # (N, 2) height, width
    object_boxes: torch.Tensor | None  # (N, 4) inclusive input pixels
    input_size: tuple[int, int]
    explained: list[tuple[int, Image.Image]]  # (row, `fgvc explain` picture) for a few rows
    explained_note: str  # what the pictures show, for this model
    temperature_note: str  # which temperature(s) the probabilities use

    @property
    def predictions(self) -> torch.Tensor:  # (N,) the same at any positive temperature
        return self.probabilities.argmax(dim=1)

    @property
    def confidence(self) -> torch.Tensor:  # (N,) probability of the predicted class, as shown
        return self.probabilities.max(dim=1).values


def _evaluated_data(metrics: dict[str, Any], *fallbacks: str | None) -> str:
    """The data ``metrics.json`` describes (else the run's own), where it still is."""
    candidates = [d for d in (metrics.get("data"), *fallbacks) if d]
    data = next((d for d in candidates if Path(d).exists()), None)
    if data is None:
        raise UserError(f"the evaluated data ({' or '.join(map(str, candidates)) or 'unknown'}) is not there; "
                        "example images are left out")
    return data


def _examples(metrics: dict[str, Any], run_dir: Path, device: str, progress: bool, calibrate: bool) -> _Examples:
    from ..engine.ensemble import infer_source
    from ..engine.inference import RunSource
    from ..engine.run import Run

    checkpoint = Path(metrics.get("checkpoint") or "")
    run = Run.open(checkpoint if checkpoint.is_file() else run_dir, device=device, calibrate=calibrate)
    data = _evaluated_data(metrics, run.config.data.root)
    part = run.evaluation_split(metrics.get("split", "val"), data)
    output = infer_source(RunSource(run), part, progress=progress, desc="report")
    result = output.reference
    keep = result.labels >= 0
    probs = output.probabilities[keep]
    confidence, predictions = probs.max(dim=1)
    rows = result.indices[keep].tolist()
    boxes = result.object_boxes if run.localises else None
    labels, samples = result.labels[keep], [part.samples[i] for i in rows]
    explained, note = _explained(run, data, samples, _explained_rows(labels, predictions, confidence))
    return _Examples(part, labels, probs, output.uncalibrated[keep], samples, result.orig_sizes[keep],
                     None if boxes is None else boxes[keep], result.input_size, explained, note,
                     run.describe_temperature())


def _ensemble_setup(metrics: dict[str, Any], path: Path | None) -> dict[str, Any] | None:
    """An ensemble's set-up in its ``metrics.json`` (None: one run's); every member must name its run, which
    the page's curves, configs and examples read."""
    setup = metrics.get("ensemble")
    if setup is None:
        return None
    members = setup.get("members") if isinstance(setup, dict) else None
    if not members or not all(isinstance(m, dict) and m.get("run") for m in members):
        raise UserError(f"{path}: the ensemble's set-up does not name each member's run (written by another "
                        "version?); evaluate the ensemble again with `fgvc evaluate RUN RUN ...`")
    return setup


def _member_source(member: dict[str, Any]) -> str:
    """Where a member of an ensemble's ``metrics.json`` lies: its checkpoint, else the run as given."""
    checkpoint = member.get("checkpoint")
    return checkpoint if checkpoint and Path(checkpoint).is_file() else member["run"]


def _ensemble_examples(metrics: dict[str, Any], device: str, progress: bool, calibrate: bool) -> _Examples:
    """The ensemble's own predictions on the split its ``metrics.json`` describes (no explain pictures)."""
    from ..engine.ensemble import Ensemble, infer_source

    setup = metrics["ensemble"]
    ensemble = Ensemble.open([_member_source(m) for m in setup["members"]], device=device,
                             tta=setup.get("tta", "none"), weights=setup.get("weights"), calibrate=calibrate)
    data = _evaluated_data(metrics, ensemble.reference.config.data.root)
    part = ensemble.evaluation_split(metrics.get("split", "val"), data)
    result = infer_source(ensemble, part, batch_size=32, progress=progress, desc="report")
    ref = result.reference
    keep = ref.labels >= 0
    temperatures = ", ".join(f"{m.name} {m.run.temperature:.4g}" for m in ensemble.members)
    note = (f"each member at its own temperature ({temperatures})" if ensemble.calibrated
            else "every member at temperature 1 (--no-calibration)")
    return _Examples(part, ref.labels[keep], result.probabilities[keep], result.uncalibrated[keep],
                     [part.samples[i] for i in ref.indices[keep].tolist()], ref.orig_sizes[keep], None,
                     ref.input_size, [], "", note)


def _explained_rows(labels: torch.Tensor, predictions: torch.Tensor, confidence: torch.Tensor) -> list[int]:
    """The EXPLAINED_WRONG most confident mistakes, then the most confident correct images up to EXPLAINED."""
    order = confidence.argsort(descending=True, stable=True)
    correct = (predictions == labels)[order]
    wrong = order[~correct][:EXPLAINED_WRONG].tolist()
    return wrong + order[correct][:EXPLAINED - len(wrong)].tolist()


def _explained(run, data: str | Path, samples: list[Sample],
               rows: list[int]) -> tuple[list[tuple[int, Image.Image]], str]:
    """``fgvc explain``'s picture of each row (unreadable files left out) and what such pictures show."""
    from . import explain

    paths = [samples[r].path for r in rows]
    pictures = explain.explain_images(run, paths, data, skip_unreadable=[True] * len(paths))
    by_path = {e.path: e.picture for e in pictures}
    kept = [(r, by_path[samples[r].path]) for r in rows if samples[r].path in by_path]
    return kept, explain.describe(run.spec.pictures)


# -- html pieces --------------------------------------------------------------------------------

def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(data: bytes, alt: str, mime: str = "image/png", element_id: str | None = None) -> str:
    ident = f' id="{element_id}"' if element_id else ""
    return f'<img{ident} src="{_data_uri(data, mime)}" alt="{_esc(alt)}">'


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _label(classes: ClassTable, class_id: str) -> str:
    name = classes.name_of(classes.index_of(class_id))
    return class_id if name == class_id else f"{class_id} {name}"


def _format(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if key in _ACCURACY_KEYS or key.startswith(("top", "acc_")):
        return f"{100 * value:.2f}%"
    return f"{value:.4f}"


def _metrics_table(metrics: dict[str, Any], paper: str | None = None) -> str:
    order = ["images", "top1", *sorted(k for k in metrics if k.startswith("top") and k != "top1"),
             "mean_class_accuracy", "loss", *sorted(k for k in metrics if k.startswith("acc_")),
             "localisation_accuracy", "mean_iou"]
    order += [k for k in metrics if k not in order and k not in _NOT_METRICS]
    rows = []
    for key in dict.fromkeys(order):
        value = metrics.get(key)
        if key not in metrics or not (value is None or isinstance(value, int | float)):
            continue
        label = _LABELS.get(key) or (f"top-{key[3:]} accuracy" if key.startswith("top") else
                                     f"{key[4:]} branch accuracy" if key.startswith("acc_") else key)
        rows.append(f'<tr><th scope="row">{_esc(label)}</th><td data-key="{_esc(key)}" '
                    f'data-value="{_esc(json.dumps(value))}">{_esc(_format(key, value))}</td>'
                    + (f'<td class="paper">{_esc(paper)}</td>' if key == "top1" and paper else "") + "</tr>")
    return f'<table id="metrics">{"".join(rows)}</table>'


def _thumb(ex: _Examples, row: int, boxes: Sequence[tuple[Sequence[float], draw.RGB, bool]] = ()) -> Image.Image | None:
    """Row ``row`` of the examples fitted to THUMB px, with boxes ``(box, colour, is input-pixel
    inclusive)``: input-pixel boxes are scaled from the model input, others are exclusive
    original-pixel boxes (the dataset's)."""
    sample = ex.samples[row]
    try:
        original = load_rgb(sample.path, ex.index.crop_bottom_px)
    except ImageDecodeError:
        return None
    image = draw.fit_image(original, THUMB)
    for box, colour, in_input in boxes:
        if in_input:
            h_in, w_in = ex.input_size
            scaled = scale_box(box, image.width / w_in, image.height / h_in)
        else:
            scaled = scale_box(box, image.width / original.width, image.height / original.height,
                               inclusive=False)
        draw.draw_box(image, scaled, colour, width=2, halo=False)
    return image


def _figure(ex: _Examples, row: int, caption_html: str) -> str:
    image = _thumb(ex, row)
    if image is None:
        return ""
    return f'<figure>{_img(_jpeg(image), ex.samples[row].path.name, "image/jpeg")}<figcaption>{caption_html}' \
           f'</figcaption></figure>'


def _section(element_id: str, title: str, body: str) -> str:
    return f'<section id="{element_id}"><h2>{_esc(title)}</h2>{body}</section>'


def _curves_section(rows: list[dict[str, float | None]]) -> str:
    png = plots.plot_training_curves(rows)
    if png is None:
        return _section("curves", "Training curves", '<p class="note">no metrics.csv rows in this run</p>')
    last = rows[-1]
    tops = [(r["val/top1"], int(r["step"])) for r in rows if r.get("val/top1") is not None]
    summary = f"{len(rows)} epoch(s) logged"
    if tops:
        best, epoch = max(tops)
        summary += f"; best validation top-1 {100 * best:.2f}% at epoch {epoch}"
    if last.get("train/loss") is not None:
        summary += f"; last train loss {last['train/loss']:.4f}"
    return _section("curves", "Training curves", f'<p class="note">{_esc(summary)}</p>'
                    + _img(png, "training curves: loss, accuracy, learning rate per epoch"))


def _member_curves_section(members: list[dict[str, Any]]) -> str:
    """An ensemble's training curves: each member's own ``metrics.csv``, under its name."""
    from ..engine.tracking import METRICS_CSV, read_metrics_csv

    parts = []
    for m in members:
        csv_path = Path(_member_source(m)).parent / METRICS_CSV
        rows = read_metrics_csv(csv_path) if csv_path.is_file() else []
        png = plots.plot_training_curves(rows)
        what = f"{m.get('name')}: {m.get('run')} ({m.get('model')}/{m.get('backbone')})"
        shown = (_img(png, f"training curves of {m.get('name')}") if png is not None else
                 f'<p class="note">no metrics.csv rows at {_esc(csv_path)}</p>')
        parts.append(f"<h3>{_esc(what)}</h3>{shown}")
    return _section("curves", "Training curves of each member", "".join(parts))


def _reliability_rows(name: str, bins: Reliability) -> str:
    """One table row: (count, mean confidence, accuracy) of every bin that holds images."""
    cells = "".join(f"<td>{n}</td><td>{c:.3f}</td><td>{a:.3f}</td>"
                    for n, c, a in zip(bins.counts, bins.confidence, bins.accuracy, strict=True) if n)
    return f'<tr><th scope="row">{_esc(name)}</th>{cells}</tr>'


def _ece_rows(figures: dict[str, float]) -> str:
    """Rows "ECE before/after temperature", the exact value in ``data-value`` for readers and tests."""
    return "".join(f'<tr><th scope="row">ECE {k} temperature</th><td data-calibration="ece_{k}" data-value="{v!r}">'
                   f"{100 * v:.2f}%</td></tr>" for k, v in figures.items())


def _calibration_section(metrics: dict[str, Any], ex: _Examples | None) -> str:
    """ECE before and after the temperature, on the evaluated images, with a reliability diagram
    (computed from this page's own pass over them; without the data, the figures of metrics.json)."""
    split = metrics.get("split", "?")
    intro = (f"<p>Confidence is the top class probability. The expected calibration error (ECE, Guo et al. 2017) "
             f"puts the {split} images into {ECE_BINS} equal-width confidence bins and averages each bin's "
             "|accuracy − mean confidence|, weighted by its images: 0 means that a model 80% sure is right 80% "
             "of the time. <i>Before</i>: the model's own softmax; <i>after</i>: the logits divided by the "
             "temperature fitted on the validation split after training.")
    if ex is None:
        if metrics.get("ece") is None:
            return ""
        table = _ece_rows({"before": metrics["ece_uncalibrated"], "after": metrics["ece"]})
        return _section("calibration", "Calibration", intro + f' {_esc(metrics.get("calibration", ""))}</p>'
                        f'<table id="calibration-table">{table}</table>'
                        '<p class="note">the reliability diagram needs the evaluated data</p>')
    before, after = reliability(ex.uncalibrated, ex.labels), reliability(ex.probabilities, ex.labels)
    table = _ece_rows({"before": before.ece, "after": after.ece})
    png = plots.plot_reliability({"before temperature (T = 1)": before, "after temperature": after})
    bins = ('<details><summary>bins with images (count, mean confidence, accuracy)</summary><table>'
            + _reliability_rows("before", before) + _reliability_rows("after", after) + "</table></details>")
    return _section("calibration", "Calibration", intro + f" Probabilities: {_esc(ex.temperature_note)}.</p>"
                    f'<table id="calibration-table">{table}</table>'
                    + _img(png, "reliability diagram before and after temperature", element_id="reliability") + bins)


def _confusion_section(metrics: dict[str, Any], classes: ClassTable) -> str:
    confusion = metrics.get("confusion")
    if not confusion:
        return _section("confusion-matrix", "Confusion matrix", '<p class="note">no confusion matrix</p>')
    png = plots.plot_confusion(confusion, [_label(classes, cid) if len(classes) <= 40 else cid for cid in classes.ids])
    return _section("confusion-matrix", "Confusion matrix",
                    '<p class="note">Rows: true class, columns: predicted class, each row as a fraction of its '
                    'images (square-root colour scale). Classes are ordered so that classes confused with each '
                    'other sit together.</p>' + _img(png, "confusion matrix", element_id="confusion"))


def _pairs_section(metrics: dict[str, Any], classes: ClassTable, ex: _Examples | None) -> str:
    pairs = (metrics.get("most_confused") or [])[:PAIRS]
    if not pairs:
        return _section("confused-pairs", "Most-confused pairs", '<p class="note">no confusions</p>')
    rows = []
    for rank, pair in enumerate(pairs, start=1):
        t, p = classes.index_of(pair["true"]), classes.index_of(pair["predicted"])
        wrong = right = ""
        if ex is not None:
            hits = torch.nonzero((ex.labels == t) & (ex.predictions == p)).flatten().tolist()[:3]
            wrong = "".join(_pair_image(ex, r) for r in hits)
            ref = torch.nonzero((ex.labels == p) & (ex.predictions == p)).flatten().tolist()
            ref = ref or torch.nonzero(ex.labels == p).flatten().tolist()
            right = _pair_image(ex, ref[0]) if ref else ""
        rows.append(f"<tr><td>{rank}</td><td>{_esc(_label(classes, pair['true']))}</td>"
                    f"<td>{_esc(_label(classes, pair['predicted']))}</td><td>{pair['count']}</td>"
                    f"<td>{wrong}</td><td>{right}</td></tr>")
    head = ("<thead><tr><th>#</th><th>true class</th><th>predicted as</th><th>images</th>"
            "<th>misclassified examples</th><th>an image of the predicted class</th></tr></thead>")
    note = "" if ex is not None else '<p class="note">example images need the evaluated data</p>'
    return _section("confused-pairs", f"{len(pairs)} most-confused pairs",
                    f'{note}<table class="pairs">{head}<tbody>{"".join(rows)}</tbody></table>')


def _pair_image(ex: _Examples, row: int) -> str:
    image = _thumb(ex, row)
    return "" if image is None else _img(_jpeg(image), ex.samples[row].path.name, "image/jpeg")


def _per_class_section(metrics: dict[str, Any], classes: ClassTable) -> str:
    per_class = metrics.get("per_class") or {}
    if not per_class:
        return _section("per-class", "Per-class accuracy", '<p class="note">no per-class figures</p>')
    ids = sorted(per_class, key=lambda cid: (per_class[cid]["accuracy"], classes.index_of(cid)))
    png = plots.plot_per_class_accuracy([_label(classes, c) if len(ids) <= 40 else c for c in ids],
                                        [per_class[c]["accuracy"] for c in ids])
    rows = "".join(f"<tr><td>{i}</td><td>{_esc(cid)}</td><td>{_esc(classes.name_of(classes.index_of(cid)))}</td>"
                   f"<td>{per_class[cid]['correct']}/{per_class[cid]['total']}</td>"
                   f"<td>{100 * per_class[cid]['accuracy']:.1f}%</td></tr>" for i, cid in enumerate(ids, start=1))
    table = ('<table id="per-class-table"><thead><tr><th>#</th><th>class</th><th>name</th><th>correct</th>'
             f"<th>accuracy</th></tr></thead><tbody>{rows}</tbody></table>")
    if len(ids) > 30:
        table = f"<details><summary>all {len(ids)} classes, worst first</summary>{table}</details>"
    return _section("per-class", "Per-class accuracy, worst first", _img(png, "per-class accuracy") + table)


def _localisation_section(metrics: dict[str, Any], ex: _Examples | None) -> str:
    if metrics.get("localisation_accuracy") is None:
        return ""
    text = (f"<p>Localisation accuracy (object box IoU ≥ 0.5 with the annotated box): "
            f"<b>{100 * metrics['localisation_accuracy']:.2f}%</b>, mean IoU <b>{metrics['mean_iou']:.3f}</b>. "
            f'Boxes: <span style="color:#c000c0">object box (model)</span>, '
            f'<span style="color:#00a000">annotated box</span>.</p>')
    if ex is None or ex.object_boxes is None or any(s.box_xyxy is None for s in ex.samples):
        return _section("localisation", "Localisation", text)
    truth_in = true_boxes_in_input([s.box_xyxy for s in ex.samples], ex.orig_sizes, ex.input_size)
    iou = paired_iou_inclusive(ex.object_boxes.double(), truth_in)
    order = iou.argsort(descending=True).tolist()
    n = min(LOCALISATION_EXAMPLES, (len(order) + 1) // 2)  # few images: best and worst do not overlap
    grids = []
    for title, rows in (("best IoU", order[:n]), ("worst IoU", order[n:][::-1][:LOCALISATION_EXAMPLES])):
        items = []
        for r in rows:
            boxes = [(ex.samples[r].box_xyxy, draw.TRUE_BOX_COLOUR, False),
                     (ex.object_boxes[r].tolist(), draw.OBJECT_COLOUR, True)]
            image = _thumb(ex, r, boxes)
            if image is not None:
                items.append((image, f"IoU {float(iou[r]):.2f}\n{ex.samples[r].path.name}"))
        if items:
            grid = draw.image_grid(items, columns=min(len(items), 8), tile=140)
            grids.append(f"<h3>{title}</h3>" + _img(_jpeg(grid), f"{title} examples", "image/jpeg"))
    return _section("localisation", "Localisation (object box)", text + "".join(grids))


def _true_vs_predicted(classes: ClassTable, ex: _Examples, row: int) -> str:
    true, predicted = classes.id_of(int(ex.labels[row])), classes.id_of(int(ex.predictions[row]))
    return (f'<span class="right">true: {_esc(_label(classes, true))}</span><br><span class="wrong">predicted: '
            f'{_esc(_label(classes, predicted))} ({100 * float(ex.confidence[row]):.0f}%)</span>')


def _ensemble_section(metrics: dict[str, Any]) -> str:
    """Each member of an ensemble (``metrics["ensemble"]``, from ``fgvc evaluate RUN RUN ...`` or
    ``--tta``): its top-1 and the ensemble's gain over it, in percentage points."""
    ensemble = metrics.get("ensemble") or {}
    members = ensemble.get("members") or []
    if not members:
        return ""
    with_views = any(m.get("top1_without_tta") is not None for m in members)

    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.2f}%"

    def gain(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:+.2f} pp"

    head = ("<th>member</th><th>run</th><th>weight</th><th>input</th><th>temperature</th><th>ECE before → after"
            "</th><th>top-1</th><th>ensemble gain</th>")
    head += "<th>top-1 without views</th><th>gain over it</th>" if with_views else ""
    rows = []
    for m in members:
        ece = (f"{pct(m.get('ece_uncalibrated'))} → {pct(m.get('ece'))}" if m.get("ece") is not None else "–")
        temperature = "–" if m.get("temperature") is None else f"{m['temperature']:.4g}"
        cells = [m.get("name"), m.get("run"), f"{m.get('weight', 0):.3g}",
                 f"{m.get('input_size', '?')} px, {m.get('transform', '?')}", temperature, ece, pct(m.get("top1")),
                 gain(m.get("gain_top1"))]
        if with_views:
            cells += [pct(m.get("top1_without_tta")), gain(m.get("gain_top1_over_without_tta"))]
        member = _esc(m.get("name"))
        rows.append("<tr>" + "".join(f'<td data-member="{member}">{_esc(c)}</td>' for c in cells) + "</tr>")
    views = ensemble.get("tta", "none")
    how = ("each member's at its own temperature" if ensemble.get("calibrated", True)
           else "each member's at temperature 1 (--no-calibration)")
    text = (f"<p>{len(members)} model(s), views: <b>{_esc(views)}</b> ({ensemble.get('views', 1)} per model); "
            f"ensemble top-1 <b>{pct(metrics.get('top1'))}</b>, gain over the best member "
            f"<b>{gain(ensemble.get('gain_over_best_member'))}</b>. Class probabilities are averaged with the "
            f"weights shown, {how}. The confusions, calibration and misclassified images on this page are the "
            f"ensemble's own predictions; the training curves and configs are each member's.</p>")
    table = f'<table id="ensemble-members"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return _section("ensemble", "Ensemble: gain over each member", text + table)


def _explanations_section(ex: _Examples | None) -> str:
    if ex is None or not ex.explained:
        return ""
    figures = []
    for row, picture in ex.explained:
        right = bool(ex.predictions[row] == ex.labels[row])
        verdict = '<span class="right">correct</span>' if right else '<span class="wrong">misclassified</span>'
        figures.append(f'<figure class="wide">{_img(_jpeg(picture), ex.samples[row].path.name, "image/jpeg")}'
                       f"<figcaption>{verdict}: {_esc(ex.samples[row].path.name)}</figcaption></figure>")
    text = f'<p>{_esc(ex.explained_note)} As <code>fgvc explain</code> draws them.</p>'
    return _section("explanations", "What the model looked at", text + "".join(figures))


def _misclassified_section(classes: ClassTable, ex: _Examples | None) -> str:
    if ex is None:
        return ""
    wrong = torch.nonzero(ex.predictions != ex.labels).flatten()
    if not len(wrong):
        return _section("misclassified", "Misclassified images", "<p>none: every image was classified correctly</p>")
    wrong = wrong[ex.confidence[wrong].argsort(descending=True)][:MISCLASSIFIED].tolist()
    figures = "".join(_figure(ex, r, _true_vs_predicted(classes, ex, r)) for r in wrong)
    total = int((ex.predictions != ex.labels).sum())
    return _section("misclassified", f"Misclassified images ({len(wrong)} of {total}, most confident first)",
                    f'<div class="grid">{figures}</div>')


# -- the page -----------------------------------------------------------------------------------

def _heading(config: dict[str, Any], run_dir: Path, classes: ClassTable, setup: dict[str, Any] | None,
             folder: Path) -> tuple[str, str]:
    """The page's title and subtitle: the run's, or the ensemble's (its members, by run folder)."""
    if not setup:
        model = config.get("model") or {}
        return config.get("name", run_dir.name), (
            f"{model.get('name', '?')}/{model.get('backbone', '?')} at {model.get('input_size', '?')} px · "
            f"{len(classes)} classes · run {run_dir.resolve()}")
    members = setup.get("members") or []
    names = [Path(m.get("run", "?")).name for m in members]
    views = setup.get("tta", "none")
    if len(names) == 1:
        title = f"{names[0]} with {views} views"
    else:
        title = f"ensemble of {' + '.join(names)}" + (f", {views} views" if views != "none" else "")
    models = ", ".join(f"{m.get('model', '?')}/{m.get('backbone', '?')} at {m.get('input_size', '?')} px"
                       for m in members)
    return title, f"{len(members)} model(s): {models} · {len(classes)} classes · folder {folder.resolve()}"


def _config_section(config_text: str, setup: dict[str, Any] | None) -> str:
    """The run's resolved config; for an ensemble its set-up and each member's config."""
    if not setup:
        return _section("config", "Resolved config", f"<pre>{_esc(config_text)}</pre>")
    shown = {k: setup[k] for k in ("tta", "views", "weights", "calibrated", "class_order") if k in setup}
    parts = [f"<pre>{_esc(yaml.safe_dump(shown, sort_keys=False))}</pre>"]
    for m in setup.get("members") or []:
        folder = Path(_member_source(m)).parent
        text = (folder / "config.yaml").read_text(encoding="utf-8") if (folder / "config.yaml").is_file() else \
            "config.yaml not found"
        parts.append(f"<details><summary>{_esc(m.get('name'))}: {_esc(m.get('run'))}</summary>"
                     f"<pre>{_esc(text)}</pre></details>")
    return _section("config", "Ensemble set-up and each member's config", "".join(parts))


def write_report(run_dir: str | Path, out: str | Path | None = None, *, metrics_path: str | Path | None = None,
                 device: str = "auto", progress: bool = False, calibrate: bool = True) -> Path:
    """Write the run's ``report.html`` (default ``run_dir/report.html``) and return its path.

    ``metrics_path`` picks the ``metrics.json`` to report (default: the newest ``eval_*/metrics.json``
    in the run; with none the validation split is evaluated first); an ensemble's ``metrics.json`` gives
    the ensemble's page. Problems that only cost a part of the page (no data for example images, no
    validation split) are written into the page. ``calibrate``: probabilities at the temperature(s)
    (else T = 1, as ``--no-calibration``).
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():  # e.g. RUN/best.pt: the report is of the whole run (its best checkpoint, its curves)
        raise UserError(f"{run_dir} is a file; fgvc report takes the run folder that holds it: "
                        f"`fgvc report {run_dir.parent}`")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder (expected the --out folder of `fgvc train`)")
    config, config_text, classes = _read_run(run_dir)
    notes: list[str] = []
    from ..engine.tracking import METRICS_CSV, read_metrics_csv

    rows = read_metrics_csv(run_dir / METRICS_CSV) if (run_dir / METRICS_CSV).is_file() else []
    metrics: dict[str, Any] = {}
    path = Path(metrics_path) if metrics_path is not None else find_metrics(run_dir)
    try:
        if path is None:
            path = _evaluate_validation(run_dir, config, device, progress)
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (FgvcError, OSError) as e:
        notes.append(f"no metrics: {e}")
        path = None
    ex = None
    setup = _ensemble_setup(metrics, path)
    if metrics:
        try:
            ex = (_ensemble_examples(metrics, device, progress, calibrate) if setup else
                  _examples(metrics, run_dir, device, progress, calibrate))
        except (FgvcError, OSError) as e:
            notes.append(f"no example images: {e}")
    target = Path(out) if out is not None else run_dir / REPORT_FILE
    title, subtitle = _heading(config, run_dir, classes, setup, target.parent)
    evaluated = (f"{metrics.get('split', '?')} split, {metrics.get('images', '?')} images of {metrics.get('data')}, "
                 f"checkpoint {metrics.get('checkpoint')} ({path})") if metrics else "not evaluated"
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    paper = None if setup else paper_note(config)  # what the run's config says its paper reports
    summary = (f'<p class="note">Evaluated: {_esc(evaluated)}</p>' + _metrics_table(metrics, paper)) if metrics else \
        '<p class="note">no metrics</p>'
    sections = [
        _section("summary", "Final metrics", summary + "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)),
        _ensemble_section(metrics),
        _calibration_section(metrics, ex) if metrics else "",
        _confusion_section(metrics, classes) if metrics else "",
        _member_curves_section(setup["members"]) if setup else _curves_section(rows),
        _pairs_section(metrics, classes, ex) if metrics else "",
        _per_class_section(metrics, classes) if metrics else "",
        _localisation_section(metrics, ex) if metrics else "",
        _misclassified_section(classes, ex),
        _explanations_section(ex),
        _config_section(config_text, setup),
    ]
    nav = " ".join(f'<a href="#{i}">{t}</a>' for i, t in (
        ("summary", "metrics"), ("ensemble", "ensemble"), ("calibration", "calibration"),
        ("confusion-matrix", "confusion"), ("curves", "curves"),
        ("confused-pairs", "confused pairs"), ("per-class", "per class"), ("localisation", "localisation"),
        ("misclassified", "misclassified"), ("explanations", "explanations"),
        ("config", "config")) if f'id="{i}"' in "".join(sections))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>fgvc report: {_esc(title)}</title>
<style>{_STYLE}</style></head>
<body><header><h1>fgvc report: {_esc(title)}</h1>
<p>{_esc(subtitle)} · generated {generated}</p></header>
<main><nav>{nav}</nav>
{"".join(s for s in sections if s)}
</main></body></html>
"""
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, page)
    return target
