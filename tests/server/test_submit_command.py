"""`fgvc submit` against `fgvc server`: the token (flag or environment), the idempotency key, what it prints,
and the server's own messages as one-line errors; retries on a 503 still work."""

from __future__ import annotations

import hashlib
import json

import pytest

from fgvc.cli import main
from fgvc.competition.submission import write_submission
from fgvc.server import store

from .conftest import add_team, make_comp


@pytest.fixture
def setup(tmp_path, make_service, live):
    comp = make_comp(tmp_path, None, daily_limit=2)
    service = make_service(comp)
    token = add_team(service, "alpha")
    server = live(service)
    path = tmp_path / "submission.json"
    write_submission(path, comp.body("alpha")["images"], "alpha")
    return comp, service, server, token, path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_submit_with_a_token_prints_score_rank_and_quota(setup, capsys, monkeypatch):
    comp, service, server, token, path = setup
    seen = []
    original = service.submit
    monkeypatch.setattr(service, "submit", lambda raw, **kw: seen.append(kw) or original(raw, **kw))
    assert main(["submit", str(path), "--url", server.url + "/api/submissions", "--token", token]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["accuracy is 0.5 (server reply after 1 attempt(s))",
                   "submission 1: public score 50.00%, rank 1 of 1 team(s)",
                   "1 of 2 submission(s) left today (the quota resets at 2027-01-11T00:00:00Z)"]
    assert seen[0]["idempotency_key"] == "sha256-" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert seen[0]["authorization"] == f"Bearer {token}"


def test_the_token_can_come_from_the_environment_and_a_resend_is_not_counted(setup, capsys, monkeypatch):
    comp, service, server, token, path = setup
    monkeypatch.setenv("FGVC_TOKEN", token)
    assert main(["submit", str(path), "--url", server.url + "/api/submissions"]) == 0
    assert main(["submit", str(path), "--url", server.url + "/api/submissions"]) == 0
    out = capsys.readouterr().out
    assert "the server had already received this exact file" in out
    assert len(store.all_submissions(service.db)) == 1


def test_refusals_are_one_line_with_the_servers_message(setup, capsys, monkeypatch, tmp_path):
    comp, service, server, token, path = setup
    url = server.url + "/api/submissions"
    monkeypatch.delenv("FGVC_TOKEN", raising=False)
    assert main(["submit", str(path), "--url", url]) == 2
    line = _error_line(capsys)
    assert "(HTTP 401): this server needs your team token" in line and "--token, or set FGVC_TOKEN" in line

    wrong = tmp_path / "wrong.json"
    write_submission(wrong, {"a.jpg": "00001"}, "alpha")
    assert main(["submit", str(wrong), "--url", url, "--token", token]) == 2
    err = capsys.readouterr().err  # a list of problems, one per line, as `fgvc score` prints them
    assert err.startswith(f"fgvc: error: {url} refused the submission (HTTP 400): submission does not match the "
                          "test set:\n  - 28 of 28 test file(s) have no prediction")
    assert "Nothing was stored and no quota was used. Not retried" in err

    for i in range(2):
        other = tmp_path / f"s{i}.json"
        write_submission(other, comp.body("alpha", public_right=i)["images"], "alpha")
        assert main(["submit", str(other), "--url", url, "--token", token]) == 0
    assert main(["submit", str(path), "--url", url, "--token", token]) == 2
    line = _error_line(capsys)
    assert "(HTTP 429): team 'alpha' has used all 2 submission(s) of today (UTC)" in line
    assert "resets at 2027-01-11T00:00:00Z" in line and "Not retried" in line
    assert main(["submit", str(path), "--url", url, "--token", "not a token"]) == 2
    assert "--token (or FGVC_TOKEN) must be the team token" in _error_line(capsys)


def test_a_503_is_retried_and_the_retry_is_not_counted_twice(setup, capsys, monkeypatch):
    from sqlalchemy.exc import OperationalError

    comp, service, server, token, path = setup
    original, calls = service.submit, []

    def flaky(raw, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            original(raw, **kwargs)  # stored and scored, then the database "goes away" before the reply
            raise OperationalError("SELECT 1", {}, Exception("connection lost"))
        return original(raw, **kwargs)

    monkeypatch.setattr(service, "submit", flaky)
    monkeypatch.setattr("time.sleep", lambda s: None)
    assert main(["submit", str(path), "--url", server.url + "/api/submissions", "--token", token]) == 0
    out = capsys.readouterr().out
    assert "after 2 attempt(s)" in out and "already received" in out
    assert len(store.all_submissions(service.db)) == 1


def test_a_file_without_groupname_is_sent_with_the_token_and_scored_for_the_tokens_team(setup, capsys, tmp_path):
    comp, service, server, token, path = setup
    bare = tmp_path / "bare.json"  # what curl users write: the server takes the team from the token
    bare.write_text(json.dumps({"images": comp.body(None)["images"]}), encoding="utf-8")
    url = server.url + "/api/submissions"
    assert main(["submit", str(bare), "--url", url, "--token", token]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "accuracy is 0.5 (server reply after 1 attempt(s))"
    [(team, _)] = store.all_submissions(service.db)
    assert team == "alpha"
    # without a token nothing names the team: refused before any request, saying how to name it
    assert main(["submit", str(bare), "--url", url]) == 2
    assert "missing key 'groupname' (your group's name; a team that sends its token, e.g. `fgvc submit --token`, " \
           "may leave it out)" in capsys.readouterr().err
    assert len(store.all_submissions(service.db)) == 1
