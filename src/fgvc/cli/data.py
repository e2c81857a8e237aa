"""`fgvc data check` and `fgvc data synth`: a dataset's pre-flight report and the synthetic set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError, FgvcError
from .argtypes import non_negative_int, positive_int

DATA_FORMATS = ("competition", "imagefolder", "cub", "aircraft", "cars", "imagelist")
"""The formats `fgvc data check --format` names in its help (the registry itself loads 0.15 s of readers)."""



def _data_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset

    options = dict(_options(args.option or []))
    if args.aircraft_level:
        options["level"] = args.aircraft_level
    try:
        report = check_dataset(args.root, args.format, min_side=args.min_side, workers=args.workers, **options)
    except FgvcError as e:  # nothing to report on (no such folder, a bad option): exit 2, as JSON if asked
        if not args.json:
            raise
        print(json.dumps({"root": str(args.root), "usable": False, "error": str(e)}, indent=1))
        return 2
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.to_text())
    return 0 if report.ok else 1


def _data_synth(args: argparse.Namespace) -> int:
    from ..data.synthetic import generate_dataset

    summary = generate_dataset(args.out, layout=args.layout, num_classes=args.classes, per_class=args.per_class,
                               size=args.size, seed=args.seed, test_fraction=args.test_fraction)
    print(f"wrote {summary.num_classes} classes, {summary.train_images} train and {summary.test_images} test "
          f"images ({summary.layout} layout) to {summary.root}")
    return 0



def _options(items: list[str]) -> list[tuple[str, object]]:
    """``key=value`` pairs for a format reader; values parsed as YAML scalars."""
    import yaml

    pairs = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r} should look like key=value (e.g. level=family)")
        pairs.append((key.strip(), yaml.safe_load(raw) if raw.strip() else None))
    return pairs


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    """`fgvc data check|synth`."""
    data = commands.add_parser("data", help="inspect or generate datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)

    check_help = ("pre-flight report: layout, classes, unreadable images; exit 0 usable, 1 problems found, "
                  "2 nothing to check (e.g. no such folder)")
    check = data_commands.add_parser("check", help=check_help, description=check_help)
    check.add_argument("root", type=Path, help="the dataset folder")
    check.add_argument("--format", default=None,
                       help=f"{', '.join(DATA_FORMATS)} (default: detect)")
    check.add_argument("--min-side", type=non_negative_int, default=32,
                       help="warn about images with a smaller side (px; default %(default)s)")
    check.add_argument("--workers", type=positive_int, default=4, help="decoding threads (default %(default)s)")
    check.add_argument("--aircraft-level", choices=["variant", "family", "manufacturer"], default=None,
                       help="shorthand for --option level=...")
    check.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="a reader option, as data.options in a config (e.g. crop_banner=false)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=_data_check)

    synth = data_commands.add_parser("synth", help="generate the embedded synthetic fine-grained dataset")
    synth.add_argument("out", type=Path, help="folder to write the dataset into")
    synth.add_argument("--layout", default="competition", choices=["competition", "cub", "imagefolder"],
                       help="folder layout, as the real datasets have it (default %(default)s)")
    synth.add_argument("--classes", type=positive_int, default=10, help="number of classes (default %(default)s)")
    synth.add_argument("--per-class", type=positive_int, default=40,
                       help="images per class, train and test together (default %(default)s); the test split takes "
                            "round(N x --test-fraction) of them, e.g. 8 gives 6 train + 2 test")
    synth.add_argument("--size", type=positive_int, default=224, help="image side in px (default %(default)s)")
    synth.add_argument("--seed", type=non_negative_int, default=0,
                       help="the same seed writes the same images (default %(default)s)")
    synth.add_argument("--test-fraction", type=float, default=0.2,
                       help="share of each class's images in the test split (default %(default)s)")
    synth.set_defaults(func=_data_synth)
