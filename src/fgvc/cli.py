"""The ``fgvc`` command line: parse arguments, call the library, print. No logic lives here."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .argtypes import non_negative_int, port, positive_int
from .errors import ConfigError, FgvcError, UserError, output_error

__all__ = ["main", "build_parser"]

DATA_FORMATS = ("competition", "imagefolder", "cub", "aircraft", "cars", "imagelist")
"""The formats `fgvc data check --format` names in its help (the registry itself loads 0.15 s of readers)."""


def _data_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset

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
    from .data.synthetic import generate_dataset

    summary = generate_dataset(args.out, layout=args.layout, num_classes=args.classes, per_class=args.per_class,
                               size=args.size, seed=args.seed, test_fraction=args.test_fraction)
    print(f"wrote {summary.num_classes} classes, {summary.train_images} train and {summary.test_images} test "
          f"images ({summary.layout} layout) to {summary.root}")
    return 0


def _config(args: argparse.Namespace):
    from .config import load_config

    config = load_config(args.config, args.set or [])
    if getattr(args, "data", None):
        config.data.root = str(args.data)
    return config


def _write_report(run_dir: Path, dist, metrics_path: Path | None = None, device: str = "auto",
                  progress: bool = True, calibrate: bool = True) -> None:
    """report.html at the end of train/evaluate; a multi-process (torchrun) job leaves it to `fgvc report`."""
    if dist.enabled:
        if dist.is_main:
            print(f"report: run `fgvc report {run_dir}` once this multi-process job has finished")
        return
    from .report import write_report

    try:
        path = write_report(run_dir, metrics_path=metrics_path, device=device, progress=progress, calibrate=calibrate)
    except Exception as e:  # noqa: BLE001  the report is a by-product: the run itself succeeded
        print(f"fgvc: warning: report not written ({type(e).__name__}: {e}); retry with `fgvc report {run_dir}`",
              file=sys.stderr)
        return
    print(f"report written to {path}")


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


def _train(args: argparse.Namespace) -> int:
    import contextlib

    from .engine.run import Run
    from .engine.trainer import Trainer
    from .fileio import remove_stale_temporaries
    from .runlock import RunLock, discard_failed_start

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
            _write_report(run.run_dir, run.dist, device=run.config.train.device, progress=not args.no_progress)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .engine.ensemble import evaluate_runs, parse_weights

    runs = [args.checkpoint, *args.more_runs]
    report = evaluate_runs(runs, args.data, args.split, out_dir=args.out, batch_size=args.batch_size,
                           device=args.device, tta=args.tta, weights=parse_weights(args.weights, len(runs)),
                           progress=not args.no_progress, calibrate=not args.no_calibration)
    if report.dist.is_main:
        print(report.to_text())
        print(f"metrics written to {report.json_path}")
    if args.no_report:
        return 0
    if report.ensemble is None:
        _write_report(report.checkpoint.parent, report.dist, metrics_path=report.json_path, device=args.device,
                      progress=not args.no_progress, calibrate=not args.no_calibration)
    elif report.dist.is_main:  # beside its metrics.json: a member's own report.html stays the member's
        from .report import write_report

        try:
            path = write_report(report.checkpoint.parent, report.json_path.with_name("report.html"),
                                metrics_path=report.json_path, device=args.device, progress=not args.no_progress,
                                calibrate=not args.no_calibration)
        except Exception as e:  # noqa: BLE001  the report is a by-product: the evaluation itself succeeded
            print(f"fgvc: warning: report not written ({type(e).__name__}: {e})", file=sys.stderr)
        else:
            print(f"report written to {path}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from .explain import explain

    written = explain(args.checkpoint, args.images, args.out, device=args.device, data_root=args.data,
                      batch_size=args.batch_size, calibrate=not args.no_calibration)
    for path in written:
        print(path)
    print(f"wrote {len(written)} picture(s) to {args.out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.run_dir, args.out, device=args.device, progress=not args.no_progress,
                        calibrate=not args.no_calibration)
    print(f"report written to {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    if _is_exported_file(args.checkpoint):  # written by `fgvc export`, not a run
        return _predict_exported(args)
    from .engine.ensemble import Ensemble, parse_weights
    from .engine.predict import collect_test_images, predict_ensemble, write_predictions

    runs = [args.checkpoint, *args.more_runs]
    ensemble = Ensemble.open(runs, device=args.device, tta=args.tta, weights=parse_weights(args.weights, len(runs)),
                             calibrate=not args.no_calibration)
    index = collect_test_images(args.data, ensemble.reference)
    rows = predict_ensemble(ensemble, index, batch_size=args.batch_size, progress=not args.no_progress)
    written = write_predictions(args.out, rows, args.group, setup=ensemble.setup())
    print(f"predicted {len(rows)} images with {ensemble.describe()}")
    return _print_written(written, args.group)


def _print_written(written: tuple[Path, ...], group: str | None) -> int:
    """The files `fgvc predict` wrote; without --group, one line on why there is no submission.json."""
    for path in written:
        print(f"wrote {path}")
    if group is None:
        print("no --group given, so no submission.json (a competition's file); pass --group NAME to write one")
    return 0


def _submit(args: argparse.Namespace) -> int:
    import os

    from .submission import TOKEN_ENV, submit_submission

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    result = submit_submission(args.submission, args.url, retries=args.retries, token=token)
    for line in result.summary_lines():
        print(line)
    return 0


def _score(args: argparse.Namespace) -> int:
    from .submission import load_submission, read_labels_csv, score_submission

    submission = load_submission(args.submission, default_groupname="(no groupname)")  # scoring names no team
    labels = read_labels_csv(args.labels)
    class_ids = None
    if args.classes:
        from .data.classes import ClassTable

        class_ids = ClassTable.load(args.classes).ids
    report = score_submission(submission, labels, class_ids=class_ids)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.to_text())
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import VerificationError, export_run

    try:
        result = export_run(args.checkpoint, args.format, out=args.out, batch=args.batch,
                            input_size=args.input_size, data_root=args.data, images=args.verify_images)
    except VerificationError as e:
        print(e.verification.to_text(), file=sys.stderr)
        raise
    print(result.to_text())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import ServeSettings, serve

    settings = ServeSettings(max_batch=args.max_batch, batch_window_ms=args.batch_window_ms,
                             max_upload_bytes=int(args.max_upload_mb * 2**20), max_images=args.max_images,
                             calibrate=not args.no_calibration)
    serve(args.source, host=args.host, port=args.port, device=args.device, settings=settings)
    return 0


def _is_exported_file(path: Path) -> bool:
    from .export.runtime import exported_format

    return exported_format(path) is not None


def _predict_exported(args: argparse.Namespace) -> int:
    """``fgvc predict`` with a file written by ``fgvc export`` (no run, no model code needed)."""
    if args.more_runs or args.tta != "none" or args.weights:
        raise UserError(f"{args.checkpoint} is an exported file: it predicts alone, without more runs, --tta or "
                        "--weights (ensembles need the runs)")
    from .engine.predict import write_predictions
    from .export import load_exported
    from .export.predict import images_to_predict, predict_exported

    model = load_exported(args.checkpoint, device=args.device)
    index = images_to_predict(args.data, model)
    rows = predict_exported(model, index, batch_size=args.batch_size, progress=not args.no_progress,
                            calibrate=not args.no_calibration)
    written = write_predictions(args.out, rows, args.group)
    print(f"predicted {len(rows)} images with {args.checkpoint} ({model.description})")
    return _print_written(written, args.group)


def _float_at_least(low: float, inclusive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value >= low if inclusive else value > low):
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be "
                                             f"{'at least' if inclusive else 'more than'} {low:g}")
        return value

    return parse


def _batch(text: str) -> int | None:
    """``dynamic`` (None: any batch size) or a fixed batch size."""
    if text == "dynamic":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'dynamic' nor a batch size of at least 1") from None


def _add_calibration_flag(parser: argparse.ArgumentParser) -> None:
    """--no-calibration: what every command that shows or averages probabilities shares."""
    parser.add_argument("--no-calibration", action="store_true",
                        help="probabilities as the model gives them (temperature 1), not divided by the temperature "
                             "the run fitted on its validation split")


def _add_ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN [RUN ...], --tta, --weights: what `fgvc evaluate` and `fgvc predict` share."""
    parser.add_argument("checkpoint", type=Path, metavar="RUN", help="run directory or checkpoint file")
    parser.add_argument("more_runs", type=Path, nargs="*", metavar="RUN",
                        help="more runs: class probabilities averaged with the first's (an ensemble, in the first "
                             "run's class order)")
    parser.add_argument("--tta", choices=["none", "flip", "flip+crops"], default="none",
                        help="test-time views, probabilities averaged: flip = the image and its mirror; flip+crops = "
                             "those and the centre and four corner crops of 7/8 of each side (7 views)")
    parser.add_argument("--weights", default=None, metavar="W1,W2,...",
                        help="one positive weight per run, normalised (default: equal)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgvc", description="Fine-grained visual classification toolkit.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

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

    evaluate = commands.add_parser(
        "evaluate", help="metrics of a checkpoint, or of an ensemble of runs, on the validation or test split")
    _add_ensemble_arguments(evaluate)
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--split", choices=["val", "test"], default="val",
                          help="val: the run's own validation images; test: the dataset's labelled test split "
                               "(default %(default)s)")
    evaluate.add_argument("--out", type=Path, default=None,
                          help="folder for metrics.json (default RUN/eval_SPLIT; for an ensemble or --tta, "
                               "ensemble_eval_SPLIT_RUN1+RUN2[_TTA] beside the first run's folder)")
    evaluate.add_argument("--batch-size", type=positive_int, default=32)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.add_argument("--no-report", action="store_true",
                          help="do not rewrite the run's report.html (an ensemble's goes beside its metrics.json)")
    _add_calibration_flag(evaluate)
    evaluate.set_defaults(func=_evaluate)

    expl = commands.add_parser("explain", help="pictures of what a model looks at: boxes, windows, strips, top-5")
    expl.add_argument("checkpoint", type=Path, help="checkpoint file or run directory")
    expl.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files or folders (recursive)")
    expl.add_argument("--out", type=Path, default=Path("explain"), help="folder for the PNGs (default ./explain)")
    expl.add_argument("--data", type=Path, default=None,
                      help="dataset the images come from, for true class and box (default: the run's, if inside)")
    expl.add_argument("--batch-size", type=positive_int, default=8)
    expl.add_argument("--device", default="auto")
    _add_calibration_flag(expl)
    expl.set_defaults(func=_explain)

    rep = commands.add_parser("report", help="write RUN_DIR/report.html: curves, metrics, confusions, examples")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--out", type=Path, default=None, help="HTML file (default RUN_DIR/report.html)")
    rep.add_argument("--device", default="auto")
    rep.add_argument("--no-progress", action="store_true")
    _add_calibration_flag(rep)
    rep.set_defaults(func=_report)

    pred = commands.add_parser("predict", help="predict test images with a run or an ensemble of runs; writes "
                                               "predictions.csv and submission.json")
    _add_ensemble_arguments(pred)
    pred.add_argument("--data", type=Path, required=True, help="dataset with test/ or a folder of images")
    pred.add_argument("--out", type=Path, required=True)
    pred.add_argument("--group", default=None,
                      help="group name for a competition's submission.json (without it only predictions.csv is "
                           "written)")
    pred.add_argument("--batch-size", type=positive_int, default=32)
    pred.add_argument("--device", default="auto")
    pred.add_argument("--no-progress", action="store_true")
    _add_calibration_flag(pred)
    pred.set_defaults(func=_predict)

    submit = commands.add_parser("submit", help="POST a submission JSON to the scoring server")
    submit.add_argument("submission", type=Path)
    submit.add_argument("--url", required=True,
                        help="the server's submission address, e.g. http://HOST:8000/api/submissions")
    submit.add_argument("--retries", type=non_negative_int, default=3,
                        help="extra attempts after a connection error, timeout or HTTP 5xx (default %(default)s)")
    submit.add_argument("--token", default=None,
                        help="team token from `fgvc server team add` (default: the FGVC_TOKEN environment variable)")
    submit.set_defaults(func=_submit)

    score = commands.add_parser("score", help="score a submission locally against a labels CSV")
    score.add_argument("submission", type=Path)
    score.add_argument("--labels", type=Path, required=True, help="CSV with file,class_id")
    score.add_argument("--classes", type=Path, default=None, help="classes.json of the run (all known IDs)")
    score.add_argument("--json", action="store_true")
    score.set_defaults(func=_score)

    export = commands.add_parser("export", help="export a run to ONNX, TorchScript or an ExportedProgram "
                                                "(classes and preprocessing inside), verified on real images")
    export.add_argument("checkpoint", type=Path, metavar="RUN", help="run directory or checkpoint file")
    export.add_argument("--format", choices=["onnx", "torchscript", "exported-program"], default="onnx",
                        help="file format (default %(default)s)")
    export.add_argument("--out", type=Path, default=None,
                        help="file to write (default RUN/model.onnx, model.torchscript.pt or model.pt2)")
    export.add_argument("--batch", type=_batch, default=None, metavar="dynamic|N",
                        help="dynamic (default: any batch size) or a fixed batch size")
    export.add_argument("--input-size", type=positive_int, default=None, metavar="N",
                        help="input side in px (default: the run's model.input_size)")
    export.add_argument("--data", type=Path, default=None,
                        help="images to verify on: the run's dataset (moved) or a folder (default: the run's data)")
    export.add_argument("--verify-images", type=positive_int, default=8, metavar="N",
                        help="how many images the export is verified on (default 8)")
    export.set_defaults(func=_export)

    srv = commands.add_parser("serve", help="HTTP service for a run or an exported file: POST /predict, "
                                            "GET /healthz, a drop-a-photo page at /")
    srv.add_argument("source", type=Path, metavar="RUN|EXPORTED_FILE",
                     help="run directory, checkpoint, or a file written by fgvc export")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    srv.add_argument("--port", type=port, default=8000, help="port to listen on (default %(default)s)")
    srv.add_argument("--device", default="auto")
    srv.add_argument("--max-batch", type=positive_int, default=16,
                     help="images per forward pass across requests (1: no dynamic batching; default %(default)s)")
    srv.add_argument("--batch-window-ms", type=_float_at_least(0, inclusive=True), default=5.0,
                     help="how long a batch waits for more images (default 5 ms)")
    srv.add_argument("--max-upload-mb", type=_float_at_least(0, inclusive=False), default=10.0,
                     help="largest request body; larger ones get 413 (default 10)")
    srv.add_argument("--max-images", type=positive_int, default=32, help="images per request (default 32)")
    _add_calibration_flag(srv)
    srv.set_defaults(func=_serve)
    from .server.commands import add_server_commands  # argparse only: FastAPI/SQLAlchemy load when a server cmd runs

    add_server_commands(commands)
    return parser


# what a shell reports for a standard tool (`seq 1000000 | head -1`) killed by SIGPIPE: 128 + 13
EXIT_STDOUT_CLOSED = 141


def _reader_left() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (not some other broken pipe, e.g. a worker's)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() on this platform, or stdout is not a file
        return False


def _exit_for_closed_stdout() -> int:
    """Quiet, as a standard tool whose reader stopped early: nothing on stderr, exit 141 (128 + SIGPIPE),
    the status `set -o pipefail` sees from coreutils. stdout now points at /dev/null so that Python's own
    flush at exit cannot raise again (the recipe in the Python docs, "Note on SIGPIPE")."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_STDOUT_CLOSED


_USER_FIXABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}


def main(argv: Sequence[str] | None = None) -> int:
    """Expected failures (:class:`FgvcError`) are one line, exit 2; anything else is a bug in fgvc,
    shown with its traceback, exit 1. ``--debug`` shows every traceback. A reader that closed stdout
    early is neither: exit 141, quietly (:func:`_exit_for_closed_stdout`)."""
    args = build_parser().parse_args(argv)
    if args.command == "train":
        args.config_given = args.config is not None
        args.config = args.config or "demo"
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        status = func(args)
        sys.stdout.flush()  # a reader that left early (`| head -1`) shows here, not at interpreter exit
        return status
    except KeyboardInterrupt:
        print("fgvc: interrupted", file=sys.stderr)
        return 130
    except FgvcError as e:
        if args.debug:
            raise
        message = str(e)
        if "Original Traceback" in message:  # raised in a DataLoader worker: its last line is the story
            message = [line for line in message.splitlines() if line.strip()][-1].split(": ", 1)[-1]
        print(f"fgvc: error: {message}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  not an expected failure: a bug, shown whole
        if isinstance(e, BrokenPipeError) and _reader_left():
            return _exit_for_closed_stdout()
        if isinstance(e, OSError) and e.errno in _USER_FIXABLE and e.filename and not args.debug:
            # a path the user gave that cannot be written (permission, full disk, a file in the way)
            print(f"fgvc: error: {output_error(e.filename, e, 'write to')}", file=sys.stderr)
            return 2
        if args.debug:
            raise
        import traceback

        traceback.print_exc()
        print("fgvc: internal error: this is a bug in fgvc, not something you did; please report it with the "
              "traceback above", file=sys.stderr)
        return 1
