"""fgvc's training step against the authors' own, side by side in one process, on the same weights.

    python benchmarks/authors.py --pmg PATH/TO/PMG-Progressive-Multi-Granularity-Training [--cal PATH/TO/CAL]
                                 [--size 448] [--batch 2] [--iters 5] [--classes 200]

The authors' code is not part of fgvc: give the folder of a checkout of their repository (PMG: the repository
root; CAL: its ``fgvc/`` folder). Each step is the authors' training-loop body (their model, their jigsaw or
attention crop and drop, their losses, SGD) and fgvc's (``ModelSpec.train_passes``, the trainer's backward and
step per pass), runs alternating in ABBA order (each first half the time) so that drift on a shared machine and
the order hit both alike; the weights are the authors'
model's, converted with the method's documented key mapping. Prints a Markdown table (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from authors_cal import cal_case  # noqa: E402

from fgvc.engine.trainer import run_passes  # noqa: E402
from fgvc.models import create_model, model_spec  # noqa: E402


def _import_from(folder: Path, *names: str) -> list:
    """The authors' modules, imported from their checkout (put first on sys.path for the duration)."""
    sys.path.insert(0, str(folder))
    for name in list(sys.modules):  # both repositories have a top-level `utils`: never the other one's
        if name.split(".")[0] in {"utils", "model", "models", "Resnet", *names}:
            del sys.modules[name]
    try:
        return [importlib.import_module(n) for n in names]
    finally:
        sys.path.remove(str(folder))


def _converted(method: str, authors_state: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    layout = model_spec(method).authors_layout
    assert layout is not None
    state = {layout.buffers[k] if k in layout.buffers else layout.rename(k): v for k, v in authors_state.items()}
    state = {k: v for k, v in state.items() if k is not None}
    model.load_state_dict(state, strict=True)


def timed_abba(theirs: Callable[[], None], ours: Callable[[], None], iters: int,
               warmup: int) -> tuple[list[float], list[float]]:
    """Alternate the two steps in ABBA order (theirs first on even runs, ours first on odd): measured here, the
    step that runs first after the other is 2-3% faster on this CPU, so a fixed order biases the ratio."""
    for _ in range(warmup):
        theirs()
        ours()
    ref, mine = [], []
    for i in range(iters):
        if i % 2 == 0:
            ref.append(_once(theirs))
            mine.append(_once(ours))
        else:
            mine.append(_once(ours))
            ref.append(_once(theirs))
    return ref, mine


def _once(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fgvc_step(method: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor) -> Callable[[], None]:
    """What the trainer does per batch (``run_passes``: each pass's backward, a step after a pass that asks for one
    and after the last), fp32, no accumulation."""
    passes_of = model_spec(method).train_passes
    assert passes_of is not None

    def optimizer_step() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step() -> None:
        run_passes(passes_of(model, model, x, y, 0), lambda loss: loss.backward(), optimizer_step, True)

    return step


def pmg_case(folder: Path, args: argparse.Namespace) -> tuple[Callable[[], None], Callable[[], None], str]:
    resnet, their_model, utils = _import_from(folder, "Resnet", "model", "utils")
    theirs = their_model.PMG(resnet.resnet50(pretrained=False), 512, args.classes).train()
    ours = create_model("pmg", args.classes, backbone="resnet50").train()
    _converted("pmg", theirs.state_dict(), ours)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.arange(args.batch) % args.classes

    def groups(net):
        new = [net.classifier_concat, net.conv_block1, net.classifier1, net.conv_block2, net.classifier2,
               net.conv_block3, net.classifier3]
        return [{"params": m.parameters(), "lr": 0.002} for m in new] + [{"params": net.features.parameters(),
                                                                          "lr": 0.0002}]

    their_opt = torch.optim.SGD(groups(theirs), momentum=0.9, weight_decay=5e-4)
    spec_groups = model_spec("pmg").param_groups(ours)  # type: ignore[misc]
    our_opt = torch.optim.SGD([{"params": spec_groups["new"], "lr": 0.002},
                               {"params": spec_groups["backbone"], "lr": 0.0002}], momentum=0.9, weight_decay=5e-4)

    def their_step() -> None:  # their train.py loop body, one batch
        for step, n in enumerate([8, 4, 2, None]):
            their_opt.zero_grad()
            inputs = utils.jigsaw_generator(x, n) if n else x
            outputs = theirs(inputs)
            loss = F.cross_entropy(outputs[step], y) * (2 if n is None else 1)
            loss.backward()
            their_opt.step()

    return their_step, fgvc_step("pmg", ours, our_opt, x, y), f"pmg (ResNet-50, {args.size} px, batch {args.batch})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pmg", type=Path, help="a checkout of PRIS-CV/PMG-Progressive-Multi-Granularity-Training")
    parser.add_argument("--cal", type=Path, help="the fgvc/ folder of a checkout of raoyongming/CAL")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    cases = []
    if args.pmg:
        cases.append(pmg_case(args.pmg, args))
    if args.cal:
        cases.append(cal_case(args.cal, args, _import_from, _converted, fgvc_step))
    if not cases:
        parser.error("give --pmg and/or --cal: the folder of the authors' code to measure against")
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, fp32\n")
    print("| method | authors' step (s, median) | fgvc step (s, median) | fgvc / authors | authors min/max "
          "| fgvc min/max |")
    print("|---|---|---|---|---|---|")
    for theirs, ours, name in cases:
        random.seed(0)
        torch.manual_seed(0)
        ref, mine = timed_abba(theirs, ours, args.iters, args.warmup)
        r, m = statistics.median(ref), statistics.median(mine)
        print(f"| {name} | {r:.3f} | {m:.3f} | {m / r:.2f} | {min(ref):.3f}/{max(ref):.3f} | "
              f"{min(mine):.3f}/{max(mine):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
