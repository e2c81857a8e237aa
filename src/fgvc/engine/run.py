"""A run, opened once: config, class table, model spec, device, precision, processes, data, split,
loaders and model — what ``train``, ``train --resume``, ``evaluate``, ``predict``, ``explain`` and
``report`` all start from.

* :meth:`Run.start` — a new training run from a config (the data gives the class table).
* :meth:`Run.resume` — a run directory's ``last.pt``, with the overrides that are safe mid-run
  (:data:`RESUMABLE_KEYS`, ``--data`` for a moved dataset); anything else is refused in one line.
* :meth:`Run.open` — a checkpoint or run directory for inference; a run directory gives its
  ``best.pt`` (else ``last.pt``) and :attr:`Run.checkpoint_note` says which and why.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ..config import Config, apply_overrides, check_key, config_from_dict, validate_config
from ..data.classes import ClassTable, ClassTableError
from ..data.dataset import FGVCDataset, collate_skipping
from ..data.formats import read_dataset
from ..data.index import DatasetIndex
from ..data.split import apply_split, load_split
from ..data.transforms import BatchTransform, Preprocessing, recipe
from ..errors import CheckpointError, ConfigError, DataError, UserError
from ..models import backbone_stats, create_model, model_spec
from ..models.inference import prepare_for_inference
from ..models.registry import ModelSpec
from .calibration import Calibration, calibration_of
from .checkpoint import load_checkpoint
from .distributed import DistInfo, init_distributed

__all__ = [
    "Run",
    "RESUMABLE_KEYS",
    "FGVCLoader",
    "data_loader",
    "resolve_device",
    "resolve_amp",
    "choose_checkpoint",
]

# --set keys a resumed run may change: they alter how the run is carried out, not what it computes
# (``train.epochs`` extends or shortens the run; a cosine schedule is then spread over the new length).
RESUMABLE_KEYS = ("train.epochs", "train.device", "train.amp", "train.eval_batch_size", "train.save_every",
                  "train.keep", "train.calibrate", "data.num_workers", "data.skip_unreadable", "track.*")


def resolve_device(preference: str) -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise ConfigError(f"train.device = {preference!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {preference!r} requested but CUDA is not available here "
                          "(no GPU, or a CPU-only PyTorch build); use --set train.device=cpu or auto")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there bf16 autocast is
    faster than fp32; elsewhere PyTorch emulates it, slower than fp32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_amp(setting: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 where the GPU supports it, else fp16 on CUDA; off on CPU (fp32 is the reference).
    fast: as auto, and bf16 on a CPU with native bf16 (the demo's choice: same accuracy, less time)."""
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    if setting in ("auto", "fast"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if setting == "fast" and device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return None
    raise ConfigError(f"train.amp must be auto, fast, off, bf16 or fp16, got {setting!r}")


def choose_checkpoint(path: str | os.PathLike) -> tuple[Path, str]:
    """A checkpoint file as given, or a run directory's ``best.pt`` (else ``last.pt``), with why."""
    path = Path(path)
    if path.is_dir():
        if (path / "best.pt").is_file():
            return path / "best.pt", "the run's best validation score"
        if (path / "last.pt").is_file():
            return path / "last.pt", "the run has no best.pt, so its latest epoch"
        raise CheckpointError(f"run directory {path} holds no best.pt or last.pt; was training started there?")
    if not path.exists():
        raise CheckpointError(f"checkpoint or run directory {path} not found")
    return path, "as given"


class FGVCLoader(DataLoader):
    """A DataLoader of 8-bit images plus the batch transform that finishes them on the device."""

    batch_transform: BatchTransform

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return self.batch_transform(images)


def data_loader(dataset: FGVCDataset, batch_transform: BatchTransform, *, batch_size: int,
                sampler: Sampler | None = None, num_workers: int = 0, pin_memory: bool = False,
                drop_last: bool = False) -> FGVCLoader:
    """The one place a loader is built — a run's (training and inference) and an exported file's — so
    every command batches, skips unreadable images and finishes the batch on the device the same way."""
    loader = FGVCLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                        persistent_workers=False, pin_memory=pin_memory, drop_last=drop_last,
                        collate_fn=collate_skipping)
    loader.batch_transform = batch_transform
    return loader


def _check_resume_overrides(overrides: list[str]) -> None:
    for item in overrides:
        key = item.partition("=")[0].strip()
        check_key(key)  # a typo is "unknown key", not "cannot change"
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUMABLE_KEYS):
            raise ConfigError(
                f"--set {key} cannot change when resuming: it would make the resumed run a different run "
                f"(only {', '.join(RESUMABLE_KEYS)} may); start a new run, e.g. with --init-from RUN/last.pt")


@dataclass
class Run:
    """Everything a command needs about one run. Build it with :meth:`start`, :meth:`resume` or
    :meth:`open`; the dataset is read once (:meth:`dataset`)."""

    config: Config
    device: torch.device
    dist: DistInfo
    classes: ClassTable | None = None
    run_dir: Path | None = None
    checkpoint_path: Path | None = None
    checkpoint: dict[str, Any] | None = None
    checkpoint_note: str = ""
    use_calibration: bool = True  # False: probabilities at T = 1 (--no-calibration)
    _indices: dict[str, DatasetIndex] = field(default_factory=dict, repr=False)

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def _make(cls, config: Config, **kwargs: Any) -> Run:
        validate_config(config)
        model_spec(config.model.name)  # an unknown model is a config error before anything is read
        device = resolve_device(config.train.device)
        dist = init_distributed(device.type)
        if dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        return cls(config=config, device=device, dist=dist, **kwargs)

    @classmethod
    def start(cls, config: Config, run_dir: str | os.PathLike) -> Run:
        """A new training run; ``data.root`` is stored absolute, so the run resumes from any folder."""
        if config.data.root is None:
            raise UserError("no dataset given: pass --data ROOT (or set data.root in the config)")
        config.data.root = str(Path(config.data.root).expanduser().resolve())
        return cls._make(config, run_dir=Path(run_dir))

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, *, data: str | os.PathLike | None = None,
               overrides: list[str] | None = None) -> Run:
        """The run in ``run_dir`` as its ``last.pt`` left it, with ``--data`` (a moved dataset: its
        classes must still match) and the safe ``--set`` overrides applied."""
        run_dir = Path(run_dir)
        path = run_dir / "last.pt"
        if not run_dir.is_dir():
            given = (f"is a file; --resume takes the run folder ({run_dir.parent})" if run_dir.exists()
                     else "does not exist; pass the folder `fgvc train --out` wrote (default runs/<name>)")
            raise UserError(f"cannot resume: {run_dir} {given}")
        if not path.is_file():
            raise UserError(f"cannot resume: {path} does not exist (no epoch finished in {run_dir} yet?)")
        state = load_checkpoint(path)
        config = config_from_dict(state["config"])
        _check_resume_overrides(overrides or [])
        apply_overrides(config, overrides or [])
        if data is not None:
            config.data.root = str(Path(data).expanduser().resolve())
        run = cls._make(config, run_dir=run_dir, classes=ClassTable.from_dict(state["classes"]),
                        checkpoint_path=path, checkpoint=state, checkpoint_note="the run's latest state")
        return run

    @classmethod
    def open(cls, path: str | os.PathLike, *, device: str = "auto", calibrate: bool = True) -> Run:
        """A trained checkpoint (file or run directory) for evaluation, prediction and pictures;
        ``calibrate``: its probabilities use the checkpoint's temperature (else T = 1)."""
        ckpt_path, why = choose_checkpoint(path)
        state = load_checkpoint(ckpt_path)
        converted = state.get("converted_from")
        if isinstance(converted, dict) and converted.get("repository"):  # fgvc convert: no validation score
            why = f"converted from {converted.get('file', 'a checkpoint')} ({converted['repository']})"
        config = config_from_dict(state["config"])
        config.train.device = device
        run_dir = ckpt_path.parent
        return cls._make(config, run_dir=run_dir, classes=ClassTable.from_dict(state["classes"]),
                         checkpoint_path=ckpt_path, checkpoint=state, checkpoint_note=why,
                         use_calibration=calibrate)

    # -- what the config resolves to ---------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return model_spec(self.config.model.name)

    @property
    def preprocessing(self) -> Preprocessing:
        """The model input's preprocessing: what the checkpoint stored, else (a new run, or a checkpoint
        written before fgvc stored it) resolved from the config — ``model.transform``'s recipe (``auto``:
        the model spec's), ``model.input_size``, and the backbone's statistics where the recipe has none."""
        stored = (self.checkpoint or {}).get("preprocessing")
        if stored is not None:
            return Preprocessing.from_dict(stored)
        m = self.config.model
        r = recipe(self.spec.default_transform if m.transform == "auto" else m.transform)
        mean, std = (r.mean, r.std) if r.mean is not None and r.std is not None else backbone_stats(m.backbone)
        return r.at(m.input_size, mean, std)

    @property
    def transform(self) -> Preprocessing:
        """The same as :attr:`preprocessing` (the older name)."""
        return self.preprocessing

    @property
    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Normalisation mean/std of :attr:`preprocessing`."""
        p = self.preprocessing
        return p.mean, p.std

    @property
    def localises(self) -> bool:
        """Whether the model's object boxes are object boxes on the whole image resized (no crop), so they
        map back to the image by plain scaling: localisation metrics, report boxes and serve's boxes."""
        return self.spec.localises and self.preprocessing.whole_image

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return resolve_amp(self.config.train.amp, self.device)

    @property
    def calibration(self) -> Calibration | None:
        """The temperature fit the checkpoint carries (None: written without one)."""
        return calibration_of(self.checkpoint)

    @property
    def temperature(self) -> float:
        """What this run's logits are divided by before the softmax: the fitted T, or 1 when the
        checkpoint has none or calibration is off."""
        fitted = self.calibration
        return fitted.temperature if fitted is not None and self.use_calibration else 1.0

    def describe_temperature(self) -> str:
        """One line: which temperature the probabilities use, and why."""
        fitted = self.calibration
        if not self.use_calibration:
            return "temperature 1: calibration turned off (--no-calibration)"
        if fitted is None:
            return (f"temperature 1: {self.checkpoint_path} holds no fitted temperature (written before calibration, "
                    "or a run without it); probabilities are the model's own")
        note = f": {fitted.note}" if fitted.note else ""
        return f"temperature {fitted.temperature:.4g} (fitted on {fitted.images} validation images{note})"

    @property
    def describe_checkpoint(self) -> str:
        return f"{self.checkpoint_path} ({self.checkpoint_note})" if self.checkpoint_path else "no checkpoint"

    # -- data ---------------------------------------------------------------------------------
    def dataset(self, root: str | os.PathLike | None = None) -> DatasetIndex:
        """The dataset at ``root`` (default ``data.root``), read once; refused when it has layout errors
        or (for a trained run) other classes than the run's."""
        root = root if root is not None else self.config.data.root
        if root is None:
            raise UserError("no dataset given: pass --data ROOT (or set data.root in the config)")
        key = str(Path(root).resolve())
        if key not in self._indices:
            fmt = None if self.config.data.format == "auto" else self.config.data.format
            index = read_dataset(root, fmt, **self.config.data.options)
            errors = [str(p) for p in index.problems if p.severity == "error"]
            if errors:  # list every problem at once, unreadable images included (what `fgvc data check` finds)
                from ..data.check import problems_for_training

                errors = problems_for_training(root, fmt, self.config.data.options) or errors
                listed = "\n  ".join(errors)
                raise DataError(f"{len(errors)} problem(s) in {root}:\n  {listed}\n"
                                f"Fix them first; `fgvc data check {root}` shows the full report.")
            if self.classes is not None and "train" in index.splits:
                try:
                    self.classes.require_same(index.classes, f"the data in {root}")
                except ClassTableError as e:
                    raise DataError(f"{self.describe_checkpoint} was trained on other classes: {e}") from None
            self._indices[key] = index
        return self._indices[key]

    def validation_ids(self) -> list[str] | None:
        """The run's validation image IDs (checkpoint first, then ``split.json``), None when unknown."""
        if self.checkpoint is not None and "val_ids" in self.checkpoint:
            return list(self.checkpoint["val_ids"])
        if self.run_dir is not None and (self.run_dir / "split.json").is_file():
            return load_split(self.run_dir / "split.json")
        return None

    def evaluation_split(self, split: str, root: str | os.PathLike | None = None) -> DatasetIndex:
        """The run's validation split, or a dataset's labelled test split."""
        index = self.dataset(root)
        if split == "val":
            ids = self.validation_ids()
            part = apply_split(index.split("train"), ids, f"run {self.run_dir}")[1] if ids is not None else None
            if part is None or not len(part):
                raise UserError(f"{self.describe_checkpoint} was trained without a validation split; use --split test")
            return part
        part = index.split("test")
        if not part.has_labels:
            raise UserError(f"the test split of {index.root} has no labels: use `fgvc predict` and `fgvc score`, "
                            "or `fgvc submit` to the competition server")
        return part

    def loader(self, index: DatasetIndex, train: bool, *, batch_size: int | None = None,
               sampler: Sampler | None = None) -> FGVCLoader:
        """Workers decode and do 8-bit geometry; the batch transform finishes on the device."""
        cfg, p = self.config, self.preprocessing
        transform = p.transform(train, output="uint8")
        num_classes = len(self.classes) if self.classes is not None else len(index.classes)
        dataset = FGVCDataset(index, transform, num_classes=num_classes, skip_unreadable=cfg.data.skip_unreadable)
        batch_size = batch_size or (cfg.train.batch_size if train else cfg.train.eval_batch_size)
        return data_loader(dataset, p.batch_transform(train), batch_size=batch_size,
                           sampler=sampler, num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda",
                           drop_last=train and cfg.train.drop_last and len(dataset) > batch_size)

    def eval_transform(self):
        """The full (float) evaluation transform, for one image at a time (``fgvc explain``)."""
        return self.preprocessing.transform(False)

    # -- model --------------------------------------------------------------------------------
    def build_model(self, num_classes: int, pretrained: bool | str | None = None) -> nn.Module:
        m = self.config.model
        options = dict(m.options)
        sized = self.spec.input_size_option  # layers sized by the input (PIM's token mixing, TransFG's grid)
        if sized is not None and sized not in options:
            options[sized] = m.input_size
        return create_model(m.name, num_classes, backbone=m.backbone,
                            pretrained=m.pretrained if pretrained is None else pretrained, **options)

    def load_weights(self, model: nn.Module, what: str = "checkpoint") -> None:
        """The checkpoint's weights into ``model``; a model that does not fit is one line."""
        assert self.checkpoint is not None
        try:
            model.load_state_dict(self.checkpoint["model"], strict=True)
        except RuntimeError as e:
            m = self.config.model
            first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e)[:200])
            raise CheckpointError(f"the weights in {self.checkpoint_path} do not fit a {m.name}/{m.backbone} model "
                                  f"({first[:240]}); the config and the weights come from different models") from None

    def trained_model(self, for_inference: bool = True) -> nn.Module:
        """The checkpoint's model on the run's device; ``for_inference``: BatchNorm folded and
        channels_last (:func:`prepare_for_inference`) — same outputs within float rounding."""
        if self.classes is None:
            raise CheckpointError("no checkpoint opened")
        model = self.build_model(len(self.classes), pretrained=False)
        self.load_weights(model)
        model = model.to(self.device)
        return prepare_for_inference(model) if for_inference else model.eval()
