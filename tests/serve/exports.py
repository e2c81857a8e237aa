"""Exported files of the tiny seeing runs (tests/seeing_fixtures.py), written once per test session
through the command line and shared by the export and serve tests."""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from pathlib import Path

from fgvc.cli import main
from tests.seeing_fixtures import build_run

SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}


@dataclass(frozen=True)
class Exported:
    run: Path
    path: Path
    code: int
    out: str
    err: str


@functools.cache
def export(base: Path, model: str, fmt: str, *extra: str) -> Exported:
    """``fgvc export`` of the seeing run of ``model`` to ``fmt`` (exit code and printed text kept)."""
    run = build_run(base, model)
    name = "_".join([model, *(e.strip("-") for e in extra)]) + SUFFIX[fmt]
    path = base / "exports" / name
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["export", str(run), "--format", fmt, "--out", str(path), *extra])
    return Exported(run, path, code, out.getvalue(), err.getvalue())
