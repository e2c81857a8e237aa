"""The arguments of a tiny `fgvc train` run, as every test that trains through the command line spells them.

The demo preset (ResNet-18 from scratch) at 64 px on the CPU, without DataLoader workers or a progress bar:
seconds per epoch on synthetic data. A test adds only what it is about.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

TINY_SETTINGS = {"model.input_size": 64, "data.num_workers": 0, "train.device": "cpu"}
"""The `--set` keys every tiny run shares."""


def tiny_train_args(data: Path, out: Path, *extra: str, report: bool = False,
                    sets: Mapping[str, object] | None = None) -> list[str]:
    """``fgvc train`` arguments for a tiny run of ``data`` into ``out``: :data:`TINY_SETTINGS` updated by ``sets``,
    then ``extra`` (e.g. ``--init-from``); ``report``: write report.html at the end (off by default: it
    evaluates once more)."""
    settings = {**TINY_SETTINGS, **(sets or {})}
    return ["train", "--config", "demo", "--data", str(data), "--out", str(out), "--no-progress",
            *(() if report else ("--no-report",)), *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")],
            *extra]


def tiny_synth_args(root: Path, per_class: int = 4) -> list[str]:
    """``fgvc data synth`` arguments for the data of a tiny run: 3 classes of 64 px images, ``per_class`` each."""
    return ["data", "synth", str(root), "--classes", "3", "--per-class", str(per_class), "--size", "64"]
