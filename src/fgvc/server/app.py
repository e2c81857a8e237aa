"""The HTTP side: FastAPI routes over :class:`~fgvc.server.service.CompetitionService`.

Routes::

    POST /api/submissions   submission JSON, 'Authorization: Bearer <token>' (or groupname in --auth open)
    POST /results/          the course's protocol: the same, any Content-Type, reply has "accuracy"
    GET  /                  leaderboard page            GET  /api/leaderboard[?format=csv]
    GET  /team, POST /team  a team's own submissions (token typed into a form)
    GET  /api/team          the same as JSON (Bearer token)
    GET  /healthz           liveness and database check (a read)
    GET  /readyz            readiness: a durable write to the database, as a submission makes (503 if it fails)
    GET  /metrics           Prometheus' text format: request latency, submissions scored and refused by code

Every reply is JSON with a "message" for a person, errors included (the web layer's envelope and statuses,
:mod:`fgvc.web.errors`), except the HTML pages and /metrics; every reply has the web layer's security headers.
Request bodies are read as raw bytes whatever the Content-Type, up to a size limit.
There are no admin routes: the instructor's actions are `fgvc server` commands on the machine.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import Counter
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from ..web.bounded_body import byte_size, read_body
from ..web.errors import Refusal, error_response, install_error_handlers
from ..web.headers import SecurityHeaders
from ..web.metrics import ServiceMetrics
from . import pages
from .competition import format_time
from .service import CompetitionService

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_FORM_MAX_BYTES = 4096


async def _read_body(request: Request, limit: int,
                     too_large: Callable[[int | None], Refusal] | None = None) -> bytes:
    """The raw body, refused with 413 beyond ``limit`` bytes (declared or streamed); ``too_large`` makes that
    413 from the declared size, if any."""
    def over_the_limit(_declared: int | None) -> Refusal:
        return Refusal(413, "body_too_large",
                       f"the request body is larger than this server's limit of {byte_size(limit)} ({limit:,} bytes); "
                       "a submission of 6,000 images is about 0.4 MB. Nothing was stored.")

    return await read_body(request, limit, too_large or over_the_limit)


def _submission_hint(request: Request) -> str:
    """After a 405: a POST anywhere else is most likely a submission sent to the wrong address."""
    return "; submissions go to POST /api/submissions (or POST /results/)" if request.method == "POST" else ""


def create_app(service: CompetitionService, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               submit_workers: int = 3) -> FastAPI:
    app = FastAPI(title="fgvc server", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityHeaders, content_security_policy=pages.CONTENT_SECURITY_POLICY)
    metrics = ServiceMetrics("fgvc_server")
    metrics.install(app)
    scored = Counter("fgvc_server_submissions", "Submissions answered with a score: 'new' ones stored and scored, "
                     "'replayed' retries of a stored one", ["kind"], registry=metrics.registry)
    refused = Counter("fgvc_server_submissions_refused", "Submissions refused, by the reply's error code",
                      ["code"], registry=metrics.registry)
    install_error_handlers(app, not_found="the leaderboard is at /, submissions go to POST /api/submissions (or "
                           "POST /results/)", wrong_method_hint=_submission_hint,
                           bug="a bug, logged for the instructor; a submission stored before the failure is kept "
                           "and scored at restart")

    @app.exception_handler(OperationalError)
    async def _database_down(_request: Request, error: OperationalError) -> JSONResponse:
        log.error("database error: %s", error.orig)
        return error_response(503, "database_unavailable", "the server's database is unavailable right now; send "
                              "the same request again in a moment (a retry with the same Idempotency-Key, as "
                              "`fgvc submit` sends, is never counted twice)", {"Retry-After": "5"})

    # Submissions are CPU work (JSON, checks, scoring) around short database writes. A few threads keep
    # the disk busy while another parses; more would only queue on the GIL and stretch every write.
    submit_threads = anyio.CapacityLimiter(submit_workers)

    async def submit(request: Request) -> JSONResponse:
        try:
            reply = await _submit(request)
        except Refusal as refusal:
            refused.labels(refusal.code).inc()
            raise
        scored.labels("replayed" if reply["replayed"] else "new").inc()
        return JSONResponse(reply)

    async def _submit(request: Request) -> dict:
        # the headers say who is asking: the body of a stranger (401) or of a sender out of attempts (429) is never read
        client = request.client.host if request.client else None
        await run_in_threadpool(service.check_sender, request.headers.get("authorization"), client)
        # a body larger than any valid submission of this test set is not even read (nor held in memory)
        limit = min(max_body_bytes, service.competitions.current().max_body_bytes)
        raw = await _read_body(request, limit, service.body_too_large if limit < max_body_bytes else None)
        call = functools.partial(service.submit, raw, authorization=request.headers.get("authorization"),
                                 idempotency_key=request.headers.get("idempotency-key"),
                                 client=client)
        return await anyio.to_thread.run_sync(call, limiter=submit_threads)

    for path in ("/api/submissions", "/results/", "/results"):
        app.add_api_route(path, submit, methods=["POST"], include_in_schema=False)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(service.health))

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return metrics.response()

    @app.get("/readyz")
    async def readyz() -> JSONResponse:  # a failed write is the OperationalError handler's 503
        return JSONResponse(await run_in_threadpool(service.ready))

    @app.get("/api/leaderboard")
    async def leaderboard_api(format: str = "json") -> Response:
        board = await run_in_threadpool(service.leaderboard)
        if format == "csv":
            return PlainTextResponse(board.to_csv(), media_type="text/csv; charset=utf-8",
                                     headers={"Content-Disposition": 'attachment; filename="leaderboard.csv"'})
        if format != "json":
            raise Refusal(400, "bad_request", f"format must be json or csv, got {format!r}")
        return JSONResponse(board.to_dict())

    @app.get("/api/team")
    async def team_api(request: Request) -> JSONResponse:
        def view() -> dict:
            team = service.team_from_token(request.headers.get("authorization"))
            v = service.team_view(team)
            return {"team": team.name, "rank": v.rank, "quota_left_today": v.quota_left, "daily_limit": v.daily_limit,
                    "quota_resets_at": format_time(v.quota_resets_at), "final": v.final,
                    "message": f"{len(v.submissions)} submission(s) of team {team.name!r}",
                    "submissions": [{"submission_id": s.id, "submitted_at": format_time(s.created_at),
                                     "status": s.status, "public_score": s.public_score,
                                     "counts": s.id == v.counted_id,
                                     **({"private_score": s.private_score} if v.final else {})}
                                    for s in v.submissions]}

        return JSONResponse(await run_in_threadpool(view))

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def leaderboard_page() -> HTMLResponse:
        board = await run_in_threadpool(service.leaderboard)
        return HTMLResponse(pages.leaderboard_page(board, board.generated_at), headers={"Cache-Control": "no-cache"})

    @app.get("/team", response_class=HTMLResponse)
    async def team_login() -> HTMLResponse:
        return HTMLResponse(pages.team_login_page(service.competitions.current().title))

    @app.post("/team", response_class=HTMLResponse)
    async def team_page(request: Request) -> HTMLResponse:
        title = service.competitions.current().title
        form = parse_qs((await _read_body(request, _FORM_MAX_BYTES)).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()

        def view():
            return service.team_view(service.team_from_token(f"Bearer {token}" if token else None))

        try:
            team_view = await run_in_threadpool(view)
        except Refusal as refusal:
            message = "Enter your team token." if refusal.code == "token_required" else \
                "That token belongs to no team; check it, or ask your instructor for a new one."
            return HTMLResponse(pages.team_login_page(title, message), status_code=refusal.status)
        return HTMLResponse(pages.team_page(title, team_view))

    return app
