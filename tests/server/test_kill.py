"""kill -9 of a real server process at a named point (FGVC_SERVER_FAULT), then a restart: nothing lost,
nothing half-stored, and a client's retry with its idempotency key is answered from the first result."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fgvc.competition.client import idempotency_key
from fgvc.server import store
from fgvc.server.competition import CompetitionCache
from fgvc.server.runner import open_database
from fgvc.server.security import hash_token, new_token
from fgvc.server.service import CompetitionService

from .conftest import N_IMAGES, NOW, bearer, post


@pytest.fixture
def teams(comp):
    """Tokens of three teams, added straight to the competition's database."""
    db = open_database(CompetitionCache(comp.directory), None)
    tokens = {}
    for name in ("alpha", "beta", "gamma"):
        tokens[name] = new_token()
        store.add_team(db, name, hash_token(tokens[name]), NOW)
    db.dispose()
    return tokens


def _rows(comp) -> list[store.SubmissionRow]:
    db = open_database(CompetitionCache(comp.directory), None)
    try:
        rows = [r for _, r in store.all_submissions(db)]
        for r in rows:  # none half-stored: every row has its complete body (compact JSON of every image)
            body, _ = store.stored_body(db, r.id)
            assert len(json.loads(body)["images"]) == N_IMAGES
        return rows
    finally:
        db.dispose()


def _send(url: str, token: str, body: bytes) -> tuple[int, dict] | None:
    try:
        return post(url + "/api/submissions", body, bearer(token, **{"Idempotency-Key": idempotency_key(body)}))
    except OSError:  # the server died before replying
        return None


def test_killed_after_storing_the_body_the_submission_is_scored_at_restart(comp, teams, server_process):
    first, second = (json.dumps(comp.body("alpha", public_right=r)).encode() for r in (3, 6))
    server = server_process(comp.directory, env={"FGVC_SERVER_FAULT": "kill-after-store:2"})
    answered = _send(server.url, teams["alpha"], first)
    assert answered is not None and answered[0] == 200
    assert _send(server.url, teams["alpha"], second) is None
    assert server.process.wait(timeout=30) == -9
    rows = _rows(comp)
    assert [r.status for r in rows] == ["scored", "pending"]  # stored durably, not scored, no reply sent

    server = server_process(comp.directory)
    assert [r.status for r in _rows(comp)] == ["scored", "scored"]  # start-up scored it
    status, retry = _send(server.url, teams["alpha"], second)
    assert status == 200 and retry["replayed"] and retry["submission_id"] == rows[1].id
    assert retry["accuracy"] == 0.5 and retry["quota_left_today"] == 3
    status, again = _send(server.url, teams["alpha"], first)
    assert status == 200 and again == {**answered[1], "replayed": True, "rank": again["rank"],
                                       "quota_left_today": 3, "message": again["message"]}
    assert len(_rows(comp)) == 2


def test_killed_after_scoring_before_replying_the_retry_gets_the_score(comp, teams, server_process):
    body = json.dumps(comp.body("beta")).encode()
    server = server_process(comp.directory, env={"FGVC_SERVER_FAULT": "kill-after-score:1"})
    assert _send(server.url, teams["beta"], body) is None
    assert server.process.wait(timeout=30) == -9
    [row] = _rows(comp)
    assert row.status == "scored"
    server = server_process(comp.directory)
    status, retry = _send(server.url, teams["beta"], body)
    assert status == 200 and retry["replayed"] and retry["submission_id"] == row.id and retry["accuracy"] == 0.5
    assert len(_rows(comp)) == 1


def test_a_kill_in_the_middle_of_a_rush_loses_and_doubles_nothing(comp, teams, server_process):
    jobs = [(team, json.dumps(comp.body(team, public_right=i, private_right=i)).encode())
            for team in teams for i in range(5)]
    server = server_process(comp.directory, env={"FGVC_SERVER_FAULT": "kill-after-store:7"})
    barrier = threading.Barrier(6)

    def rush(chunk):
        barrier.wait()
        return [(team, body, _send(server.url, teams[team], body)) for team, body in chunk]

    with ThreadPoolExecutor(6) as pool:
        outcomes = [o for part in pool.map(rush, [jobs[i::6] for i in range(6)]) for o in part]
    assert server.process.wait(timeout=30) == -9
    replied = {idempotency_key(body): reply for _, body, reply in outcomes if reply is not None}
    assert all(status == 200 for status, _ in replied.values())
    # the 7th store came from a client's second request, so at least one reply was sent; the kill stopped the rest
    assert 1 <= len(replied) < len(jobs)

    server = server_process(comp.directory)
    for team, body, reply in outcomes:  # what `fgvc submit` does: retry with the same key
        if reply is None:
            status, data = _send(server.url, teams[team], body)
            assert status == 200, data
            replied[idempotency_key(body)] = (status, data)
    rows = {r.id: r for r in _rows(comp)}
    assert len(rows) == len(jobs) and all(r.status == "scored" for r in rows.values())
    for _, reply in replied.values():
        assert rows[reply["submission_id"]].public_score == reply["accuracy"]
    assert len({reply["submission_id"] for _, reply in replied.values()}) == len(jobs)


def test_a_bad_fault_spec_is_refused():
    from fgvc.errors import ConfigError
    from fgvc.server.faults import Faults

    with pytest.raises(ConfigError, match="kill-after-store:N"):
        Faults("kill-after-lunch:1")
    Faults("").reached("kill-after-store")  # off: nothing happens


def test_start_up_recovery_also_rescores_rows_scored_with_other_labels(comp, make_service, tmp_path):
    service: CompetitionService = make_service(comp)
    token = new_token()
    store.add_team(service.db, "alpha", hash_token(token), NOW)
    service.submit(json.dumps(comp.body("alpha")).encode(), authorization=f"Bearer {token}")
    labels = (comp.directory / "labels.csv").read_text().replace(",00001\n", ",00002\n")
    (comp.directory / "labels.csv").write_text(labels)  # edited by hand, no `fgvc server rescore`
    summary = service.rescore()
    assert summary.rescored == 1 and summary.changed == 1
