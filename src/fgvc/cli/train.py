"""`fgvc train`: a new run, a resumed one, or a run started from another's weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, UserError
from .report import write_run_report


def _config(args: argparse.Namespace):
    from ..config import load_config

    config = load_config(args.config, args.set or [])
    if getattr(args, "data", None):
        config.data.root = str(args.data)
    return config



def _train(args: argparse.Namespace) -> int:
    import contextlib

    from ..engine.run import Run
    from ..engine.runlock import RunLock, discard_failed_start
    from ..engine.trainer import Trainer
    from ..fileio import remove_stale_temporaries

    if args.resume is not None:
        if args.config_given or args.out or args.init_from:
            given = [f for f, v in (("--config", args.config_given), ("--out", args.out),
                                    ("--init-from", args.init_from)) if v]
            raise ConfigError(f"{', '.join(given)} cannot be combined with --resume: the run keeps its own config "
                              "and folder (use --data and --set for what may change)")
        run = Run.resume(args.resume, data=args.data, overrides=args.set or [])
    else:
        config = _config(args)
        run = Run.start(config, args.out or Path("runs") / config.name)
    assert run.run_dir is not None
    # a new run that fails before its first epoch is saved leaves the folder as it found it (none, usually)
    discard = (discard_failed_start(run.run_dir) if args.resume is None and run.dist.is_main
               else contextlib.nullcontext())
    # one process owns the run folder for the run's life (rank 0 under torchrun)
    with RunLock(run.run_dir) if run.dist.is_main else contextlib.nullcontext(), discard:
        if run.dist.is_main:
            for path in remove_stale_temporaries(run.run_dir):
                print(f"removed {path.name}, left by a run that was killed while writing it")
        if args.resume is None and (run.run_dir / "last.pt").exists():
            raise UserError(f"{run.run_dir} already holds a run; continue it with --resume {run.run_dir} "
                            "or pick another --out")
        trainer = Trainer(run, init_from=None if args.resume else args.init_from, progress=not args.no_progress)
        if args.resume is not None and trainer.finished:
            trainer.calibrate(announce=False)  # finishes a temperature fit that a kill interrupted; else nothing
            done, asked = trainer.epoch, run.config.train.epochs
            finished = f"all {done} epochs" if done == asked else f"{done} epochs, more than train.epochs={asked}"
            print(f"{run.run_dir} has finished {finished}; to train longer, resume with --set train.epochs=N "
                  f"(N > {done})")
            return 0
        trainer.fit()
        if trainer.interrupted:
            return 130  # `fgvc train && fgvc predict` must not carry on with a half-trained model
        if not args.no_report:
            write_run_report(run.run_dir, run.dist, device=run.config.train.device, progress=not args.no_progress)
    return 0


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
