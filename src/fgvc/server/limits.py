"""In-memory limits on what a client may make the server do: invalid attempts and new open-mode teams.

Both run on the service's injectable clock (a test moves it) and are guarded by a lock (submissions
are handled in worker threads). They live in memory, so no request adds SQL for them; a restart, which
only the instructor can cause, forgets them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable
from datetime import datetime

from .competition import quota_day

__all__ = ["AttemptBucket", "DailyCounter"]

_MAX_KEYS = 10_000  # beyond this many tracked keys, keys whose bucket is full again are forgotten


class AttemptBucket:
    """A token bucket per key: ``burst`` attempts at once, then one more every ``refill_seconds``.

    An invalid submission spends a token; a key without one is refused before its body is parsed, with
    the number of seconds until the next token (the 429's Retry-After)."""

    def __init__(self, burst: int, refill_seconds: float) -> None:
        if burst < 1 or refill_seconds <= 0:
            raise ValueError(f"burst must be >= 1 and refill_seconds > 0, got {burst}, {refill_seconds}")
        self.burst, self.refill_seconds = burst, refill_seconds
        self._state: dict[Hashable, tuple[float, datetime]] = {}  # key -> (tokens, when counted)
        self._lock = threading.Lock()

    def _tokens(self, key: Hashable, now: datetime) -> float:
        tokens, at = self._state.get(key, (float(self.burst), now))
        elapsed = max(0.0, (now - at).total_seconds())
        return min(float(self.burst), tokens + elapsed / self.refill_seconds)

    def retry_after(self, key: Hashable, now: datetime) -> int:
        """0 when ``key`` may try now, else the whole seconds until it may."""
        with self._lock:
            tokens = self._tokens(key, now)
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) * self.refill_seconds - 1e-9))  # no float dust

    def spend(self, key: Hashable, now: datetime) -> None:
        with self._lock:
            self._state[key] = (max(0.0, self._tokens(key, now) - 1), now)
            if len(self._state) > _MAX_KEYS:
                for old in [k for k in self._state if self._tokens(k, now) >= self.burst]:
                    del self._state[old]


class DailyCounter:
    """How many times each key did something on the current UTC day (new teams per client address)."""

    def __init__(self) -> None:
        self._day = ""
        self._counts: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def _today(self, now: datetime) -> dict[Hashable, int]:
        day = quota_day(now)
        if day != self._day:  # a new day forgets yesterday's counts
            self._day, self._counts = day, {}
        return self._counts

    def count(self, key: Hashable, now: datetime) -> int:
        with self._lock:
            return self._today(now).get(key, 0)

    def add(self, key: Hashable, now: datetime) -> None:
        with self._lock:
            counts = self._today(now)
            counts[key] = counts.get(key, 0) + 1
