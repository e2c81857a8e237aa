"""Serialising the wrapped model to each format, in memory: ONNX (dynamo exporter), TorchScript
(tracing), ExportedProgram (``torch.export``). Each returns the file's bytes with the metadata inside,
so the caller can load them back, verify, and only then write the file.

Known limits, handled here rather than discovered by users:

* ONNX uses opset 18: ``GridSample`` (crops by ``grid_sample``) needs opset 16 or later.
* TorchScript tracing turns tensor shapes into tensors; a model that computes Python numbers from a
  feature map's size (e.g. how many rows each strip gets) cannot be traced with a free batch size.
  With a fixed batch (``--batch N``) the model is first captured by ``torch.export`` — which
  specialises such numbers — and that graph is traced instead.
* ``onnx`` and ``onnxruntime`` are imported here, lazily: ``import fgvc`` never needs them.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..errors import FgvcError
from .metadata import EXTRA_FILE, METADATA_KEY

__all__ = ["FORMATS", "DEFAULT_FILE_NAMES", "ONNX_OPSET", "ExportError", "serialise", "example_input"]

FORMATS = ("onnx", "torchscript", "exported-program")
DEFAULT_FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "exported-program": "model.pt2"}
ONNX_OPSET = 18  # GridSample needs >= 16; 18 is what the dynamo exporter is tested with
MAX_BATCH = 4096  # upper bound of the dynamic batch dimension
MetadataText = Callable[[str | None], str]  # how the file was made (None: the plain way) -> metadata JSON


class ExportError(FgvcError):
    """A model that a format cannot export, a runtime that is missing, or an export that does not
    reproduce the model."""


def first_line(e: BaseException, limit: int = 240) -> str:
    """The first non-empty line of an exception's message, for one-line errors."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0] if lines else type(e).__name__
    return f"{type(e).__name__}: {text[:limit]}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters print progress and warn about their own deprecations: keep the command's output ours."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def example_input(batch: int, size: int) -> Tensor:
    """A fixed pseudo-random normalised batch to trace with (no real image ends up in the file)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, size, size, generator=generator)


def _batch_dim() -> dict[str, dict[int, torch.export.Dim]]:
    return {"images": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}}


def _onnx(wrapper: nn.Module, example: Tensor, dynamic: bool, outputs: tuple[str, ...], metadata: str) -> bytes:
    try:
        import onnx
    except ImportError:
        raise ExportError("--format onnx needs the onnx, onnxscript and onnxruntime packages: "
                          "pip install 'fgvc[export]'") from None
    with _quiet():
        program = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=["images"],
                                    output_names=list(outputs), opset_version=ONNX_OPSET,
                                    dynamic_shapes=_batch_dim() if dynamic else None, verbose=False,
                                    optimize=True)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {METADATA_KEY: metadata})
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _torchscript(wrapper: nn.Module, example: Tensor, dynamic: bool,
                 metadata: MetadataText) -> tuple[bytes, str | None]:
    """Traced directly when possible; else, for a fixed batch, through ``torch.export``'s graph (the
    note saying so goes into the metadata)."""
    note = None
    with _quiet():
        try:
            traced = torch.jit.trace(wrapper, example, check_trace=False, _store_inputs=False)
        except Exception as e:  # noqa: BLE001  the tracer raises whatever the model's Python raises
            if dynamic:
                raise ExportError(f"torchscript cannot trace this model with a free batch size ({first_line(e)}); "
                                  "pass --batch N for a fixed batch, or use --format onnx or exported-program") from e
            graph = torch.export.export(wrapper, (example,)).module()
            traced = torch.jit.trace(graph, example, check_trace=False, _store_inputs=False)
            note = (f"traced through torch.export at a fixed batch of {example.shape[0]} "
                    f"(direct tracing failed: {first_line(e, 120)})")
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: metadata(note)})
    return buffer.getvalue(), note


def _exported_program(wrapper: nn.Module, example: Tensor, dynamic: bool, metadata: str) -> bytes:
    with _quiet():
        program = torch.export.export(wrapper, (example,), dynamic_shapes=_batch_dim() if dynamic else None)
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={EXTRA_FILE: metadata})
    return buffer.getvalue()


@torch.no_grad()
def serialise(fmt: str, wrapper: nn.Module, example: Tensor, dynamic: bool, outputs: tuple[str, ...],
              metadata: MetadataText, what: str) -> tuple[bytes, str | None]:
    """The file's bytes in format ``fmt`` and a note on how it was made (None: the plain way).
    ``metadata(note)`` gives the JSON stored inside; ``what`` names the model in errors (``mmal/resnet50``).

    The model runs once eagerly first: models memoise size-dependent tensors (neighbour matrices, strip
    geometry) on first use, and a cache first filled while tracing would keep traced tensors that break
    every later eager call in this process."""
    wrapper(example)
    try:
        if fmt == "onnx":
            return _onnx(wrapper, example, dynamic, outputs, metadata(None)), None
        if fmt == "torchscript":
            return _torchscript(wrapper, example, dynamic, metadata)
        if fmt == "exported-program":
            return _exported_program(wrapper, example, dynamic, metadata(None)), None
    except ExportError as e:
        raise ExportError(f"{what}: {e}") from e
    except Exception as e:  # noqa: BLE001  exporters raise many types; each is "this format cannot export this"
        raise ExportError(f"{fmt} cannot export {what} ({first_line(e)}); try another --format "
                          f"({', '.join(f for f in FORMATS if f != fmt)}), or --debug for the exporter's traceback"
                          ) from e
    raise ExportError(f"--format {fmt!r}: unknown format; use one of {', '.join(FORMATS)}")
