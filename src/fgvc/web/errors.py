"""One refusal type, one JSON error envelope and one set of exception handlers for both web services.

Every error reply of ``fgvc serve`` and ``fgvc server`` is ``{"error": code, "message": text for a person}``
(plus a few service-specific keys, e.g. ``retry_after_seconds``) with the same status for the same fault:
a malformed request is 400 ``bad_request``, an unknown path 404 and a wrong method 405 (both ``http_error``),
a body over the limit 413, a body that never arrived 408 ``body_incomplete``, a bug 500 ``internal_error``.
The course client reads this envelope: keep its keys. :class:`Refusal` imports nothing of the extras, so
code without HTTP in it (the competition service) raises it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

__all__ = ["Refusal", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


class Refusal(Exception):
    """A request a service turns down: HTTP status, a short machine code and a message for a person;
    ``headers`` go on the reply (Retry-After, WWW-Authenticate), ``extra`` keys into its JSON."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 extra: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra or {}

    def to_dict(self) -> dict:
        return {"error": self.code, "message": self.message, **self.extra}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The envelope of every error reply."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _http_message(request: Request, error: HTTPException, not_found: str,
                  wrong_method_hint: Callable[[Request], str]) -> str:
    if error.status_code == 404:
        return f"nothing at {request.url.path}; {not_found}"
    if error.status_code == 405:
        allowed = {k.lower(): v for k, v in (error.headers or {}).items()}.get("allow")
        return (f"{request.method} is not accepted at {request.url.path}" + (f" (only {allowed})" if allowed else "")
                + wrong_method_hint(request))
    return str(error.detail)


def install_error_handlers(app: FastAPI, *, not_found: str, bug: str,
                           wrong_method_hint: Callable[[Request], str] = lambda _request: "",
                           on_refusal: Callable[[Refusal], None] = lambda _refusal: None) -> None:
    """The handlers that give every error the envelope: ``not_found`` says where to go instead (after
    "nothing at PATH; "), ``bug`` what a 500 means for the user; ``on_refusal`` sees each refusal (metrics)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(Refusal)
    async def _refusal(_request: Request, refusal: Refusal) -> JSONResponse:
        on_refusal(refusal)
        return JSONResponse(refusal.to_dict(), status_code=refusal.status, headers=refusal.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, "http_error",
                              _http_message(request, error, not_found, wrong_method_hint), error.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(str(e.get("msg", e)) for e in error.errors()[:3]) or "invalid"
        return error_response(400, "bad_request", f"the request is malformed: {problems}")

    @app.exception_handler(Exception)
    async def _bug(_request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal_error", f"answering this request failed ({type(error).__name__}); {bug}")
