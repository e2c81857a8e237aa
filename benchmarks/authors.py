"""fgvc's training step against the authors' own, side by side in one process, on the same weights.

    python benchmarks/authors.py [--pmg PATH/TO/PMG-Progressive-Multi-Granularity-Training] [--cal PATH/TO/CAL/fgvc]
                                 [--transfg PATH/TO/TransFG] [--pim PATH/TO/FGVC-PIM] [--tiny]
                                 [--size N] [--batch N] [--iters 5] [--warmup 1] [--classes 200]

The authors' code is not part of fgvc: give the folder of a checkout of their repository (PMG, TransFG, PIM: the
repository root; CAL: its ``fgvc/`` folder). Each step is the authors' training-loop body (their model, their jigsaw or
attention crop and drop, their losses, their gradient clipping and learning-rate schedule step where their loop
has them, SGD) and fgvc's (``ModelSpec.train_passes`` or one forward and ``model.loss``, the trainer's backward,
clipping (``optim.clip_grad_norm``), step and schedule step; its optimiser built from the method's preset as the
trainer builds it: ``build_optimizer``, fused SGD), runs alternating in ABBA order (each first half the
time) so that drift on a shared machine and the order hit both alike; the weights are the authors' model's,
converted with the method's documented key mapping. Before timing, the TransFG and PIM cases check that one
forward and loss with every dropout off give the same loss on both sides (the same model is measured).

Sizes: PMG and CAL ResNets at 448 px, batch 2; TransFG ViT-B/16 at 448 px (overlapping patches, slide step 12) and
PIM Swin-L at 384 px (window 12), batch 1. ``--tiny``: TransFG on a ViT-Ti (fgvc's ``vit_ti16``: 192 wide, 12
layers, 3 heads) and PIM on a Swin-T (window 7), both at 224 px, for a quick run on a CPU. ``--size`` and
``--batch`` replace every case's own. Prints a Markdown table (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from authors_cal import cal_case  # noqa: E402
from authors_pim import pim_case  # noqa: E402
from authors_transfg import transfg_case  # noqa: E402

from fgvc.config import load_config  # noqa: E402
from fgvc.engine.optim import build_optimizer  # noqa: E402
from fgvc.engine.trainer import run_passes  # noqa: E402
from fgvc.models import create_model, model_spec  # noqa: E402
from fgvc.models.output import TrainPass  # noqa: E402


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
              y: torch.Tensor, *, clip: float | None = None,
              scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
              channels_last: bool = False) -> Callable[[], None]:
    """What the trainer does per batch (``run_passes``: each pass's backward, a step after a pass that asks for one
    and after the last; the passes are ``ModelSpec.train_passes``, or one forward and ``model.loss`` when it has
    none), fp32, no accumulation. ``clip``: the gradients' total norm clipped before each step
    (``optim.clip_grad_norm``); ``scheduler``: stepped after the batch, as the trainer steps its per-step schedule;
    ``channels_last`` (``train.channels_last``): the model's weights in NHWC once, each batch converted in the step,
    as the trainer does."""
    passes_of = model_spec(method).train_passes
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)

    def passes() -> Iterator[TrainPass]:
        batch = x.contiguous(memory_format=memory_format)
        if passes_of is not None:
            yield from passes_of(model, model, batch, y, 0)
            return
        out = model(batch)
        loss, terms = model.loss(out, y, epoch=0)
        yield TrainPass(out, loss, terms)

    def optimizer_step() -> None:
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step() -> None:
        run_passes(passes(), lambda loss: loss.backward(), optimizer_step, True)
        if scheduler is not None:
            scheduler.step()

    return step


def same_loss(name: str, models: Sequence[torch.nn.Module], theirs: Callable[[], torch.Tensor],
              ours: Callable[[], torch.Tensor], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """A one-time check that the two sides compute the same model: ``theirs()`` and ``ours()`` (one forward and the
    loss each) in train mode without gradient, with every dropout and stochastic depth of ``models`` off for the
    call (restored after), must agree within float32 rounding. BatchNorm statistics move once, on both alike."""
    saved = []
    for model in models:
        for module in model.modules():
            for attr in ("p", "drop_prob"):  # nn.Dropout's rate; timm's DropPath (stochastic depth)
                rate = getattr(module, attr, None)
                if isinstance(rate, float) and (attr == "drop_prob" or isinstance(module, torch.nn.Dropout)):
                    saved.append((module, attr, rate))
                    setattr(module, attr, 0.0)
    try:
        with torch.no_grad():
            a, b = float(theirs()), float(ours())
    finally:
        for module, attr, rate in saved:
            setattr(module, attr, rate)
    print(f"{name}: one forward and loss, dropout off: authors' {a:.6f}, fgvc {b:.6f} "
          f"(difference {abs(a - b):.2e})", file=sys.stderr)
    if abs(a - b) > atol + rtol * abs(a):
        raise AssertionError(f"{name}: the two sides' losses differ ({a} against {b}): not the same model or "
                             "not the same loss; the timing would compare different work")


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
    preset = load_config("pmg_resnet50_cub")  # fgvc's optimiser and memory format as its trainer takes them
    optim = preset.optim
    assert (optim.lr, optim.backbone_lr, optim.momentum, optim.weight_decay) == (0.002, 0.0002, 0.9, 5e-4)
    our_opt = build_optimizer(ours, optim, model_spec("pmg").param_groups)

    def their_step() -> None:  # their train.py loop body, one batch
        for step, n in enumerate([8, 4, 2, None]):
            their_opt.zero_grad()
            inputs = utils.jigsaw_generator(x, n) if n else x
            outputs = theirs(inputs)
            loss = F.cross_entropy(outputs[step], y) * (2 if n is None else 1)
            loss.backward()
            their_opt.step()

    ours_step = fgvc_step("pmg", ours, our_opt, x, y, channels_last=preset.train.channels_last)
    return their_step, ours_step, f"pmg (ResNet-50, {args.size} px, batch {args.batch})"


def _sized(args: argparse.Namespace, size: int, batch: int) -> argparse.Namespace:
    """``args`` with a case's own input size and batch where the command line gives none."""
    return argparse.Namespace(**{**vars(args), "size": args.size or size, "batch": args.batch or batch})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pmg", type=Path, help="a checkout of PRIS-CV/PMG-Progressive-Multi-Granularity-Training")
    parser.add_argument("--cal", type=Path, help="the fgvc/ folder of a checkout of raoyongming/CAL")
    parser.add_argument("--transfg", type=Path, help="a checkout of TACJu/TransFG")
    parser.add_argument("--pim", type=Path, help="a checkout of chou141253/FGVC-PIM (with its vendored timm)")
    parser.add_argument("--tiny", action="store_true",
                        help="TransFG on a ViT-Ti and PIM on a Swin-T, at 224 px (PMG and CAL unchanged)")
    parser.add_argument("--size", type=int, help="input size of every case (default: each case's own)")
    parser.add_argument("--batch", type=int, help="batch size of every case (default: PMG, CAL 2; TransFG, PIM 1)")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    cases = []
    if args.pmg:
        cases.append(pmg_case(args.pmg, _sized(args, 448, 2)))
    if args.cal:
        cases.append(cal_case(args.cal, _sized(args, 448, 2), _import_from, _converted, fgvc_step))
    if args.transfg:
        cases.append(transfg_case(args.transfg, _sized(args, 224 if args.tiny else 448, 1), _import_from,
                                  _converted, fgvc_step, same_loss))
    if args.pim:
        cases.append(pim_case(args.pim, _sized(args, 224 if args.tiny else 384, 1), _import_from, _converted,
                              fgvc_step, same_loss))
    if not cases:
        parser.error("give --pmg, --cal, --transfg and/or --pim: the folder of the authors' code to measure against")
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
