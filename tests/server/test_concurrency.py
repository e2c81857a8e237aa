"""Quota and idempotency under real concurrency: threads against a live server, and two servers on one SQLite."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from fgvc.server import store

from .conftest import add_team, bearer, post


def _bodies(comp, n: int) -> list[bytes]:
    return [json.dumps(comp.body("alpha", public_right=i % 13, private_right=i)).encode() for i in range(n)]


def test_sixteen_parallel_submissions_with_five_left_accept_exactly_five(comp, service, live):
    token = add_team(service, "alpha")
    server = live(service)
    barrier = threading.Barrier(16)

    def send(body: bytes) -> tuple[int, dict]:
        barrier.wait()
        return post(server.url + "/api/submissions", body, bearer(token))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, _bodies(comp, 16)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 5 + [429] * 11
    accepted = sorted(reply["submission_id"] for status, reply in results if status == 200)
    rows = store.all_submissions(service.db)
    assert sorted(r.id for _, r in rows) == accepted and all(r.status == "scored" for _, r in rows)
    assert sorted(r.slot for _, r in rows) == [1, 2, 3, 4, 5]


def test_parallel_retries_with_one_key_store_one_submission(comp, service, live):
    token = add_team(service, "alpha")
    server = live(service)
    body = json.dumps(comp.body("alpha")).encode()
    barrier = threading.Barrier(8)

    def send(_) -> dict:
        barrier.wait()
        status, reply = post(server.url + "/api/submissions", body, bearer(token, **{"Idempotency-Key": "once"}))
        assert status == 200, reply
        return reply

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(send, range(8)))
    assert len({r["submission_id"] for r in replies}) == 1
    assert sum(not r["replayed"] for r in replies) == 1
    assert len(store.all_submissions(service.db)) == 1


def test_two_server_processes_on_one_database_still_accept_exactly_five(comp, make_service):
    """Two services with their own engines (and, for SQLite, their own in-process locks): the database's
    transactions and unique constraints alone keep the quota."""
    first, second = make_service(comp), make_service(comp)
    token = add_team(first, "alpha")
    bodies = _bodies(comp, 16)
    barrier = threading.Barrier(16)

    def send(i: int) -> str:
        barrier.wait()
        try:
            (first if i % 2 else second).submit(bodies[i], authorization=f"Bearer {token}")
            return "accepted"
        except Exception as e:  # noqa: BLE001
            return getattr(e, "code", repr(e))

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(send, range(16)))
    assert sorted(outcomes) == ["accepted"] * 5 + ["quota_exceeded"] * 11
    assert len(store.all_submissions(first.db)) == 5
