"""Typed run configuration: dataclasses with defaults, YAML presets, dotted overrides.

Every field has a default; a preset (``configs/<name>.yaml`` or any YAML file) changes some of
them; ``--set section.key=value`` changes any one. Unknown keys are errors that suggest the
closest known key. The resolved config is saved in the run directory and inside checkpoints as
plain dicts.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "apply_overrides",
    "check_key",
    "config_from_dict",
    "find_preset",
    "load_config",
    "paper_note",
    "validate_config",
    "get_key",
    "preset_names",
    "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # also reachable as configs/ at the repository root


@dataclass
class DataConfig:
    root: str | None = None
    format: str = "auto"
    val_fraction: float = 0.1
    split_seed: int = 0
    num_workers: int = 2
    skip_unreadable: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # the format reader's keywords (Aircraft level, ...)


@dataclass
class ModelConfig:
    name: str = "baseline"
    backbone: str = "resnet18"
    pretrained: bool | str = False
    input_size: int = 224
    transform: str = "auto"  # auto (the model's own recipe) | fbsd | mmal | plain
    options: dict[str, Any] = field(default_factory=dict)  # model constructor keywords (dropout, windows, ...)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    backbone_lr: float | None = None  # FBSD's second parameter group; None = lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    clip_grad_norm: float | None = None  # clip the gradients' total norm before each step (TransFG: 1.0); None: no


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # cosine | multistep | exponential | constant
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1  # multistep: factor at each milestone; exponential: factor every period_epochs
    period_epochs: float = 1.0  # exponential: epochs over which the rate is multiplied by gamma once (CAL: 2)
    warmup_epochs: int = 0
    reference_per_batch: bool = False  # FBSD F1: cosine with T_max=epochs stepped every batch
    per_epoch: bool = False  # the rate is set once per epoch from the epoch number (PMG's cosine), not every step


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 32
    accumulate: int = 1
    # auto (bf16/fp16 on CUDA, off on CPU) | fast (auto, and bf16 on CPUs with native bf16) | off | bf16 | fp16
    amp: str = "auto"
    seed: int = 0
    device: str = "auto"
    save_every: int = 0  # also keep epoch checkpoints every N epochs (0: only last and best)
    keep: int = 3  # at most this many periodic checkpoints
    drop_last: bool = True
    channels_last: bool = False  # NHWC weights and inputs: oneDNN's and cuDNN's layout (faster convolutions)
    compile: bool = False  # torch.compile the training forward (one-off compile time; eval stays eager)
    deterministic: bool = False  # PyTorch's deterministic algorithms (errors on ops that have none)
    calibrate: bool = True  # fit a temperature on the validation split after the last epoch (honest confidences)


@dataclass
class TrackConfig:
    wandb: bool = False
    wandb_mode: str = "offline"
    project: str = "fgvc"
    tensorboard: bool = False


@dataclass
class PaperConfig:
    """What the method's paper reports for this recipe, shown beside the run's own top-1 by ``fgvc
    evaluate`` and the report. Never read by training: a preset states it, a run carries it."""

    top1: float | None = None  # percent, as the paper prints it (89.6)
    dataset: str | None = None  # the benchmark the figure is on ("CUB-200-2011")
    source: str | None = None  # where it is printed ("Du et al., ECCV 2020, Table 2")

    def note(self) -> str | None:
        """``"paper: 89.6% (CUB-200-2011; Du et al., ECCV 2020, Table 2)"``, or None without a figure."""
        if self.top1 is None:
            return None
        figure = f"{self.top1:.2f}".rstrip("0")
        figure += "0" if figure.endswith(".") else ""  # 95.0 as printed, 89.65 in full
        where = "; ".join(v for v in (self.dataset, self.source) if v)
        return f"paper: {figure}%" + (f" ({where})" if where else "")


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    paper: PaperConfig = field(default_factory=PaperConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _suggest(key: str, known: list[str], prefix: str = "") -> str:
    """The closest known key, spelled in full (``train.epochs``) so it can be pasted into ``--set``."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f" Did you mean '{prefix}{close[0]}'?" if close else f" Known: {', '.join(prefix + k for k in known)}."


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a YAML value against the field's type hint (ints are accepted where floats are)."""
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{where} may not be empty")
    if hint is bool or text == "bool":
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float or text.startswith("float"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str or text.startswith("str"):
        if isinstance(value, str):
            return value
    elif "bool | str" in text:
        if isinstance(value, bool | str):
            return value
    elif text.startswith("list"):
        if isinstance(value, list):
            return value
    elif text.startswith("dict"):
        if isinstance(value, dict):
            return value
    else:
        return value
    name = getattr(hint, "__name__", text).replace("typing.", "")
    quote = " (YAML reads off/on/yes/no as booleans: put the word in quotes)" if isinstance(value, bool) else ""
    raise ConfigError(f"{where} should be {name}, got {value!r}{quote}")


def _fill(instance: Any, data: dict[str, Any], prefix: str) -> None:
    hints = get_type_hints(type(instance))
    names = [f.name for f in dataclasses.fields(instance)]
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names and not (key == "aircraft_level" and prefix == "data."):
            raise ConfigError(f"unknown config key '{where}'.{_suggest(key, names, prefix)}")
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"'{where}' is a section; give it as a mapping of keys")
            _fill(current, value, f"{where}.")
        elif key == "aircraft_level" and prefix == "data.":  # written by fgvc <= 0.1: now a reader option
            instance.options["level"] = _coerce(value, str, f"'{where}'")
        elif key == "options" and isinstance(current, dict) and isinstance(value, dict):
            current.update(value)
        else:
            setattr(instance, key, _coerce(value, hints[key], f"'{where}'"))


def config_from_dict(data: dict[str, Any] | None) -> Config:
    config = Config()
    _fill(config, data or {}, "")
    return config


# (key, lowest allowed, highest allowed, whether the lowest is excluded); None: no bound
_RANGES: tuple[tuple[str, float | None, float | None, bool], ...] = (
    ("data.val_fraction", 0, 1, False), ("data.num_workers", 0, 256, False), ("data.split_seed", 0, None, False),
    ("model.input_size", 32, 4096, False),
    ("optim.lr", 0, None, True), ("optim.backbone_lr", 0, None, True), ("optim.momentum", 0, 1, False),
    ("optim.weight_decay", 0, None, False), ("optim.clip_grad_norm", 0, None, True),
    ("schedule.gamma", 0, None, True), ("schedule.period_epochs", 0, None, True),
    ("schedule.warmup_epochs", 0, None, False),
    ("train.epochs", 1, None, False), ("train.batch_size", 1, None, False), ("train.eval_batch_size", 1, None, False),
    ("train.accumulate", 1, None, False), ("train.seed", 0, 2**63 - 1, False), ("train.save_every", 0, None, False),
    ("train.keep", 1, None, False), ("paper.top1", 0, 100, True),
)
_CHOICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("optim.name", ("sgd", "adamw")), ("schedule.name", ("cosine", "multistep", "exponential", "constant")),
    ("train.amp", ("auto", "fast", "off", "bf16", "fp16")), ("track.wandb_mode", ("offline", "online", "disabled")),
)


def get_key(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def validate_config(config: Config) -> Config:
    """Every number in range and every choice known, checked once at load time: a bad value is one
    line naming the key, the value and what is allowed — never a traceback from a worker later."""
    for key, low, high, open_low in _RANGES:
        value = get_key(config, key)
        if value is None:
            continue
        too_low = low is not None and (value <= low if open_low else value < low)
        too_high = high is not None and (value >= high if key == "data.val_fraction" else value > high)
        if too_low or too_high:
            if key == "data.val_fraction":
                allowed = "a fraction in [0, 1)"
            elif high is None:
                allowed = f"{'greater than' if open_low else 'at least'} {low}"
            else:
                allowed = f"between {low} and {high}"
            raise ConfigError(f"{key} = {value!r} is out of range: it must be {allowed}")
    for key, choices in _CHOICES:
        value = get_key(config, key)
        if value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{key} = {value!r}: choose one of {', '.join(choices)}.{hint}")
    if any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in config.schedule.milestones):
        raise ConfigError(f"schedule.milestones = {config.schedule.milestones!r}: give epochs as whole numbers >= 1")
    if config.schedule.per_epoch and config.schedule.reference_per_batch:
        raise ConfigError("schedule.per_epoch and schedule.reference_per_batch contradict each other: "
                          "set one of them")
    _validate_paper(config.paper)
    return config


def _validate_paper(paper: PaperConfig) -> None:
    if paper.top1 is None:
        if paper.dataset or paper.source:
            raise ConfigError("paper.top1 is missing: give the top-1 accuracy the paper reports (in percent, "
                              "e.g. 89.6), or leave the paper section out")
        return
    if paper.top1 <= 1:
        raise ConfigError(f"paper.top1 = {paper.top1!r}: give the percentage as the paper prints it "
                          f"(e.g. {100 * paper.top1:g}), not a fraction")


def paper_note(saved: dict[str, Any] | None) -> str | None:
    """What a saved config (a run's config.yaml, a checkpoint's dict) says its paper reports, as
    :meth:`PaperConfig.note` writes it; None for a config without one (older runs included)."""
    section = (saved or {}).get("paper")
    if not isinstance(section, dict):
        return None
    paper = PaperConfig()
    try:
        _fill(paper, section, "paper.")
        _validate_paper(paper)
    except ConfigError:
        return None
    return paper.note()


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def find_preset(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a preset in ``configs/`` (with or without ``.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / f"{path.stem}.yaml"
    if candidate.is_file() and path.parent == Path("."):
        return candidate
    names = preset_names()
    raise ConfigError(f"no config file or preset named '{name_or_path}'.{_suggest(path.stem, names)}")


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    data: dict[str, Any] = {}
    if name_or_path is not None:
        path = find_preset(name_or_path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    config = config_from_dict(data)
    apply_overrides(config, overrides or [])
    return validate_config(config)


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """``["optim.lr=0.01", "model.options.dropout=0.2"]``; values are parsed as YAML scalars."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} should look like section.key=value")
        value = yaml.safe_load(raw) if raw.strip() else None
        try:
            _fill(config, _nest(key, value), "")
        except ConfigError as first:
            # YAML reads off/on/yes/no and numbers as other types; a text field takes the text as typed
            if not isinstance(value, bool | int | float):
                raise
            try:
                _fill(config, _nest(key, raw.strip()), "")
            except ConfigError:
                raise first from None  # not a text field either: the error about the value as YAML read it
    return config


def check_key(key: str) -> None:
    """Refuse a dotted key that names no config field, as :func:`apply_overrides` would, without
    setting anything: a typo is reported as a typo before any rule about which keys may change."""
    node: Any = Config()
    prefix = ""
    for part in key.strip().split("."):
        if not dataclasses.is_dataclass(node):  # inside a free-form mapping (data.options.*, model.options.*)
            return
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names and not (part == "aircraft_level" and prefix == "data."):
            raise ConfigError(f"unknown config key '{prefix}{part}'.{_suggest(part, names, prefix)}")
        node, prefix = getattr(node, part, None), f"{prefix}{part}."


def _nest(key: str, leaf: Any) -> Any:
    """``"a.b.c", v`` -> ``{"a": {"b": {"c": v}}}``."""
    for part in reversed(key.strip().split(".")):
        leaf = {part: leaf}
    return leaf
