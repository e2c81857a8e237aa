"""`fgvc evaluate`, `predict`, `export` and `serve`: a trained run (or an exported file) put to use."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from .argtypes import add_calibration_flag, batch_size_or_dynamic, float_at_least, port, positive_int
from .choices import EXPORT_FORMATS, TTA_SCHEMES, add_choice_argument
from .report import write_run_report


def _evaluate(args: argparse.Namespace) -> int:
    from ..engine.ensemble import evaluate_runs, parse_weights

    runs = [args.checkpoint, *args.more_runs]
    report = evaluate_runs(runs, args.data, args.split, out_dir=args.out, batch_size=args.batch_size,
                           device=args.device, tta=args.tta, weights=parse_weights(args.weights, len(runs)),
                           progress=not args.no_progress, calibrate=not args.no_calibration)
    if report.dist.is_main:
        text = report.to_text()
        print(text if report.ensemble else _beside_top1(text, _paper_note(report.checkpoint)))
        print(f"metrics written to {report.json_path}")
    if args.no_report:
        return 0
    # an ensemble's goes beside its metrics.json: a member's own report.html stays the member's
    write_run_report(report.checkpoint.parent, report.dist, metrics_path=report.json_path, device=args.device,
                     progress=not args.no_progress, calibrate=not args.no_calibration,
                     out=None if report.ensemble is None else report.json_path.with_name("report.html"))
    return 0


def _paper_note(checkpoint: Path) -> str | None:
    """What the run's config says its paper reports (``paper:``), read from the run folder's config.yaml
    or else the checkpoint's own config; None without one."""
    import yaml

    from ..config import paper_note

    config_file = checkpoint.parent / "config.yaml"
    if config_file.is_file():
        return paper_note(yaml.safe_load(config_file.read_text(encoding="utf-8")))
    from ..engine.checkpoint import load_checkpoint

    return paper_note(load_checkpoint(checkpoint).get("config"))


def _beside_top1(text: str, note: str | None) -> str:
    if note is None:
        return text
    return "\n".join(f"{line}   {note}" if line.startswith("top1:") else line for line in text.splitlines())


def _predict(args: argparse.Namespace) -> int:
    if _is_exported_file(args.checkpoint):  # written by `fgvc export`, not a run
        return _predict_exported(args)
    from ..engine.ensemble import Ensemble, parse_weights
    from ..engine.predict import collect_test_images, predict_ensemble, write_predictions

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



def _export(args: argparse.Namespace) -> int:
    from ..export import VerificationError, export_run

    try:
        result = export_run(args.checkpoint, args.format, out=args.out, batch=args.batch,
                            input_size=args.input_size, data_root=args.data, images=args.verify_images)
    except VerificationError as e:
        print(e.verification.to_text(), file=sys.stderr)
        raise
    print(result.to_text())
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ..serve import ServeSettings, serve

    settings = ServeSettings(max_batch=args.max_batch, batch_window_ms=args.batch_window_ms,
                             max_upload_bytes=int(args.max_upload_mb * 2**20), max_images=args.max_images,
                             calibrate=not args.no_calibration)
    serve(args.source, host=args.host, port=args.port, device=args.device, settings=settings)
    return 0


def _is_exported_file(path: Path) -> bool:
    from ..export.runtime import exported_format

    return exported_format(path) is not None


def _predict_exported(args: argparse.Namespace) -> int:
    """``fgvc predict`` with a file written by ``fgvc export`` (no run, no model code needed)."""
    if args.more_runs or args.tta != "none" or args.weights:
        raise UserError(f"{args.checkpoint} is an exported file: it predicts alone, without more runs, --tta or "
                        "--weights (ensembles need the runs)")
    from ..engine.predict import write_predictions
    from ..export import load_exported
    from ..export.predict import images_to_predict, predict_exported

    model = load_exported(args.checkpoint, device=args.device)
    index = images_to_predict(args.data, model)
    rows = predict_exported(model, index, batch_size=args.batch_size, progress=not args.no_progress,
                            calibrate=not args.no_calibration)
    written = write_predictions(args.out, rows, args.group)
    print(f"predicted {len(rows)} images with {args.checkpoint} ({model.description})")
    return _print_written(written, args.group)



def _add_ensemble_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN [RUN ...], --tta, --weights: what `fgvc evaluate` and `fgvc predict` share."""
    parser.add_argument("checkpoint", type=Path, metavar="RUN", help="run directory or checkpoint file")
    parser.add_argument("more_runs", type=Path, nargs="*", metavar="RUN",
                        help="more runs: class probabilities averaged with the first's (an ensemble, in the first "
                             "run's class order)")
    add_choice_argument(parser, "--tta", TTA_SCHEMES, default="none",
                        help="test-time views, probabilities averaged: flip = the image and its mirror; flip+crops = "
                             "those and the centre and four corner crops of 7/8 of each side (7 views)")
    parser.add_argument("--weights", default=None, metavar="W1,W2,...",
                        help="one positive weight per run, normalised (default: equal)")


def add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc evaluate`."""
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
    add_calibration_flag(evaluate)
    evaluate.set_defaults(func=_evaluate)


def add_predict_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc predict`."""
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
    add_calibration_flag(pred)
    pred.set_defaults(func=_predict)


def add_export_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc export`."""
    export = commands.add_parser("export", help="export a run to ONNX, TorchScript or an ExportedProgram "
                                                "(classes and preprocessing inside), verified on real images")
    export.add_argument("checkpoint", type=Path, metavar="RUN", help="run directory or checkpoint file")
    add_choice_argument(export, "--format", EXPORT_FORMATS, default="onnx",
                        help="file format (default %(default)s)")
    export.add_argument("--out", type=Path, default=None,
                        help="file to write (default RUN/model.onnx, model.torchscript.pt or model.pt2)")
    export.add_argument("--batch", type=batch_size_or_dynamic, default=None, metavar="dynamic|N",
                        help="dynamic (default: any batch size) or a fixed batch size")
    export.add_argument("--input-size", type=positive_int, default=None, metavar="N",
                        help="input side in px (default: the run's model.input_size)")
    export.add_argument("--data", type=Path, default=None,
                        help="images to verify on: the run's dataset (moved) or a folder (default: the run's data)")
    export.add_argument("--verify-images", type=positive_int, default=8, metavar="N",
                        help="how many images the export is verified on (default 8)")
    export.set_defaults(func=_export)


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc serve`."""
    srv = commands.add_parser("serve", help="HTTP service for a run or an exported file: POST /predict, "
                                            "GET /healthz, a drop-a-photo page at /")
    srv.add_argument("source", type=Path, metavar="RUN|EXPORTED_FILE",
                     help="run directory, checkpoint, or a file written by fgvc export")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    srv.add_argument("--port", type=port, default=8000, help="port to listen on (default %(default)s)")
    srv.add_argument("--device", default="auto")
    srv.add_argument("--max-batch", type=positive_int, default=16,
                     help="images per forward pass across requests (1: no dynamic batching; default %(default)s)")
    srv.add_argument("--batch-window-ms", type=float_at_least(0, inclusive=True), default=5.0,
                     help="how long a batch waits for more images (default 5 ms)")
    srv.add_argument("--max-upload-mb", type=float_at_least(0, inclusive=False), default=10.0,
                     help="largest request body; larger ones get 413 (default 10)")
    srv.add_argument("--max-images", type=positive_int, default=32, help="images per request (default 32)")
    add_calibration_flag(srv)
    srv.set_defaults(func=_serve)
