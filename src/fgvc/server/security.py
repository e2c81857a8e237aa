"""Team tokens and names: generated, hashed, compared in constant time, never logged.

A token is 32 random bytes (``secrets``), shown once by `fgvc server team add` and stored only as
its SHA-256 (a fast hash suffices: the token has 256 bits of entropy, nothing to brute-force). A
request's token is compared with every team's hash by :func:`hmac.compare_digest`, all of them, so
the time taken does not depend on which team, or which prefix, matched.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Iterable

from confusable_homoglyphs import confusables

from ..errors import ConfigError
from .db import TEAM_NAME_MAX

__all__ = ["bearer_token", "check_team_name", "hash_token", "look_alike", "match_token", "new_token", "normal_name"]

TOKEN_PREFIX = "fgvc_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def match_token(token: str, teams: Iterable[tuple[int, str | None]]) -> int | None:
    """The id of the team whose stored hash matches ``token``; every hash is compared, in constant time."""
    digest = hash_token(token).encode("ascii")
    found = None
    for team_id, stored in teams:
        if stored is not None and hmac.compare_digest(digest, stored.encode("ascii")):
            found = team_id
    return found


def check_team_name(name: str) -> str:
    """A team name as given (spaces inside kept), 1–100 characters, no control characters."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("a team name must be a non-empty string")
    if len(name) > TEAM_NAME_MAX:
        raise ConfigError(f"a team name may have at most {TEAM_NAME_MAX} characters, got {len(name)}")
    if name != name.strip():
        raise ConfigError(f"team name {name!r} starts or ends with spaces; remove them")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ConfigError(f"team name {name!r} holds control or invisible format characters")
    return name


def normal_name(name: str) -> str:
    """A team name as compared: Unicode compatibility form (NFKC: full-width and styled letters become plain
    ones) and case folded, so 'Alpha', 'ALPHA' and 'ａｌｐｈａ' are one name."""
    return unicodedata.normalize("NFKC", name).casefold()


@functools.lru_cache(maxsize=4096)
def _look_alikes(char: str) -> frozenset[str]:
    """The characters Unicode's confusables list (via confusable_homoglyphs) says ``char`` may be read as."""
    found = confusables.is_confusable(char, greedy=True)
    return frozenset(normal_name(h["c"]) for h in found[0]["homoglyphs"]) if found else frozenset()


def _same_looking(a: str, b: str) -> bool:
    if len(a) != len(b):
        return False
    return all(x == y or y in _look_alikes(x) or x in _look_alikes(y) for x, y in zip(a, b, strict=True))


def look_alike(name: str, others: Iterable[str]) -> str | None:
    """The first of ``others`` (other than ``name`` itself) that ``name`` could be taken for: the same
    :func:`normal_name`, or the same character for character up to Unicode look-alikes (Cyrillic 'а' for
    Latin 'a', '1' for 'l'). A look-alike spelled with several characters ('rn' for 'm') is not caught."""
    key = normal_name(name)
    return next((other for other in others if other != name and _same_looking(key, normal_name(other))), None)
