"""`fgvc explain` and `fgvc report`: pictures of what a model looks at, and a run's HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .argtypes import add_calibration_flag, positive_int


def write_run_report(run_dir: Path, dist, metrics_path: Path | None = None, device: str = "auto",
                     progress: bool = True, calibrate: bool = True, out: Path | None = None) -> None:
    """report.html at the end of train/evaluate: the run's own (``RUN/report.html``), which a multi-process
    (torchrun) job leaves to `fgvc report`, or ``out`` (an ensemble's, beside its metrics.json; written by rank 0).
    The report is a by-product: when it fails, the run or evaluation itself still succeeded, so it is a warning."""
    if not dist.is_main:
        return
    if dist.enabled and out is None:
        print(f"report: run `fgvc report {run_dir}` once this multi-process job has finished")
        return
    from ..viz.report import write_report

    try:
        path = write_report(run_dir, out, metrics_path=metrics_path, device=device, progress=progress,
                            calibrate=calibrate)
    except Exception as e:  # noqa: BLE001  the report is a by-product: the run itself succeeded
        retry = f"; retry with `fgvc report {run_dir}`" if out is None else ""  # an ensemble's has no command
        print(f"fgvc: warning: report not written ({type(e).__name__}: {e}){retry}", file=sys.stderr)
        return
    print(f"report written to {path}")


def _explain(args: argparse.Namespace) -> int:
    from ..viz.explain import explain

    written = explain(args.checkpoint, args.images, args.out, device=args.device, data_root=args.data,
                      batch_size=args.batch_size, calibrate=not args.no_calibration)
    for path in written:
        print(path)
    print(f"wrote {len(written)} picture(s) to {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..viz.report import write_report

    path = write_report(args.run_dir, args.out, device=args.device, progress=not args.no_progress,
                        calibrate=not args.no_calibration)
    print(f"report written to {path}")
    return 0


def add_explain_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc explain`."""
    expl = commands.add_parser("explain", help="pictures of what a model looks at: boxes, windows, strips, top-5")
    expl.add_argument("checkpoint", type=Path, help="checkpoint file or run directory")
    expl.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files or folders (recursive)")
    expl.add_argument("--out", type=Path, default=Path("explain"), help="folder for the PNGs (default ./explain)")
    expl.add_argument("--data", type=Path, default=None,
                      help="dataset the images come from, for true class and box (default: the run's, if inside)")
    expl.add_argument("--batch-size", type=positive_int, default=8)
    expl.add_argument("--device", default="auto")
    add_calibration_flag(expl)
    expl.set_defaults(func=_explain)


def add_report_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc report`."""
    rep = commands.add_parser("report", help="write RUN_DIR/report.html: curves, metrics, confusions, examples")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--out", type=Path, default=None, help="HTML file (default RUN_DIR/report.html)")
    rep.add_argument("--device", default="auto")
    rep.add_argument("--no-progress", action="store_true")
    add_calibration_flag(rep)
    rep.set_defaults(func=_report)
