"""The dataset-format registry: every format module registers one :class:`FormatSpec`.

A spec carries all a caller needs to know about a format without naming conventions: its reader,
its detector, the tree its errors show, the keywords its reader takes (``data.options.<key>`` in a
config) and where it stands in auto-detection. ``register_format`` checks the declared options
against the reader's signature, so a keyword cannot be added to a reader without being declared
(and so reachable from a config and shown in documentation).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ..index import DatasetIndex

__all__ = [
    "FormatSpec",
    "ReaderOption",
    "check_reader_options",
    "get_format",
    "register_format",
    "registered_formats",
    "reader_options",
]

def _spell(value: Any) -> str:
    """A value as a YAML config would spell it (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class ReaderOption:
    """One keyword of a reader, settable as ``data.options.<name>``.

    ``choices`` lists the allowed values; when empty, any value of the default's type is allowed.
    """

    name: str
    default: Any
    choices: tuple[Any, ...] = ()
    help: str = ""

    @property
    def allowed(self) -> str:
        """The allowed values as a message shows them: ``variant|family|manufacturer``."""
        if self.choices:
            return "|".join(_spell(c) for c in self.choices)
        if isinstance(self.default, bool):
            return "true|false"
        return f"any {type(self.default).__name__}"

    def describe(self) -> str:
        return f"{self.name} ({self.allowed}; default {_spell(self.default)})"

    def check(self, value: Any, format_name: str) -> None:
        """Raise :class:`ConfigError` naming ``data.options.<name>`` when ``value`` is not allowed."""
        kind = type(self.default)
        # bool is an int in Python, so compare types exactly for bools and refuse bools for numbers.
        right_type = isinstance(value, bool) if kind is bool else (
            isinstance(value, kind) and not isinstance(value, bool))
        if right_type and (not self.choices or value in self.choices):
            return
        close = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"data.options.{self.name}: {value!r} is not allowed for the {format_name} format; "
            f"allowed: {self.allowed} (default {_spell(self.default)}).{hint}"
        )


@dataclass(frozen=True)
class FormatSpec:
    """A dataset format: how to read it, how to recognise it, and what its reader takes.

    Detection tries formats by ascending ``priority``: annotation-driven formats (whose files
    cannot be mistaken for anything else) come first, the generic class-folder layout last.
    """

    name: str
    reader: Callable[..., DatasetIndex]
    detector: Callable[[Path], bool]
    tree: str
    options: tuple[ReaderOption, ...] = ()
    priority: int = 50

    def option(self, name: str) -> ReaderOption | None:
        return next((o for o in self.options if o.name == name), None)

    def describe_options(self) -> str:
        if not self.options:
            return f"the {self.name} format takes no options"
        return f"the {self.name} format takes: " + ", ".join(o.describe() for o in self.options)


_REGISTRY: dict[str, FormatSpec] = {}


def register_format(
    name: str,
    *,
    reader: Callable[..., DatasetIndex],
    detector: Callable[[Path], bool],
    tree: str,
    options: Iterable[ReaderOption] = (),
    priority: int = 50,
) -> FormatSpec:
    """Add a format to the registry (called once, at the bottom of its module) and return its spec.

    Raises ``TypeError`` when ``options`` do not match the reader's keyword parameters one to one
    (same names, same defaults): that is a bug in the format module, not a user error.
    """
    spec = FormatSpec(name, reader, detector, tree, tuple(options), priority)
    _check_reader_signature(spec)
    existing = _REGISTRY.get(name)
    if existing is not None and existing.reader.__module__ != reader.__module__:
        raise ValueError(f"dataset format {name!r} is already registered by {existing.reader.__module__}")
    _REGISTRY[name] = spec  # the same module registering again (a reload) replaces its spec
    return spec


def _check_reader_signature(spec: FormatSpec) -> None:
    parameters = list(inspect.signature(spec.reader).parameters.values())[1:]  # after root
    keywords = {p.name: p.default for p in parameters}
    declared = {o.name: o.default for o in spec.options}
    if set(keywords) != set(declared):
        raise TypeError(
            f"format {spec.name!r}: reader {spec.reader.__name__} takes {sorted(keywords) or 'no options'} "
            f"but the spec declares {sorted(declared) or 'none'}"
        )
    for key, default in declared.items():
        if keywords[key] is inspect.Parameter.empty or keywords[key] != default:
            raise TypeError(f"format {spec.name!r}: option {key!r} defaults to {default!r} in the spec but "
                            f"{keywords[key]!r} in {spec.reader.__name__}")


def registered_formats() -> list[FormatSpec]:
    """Every registered format in detection order."""
    return sorted(_REGISTRY.values(), key=lambda s: (s.priority, s.name))


def get_format(name: str) -> FormatSpec:
    """The spec of ``name``; an unknown name is a :class:`ConfigError` with the closest known one."""
    spec = _REGISTRY.get(name)
    if spec is not None:
        return spec
    known = [s.name for s in registered_formats()]
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"data.format: unknown dataset format {name!r}; known: auto, {', '.join(known)}.{hint}")


def reader_options(format_name: str) -> dict[str, Any]:
    """``{option: default}`` of a format's reader, in declaration order (for documentation)."""
    return {o.name: o.default for o in get_format(format_name).options}


def check_reader_options(format_name: str | None, options: Mapping[str, Any], detected_in: Path | None = None) -> None:
    """Raise :class:`ConfigError` for the first option ``format_name`` does not take or value it refuses.

    ``detected_in`` is the dataset folder when the format was auto-detected there; the message then
    says so, since the user never named the format that refuses the option. With no format yet
    (None or "auto", e.g. when a config is loaded), only keys that no format takes are refused;
    ``read_dataset`` checks the rest once it has detected the format.
    """
    if format_name is None or format_name == "auto":
        every = [o.name for s in registered_formats() for o in s.options]
        for key in options:
            if key not in every:
                close = difflib.get_close_matches(key, every, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                takers = "; ".join(s.describe_options() for s in registered_formats() if s.options)
                raise ConfigError(f"data.options.{key}: no dataset format takes it ({takers}).{hint}")
        return
    spec = get_format(format_name)
    for key, value in options.items():
        option = spec.option(key)
        if option is not None:
            option.check(value, spec.name)
            continue
        if detected_in is not None:
            intro = f"the dataset at {detected_in} was detected as {spec.name}, which does not take it"
        else:
            intro = f"the {spec.name} format does not take it"
        raise ConfigError(f"data.options.{key}: {intro}; {spec.describe_options()}.{_elsewhere(key, spec)}")


def _elsewhere(key: str, spec: FormatSpec) -> str:
    """Which other formats take ``key``, or the closest option name, for an unknown-option message."""
    takers = [s for s in registered_formats() if s.option(key) is not None]
    if takers:
        names = " and ".join(s.name for s in takers)
        return (f" {key} is an option of {names}: set data.format to that format if the dataset is one, "
                f"or remove data.options.{key}.")
    own = [o.name for o in spec.options]
    every = [o.name for s in registered_formats() for o in s.options]
    close = difflib.get_close_matches(key, own, n=1) or difflib.get_close_matches(key, every, n=1)
    return f" Did you mean {close[0]!r}?" if close else f" Remove data.options.{key}."

