"""Ensembles of trained runs and test-time augmentation (TTA): one prediction from several models and views.

Class **probabilities** are averaged, not logits: runs trained apart have logits on different
scales (one may be twice as confident in logit units as another), so a mean of logits lets the most
over-confident member decide, while probabilities are on one scale for every model. Each member's
probabilities are its calibrated ones, ``softmax(logits / T)`` with its own fitted temperature
(:mod:`fgvc.engine.calibration`), so an over-confident member does not dominate the mean either. A
model's views are averaged the same way (each view at the member's temperature), before the models are.

* Every member is a :class:`~fgvc.engine.run.Run` with its own loader and transform (input size,
  recipe, normalisation); all of them see the same images in the same order (one ``DatasetIndex``,
  read once through the first run). Each member is run as a model source by
  :func:`fgvc.engine.inference.source_pass`, the loop every source goes through; :func:`infer_source`
  runs any source (a run, an exported file, an ensemble) and is what ``evaluate``, ``predict`` and
  ``report`` call.
* The first run's class table is the ensemble's. A run with the same class IDs in another index order
  has its output columns reordered to it; a run with other class IDs is refused, naming them.
* Weights (``--weights``): one positive number per run, normalised to sum to 1 (default: equal).
* Views (``--tta``, :mod:`fgvc.engine.views`), made on the device from the batch the loader's transform
  produced, so they work for every transform recipe:

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.classes import ClassTable, ClassTableError
from ..data.index import DatasetIndex
from ..errors import ConfigError, UserError
from .calibration import calibration_metrics
from .evaluate import EvaluationReport, compute_metrics, evaluate_checkpoint
from .inference import Inference, ModelSource, RunSource, source_pass
from .run import Run
from .views import (  # noqa: F401  (re-exported: the views are part of what an ensemble is)
    CROP_FRACTION,
    TTA_SCHEMES,
    UNCALIBRATED,
    WITHOUT_TTA,
    ViewAveraged,
    check_tta,
    crop_boxes,
    tta_views,
    view_count,
    with_views,
)

__all__ = ["TTA_SCHEMES", "CROP_FRACTION", "WITHOUT_TTA", "view_count", "tta_views", "with_views", "ViewAveraged",
           "parse_weights", "normalise_weights", "average_probabilities", "Member", "Ensemble",
           "EnsembleInference", "infer_source", "evaluate_ensemble", "evaluate_runs"]

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

    @property
    def model_source(self) -> ModelSource:
        return RunSource(self.run)

    def describe(self) -> dict[str, Any]:
        m = self.run.config.model
        assert self.run.checkpoint_path is not None
        return {"name": self.name, "run": str(self.source), "checkpoint": str(self.run.checkpoint_path.absolute()),
                "checkpoint_note": self.run.checkpoint_note, "weight": self.weight, "model": m.name,
                "backbone": m.backbone, "input_size": m.input_size, "transform": self.run.preprocessing.recipe,
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
    def infer(self, index: DatasetIndex, *, batch_size: int | None, progress: bool = False, desc: str = "eval",
              amp: bool = True, shard: bool = False) -> EnsembleInference:
        """Each member over the same images, one model in memory at a time, then the weighted mean.
        ``amp``: the runs' own autocast precision (else fp32); ``shard``: split the images between
        torchrun processes (each gathers all)."""
        outputs = [source_pass(m.model_source, index, self.tta, m.columns, batch_size=batch_size,
                                progress=progress, desc=desc if len(self.members) == 1 else f"{desc} {m.name}",
                                amp=amp, shard=shard) for m in self.members]
        first = outputs[0].result
        for member, output in zip(self.members[1:], outputs[1:], strict=True):
            if not torch.equal(output.result.indices, first.indices):
                raise UserError(f"{member.source} decoded other images than {self.members[0].source} "
                                "(an unreadable image?); run `fgvc data check` on the data")
        members = [o.probabilities for o in outputs]
        raw = [o.uncalibrated for o in outputs]
        return EnsembleInference(first, average_probabilities(members, self.weights), members,
                                 [o.without_tta for o in outputs], average_probabilities(raw, self.weights), raw)

    # -- metrics ------------------------------------------------------------------------------
    def metrics(self, result: EnsembleInference, part: DatasetIndex) -> dict[str, Any]:
        """:func:`compute_metrics` of the ensemble, with an ``ensemble`` entry: each member's top-1 and
        the ensemble's gain over it. Localisation metrics only for one model (its own boxes)."""
        alone = len(self.members) == 1
        ref = self.reference
        metrics = compute_metrics(result.as_inference(result.probabilities.log(), with_boxes=alone), self.classes,
                                  part.samples, localisation=alone and ref.localises)
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


def infer_source(source: ModelSource | Ensemble, index: DatasetIndex, *, batch_size: int | None = None,
                 progress: bool = False, desc: str = "eval", amp: bool = True, shard: bool = False,
                 with_loss: bool = False) -> EnsembleInference:
    """Run any source — a run, an exported file, an ensemble — over a split or a folder's images: what
    ``evaluate``, ``predict``, ``predict FILE`` and ``report`` all read. ``amp``: the source's autocast
    precision (else fp32); ``shard``: split the images between torchrun processes (each gathers all);
    ``with_loss``: one source's summed loss on labelled images (``reference.loss_sum``)."""
    if isinstance(source, Ensemble):
        return source.infer(index, batch_size=batch_size, progress=progress, desc=desc, amp=amp, shard=shard)
    out = source_pass(source, index, "none", None, batch_size=batch_size, progress=progress, desc=desc, amp=amp,
                       shard=shard, with_loss=with_loss)
    return EnsembleInference(out.result, out.probabilities, [out.probabilities], [None], out.uncalibrated,
                             [out.uncalibrated])


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
