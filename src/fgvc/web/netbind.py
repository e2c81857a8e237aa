"""The listening socket and the Uvicorn settings for `fgvc serve` and `fgvc server run`, in one place.

The socket is bound before Uvicorn starts, so a busy port is one line naming it, not a traceback from
inside the server.

Why a protocol of our own: Uvicorn (0.55, h11) times out only the idle gap *between* requests
(``timeout_keep_alive``, armed after a response). A connection that never completes its headers, or
trickles its body, or keeps sending a body after its reply (a refused upload), is held for ever: the
keep-alive timer is cancelled by every byte and never re-armed, and a fresh connection has none at all.
:class:`GuardedH11Protocol` adds deadlines for the request itself: its headers must arrive within
``header_timeout`` of the connection opening (or of the first byte of a later request on it), its body
within ``body_timeout`` of the headers; otherwise the connection is closed. Together with
``limit_concurrency`` (new requests beyond it get 503) this bounds what stalled clients can hold.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

__all__ = ["HttpLimits", "bind", "url_host", "uvicorn_config"]


@dataclass(frozen=True)
class HttpLimits:
    """How long a client may take over each part of a request, and how many connections are served.

    Defaults suit a course: a 0.4 MB submission needs 60 s only below ~55 kbit/s."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000


def url_host(host: str) -> str:
    """``host`` as written in a URL: an IPv6 address in brackets (``http://[::1]:8000/``)."""
    return f"[{host}]" if ":" in host else host


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}; pass another --port (or --host)") from None
    sock.set_inheritable(True)
    return sock


@functools.cache
def _guarded_protocol_class() -> type:
    """Defined on first use: Uvicorn and h11 are the server extra's, imported only when a server starts."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        """Uvicorn's h11 protocol with a deadline for a request's headers and another for its body."""

        def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._limits = limits
            self._phase: str | None = None
            self._deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._arm(None)
            super().connection_lost(exc)

        def _watch(self) -> None:
            """Which part of a request the client owes now: 'headers', 'body', or nothing (idle or answered)."""
            state = self.conn.their_state
            if state is h11.SEND_BODY:  # also after an early reply (a 401 sent before the body): it is discarded
                phase = "body"
            elif state is h11.IDLE and (self.cycle is None or self.conn.trailing_data[0]):
                phase = "headers"  # a fresh connection, or a later request has begun
            else:
                phase = None  # between requests Uvicorn's keep-alive timer runs
            if phase != self._phase:
                self._arm(phase)

        def _arm(self, phase: str | None) -> None:
            self._phase = phase
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if phase is not None:
                seconds = self._limits.header_timeout if phase == "headers" else self._limits.body_timeout
                self._deadline = self.loop.call_later(seconds, self._expired, phase, seconds)

        def _expired(self, phase: str, seconds: float) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.logger.debug("closing a connection from %s: its request %s took over %g s", self.client,
                                  phase, seconds)
                self.transport.close()

    return GuardedH11Protocol


class _RedactQuery(logging.Filter):
    """Access-log lines without query strings: a token sent as ``?token=...`` must not land in a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[query redacted]", *args[3:])
        return True


def _redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactQuery) for f in access.filters):
        access.addFilter(_RedactQuery())


def uvicorn_config(app: Any, *, log_level: str = "info", limits: HttpLimits | None = None,
                   ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                   trusted_proxies: Sequence[str] = ()) -> Any:
    """The one Uvicorn configuration of both services.

    Forwarded headers (X-Forwarded-For/-Proto) are believed only from ``trusted_proxies`` (addresses or
    networks); with none, never, whatever Uvicorn's default or $FORWARDED_ALLOW_IPS say."""
    import uvicorn

    limits = limits or HttpLimits()
    config = uvicorn.Config(
        app, log_level=log_level, server_header=False, backlog=2048, timeout_graceful_shutdown=10,
        http=functools.partial(_guarded_protocol_class(), limits=limits),
        timeout_keep_alive=limits.keep_alive_timeout, limit_concurrency=limits.max_connections,
        ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
        proxy_headers=bool(trusted_proxies), forwarded_allow_ips=",".join(trusted_proxies) or "")
    _redact_access_log()
    return config
