"""The course's own protocol (`--auth open`): a plain string body POSTed to /results/, no headers, no token;
the team is the body's 'groupname'; the reply is JSON with "accuracy", errors included."""

from __future__ import annotations

import json

import httpx
import pytest

from fgvc.server import store
from fgvc.server.runner import read_teams_file

from .conftest import after_deadline


def test_a_plain_string_post_to_results_reads_accuracy(comp, server_process, tmp_path):
    """Exactly what the teams' scripts do: ``requests.post(url + "/results/", json.dumps(body))``."""
    teams = tmp_path / "teams.txt"
    teams.write_text("team-7\nteam-8\n")
    server = server_process(comp.directory, "--auth", "open", "--teams-file", str(teams))
    request = httpx.Request("POST", server.url + "/results/", content=json.dumps(comp.body("team-7")))
    assert "content-type" not in request.headers  # a str body and no headers, as requests sends it
    with httpx.Client() as http:
        response = http.send(request)
        assert response.status_code == 200
        assert response.json()["accuracy"] == 0.5
        board = http.get(server.url + "/api/leaderboard").json()
        assert [(t["team"], t["rank"]) for t in board["teams"]] == [("team-7", 1), ("team-8", None)]
        stranger = http.send(httpx.Request("POST", server.url + "/results/", content=json.dumps(comp.body("x"))))
        assert stranger.status_code == 403 and "'x' is not registered" in stranger.json()["message"]
        # the old scripts print response.text when the reply is not JSON: it always is
        bad = http.send(httpx.Request("POST", server.url + "/results/", content="not json"))
        assert bad.status_code == 400 and "the request body is not JSON" in bad.json()["message"]


@pytest.fixture
def open_service(comp, make_service):
    return make_service(comp, auth="open")


@pytest.fixture
def open_client(open_service):
    from starlette.testclient import TestClient

    from fgvc.server.app import create_app

    with TestClient(create_app(open_service)) as client:
        yield client


def test_teams_are_created_by_their_first_valid_submission_only(open_client, open_service, comp):
    assert open_client.post("/results/", content=json.dumps({"images": {}, "groupname": "ghost"})).status_code == 400
    assert store.team_by_name(open_service.db, "ghost") is None
    reply = open_client.post("/results", content=json.dumps(comp.body("team-7")))  # no trailing slash either
    assert reply.status_code == 200 and reply.json()["team"] == "team-7"
    assert store.team_by_name(open_service.db, "team-7") is not None
    missing = open_client.post("/results/", content=json.dumps(comp.body(None)))
    assert missing.status_code == 400 and "missing key 'groupname'" in missing.json()["message"]
    for bad in ("x" * 101, "tab\there", " padded"):
        refused = open_client.post("/results/", content=json.dumps(comp.body(bad)))
        assert refused.status_code == 400 and "cannot be a team name" in refused.json()["message"]
    assert [t.name for t, _ in store.list_teams(open_service.db)] == ["team-7"]


def test_open_mode_keeps_quota_and_deadline(open_client, comp, clock):
    for i in range(5):
        assert open_client.post("/results/", content=json.dumps(comp.body("g", public_right=i))).status_code == 200
    over = open_client.post("/results/", content=json.dumps(comp.body("g", public_right=7)))
    assert over.status_code == 429 and "resets at" in over.json()["message"]
    clock.now = after_deadline()
    closed = open_client.post("/results/", content=json.dumps(comp.body("h")))
    assert closed.status_code == 403 and "closed" in closed.json()["message"]


def test_a_teams_file_accepts_only_its_names(comp, make_service, tmp_path):
    from starlette.testclient import TestClient

    from fgvc.server.app import create_app

    teams_file = tmp_path / "teams.txt"
    teams_file.write_text("# registered\nteam-7\n\nteam 8\n", encoding="utf-8")
    names = read_teams_file(teams_file)
    assert names == {"team-7", "team 8"}
    service = make_service(comp, auth="open", registered=names)
    with TestClient(create_app(service)) as client:
        refused = client.post("/results/", content=json.dumps(comp.body("team-9")))
        assert refused.status_code == 403 and "'team-9' is not registered" in refused.json()["message"]
        assert client.post("/results/", content=json.dumps(comp.body("team 8"))).status_code == 200


def test_teams_file_errors(tmp_path):
    from fgvc.errors import ConfigError, UserError

    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n")
    with pytest.raises(UserError, match="lists no team names"):
        read_teams_file(empty)
    bad = tmp_path / "bad.txt"
    bad.write_text("ok\n" + "x" * 101 + "\n")
    with pytest.raises(ConfigError, match="at most 100 characters"):
        read_teams_file(bad)
    with pytest.raises(UserError, match="cannot read --teams-file"):
        read_teams_file(tmp_path / "none.txt")
