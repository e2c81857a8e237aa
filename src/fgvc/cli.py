"""The ``fgvc`` command line: parse arguments, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


class UserError(Exception):
    """An error whose message is the whole story: printed without a traceback."""


def _data_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset

    options = {}
    if args.aircraft_level:
        options["level"] = args.aircraft_level
    report = check_dataset(args.root, args.format, min_side=args.min_side, workers=args.workers, **options)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.to_text())
    return 0 if report.ok else 1


def _data_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_dataset

    summary = generate_dataset(args.out, layout=args.layout, num_classes=args.classes, per_class=args.per_class,
                               size=args.size, seed=args.seed, test_fraction=args.test_fraction)
    print(f"wrote {summary.num_classes} classes, {summary.train_images} train and {summary.test_images} test "
          f"images ({summary.layout} layout) to {summary.root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgvc", description="Fine-grained visual classification toolkit.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="inspect or generate datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    check = data_commands.add_parser("check", help="pre-flight report: layout, classes, unreadable images")
    check.add_argument("root", type=Path)
    check.add_argument("--format", default=None,
                       help="competition, imagefolder, cub, aircraft, cars (default: detect)")
    check.add_argument("--min-side", type=int, default=32, help="warn about images with a smaller side (px)")
    check.add_argument("--workers", type=int, default=4, help="decoding threads")
    check.add_argument("--aircraft-level", choices=["variant", "family", "manufacturer"], default=None)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=_data_check)

    synth = data_commands.add_parser("synth", help="generate the embedded synthetic fine-grained dataset")
    synth.add_argument("out", type=Path)
    synth.add_argument("--layout", default="competition", choices=["competition", "cub", "imagefolder"])
    synth.add_argument("--classes", type=int, default=10)
    synth.add_argument("--per-class", type=int, default=40)
    synth.add_argument("--size", type=int, default=224)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--test-fraction", type=float, default=0.2)
    synth.set_defaults(func=_data_synth)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from .data.classes import ClassTableError
    from .data.dataset import LabelError
    from .data.decode import ImageDecodeError
    from .data.index import DatasetLayoutError

    return (UserError, DatasetLayoutError, ClassTableError, LabelError, ImageDecodeError, FileExistsError,
            FileNotFoundError, ValueError, KeyError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("fgvc: interrupted", file=sys.stderr)
        return 130
    except _known_errors() as e:
        if args.debug:
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"fgvc: error: {message}", file=sys.stderr)
        return 2
