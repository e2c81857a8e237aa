"""Checkpoints: atomic writes, ``weights_only`` reads, retention, and transfer between datasets.

A checkpoint is a dict of tensors and plain Python values only, so ``torch.load(...,
weights_only=True)`` reads it and loading never executes code from the file. It carries the
ClassTable, the resolved config and everything needed to resume exactly (optimizer, scheduler,
scaler, epoch, RNG states).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..fileio import atomic_open

__all__ = [
    "CheckpointError",
    "TransferReport",
    "capture_rng",
    "restore_rng",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "prune_checkpoints",
    "transfer_weights",
    "FORMAT",
]

FORMAT = "fgvc-checkpoint-v1"
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged, or does not fit the model or data."""


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file beside it, fsync, rename."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways; the advice is the same
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(e).__name__}: {str(e)[:200]}. The file is damaged or "
            "not a checkpoint (e.g. copied while being written); use another one, such as last.pt or best.pt "
            "of the run, or an epoch_*.pt"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an fgvc checkpoint (no '{FORMAT}' marker)")
    return state


def resolve_checkpoint(path: str | os.PathLike, prefer: str = "best") -> Path:
    """A checkpoint file, or a run directory (its ``best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
        for name in order:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"run directory {path} holds no best.pt or last.pt; was training started there?")
    if not path.exists():
        raise CheckpointError(f"checkpoint or run directory {path} not found")
    return path


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
