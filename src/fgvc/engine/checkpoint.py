"""Checkpoints: atomic writes, ``weights_only`` reads, retention, and transfer between datasets.

A checkpoint is a dict of tensors and plain Python values only, so ``torch.load(...,
weights_only=True)`` reads it and loading never executes code from the file. It carries the
ClassTable, the resolved config and everything needed to resume exactly (optimizer, scheduler,
scaler, epoch, RNG states).
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, OutputError
from ..fileio import atomic_open

__all__ = [
    "CheckpointError",
    "TransferReport",
    "capture_rng",
    "restore_rng",
    "load_checkpoint",
    "save_checkpoint",
    "prune_checkpoints",
    "transfer_weights",
    "FORMAT",
]

FORMAT = "fgvc-checkpoint-v1"
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


# Beyond the tensors' bytes, a checkpoint holds pickled metadata (config, class table, metrics) and
# 64-byte-aligned zip records: a few percent plus a little. The estimate only has to be on the safe
# side of "the disk is clearly too full"; a write that still runs out of space fails cleanly anyway.
_SPACE_MARGIN_FRACTION = 0.05
_SPACE_MARGIN_BYTES = 16 * 2**20


def _tensor_bytes(value: Any) -> int:
    """Sum of ``nbytes`` of the tensors in nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, Mapping):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _gigabytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _check_free_space(path: Path, state: Mapping[str, Any]) -> None:
    """Refuse before writing when the disk is clearly too small, so the old checkpoint stays whole
    and the message says how much is needed (a write that fails midway can only say "disk full")."""
    needed = _tensor_bytes(state)
    needed += int(needed * _SPACE_MARGIN_FRACTION) + _SPACE_MARGIN_BYTES
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # not created yet: ask its disk
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # no answer (e.g. some network file systems): the write itself will tell
    if needed > free:
        error = OutputError(
            f"cannot write checkpoint {path}: it needs about {_gigabytes(needed)} and only {_gigabytes(free)} "
            f"are free on that disk; free some space there or write to another disk (--out)"
        )
        error.errno = errno.ENOSPC
        raise error


class _WriteRecorder:
    """A write-only file wrapper that keeps the OSError of a failed ``write``.

    ``torch.save`` into a file object swallows that error and raises ``RuntimeError('unexpected
    pos ...')`` instead, which would hide a full disk behind an internal-looking error."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file beside it, fsync, rename.

    Raises :class:`~fgvc.errors.OutputError` (the previous file at ``path`` untouched) when the disk
    has too little free space for it, or when writing fails (no permission, disk full)."""
    path = Path(path)
    _check_free_space(path, state)
    with atomic_open(path, "wb") as f:
        sink = _WriteRecorder(f)
        try:
            torch.save({"format": FORMAT, **state}, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None  # atomic_open turns it into an OutputError naming the file
            raise


# The weights-only unpickler names the Python object it refused: "GLOBAL builtins.exec was not an
# allowed global" or "unsupported GLOBAL os.system whose module os is blocked".
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) (?:was not an allowed global|whose module)")


def _torch_messages(e: BaseException) -> str:
    """The message of ``e`` and of the unpickler error that torch re-raised it from (``from None``
    keeps it in ``__context__``): the latter has the unpickler's own words without torch's advice."""
    inner = e.__context__
    return str(e) if inner is None else f"{inner}\n{e}"


def _first_sentence(text: str, limit: int = 200) -> str:
    """The cause without torch's advice that follows it (re-run with weights_only=False, ...)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line.partition(". ")[0].rstrip(".")[:limit]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: tensors and plain values only, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    _require_torch_file(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused = sorted(set(_REFUSED_GLOBAL.findall(_torch_messages(e))))
        if refused:
            raise CheckpointError(
                f"{path} holds Python objects ({', '.join(refused)}) that fgvc will not unpickle: loading them "
                "could run code from the file, so fgvc reads only tensors and plain values, on purpose. Use a "
                "checkpoint written by fgvc, or, where you trust the file, convert it into a plain state dict "
                "of tensors (load it there and torch.save(model.state_dict(), ...))"
            ) from None
        raise _damaged(path, e) from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways; the advice is the same
        raise _damaged(path, e) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an fgvc checkpoint (no '{FORMAT}' marker)")
    return state


# what torch.save writes: a zip archive, or (the legacy format) a pickle; a checkpoint cut short still starts so
_TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")


def _require_torch_file(path: Path) -> None:
    """A file that no torch.save wrote (a CSV, an image, a text file) is named as what it is not, with what
    fgvc reads instead: not "damaged", which sends the user looking for a better copy of the wrong file."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if head and not head.startswith(_TORCH_FILE_STARTS):
        raise CheckpointError(
            f"{path} is neither an fgvc checkpoint nor a file written by `fgvc export`; pass a run folder, one of "
            "its checkpoints (best.pt, last.pt, epoch_*.pt) or an exported ONNX, TorchScript or ExportedProgram file"
        )


def _damaged(path: Path, e: BaseException) -> CheckpointError:
    inner = e.__context__ if isinstance(e, pickle.UnpicklingError) and e.__context__ is not None else e
    reason = _first_sentence(str(inner))
    return CheckpointError(
        f"cannot read checkpoint {path}: {type(inner).__name__}{': ' + reason if reason else ''}. The file is damaged "
        "or not a checkpoint (e.g. copied while being written); use another one, such as last.pt or best.pt "
        "of the run, or an epoch_*.pt"
    )


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` ``epoch_N.pt`` files; returns what was deleted."""
    found = sorted((int(m.group(1)), p) for p in run_dir.glob("epoch_*.pt") if (m := _EPOCH_FILE.match(p.name)))
    doomed = [p for _, p in found[: max(len(found) - keep, 0)]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


# -- RNG ----------------------------------------------------------------------------------------

def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch generator states as tensors and plain values (weights_only-safe)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- transfer -----------------------------------------------------------------------------------

@dataclass
class TransferReport:
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def describe(self) -> str:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" ... (+{len(keys) - 6})" if len(keys) > 6 else "")

        return (f"loaded {len(self.loaded)} tensors; re-initialised {len(self.reinitialised)}"
                + (f" ({head(self.reinitialised)})" if self.reinitialised else "")
                + f"; ignored {len(self.ignored)}" + (f" ({head(self.ignored)})" if self.ignored else ""))


def transfer_weights(model: nn.Module, source: Mapping[str, torch.Tensor], head_prefixes: Iterable[str],
                     reinit_heads: bool, origin: str = "checkpoint") -> TransferReport:
    """Load every matching tensor of ``source`` into ``model``; keep the model's own (fresh) head
    tensors when ``reinit_heads``. A missing or differently shaped tensor outside the heads is an
    error, never a silent ``strict=False`` (REFERENCE T5, T6)."""
    heads = tuple(head_prefixes)
    own = model.state_dict()
    report = TransferReport()
    merged = dict(own)
    problems = []
    for key, target in own.items():
        is_head = key.startswith(heads)
        if is_head and reinit_heads:
            report.reinitialised.append(key)
        elif key not in source:
            problems.append(f"missing {key}")
        elif source[key].shape != target.shape:
            problems.append(f"{key}: {tuple(source[key].shape)} in the {origin}, {tuple(target.shape)} in the model")
        else:
            merged[key] = source[key]
            report.loaded.append(key)
    report.ignored = sorted(set(source) - set(own))
    if problems:
        listed = "\n  ".join(problems[:10]) + (f"\n  ... (+{len(problems) - 10} more)" if len(problems) > 10 else "")
        raise CheckpointError(
            f"the {origin} does not fit this model outside the classifier heads:\n  {listed}\n"
            "Use a checkpoint of the same model and backbone."
        )
    model.load_state_dict(merged, strict=True)
    return report
