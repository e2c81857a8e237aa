"""The fit loop, model-agnostic: every model brings ``forward -> ModelOutput`` and ``loss``.

Reproducible and resumable: the training order and all random augmentation of epoch ``e``
derive from ``seed + e``, so two epochs straight and one epoch + resume + one epoch give the
same weights. ``last.pt`` is written atomically after every epoch (a killed run resumes from
it) and on SIGINT/SIGTERM mid-epoch together with the position in the epoch.
Validation is carved from the training split (saved as ``split.json``); the test split is never
used for model selection (REFERENCE F2). After the last epoch a temperature is fitted on the validation
split and stored in ``best.pt`` and ``last.pt`` (:meth:`Trainer.calibrate`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from ..config import Config
from ..data.split import apply_split, load_saved_split, save_split, stratified_split
from ..errors import CheckpointError, UserError
from ..fileio import atomic_write_text, remove_stale_temporaries
from ..models.output import ModelOutput, TrainPass
from .calibration import CALIBRATION_KEY, Calibration, calibrate
from .checkpoint import (
    capture_rng,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
    transfer_weights,
)
from .distributed import ShardSampler, barrier
from .evaluate import autocast_context, compute_metrics, infer
from .optim import build_optimizer, build_scheduler
from .run import Run
from .runlock import RunLock, discard_failed_start
from .tracking import create_tracker

__all__ = ["Trainer", "train", "resume", "run_passes"]

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _deterministic_algorithms() -> None:
    """What PyTorch needs for run-to-run identical results on one machine beyond our own seeding:
    deterministic kernels (cuDNN, scatter-add, ...) and cuBLAS's fixed workspace."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


class EpochSampler(DistributedSampler):
    """DistributedSampler (also for one process) that can start part-way into an epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return super().__len__() - self.skip


class Trainer:
    """Trains the model of a :class:`~fgvc.engine.run.Run` (new or resumed)."""

    def __init__(self, run: Run, *, init_from: str | Path | None = None, progress: bool = False) -> None:
        self.run, self.progress = run, progress
        self.config = config = run.config
        self.run_dir = run.run_dir if run.run_dir is not None else Path("runs") / config.name
        self.device, self.dist, self.amp_dtype = run.device, run.dist, run.amp_dtype
        self._stop_requested = False
        self.spec = run.spec

        resume_state = run.checkpoint
        self.index = run.dataset()
        if run.classes is None:
            run.classes = self.index.classes
        self.classes = run.classes
        self.train_index, self.val_index = self._split()

        if config.train.deterministic:
            _deterministic_algorithms()
        seed_everything(config.train.seed)  # the same initial weights for the same seed
        self.model = run.build_model(len(self.classes)).to(self.device)
        self.memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.transfer_report = None
        if init_from is not None and resume_state is None:
            self.transfer_report = self._transfer(init_from)
        self.train_loader = run.loader(self.train_index, True, sampler=self._train_sampler())
        self.steps_per_epoch = max(1, math.ceil(len(self.train_loader) / config.train.accumulate))
        self.optimizer = build_optimizer(self.model, config.optim, self.spec.param_groups)
        self.scheduler = build_scheduler(self.optimizer, config.schedule, config.train.epochs, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.epoch, self.step_in_epoch, self.best_top1, self.history = 0, 0, -1.0, []
        self._partial: dict[str, Any] = {}
        if resume_state is not None:
            self._restore(resume_state)
        self.ddp_model = (DistributedDataParallel(self.model, device_ids=[self.device.index]
                                                  if self.device.type == "cuda" else None,
                                                  find_unused_parameters=self.spec.unused_parameters)
                          if self.dist.enabled else self.model)
        # The compiled wrapper shares the model's parameters; checkpoints keep saving ``self.model``.
        self.train_forward = torch.compile(self.ddp_model) if config.train.compile else self.ddp_model
        self.val_loader = (run.loader(self.val_index, False,
                                      sampler=ShardSampler(len(self.val_index), self.dist.rank, self.dist.world_size))
                           if len(self.val_index) else None)
        self.tracker = self._tracker()

    # -- set-up ---------------------------------------------------------------------------------
    def _split(self):
        train_all = self.index.split("train")
        path = self.run_dir / "split.json"
        exists = path.is_file()
        # Every rank looks before rank 0 may write the file, and no collective depends on what a rank
        # saw: a barrier only in the "new split" branch deadlocked when rank 0 wrote it first.
        barrier()
        source = str(path)
        if self.run.checkpoint is not None and "val_ids" in self.run.checkpoint:
            val_ids, source = list(self.run.checkpoint["val_ids"]), str(self.run.checkpoint_path)
        elif exists:  # left by a start that did not finish: only if this config carves the same split
            val_ids = load_saved_split(path, train_all, self.config.data.val_fraction, self.config.data.split_seed)
        else:  # the split is deterministic: every rank computes the same one, rank 0 records it
            _, val_ids = stratified_split(train_all, self.config.data.val_fraction, self.config.data.split_seed)
            if self.dist.is_main:
                save_split(path, val_ids, self.config.data.split_seed, self.config.data.val_fraction)
        return apply_split(train_all, val_ids, source)

    def _train_sampler(self) -> EpochSampler:
        return EpochSampler(range(len(self.train_index)), num_replicas=self.dist.world_size, rank=self.dist.rank,
                            shuffle=True, seed=self.config.train.seed, drop_last=False)

    def _transfer(self, path: str | Path):
        source = Run.open(path, device="cpu")
        if source.config.model.name != self.config.model.name:
            raise UserError(f"--init-from {path} holds a {source.config.model.name} model; this run trains "
                            f"{self.config.model.name}")
        assert source.checkpoint is not None and source.classes is not None
        same = not source.classes.diff(self.classes)
        report = transfer_weights(self.model, source.checkpoint["model"], self.spec.head_prefixes,
                                  reinit_heads=not same, origin=f"checkpoint {source.checkpoint_path}")
        if self.dist.is_main:
            log.info(f"init from {source.checkpoint_path}: {report.describe()}")
        return report

    def _tracker(self):
        t = self.config.track
        return create_tracker(self.run_dir, self.config.to_dict(), wandb=t.wandb, wandb_mode=t.wandb_mode,
                              project=t.project, run_name=self.config.name, tensorboard=t.tensorboard,
                              enabled=self.dist.is_main)

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "partial": self._partial if self.step_in_epoch else {},
            "best_top1": self.best_top1,
            "rng": capture_rng(),
            "config": self.config.to_dict(),
            "preprocessing": self.run.preprocessing.to_dict(),  # the input, explicit (Run.preprocessing)
            "classes": self.classes.to_dict(),
            "val_ids": [s.image_id for s in self.val_index],
            "metrics": metrics or {},
            "history": self.history,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.run.load_weights(self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.best_top1, self.history = state["best_top1"], list(state["history"])
        self._partial = dict(state.get("partial") or {})
        self._resume_rng = state["rng"] if self.step_in_epoch else None
        if self.dist.is_main:
            self._recover_best(state)

    def _recover_best(self, state: dict[str, Any]) -> None:
        """A kill between writing ``last.pt`` and ``best.pt`` of the same epoch leaves ``best.pt``
        older than the best score ``last.pt`` records; ``last.pt`` then holds those very weights."""
        scored = [h for h in self.history if "val/top1" in h or "train/acc" in h]
        if not scored or self.best_top1 < 0:
            return
        best_epoch = next(h["epoch"] for h in scored if h.get("val/top1", h.get("train/acc")) == self.best_top1)
        path = self.run_dir / "best.pt"
        if path.is_file():
            try:
                if load_checkpoint(path).get("epoch") == best_epoch:
                    return
            except CheckpointError:
                pass  # damaged: rewritten below when last.pt holds the best weights
        if self.epoch == best_epoch and not self.step_in_epoch:
            save_checkpoint(path, {**state, "metrics": self.history[-1]})
            log.info(f"restored {path} from last.pt (epoch {best_epoch}, the recorded best; the previous run was "
                  "stopped while writing it)")
        else:
            log.warning("%s does not hold the recorded best (epoch %d); it will be rewritten at the next improvement",
                        path, best_epoch)
            self.best_top1 = -1.0

    def _save(self, name: str, metrics: dict[str, Any] | None = None) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run_dir / name, self._state(metrics))

    # -- loop -----------------------------------------------------------------------------------
    @contextmanager
    def _graceful_stop(self) -> Iterator[None]:
        """SIGINT/SIGTERM finish the current optimiser step, save ``last.pt`` mid-epoch, then stop."""
        def request(signum, frame):  # noqa: ARG001
            if self._stop_requested:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @property
    def interrupted(self) -> bool:
        """True when the last ``fit`` stopped on SIGINT/SIGTERM before its last epoch."""
        return self._stop_requested

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.train.epochs

    def fit(self, max_epochs: int | None = None) -> dict[str, Any]:
        """Train until ``train.epochs`` (or ``max_epochs`` more epochs, to time-box a session)."""
        cfg = self.config
        stop_at = cfg.train.epochs if max_epochs is None else min(cfg.train.epochs, self.epoch + max_epochs)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            self.classes.save(self.run_dir / "classes.json")
            log.info(f"run {self.run_dir}: {cfg.model.name}/{cfg.model.backbone} on {len(self.train_index)} train, "
                  f"{len(self.val_index)} val images, {len(self.classes)} classes, device {self.device}"
                  + (f" x{self.dist.world_size}" if self.dist.enabled else ""))
            warmup = self.spec.warmup_epochs(self.model)
            if warmup and self.epoch < warmup:
                log.info(f"{cfg.model.name}: the first {warmup} epoch(s) train some branches only (warm-up)")
        last_metrics: dict[str, Any] = {}
        with self._graceful_stop():
            while self.epoch < stop_at:
                train_stats = self._train_epoch()
                if self._stop_requested:
                    self._save("last.pt")
                    if self.dist.is_main:
                        log.info(f"stopped in epoch {self.epoch + 1} at step {self.step_in_epoch}; "
                              f"saved {self.run_dir / 'last.pt'} (resume with --resume {self.run_dir})")
                    break
                last_metrics = self._end_epoch(train_stats)
        if self.finished and not self._stop_requested:
            self.calibrate()
        self.tracker.close()
        return last_metrics

    # -- temperature ----------------------------------------------------------------------------
    def calibrate(self, announce: bool = True) -> dict[str, Calibration]:
        """Fit the temperature of ``best.pt`` and ``last.pt`` on the validation split and store it in
        each (atomically); a checkpoint that already carries one is left alone, so this also finishes a
        fit that a kill interrupted. The RNG streams are restored afterwards (building a model to load
        ``best.pt`` into draws from them), so a resumed run that trains on is unaffected. ``announce``:
        say so when no temperature is fitted (no validation split, or ``train.calibrate: false``)."""
        if not self.config.train.calibrate or self.val_loader is None:
            if self.dist.is_main and announce:
                why = "train.calibrate is off" if not self.config.train.calibrate else "no validation split"
                log.info(f"{why}: the temperature stays 1 (probabilities are the model's own, uncalibrated)")
            return {}
        states = {name: load_checkpoint(self.run_dir / name) for name in ("best.pt", "last.pt")
                  if (self.run_dir / name).is_file()}
        barrier()  # every rank has read the files before rank 0 rewrites them
        todo = {name: state for name, state in states.items() if CALIBRATION_KEY not in state}
        rng = capture_rng()
        fitted: dict[int, Calibration] = {}  # by epoch: best.pt and last.pt of one epoch hold one model
        try:
            for state in todo.values():
                if state["epoch"] not in fitted:
                    fitted[state["epoch"]] = self._fit_temperature(state)
        finally:
            restore_rng(rng)
        done = {name: fitted[state["epoch"]] for name, state in todo.items()}
        if self.dist.is_main:
            for name, state in todo.items():
                save_checkpoint(self.run_dir / name, {**state, CALIBRATION_KEY: done[name].to_dict()})
            for epoch, calibration in fitted.items():
                names = " and ".join(name for name, state in todo.items() if state["epoch"] == epoch)
                log.info(f"{calibration.describe()}; stored in {names} (epoch {epoch})")
        barrier()
        return done

    def _fit_temperature(self, state: dict[str, Any]) -> Calibration:
        """The temperature of the weights in ``state``, from their fp32 logits on the validation split."""
        model = self.run.build_model(len(self.classes), pretrained=False)
        model.load_state_dict(state["model"], strict=True)
        model = model.to(self.device, memory_format=self.memory_format)
        assert self.val_loader is not None
        result = infer(model, self.val_loader, self.device, None, progress=False, with_loss=False)
        return calibrate(result.logits, result.labels)

    def _train_epoch(self) -> dict[str, float]:
        cfg, model = self.config, self.ddp_model
        sampler: EpochSampler = self.train_loader.sampler  # type: ignore[assignment]
        sampler.set_epoch(self.epoch)
        sampler.skip = self.step_in_epoch * cfg.train.batch_size
        self.train_loader.dataset.augment_seed = cfg.train.seed * 100_003 + self.epoch  # type: ignore[attr-defined]
        resuming = bool(self.step_in_epoch) and getattr(self, "_resume_rng", None) is not None
        if not resuming:
            seed_everything(cfg.train.seed + self.epoch + 1000 * self.dist.rank)
            self._partial = {}
        batches = iter(self.train_loader)  # draws the loader's base seed from the RNG, as an unbroken epoch does
        if resuming:
            restore_rng(self._resume_rng)
            self._resume_rng = None
        model.train()
        p = self._partial
        loss_sum = torch.tensor(p.get("loss_sum", 0.0), device=self.device, dtype=torch.float64)
        correct = torch.tensor(p.get("correct", 0), device=self.device, dtype=torch.long)
        stat_names = dict(self.spec.step_stats)
        stat_sums = {k: torch.tensor(p.get("stats", {}).get(k, 0.0), device=self.device) for k in stat_names}
        seen_stats: set[str] = set(p.get("stats_seen", []))
        seen, skipped = p.get("seen", 0), p.get("skipped", 0)
        start = time.perf_counter() - p.get("elapsed", 0.0)
        batches_in_epoch = self.step_in_epoch + len(self.train_loader)
        bar = tqdm(batches, total=len(self.train_loader), desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
                   disable=not (self.progress and self.dist.is_main), leave=False)
        accumulate = cfg.train.accumulate
        for batch in bar:
            step_now = (self.step_in_epoch + 1) % accumulate == 0 or self.step_in_epoch + 1 == batches_in_epoch
            if batch is None:  # every image of the batch was unreadable (data.skip_unreadable)
                skipped += cfg.train.batch_size
                self.step_in_epoch += 1
                continue
            skipped += batch.get("skipped", 0)
            x = self.train_loader.prepare(batch["image"].to(self.device, non_blocking=True))
            x = x.contiguous(memory_format=self.memory_format)
            y = batch["label"].to(self.device, non_blocking=True)
            # DDP: all-reduce gradients only on the micro-batch that steps the optimiser
            sync = model.no_sync() if self.dist.enabled and not step_now else contextlib.nullcontext()
            try:
                with sync:
                    out, loss = self._run_passes(x, y, step_now)
            except torch.OutOfMemoryError:
                raise UserError(
                    f"out of memory at batch size {cfg.train.batch_size}, input {cfg.model.input_size} px: lower "
                    "train.batch_size (and raise train.accumulate to keep the effective batch), lower "
                    "model.input_size, or use train.amp=bf16"
                ) from None
            self.step_in_epoch += 1
            if step_now:
                self.scheduler.step()
            loss_sum += loss.detach().double() * len(y)
            correct += (out.logits.argmax(dim=1) == y).sum()
            for key in stat_names:
                if key in out.extras:
                    stat_sums[key] += out.extras[key].float().sum()
                    seen_stats.add(key)
            seen += len(y)
            if self.step_in_epoch % 10 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{float(correct) / seen:.3f}",
                                img_s=f"{seen / (time.perf_counter() - start):.1f}")
            if self._stop_requested and step_now:  # never between the micro-batches of one optimiser step
                break
        elapsed = time.perf_counter() - start
        self._partial = {"loss_sum": float(loss_sum), "correct": int(correct), "seen": seen, "skipped": skipped,
                         "elapsed": elapsed, "stats": {k: float(v) for k, v in stat_sums.items()},
                         "stats_seen": sorted(seen_stats)}
        stats = {"train/loss": float(loss_sum) / max(seen, 1), "train/acc": float(correct) / max(seen, 1),
                 "throughput/images_per_s": seen / max(elapsed, 1e-9) * self.dist.world_size}
        for key in sorted(seen_stats):
            stats[f"train/{stat_names[key]}"] = float(stat_sums[key])
        if skipped:
            stats["train/skipped_images"] = float(skipped)
            log.warning("epoch %d: skipped %d unreadable image(s); see the warnings above for their paths",
                        self.epoch + 1, skipped)
        return stats

    def _passes(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[TrainPass]:
        """The model's training iteration: its spec's ``train_passes``, or one forward and its loss."""
        if self.spec.train_passes is not None:
            yield from self.spec.train_passes(self.model, self.train_forward, x, y, self.epoch)
            return
        out = self.train_forward(x)
        loss, terms = self.model.loss(out, y, epoch=self.epoch)
        yield TrainPass(out, loss, terms)

    def _optimizer_step(self) -> None:
        clip = self.config.optim.clip_grad_norm
        if clip is not None:  # on the true gradients: unscaled first under fp16 (the scaler then skips its own)
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _run_passes(self, x: torch.Tensor, y: torch.Tensor, step_now: bool) -> tuple[ModelOutput, torch.Tensor]:
        """One batch's passes (:func:`run_passes`), each computed under autocast and back-propagated through the
        AMP scaler, divided by the accumulation count."""
        accumulate = self.config.train.accumulate
        try:
            return run_passes(self._passes(x, y), lambda loss: self.scaler.scale(loss / accumulate).backward(),
                              self._optimizer_step, step_now,
                              lambda: autocast_context(self.device, self.amp_dtype))
        except ValueError as e:
            raise RuntimeError(f"model {self.config.model.name}: {e}") from None

    def _end_epoch(self, stats: dict[str, float]) -> dict[str, Any]:
        cfg = self.config
        self.epoch += 1
        self.step_in_epoch = 0
        metrics: dict[str, Any] = dict(stats)
        for group in self.optimizer.param_groups:
            metrics[f"lr/{group.get('name', 'all')}"] = group["lr"]
        if self.val_loader is not None:
            result = infer(self.model, self.val_loader, self.device, self.amp_dtype, progress=False)
            val = compute_metrics(result, self.classes, self.val_index.samples,
                                  localisation=self.run.localises)
            metrics.update({f"val/{k}": v for k, v in val.items()
                            if isinstance(v, int | float) and v is not None and k != "images"})
        top1 = metrics.get("val/top1", metrics["train/acc"])
        improved = top1 > self.best_top1
        if improved:
            self.best_top1 = top1
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        self.history.append({"epoch": self.epoch, **scalars})
        self.tracker.log(scalars, step=self.epoch)
        self._save("last.pt", scalars)
        if improved:
            self._save("best.pt", scalars)
        if cfg.train.save_every and self.epoch % cfg.train.save_every == 0:
            self._save(f"epoch_{self.epoch:04d}.pt", scalars)
            if self.dist.is_main:
                prune_checkpoints(self.run_dir, cfg.train.keep)
        barrier()
        if self.dist.is_main:
            val_text = (f"val loss {metrics.get('val/loss') or float('nan'):.3f} top1 {metrics['val/top1']:.3f}"
                        if "val/top1" in metrics else "no validation split")
            log.info(f"epoch {self.epoch}/{cfg.train.epochs}: train loss {metrics['train/loss']:.3f} "
                  f"acc {metrics['train/acc']:.3f} | {val_text} | {metrics['throughput/images_per_s']:.1f} img/s"
                  + (" | best" if improved else ""))
        return metrics


def run_passes(passes: Iterator[TrainPass], backward: Callable[[torch.Tensor], None],
               optimizer_step: Callable[[], None], step_now: bool,
               context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
               ) -> tuple[ModelOutput, torch.Tensor]:
    """Back-propagate every pass of one batch as it is yielded (computed inside ``context()``); step the optimiser
    after a pass that asks for it and, when ``step_now`` (the batch completes an accumulation), after the last pass
    unless it just did. Returns the last pass's output and the sum of the passes' losses. The trainer's iteration,
    and what ``benchmarks/authors.py`` times."""
    total: torch.Tensor | None = None
    last: TrainPass | None = None
    stepped = False
    while True:
        with context():
            current = next(passes, None)
        if current is None:
            break
        last, stepped = current, False
        backward(current.loss)
        total = current.loss.detach() if total is None else total + current.loss.detach()
        if current.step and step_now:
            optimizer_step()
            stepped = True
    if last is None or total is None:
        raise ValueError("its train_passes yielded no pass")
    if step_now and not stepped:
        optimizer_step()
    return last.output, total


def train(config: Config, run_dir: str | Path, *, init_from: str | Path | None = None, progress: bool = False,
          after_fit: Callable[[Trainer], None] | None = None) -> Trainer:
    """A new run of ``config`` in ``run_dir`` (the library form of ``fgvc train``): the folder is this process's
    for the run's life (:class:`~fgvc.engine.runlock.RunLock`), a folder that already holds a run is refused rather
    than overwritten, and a start that fails before its first epoch leaves the folder as it found it.
    ``after_fit`` runs, still holding the folder, when the training was not interrupted (the CLI's report)."""
    return _fit_owned(Run.start(config, run_dir), new=True, init_from=init_from, progress=progress,
                      after_fit=after_fit)


def resume(run_dir: str | Path, *, data: str | Path | None = None, overrides: list[str] | None = None,
           progress: bool = False, after_fit: Callable[[Trainer], None] | None = None) -> Trainer:
    """Continue the run in ``run_dir`` exactly (the library form of ``fgvc train --resume``), holding the folder as
    :func:`train` does. It keeps its own config and folder: only ``data`` (a moved dataset) and the safe
    ``overrides`` may change. A run that has finished is left as it is (its temperature fit completed)."""
    return _fit_owned(Run.resume(run_dir, data=data, overrides=overrides), new=False, init_from=None,
                      progress=progress, after_fit=after_fit)


def _fit_owned(run: Run, *, new: bool, init_from: str | Path | None, progress: bool,
               after_fit: Callable[[Trainer], None] | None) -> Trainer:
    """Train ``run`` holding its folder: one process owns it (rank 0 under torchrun), stale temporaries of a killed
    writer are removed first, and a new run never writes over another run's checkpoints."""
    assert run.run_dir is not None
    main = run.dist.is_main
    discard = discard_failed_start(run.run_dir) if new and main else contextlib.nullcontext()
    with RunLock(run.run_dir) if main else contextlib.nullcontext(), discard:
        if main:
            for path in remove_stale_temporaries(run.run_dir):
                log.info("removed %s, left by a run that was killed while writing it", path.name)
        if new and (run.run_dir / "last.pt").exists():
            raise UserError(f"{run.run_dir} already holds a run; continue it with --resume {run.run_dir} "
                            "or pick another --out")
        trainer = Trainer(run, init_from=init_from, progress=progress)
        if not new and trainer.finished:
            trainer.calibrate(announce=False)  # finishes a temperature fit that a kill interrupted; else nothing
            done, asked = trainer.epoch, run.config.train.epochs
            finished = f"all {done} epochs" if done == asked else f"{done} epochs, more than train.epochs={asked}"
            log.info("%s has finished %s; to train longer, resume with --set train.epochs=N (N > %d)",
                     run.run_dir, finished, done)
            return trainer
        trainer.fit()
        if after_fit is not None and not trainer.interrupted:
            after_fit(trainer)
    return trainer
