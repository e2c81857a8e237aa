"""ClassTable: the one mapping between label indices, class IDs and display names.

A class ID is a string exactly as the dataset spells it (``"04780"`` stays ``"04780"``; it is never
int()-parsed and re-padded). The table is built once from the training data, saved inside every
checkpoint and predictions file, and compared with the table of any data it is later used on.

Index order (documented, stable, independent of ``os.listdir``):
  * all IDs numeric (``str.isdigit``) -> numeric order of the IDs;
  * otherwise -> natural sort ("a2" < "a10"), ties broken by the plain string.
A dataset with an authoritative class list (``class_labels.txt``, CUB ``classes.txt``) may pass its
order explicitly to the constructor.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..fileio import atomic_write_json

__all__ = ["ClassTable", "ClassTableDiff", "ClassTableError", "class_sort_key"]

_DIGITS = re.compile(r"(\d+)")


class ClassTableError(DataError):
    """A class table cannot be built, loaded, or does not match another one."""


def class_sort_key(class_id: str) -> tuple:
    """Natural-sort key: digit runs compare as numbers, the rest as text."""
    parts = _DIGITS.split(class_id)
    key = tuple((0, int(p), p) if p.isdigit() else (1, 0, p.casefold()) for p in parts if p != "")
    return (key, class_id)


@dataclass(frozen=True)
class ClassTableDiff:
    """What separates two class tables: IDs only in one, IDs whose name or index differs."""

    missing: tuple[str, ...] = ()  # in self, not in other
    extra: tuple[str, ...] = ()  # in other, not in self
    renamed: tuple[tuple[str, str, str], ...] = ()  # (id, name here, name there)
    reindexed: tuple[tuple[str, int, int], ...] = ()  # (id, index here, index there)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.renamed or self.reindexed)

    def describe(self, mine: str, theirs: str, limit: int = 10) -> str:
        """The difference in words; ``mine`` and ``theirs`` name the two tables (``"the run"``,
        ``"the data in ROOT"``) so that a reader knows which side lacks which classes."""
        def head(items: Sequence) -> str:
            shown = ", ".join(str(i) for i in items[:limit])
            return shown + (f" ... (+{len(items) - limit} more)" if len(items) > limit else "")

        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} class(es) only in {mine}: {head(self.missing)}")
        if self.extra:
            lines.append(f"{len(self.extra)} class(es) only in {theirs}: {head(self.extra)}")
        if self.renamed:
            lines.append(
                f"{len(self.renamed)} class(es) renamed: "
                + head([f"{i}: {a!r} -> {b!r}" for i, a, b in self.renamed])
            )
        if self.reindexed:
            lines.append(
                f"{len(self.reindexed)} class(es) at another index: "
                + head([f"{i}: {a} -> {b}" for i, a, b in self.reindexed])
            )
        return "\n".join(lines) if lines else "class tables are identical"


@dataclass(frozen=True)
class ClassTable:
    """Index <-> class ID <-> display name. Immutable; index i is ``ids[i]``."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids, names = tuple(str(i) for i in self.ids), tuple(str(n) for n in self.names)
        if len(ids) != len(names):
            raise ClassTableError(f"{len(ids)} class IDs but {len(names)} names")
        if not ids:
            raise ClassTableError("a class table needs at least one class")
        seen: dict[str, int] = {}
        for i, cid in enumerate(ids):
            if cid == "" or cid != cid.strip():
                raise ClassTableError(f"class ID {cid!r} at index {i} is empty or has surrounding spaces")
            if cid in seen:
                raise ClassTableError(f"class ID {cid!r} appears twice (indices {seen[cid]} and {i})")
            seen[cid] = i
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_index", seen)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_ids(
        cls, ids: Iterable[str], names: Mapping[str, str] | None = None, sources: Mapping[str, str] | None = None
    ) -> ClassTable:
        """Build a table in the documented order from unordered IDs.

        ``sources`` maps an ID to where it came from (e.g. the folder name) so that a collision
        between numerically equal IDs (``04615`` and ``4615``) names both folders.
        """
        unique = list(dict.fromkeys(str(i) for i in ids))
        names = dict(names or {})
        sources = dict(sources or {})
        if unique and all(i.isdigit() for i in unique):
            by_value: dict[int, str] = {}
            for cid in unique:
                other = by_value.setdefault(int(cid), cid)
                if other != cid:
                    raise ClassTableError(
                        f"class IDs {sources.get(other, other)!r} and {sources.get(cid, cid)!r} are the same "
                        f"number ({int(cid)}) spelled differently; rename one folder so every class has "
                        "a distinct ID"
                    )
            ordered = sorted(unique, key=lambda i: (int(i), i))
        else:
            ordered = sorted(unique, key=class_sort_key)
        return cls(tuple(ordered), tuple(names.get(i, i) for i in ordered))

    # -- lookup ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, class_id: object) -> bool:
        return class_id in self._index

    def index_of(self, class_id: str) -> int:
        try:
            return self._index[class_id]
        except KeyError:
            raise KeyError(f"unknown class ID {class_id!r}; known IDs: {', '.join(self.ids[:10])}"
                           + (" ..." if len(self) > 10 else "")) from None

    def id_of(self, index: int) -> str:
        return self.ids[index]

    def name_of(self, index: int) -> str:
        return self.names[index]

    # -- comparison -----------------------------------------------------------------------------
    def diff(self, other: ClassTable) -> ClassTableDiff:
        mine, theirs = set(self.ids), set(other.ids)
        common = [i for i in self.ids if i in theirs]
        return ClassTableDiff(
            missing=tuple(i for i in self.ids if i not in theirs),
            extra=tuple(i for i in other.ids if i not in mine),
            renamed=tuple(
                (i, self.names[self._index[i]], other.names[other._index[i]])
                for i in common
                if self.names[self._index[i]] != other.names[other._index[i]]
            ),
            reindexed=tuple(
                (i, self._index[i], other._index[i]) for i in common if self._index[i] != other._index[i]
            ),
        )

    def require_same(self, other: ClassTable, what: str = "the data", mine: str = "the run") -> None:
        """Raise with the full difference unless ``other`` (named ``what``) has the same IDs at the
        same indices as this table (named ``mine``)."""
        d = self.diff(other)
        if d.missing or d.extra or d.reindexed:
            raise ClassTableError(f"class table of {what} differs from {mine}'s:\n{d.describe(mine, what)}")

    # -- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list[str]]:
        """Plain lists of strings: safe inside a ``weights_only`` checkpoint."""
        return {"ids": list(self.ids), "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: Mapping) -> ClassTable:
        try:
            return cls(tuple(data["ids"]), tuple(data["names"]))
        except (KeyError, TypeError) as e:
            raise ClassTableError(f"not a class table (need 'ids' and 'names' lists): {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ClassTableError(f"cannot read class table {path}: {e}") from None
        try:
            return cls.from_dict(data)
        except ClassTableError as e:
            raise ClassTableError(f"{path}: {e}") from None
