"""What every case of ``benchmarks/authors.py`` shares: importing the authors' modules, converting their weights
into fgvc's model, fgvc's training step as the trainer runs it, the one-time same-loss check, the seeded batch."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from fgvc.config import Config
from fgvc.engine.optim import build_optimizer, build_scheduler
from fgvc.engine.trainer import run_passes
from fgvc.models import model_spec
from fgvc.models.output import TrainPass

STEPS_PER_EPOCH = 375  # CUB's 5 994 training images in batches of 16 (per-step schedules)


def batch(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """The timed batch: seeded-normal images of the case's size and labels cycling through the classes."""
    return torch.randn(args.batch, 3, args.size, args.size), torch.arange(args.batch) % args.classes


def import_from(folder: Path, *names: str) -> list:
    """The authors' modules, imported from their checkout (put first on sys.path for the duration)."""
    sys.path.insert(0, str(folder))
    for name in list(sys.modules):  # both repositories have a top-level `utils`: never the other one's
        if name.split(".")[0] in {"utils", "model", "models", "Resnet", *names}:
            del sys.modules[name]
    try:
        return [importlib.import_module(n) for n in names]
    finally:
        sys.path.remove(str(folder))


def converted(method: str, authors_state: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    layout = model_spec(method).authors_layout
    assert layout is not None
    state = {layout.buffers[k] if k in layout.buffers else layout.rename(k): v for k, v in authors_state.items()}
    state = {k: v for k, v in state.items() if k is not None}
    model.load_state_dict(state, strict=True)


def fgvc_step(method: str, model: torch.nn.Module, preset: Config, x: torch.Tensor, y: torch.Tensor, *,
              steps_per_epoch: int | None = None) -> Callable[[], None]:
    """What the trainer does per batch (``run_passes``: each pass's backward, a step after a pass that asks for one
    and after the last; the passes are ``ModelSpec.train_passes``, or one forward and ``model.loss`` when it has
    none), fp32, no accumulation, with what the trainer takes from the method's ``preset``: the optimiser
    (``build_optimizer``: fused SGD, the spec's parameter groups), the gradients' total norm clipped before each step
    (``optim.clip_grad_norm``), the weights in NHWC once and each batch converted in the step
    (``train.channels_last``) and, given ``steps_per_epoch``, the per-step schedule stepped after the batch."""
    spec = model_spec(method)
    memory_format = torch.channels_last if preset.train.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)  # as the trainer: the layout first, then the optimiser
    optimizer = build_optimizer(model, preset.optim, spec.param_groups)
    scheduler = (None if steps_per_epoch is None else
                 build_scheduler(optimizer, preset.schedule, preset.train.epochs, steps_per_epoch))
    clip = preset.optim.clip_grad_norm

    def passes() -> Iterator[TrainPass]:
        images = x.contiguous(memory_format=memory_format)
        if spec.train_passes is not None:
            yield from spec.train_passes(model, model, images, y, 0)
            return
        out = model(images)
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
    for module in (m for model in models for m in model.modules()):
        attr = "p" if isinstance(module, torch.nn.Dropout) else "drop_prob"  # timm's DropPath (stochastic depth)
        rate = getattr(module, attr, None)
        if isinstance(rate, float):
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


