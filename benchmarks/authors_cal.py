"""CAL's side of ``benchmarks/authors.py``: the authors' training-loop body and fgvc's, on the same weights."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from authors_common import batch, converted, fgvc_step, import_from

from fgvc.config import load_config
from fgvc.models import create_model


def cal_case(folder: Path, args: argparse.Namespace) -> tuple[Callable[[], None], Callable[[], None], str]:
    """ResNet-101, 32 attention maps, the authors' SGD (lr 1e-3, momentum 0.9, weight decay 1e-5), beta 0.05."""
    models, utils = import_from(folder, "models", "utils")
    theirs = models.WSDAN_CAL(num_classes=args.classes, M=32, net="resnet101", pretrained=False).train()
    ours = create_model("cal", args.classes, backbone="resnet101").train()
    center = torch.zeros(args.classes, 32 * theirs.num_features)
    converted("cal", {**theirs.state_dict(), "feature_center": center.clone()}, ours)
    center_loss = utils.CenterLoss()
    x, y = batch(args)
    their_opt = torch.optim.SGD(theirs.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-5)
    preset = load_config("cal_resnet101_cub")  # fgvc's optimiser and memory format as its trainer takes them
    assert (preset.optim.lr, preset.optim.momentum, preset.optim.weight_decay) == (1e-3, 0.9, 1e-5), preset.optim

    def their_step() -> None:  # their train_distributed.py train() body, one batch
        their_opt.zero_grad()
        raw, aux, feature_matrix, attention_map = theirs(x)
        batch_center = F.normalize(center[y], dim=-1)
        center[y] += 0.05 * (feature_matrix.detach() - batch_center)
        with torch.no_grad():
            crop = utils.batch_augment(x, attention_map[:, :1], mode="crop", theta=(0.4, 0.6), padding_ratio=0.1)
            drop = utils.batch_augment(x, attention_map[:, 1:], mode="drop", theta=(0.2, 0.5))
        aug, aux_aug, _, _ = theirs(torch.cat([crop, drop]))
        y_aug = torch.cat([y, y])
        loss = (F.cross_entropy(raw, y) / 3.0 + F.cross_entropy(torch.cat([aux, aux_aug]), torch.cat([y, y_aug]))
                + F.cross_entropy(aug, y_aug) * 2.0 / 3.0 + center_loss(feature_matrix, batch_center))
        loss.backward()
        their_opt.step()

    return their_step, fgvc_step("cal", ours, preset, x, y), f"cal (ResNet-101, {args.size} px, batch {args.batch})"
