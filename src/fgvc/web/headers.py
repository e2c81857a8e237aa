"""The security headers of every reply of both services, as one plain ASGI middleware.

No MIME sniffing, no framing, no referrer, no caching of API replies unless a route says otherwise, and a
Content-Security-Policy each service states for its pages (the server's have no script; serve's page runs
its one inline script, allowed by its hash).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SecurityHeaders"]


class SecurityHeaders:
    """ASGI middleware (cheaper than BaseHTTPMiddleware) adding the headers a route did not set itself."""

    def __init__(self, app: Any, content_security_policy: str) -> None:
        self.app = app
        self.headers = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                        "Referrer-Policy": "no-referrer", "Content-Security-Policy": content_security_policy,
                        "Cache-Control": "no-store"}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.datastructures import MutableHeaders

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
