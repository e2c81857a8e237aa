"""Small promises of the HTTP side: a stranger's body is never read, readiness is a real write, HEAD /
answers, size limits are said in human units."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from fgvc.server.app import create_app
from fgvc.server.db import Meta
from fgvc.web.bounded_body import byte_size

from .conftest import add_team, bearer

API = "/api/submissions"


@pytest.fixture
def token(service):
    return add_team(service, "alpha")


def _probe(service) -> str | None:
    with service.db.read() as conn:
        return conn.execute(select(Meta.value).where(Meta.key == "ready_probe")).scalar()


def test_readyz_writes_and_fails_when_writes_fail_while_healthz_still_reads(client, service, clock, monkeypatch):
    assert _probe(service) is None
    reply = client.get("/readyz")
    assert reply.status_code == 200 and reply.json()["status"] == "ready"
    assert _probe(service) == "2027-01-10T12:00:00Z"  # the clock's time, written durably

    def refused(*args, **kwargs):  # what a full disk or a read-only database file does to every write
        raise OperationalError("UPDATE fgvc_meta", {}, Exception("attempt to write a readonly database"))

    monkeypatch.setattr(service.db, "write", refused)
    assert client.get("/healthz").status_code == 200  # a read still works: liveness says ok
    reply = client.get("/readyz")
    assert reply.status_code == 503 and reply.json()["error"] == "database_unavailable"
    assert reply.headers["retry-after"] == "5"


def test_head_of_the_leaderboard_page_is_answered(client):
    reply = client.head("/")
    assert reply.status_code == 200 and reply.content == b""
    assert reply.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(("n", "shown"), [(4096, "4 KB"), (16 * 1024 * 1024, "16 MB"), (1536 * 1024, "1.5 MB"),
                                         (1000, "1000 bytes")])
def test_sizes_are_said_in_human_units(n, shown):
    assert byte_size(n) == shown


def test_the_team_forms_413_names_its_limit_in_kb(client):
    reply = client.post("/team", content=b"token=" + b"x" * 5000,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 413
    assert "larger than this server's limit of 4 KB (4,096 bytes)" in reply.json()["message"]


def test_a_submission_without_a_valid_token_is_refused_before_its_body_is_read(service, comp, token):
    """The body is a generator that records being read: a 401 must come without touching it."""
    from starlette.testclient import TestClient

    read = []

    def body():
        read.append(1)
        yield b"{}"

    with TestClient(create_app(service)) as client:
        for headers in ({}, bearer("fgvc_not-a-team-token")):
            reply = client.post(API, content=body(), headers=headers)
            assert reply.status_code == 401 and reply.json()["error"] in ("token_required", "token_unknown")
        assert read == []
        assert client.post(API, content=body(), headers=bearer(token)).status_code == 400
        assert read == [1]


def test_a_team_out_of_invalid_attempts_is_refused_before_its_body_is_read(comp, make_service):
    from starlette.testclient import TestClient

    service = make_service(comp, invalid_burst=1)
    token = add_team(service, "alpha")
    read = []

    def body():
        read.append(1)
        yield b"{}"

    with TestClient(create_app(service)) as client:
        assert client.post(API, content=body(), headers=bearer(token)).status_code == 400  # its one attempt
        reply = client.post(API, content=body(), headers=bearer(token))
        assert reply.status_code == 429 and reply.json()["error"] == "too_many_invalid_submissions"
        assert int(reply.headers["retry-after"]) == 60  # one attempt back per 60 s, the default
    assert read == [1]
