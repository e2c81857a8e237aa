"""fgvc benchmark: model steps against a plain ResNet-50 step measured in the same run, operator and
host-synchronisation counts, the data pipeline, and batched prediction.

    python benchmarks/run.py [--device cpu|cuda] [--iters 5] [--amp bf16] [--channels-last] [--compile]
                             [--models fbsd mmal] [--skip pipeline predict] [--quick]

Ratios to the plain torchvision ResNet-50 step are what survive a noisy machine; absolute times
depend on it. Results print as Markdown tables (paste into BENCHMARKS.md with the command).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.profiler import ProfilerActivity, profile

from fgvc.data.classes import ClassTable
from fgvc.data.dataset import FGVCDataset
from fgvc.data.index import DatasetIndex, Sample
from fgvc.data.transforms import build_batch_transform, build_transform
from fgvc.models import create_model
from fgvc.models.inference import prepare_for_inference

SYNC_OPS = ("aten::_local_scalar_dense", "aten::item", "Memcpy DtoH", "cudaStreamSynchronize", "cudaDeviceSynchronize")


def timed(fn: Callable[[], object], iters: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class Case:
    """One model at one batch size: a train-step closure and an eval-forward closure."""

    def __init__(self, name: str, model: torch.nn.Module, batch: int, size: int, device: torch.device,
                 amp: torch.dtype | None, channels_last: bool, plain: bool = False) -> None:
        self.name, self.model, self.device, self.amp = name, model.to(device), device, amp
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        self.y = torch.arange(batch, device=device) % 200
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        self.plain = plain

    def train_step(self) -> None:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            if self.plain:
                loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
            else:
                loss = self.model.loss(self.model(self.x), self.y, epoch=1)[0]
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def eval_forward(self) -> None:
        self.model.eval()
        with autocast(self.device, self.amp):
            self.model(self.x)


def profile_counts(fn: Callable[[], None], device: torch.device) -> tuple[int, int]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    with profile(activities=activities) as prof:
        fn()
    events = prof.key_averages()
    ops = sum(e.count for e in events if e.key.startswith("aten::"))
    syncs = sum(e.count for e in events if any(e.key.startswith(s) for s in SYNC_OPS))
    return ops, syncs


def region_share(fn: Callable[[], None], prefix: str = "mmal.") -> float:
    """Share of the step's CPU time spent inside ``record_function`` regions named ``prefix*``."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        fn()
        total = time.perf_counter() - t
    inside = sum(e.cpu_time_total for e in prof.key_averages() if e.key.startswith(prefix)) / 1e6
    return inside / total


_RSS_SCRIPT = """
import sys, torch
from fgvc.models import create_model
name, windows = sys.argv[1], sys.argv[2]
kw = {{"windows": windows}} if name == "mmal" else {{}}
m = create_model(name, 200, backbone="resnet50", **kw).train()
opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
x, y = torch.randn(2, 3, {size}, {size}), torch.tensor([0, 1])
for _ in range(2):
    opt.zero_grad(); m.loss(m(x), y, epoch=1)[0].backward(); opt.step()
# VmHWM: this process's own peak (ru_maxrss would include the benchmark's RSS at fork time)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) / 2**20)
"""


def cpu_peak_rss(name: str, windows: str, size: int) -> float:
    """Peak resident memory (GiB) of a fresh process running two training steps: weights, optimiser state,
    activations and the PyTorch runtime together (on CUDA the table reports allocator peaks instead)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT.format(size=size), name, windows],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def peak_memory(fn: Callable[[], None], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    return torch.cuda.max_memory_allocated(device) / 2**30


def timed_against(reference: Callable[[], object], fn: Callable[[], object], iters: int, warmup: int,
                  device: torch.device, abba: bool = False) -> tuple[list[float], list[float]]:
    """Alternate reference and candidate runs so that drift on a shared machine hits both alike. ``abba``: the
    candidate first on odd runs — measured on a CPU, a step that runs right after the other was 2-3% slower
    whichever it was, so a fixed order biases the ratio."""
    ref, ours = [], []
    for _ in range(warmup):
        reference()
        fn()
    for i in range(iters):
        if abba and i % 2:
            ours += timed(fn, 1, 0, device)
            ref += timed(reference, 1, 0, device)
        else:
            ref += timed(reference, 1, 0, device)
            ours += timed(fn, 1, 0, device)
    return ref, ours


class FBSDFloor:
    """What FBSD must compute beyond a plain ResNet-50 step, and nothing else: the convolutions of its
    three conv blocks and FDM's nine matrix products (similarity and both attention products per pair),
    forward and backward, on the shapes of the real model. Floor = 1 + this / plain step."""

    def __init__(self, model: torch.nn.Module, batch: int, size: int, device: torch.device,
                 amp: torch.dtype | None) -> None:
        self.device, self.amp = device, amp
        convs = [m for block in model.conv_blocks for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
        self.convs = [torch.nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, padding=c.padding,
                                      bias=False).to(device) for c in convs]
        sides = [size // s for s in model.backbone.strides]
        self.inputs = [torch.randn(batch, c.in_channels, side, side, device=device, requires_grad=True)
                       for c, side in zip(convs, [sides[i // 2] for i in range(len(convs))], strict=True)]
        width = convs[-1].out_channels
        self.maps = [torch.randn(batch, width, side * side, device=device, requires_grad=True) for side in sides]

    def step(self) -> None:
        with autocast(self.device, self.amp):
            total = sum(conv(x).sum() for conv, x in zip(self.convs, self.inputs, strict=True))
            for i, j in ((0, 1), (0, 2), (1, 2)):
                a, b = self.maps[i], self.maps[j]
                sim = torch.bmm(a.transpose(1, 2), b)
                total = total + torch.bmm(a, sim).sum() + torch.bmm(b, sim.transpose(1, 2)).sum()
        total.backward()


def models_table(args: argparse.Namespace, device: torch.device) -> str:
    size, iters = args.size, args.iters
    plain = torchvision.models.resnet50(num_classes=200)
    plain_train = Case("plain", plain, 2, size, device, args.amp_dtype, args.channels_last, plain=True)
    plain_eval = Case("plain", plain, 8, size, device, args.amp_dtype, args.channels_last, plain=True)
    specs = [
        ("baseline", dict(name="baseline")),
        ("fbsd", dict(name="fbsd", dropout=0.2)),
        ("mmal (cub, N=7)", dict(name="mmal", windows="cub")),
        ("mmal (cars, N=6)", dict(name="mmal", windows="cars")),
    ]
    rows = []
    specs = [(label, spec) for label, spec in specs if not args.models or spec["name"] in args.models]
    for label, spec in specs:
        name = spec.pop("name")
        model = create_model(name, 200, backbone="resnet50", **spec)
        case = Case(label, model, 2, size, device, args.amp_dtype, args.channels_last)
        if args.compile:  # the model's own step, compiled; compile time is spent in the warm-up runs
            case.model = torch.compile(case.model)
        ref_train, train_times = timed_against(plain_train.train_step, case.train_step, iters, 2, device)
        mem = peak_memory(case.train_step, device)
        if mem is None and not args.quick:
            mem = cpu_peak_rss(name, spec.get("windows", ""), size)
        ops2, syncs = profile_counts(case.train_step, device) if not args.quick else (0, 0)
        if name == "fbsd":
            floor = FBSDFloor(model, 2, size, device, args.amp_dtype)
            ref_floor, floor_times = timed_against(plain_train.train_step, floor.step, iters, 1, device)
            fbsd_floor = 1 + statistics.median(floor_times) / statistics.median(ref_floor)
        if name == "mmal":
            share = region_share(case.train_step)
            print(f"{label}: AOLM + APPM + crops = {share:.2%} of the training step", flush=True)
        eval_case = Case(label, model, 8, size, device, args.amp_dtype, args.channels_last)
        ref_eval, eval_times = timed_against(plain_eval.eval_forward, eval_case.eval_forward, iters, 2, device)
        ops8 = profile_counts(Case(label, model, 8, size, device, args.amp_dtype, args.channels_last).train_step,
                              device)[0] if not args.quick else 0
        n = getattr(model, "preset", None)
        floor_train = {"baseline": "1", "fbsd": f"{fbsd_floor:.2f} (measured)" if name == "fbsd" else "-"}.get(
            name, f"{1 + 1 + n.num_parts / 4:g}" if n else "-")
        floor_eval = "2" if name == "mmal" else "1" if name == "baseline" else "-"
        med, med_ref = statistics.median(train_times), statistics.median(ref_train)
        med_eval, med_ref_eval = statistics.median(eval_times), statistics.median(ref_eval)
        rows.append((label, med, med_ref, med / med_ref, floor_train, med_eval, med_eval / med_ref_eval, floor_eval,
                     f"{min(train_times):.3f}/{max(train_times):.3f}",
                     f"{ops2}/{ops8} ({(ops8 - ops2) / max(ops2, 1):+.1%})" if ops2 else "",
                     f"{syncs}" + (f", {mem:.2f} GiB" if mem is not None else "")))
    head = ("| model | train step b2 (s, median) | plain R50 step (s) | x plain | floor | eval b8 (s) | x plain | "
            "floor | train min/max (s) | aten ops b2/b8 | "
            "host syncs per step, peak mem (CUDA: allocator; CPU: process RSS) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(
        f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.2f} | {r[4]} | {r[5]:.3f} | {r[6]:.2f} | {r[7]} | {r[8]} | "
        f"{r[9]} | {r[10]} |" for r in rows)


def _jpegs(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        cls = folder / f"c{i % 4}"
        cls.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
        arr = (arr // 32 * 32).astype(np.uint8)  # compressible, photo-like size
        p = cls / f"{i:04d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        paths.append(p)
    return paths


def paper_transform(recipe: str) -> Callable[[Image.Image], torch.Tensor]:
    """The authors' training pipelines as they wrote them: classic torchvision transforms on PIL images,
    float conversion and normalisation per image in the worker (REFERENCE §1.1, §2.8)."""
    from torchvision import transforms as T

    if recipe == "fbsd":
        steps = [T.Resize((550, 550)), T.RandomCrop(448, padding=8), T.RandomHorizontalFlip(), T.ToTensor(),
                 T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    else:
        steps = [T.Resize((448, 448)), T.RandomHorizontalFlip(), T.ColorJitter(brightness=0.2, contrast=0.2),
                 T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    return T.Compose(steps)


def pipeline_table(args: argparse.Namespace) -> str:
    n = 48 if args.quick else 120
    rounds = 1 if args.quick else 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = _jpegs(Path(tmp), n)
        classes = ClassTable(("c0", "c1", "c2", "c3"), ("c0", "c1", "c2", "c3"))
        index = DatasetIndex(Path(tmp), "imagefolder", classes,
                             [Sample(p, int(p.parent.name[1]), "train", p.name) for p in paths])
        for recipe in ("fbsd", "mmal"):
            reference = torchvision.datasets.ImageFolder(tmp, transform=paper_transform(recipe))
            ours = FGVCDataset(index, build_transform(recipe, 448, train=True, output="uint8"))
            finish = build_batch_transform(recipe, train=True)

            def rate(ds) -> float:
                t = time.perf_counter()
                for i in range(len(ds)):
                    ds[i]
                return len(ds) / (time.perf_counter() - t)

            ref_rates, our_rates = [], []
            for _ in range(rounds):  # alternated, as the model steps: drift hits both alike
                ref_rates.append(rate(reference))
                our_rates.append(rate(ours))
            ref_rate, our_rate = statistics.median(ref_rates), statistics.median(our_rates)
            assert reference[0][0].shape == finish(ours[0]["image"][None])[0].shape  # same output
            images = torch.stack([ours[i]["image"] for i in range(32)])
            finish(images)  # warm-up: first-call allocations
            t = time.perf_counter()
            for _ in range(rounds):
                finish(images)
            finish_s = (time.perf_counter() - t) / (32 * rounds)
            with_finish = 1 / (1 / our_rate + finish_s)
            rows.append(f"| {recipe} train, 500x375 JPEG -> 448 | {ref_rate:.1f} | {our_rate:.1f} | "
                        f"{our_rate / ref_rate:.2f} | {with_finish:.1f} | {with_finish / ref_rate:.2f} |")
    return ("| pipeline (one worker, median of 3 alternated passes) | ImageFolder + the authors' PIL transforms "
            "(img/s) | fgvc worker: decode + 8-bit geometry (img/s) | ratio | "
            "fgvc incl. batch transform on this CPU (img/s) | ratio |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows))


def predict_table(args: argparse.Namespace, device: torch.device) -> str:
    """Images per second of the MMAL-R50 eval forward at batch 1 and 32, as trained (NCHW, BatchNorm)
    and as ``fgvc predict`` runs it (BatchNorm folded, channels_last: ``prepare_for_inference``)."""
    trained = create_model("mmal", 200, backbone="resnet50", windows="cars").to(device).eval()
    prepared = prepare_for_inference(copy.deepcopy(trained))
    n = 32 if args.quick else 64
    x = torch.randn(n, 3, args.size, args.size, device=device)

    @torch.no_grad()
    def rate(model: torch.nn.Module, bs: int) -> float:
        model(x[:bs])  # warm-up at this batch size
        t = time.perf_counter()
        for i in range(0, n, bs):
            model(x[i:i + bs])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t)

    rows = []
    team_b1 = None
    for label, model in (("as trained (NCHW, BatchNorm)", trained), ("fgvc predict (folded, channels_last)", prepared)):
        b1, b32 = rate(model, 1), rate(model, 32)
        team_b1 = team_b1 or b1
        rows.append(f"| {label} | {b1:.2f} | {b32:.2f} | {b32 / b1:.2f} | {b32 / team_b1:.2f} |")
    return (f"| predict, MMAL-R50 {args.size} px, {device.type} | batch 1 (img/s) | batch 32 (img/s) | "
            "b32 / b1 | b32 / (b1 as trained) |\n|---|---|---|---|---|\n" + "\n".join(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile each model's training step")
    parser.add_argument("--models", nargs="*", default=[], choices=["baseline", "fbsd", "mmal"],
                        help="only these models (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer images, no profiler (smoke run)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["models", "pipeline", "predict"])
    args = parser.parse_args()
    args.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    device = torch.device(args.device)
    torch.manual_seed(0)
    out = io.StringIO()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", amp {args.amp}, channels_last {args.channels_last}, compile {args.compile}, {args.size} px, "
          f"{args.iters} iters", file=out)
    print(out.getvalue(), flush=True)
    if "models" not in args.skip:
        print(models_table(args, device), flush=True)
        print(flush=True)
    if "pipeline" not in args.skip:
        print(pipeline_table(args), flush=True)
        print(flush=True)
    if "predict" not in args.skip:
        print(predict_table(args, device), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
