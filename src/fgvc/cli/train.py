"""`fgvc train`: a new run, a resumed one, or a run started from another's weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from .report import write_run_report


def _config(args: argparse.Namespace):
    from ..config import load_config

    config = load_config(args.config, args.set or [])
    if getattr(args, "data", None):
        config.data.root = str(args.data)
    return config



def _train(args: argparse.Namespace) -> int:
    from ..engine.trainer import resume, train

    progress = not args.no_progress

    def report(trainer) -> None:
        if not args.no_report:
            write_run_report(trainer.run_dir, trainer.dist, device=trainer.config.train.device, progress=progress)

    if args.resume is not None:
        if args.config_given or args.out or args.init_from:
            given = [f for f, v in (("--config", args.config_given), ("--out", args.out),
                                    ("--init-from", args.init_from)) if v]
            raise ConfigError(f"{', '.join(given)} cannot be combined with --resume: the run keeps its own config "
                              "and folder (use --data and --set for what may change)")
        trainer = resume(args.resume, data=args.data, overrides=args.set or [], progress=progress, after_fit=report)
    else:
        config = _config(args)
        trainer = train(config, args.out or Path("runs") / config.name, init_from=args.init_from, progress=progress,
                        after_fit=report)
    return 130 if trainer.interrupted else 0  # `fgvc train && fgvc predict` must not go on with a half-trained model


def add_train_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc train`."""
    train = commands.add_parser("train", help="train a model; validation is carved from the training split")
    train.add_argument("--config", default=None, help="preset name (see configs/) or YAML file (default: demo)")
    train.add_argument("--data", type=Path, default=None, help="dataset root (overrides data.root)")
    train.add_argument("--out", type=Path, default=None, help="run directory (default runs/<name>)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. optim.lr=0.01")
    train.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a run exactly")
    train.add_argument("--init-from", type=Path, default=None, metavar="CKPT",
                       help="start from another run's weights (heads re-initialised when classes differ)")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--no-report", action="store_true", help="do not write RUN_DIR/report.html at the end")
    train.set_defaults(func=_train)
