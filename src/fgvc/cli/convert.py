"""`fgvc convert`: a checkpoint released with a paper's own code, as an fgvc run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from .choices import LibraryChoices, add_choice_argument

# the models whose spec declares the authors' checkpoint layout, read from the registry when needed
AUTHORS_METHODS = LibraryChoices("fgvc.engine.convert", "authors_methods")


def _convert(args: argparse.Namespace) -> int:
    from ..engine.convert import convert_authors_checkpoint

    best = convert_authors_checkpoint(args.method, args.checkpoint, args.out, data=args.data,
                                      classes_file=args.classes, config=args.config, overrides=args.set or [])
    print(f"converted {args.checkpoint} ({args.method}, the authors' layout) into {best}")
    print(f"evaluate it with: fgvc evaluate {args.out} --data {args.data or 'DATASET'} --split test")
    return 0


def add_convert_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc convert`."""
    convert = commands.add_parser(
        "convert", help="turn a checkpoint released with a paper's own code into an fgvc run folder",
        description="Read the authors' checkpoint without running code from it, rename its tensors to fgvc's "
                    "model (strictly: every tensor used, every shape checked) and write RUN/best.pt, which "
                    "evaluate, predict, explain, export and serve open like a trained run.")
    add_choice_argument(convert, "--method", AUTHORS_METHODS, required=True, help="the paper's method")
    convert.add_argument("--checkpoint", type=Path, required=True, help="the authors' file (.pth, .pt)")
    classes = convert.add_mutually_exclusive_group(required=True)
    classes.add_argument("--data", type=Path, default=None,
                         help="the dataset it was trained on: its classes, in fgvc's order, name the rows")
    classes.add_argument("--classes", type=Path, default=None, metavar="FILE",
                         help="one class name per line, in the order of the checkpoint's classifier rows")
    convert.add_argument("--out", type=Path, required=True, help="the run folder to write")
    convert.add_argument("--config", default=None,
                         help="preset name or YAML (default: the method's <method>_<backbone>_cub preset)")
    convert.add_argument("--set", action="append", metavar="KEY=VALUE",
                         help="override, e.g. model.backbone=resnet101 or model.input_size=384")
    convert.set_defaults(func=_convert)
