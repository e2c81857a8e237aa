"""A competition on disk: its settings, the private test labels and the fixed public/private split.

::

    COMP_DIR/                 created 0700: everything here is the instructor's
      competition.json        title, deadline, daily limit, leaderboard rule, class IDs, the public files
      labels.csv              the test labels (file,class_id): private, never served
      competition.sqlite3     the embedded database (unless --db names another)

The files are the competition's definition; the database holds teams and submissions. Scoring reuses
:mod:`fgvc.competition.submission` (the same checks and metric as `fgvc score`), once on the public images and
once on the private ones, so a team's public score is exactly what `fgvc score` gives on those images.
A running server re-reads the files when they change (`fgvc server set`, `fgvc server rescore`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..competition.submission import max_submission_bytes, score_submission, spelling_index, validate_submission
from ..data.classes import ClassTable
from ..data.formats.competition import parse_class_list
from ..data.labels_csv import read_labels_csv
from ..errors import ConfigError, DataError, UserError
from ..fileio import atomic_open, atomic_write_json

__all__ = [
    "Clock",
    "Competition",
    "CompetitionCache",
    "Scores",
    "create_competition",
    "format_time",
    "load_competition",
    "next_quota_reset",
    "parse_deadline",
    "quota_day",
    "read_class_list",
    "replace_labels",
    "update_settings",
    "utc_now",
]

COMPETITION_FILE = "competition.json"
LABELS_FILE = "labels.csv"
SQLITE_FILE = "competition.sqlite3"
_FORMAT = 1
LEADERBOARD_RULES = ("best", "last")

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware; injected so tests can move past the deadline."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second: what every reply and export shows."""
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_deadline(text: str) -> datetime:
    """``2027-01-15T23:59Z`` (or any ISO 8601 time with an offset) -> an aware UTC datetime."""
    raw = text.strip()
    try:
        moment = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.upper().endswith("Z") else raw)
    except ValueError:
        raise ConfigError(f"--deadline {text!r} is not an ISO 8601 time; write e.g. 2027-01-15T23:59Z") from None
    if moment.tzinfo is None:
        raise ConfigError(f"--deadline {text!r} has no time zone; add Z for UTC (2027-01-15T23:59Z) or an offset "
                          "such as +01:00")
    return moment.astimezone(timezone.utc)


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Class IDs from a run's ``classes.json``, or a text file of ``index classID`` lines (indices 0..N-1,
    each once: the data layer's reader, as for a dataset's ``class_labels.txt``) or of ``classID`` lines."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return list(ClassTable.load(path).ids)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read class list {path}: {e}") from None
    try:
        return parse_class_list(text, bare_ids=True)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


@dataclass(frozen=True)
class Scores:
    """A submission's accuracy on the public images, the private ones (None when all are public), and all."""

    public: float
    private: float | None
    overall: float


@dataclass(frozen=True)
class Competition:
    """One competition as loaded from COMP_DIR; immutable (a change on disk loads a new one)."""

    directory: Path
    competition_id: str  # random, stored in the database too: a database serves one competition only
    title: str
    deadline: datetime | None
    daily_limit: int  # submissions per team per UTC day; 0 = no limit
    leaderboard: str  # "best": each team's best public score counts; "last": its latest submission
    public_fraction: float
    db_url: str | None
    class_ids: frozenset[str]
    labels: Mapping[str, str] = field(repr=False)
    public_files: frozenset[str] = field(repr=False)
    labels_version: str = ""  # SHA-256 of labels.csv: a score records the labels it was computed with
    _public_labels: dict[str, str] = field(init=False, repr=False, compare=False)
    _private_labels: dict[str, str] = field(init=False, repr=False, compare=False)
    _files: frozenset[str] = field(init=False, repr=False, compare=False)
    _spellings: dict[str, str] = field(init=False, repr=False, compare=False)
    max_body_bytes: int = field(init=False, compare=False)  # a larger body cannot be a valid submission

    def __post_init__(self) -> None:
        object.__setattr__(self, "_public_labels", {f: c for f, c in self.labels.items() if f in self.public_files})
        object.__setattr__(self, "_private_labels",
                           {f: c for f, c in self.labels.items() if f not in self.public_files})
        # built once per competition, so checking a body costs one pass over it whatever it holds
        object.__setattr__(self, "_files", frozenset(self.labels))
        object.__setattr__(self, "_spellings", spelling_index(self.class_ids))
        object.__setattr__(self, "max_body_bytes", max_submission_bytes(self.labels, self.class_ids))

    @property
    def database_url(self) -> str:
        """The database named at init, else the SQLite file in COMP_DIR."""
        return self.db_url or f"sqlite:///{(self.directory / SQLITE_FILE).resolve()}"

    @property
    def public_count(self) -> int:
        return len(self._public_labels)

    @property
    def has_private(self) -> bool:
        return bool(self._private_labels)

    def is_closed(self, now: datetime) -> bool:
        return self.deadline is not None and now >= self.deadline

    def validate(self, submission: dict) -> None:
        """Every problem of a submission against the test set and class list (SubmissionError)."""
        validate_submission(submission, self._files, self.class_ids, spellings=self._spellings)

    def score(self, submission: dict) -> Scores:
        """Accuracy on the public and the private images, by `fgvc score`'s own function.

        Both parts are always computed, in the same way, so the work (and time) of a reply does not
        depend on the private labels."""
        images, group = submission["images"], submission["groupname"]
        public = score_submission({"images": {f: images[f] for f in self._public_labels}, "groupname": group},
                                  self._public_labels, class_ids=self.class_ids)
        private = None
        if self._private_labels:
            private = score_submission({"images": {f: images[f] for f in self._private_labels}, "groupname": group},
                                       self._private_labels, class_ids=self.class_ids)
        correct = public.correct + (private.correct if private else 0)
        return Scores(public=public.accuracy, private=private.accuracy if private else None,
                      overall=correct / len(self.labels))


# -- files --------------------------------------------------------------------------------------------
def _labels_text(labels: Mapping[str, str]) -> str:
    return "file,class_id\n" + "".join(f"{name},{cid}\n" for name, cid in sorted(labels.items()))


def _write_private(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)
    os.chmod(path, 0o600)


def _check_csv_safe(labels: Mapping[str, str], source: Path) -> None:
    """labels.csv is rewritten plainly; a name or ID that would need CSV quoting is refused up front."""
    bad = [n for pair in labels.items() for n in pair if any(c in n for c in ',"\r\n')]
    if bad:
        raise DataError(f"{source}: {len(bad)} file name(s) or class ID(s) hold a comma, quote or line break "
                        f"(e.g. {bad[0]!r}); test file names and class IDs must be plain words")


def _settings_check(daily_limit: int, leaderboard: str, public_fraction: float | None = None) -> None:
    if daily_limit < 0:
        raise ConfigError(f"--daily-limit must be 0 (no limit) or more, got {daily_limit}")
    if leaderboard not in LEADERBOARD_RULES:
        raise ConfigError(f"--leaderboard must be one of {', '.join(LEADERBOARD_RULES)}, got {leaderboard!r}")
    if public_fraction is not None and not 0 < public_fraction <= 1:
        raise ConfigError(f"--public-fraction must be above 0 and at most 1, got {public_fraction}")


def _check_known_classes(labels: Mapping[str, str], class_ids: Iterable[str], labels_path: str | os.PathLike,
                         class_list: str, fix: str) -> None:
    """Refuse labels whose class IDs the competition's class list lacks (a typo such as 4615 for 04615)."""
    unknown = sorted(set(labels.values()) - set(class_ids))
    if unknown:
        raise DataError(f"{labels_path} uses {len(unknown)} class ID(s) that {class_list} does not list: "
                        f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}; {fix}")


def create_competition(
    directory: str | os.PathLike,
    labels_path: str | os.PathLike,
    *,
    classes_path: str | os.PathLike | None = None,
    public_fraction: float = 0.3,
    daily_limit: int = 5,
    deadline: datetime | None = None,
    title: str = "",
    leaderboard: str = "best",
    seed: int | None = None,
    db_url: str | None = None,
    now: datetime | None = None,
) -> Competition:
    """Write COMP_DIR's files: settings, a normalised copy of the labels, and the seeded split.

    The split draws ``round(fraction * n)`` public images (at least one) with ``seed``; without a seed a
    random one is drawn and stored, so teams cannot recompute which images are public.
    """
    directory = Path(directory)
    _settings_check(daily_limit, leaderboard, public_fraction)
    if (directory / COMPETITION_FILE).exists():
        raise UserError(f"{directory} already holds a competition ({COMPETITION_FILE}); pick another folder, or "
                        "change it with `fgvc server set` / `fgvc server rescore`")
    labels = read_labels_csv(labels_path)
    _check_csv_safe(labels, Path(labels_path))
    class_ids = read_class_list(classes_path) if classes_path else sorted(set(labels.values()))
    _check_known_classes(labels, class_ids, labels_path, str(classes_path),
                         "the class list must hold every class of the test labels")
    seed = secrets.randbits(63) if seed is None else seed
    files = sorted(labels)
    public = random.Random(seed).sample(files, k=min(len(files), max(1, round(public_fraction * len(files)))))
    title = title.strip() or directory.resolve().name
    settings: dict[str, Any] = {
        "format": _FORMAT,
        "id": secrets.token_hex(16),
        "title": title,
        "created_at": format_time(now or utc_now()),
        "deadline": format_time(deadline) if deadline else None,
        "daily_limit": daily_limit,
        "leaderboard": leaderboard,
        "public_fraction": public_fraction,
        "seed": seed,
        "db": db_url,
        "class_ids": list(class_ids),
        "public_files": sorted(public),
    }
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {directory}: {e.strerror or e}") from None
    _write_private(directory / LABELS_FILE, _labels_text(labels))
    atomic_write_json(directory / COMPETITION_FILE, settings)
    os.chmod(directory / COMPETITION_FILE, 0o600)
    return load_competition(directory)


def _read_settings(directory: Path) -> dict:
    path = directory / COMPETITION_FILE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{directory} holds no competition ({COMPETITION_FILE} is missing); create one with "
                        "`fgvc server init COMP_DIR --labels test_labels.csv`") from None
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not isinstance(settings, dict) or settings.get("format") != _FORMAT:
        raise UserError(f"{path} is not a competition file of this fgvc version (format {_FORMAT})")
    return settings


def load_competition(directory: str | os.PathLike) -> Competition:
    directory = Path(directory)
    settings = _read_settings(directory)
    labels_path = directory / LABELS_FILE
    try:
        raw = labels_path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read the competition's labels {labels_path}: {e.strerror or e}") from None
    labels = read_labels_csv(labels_path)
    try:
        return Competition(
            directory=directory,
            competition_id=str(settings["id"]),
            title=str(settings["title"]),
            deadline=parse_deadline(settings["deadline"]) if settings.get("deadline") else None,
            daily_limit=int(settings["daily_limit"]),
            leaderboard=str(settings["leaderboard"]),
            public_fraction=float(settings["public_fraction"]),
            db_url=settings.get("db") or None,
            class_ids=frozenset(settings["class_ids"]) | frozenset(labels.values()),
            labels=labels,
            public_files=frozenset(settings["public_files"]),
            labels_version=hashlib.sha256(raw).hexdigest(),
        )
    except (KeyError, TypeError, ValueError, ConfigError) as e:  # ConfigError: a deadline that does not parse
        raise UserError(f"{directory / COMPETITION_FILE} is damaged ({type(e).__name__}: {e}); restore it from "
                        "a backup") from None


def update_settings(directory: str | os.PathLike, **changes: Any) -> Competition:
    """Change title, deadline, daily_limit or leaderboard; a running server picks it up on its next request."""
    directory = Path(directory)
    settings = _read_settings(directory)
    allowed = {"title", "deadline", "daily_limit", "leaderboard"}
    if set(changes) - allowed:
        raise ConfigError(f"cannot change {', '.join(sorted(set(changes) - allowed))}")
    if "deadline" in changes:
        changes["deadline"] = format_time(changes["deadline"]) if changes["deadline"] else None
    settings.update(changes)
    _settings_check(int(settings["daily_limit"]), str(settings["leaderboard"]))
    atomic_write_json(directory / COMPETITION_FILE, settings)
    os.chmod(directory / COMPETITION_FILE, 0o600)
    return load_competition(directory)


def replace_labels(directory: str | os.PathLike, labels_path: str | os.PathLike) -> Competition:
    """Install fixed labels: the same test files (the split stays), class IDs from the competition's list."""
    directory = Path(directory)
    current = load_competition(directory)
    labels = read_labels_csv(labels_path)
    _check_csv_safe(labels, Path(labels_path))
    missing, extra = sorted(current.labels.keys() - labels.keys()), sorted(labels.keys() - current.labels.keys())
    if missing or extra:
        parts = [f"{len(missing)} file(s) missing (e.g. {', '.join(missing[:5])})" if missing else "",
                 f"{len(extra)} file(s) new (e.g. {', '.join(extra[:5])})" if extra else ""]
        raise DataError(f"{labels_path} must label exactly the competition's {len(current.labels)} test files: "
                        f"{'; '.join(p for p in parts if p)}. A fix may change images' classes, not the test set")
    _check_known_classes(labels, current.class_ids, labels_path, f"the competition's class list "
                         f"({directory / COMPETITION_FILE})", "a fix may move images between the competition's "
                         "classes only; check these IDs' spelling")
    _write_private(directory / LABELS_FILE, _labels_text(labels))
    return load_competition(directory)


class CompetitionCache:
    """The current :class:`Competition`, re-read when its files change (checked by stat, per call)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._signature: tuple = ()
        self._competition: Competition | None = None

    def _stat(self) -> tuple:
        out = []
        for name in (COMPETITION_FILE, LABELS_FILE):
            st = os.stat(self.directory / name)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def current(self) -> Competition:
        try:
            signature = self._stat()
        except OSError:
            signature = ()
        if self._competition is None or signature != self._signature:
            try:
                self._competition = load_competition(self.directory)
                self._signature = signature
            except (UserError, DataError):
                if self._competition is None:
                    raise
                # a half-edited file on disk: keep serving the last good competition
        return self._competition


def next_quota_reset(now: datetime) -> datetime:
    """Quotas count per UTC day; they reset at the next midnight UTC."""
    day = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def quota_day(now: datetime) -> str:
    return now.astimezone(timezone.utc).date().isoformat()
