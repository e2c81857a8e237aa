"""Reading an HTTP request body with a size limit, for `fgvc serve` and `fgvc server` alike.

A body declared or streamed beyond ``limit`` is refused; one up to :data:`DRAIN_FACTOR` times the limit is
read to its end and dropped first, so the client gets the 413 instead of a broken connection.
:func:`read_body` is what both services call: the faults as :class:`~fgvc.web.errors.Refusal` s, each
service saying only what its 413 tells the user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["BodyTooLarge", "BadContentLength", "DRAIN_FACTOR", "byte_size", "read_body", "read_bounded_body"]

DRAIN_FACTOR = 4


def byte_size(n: int) -> str:
    """A byte count for a person: '16 MB', '4 KB', '1.5 MB' (binary units, as the limits are set)."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


class BodyTooLarge(Exception):
    """The body is larger than the limit (declared in Content-Length, or counted while streaming)."""


class BadContentLength(Exception):
    """The Content-Length header is not a number."""


async def read_bounded_body(request: Any, limit: int) -> bytes:
    """The raw body of a Starlette ``request``, at most ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadContentLength
        if int(declared) > limit:
            if int(declared) <= DRAIN_FACTOR * limit:
                async for _ in request.stream():
                    pass
            raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_FACTOR * limit:
            raise BodyTooLarge
        if size <= limit and chunk:
            chunks.append(chunk)
    if size > limit:
        raise BodyTooLarge
    return b"".join(chunks)


async def read_body(request: Any, limit: int, too_large: Callable[[int | None], Any]) -> bytes:
    """The raw body, at most ``limit`` bytes; else the Refusal ``too_large(declared size or None)`` (413),
    400 ``bad_request`` for a Content-Length that is not a number, 408 ``body_incomplete`` for a body that
    stopped arriving (the client left, or was cut off by the body deadline: nobody may be there to read it)."""
    from starlette.requests import ClientDisconnect

    from .errors import Refusal

    try:
        return await read_bounded_body(request, limit)
    except BodyTooLarge:
        declared = request.headers.get("content-length", "")
        raise too_large(int(declared) if declared.isdigit() else None) from None
    except BadContentLength:
        raise Refusal(400, "bad_request", "the Content-Length header is not a number") from None
    except ClientDisconnect:
        raise Refusal(408, "body_incomplete", "the request body did not arrive in time; nothing was "
                      "stored") from None
