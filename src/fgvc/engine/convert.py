"""``fgvc convert``: a checkpoint released with a paper's own code, turned into an fgvc run folder.

The model's spec says how the authors' file is laid out (:class:`~fgvc.models.registry.AuthorsLayout`): how it
wraps the tensors (``container``), how each of their state-dict keys is named in fgvc (``rename``), which tensors
fgvc has no place for (``rename`` gives None, ``dropped`` says why) and which top-level entries are buffers
(``buffers``). The file is read by :mod:`.safe_unpickle` (tensors, plain values and inert records of pickled
modules; nothing it names is imported or run). The conversion is strict: every tensor of the file is used once
(a DataParallel ``module.`` prefix removed first), every tensor of the fgvc model comes from the file with its
shape, else one :class:`~fgvc.errors.CheckpointError` line names the keys, the file and the fix.

The result is a run folder that ``fgvc evaluate``, ``predict``, ``explain``, ``export`` and ``serve`` open like a
trained one: ``best.pt`` (the method's preset config or ``--config`` with ``--set``, the class table, the
preprocessing, the weights, ``converted_from``: file, repository, SHA-256; no optimiser state), ``config.yaml``,
``classes.json``. The authors trained on the whole training split, so the run has no validation split: evaluate it
with ``--split test``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import Config, load_config, preset_names
from ..data.classes import ClassTable, ClassTableError
from ..errors import CheckpointError, ConfigError, UserError, output_error
from ..fileio import atomic_write_text
from ..models import MODEL_REGISTRY, model_spec
from ..models.backbones import strip_data_parallel
from ..models.registry import AuthorsLayout
from .checkpoint import save_checkpoint
from .distributed import DistInfo
from .run import Run
from .safe_unpickle import (
    RefusedGlobal,
    TorchScriptFile,
    is_module_record,
    is_stand_in,
    module_state_dict,
    restricted_load,
    stand_in_name,
)

__all__ = ["CONTAINERS", "authors_methods", "convert_authors_checkpoint", "read_authors_file",
           "read_class_list"]

log = logging.getLogger(__name__)

CONTAINERS = ("state_dict", "state_dict_key", "pickled_module")
# where a dict-wrapped file keeps its state dict ("state_dict"; "model_state_dict" as some training scripts save it)
STATE_DICT_ENTRIES = ("state_dict", "model_state_dict", "model")  # the entries the methods' files use
_LISTED = 5  # keys named per kind of problem in the one-line error


def authors_methods() -> tuple[str, ...]:
    """The registered models whose spec declares the authors' checkpoint layout."""
    return tuple(sorted(name for name, spec in MODEL_REGISTRY.items() if spec.authors_layout is not None))


def _head(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    return shown + (f" (+{len(keys) - _LISTED} more)" if len(keys) > _LISTED else "")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- reading the authors' file ------------------------------------------------------------------

def _load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found" if not path.exists() else f"{path} is not a file")
    try:
        return restricted_load(path)
    except TorchScriptFile:
        raise CheckpointError(f"{path} is a TorchScript archive (torch.jit.save), which is code; fgvc converts the "
                              "authors' torch.save checkpoint (state dict or pickled model) and runs nothing from it"
                              ) from None
    except RefusedGlobal as e:
        raise CheckpointError(
            f"{path} asks to run {e.global_name} while it is read; fgvc reads only tensors and plain data from an "
            "authors' checkpoint and runs nothing from it: use the file as the authors released it") from None
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError, zipfile.BadZipFile, KeyError,
            AttributeError, TypeError, IndexError) as e:
        text = str(e).strip()
        reason = text.splitlines()[0].partition(". ")[0].rstrip(".")[:160] if text else type(e).__name__
        raise CheckpointError(f"cannot read {path} as a torch.save file ({reason}): the file is damaged or not a "
                              "PyTorch checkpoint; download it again") from None


def _plain(value: Any) -> bool:
    """None, a number, a string, or lists and string-keyed dicts of them (a training log): kept as data."""
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return value is None or isinstance(value, bool | int | float | str)


def _tensor_items(mapping: Mapping, path: Path, where: str) -> dict[str, torch.Tensor]:
    """A state dict: string keys, tensor values; anything else is one line naming the key."""
    out: dict[str, torch.Tensor] = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            what = stand_in_name(value) if is_stand_in(value) else type(value).__name__
            raise CheckpointError(f"{path}: {where} entry {key!r} is a {what}, not a tensor; this is not the "
                                  "state dict the authors' code saves")
        out[key] = value
    return out


def read_authors_file(path: str | os.PathLike, layout: AuthorsLayout) -> tuple[
        dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """``(state dict in the authors' names, buffers by fgvc key, plain top-level entries, top-level tensors that are
    neither)`` of the file, read as ``layout.container`` says."""
    path = Path(path)
    if layout.container not in CONTAINERS:
        raise ConfigError(f"authors' layout of {layout.repository}: unknown container {layout.container!r}; "
                          f"known: {', '.join(CONTAINERS)}")
    obj = _load(path)
    buffers: dict[str, torch.Tensor] = {}
    entries: dict[str, Any] = {}
    stray: list[str] = []
    if layout.container == "pickled_module":
        if not is_module_record(obj):
            found = stand_in_name(obj) if is_stand_in(obj) else type(obj).__name__
            raise CheckpointError(f"{path} holds a {found}, not a pickled model (torch.save(model)), which is what "
                                  f"{layout.repository} saves; is it a checkpoint of another method?")
        return module_state_dict(obj), buffers, entries, stray
    if is_module_record(obj):
        raise CheckpointError(f"{path} holds a whole pickled model ({stand_in_name(obj)}), but {layout.repository} "
                              "saves a state dict; is it a checkpoint of another method?")
    if not isinstance(obj, Mapping):
        found = stand_in_name(obj) if is_stand_in(obj) else type(obj).__name__
        raise CheckpointError(f"{path} holds a {found}, not a state dict; is it a checkpoint of another method?")
    if all(isinstance(v, torch.Tensor) for v in obj.values()) and not layout.buffers:
        return _tensor_items(obj, path, "the state dict's"), buffers, entries, stray
    wrapped = [e for e in STATE_DICT_ENTRIES if isinstance(obj.get(e), Mapping)]
    if len(wrapped) != 1:
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise CheckpointError(f"{path} is a dict ({keys}) without one state dict in {' or '.join(STATE_DICT_ENTRIES)}"
                              f"; {layout.repository} saves its tensors there: is it a checkpoint of another method?")
    state = _tensor_items(obj[wrapped[0]], path, f"the {wrapped[0]!r}")
    for key, value in obj.items():
        if key == wrapped[0]:
            continue
        if key in layout.buffers and isinstance(value, torch.Tensor):
            buffers[layout.buffers[key]] = value
        elif isinstance(value, torch.Tensor):
            stray.append(f"{key} (top level)")  # reported as a tensor fgvc has no place for
        elif _plain(value):
            entries[str(key)] = value
    return state, buffers, entries, stray


# -- renaming and checking ------------------------------------------------------------------------

def _rename(state: Mapping[str, torch.Tensor], layout: AuthorsLayout) -> tuple[dict[str, torch.Tensor],
                                                                               dict[str, str], list[str], list[str]]:
    """(tensors by fgvc key, fgvc key -> authors' key, dropped authors' keys, authors' keys fgvc does not know)."""
    renamed: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    dropped, unknown, twice = [], [], []
    for key, value in state.items():
        try:
            target = layout.rename(key)
        except (KeyError, ValueError, IndexError):
            target = ""
        if target is None:
            dropped.append(key)
        elif not target:
            unknown.append(key)
        elif target in renamed:
            twice.append(f"{source[target]} and {key} (both {target})")
        else:
            renamed[target], source[target] = value, key
    if twice:
        raise CheckpointError(f"the authors' layout of {layout.repository} maps two keys to one fgvc key: "
                              f"{_head(twice)}; this is a bug in the layout, please report it")
    return renamed, source, dropped, unknown


def _check_fit(path: Path, method: str, config: Config, own: Mapping[str, torch.Tensor],
               renamed: Mapping[str, torch.Tensor], source: Mapping[str, str], unknown: list[str],
               num_classes: int, classes_from: str, head_prefixes: tuple[str, ...], repository: str) -> None:
    """Every fgvc tensor present with its shape, every authors' tensor used: else one line."""
    m = config.model
    wrong = sorted(k for k in set(own) & set(renamed) if tuple(own[k].shape) != tuple(renamed[k].shape))
    rows = {renamed[k].shape[0] for k in wrong if k.startswith(head_prefixes) and renamed[k].dim() >= 1
            and own[k].shape[0] == num_classes and tuple(own[k].shape[1:]) == tuple(renamed[k].shape[1:])}
    if wrong and len(rows) == 1 and all(k.startswith(head_prefixes) for k in wrong):
        theirs = rows.pop()
        raise CheckpointError(
            f"{path} classifies {theirs} classes but {classes_from} has {num_classes}: pass the dataset the checkpoint "
            f"was trained on (--data) or a class list of {theirs} names, one per line (--classes FILE)")
    missing = sorted(set(own) - set(renamed))
    extra = sorted([*unknown, *(source[k] for k in set(renamed) - set(own))])
    if not renamed and extra:
        raise CheckpointError(
            f"{path}: none of its {len(extra)} tensors is named as {repository} names {method}'s ({_head(extra)}); "
            f"is it a checkpoint of another method? Pass that method's --method")
    problems = []
    if missing:
        problems.append(f"{len(missing)} fgvc tensor(s) not in the file: {_head(missing)}")
    if extra:
        problems.append(f"{len(extra)} tensor(s) of the file with no place in fgvc's model: {_head(extra)}")
    if wrong:
        shapes = [f"{source[k]} -> {k} {tuple(renamed[k].shape)} in the file, {tuple(own[k].shape)} in fgvc"
                  for k in wrong]
        problems.append(f"{len(wrong)} shape mismatch(es): {_head(shapes)}")
    if problems:
        raise CheckpointError(
            f"{path} does not fit fgvc's {method} on {m.backbone} (with its model.options): "
            f"{'; '.join(problems)}. Convert {repository}'s {method} checkpoint with the backbone and options it "
            "was trained with (--config PRESET, --set model.backbone=..., --set model.options.KEY=...)")


# -- the class table ------------------------------------------------------------------------------

def read_class_list(path: str | os.PathLike) -> ClassTable:
    """One class name per line (blank lines skipped), in the order of the checkpoint's classifier rows."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ClassTableError(f"cannot read the class list {path}: {getattr(e, 'strerror', None) or e}") from None
    names = [line.strip() for line in lines if line.strip()]
    if len(names) < 2:
        raise ClassTableError(f"the class list {path} names {len(names)} class(es); give one class name per line, "
                              "in the order of the checkpoint's classifier rows")
    try:
        return ClassTable(tuple(names), tuple(names))
    except ClassTableError as e:
        raise ClassTableError(f"the class list {path}: {e}") from None


def _default_preset(method: str) -> str:
    names = preset_names()
    for candidate in [n for n in names if n.startswith(f"{method}_") and n.endswith("_cub")] + \
            [n for n in names if n.startswith(f"{method}_")]:
        return candidate
    raise ConfigError(f"no preset for {method} (configs/{method}_*.yaml); pass --config PRESET_OR_YAML")


# -- the conversion -----------------------------------------------------------------------------

def convert_authors_checkpoint(method: str, checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                               data: str | os.PathLike | None = None, classes_file: str | os.PathLike | None = None,
                               config: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Path:
    """Convert the authors' ``checkpoint`` of ``method`` into the run folder ``out`` and return its ``best.pt``.

    The class table comes from ``data`` (the dataset's classes in fgvc's order) or ``classes_file`` (one name a
    line); the config is ``config`` (a preset or YAML, default the method's ``<method>_<backbone>_cub`` preset)
    with ``overrides`` (``--set``: ``model.backbone``, ``model.input_size``, ``model.options.*``, ...)."""
    if method not in MODEL_REGISTRY or model_spec(method).authors_layout is None:
        known = ", ".join(authors_methods()) or "none"
        raise ConfigError(f"--method {method}: fgvc does not know how {method}'s authors lay out their checkpoints; "
                          f"convertible: {known}")
    spec = model_spec(method)
    layout = spec.authors_layout
    assert layout is not None
    if (data is None) == (classes_file is None):
        raise UserError("give the class table with either --data DATASET or --classes FILE (one name per line)")
    cfg = load_config(config if config is not None else _default_preset(method), list(overrides))
    if cfg.model.name != method:
        raise ConfigError(f"--config {config} is a config for {cfg.model.name}, not {method}; pass a {method} preset")
    cfg.model.pretrained = False  # every weight comes from the file; nothing is downloaded
    out = Path(out)
    for name in ("best.pt", "last.pt"):
        if (out / name).exists():
            raise UserError(f"{out} already holds a run ({name}); choose another --out or remove that folder")

    run = Run(config=cfg, device=torch.device("cpu"), dist=DistInfo())
    if data is not None:
        cfg.data.root = str(Path(data).expanduser().resolve())
        classes, classes_from = run.dataset(cfg.data.root).classes, f"the dataset {data}"
    else:
        classes, classes_from = read_class_list(classes_file), f"the class list {classes_file}"  # type: ignore[arg-type]
    run.classes = classes

    path = Path(checkpoint).expanduser()
    state, buffers, entries, stray = read_authors_file(path, layout)
    state = strip_data_parallel(state)
    renamed, source, dropped, unknown = _rename(state, layout)
    unknown += stray
    for key, value in buffers.items():
        renamed[key], source[key] = value, key
    model = run.build_model(len(classes), pretrained=False)
    own = model.state_dict()
    _check_fit(path, method, cfg, own, renamed, source, unknown, len(classes), classes_from, spec.head_prefixes,
               layout.repository)
    model.load_state_dict(renamed, strict=True)
    if dropped:
        why = f" ({layout.dropped})" if layout.dropped else ""
        log.info("dropped %d tensor(s) of the file that fgvc's %s has no use for%s: %s", len(dropped), method, why,
                 _head(sorted(dropped)))

    converted = {"file": str(path.resolve()), "repository": layout.repository, "sha256": _sha256(path),
                 "container": layout.container, "dropped": sorted(dropped), "entries": entries}
    state_out = {"model": model.state_dict(), "config": cfg.to_dict(), "preprocessing": run.preprocessing.to_dict(),
                 "classes": classes.to_dict(), "metrics": {}, "history": [], "converted_from": converted}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(out, e, "create") from None
    best = out / "best.pt"
    save_checkpoint(best, state_out)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    classes.save(out / "classes.json")
    return best
