"""``fgvc export``: a run's inference model to one self-describing file, verified before it is written.

Steps: open the run on the CPU; take :meth:`Run.trained_model` (BatchNorm folded, channels_last —
the model ``fgvc predict`` runs) behind :class:`PlainOutputs`; compute its outputs on real images;
serialise; load the bytes back with the format's runtime; compare (:mod:`.verify`); write the file
atomically only if they agree. A failed export leaves no file behind.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..data.transforms import recipe
from ..engine.run import Run
from ..errors import ConfigError, OutputError
from ..fileio import atomic_open
from .formats import DEFAULT_FILE_NAMES, FORMATS, example_input, serialise
from .metadata import ExportMetadata, Preprocessing
from .runtime import ExportedOutputs, load_exported
from .verify import Verification, VerificationError, verification_images, verify
from .wrapper import PlainOutputs, output_names

__all__ = ["ExportResult", "export_run", "preprocessing_of", "default_output"]

EXPLAIN_NOTE = ("explain-only outputs (part windows, stage maps, per-branch logits) are not exported: "
                "`fgvc explain` and the picture of `fgvc serve` need the run")


def preprocessing_of(run: Run, input_size: int | None = None) -> Preprocessing:
    """The run's preprocessing; at another ``input_size``, its recipe at that size with its statistics."""
    p = run.preprocessing
    if input_size is None or input_size == p.input_size:
        return p
    return recipe(p.recipe).at(input_size, p.mean, p.std)


def default_output(run: Run, fmt: str) -> Path:
    assert run.checkpoint_path is not None
    return run.checkpoint_path.parent / DEFAULT_FILE_NAMES[fmt]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    metadata: ExportMetadata
    verification: Verification
    size_bytes: int
    runtime: str

    def to_text(self) -> str:
        m, p = self.metadata, self.metadata.preprocessing
        batch = "batch" if m.batch is None else str(m.batch)
        outputs = [f"logits ({batch}, {len(m.classes)}) float32"]
        if m.localises:
            outputs.append(f"object_boxes ({batch}, 4) int64, inclusive input pixels (x0, y0, x1, y1)")
        lines = [
            f"exported {m.model}/{m.backbone} from {m.source} to {self.path} "
            f"({m.format}, {self.size_bytes / 2**20:.1f} MiB, batch {'dynamic' if m.batch is None else m.batch})",
            f"input: images float32 ({batch}, 3, {p.input_size}, {p.input_size}), recipe {p.recipe!r}: "
            f"resize {_hw(p.resize)}{'' if p.crop is None else f', centre crop {_hw(p.crop)}'} ({p.interpolation}), "
            f"/255, mean {_fmt(p.mean)}, std {_fmt(p.std)}, RGB (all in the metadata); "
            f"classes: {len(m.classes)} (IDs and names inside the file)",
            f"outputs: {'; '.join(outputs)}",
            f"probabilities: softmax(logits / {m.temperature:.6g}) (the run's temperature, in the metadata; "
            "fgvc predict and fgvc serve apply it)",
            self.verification.to_text(),
        ]
        lines += [f"note: {n}" for n in m.notes]
        return "\n".join(lines)


def _hw(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; pass a file path, e.g. {out / 'model.onnx'}")


def _eager_outputs(wrapper: PlainOutputs, x: torch.Tensor, unsuitable: str) -> ExportedOutputs:
    """The reference the export is compared with; a size the model refuses is a one-line error."""
    try:
        with torch.no_grad():
            out = wrapper(x)
    except ConfigError as e:
        raise ConfigError(f"{unsuitable}: {str(e).removeprefix('model.input_size: ')}") from None
    return ExportedOutputs(out[0].float(), out[1] if wrapper.localises else None)


def _metadata(run: Run, fmt: str, preprocessing: Preprocessing, batch: int | None, how: str | None) -> ExportMetadata:
    """What goes inside the file; ``how``: a note on how it was made (None: the plain way)."""
    assert run.classes is not None
    m = run.config.model
    notes = ([how] if how else []) + [EXPLAIN_NOTE]
    if fmt == "torchscript":
        notes.append("TorchScript is deprecated in PyTorch; prefer --format exported-program or onnx for new uses")
    return ExportMetadata(format=fmt, model=m.name, backbone=m.backbone, classes=run.classes,
                          preprocessing=preprocessing, outputs=output_names(run.spec.localises), batch=batch,
                          source=str(run.checkpoint_path), notes=tuple(notes),
                          versions={"fgvc": __version__, "torch": torch.__version__,
                                    "python": platform.python_version()}, temperature=run.temperature)


def export_run(checkpoint: str | Path, fmt: str = "onnx", out: str | Path | None = None, batch: int | None = None,
               input_size: int | None = None, data_root: str | Path | None = None, images: int = 8) -> ExportResult:
    """Export the run (checkpoint file or run folder) to ``fmt``; ``batch`` None means any batch size.
    Raises :class:`VerificationError` (with the comparison) when the export does not reproduce the model."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: unknown format; use one of {', '.join(FORMATS)}")
    run = Run.open(checkpoint, device="cpu")
    out_path = Path(out) if out is not None else default_output(run, fmt)
    _check_out(out_path)
    m = run.config.model
    what = f"{m.name}/{m.backbone}"
    preprocessing = preprocessing_of(run, input_size)
    localises = run.spec.localises
    chosen = verification_images(run, data_root, images)
    x = chosen.tensor(preprocessing)

    wrapper = PlainOutputs(run.trained_model(), localises).eval()
    eager = _eager_outputs(wrapper, x, f"--input-size {preprocessing.input_size} does not suit {what}")

    made: list[ExportMetadata] = []

    def metadata_text(how: str | None) -> str:
        made.append(_metadata(run, fmt, preprocessing, batch, how))
        return made[-1].to_json()

    example = example_input(batch or 2, preprocessing.input_size)
    data, _ = serialise(fmt, wrapper, example, batch is None, output_names(localises), metadata_text, what)
    metadata = made[-1]

    exported = load_exported(data, "cpu", fmt=fmt, name=str(out_path))
    verification = verify(exported, chosen, x, eager)
    if not verification.ok:
        raise VerificationError(f"the {fmt} export of {what} does not reproduce the model "
                                f"({verification.summary()}); nothing written to {out_path}", verification)
    with atomic_open(out_path, "wb") as f:
        f.write(data)
    return ExportResult(out_path, metadata, verification, len(data), exported.description)
