"""Competition submission files: write, check, score locally (uploading is :mod:`.client`).

A submission is the JSON the scoring server takes::

    {"images": {"0742e155-1759-4f20-8d18-36f87d36a194.jpg": "04654", ...}, "groupname": "my-team"}

Keys are bare test file names, values are class IDs spelled exactly as the training folders spell
them (strings, leading zeros kept). The course's server answers ``{"accuracy": <float>}`` on success and
an HTML page on failure; ``fgvc server`` answers JSON always, adding the submission id, rank and quota.

Why this module is strict: the team this toolkit replaces lost predictions to a failed upload and
scored 1.5% by pairing predictions with a differently-ordered file list. So the file is always
written (atomically) before any upload, every test image must appear exactly once, every problem
is reported at once, and an upload never deletes or rewrites the file.
"""

from __future__ import annotations

import heapq
import json
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.classes import class_sort_key
from ..data.labels_csv import read_labels_csv  # the one reader, shared with the competition format
from ..errors import FgvcError
from ..fileio import atomic_write_json

__all__ = [
    "ScoreReport",
    "SubmissionError",
    "echo",
    "load_submission",
    "max_submission_bytes",
    "parse_submission_text",
    "read_labels_csv",
    "read_submission_to_send",
    "score_submission",
    "spelling_index",
    "validate_submission",
    "write_submission",
]

_LIMIT = 10  # items shown per problem; the count is always given in full
_ECHO_CHARS = 80  # characters of a client's value repeated in a message
_ENTRY_BYTES = 32  # quotes, colon, comma, newline and indentation around one image's prediction
_FIXED_SLACK_BYTES = 64 * 1024
_EXAMPLE = '{"images": {"<test file name>": "<class ID>", ...}, "groupname": "<group>"}'
_NO_GROUPNAME = " (your group's name; a team that sends its token, e.g. `fgvc submit --token`, may leave it out)"
_TOKEN_TEAM = "the team of the token"  # stands for 'groupname' while checking a file sent with a token
_HOW_TO_WRITE = "`fgvc predict RUN --data ROOT --out DIR --group NAME` writes DIR/submission.json"
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "true/false",
               type(None): "null"}


class SubmissionError(FgvcError):
    """A submission is unusable, or the server did not score it. Says how to fix it (labels files: LabelsFileError)."""


# -- helpers ------------------------------------------------------------------------------------------
def _head(items: Sequence[Any], limit: int = _LIMIT, total: int | None = None) -> str:
    """The first ``limit`` items joined, and how many more of ``total`` (default: all of ``items``)."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:limit])
    return shown + (f" ... (+{total - min(limit, len(items))} more)" if total > limit else "")


def _first(items: Iterable[Any], limit: int = _LIMIT) -> tuple[int, list[Any]]:
    """How many ``items`` there are, and the first ``limit``: a problem's text never grows with the body."""
    count, first = 0, []
    for item in items:
        count += 1
        if len(first) < limit:
            first.append(item)
    return count, first


def _bullets(problems: Sequence[str]) -> str:
    return "\n".join(f"  - {p}" for p in problems)


def _json_type(value: Any) -> str:
    """What a JSON reader calls the value's type ("array", not Python's "list")."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def echo(value: Any, limit: int = _ECHO_CHARS) -> str:
    """A value a client sent, as a message shows it: quoted with every non-printable character escaped (a
    lone surrogate too, so the reply can always be encoded), cut to ``limit`` characters, and a container
    named by its type and size. Every message that repeats client input goes through here, so no reply
    grows with what was sent."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value):,} characters)"
    if isinstance(value, (Mapping, list, tuple)):
        return f"a JSON {_json_type(value)} of {len(value):,} item(s)"
    try:
        text = json.dumps(value)  # null, true, 3.5: as the client wrote them
    except (TypeError, ValueError):  # not JSON at all, or an int beyond Python's digit limit
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _structure_problems(images: Any, groupname: Any) -> list[str]:
    """Everything wrong with the shape of a submission, without reference to the test set."""
    problems = []
    if not isinstance(groupname, str) or not groupname.strip():
        problems.append(f"'groupname' must be a non-empty string (your group's name, given to `fgvc predict` "
                        f"as --group NAME), got {echo(groupname)}")
    if not isinstance(images, Mapping):
        problems.append(f"'images' must be a JSON object mapping test file name -> class ID, "
                        f"got a JSON {_json_type(images)}")
        return problems
    if not images:
        problems.append("'images' is empty: it must hold one prediction per test image")
    n_keys, bad_keys = _first(k for k in images if not isinstance(k, str) or not k or "/" in k or "\\" in k)
    if n_keys:
        problems.append(
            f"{n_keys} key(s) are not bare file names: {_head([echo(k) for k in bad_keys], total=n_keys)}; "
            "use the test image's file name only (no folders), e.g. '0742e155.jpg'"
        )
    n_values, bad_items = _first((k, v) for k, v in images.items() if not isinstance(v, str) or not v)
    if n_values:
        bad_values = [f"{echo(k)}: {echo(v)}" for k, v in bad_items]
        problems.append(
            f"{n_values} value(s) are not class-ID strings: {_head(bad_values, total=n_values)}; write each class "
            "ID as a string spelled exactly as its training folder, e.g. \"04654\" (never the number 4654)"
        )
    return problems


def _spelling(value: str) -> str:
    """What two spellings of one class ID share: Unicode compatibility form (full-width and superscript
    digits become plain ones), no surrounding spaces, case folded, and a number without leading zeros. No
    int(): "²" and a 5,000-digit string are plain text here."""
    folded = unicodedata.normalize("NFKC", value).strip().casefold()
    return (folded.lstrip("0") or "0") if folded.isascii() and folded.isdigit() else folded


def spelling_index(class_ids: Iterable[str]) -> dict[str, str]:
    """``{spelling: class ID}`` for the did-you-mean hints, built once per class list; a spelling two IDs
    share is left out (no hint beats a wrong one)."""
    index: dict[str, str] = {}
    shared: set[str] = set()
    for cid in class_ids:
        key = _spelling(cid)
        if key in index and index[key] != cid:
            shared.add(key)
        index[key] = cid
    return {k: v for k, v in index.items() if k not in shared}


def _respelling_hint(value: str, spellings: Mapping[str, str]) -> str:
    """A known ID that ``value`` probably meant: same number, case or surrounding spaces; one lookup."""
    return spellings.get(_spelling(value), "")


# -- files --------------------------------------------------------------------------------------------
def write_submission(path: str | os.PathLike, predictions: Mapping[str, str], groupname: str) -> dict:
    """Validate and atomically write a submission; keys are sorted so two runs diff cleanly."""
    problems = _structure_problems(predictions, groupname)
    if problems:
        raise SubmissionError(f"not writing submission {path}:\n{_bullets(problems)}")
    submission = {"images": {k: predictions[k] for k in sorted(predictions)}, "groupname": groupname}
    atomic_write_json(path, submission)
    return submission


def _parse_submission(text: str, path: Path | str, default_groupname: str | None = None) -> dict:
    duplicates: list[str] = []
    n_duplicates = 0

    def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
        nonlocal n_duplicates
        data = dict(pairs)
        if len(data) != len(pairs):  # rare: counted only then, so millions of tiny objects stay cheap
            repeated = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
            n_duplicates += len(repeated)
            duplicates.extend(echo(k) for k in repeated[:_LIMIT - len(duplicates)])
        return data

    try:
        data = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=no_duplicate_keys)  # a BOM is no error
    except json.JSONDecodeError as e:
        raise SubmissionError(f"{path} is not JSON ({e}); a submission looks like {_EXAMPLE}") from None
    if not isinstance(data, dict):
        raise SubmissionError(f"{path} holds a JSON {_json_type(data)}; a submission looks like {_EXAMPLE}")
    if default_groupname is not None and "groupname" not in data:
        data["groupname"] = default_groupname
    problems = [f"missing key {key!r}" + (_NO_GROUPNAME if key == "groupname" else "")
                for key in ("images", "groupname") if key not in data]
    if not problems:
        problems = _structure_problems(data["images"], data["groupname"])
    if n_duplicates:
        problems.append(f"{n_duplicates} key(s) appear more than once: {_head(duplicates, total=n_duplicates)}")
    if problems:
        raise SubmissionError(f"{path} is not a valid submission:\n{_bullets(problems)}\nExpected {_EXAMPLE}")
    return data


def parse_submission_text(text: str, source: str, *, default_groupname: str | None = None) -> dict:
    """Parse and shape-check a submission received as text (the scoring server's request body).

    The same checks as :func:`load_submission` (JSON, duplicate keys, the two keys and their types);
    ``source`` names the text in messages. ``default_groupname`` fills a missing 'groupname' (a team
    that identified itself by token need not repeat its name).
    """
    return _parse_submission(text, source, default_groupname)


def load_submission(path: str | os.PathLike, *, default_groupname: str | None = None) -> dict:
    """Read a submission file and check its shape; errors name the file.

    ``default_groupname`` fills a missing 'groupname' where no team is named (scoring a file locally).
    """
    path = Path(path)
    return _parse_submission(_decode(_read_submission_bytes(path), path), path, default_groupname)


def read_submission_to_send(path: Path, *, with_token: bool) -> bytes:
    """The file's bytes, checked as the server will check them: a token names the team, so a file sent with
    one may leave 'groupname' out. The bytes are sent as they are on disk."""
    body = _read_submission_bytes(path)
    _parse_submission(_decode(body, path), path, default_groupname=_TOKEN_TEAM if with_token else None)
    return body


def _read_submission_bytes(path: Path) -> bytes:
    """The file's bytes; a missing file, a folder or an unreadable file is one line with the fix."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SubmissionError(f"submission {path} does not exist; {_HOW_TO_WRITE}") from None
    except IsADirectoryError:
        raise SubmissionError(
            f"submission {path} is a folder; pass the submission file inside it, e.g. {path / 'submission.json'}"
        ) from None
    except PermissionError:
        raise SubmissionError(f"cannot read submission {path}: permission denied; fix its permissions") from None
    except OSError as e:
        raise SubmissionError(f"cannot read submission {path}: {e.strerror or e}") from None


def _decode(body: bytes, path: Path) -> str:
    try:
        return body.decode("utf-8-sig")  # a BOM (some Windows editors write one) is no error
    except UnicodeDecodeError as e:
        raise SubmissionError(f"{path} is not UTF-8 text ({e}); a submission looks like {_EXAMPLE}") from None


def validate_submission(submission: dict, expected_files: Iterable[str], class_ids: Iterable[str], *,
                        spellings: Mapping[str, str] | None = None) -> None:
    """Check a submission against the test set and class list, reporting every problem in one error.

    Linear in the submission and the test set whatever it holds: each problem counts everything but
    formats its first few items only, and a did-you-mean hint is one lookup in ``spellings``
    (:func:`spelling_index` of the class IDs; a server builds it once per competition)."""
    if not isinstance(submission, Mapping):
        raise SubmissionError(f"a submission is a JSON object like {_EXAMPLE}, got a JSON {_json_type(submission)}")
    images = submission.get("images")
    problems = _structure_problems(images, submission.get("groupname"))
    if problems:
        raise SubmissionError(f"submission is malformed:\n{_bullets(problems)}")
    expected = expected_files if isinstance(expected_files, (set, frozenset)) else set(expected_files)
    known = class_ids if isinstance(class_ids, (set, frozenset)) else set(class_ids)
    missing = [name for name in expected if name not in images]
    if missing:
        problems.append(
            f"{len(missing)} of {len(expected)} test file(s) have no prediction: "
            f"{_head(heapq.nsmallest(_LIMIT, missing), total=len(missing))}; predict every test image exactly once"
        )
    extra = [name for name in images if name not in expected]
    if extra:
        shown = [echo(name) for name in heapq.nsmallest(_LIMIT, extra)]
        problems.append(f"{len(extra)} key(s) are not test files: {_head(shown, total=len(extra))}; keys must be "
                        "the test images' file names")
    unknown = Counter(v for v in images.values() if v not in known)
    if unknown:
        spellings = spelling_index(known) if spellings is None else spellings
        shown = []
        for value, n in heapq.nsmallest(_LIMIT, unknown.items(), key=lambda item: (-item[1], item[0])):
            hint = _respelling_hint(value, spellings)
            shown.append(f"{echo(value)} ({n} image(s)" + (f"; did you mean {hint!r}?)" if hint else ")"))
        problems.append(
            f"{sum(unknown.values())} prediction(s) use {len(unknown)} unknown class ID(s): "
            f"{_head(shown, total=len(unknown))}; class IDs must be spelled exactly as the training folders spell "
            "them (\"04654\", not \"4654\")"
        )
    if problems:
        raise SubmissionError("submission does not match the test set:\n" + _bullets(problems))


def max_submission_bytes(file_names: Iterable[str], class_ids: Iterable[str]) -> int:
    """The largest body a valid submission for these test files can need, with generous slack.

    Per image: its name and the longest class ID as JSON strings with every non-ASCII character escaped
    (never shorter than UTF-8), plus 32 bytes of quotes, colon, comma, newline and indentation; twice
    that, plus 64 KiB for 'groupname', other keys and pretty-printing. A pretty-printed file of the
    competition is a third of it or less; a server refuses more before parsing a byte."""
    longest_id = max((len(json.dumps(cid)) for cid in class_ids), default=0)
    entries = sum(len(json.dumps(name)) + longest_id + _ENTRY_BYTES for name in file_names)
    return 2 * entries + _FIXED_SLACK_BYTES


# -- local scoring ------------------------------------------------------------------------------------
@dataclass
class ScoreReport:
    """The server's metric (top-1 accuracy over all test images) plus a per-class breakdown."""

    accuracy: float
    correct: int
    total: int
    per_class: dict[str, tuple[int, int]]  # true class ID -> (correct, total)

    def to_text(self, class_names: Mapping[str, str] | None = None) -> str:
        names = class_names or {}
        ids = sorted(self.per_class, key=class_sort_key)
        id_width = max([len("class"), *(len(i) for i in ids)])
        name_width = max([len("name"), *(len(names.get(i, "")) for i in ids)]) if names else 0
        lines = [f"accuracy {self.accuracy:.2%} ({self.correct} of {self.total} correct)", ""]
        title = f"{'class':<{id_width}}  " + (f"{'name':<{name_width}}  " if names else "")
        lines.append(f"{title}{'correct':>9}  accuracy")
        for cid in ids:
            right, total = self.per_class[cid]
            name = f"{names.get(cid, ''):<{name_width}}  " if names else ""
            lines.append(f"{cid:<{id_width}}  {name}{f'{right}/{total}':>9}  {right / total:8.2%}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return {
            "accuracy": self.accuracy,
            "correct": self.correct,
            "total": self.total,
            "per_class": {cid: {"correct": c, "total": t} for cid, (c, t) in self.per_class.items()},
        }


def score_submission(
    submission: dict, labels: Mapping[str, str], *, class_ids: Iterable[str] | None = None
) -> ScoreReport:
    """Score locally as the server does, after the same checks (an invalid file scores nothing).

    ``class_ids`` defaults to the classes present in ``labels``; give the full class list (on the
    command line: ``--classes RUN/classes.json``) when a prediction may be a real class that simply has
    no test image.
    """
    if not labels:
        raise SubmissionError("no labels to score against: the --labels file needs one 'file,class_id' row per "
                              "test image")
    if class_ids is not None:
        class_ids = set(class_ids)
        foreign = sorted(set(labels.values()) - class_ids, key=class_sort_key)
        if foreign:  # a prediction could never match these images: every score would be silently low
            raise SubmissionError(f"the --labels file uses {len(foreign)} class ID(s) missing from --classes: "
                                  f"{_head(foreign)}; pass the classes.json of a run trained on this dataset")
    try:
        validate_submission(submission, labels.keys(), set(labels.values()) if class_ids is None else class_ids)
    except SubmissionError as e:
        if class_ids is None and "unknown class ID" in str(e):
            raise SubmissionError(
                f"{e}\n(the known class IDs were taken from the --labels file; if a prediction is a real "
                "class without test images, add --classes RUN/classes.json to know every training class)"
            ) from None
        raise
    counts: dict[str, list[int]] = {}
    for name, true_id in labels.items():
        tally = counts.setdefault(true_id, [0, 0])
        tally[0] += submission["images"][name] == true_id
        tally[1] += 1
    correct = sum(c for c, _ in counts.values())
    return ScoreReport(
        accuracy=correct / len(labels),
        correct=correct,
        total=len(labels),
        per_class={cid: (c, t) for cid, (c, t) in counts.items()},
    )
