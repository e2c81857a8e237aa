"""Batched inference and the metrics a fine-grained practitioner reads.

``infer`` runs a model over a loader (sharded exactly under DDP, gathered on every rank) and
keeps logits per branch, labels and object boxes; ``compute_metrics`` turns that into top-1/top-5,
per-class accuracy, the confusion matrix and its most-confused pairs, per-branch accuracy and,
for models that localise on data with true boxes, the localisation accuracy (IoU >= 0.5,
inclusive pixels — REFERENCE M11). ``evaluate_checkpoint`` adds the expected calibration error of the
probabilities at the run's temperature and at T = 1 (:mod:`fgvc.engine.calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.classes import ClassTable
from ..data.index import Sample
from ..ops.boxes import paired_iou_inclusive, true_boxes_in_input
from .calibration import ECE_BINS, calibration_metrics
from .distributed import DistInfo
from .inference import Inference, RunSource, autocast_context, infer, source_pass

__all__ = ["Inference", "infer", "compute_metrics", "autocast_context"]


def _true_boxes_in_input(samples: list[Sample], result: Inference) -> Tensor:
    """True boxes of ``result``'s images, in its order, on the model input (inclusive ends); see
    :func:`fgvc.ops.boxes.true_boxes_in_input` (whole-image resize recipes only)."""
    return true_boxes_in_input([samples[i].box_xyxy for i in result.indices.tolist()], result.orig_sizes,
                               result.input_size)


def compute_metrics(result: Inference, classes: ClassTable, samples: list[Sample] | None = None,
                    topk: int = 5, pairs: int = 20, localisation: bool = False) -> dict[str, Any]:
    """Metrics over the labelled part of ``result``. ``localisation``: the model's object boxes are
    object boxes and the input is the whole image resized (the caller asks the model spec and the
    transform recipe), so true boxes map onto the input by plain scaling."""
    labelled = result.labels >= 0
    y = result.labels[labelled]
    n, c = int(labelled.sum()), len(classes)
    metrics: dict[str, Any] = {"images": n}
    if n == 0:
        return metrics
    logits = result.logits[labelled]
    pred = logits.argmax(dim=1)
    k = min(topk, c)
    metrics["top1"] = float((pred == y).float().mean())
    metrics[f"top{k}"] = float((logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).float().mean())
    metrics["loss"] = result.loss_sum / n if result.loss_sum else None
    for name, branch in result.branch_logits.items():
        metrics[f"acc_{name}"] = float((branch[labelled].argmax(dim=1) == y).float().mean())
    confusion = torch.zeros(c, c, dtype=torch.long)
    confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    per_class_total = confusion.sum(dim=1)
    per_class = {classes.id_of(i): (int(confusion[i, i]), int(per_class_total[i])) for i in range(c)
                 if per_class_total[i] > 0}
    metrics["per_class"] = {cid: {"correct": a, "total": t, "accuracy": a / t} for cid, (a, t) in per_class.items()}
    metrics["mean_class_accuracy"] = sum(a / t for a, t in per_class.values()) / len(per_class)
    off = confusion.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(min(pairs, off.numel()))
    metrics["most_confused"] = [
        {"true": classes.id_of(int(i) // c), "predicted": classes.id_of(int(i) % c), "count": int(v)}
        for v, i in zip(values.tolist(), flat.tolist(), strict=True) if v > 0
    ]
    metrics["confusion"] = confusion.tolist()
    if (localisation and result.object_boxes is not None and samples is not None
            and all(samples[i].box_xyxy is not None for i in result.indices.tolist())):
        truth = _true_boxes_in_input(samples, result)
        iou = paired_iou_inclusive(result.object_boxes.double(), truth)
        metrics["localisation_accuracy"] = float((iou >= 0.5).float().mean())
        metrics["mean_iou"] = float(iou.mean())
    return metrics


# -- fgvc evaluate ------------------------------------------------------------------------------

@dataclass
class EvaluationReport:
    metrics: dict[str, Any]
    classes: ClassTable
    split: str
    checkpoint: Path
    json_path: Path
    checkpoint_note: str = ""
    dist: DistInfo = field(default_factory=DistInfo)  # the processes that computed it (rank 0 prints)
    ensemble: dict[str, Any] | None = None  # metrics["ensemble"] when several runs or views were averaged

    def to_text(self, rows: int = 10) -> str:
        m = self.metrics
        note = f" ({self.checkpoint_note})" if self.checkpoint_note else ""
        first = f"ensemble:   {self.checkpoint_note}" if self.ensemble else f"checkpoint: {self.checkpoint}{note}"
        lines = [first, f"split:      {self.split} ({m['images']} images)"]
        for key in ("top1", "top5", "mean_class_accuracy", "loss", "localisation_accuracy", "mean_iou"):
            if m.get(key) is not None:
                lines.append(f"{key + ':':<22}{m[key]:.4f}")
        if m.get("ece") is not None:
            lines.append(calibration_line(m))
        if m.get("calibration"):
            lines.append(f"{'calibration:':<22}{m['calibration']}")
        if self.ensemble:
            if self.ensemble.get("top1_uncalibrated") is not None and len(self.ensemble["members"]) > 1:
                lines.append(f"{'top1 uncalibrated:':<22}{self.ensemble['top1_uncalibrated']:.4f} "
                             "(the members' own probabilities averaged)")
            lines += _member_lines(self.ensemble)
        branches = {k[4:]: v for k, v in m.items() if k.startswith("acc_")}
        if len(branches) > 1:
            lines.append("per branch: " + ", ".join(f"{k} {v:.4f}" for k, v in branches.items()))
        if m.get("most_confused"):
            lines.append("most confused (true -> predicted: count):")
            for pair in m["most_confused"][:rows]:
                t, p = pair["true"], pair["predicted"]
                lines.append(f"  {t} {self._name(t)} -> {p} {self._name(p)}: {pair['count']}")
        if m.get("per_class"):
            worst = sorted(m["per_class"].items(), key=lambda kv: kv[1]["accuracy"])[:rows]
            lines.append("lowest per-class accuracy:")
            lines += [f"  {cid} {self._name(cid)}: {v['correct']}/{v['total']} = {v['accuracy']:.3f}"
                      for cid, v in worst]
        return "\n".join(lines)

    def _name(self, class_id: str) -> str:
        return self.classes.name_of(self.classes.index_of(class_id))


def calibration_line(metrics: dict[str, Any]) -> str:
    """ECE with the probabilities shown (after temperature) and the model's own (T = 1)."""
    where = f" at temperature {metrics['temperature']:.4g}" if metrics.get("temperature") is not None else ""
    return (f"{'ece:':<22}{metrics['ece']:.4f}{where}; {metrics['ece_uncalibrated']:.4f} before temperature "
            f"({ECE_BINS} bins)")


def _member_lines(ensemble: dict[str, Any]) -> list[str]:
    """Each member's top-1 and the ensemble's gain over it (percentage points)."""
    def pp(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:+.2f} pp"

    lines = ["members (top-1, ensemble gain):"]
    for m in ensemble["members"]:
        top1 = "–" if m.get("top1") is None else f"{m['top1']:.4f}"
        line = f"  {m['name']} {m['run']} (weight {m['weight']:.3g}): {top1}, gain {pp(m.get('gain_top1'))}"
        if m.get("ece") is not None:
            line += f", ECE {m['ece']:.4f} at temperature {m['temperature']:.4g} ({m['ece_uncalibrated']:.4f} at 1)"
        if m.get("top1_without_tta") is not None:
            line += (f"; without views {m['top1_without_tta']:.4f}, "
                     f"gain {pp(m.get('gain_top1_over_without_tta'))}")
        lines.append(line)
    return lines


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, split: str = "val",
                        out_dir: str | Path | None = None, batch_size: int = 32, device: str = "auto",
                        progress: bool = True, calibrate: bool = True) -> EvaluationReport:
    """Metrics of a checkpoint on the run's validation split or a labelled test split, written as JSON;
    ``calibrate``: probabilities at the checkpoint's temperature (else T = 1)."""
    from ..fileio import atomic_write_json
    from .run import Run

    run = Run.open(checkpoint, device=device, calibrate=calibrate)  # under torchrun: every rank scores its shard
    part = run.evaluation_split(split, data)
    dist_info = run.dist
    output = source_pass(RunSource(run), part, "none", None, batch_size=batch_size, progress=progress, desc="eval",
                         amp=True, shard=True, with_loss=True)
    result = output.result
    assert run.classes is not None and run.checkpoint_path is not None
    metrics = compute_metrics(result, run.classes, part.samples, localisation=run.localises)
    metrics.update(temperature=run.temperature, calibration=run.describe_temperature(),
                   **calibration_metrics(output.probabilities, output.uncalibrated, result.labels))
    out = Path(out_dir) if out_dir is not None else run.checkpoint_path.parent / f"eval_{split}"
    json_path = out / "metrics.json"
    if dist_info.is_main:
        atomic_write_json(json_path, {"checkpoint": str(run.checkpoint_path), "checkpoint_note": run.checkpoint_note,
                                      "split": split, "data": str(Path(data).resolve()),
                                      "processes": dist_info.world_size, **metrics})
    return EvaluationReport(metrics, run.classes, split, run.checkpoint_path, json_path, run.checkpoint_note,
                            dist_info)
