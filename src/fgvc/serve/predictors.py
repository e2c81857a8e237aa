"""What the service runs: a trained run (PyTorch) or an exported file, behind one interface.

Both are model sources (:class:`fgvc.engine.inference.RunSource`,
:class:`fgvc.export.predict.ExportSource`): the model, its preprocessing and its temperature come from
the source, as for ``fgvc predict``. A predictor turns 8-bit images that went through the geometric
transform into class probabilities at the run's temperature, as ``fgvc predict`` gives them (and object
boxes where the model localises), so a photo gets the same input tensor as in ``fgvc predict``. Only a
run can draw the explanation picture (:func:`fgvc.viz.explain.explain_images`): it needs the PyTorch
model, which an exported file does not carry.
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image
from torch import Tensor, nn

from ..data.classes import ClassTable
from ..engine.calibration import scaled_probabilities
from ..engine.inference import ModelSource
from ..export.metadata import Preprocessing

__all__ = ["BatchResult", "Predictor", "TorchPredictor", "ExportedPredictor", "open_predictor"]


@dataclass(frozen=True)
class BatchResult:
    probabilities: Tensor  # (N, C) float32, CPU
    object_boxes: Tensor | None  # (N, 4) int64 inclusive input pixels, CPU; None unless the model localises


class Predictor(Protocol):
    classes: ClassTable
    preprocessing: Preprocessing
    description: str  # what runs, for /healthz and the page
    kind: str  # "run", "onnx", "torchscript" or "exported-program"
    explain_note: str | None  # None: explain() works; else why there is no picture

    def forward(self, images: Tensor) -> BatchResult:
        """uint8 images (N, 3, S, S) after the geometric transform -> probabilities (and boxes)."""

    def explain(self, name: str, data: bytes) -> bytes:
        """The ``fgvc explain`` picture of one image, as PNG bytes."""


class _SourcePredictor:
    """A model source's model, preprocessing and temperature, for batches of uploads."""

    def __init__(self, source: ModelSource) -> None:
        self.model = source.model().eval()
        self.temperature = source.temperature
        self.classes = source.classes
        self.preprocessing = source.preprocessing
        self.device = source.device
        self._normalise = source.preprocessing.batch_transform().to(source.device)

    @torch.no_grad()
    def forward(self, images: Tensor) -> BatchResult:
        out = self.model(self._normalise(images.to(self.device)))
        boxes = None if out.object_boxes is None else out.object_boxes.to(torch.int64).cpu()
        return BatchResult(scaled_probabilities(out.logits, self.temperature).cpu(), boxes)


class TorchPredictor(_SourcePredictor):
    """A trained run (its PyTorch model returns :class:`~fgvc.models.output.ModelOutput`). ``picture``,
    when given, draws the explanation of an image file (PIL image out)."""

    kind = "run"

    def __init__(self, source: ModelSource, description: str,
                 picture: Callable[[Path], Image.Image] | None = None) -> None:
        super().__init__(source)
        self.description = description
        self._picture = picture
        self.explain_note = None if picture is not None else "this model has no explanation picture"

    def explain(self, name: str, data: bytes) -> bytes:
        if self._picture is None:
            raise RuntimeError(self.explain_note)
        with tempfile.TemporaryDirectory(prefix="fgvc-serve-") as folder:
            path = Path(folder) / (Path(name).name or "upload")
            path.write_bytes(data)
            picture = self._picture(path)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    @classmethod
    def from_run(cls, source: str | Path, device: str = "auto", calibrate: bool = True) -> TorchPredictor:
        """A run folder or checkpoint: the folded inference model for predictions, and the plain model
        (built on first use) for ``fgvc explain``'s picture; ``calibrate``: at the run's temperature."""
        from ..engine.inference import RunSource
        from ..engine.run import Run
        from ..viz.explain import explain_images

        run = Run.open(source, device=device, calibrate=calibrate)
        assert run.classes is not None
        lock = threading.Lock()
        plain: list[nn.Module] = []

        def picture(path: Path) -> Image.Image:
            with lock:
                if not plain:
                    plain.append(run.trained_model(for_inference=False))
            return next(iter(explain_images(run, [path], model=plain[0]))).picture

        m = run.config.model
        return cls(RunSource(run), f"{m.name}/{m.backbone} from {run.describe_checkpoint} on {run.device}, "
                   f"{run.describe_temperature()}", picture)


class ExportedPredictor(_SourcePredictor):
    """A file written by ``fgvc export``: ONNX Runtime, TorchScript or ExportedProgram."""

    def __init__(self, source: str | Path, device: str = "auto", calibrate: bool = True) -> None:
        from ..export.predict import ExportSource
        from ..export.runtime import load_exported

        self.exported = load_exported(source, device)
        super().__init__(ExportSource(self.exported, calibrate))
        meta = self.exported.metadata
        self.kind = meta.format
        self.description = (f"{meta.model}/{meta.backbone} exported to {source} ({self.exported.description}), "
                            f"temperature {self.temperature:.4g}")
        self.explain_note = (f"the explanation picture needs the run (the PyTorch model), which {Path(source).name} "
                             "does not carry; serve the run folder to see it")

    def explain(self, name: str, data: bytes) -> bytes:
        raise RuntimeError(self.explain_note)


def open_predictor(source: str | Path, device: str = "auto", calibrate: bool = True) -> Predictor:
    """An exported file (recognised by its content) or a run folder / checkpoint; ``calibrate``: its
    probabilities at the run's temperature (else T = 1)."""
    from ..export.runtime import exported_format

    if exported_format(source) is not None:
        return ExportedPredictor(source, device, calibrate)
    return TorchPredictor.from_run(source, device, calibrate)
