"""Experiment tracking: per-epoch metrics to CSV (always), Weights & Biases and TensorBoard (optional).

The trainer talks to one :class:`Tracker` made by :func:`create_tracker`; it fans each call out to
the active backends. A tracker is bookkeeping, so it must never end a training run: a backend that
cannot start, or fails later, costs one :class:`TrackerWarning` (what failed and how to fix it) and
is switched off while the others go on.

Files written under ``run_dir``::

    run_dir/
        metrics.csv             one row per log(step=...) call; a column per metric key, blank where absent
        wandb_run_id.txt        W&B run id, so a resumed training continues the same W&B run
        wandb/                  W&B files (offline-run-*/ by default: nothing leaves the machine)
        tensorboard/            TensorBoard event files
"""

from __future__ import annotations

import contextlib
import csv
import json
import secrets
import string
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..fileio import atomic_open, atomic_write_text

__all__ = [
    "Tracker",
    "TrackerWarning",
    "CsvTracker",
    "WandbTracker",
    "TensorBoardTracker",
    "CompositeTracker",
    "create_tracker",
    "read_metrics_csv",
    "METRICS_CSV",
    "WANDB_RUN_ID_FILE",
    "TENSORBOARD_DIR",
]

METRICS_CSV = "metrics.csv"
WANDB_RUN_ID_FILE = "wandb_run_id.txt"
TENSORBOARD_DIR = "tensorboard"


class TrackerWarning(UserWarning):
    """A tracking backend could not start or failed; training went on without it."""


class Tracker(Protocol):
    """What the training loop calls. Metric values are plain floats; ``step`` is the epoch (or any
    increasing integer)."""

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class CsvTracker:
    """``run_dir/metrics.csv``: needs nothing installed and is what the report code reads.

    The whole file is rewritten atomically on every call: a kill mid-write leaves the previous
    file, and a new metric key simply widens the header. Rows are per epoch, so the file stays small.
    When the file already exists (a resumed run) the first ``log`` drops the rows at or after its
    step, so the epochs being repeated are not recorded twice.
    """

    name: ClassVar[str] = "csv"
    fix: ClassVar[str] = "Check that the run folder is writable and has free space."

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / METRICS_CSV
        self._columns: list[str] = ["step"]
        self._rows: list[dict[str, str]] = []  # cells kept as written, so rewrites never round values
        self._resuming = self.path.exists()
        if self._resuming:
            self._columns, self._rows = _read_csv_cells(self.path)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._resuming:
            self._rows = [row for row in self._rows if not _step_at_or_after(row["step"], step)]
            self._resuming = False
        self._columns += [key for key in metrics if key not in self._columns]
        self._rows.append({"step": str(step), **{key: repr(value) for key, value in metrics.items()}})
        with atomic_open(self.path) as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(self._rows)

    def close(self) -> None:
        pass  # every call already left a complete file


class WandbTracker:
    """Weights & Biases, offline unless the user asks for ``mode="online"``.

    The run id is kept in ``run_dir/wandb_run_id.txt`` and passed with ``resume="allow"``, so
    restarting a training from its run folder continues the same W&B run instead of starting a new one.
    """

    name: ClassVar[str] = "wandb"
    fix: ClassVar[str] = ("Install it with `pip install 'fgvc[wandb]'`; for mode='online' also run `wandb login` "
                          "(offline mode needs no account).")

    def __init__(self, run_dir: Path, config: Mapping[str, Any], *, mode: str = "offline", project: str = "fgvc",
                 run_name: str | None = None) -> None:
        import wandb

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file = run_dir / WANDB_RUN_ID_FILE
        run_id = (id_file.read_text(encoding="utf-8").strip() if id_file.exists() else "") or _new_wandb_run_id()
        self._run = wandb.init(project=project, name=run_name, config=_plain(config), dir=str(run_dir), mode=mode,
                               id=run_id, resume="allow")
        atomic_write_text(id_file, f"{self._run.id}\n")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._run.log(dict(metrics), step=step)

    def close(self) -> None:
        """Finish the run and shut W&B's service down: since wandb 0.2x ``finish()`` returns before the
        service has flushed the offline ``.wandb`` log, which is complete only once the service has stopped."""
        import wandb

        self._run.finish()
        wandb.teardown()


class TensorBoardTracker:
    """TensorBoard scalars under ``run_dir/tensorboard``, one tag per metric key.

    The writer is opened at the first ``log`` so that, on a resumed run, events at or after that
    step from the earlier attempt are purged (``purge_step``) rather than drawn twice.
    """

    name: ClassVar[str] = "tensorboard"
    fix: ClassVar[str] = "Install it with `pip install 'fgvc[tensorboard]'`."

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # raises ImportError without the tensorboard package

        self._make_writer = SummaryWriter
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self._resuming = self.log_dir.exists()
        self._config_text = "\n".join("    " + line for line in json.dumps(_plain(config), indent=1).splitlines())
        self._writer: Any = None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        writer = self._open(purge_step=step if self._resuming else None)
        for key, value in metrics.items():
            writer.add_scalar(key, value, global_step=step)
        writer.flush()  # the default is every 120 s; a killed run should keep its last epochs

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _open(self, purge_step: int | None) -> Any:
        if self._writer is None:
            self._writer = self._make_writer(log_dir=str(self.log_dir), purge_step=purge_step)
            self._writer.add_text("config", self._config_text, global_step=purge_step or 0)
        return self._writer


class CompositeTracker:
    """Fans calls out to backends; a backend that raises is warned about once and dropped.

    With no backends (``enabled=False``, e.g. on non-zero DDP ranks) every call does nothing.
    Metric values are converted to ``float`` once here (tensors, numpy scalars); ``None`` values are
    left out of that call, and anything else that is not a number raises ``TypeError``, since that
    is a bug in the caller rather than a tracker failure.
    """

    def __init__(self, backends: list[Any]) -> None:
        self._backends = list(backends)

    @property
    def names(self) -> tuple[str, ...]:
        """Active backends, e.g. ``("csv", "wandb")``; a failing backend's warning names those still on."""
        return tuple(backend.name for backend in self._backends)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        values = _as_floats(metrics)
        self._fan_out(f"log(step={step})", lambda backend: backend.log(values, int(step)))

    def close(self) -> None:
        self._fan_out("close()", lambda backend: backend.close())
        self._backends = []

    def __enter__(self) -> CompositeTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fan_out(self, call: str, apply: Callable[[Any], None]) -> None:
        for backend in list(self._backends):
            try:
                apply(backend)
            except Exception as err:
                self._backends.remove(backend)
                others = ", ".join(self.names) or "none"
                _warn(f"{backend.name} tracking failed in {call} with {type(err).__name__}: {err}. It is off for the "
                      f"rest of this run (still on: {others}). {backend.fix}", stacklevel=3)
                if call != "close()":
                    with contextlib.suppress(Exception):  # already reported; a broken backend may not close cleanly
                        backend.close()


def create_tracker(run_dir: Path, config: Mapping[str, Any], *, wandb: bool = False, wandb_mode: str = "offline",
                   project: str = "fgvc", run_name: str | None = None, tensorboard: bool = False,
                   enabled: bool = True) -> CompositeTracker:
    """The tracker for one training run: CSV always, plus W&B and/or TensorBoard when asked for.

    ``enabled=False`` (non-zero DDP ranks) gives a tracker that writes nothing. A backend that
    cannot start costs one :class:`TrackerWarning` and the run goes on without it.
    """
    if not enabled:
        return CompositeTracker([])
    run_dir = Path(run_dir)
    starters: list[tuple[type, Callable[[], Any]]] = [(CsvTracker, lambda: CsvTracker(run_dir))]
    if wandb:
        starters.append((WandbTracker, lambda: WandbTracker(run_dir, config, mode=wandb_mode, project=project,
                                                            run_name=run_name)))
    if tensorboard:
        starters.append((TensorBoardTracker, lambda: TensorBoardTracker(run_dir, config)))
    backends = []
    for kind, start in starters:
        try:
            backends.append(start())
        except Exception as err:
            _warn(f"{kind.name} tracking is off: it could not start ({type(err).__name__}: {err}). {kind.fix} "
                  f"Training goes on without it.", stacklevel=2)
    return CompositeTracker(backends)


def read_metrics_csv(path: str | Path) -> list[dict[str, float | None]]:
    """Rows of a ``metrics.csv`` as floats (``step`` included); a blank cell, a metric that row did
    not log, reads as ``None``."""
    columns, rows = _read_csv_cells(Path(path))
    return [{key: float(row[key]) if row[key] else None for key in columns} for row in rows]


def _read_csv_cells(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        if "step" not in fields:
            raise ValueError(f"{path}: header {fields} has no 'step' column; expected a metrics.csv written by "
                             f"fgvc ('step,<metric>,...'). Move the file away or use a new run folder.")
        columns = ["step", *(key for key in fields if key != "step")]
        return columns, [{key: row.get(key) or "" for key in columns} for row in reader]


def _step_at_or_after(cell: str, step: int) -> bool:
    try:
        return float(cell) >= step
    except ValueError:
        return False


def _as_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    values = {}
    for key, value in metrics.items():
        if key == "step":
            raise ValueError("'step' is the metrics.csv step column; pass it as log(..., step=) and give the "
                             "metric another name")
        if value is None:
            continue
        try:
            values[str(key)] = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"metric {key!r} = {value!r} is not a number; log floats (e.g. loss.item())") from None
    return values


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of the config (paths, enums -> str): W&B and TensorBoard reject other objects."""
    return json.loads(json.dumps(dict(config), default=str))


def _new_wandb_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits  # W&B's own id alphabet
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _warn(message: str, stacklevel: int) -> None:
    """``stacklevel`` points the warning at the trainer's line, not at this module."""
    warnings.warn(message, TrackerWarning, stacklevel=stacklevel + 1)
