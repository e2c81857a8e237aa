"""TransFG's side of ``benchmarks/authors.py``: the authors' training-loop body and fgvc's, on the same weights."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from authors_common import STEPS_PER_EPOCH, batch, converted, fgvc_step, import_from, same_loss

from fgvc.config import load_config
from fgvc.models import create_model
from fgvc.models.vit import VIT_CONFIGS

PRESET = "transfg_vitb16_cub"  # fgvc's recipe of their settings: SGD lr 3e-2, momentum 0.9, no decay, clip at 1
# their train.py defaults: --learning_rate 3e-2, --weight_decay 0, --warmup_steps 500, --num_steps 10000,
# --max_grad_norm 1.0, --smoothing_value 0 (their README's command line sets none of these)
LR, WARMUP_STEPS, TOTAL_STEPS, MAX_GRAD_NORM = 3e-2, 500, 10_000, 1.0


class _AttributeDict(dict):
    """What their configs.py needs of ``ml_collections.ConfigDict`` (not installed here): a dict whose entries are
    also attributes."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value) -> None:
        self[name] = value


def _their_modules(folder: Path) -> list:
    """Their ``models.modeling`` and ``utils.scheduler``; without ml_collections a stand-in module is in
    ``sys.modules`` for the import (their configs are built then) and removed after."""
    stub = importlib.util.find_spec("ml_collections") is None
    if stub:
        sys.modules["ml_collections"] = types.SimpleNamespace(ConfigDict=_AttributeDict)  # type: ignore[assignment]
    try:
        return import_from(folder, "models.modeling", "utils.scheduler")
    finally:
        if stub:
            del sys.modules["ml_collections"]


def transfg_case(folder: Path, args: argparse.Namespace) -> tuple[Callable[[], None], Callable[[], None], str]:
    """ViT-B/16 (``--tiny``: ViT-Ti, fgvc's ``vit_ti16``) with overlapping patches (slide step 12), dropout 0.1,
    attention dropout 0; their step: forward with labels (cross-entropy + contrastive loss), backward,
    ``clip_grad_norm_(1.0)``, WarmupCosineSchedule step, SGD (momentum 0.9, no decay) step."""
    modeling, scheduler = _their_modules(folder)
    preset = load_config(PRESET)
    options = preset.model.options  # split overlap, slide_step 12, smoothing 0
    backbone = "vit_ti16" if args.tiny else "vit_b16"
    vit = VIT_CONFIGS[backbone]
    config = copy.deepcopy(modeling.CONFIGS["ViT-B_16"])  # their train.py: CONFIGS[model_type], then the split
    config.split, config.slide_step = options["split"], options["slide_step"]
    if args.tiny:  # the same architecture, narrower: fgvc's vit_ti16
        config.hidden_size = vit.width
        config.transformer.mlp_dim, config.transformer.num_heads = vit.mlp, vit.heads
    layout = (config.hidden_size, config.transformer.mlp_dim, config.transformer.num_heads,
              config.transformer.num_layers, tuple(config.patches.size))
    assert layout == (vit.width, vit.mlp, vit.heads, vit.depth, (vit.patch, vit.patch)), (layout, vit)
    torch.manual_seed(0)
    theirs = modeling.VisionTransformer(config, args.size, zero_head=True, num_classes=args.classes,
                                        smoothing_value=options["smoothing"]).train()
    with torch.no_grad():  # not their zero init: the class token and position embeddings drawn N(0, 0.25), so
        # that each head's choice of patch has a clear margin (decided by the weights, not by rounding: both sides
        # select the same patches, as the check below needs)
        emb = theirs.transformer.embeddings
        emb.position_embeddings.normal_(0.0, 0.5)
        emb.cls_token.normal_(0.0, 0.5)
    ours = create_model("transfg", args.classes, backbone=backbone, img_size=args.size, **options,
                        dropout=config.transformer["dropout_rate"],
                        attention_dropout=config.transformer["attention_dropout_rate"]).train()
    converted("transfg", theirs.state_dict(), ours)
    x, y = batch(args)

    same_loss("transfg", (theirs, ours), lambda: theirs(x, y)[0].mean(),
              lambda: ours.loss(ours(x), y, epoch=0)[0])

    their_opt = torch.optim.SGD(theirs.parameters(), lr=LR, momentum=0.9, weight_decay=0)
    their_schedule = scheduler.WarmupCosineSchedule(their_opt, warmup_steps=WARMUP_STEPS, t_total=TOTAL_STEPS)
    assert preset.optim.clip_grad_norm == MAX_GRAD_NORM and preset.optim.lr == LR
    # their order (the schedule stepped before the optimiser) makes torch warn once; it is theirs
    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")

    def their_step() -> None:  # their train.py loop body, one batch (fp32, gradient_accumulation_steps 1)
        loss, _ = theirs(x, y)
        loss = loss.mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), MAX_GRAD_NORM)
        their_schedule.step()
        their_opt.step()
        their_opt.zero_grad()

    ours_step = fgvc_step("transfg", ours, preset, x, y, steps_per_epoch=STEPS_PER_EPOCH)
    name = "ViT-Ti/16" if args.tiny else "ViT-B/16"
    return their_step, ours_step, (f"transfg ({name}, {args.size} px, {options['split']} {options['slide_step']}, "
                                   f"batch {args.batch})")
