"""Running an exported file without the run: ONNX Runtime, the TorchScript interpreter or an
ExportedProgram, behind one call — normalised images in, ``logits`` (and ``object_boxes``) out.

The file is recognised by its content, not its name: a TorchScript or ExportedProgram archive holds
``extra/fgvc.json``; an ONNX file starts as every ONNX protobuf does (or ends in ``.onnx``). A training
checkpoint is neither, so ``fgvc predict`` can tell the two apart, whatever ``--out`` named the file.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..data.classes import ClassTable
from ..errors import ConfigError
from .formats import ExportError, first_line
from .metadata import EXTRA_FILE, METADATA_KEY, ExportMetadata, MetadataError, Preprocessing

__all__ = ["ExportedModel", "ExportedOutputs", "exported_format", "load_exported", "runtime_device"]

Runner = Callable[[Tensor], tuple[Tensor, ...]]

# An ONNX ModelProto is serialised field by field in number order and ir_version (field 1, a small varint) is
# always set, so the file's first bytes are its tag 0x08 and one varint byte; no text, pickle or zip starts so.
_ONNX_TAG = 0x08


def exported_format(path: str | Path) -> str | None:
    """``"onnx"``, ``"torchscript"`` or ``"exported-program"`` for a file ``fgvc export`` wrote; None otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if not zipfile.is_zipfile(path):
        return "onnx" if _starts_like_onnx(path) else None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if not any(name.endswith(f"/extra/{EXTRA_FILE}") for name in names):
        return None
    return "exported-program" if any(name.endswith("/archive_format") for name in names) else "torchscript"


def _starts_like_onnx(path: Path) -> bool:
    """Whether the file begins as an ONNX model does (an ``--out`` without the .onnx suffix)."""
    try:
        with path.open("rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == _ONNX_TAG and 0 < head[1] < 0x80


@dataclass(frozen=True)
class ExportedOutputs:
    logits: Tensor  # (N, C) float32, on the CPU
    object_boxes: Tensor | None = None  # (N, 4) int64 inclusive input pixels, where the model localises


@dataclass
class ExportedModel:
    """An exported file, loaded: its metadata and a runner. ``description`` names the runtime."""

    path: Path
    metadata: ExportMetadata
    runner: Runner
    description: str

    @property
    def format(self) -> str:
        return self.metadata.format

    @property
    def classes(self) -> ClassTable:
        return self.metadata.classes

    @property
    def preprocessing(self) -> Preprocessing:
        return self.metadata.preprocessing

    @property
    def temperature(self) -> float:
        """The run's temperature: calibrated probabilities are ``softmax(logits / temperature)``."""
        return self.metadata.temperature

    def __call__(self, images: Tensor) -> ExportedOutputs:
        """Normalised float images (N, 3, S, S); a fixed-batch file gets chunks padded to its batch."""
        fixed = self.metadata.batch
        chunks = [images] if fixed is None else list(images.split(fixed))
        logits, boxes = [], []
        for chunk in chunks:
            n = chunk.shape[0]
            if fixed is not None and n < fixed:
                chunk = torch.cat([chunk, chunk.new_zeros((fixed - n, *chunk.shape[1:]))])
            outs = self.runner(chunk.contiguous())
            logits.append(outs[0][:n].float().cpu())
            if len(outs) > 1:
                boxes.append(outs[1][:n].to(torch.int64).cpu())
        return ExportedOutputs(torch.cat(logits), torch.cat(boxes) if boxes else None)


def _onnx_runner(source: Path | bytes, device: torch.device) -> tuple[Runner, str, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("running an .onnx file needs onnxruntime: pip install 'fgvc[export]' "
                          "(or onnxruntime-gpu for CUDA)") from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ExportError("--device cuda: this onnxruntime has no CUDA provider; install onnxruntime-gpu "
                              "or pass --device cpu")
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no per-node placement chatter
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as eager PyTorch would use
    # ORT's threads otherwise spin for a while after each run, taking the cores from the decoding, the
    # HTTP work and the next batch's preparation that share the process (3x slower eager code after a run
    # on 2 cores)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(source if isinstance(source, bytes) else str(source), options,
                                   providers=providers)
    metadata = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if metadata is None:
        raise MetadataError(f"{source if isinstance(source, Path) else 'the ONNX model'} has no fgvc metadata "
                            f"(metadata_props['{METADATA_KEY}']): it was not written by `fgvc export`")
    name = session.get_inputs()[0].name

    def run(images: Tensor) -> tuple[Tensor, ...]:
        outs = session.run(None, {name: images.detach().cpu().numpy()})
        return tuple(torch.from_numpy(o) for o in outs)

    return run, metadata, f"ONNX Runtime {ort.__version__} ({session.get_providers()[0]})"


def _archive(source: Path | bytes) -> io.BytesIO | str:
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


def _torchscript_runner(source: Path | bytes, device: torch.device) -> tuple[Runner, str, str]:
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still supported
        module = torch.jit.load(_archive(source), map_location=device, _extra_files=extra)
    module.eval()

    def run(images: Tensor) -> tuple[Tensor, ...]:
        with torch.no_grad():
            return tuple(module(images.to(device)))

    return run, extra[EXTRA_FILE], f"TorchScript (torch {torch.__version__}, {device})"


def _exported_program_runner(source: Path | bytes, device: torch.device) -> tuple[Runner, str, str]:
    extra = {EXTRA_FILE: ""}
    program = torch.export.load(_archive(source), extra_files=extra)
    module = program.module()
    if device.type != "cpu":
        module = module.to(device)

    def run(images: Tensor) -> tuple[Tensor, ...]:
        with torch.no_grad():
            return tuple(module(images.to(device)))

    return run, extra[EXTRA_FILE], f"ExportedProgram (torch {torch.__version__}, {device})"


def runtime_device(fmt: str, preference: str | torch.device) -> torch.device:
    """``auto``: CUDA when PyTorch sees a GPU and (for ONNX) onnxruntime has its CUDA provider; else the CPU."""
    if str(preference) != "auto":
        try:
            return torch.device(preference)
        except RuntimeError:
            raise ConfigError(f"--device {preference!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return torch.device("cpu")
        return torch.device("cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu")
    return torch.device("cuda")


_RUNNERS = {"onnx": _onnx_runner, "torchscript": _torchscript_runner, "exported-program": _exported_program_runner}


def load_exported(source: str | Path | bytes, device: str | torch.device = "auto", fmt: str | None = None,
                  name: str | None = None) -> ExportedModel:
    """An exported file (or its bytes, with ``fmt``) ready to run on ``device`` (see :func:`runtime_device`)."""
    path = Path(name or "<in memory>") if isinstance(source, bytes) else Path(source)
    if fmt is None:
        fmt = exported_format(path)
        if fmt is None:
            if not path.exists():
                raise ExportError(f"{path}: no such file")
            raise ExportError(f"{path} is not a file written by `fgvc export` (an ONNX model, or a TorchScript/"
                              f"ExportedProgram archive holding {EXTRA_FILE})")
    device = runtime_device(fmt, device)
    try:
        runner, text, description = _RUNNERS[fmt](source if isinstance(source, bytes) else path, device)
    except (ExportError, MetadataError):
        raise
    except Exception as e:  # noqa: BLE001  each runtime has its own errors for a damaged file
        raise ExportError(f"{path}: cannot load the {fmt} file ({first_line(e)}); export the run again") from e
    metadata = ExportMetadata.from_json(text, str(path)) if text else None
    if metadata is None:
        raise MetadataError(f"{path} has no fgvc metadata ({EXTRA_FILE}): it was not written by `fgvc export`")
    return ExportedModel(path, metadata, runner, description)
