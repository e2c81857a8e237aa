"""Exporting a trained run to ONNX, TorchScript or an ExportedProgram, and running the exported file.

``fgvc export RUN --format F`` writes one file that carries the network, the class table and the
preprocessing (:mod:`.metadata`), verified on real images before it is written (:mod:`.verify`).
``fgvc predict FILE`` and ``fgvc serve FILE`` run it through :func:`load_exported`. The exporters'
packages (onnx, onnxruntime) are imported only inside the functions that need them.
"""

from .build import ExportResult, default_output, export_run, preprocessing_of
from .formats import FORMATS, ExportError
from .metadata import ExportMetadata, MetadataError, Preprocessing
from .runtime import ExportedModel, ExportedOutputs, exported_format, load_exported
from .verify import RELATIVE_TOLERANCE, Verification, VerificationError

__all__ = [
    "FORMATS",
    "RELATIVE_TOLERANCE",
    "ExportError",
    "ExportMetadata",
    "ExportResult",
    "ExportedModel",
    "ExportedOutputs",
    "MetadataError",
    "Preprocessing",
    "Verification",
    "VerificationError",
    "default_output",
    "export_run",
    "exported_format",
    "load_exported",
    "preprocessing_of",
]
