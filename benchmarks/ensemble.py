"""What an ensemble and test-time views cost per image, against one model.

    python benchmarks/ensemble.py [--model baseline] [--backbone resnet18] [--size 224] [--batch 16]
                                  [--classes 200] [--iters 5] [--device cpu|cuda]

Each case is the inference forward of ``fgvc predict``: models prepared as ``Run.trained_model`` prepares
them (BatchNorm folded, channels_last), views made on the prepared batch (``with_views``), class
probabilities averaged over views and models (``average_probabilities``). Within each repetition the
cases run one after the other (alternated), so a noisy, shared machine slows them alike; the table
gives the median over repetitions and the median of the per-repetition ratios to the single model.
Expected: about 1x per (model x view) forward — 2x for a flip or a second model, 4x for both, 7x for
``flip+crops``. Data loading is not timed: every member decodes the images with its own loader
(about 1–2 ms per image per member at 224 px on one core), small against a CPU forward.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from fgvc.engine.ensemble import average_probabilities, normalise_weights, view_count, with_views
from fgvc.models import create_model
from fgvc.models.inference import prepare_for_inference

CASES = (("one model", 1, "none"), ("one model, --tta flip", 1, "flip"), ("two models", 2, "none"),
         ("two models, --tta flip", 2, "flip"), ("one model, --tta flip+crops", 1, "flip+crops"))


def member(args: argparse.Namespace, seed: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(args.model, args.classes, backbone=args.backbone, pretrained=False)
    return prepare_for_inference(model.to(device))


def ensemble_forward(models: list[torch.nn.Module], scheme: str, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    weights = normalise_weights(None, len(models))

    @torch.no_grad()
    def forward() -> torch.Tensor:
        return average_probabilities([with_views(m, scheme)(x).logits.softmax(dim=1) for m in models], weights)

    return forward


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="baseline")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    models = [member(args, seed, device) for seed in (0, 1)]
    x = torch.randn(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=torch.channels_last)
    cases = [(name, ensemble_forward(models[:n], scheme, x), n * view_count(scheme)) for name, n, scheme in CASES]
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for repetition in range(args.warmup + args.iters):
        for name, fn, _ in cases:
            elapsed = seconds(fn, device)
            if repetition >= args.warmup:
                times[name].append(elapsed)
    single = times[cases[0][0]]
    print(f"{args.model}/{args.backbone}, {args.size} px, batch {args.batch}, {args.classes} classes, "
          f"{device.type} ({platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"fp32, median of {args.iters} alternated repetitions after {args.warmup} warm-up\n")
    print("| case | forwards per image | ms per image (median) | x one model | min/max ms per image |")
    print("|---|---|---|---|---|")
    for name, _, forwards in cases:
        per_image = [t / args.batch * 1000 for t in times[name]]
        ratio = statistics.median(t / s for t, s in zip(times[name], single, strict=True))
        print(f"| {name} | {forwards} | {statistics.median(per_image):.1f} | {ratio:.2f} | "
              f"{min(per_image):.1f}/{max(per_image):.1f} |")


if __name__ == "__main__":
    main()
