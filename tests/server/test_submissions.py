"""POST /api/submissions on SQLite and PostgreSQL: the reply, every refusal, quota, deadline, idempotency."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from fgvc.server import store

from .conftest import DEADLINE, N_IMAGES, add_team, after_deadline, bearer

API = "/api/submissions"


@pytest.fixture
def token(service):
    return add_team(service, "alpha")


def stored_count(service) -> int:
    return len(store.all_submissions(service.db))


def test_a_valid_submission_is_stored_scored_and_ranked(client, comp, service, token):
    reply = client.post(API, json=comp.body("alpha"), headers=bearer(token))
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["accuracy"] == data["public_score"] == 0.5
    assert (data["rank"], data["teams_ranked"], data["quota_left_today"], data["daily_limit"]) == (1, 1, 4, 5)
    assert data["quota_resets_at"] == "2027-01-11T00:00:00Z" and data["replayed"] is False
    assert "scored 50.00% on the 12 public test image(s)" in data["message"] and "4 of 5" in data["message"]
    [(team, row)] = store.all_submissions(service.db)
    assert team == "alpha" and row.id == data["submission_id"] and row.status == "scored"
    assert (row.public_score, row.private_score) == (0.5, 0.8125)
    body, _ = store.stored_body(service.db, row.id)
    assert json.loads(body) == comp.body("alpha")  # the raw body, as received


def test_groupname_may_be_left_out_with_a_token_but_must_match_when_given(client, comp, service, token):
    assert client.post(API, json=comp.body(None), headers=bearer(token)).status_code == 200
    reply = client.post(API, json=comp.body("beta"), headers=bearer(token))
    assert reply.status_code == 403 and reply.json()["error"] == "groupname_mismatch"
    assert "'beta'" in reply.json()["message"] and "'alpha'" in reply.json()["message"]
    assert stored_count(service) == 1


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer "])
def test_without_a_valid_token_nothing_is_stored(client, comp, service, token, header):
    reply = client.post(API, json=comp.body("alpha"), headers={"Authorization": header} if header else {})
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert reply.json()["error"] in ("token_required", "token_unknown") and reply.json()["message"]
    assert stored_count(service) == 0


def _swap(comp, **changes):
    body = comp.body("alpha")
    body["images"] = {**body["images"], **changes}
    return body


INVALID = {
    "not JSON": (lambda comp: b"images: nope", ["the request body is not JSON"]),
    "not UTF-8": (lambda comp: b'{"images": "\xff"}', ["not UTF-8"]),
    "a JSON array": (lambda comp: b"[1, 2]", ["holds a JSON array"]),
    "nested too deep": (lambda comp: b"[" * 30_000 + b"]" * 30_000, ["not a usable JSON submission"]),
    "a number too long": (lambda comp: b'{"images": ' + b"1" * 5000 + b"}", ["not a usable JSON submission"]),
    "no images key": (lambda comp: json.dumps({"groupname": "alpha"}).encode(), ["missing key 'images'"]),
    "images of the wrong type": (lambda comp: json.dumps({"images": ["a.jpg"], "groupname": "alpha"}).encode(),
                                 ["got a JSON array"]),
    "number class IDs": (lambda comp: json.dumps(_swap(comp, **{comp.public[0]: 4654})).encode(),
                         ["1 value(s) are not class-ID strings"]),
    "duplicate keys": (lambda comp: json.dumps(comp.body("alpha")).replace(
        '{"images": {', f'{{"images": {{"{comp.public[0]}": "00001", ', 1).encode(), ["appear more than once"]),
    "missing images": (lambda comp: json.dumps({"images": dict(list(comp.body("alpha")["images"].items())[:3]),
                                                "groupname": "alpha"}).encode(),
                       [f"{N_IMAGES - 3} of {N_IMAGES} test file(s) have no prediction", "(+15 more)"]),
    "unknown images": (lambda comp: json.dumps(_swap(comp, **{"zz1.jpg": "00001", "zz2.jpg": "00001"})).encode(),
                       ["2 key(s) are not test files: 'zz1.jpg', 'zz2.jpg'"]),
    "unknown class IDs": (lambda comp: json.dumps(_swap(comp, **{comp.public[0]: "4654", comp.private[0]: "9"}))
                          .encode(), ["2 prediction(s) use 2 unknown class ID(s)", "did you mean '04654'"]),
}


@pytest.mark.parametrize("kind", list(INVALID))
def test_each_kind_of_invalid_submission_is_a_400_naming_it_and_uses_no_quota(client, comp, service, token, kind):
    make, expected = INVALID[kind]
    reply = client.post(API, content=make(comp), headers=bearer(token))
    assert reply.status_code == 400, reply.text
    data = reply.json()
    assert data["error"] == "invalid_submission"
    for text in expected:
        assert text in data["message"]
    assert "Nothing was stored and no quota was used." in data["message"]
    assert stored_count(service) == 0
    good = client.post(API, json=comp.body("alpha"), headers=bearer(token)).json()
    assert good["quota_left_today"] == 4  # the invalid one cost nothing


def test_quota_is_per_team_per_utc_day_and_says_when_it_resets(client, comp, service, token, clock):
    other = add_team(service, "beta")
    for i in range(5):
        reply = client.post(API, json=comp.body("alpha", public_right=i), headers=bearer(token))
        assert reply.json()["quota_left_today"] == 4 - i
    refused = client.post(API, json=comp.body("alpha", public_right=9), headers=bearer(token))
    assert refused.status_code == 429
    data = refused.json()
    assert data["error"] == "quota_exceeded" and data["quota_resets_at"] == "2027-01-11T00:00:00Z"
    assert "resets at 2027-01-11T00:00:00Z, in 12 h 0 min" in data["message"]
    assert refused.headers["retry-after"] == str(12 * 3600)
    assert client.post(API, json=comp.body("beta"), headers=bearer(other)).status_code == 200  # not beta's quota
    clock.now += timedelta(hours=12)  # midnight UTC
    assert client.post(API, json=comp.body("alpha", public_right=9), headers=bearer(token)).status_code == 200
    assert stored_count(service) == 7


def test_no_daily_limit_when_it_is_zero(tmp_path, make_service, db_url):
    from .conftest import make_comp

    comp = make_comp(tmp_path, db_url, daily_limit=0)
    service = make_service(comp)
    token = add_team(service, "alpha")
    for i in range(7):
        reply = service.submit(json.dumps(comp.body("alpha", public_right=i)).encode(),
                               authorization=f"Bearer {token}")
        assert reply["quota_left_today"] is None and "left today" not in reply["message"]


def test_after_the_deadline_submissions_are_refused_with_a_403(client, comp, service, token, clock):
    clock.now = DEADLINE - timedelta(seconds=1)
    assert client.post(API, json=comp.body("alpha"), headers=bearer(token)).status_code == 200
    clock.now = DEADLINE
    reply = client.post(API, json=comp.body("alpha", public_right=9), headers=bearer(token))
    assert reply.status_code == 403 and reply.json()["error"] == "deadline_passed"
    assert "closed at 2027-01-15T23:59:00Z" in reply.json()["message"]
    assert stored_count(service) == 1


def test_a_retry_with_the_same_key_returns_the_first_result_and_uses_no_quota(client, comp, service, token):
    body = json.dumps(comp.body("alpha")).encode()
    first = client.post(API, content=body, headers=bearer(token, **{"Idempotency-Key": "k1"})).json()
    again = client.post(API, content=body, headers=bearer(token, **{"Idempotency-Key": "k1"})).json()
    assert again["submission_id"] == first["submission_id"] and again["accuracy"] == first["accuracy"]
    assert again["replayed"] is True and first["replayed"] is False
    assert again["quota_left_today"] == 4 and "already received as submission" in again["message"]
    assert stored_count(service) == 1
    other = client.post(API, content=body, headers=bearer(token, **{"Idempotency-Key": "k2"})).json()
    assert other["submission_id"] != first["submission_id"] and stored_count(service) == 2


def test_a_key_reused_for_another_body_is_a_409(client, comp, service, token):
    client.post(API, json=comp.body("alpha"), headers=bearer(token, **{"Idempotency-Key": "k"}))
    reply = client.post(API, json=comp.body("alpha", public_right=1), headers=bearer(token, **{"Idempotency-Key": "k"}))
    assert reply.status_code == 409 and reply.json()["error"] == "idempotency_key_reused"
    assert stored_count(service) == 1


def test_keys_are_per_team(client, comp, service, token):
    other = add_team(service, "beta")
    a = client.post(API, json=comp.body(None), headers=bearer(token, **{"Idempotency-Key": "same"})).json()
    b = client.post(API, json=comp.body(None), headers=bearer(other, **{"Idempotency-Key": "same"})).json()
    assert a["submission_id"] != b["submission_id"] and not b["replayed"]


def test_a_retry_after_the_deadline_of_a_submission_stored_before_it_is_answered(client, comp, service, token, clock):
    body = json.dumps(comp.body("alpha")).encode()
    first = client.post(API, content=body, headers=bearer(token, **{"Idempotency-Key": "k"})).json()
    clock.now = after_deadline()
    again = client.post(API, content=body, headers=bearer(token, **{"Idempotency-Key": "k"}))
    assert again.status_code == 200 and again.json()["submission_id"] == first["submission_id"]
    new = client.post(API, content=body, headers=bearer(token, **{"Idempotency-Key": "other"}))
    assert new.status_code == 403


def test_a_body_over_the_limit_is_a_clear_413(service, comp, token):
    from starlette.testclient import TestClient

    from fgvc.server.app import create_app

    with TestClient(create_app(service, max_body_bytes=1000)) as small:
        reply = small.post(API, content=b"x" * 1500, headers=bearer(token))
        assert reply.status_code == 413 and reply.json()["error"] == "body_too_large"
        assert "limit" in reply.json()["message"]

        def chunks():  # no Content-Length: the limit holds while streaming too
            yield b"x" * 600
            yield b"x" * 600

        streamed = small.post(API, content=chunks(), headers=bearer(token))
        assert streamed.status_code == 413
    assert stored_count(service) == 0


def test_every_error_reply_is_json_with_a_message(client, token):
    for method, path in (("GET", "/nope"), ("GET", API), ("PUT", "/results/"), ("GET", "/api/team")):
        reply = client.request(method, path)
        assert reply.status_code in (401, 404, 405), (method, path)
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json()["message"]
    assert client.get("/api/leaderboard?format=xml").status_code == 400


def test_an_internal_error_is_a_json_500_and_the_stored_body_is_kept(client, comp, service, token, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("scoring bug")

    monkeypatch.setattr(type(service.competitions.current()), "score", broken)
    reply = client.post(API, json=comp.body("alpha"), headers=bearer(token))
    assert reply.status_code == 500 and "kept and scored at restart" in reply.json()["message"]
    assert "scoring bug" not in reply.text
    monkeypatch.undo()
    [(_, row)] = store.all_submissions(service.db)
    assert row.status == "pending"
    assert service.rescore().rescored == 1  # what a restart does
    assert store.submission_by_id(service.db, row.id).public_score == 0.5


def test_health(client):
    reply = client.get("/healthz")
    assert reply.status_code == 200 and reply.json()["status"] == "ok"


def test_api_team_lists_the_teams_own_submissions(client, comp, service, token):
    other = add_team(service, "beta")
    client.post(API, json=comp.body("alpha"), headers=bearer(token))
    client.post(API, json=comp.body("beta"), headers=bearer(other))
    data = client.get("/api/team", headers=bearer(token)).json()
    assert data["team"] == "alpha" and len(data["submissions"]) == 1 and data["submissions"][0]["counts"]
    assert "private_score" not in data["submissions"][0]


def test_tokens_are_stored_hashed_and_never_logged(client, comp, service, token, caplog):
    import logging

    from sqlalchemy import select

    from fgvc.server.db import Team

    caplog.set_level(logging.DEBUG)
    client.post(API, json=comp.body("alpha"), headers=bearer(token))
    client.post(API, json=comp.body("alpha"), headers=bearer(token + "x"))
    with service.db.read() as conn:
        stored = conn.execute(select(Team.token_hash)).scalars().all()
    assert token not in stored and all(len(h) == 64 for h in stored)
    assert token not in caplog.text
