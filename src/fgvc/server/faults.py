"""Deterministic crash points for the kill -9 tests, off unless ``FGVC_SERVER_FAULT`` is set.

``FGVC_SERVER_FAULT=kill-after-store:3`` makes the server SIGKILL itself right after the durable write
of the 3rd submission it stores, before scoring it or replying; ``kill-after-score:N`` right after
the N-th scores are written, before the reply. Several points are separated by commas. Counting is
per server process, so the tests name the exact submission that dies instead of sleeping and hoping.
"""

from __future__ import annotations

import os
import signal
import threading

from ..errors import ConfigError

__all__ = ["FAULT_ENV", "Faults"]

FAULT_ENV = "FGVC_SERVER_FAULT"
POINTS = ("kill-after-store", "kill-after-score")


class Faults:
    def __init__(self, spec: str | None = None) -> None:
        self._targets: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        for item in filter(None, (part.strip() for part in (spec or "").split(","))):
            point, _, number = item.partition(":")
            if point not in POINTS or not number.isdigit() or int(number) < 1:
                raise ConfigError(f"{FAULT_ENV}: {item!r} is not one of {', '.join(p + ':N' for p in POINTS)}")
            self._targets[point] = int(number)

    @classmethod
    def from_environment(cls) -> Faults:
        return cls(os.environ.get(FAULT_ENV))

    def reached(self, point: str) -> None:
        """Count one passage of ``point``; the N-th named in the spec kills this process on the spot."""
        if point not in self._targets:
            return
        with self._lock:
            self._counts[point] = self._counts.get(point, 0) + 1
            if self._counts[point] == self._targets[point]:
                os.kill(os.getpid(), signal.SIGKILL)
