"""Ensembles of trained runs and test-time augmentation (TTA): one prediction from several models and views.

Class **probabilities** are averaged, not logits: runs trained apart have logits on different
scales (one may be twice as confident in logit units as another), so a mean of logits lets the most
over-confident member decide, while probabilities are on one scale for every model. Each member's
probabilities are its calibrated ones, ``softmax(logits / T)`` with its own fitted temperature
(:mod:`fgvc.engine.calibration`), so an over-confident member does not dominate the mean either. A
model's views are averaged the same way (each view at the member's temperature), before the models are.

* Every member is a :class:`~fgvc.engine.run.Run` with its own loader and transform (input size,
  recipe, normalisation); all of them see the same images in the same order (one ``DatasetIndex``,
  read once through the first run).
* The first run's class table is the ensemble's. A run with the same class IDs in another index order
  has its output columns reordered to it; a run with other class IDs is refused, naming them.
* Weights (``--weights``): one positive number per run, normalised to sum to 1 (default: equal).
* Views (``--tta``), made on the device from the batch the loader's transform produced, so they work
  for every transform recipe:

  ============== ========================================================================= =======
  ``none``        the image as the loader gives it                                           1 view
  ``flip``        that and its horizontal flip                                               2 views
  ``flip+crops``  those and the centre and four corner crops covering 7/8 of each side,      7 views
                  each resized back (bilinear) to the model's input size — torchvision's
                  ``FiveCrop`` plus the whole input and its flip
  ============== ========================================================================= =======

  Crops of the normalised batch equal crops made before normalising (resizing and per-channel
  normalisation are both linear). For a model with object boxes only the probabilities are
  averaged: its boxes are those of the unchanged view.
* ``fgvc evaluate`` on an ensemble (or one run with views) scores it on the validation split that
  every member held out — runs with other ``split.json`` validation images are refused — and writes
  ``metrics.json`` with an ``ensemble`` entry: each member's top-1 (with the same views, and on the
  unchanged view alone when there are several) and the ensemble's gain over each member.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.classes import ClassTable, ClassTableError
from ..data.index import DatasetIndex
from ..errors import ConfigError, UserError
from ..models.output import ModelOutput
from .calibration import calibration_metrics, scaled_probabilities
from .distributed import ShardSampler
from .evaluate import EvaluationReport, Inference, compute_metrics, evaluate_checkpoint, infer
from .run import Run

__all__ = ["TTA_SCHEMES", "CROP_FRACTION", "WITHOUT_TTA", "view_count", "tta_views", "with_views", "ViewAveraged",
           "parse_weights", "normalise_weights", "average_probabilities", "Member", "Ensemble",
           "EnsembleInference", "evaluate_ensemble", "evaluate_runs"]

TTA_SCHEMES = ("none", "flip", "flip+crops")
CROP_FRACTION = 7 / 8  # side of the five crops of ``flip+crops``, as a fraction of the input's
WITHOUT_TTA = "without_tta"  # branch of a view-averaged model's output: the logits of the unchanged view
UNCALIBRATED = "uncalibrated"  # branch of a view-averaged model's output: log of the mean at temperature 1
_VIEWS = {"none": 1, "flip": 2, "flip+crops": 7}


# -- views --------------------------------------------------------------------------------------

def check_tta(scheme: str) -> str:
    if scheme not in TTA_SCHEMES:
        raise ConfigError(f"--tta {scheme!r} is not a view scheme; use one of: {', '.join(TTA_SCHEMES)}")
    return scheme


def view_count(scheme: str) -> int:
    return _VIEWS[check_tta(scheme)]


def crop_boxes(height: int, width: int, fraction: float = CROP_FRACTION) -> list[tuple[int, int, int, int]]:
    """``(top, left, height, width)`` of the centre crop and the four corner crops."""
    ch, cw = max(1, round(height * fraction)), max(1, round(width * fraction))
    bottom, right = height - ch, width - cw
    return [(bottom // 2, right // 2, ch, cw), (0, 0, ch, cw), (0, right, ch, cw), (bottom, 0, ch, cw),
            (bottom, right, ch, cw)]


def tta_views(x: Tensor, scheme: str) -> Iterator[Tensor]:
    """The views of a prepared batch ``(B, C, H, W)``, the unchanged batch first; made one at a time
    so that only one extra view is in memory."""
    yield x
    if check_tta(scheme) == "none":
        return
    yield x.flip(-1)
    if scheme == "flip+crops":
        h, w = x.shape[-2:]
        for top, left, ch, cw in crop_boxes(h, w):
            crop = x[..., top:top + ch, left:left + cw]
            yield F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


class ViewAveraged(nn.Module):
    """``model`` whose prediction is its mean class probability over the views of its input, each view's
    at ``temperature`` (``softmax(logits / T)``).

    ``logits`` are the log of that mean (their softmax is the mean itself, and argmax/top-k are
    unchanged), ``branch_logits`` holds the unchanged view's logits as :data:`WITHOUT_TTA` (what the
    model alone would say, for free) and the log of the mean at T = 1 as :data:`UNCALIBRATED`,
    ``object_boxes`` are the unchanged view's."""

    def __init__(self, model: nn.Module, scheme: str, temperature: float = 1.0) -> None:
        super().__init__()
        self.model, self.scheme, self.temperature = model, check_tta(scheme), temperature

    def forward(self, x: Tensor) -> ModelOutput:
        first: ModelOutput | None = None
        total: Tensor | None = None
        total_raw: Tensor | None = None
        for view in tta_views(x, self.scheme):
            out = self.model(view)
            probabilities = scaled_probabilities(out.logits, self.temperature)
            raw = scaled_probabilities(out.logits)
            total = probabilities if total is None else total + probabilities
            total_raw = raw if total_raw is None else total_raw + raw
            first = out if first is None else first
        assert first is not None and total is not None and total_raw is not None
        views = view_count(self.scheme)
        return ModelOutput(logits=(total / views).log(), object_boxes=first.object_boxes,
                           branch_logits={WITHOUT_TTA: first.logits.float(), UNCALIBRATED: (total_raw / views).log()})


def with_views(model: nn.Module, scheme: str, temperature: float = 1.0) -> nn.Module:
    """``model`` itself without views (``none``: outputs exactly as before; the caller applies the
    temperature), else :class:`ViewAveraged` at ``temperature``."""
    return model if check_tta(scheme) == "none" else ViewAveraged(model, scheme, temperature)


# -- weights and averaging ------------------------------------------------------------------------

def parse_weights(text: str | None, runs: int) -> list[float] | None:
    """``--weights 0.6,0.4`` as normalised weights (None when the flag is not given)."""
    if text is None:
        return None
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise ConfigError(f"--weights {text}: {item.strip()!r} is not a number; give one positive weight "
                              "per run, separated by commas, e.g. --weights 0.6,0.4") from None
    return normalise_weights(values, runs)


def normalise_weights(weights: Sequence[float] | None, runs: int) -> list[float]:
    """One positive, finite weight per run, scaled to sum to 1; equal weights when None."""
    if weights is None:
        return [1.0 / runs] * runs
    if len(weights) != runs:
        raise ConfigError(f"--weights has {len(weights)} value(s) for {runs} run(s); give one positive weight per "
                          "run, in the order the runs are given")
    bad = [w for w in weights if not (math.isfinite(w) and w > 0)]
    if bad:
        raise ConfigError(f"--weights must be positive numbers, got {bad[0]:g}; give one positive weight per run "
                          "(they are normalised to sum to 1)")
    total = math.fsum(weights)
    return [w / total for w in weights]


def average_probabilities(probabilities: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``sum_i w_i p_i``; one member's probabilities are returned unchanged, bit for bit."""
    if len(probabilities) == 1:
        return probabilities[0]
    scale = torch.tensor(list(weights), dtype=probabilities[0].dtype).view(-1, 1, 1)
    return (torch.stack(list(probabilities)) * scale).sum(dim=0)


# -- members ----------------------------------------------------------------------------------------

def _listed(ids: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" ... (+{len(ids) - limit} more)" if len(ids) > limit else "")


def column_order(table: ClassTable, reference: ClassTable, what: str, reference_what: str) -> Tensor | None:
    """For each class of ``reference``, its column in the outputs of a model trained with ``table``;
    None when the order is the same. Other class IDs are refused (one line, naming them)."""
    diff = reference.diff(table)
    if diff.missing or diff.extra:
        parts = [f"{len(ids)} only in {where}: {_listed(ids)}"
                 for ids, where in ((diff.missing, reference_what), (diff.extra, what)) if ids]
        raise ClassTableError(f"{what} and {reference_what} were trained on different classes ({'; '.join(parts)}); "
                              "an ensemble averages the probabilities of the same classes")
    if not diff.reindexed:
        return None
    return torch.tensor([table.index_of(cid) for cid in reference.ids])


def _label(source: Path, run: Run) -> str:
    """A short name for a member: its run folder, with the checkpoint's stem when a file was given."""
    assert run.run_dir is not None
    folder = run.run_dir.resolve().name or "run"
    return f"{folder}-{source.stem}" if source.is_file() else folder


@dataclass
class Member:
    """One run of an ensemble; ``columns`` reorders its outputs to the ensemble's class order."""

    name: str  # model1, model2, ...: the column prefix in predictions.csv
    source: Path  # as given on the command line
    run: Run
    weight: float
    columns: Tensor | None = None

    @property
    def label(self) -> str:
        return _label(self.source, self.run)

    def in_ensemble_order(self, scores: Tensor) -> Tensor:
        return scores if self.columns is None else scores[:, self.columns]

    def describe(self) -> dict[str, Any]:
        m = self.run.config.model
        assert self.run.checkpoint_path is not None
        return {"name": self.name, "run": str(self.source), "checkpoint": str(self.run.checkpoint_path.absolute()),
                "checkpoint_note": self.run.checkpoint_note, "weight": self.weight, "model": m.name,
                "backbone": m.backbone, "input_size": m.input_size, "transform": self.run.transform.name,
                "classes_reordered": self.columns is not None, "temperature": self.run.temperature}


@dataclass
class EnsembleInference:
    """What an ensemble saw, in dataset order; every probability table is in the ensemble's class order."""

    reference: Inference  # the first member's: indices, labels, sizes (and its boxes)
    probabilities: Tensor  # (N, C) the ensemble's, each member at its temperature
    members: list[Tensor]  # (N, C) each member's at its temperature, averaged over its views
    members_without_tta: list[Tensor | None]  # (N, C) each member's logits on the unchanged view, with views
    uncalibrated: Tensor  # (N, C) the ensemble's with every member at temperature 1
    members_uncalibrated: list[Tensor]  # (N, C) each member's at temperature 1, averaged over its views

    def as_inference(self, logits: Tensor, with_boxes: bool = False) -> Inference:
        """An :class:`Inference` with these ``logits`` (give probabilities as their log), for
        :func:`compute_metrics`; ``with_boxes``: keep the first member's object boxes."""
        ref = self.reference
        return Inference(indices=ref.indices, labels=ref.labels, logits=logits,
                         object_boxes=ref.object_boxes if with_boxes else None, orig_sizes=ref.orig_sizes,
                         input_size=ref.input_size)


@dataclass
class Ensemble:
    """Runs whose class probabilities are averaged, each over the same views (``tta``)."""

    members: list[Member]
    tta: str = "none"

    @classmethod
    def open(cls, paths: Sequence[str | os.PathLike], *, device: str = "auto", tta: str = "none",
             weights: Sequence[float] | None = None, calibrate: bool = True) -> Ensemble:
        """Open every run (:meth:`Run.open`); refuse runs whose class IDs differ from the first's.
        ``calibrate``: each run's probabilities at its own temperature (else T = 1)."""
        if not paths:
            raise UserError("no run given: pass one or more run folders or checkpoints")
        check_tta(tta)
        weights = normalise_weights(weights, len(paths))
        members: list[Member] = []
        for i, (path, weight) in enumerate(zip(paths, weights, strict=True), start=1):
            run = Run.open(path, device=device, calibrate=calibrate)
            assert run.classes is not None
            columns = None
            if members:
                first = members[0]
                assert first.run.classes is not None
                columns = column_order(run.classes, first.run.classes, str(path), str(first.source))
            members.append(Member(f"model{i}", Path(path), run, weight, columns))
        return cls(members, tta)

    # -- what it is ---------------------------------------------------------------------------
    @property
    def reference(self) -> Run:
        """The first run: its class table, data checks and validation split are the ensemble's."""
        return self.members[0].run

    @property
    def classes(self) -> ClassTable:
        assert self.reference.classes is not None
        return self.reference.classes

    @property
    def weights(self) -> list[float]:
        return [m.weight for m in self.members]

    @property
    def calibrated(self) -> bool:
        """Whether the members' probabilities use their temperatures (not --no-calibration)."""
        return all(m.run.use_calibration for m in self.members)

    @property
    def single_run_without_views(self) -> bool:
        """One run without views: what ``predict``/``evaluate`` did before ensembles, file for file."""
        return len(self.members) == 1 and self.tta == "none"

    def describe(self) -> str:
        """What predicts, for the console: the checkpoint(s), weights, views and temperatures."""
        if self.single_run_without_views:
            return f"{self.reference.describe_checkpoint}, {self.reference.describe_temperature()}"
        views = f", {view_count(self.tta)} views each (--tta {self.tta})" if self.tta != "none" else ""
        runs = ", ".join(f"{m.name} {m.run.checkpoint_path} (weight {m.weight:.3g}, "
                         f"temperature {m.run.temperature:.4g})" for m in self.members)
        return f"an ensemble of {len(self.members)} model(s){views}: {runs}"

    def setup(self) -> dict[str, Any] | None:
        """What made the predictions (``ensemble.json`` beside them); None for one model without views."""
        if self.single_run_without_views:
            return None
        return {"tta": self.tta, "views": view_count(self.tta), "class_order": str(self.members[0].source),
                "calibrated": self.calibrated, "members": [m.describe() for m in self.members]}

    # -- data ---------------------------------------------------------------------------------
    def evaluation_split(self, split: str, root: str | os.PathLike) -> DatasetIndex:
        """The first run's split of ``root``; for ``val`` every member must have held out the same images
        (checked before the data is read)."""
        if split == "val":
            self._require_shared_validation()
        return self.reference.evaluation_split(split, root)

    def _require_shared_validation(self) -> None:
        first = self.members[0]
        first_ids = first.run.validation_ids()
        if first_ids is None:
            return  # the first run's own evaluation_split says it has no validation split
        expected = set(first_ids)
        for member in self.members[1:]:
            ids = member.run.validation_ids()
            if ids is None:
                raise UserError(f"{member.source} was trained without a validation split, so the ensemble cannot be "
                                "chosen on images it did not train on; ensemble runs that share one")
            if set(ids) != expected:
                differ = len(expected ^ set(ids))
                raise UserError(f"{member.source} and {first.source} were validated on different images ({differ} "
                                "validation images are in one split.json only): an ensemble must be chosen on images "
                                "that no member trained on; train the members with the same data.split_seed and "
                                "data.val_fraction")

    # -- inference ----------------------------------------------------------------------------
    def infer(self, index: DatasetIndex, *, batch_size: int, progress: bool = False, desc: str = "eval",
              amp: bool = True, shard: bool = False) -> EnsembleInference:
        """Each member over the same images, one model in memory at a time, then the weighted mean.
        ``amp``: the runs' own autocast precision (else fp32); ``shard``: split the images between
        torchrun processes (each gathers all)."""
        outputs = [self._infer_member(m, index, batch_size, progress, desc, amp, shard) for m in self.members]
        first = outputs[0].result
        for member, output in zip(self.members[1:], outputs[1:], strict=True):
            if not torch.equal(output.result.indices, first.indices):
                raise UserError(f"{member.source} decoded other images than {self.members[0].source} "
                                "(an unreadable image?); run `fgvc data check` on the data")
        members = [o.probabilities for o in outputs]
        raw = [o.uncalibrated for o in outputs]
        return EnsembleInference(first, average_probabilities(members, self.weights), members,
                                 [o.without_tta for o in outputs], average_probabilities(raw, self.weights), raw)

    def _infer_member(self, member: Member, index: DatasetIndex, batch_size: int, progress: bool, desc: str,
                      amp: bool, shard: bool) -> _MemberOutput:
        run = member.run
        temperature = run.temperature
        sampler = ShardSampler(len(index), run.dist.rank, run.dist.world_size) if shard else None
        loader = run.loader(index, False, batch_size=batch_size, sampler=sampler)
        model = with_views(run.trained_model(), self.tta, temperature)
        label = desc if len(self.members) == 1 else f"{desc} {member.name}"
        result = infer(model, loader, run.device, run.amp_dtype if amp else None,
                       progress=progress and run.dist.is_main, desc=label, with_loss=False)
        if self.tta == "none":
            probabilities = scaled_probabilities(result.logits, temperature)
            uncalibrated = scaled_probabilities(result.logits)
        else:  # the view-averaged model's logits are the log of its calibrated mean already
            probabilities = result.logits.softmax(dim=1)
            uncalibrated = result.branch_logits[UNCALIBRATED].softmax(dim=1)
        without = result.branch_logits.get(WITHOUT_TTA) if self.tta != "none" else None
        return _MemberOutput(result, member.in_ensemble_order(probabilities), member.in_ensemble_order(uncalibrated),
                             None if without is None else member.in_ensemble_order(without))

    # -- metrics ------------------------------------------------------------------------------
    def metrics(self, result: EnsembleInference, part: DatasetIndex) -> dict[str, Any]:
        """:func:`compute_metrics` of the ensemble, with an ``ensemble`` entry: each member's top-1 and
        the ensemble's gain over it. Localisation metrics only for one model (its own boxes)."""
        alone = len(self.members) == 1
        ref = self.reference
        metrics = compute_metrics(result.as_inference(result.probabilities.log(), with_boxes=alone), self.classes,
                                  part.samples, localisation=alone and ref.spec.localises and ref.transform.whole_image)
        metrics.update(calibration_metrics(result.probabilities, result.uncalibrated, result.reference.labels))
        if alone:
            metrics["temperature"] = ref.temperature
        top1 = metrics.get("top1")
        members = [self._member_metrics(m, probabilities, without, raw, result, top1)
                   for m, probabilities, without, raw in zip(self.members, result.members, result.members_without_tta,
                                                             result.members_uncalibrated, strict=True)]
        best = max((m["top1"] for m in members if m.get("top1") is not None), default=None)
        metrics["ensemble"] = {"tta": self.tta, "views": view_count(self.tta), "weights": self.weights,
                               "calibrated": self.calibrated,
                               "class_order": str(self.members[0].source), "members": members,
                               "gain_over_best_member": None if top1 is None or best is None else top1 - best,
                               "top1_uncalibrated": _top1(result.uncalibrated, result.reference.labels)}
        return metrics

    def _member_metrics(self, member: Member, probabilities: Tensor, without: Tensor | None, uncalibrated: Tensor,
                        result: EnsembleInference, ensemble_top1: float | None) -> dict[str, Any]:
        own = compute_metrics(result.as_inference(probabilities.log()), self.classes, pairs=0)
        record = {**member.describe(), "top1": own.get("top1"), "top5": own.get("top5"),
                  "mean_class_accuracy": own.get("mean_class_accuracy"),
                  **calibration_metrics(probabilities, uncalibrated, result.reference.labels)}
        record["gain_top1"] = _gain(ensemble_top1, record["top1"])
        if without is not None:
            plain = compute_metrics(result.as_inference(without), self.classes, pairs=0).get("top1")
            record["top1_without_tta"] = plain
            record["gain_top1_over_without_tta"] = _gain(ensemble_top1, plain)
        return record

    def default_eval_dir(self, split: str) -> Path:
        """``ensemble_eval_<split>_<run1>+<run2>[_<tta>]`` beside the first run's folder: never a member's
        own ``eval_<split>``, and another combination of runs or views gets another folder."""
        first = self.reference.run_dir
        assert first is not None
        name = f"ensemble_eval_{split}_{'+'.join(m.label for m in self.members)}"
        if self.tta != "none":
            name += f"_{self.tta}"
        return first.resolve().parent / name


@dataclass
class _MemberOutput:
    """One member's pass over the images: probabilities in the ensemble's class order."""

    result: Inference
    probabilities: Tensor  # at the member's temperature, averaged over its views
    uncalibrated: Tensor  # at temperature 1, averaged over its views
    without_tta: Tensor | None  # logits of the unchanged view, when there are views


def _top1(probabilities: Tensor, labels: Tensor) -> float | None:
    """Top-1 over the labelled rows (None without any): here, of the members' own probabilities averaged."""
    labelled = labels >= 0
    if not bool(labelled.any()):
        return None
    return float((probabilities[labelled].argmax(dim=1) == labels[labelled]).float().mean())


def _gain(ensemble: float | None, member: float | None) -> float | None:
    return None if ensemble is None or member is None else ensemble - member


# -- fgvc evaluate ------------------------------------------------------------------------------

def evaluate_ensemble(paths: Sequence[str | os.PathLike], data: str | os.PathLike, split: str = "val",
                      out_dir: str | os.PathLike | None = None, batch_size: int = 32, device: str = "auto",
                      tta: str = "none", weights: Sequence[float] | None = None,
                      progress: bool = True, calibrate: bool = True) -> EvaluationReport:
    """Metrics of an ensemble (or of one run with views) on the runs' shared validation split or a
    labelled test split, written as ``metrics.json`` (default folder: :meth:`Ensemble.default_eval_dir`)."""
    from ..fileio import atomic_write_json

    ensemble = Ensemble.open(paths, device=device, tta=tta, weights=weights, calibrate=calibrate)
    part = ensemble.evaluation_split(split, data)
    result = ensemble.infer(part, batch_size=batch_size, progress=progress, amp=True, shard=True)
    metrics = ensemble.metrics(result, part)
    out = Path(out_dir) if out_dir is not None else ensemble.default_eval_dir(split)
    json_path = out / "metrics.json"
    dist_info = ensemble.reference.dist
    checkpoints = " + ".join(str(m.run.checkpoint_path) for m in ensemble.members)
    note = ensemble.describe()
    if dist_info.is_main:
        atomic_write_json(json_path, {"checkpoint": checkpoints, "checkpoint_note": note, "split": split,
                                      "data": str(Path(data).resolve()), "processes": dist_info.world_size,
                                      **metrics})
    ref = ensemble.reference
    assert ref.checkpoint_path is not None
    return EvaluationReport(metrics, ensemble.classes, split, ref.checkpoint_path, json_path, note, dist_info,
                            ensemble=metrics["ensemble"])


def evaluate_runs(paths: Sequence[str | os.PathLike], data: str | os.PathLike, split: str = "val",
                  out_dir: str | os.PathLike | None = None, batch_size: int = 32, device: str = "auto",
                  tta: str = "none", weights: Sequence[float] | None = None, progress: bool = True,
                  calibrate: bool = True) -> EvaluationReport:
    """``fgvc evaluate``: one run without views as before (:func:`evaluate_checkpoint`, ``RUN/eval_<split>``),
    anything else as an ensemble (:func:`evaluate_ensemble`); ``calibrate``: each run at its temperature."""
    check_tta(tta)
    normalise_weights(weights, len(paths))
    if len(paths) == 1 and tta == "none":
        return evaluate_checkpoint(paths[0], data, split, out_dir=out_dir, batch_size=batch_size, device=device,
                                   progress=progress, calibrate=calibrate)
    return evaluate_ensemble(paths, data, split, out_dir=out_dir, batch_size=batch_size, device=device, tta=tta,
                             weights=weights, progress=progress, calibrate=calibrate)
