"""PIM's side of ``benchmarks/authors.py``: the authors' training-loop body and fgvc's, on the same weights.

Their PluginMoodel runs on the Swin of the timm 0.4.12 they vendor in their repository (edited to return the four
stage outputs); fgvc's runs on the installed timm. Both are imported in one process: the installed timm is imported
first (fgvc's model is built first), then, for the import and the construction of theirs only, ``sys.modules`` holds
no ``timm*`` entry so that ``import timm`` finds their copy, and the installed timm's entries are put back after.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import yaml
from authors_common import STEPS_PER_EPOCH, batch, converted, fgvc_step, import_from, same_loss
from torch import nn

from fgvc.config import load_config
from fgvc.models import create_model

PRESET = "pim_swinl_cub"  # fgvc's recipe of their settings: SGD lr 5e-4, momentum 0.9, nesterov, weight decay 5e-4
THEIR_CONFIG = "configs/CUB200_SwinT.yaml"  # their CUB run: Swin-L 384 (their "swin-t" builds a Swin-L), FPN 1536
LAYERS = ("layer1", "layer2", "layer3", "layer4")


def _is_timm(name: str) -> bool:
    return name == "timm" or name.startswith("timm.")


@contextlib.contextmanager
def _their_timm() -> Iterator[None]:
    """Inside: no ``timm*`` module in ``sys.modules`` (an ``import timm`` with their checkout first on the path
    imports their vendored copy); on exit their entries are dropped and the installed timm's put back."""
    installed = {name: sys.modules.pop(name) for name in list(sys.modules) if _is_timm(name)}
    try:
        yield
    finally:
        for name in [name for name in sys.modules if _is_timm(name)]:
            del sys.modules[name]
        sys.modules.update(installed)


def _source(module: nn.Module) -> str:
    """The file a module's forward was compiled from (not looked up through ``sys.modules`` by module name, which
    after the swap names the installed timm's module for theirs too)."""
    return type(module).forward.__code__.co_filename


def pim_case(folder: Path, args: argparse.Namespace) -> tuple[Callable[[], None], Callable[[], None], str]:
    """Swin-L at 384 px, window 12 (``--tiny``: Swin-T at 224 px, window 7), FPN, weakly supervised selector and
    graph combiner with their CUB settings (FPN 1536 and 2048/512/128/32 selected tokens; tiny: FPN 768, the same
    shares of Swin-T's tokens); their main.py step (fp32, update_freq 1): forward, loss with lambda_b, lambda_s,
    lambda_n, lambda_c, backward, SGD step (nesterov, momentum 0.9, weight decay 5e-4), their per-step lr set
    before."""
    theirs_cfg = yaml.safe_load((folder / THEIR_CONFIG).read_text(encoding="utf-8"))
    lambdas = {k: float(theirs_cfg[k]) for k in ("lambda_b", "lambda_s", "lambda_n", "lambda_c")}
    import timm as installed_timm  # what fgvc's Swin is built from

    if args.tiny:  # fpn_size and num_selects: fgvc's defaults (Swin-T's last width; their shares of its tokens)
        backbone, their_backbone, fpn_size, selects = "swin_t", "swin_tiny_patch4_window7_224", None, None
    else:
        backbone, their_backbone = "swin_l384", "swin_large_patch4_window12_384_in22k"
        fpn_size, selects = int(theirs_cfg["fpn_size"]), [int(theirs_cfg["num_selects"][k]) for k in LAYERS]
    ours = create_model("pim", args.classes, backbone=backbone, input_size=args.size, fpn_size=fpn_size,
                        num_selects=selects, **lambdas).train()
    num_selects = dict(zip(LAYERS, ours.num_selects, strict=True))

    with _their_timm():
        their_timm, pim_module, lr_schedule = import_from(folder, "timm", "models.pim_module.pim_module",
                                                          "utils.lr_schedule")
        torch.manual_seed(0)
        swin = their_timm.create_model(their_backbone, pretrained=False, img_size=args.size)
        swin.train()
        # their builder's build_swintransformer, but for the Swin given (theirs always makes a Swin-L)
        theirs = pim_module.PluginMoodel(
            backbone=swin, return_nodes=None, img_size=args.size, use_fpn=True, fpn_size=ours.fpn_size,
            proj_type="Linear", upsample_type="Conv", use_selection=True, num_classes=args.classes,
            num_selects=num_selects, use_combiner=num_selects, comb_proj_size=None).train()
    theirs_from, ours_from = _source(theirs.backbone), _source(ours.backbone.body)
    print(f"pim: the authors' Swin from {theirs_from} (timm {their_timm.__version__}); fgvc's from {ours_from} "
          f"(timm {installed_timm.__version__}); FPN {ours.fpn_size}, selects {'/'.join(map(str, ours.num_selects))}",
          file=sys.stderr)
    assert str(folder.resolve()) in str(Path(theirs_from).resolve()), theirs_from
    assert str(folder.resolve()) not in str(Path(ours_from).resolve()), ours_from
    assert sys.modules["timm"] is installed_timm

    converted("pim", theirs.state_dict(), ours)
    x, y = batch(args)
    classes = args.classes  # their update_freq 1 (a step every batch, as fgvc_step): their loss / 1 left out

    def their_loss(outs: dict[str, torch.Tensor]) -> torch.Tensor:  # main.py train(): the loss over the outputs
        loss = 0.0
        for name in outs:
            if "select_" in name:
                if lambdas["lambda_s"] != 0:
                    s = outs[name].size(1)
                    logit = outs[name].view(-1, classes).contiguous()
                    loss += lambdas["lambda_s"] * nn.CrossEntropyLoss()(logit, y.unsqueeze(1).repeat(1, s).flatten(0))
            elif "drop_" in name:
                if lambdas["lambda_n"] != 0:
                    s = outs[name].size(1)
                    logit = outs[name].view(-1, classes).contiguous()
                    n_preds = nn.Tanh()(logit)
                    labels_0 = torch.zeros([y.size(0) * s, classes]) - 1
                    loss += lambdas["lambda_n"] * nn.MSELoss()(n_preds, labels_0)
            elif "layer" in name:
                if lambdas["lambda_b"] != 0:
                    loss += lambdas["lambda_b"] * nn.CrossEntropyLoss()(outs[name].mean(1), y)
            elif "comb_outs" in name and lambdas["lambda_c"] != 0:
                loss += lambdas["lambda_c"] * nn.CrossEntropyLoss()(outs[name], y)
        return loss

    # rtol 1e-3: tokens of exactly equal confidence (float32 ties, frequent among thousands of tokens of an
    # untrained model) may be put in either order by the two sorts (torch.sort is not stable; theirs sorts each
    # image, fgvc the batch), which reorders the combiner's input: seen up to 3e-5 of the loss, where one bias
    # moved by noise of std 1e-2 moves it by 5e-3
    same_loss("pim", (theirs, ours), lambda: their_loss(theirs(x)), lambda: ours.loss(ours(x), y, epoch=0)[0],
              rtol=1e-3)

    their_opt = torch.optim.SGD(theirs.parameters(), lr=float(theirs_cfg["max_lr"]), nesterov=True, momentum=0.9,
                                weight_decay=float(theirs_cfg["wdecay"]))
    schedule_args = argparse.Namespace(max_epochs=theirs_cfg["max_epochs"], warmup_batchs=theirs_cfg["warmup_batchs"],
                                       max_lr=float(theirs_cfg["max_lr"]))
    schedule = lr_schedule.cosine_decay(schedule_args, STEPS_PER_EPOCH)
    preset = load_config(PRESET)
    assert (preset.optim.lr, preset.optim.weight_decay, preset.optim.nesterov) == (
        float(theirs_cfg["max_lr"]), float(theirs_cfg["wdecay"]), True), preset.optim
    iteration = 0

    def their_step() -> None:  # their main.py train() loop body, one batch (use_amp off)
        nonlocal iteration
        theirs.train()
        lr_schedule.adjust_lr(iteration % len(schedule), their_opt, schedule)
        iteration += 1
        loss = their_loss(theirs(x))
        loss.backward()
        their_opt.step()
        their_opt.zero_grad()

    ours_step = fgvc_step("pim", ours, preset, x, y, steps_per_epoch=STEPS_PER_EPOCH)
    name = "Swin-T" if args.tiny else "Swin-L"
    return their_step, ours_step, f"pim ({name}, {args.size} px, batch {args.batch})"
