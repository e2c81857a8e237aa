"""Reading an HTTP request body with a size limit, for `fgvc serve` and `fgvc server` alike.

A body declared or streamed beyond ``limit`` is refused; one up to :data:`DRAIN_FACTOR` times the limit is
read to its end and dropped first, so the client gets the 413 instead of a broken connection. Each
service turns the two exceptions into its own JSON reply.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BodyTooLarge", "BadContentLength", "DRAIN_FACTOR", "read_bounded_body"]

DRAIN_FACTOR = 4


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
