"""Team tokens and names: generated, hashed, compared in constant time, never logged.

A token is 32 random bytes (``secrets``), shown once by `fgvc server team add` and stored only as
its SHA-256 (a fast hash suffices: the token has 256 bits of entropy, nothing to brute-force). A
request's token is compared with every team's hash by :func:`hmac.compare_digest`, all of them, so
the time taken does not depend on which team, or which prefix, matched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Iterable

from ..errors import ConfigError
from .db import TEAM_NAME_MAX

__all__ = ["bearer_token", "check_team_name", "hash_token", "match_token", "new_token"]

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
