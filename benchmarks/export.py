"""ONNX Runtime vs eager PyTorch on the CPU, per model, at batch 1 and 8 (BENCHMARKS.md, "Export").

The eager side is what ``fgvc predict`` runs: :func:`prepare_for_inference` (BatchNorm folded,
channels_last). The ONNX side is the file ``fgvc export`` writes (same wrapper, same exporter
settings), run by the same runtime code (:func:`fgvc.export.load_exported`), with as many threads
as PyTorch uses. Untrained weights (seeded): timing does not depend on them; outputs are compared
anyway. Each repeat times eager then ONNX back to back, so a noisy machine hits both alike; the
medians and their ratio are printed as a Markdown table.

    python benchmarks/export.py [--backbone resnet50] [--size 448] [--models baseline fbsd mmal]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from fgvc.data.classes import ClassTable
from fgvc.export.formats import example_input, serialise
from fgvc.export.metadata import ExportMetadata, Preprocessing
from fgvc.export.runtime import load_exported
from fgvc.export.wrapper import PlainOutputs, output_names
from fgvc.models import create_model, model_spec
from fgvc.models.inference import prepare_for_inference

NUM_CLASSES = 200


def onnx_model(name: str, backbone: str, size: int):
    torch.manual_seed(0)
    model = prepare_for_inference(create_model(name, NUM_CLASSES, backbone=backbone))
    localises = model_spec(name).localises
    wrapper = PlainOutputs(model, localises).eval()
    classes = ClassTable(tuple(f"{i:03d}" for i in range(NUM_CLASSES)), tuple(f"c{i}" for i in range(NUM_CLASSES)))
    meta = ExportMetadata("onnx", name, backbone, classes, Preprocessing("plain", size, (0.5,) * 3, (0.5,) * 3, True),
                          output_names(localises), None)
    started = time.perf_counter()
    data, _ = serialise("onnx", wrapper, example_input(2, size), True, meta.outputs, lambda _: meta.to_json(),
                        f"{name}/{backbone}")
    exported = load_exported(data, "cpu", fmt="onnx")
    return wrapper, exported, time.perf_counter() - started, len(data)


def timed(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["baseline", "fbsd", "mmal"])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {args.backbone} at {args.size} px, median of {args.repeats} after {args.warmup} "
          "warm-up runs\n")
    print("| model | batch | eager, folded + channels_last (s) | ONNX Runtime (s) | speed-up | top-1 same | "
          "max rel. logit diff | export (s) | file (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        wrapper, exported, export_s, size_bytes = onnx_model(name, args.backbone, args.size)
        for batch in args.batches:
            x = torch.randn(batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                eager_logits = wrapper(x)[0]
            onnx_logits = exported(x).logits
            same = bool((eager_logits.argmax(1) == onnx_logits.argmax(1)).all())
            rel = float(((eager_logits - onnx_logits).abs().amax(1) / eager_logits.abs().amax(1)).max())
            eager_s, onnx_s = [], []
            with torch.no_grad():
                for i in range(args.warmup + args.repeats):
                    e, o = timed(wrapper, x), timed(exported, x)
                    if i >= args.warmup:
                        eager_s.append(e)
                        onnx_s.append(o)
            e, o = statistics.median(eager_s), statistics.median(onnx_s)
            print(f"| {name} | {batch} | {e:.3f} | {o:.3f} | {e / o:.2f}x | {'yes' if same else 'NO'} | {rel:.1e} | "
                  f"{export_s:.0f} | {size_bytes / 2**20:.0f} |", flush=True)


if __name__ == "__main__":
    main()
