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
import platform
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from authors_cal import cal_case  # noqa: E402
from authors_common import batch, converted, fgvc_step, import_from  # noqa: E402
from authors_pim import pim_case  # noqa: E402
from authors_transfg import transfg_case  # noqa: E402
from run import timed_against  # noqa: E402

from fgvc.config import load_config  # noqa: E402
from fgvc.models import create_model  # noqa: E402


def pmg_case(folder: Path, args: argparse.Namespace) -> tuple[Callable[[], None], Callable[[], None], str]:
    resnet, their_model, utils = import_from(folder, "Resnet", "model", "utils")
    theirs = their_model.PMG(resnet.resnet50(pretrained=False), 512, args.classes).train()
    ours = create_model("pmg", args.classes, backbone="resnet50").train()
    converted("pmg", theirs.state_dict(), ours)
    x, y = batch(args)

    def groups(net):
        new = [net.classifier_concat, net.conv_block1, net.classifier1, net.conv_block2, net.classifier2,
               net.conv_block3, net.classifier3]
        return [{"params": m.parameters(), "lr": 0.002} for m in new] + [{"params": net.features.parameters(),
                                                                          "lr": 0.0002}]

    their_opt = torch.optim.SGD(groups(theirs), momentum=0.9, weight_decay=5e-4)
    preset = load_config("pmg_resnet50_cub")  # fgvc's optimiser and memory format as its trainer takes them
    optim = preset.optim
    assert (optim.lr, optim.backbone_lr, optim.momentum, optim.weight_decay) == (0.002, 0.0002, 0.9, 5e-4)

    def their_step() -> None:  # their train.py loop body, one batch
        for step, n in enumerate([8, 4, 2, None]):
            their_opt.zero_grad()
            inputs = utils.jigsaw_generator(x, n) if n else x
            outputs = theirs(inputs)
            loss = F.cross_entropy(outputs[step], y) * (2 if n is None else 1)
            loss.backward()
            their_opt.step()

    return their_step, fgvc_step("pmg", ours, preset, x, y), f"pmg (ResNet-50, {args.size} px, batch {args.batch})"


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
        cases.append(cal_case(args.cal, _sized(args, 448, 2)))
    if args.transfg:
        cases.append(transfg_case(args.transfg, _sized(args, 224 if args.tiny else 448, 1)))
    if args.pim:
        cases.append(pim_case(args.pim, _sized(args, 224 if args.tiny else 384, 1)))
    if not cases:
        parser.error("give --pmg, --cal, --transfg and/or --pim: the folder of the authors' code to measure against")
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, fp32\n")
    print("| method | authors' step (s, median) | fgvc step (s, median) | fgvc / authors | authors min/max "
          "| fgvc min/max |")
    print("|---|---|---|---|---|---|")
    for theirs, ours, name in cases:
        random.seed(0)
        torch.manual_seed(0)
        ref, mine = timed_against(theirs, ours, args.iters, args.warmup, torch.device("cpu"), abba=True)
        r, m = statistics.median(ref), statistics.median(mine)
        print(f"| {name} | {r:.3f} | {m:.3f} | {m / r:.2f} | {min(ref):.3f}/{max(ref):.3f} | "
              f"{min(mine):.3f}/{max(mine):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
