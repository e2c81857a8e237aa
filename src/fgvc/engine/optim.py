"""Optimiser and learning-rate schedule from the config.

One ``LambdaLR`` stepped after every optimiser step expresses all schedules, so resuming and
gradient accumulation need no special cases:

* ``cosine`` — annealed over the whole run (``epochs x steps_per_epoch``), with optional linear
  warm-up: the fix of REFERENCE F1.
* ``cosine`` + ``reference_per_batch`` — the behaviour of one paper's code (REFERENCE F1), kept for parity: cosine
  with ``T_max = epochs`` advanced every batch *before* the optimiser step, which makes the rate
  periodic with period ``2 x epochs`` batches.
* ``cosine`` + ``per_epoch`` — the rate set once per epoch from the epoch number, as one paper's code does:
  ``lr / 2 * (cos(pi * epoch / epochs) + 1)`` (epoch counted from 0), constant within the epoch.
* ``multistep`` — ``MultiStepLR(milestones, gamma)`` at epoch granularity (epochs count
  from 0 here, so milestone 60 starts at the 61st epoch, as in the reference).
* ``exponential`` — ``gamma ** (epochs elapsed / period_epochs)``, the elapsed epochs fractional and counted
  every step: ``gamma: 0.9``, ``period_epochs: 2`` is one paper's ``lr * 0.9 ** ((epoch + i / len(loader)) / 2)``
  set before iteration ``i``; with ``per_epoch`` the fraction is dropped (``gamma ** (epoch / period_epochs)``).
* ``constant``.

``per_epoch`` evaluates a decaying schedule at the first step of each epoch; a warm-up stays linear per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import OptimConfig, ScheduleConfig
from ..errors import ConfigError

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: nn.Module, cfg: OptimConfig,
                    param_groups: Callable[[nn.Module], dict[str, list[nn.Parameter]]] | None = None,
                    ) -> torch.optim.Optimizer:
    """SGD (the papers') or AdamW; with ``param_groups`` (the model spec's) the backbone
    gets its own rate when ``backbone_lr`` is set."""
    if cfg.backbone_lr is not None and param_groups is not None:
        groups = param_groups(model)
        params = [{"params": groups["new"], "lr": cfg.lr, "name": "new"},
                  {"params": groups["backbone"], "lr": cfg.backbone_lr, "name": "backbone"}]
    else:
        params = [{"params": list(model.parameters()), "lr": cfg.lr, "name": "all"}]
    if cfg.name == "sgd":
        options = {"lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "nesterov": cfg.nesterov}
        if _fused_sgd_applies(model):
            try:
                return FusedSGD(params, **options, fused=True)
            except (TypeError, RuntimeError):  # a torch without fused SGD (before 2.4 on the CPU): the loop. Newer
                pass  # torch checks devices at the first step, so _fused_sgd_applies is what guards them
        return torch.optim.SGD(params, **options)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.name: unknown optimizer {cfg.name!r}; known: sgd, adamw")


class FusedSGD(torch.optim.SGD):
    """torch's SGD with ``fused=True``, for parameters whose first gradient comes in different steps. The fused
    kernel takes a step's momentum buffers all missing (the first step) or all present: PMG's passes each train
    some heads first, and a checkpoint of an earlier run holds buffers only for what had stepped. Before each step
    (a step pre-hook, so torch's own step wrapper runs once) a parameter about to take its first step gets a zero
    buffer — ``momentum · 0 + grad`` is the grad exactly, the loop's first-step buffer (fgvc's SGD has no
    dampening) — and a buffer whose memory layout is not its parameter's (one loaded from a checkpoint written in
    another layout) is copied into the parameter's: the CPU kernel indexes parameter, gradient and buffer alike."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_step_pre_hook(_momentum_buffers_for_the_fused_kernel)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A saved optimiser's groups replace these (torch keeps only ``params``), so one saved by the per-tensor
        loop (``fused`` None or False) would turn this one back into the loop — and under fp16 autocast, with the
        GradScaler handing it its scale as to a fused optimiser, make it fail. The kernel choice is not state."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["fused"], group["foreach"] = True, None


def _momentum_buffers_for_the_fused_kernel(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
    with torch.no_grad():
        for group in optimizer.param_groups:
            if group["momentum"] == 0:
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = optimizer.state[p]
                buffer = state.get("momentum_buffer")
                if buffer is None:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif buffer.stride() != p.stride():
                    state["momentum_buffer"] = torch.empty_like(p, memory_format=torch.preserve_format).copy_(buffer)


def _fused_sgd_applies(model: nn.Module) -> bool:
    """SGD's fused kernel (one pass per tensor: weight decay, momentum and the update together) gives the
    per-tensor loop's values up to rounding (it may fuse a multiply and an add; tested) in about 60% of its time
    on the CPU, where torch's default is that loop. Used where every parameter is a floating-point tensor on the
    CPU or a CUDA device."""
    params = list(model.parameters())
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def lr_factor(cfg: ScheduleConfig, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base rate for the optimiser step with index ``it`` (0-based)."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = cfg.warmup_epochs * steps_per_epoch

    def warm(it: int) -> float:
        return (it + 1) / warmup if it < warmup else 1.0

    def decay_step(it: int) -> int:
        """The step the decay is evaluated at: the epoch's first under ``per_epoch``."""
        return it - it % steps_per_epoch if cfg.per_epoch else it

    if cfg.name == "cosine" and cfg.reference_per_batch:
        return lambda it: 0.5 * (1 + math.cos(math.pi * (it + 1) / epochs))
    if cfg.name == "cosine":
        def cosine(it: int) -> float:
            if it < warmup:
                return warm(it)
            progress = (decay_step(it) - warmup) / max(total - warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return cosine
    if cfg.name == "exponential":
        def exponential(it: int) -> float:
            if it < warmup:
                return warm(it)
            return cfg.gamma ** ((decay_step(it) - warmup) / steps_per_epoch / cfg.period_epochs)
        return exponential
    if cfg.name == "multistep":
        milestones = sorted(cfg.milestones)
        return lambda it: warm(it) * cfg.gamma ** sum(it // steps_per_epoch >= m for m in milestones)
    if cfg.name == "constant":
        return warm
    raise ConfigError(f"schedule.name: unknown schedule {cfg.name!r}; known: cosine, multistep, exponential, constant")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, epochs, steps_per_epoch))
