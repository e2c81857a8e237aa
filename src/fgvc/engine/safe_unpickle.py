"""Read a ``torch.save`` file without importing or running anything it names: tensors, plain containers, and
pickled ``nn.Module`` objects rebuilt as inert records.

``torch.load(weights_only=True)`` refuses every global outside its allow-list, so it cannot read a whole pickled
model (``torch.save(net)``): the file names the model's classes (``model.Net``, ``torch.nn.modules.conv.Conv2d``),
and unpickling them normally imports those modules and runs their code. :func:`restricted_load` instead hands
``torch.load`` a pickle module whose unpickler

* returns the real object only for an allow-list of globals that build tensors and plain containers
  (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``, storages, ``collections.OrderedDict``, ``set``,
  ``torch.Size``, dtypes, ...);
* replaces every other global by an inert stand-in type (:class:`StandIn`), never importing its module. A pickled
  object of that class is created without its ``__init__`` (pickle's ``NEWOBJ``), and its state (``BUILD``) is
  recorded as plain attributes, so a module's ``_parameters``/``_buffers``/``_modules`` dicts come back as data;
* refuses, in one line naming the global, anything that would *call* a stand-in (``REDUCE`` on ``os.system``,
  ``builtins.eval``, ``subprocess.Popen``, a class's constructor): :class:`RefusedGlobal`.

Storages are read by torch's own loader (zip and legacy formats) through ``persistent_load``; a TorchScript archive
is refused before torch sees it (torch would hand it to ``torch.jit.load``). :func:`module_state_dict` flattens a
recovered module into the dotted names ``state_dict()`` gives.
"""

from __future__ import annotations

import _compat_pickle
import collections
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["RefusedGlobal", "TorchScriptFile", "StandIn", "restricted_load", "is_stand_in", "is_module_record",
           "stand_in_name", "module_state_dict"]


class TorchScriptFile(ValueError):
    """The file is a TorchScript archive (``torch.jit.save``): code, which ``torch.load`` would hand to
    ``torch.jit.load``; it is not read."""


class RefusedGlobal(pickle.UnpicklingError):
    """The file asked to call a Python object fgvc does not run; ``global_name`` is its ``module.name``."""

    def __init__(self, global_name: str) -> None:
        super().__init__(global_name)
        self.global_name = global_name


def _safe_rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2`` (a tensor with Python attributes) for a plain tensor or parameter
    built by an allow-listed function; the attributes in ``state`` are dropped, never set."""
    rebuilders = [v for (module, _), v in _allowed().items() if module == "torch._utils"]
    if not any(func is r for r in rebuilders) or new_type not in (torch.Tensor, torch.nn.Parameter):
        raise RefusedGlobal("torch._tensor._rebuild_from_type_v2")
    value = func(*args)
    return value if type(value) is new_type or new_type is torch.Tensor else value.as_subclass(new_type)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The globals whose real object the unpickler returns: they build tensors and plain containers only."""
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("builtins", "bytearray"): bytearray,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _safe_rebuild_from_type_v2,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_device_tensor_from_cpu_tensor"):
        if hasattr(torch._utils, name):
            allowed[("torch._utils", name)] = getattr(torch._utils, name)
    for name, value in list(vars(torch).items()):  # vars: no lazy submodule import through torch.__getattr__
        plain = isinstance(value, torch.dtype | torch.layout | torch.memory_format)
        if plain or (name.endswith("Storage") and isinstance(value, type)):
            allowed[("torch", name)] = value
    return allowed


_ALLOWED: dict[tuple[str, str], Any] = {}


def _allowed() -> dict[tuple[str, str], Any]:
    if not _ALLOWED:
        _ALLOWED.update(_allowed_globals())
    return _ALLOWED


class _StandInMeta(type):
    """The type of every stand-in class: calling one (pickle's ``REDUCE``, ``INST``) is refused."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise RefusedGlobal(cls.__fgvc_global__)

    def __repr__(cls) -> str:
        return f"<stand-in for {cls.__fgvc_global__}>"


class StandIn(metaclass=_StandInMeta):
    """An inert record of a pickled object whose class fgvc does not import: its pickled state becomes plain
    attributes (``vars(obj)``), items and appended values are kept in ``_fgvc_items`` / ``_fgvc_list``."""

    __fgvc_global__ = "StandIn"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:  # NEWOBJ: cls.__new__(cls, *args), never __init__
        obj = object.__new__(cls)
        object.__setattr__(obj, "_fgvc_new_args", args)
        return obj

    def __setstate__(self, state: Any) -> None:  # BUILD: recorded, never a hook from the file
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        for part in (state, slots):
            if isinstance(part, Mapping):
                for key, value in part.items():  # a dunder name (``__setstate__``) would shadow behaviour
                    target = "_fgvc_dunders" if str(key).startswith("__") else None
                    if target:
                        self.__dict__.setdefault(target, {})[key] = value
                    else:
                        self.__dict__[str(key)] = value
            elif part is not None:
                self.__dict__["_fgvc_state"] = part

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS on a mapping subclass
        self.__dict__.setdefault("_fgvc_items", {})[key] = value

    def append(self, value: Any) -> None:  # APPENDS on a list subclass
        self.__dict__.setdefault("_fgvc_list", []).append(value)

    def extend(self, values: Any) -> None:
        for value in values:
            self.append(value)

    def __repr__(self) -> str:
        return f"<{type(self).__fgvc_global__} (not imported)>"


def is_stand_in(obj: Any) -> bool:
    return isinstance(obj, StandIn)


def stand_in_name(obj: Any) -> str:
    """``module.name`` of the class a stand-in stands for."""
    return type(obj).__fgvc_global__


_STAND_INS: dict[str, type] = {}


def _stand_in(global_name: str) -> type:
    if global_name not in _STAND_INS:
        _STAND_INS[global_name] = _StandInMeta(global_name.rpartition(".")[2] or global_name, (StandIn,),
                                               {"__fgvc_global__": global_name, "__module__": __name__})
    return _STAND_INS[global_name]


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (pickle protocols 0 and 1) for a stand-in class only: no constructor runs."""
    if isinstance(cls, type) and issubclass(cls, StandIn):
        return cls.__new__(cls)
    raise RefusedGlobal("copyreg._reconstructor")


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` imports nothing: allow-listed globals or inert stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed()
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names (pickle protocol 2 writes them)
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "torch.tensor":  # torch's own renaming (torch.serialization's load_module_mapping)
            module = "torch._tensor"
        if (module, name) in allowed:
            return allowed[(module, name)]
        if (module, name) == ("copyreg", "_reconstructor"):
            return _safe_reconstructor
        if (module, name) == ("builtins", "object"):
            return object  # the base class argument of copyreg._reconstructor
        return _stand_in(f"{module}.{name}")


def _load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


class _PickleModule:
    """What ``torch.load(pickle_module=...)`` uses: its ``Unpickler`` (subclassed by torch to add storages) and
    ``load`` (the legacy format's header records)."""

    __name__ = "fgvc.engine.safe_unpickle"
    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError
    load = staticmethod(_load)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") for n in z.namelist())


def restricted_load(path: str | os.PathLike) -> Any:
    """The object a ``torch.save`` file holds, read on the CPU with :class:`RestrictedUnpickler`.

    Raises :class:`RefusedGlobal` (the file would run code), :class:`TorchScriptFile`, or whatever torch raises for
    a damaged file: the caller words them."""
    path = Path(path)
    if _is_torchscript(path):
        raise TorchScriptFile(f"{path} is a TorchScript archive (torch.jit.save)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy files: "couldn't retrieve source code for container ..."
        return torch.load(path, map_location="cpu", pickle_module=_PickleModule, weights_only=False)


# -- flattening a recovered module ----------------------------------------------------------------

def _entries(value: Any) -> Mapping[str, Any]:
    """A recovered ``_parameters``/``_buffers``/``_modules`` dict (an OrderedDict, a dict, or a stand-in of a
    mapping subclass) as a mapping; anything else is empty."""
    if isinstance(value, Mapping):
        return value
    if is_stand_in(value):
        return value.__dict__.get("_fgvc_items", {})
    return {}


def is_module_record(obj: Any) -> bool:
    """A stand-in with the attributes every pickled ``nn.Module`` has."""
    return is_stand_in(obj) and all(k in vars(obj) for k in ("_parameters", "_buffers", "_modules"))


def module_state_dict(root: Any) -> dict[str, torch.Tensor]:
    """What ``state_dict()`` of the pickled module would give: parameters and persistent buffers (None skipped),
    children by dotted name, depth first in registration order. Extra state (``get_extra_state``) is code and is
    not run."""
    out: dict[str, torch.Tensor] = {}

    def visit(obj: Any, prefix: str, seen: tuple[int, ...]) -> None:
        if id(obj) in seen:
            return
        attrs = vars(obj)
        non_persistent = attrs.get("_non_persistent_buffers_set") or set()
        for name, value in _entries(attrs.get("_parameters")).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach()
        for name, value in _entries(attrs.get("_buffers")).items():
            if isinstance(value, torch.Tensor) and name not in non_persistent:
                out[prefix + name] = value.detach()
        for name, child in _entries(attrs.get("_modules")).items():
            if is_module_record(child):
                visit(child, f"{prefix}{name}.", (*seen, id(obj)))

    visit(root, "", ())
    return out

