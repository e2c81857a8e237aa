"""The leaderboard: ranking rules, private scores hidden before the deadline and revealed after it, exports,
and rescoring after a labels fix."""

from __future__ import annotations

import csv
import io
import json

import pytest

from fgvc.cli import main
from fgvc.server.competition import load_competition

from .conftest import add_team, after_deadline, bearer, make_comp

API = "/api/submissions"
# every spelling of the private (0.8125) and overall (19/28) scores of comp.body()'s defaults
SECRETS = ("0.8125", "81.25", "81.3", "0.6785", "67.86", "67.9", "private_score", "overall_score")


def _submit(client, comp, token, team, **rights):
    reply = client.post(API, json=comp.body(team, **rights), headers=bearer(token))
    assert reply.status_code == 200, reply.text
    return reply


def test_private_scores_never_leave_the_server_before_the_deadline(client, comp, service):
    token = add_team(service, "alpha")
    seen = [_submit(client, comp, token, "alpha").text]
    seen.append(client.post(API, json=comp.body("alpha", public_right=99), headers=bearer(token)).text)  # 400
    for _ in range(4):
        client.post(API, json=comp.body("alpha"), headers=bearer(token, **{"Idempotency-Key": str(_)}))
    seen.append(client.post(API, json=comp.body("alpha", public_right=1), headers=bearer(token)).text)  # 429
    seen += [client.get(path).text for path in ("/", "/api/leaderboard", "/api/leaderboard?format=csv", "/healthz",
                                                 "/team")]
    seen.append(client.get("/api/team", headers=bearer(token)).text)
    seen.append(client.post("/team", data={"token": token}).text)
    for text in seen:
        for secret in SECRETS:
            assert secret not in text, (secret, text[:300])
    assert "50.00%" in seen[-1]  # the team page does show the public score


def test_after_the_deadline_private_scores_rank_and_the_ranking_is_final(client, comp, service, clock):
    tokens = {name: add_team(service, name) for name in ("A", "B", "C", "D")}
    _submit(client, comp, tokens["A"], "A", public_right=10, private_right=4)
    _submit(client, comp, tokens["B"], "B", public_right=8, private_right=15)
    _submit(client, comp, tokens["C"], "C", public_right=8, private_right=2)
    board = client.get("/api/leaderboard").json()
    assert board["final"] is False
    assert [(t["team"], t["rank"]) for t in board["teams"]] == [("A", 1), ("B", 2), ("C", 2), ("D", None)]
    assert "private_score" not in board["teams"][0]

    clock.now = after_deadline()
    board = client.get("/api/leaderboard").json()
    assert board["final"] is True
    assert [(t["team"], t["rank"], t["private_score"]) for t in board["teams"]] == [
        ("B", 1, 15 / 16), ("A", 2, 4 / 16), ("C", 3, 2 / 16), ("D", None, None)]
    page = client.get("/").text
    assert "Final ranking" in page and "93.75%" in page and "Private" in page
    rows = list(csv.DictReader(io.StringIO(client.get("/api/leaderboard?format=csv").text)))
    assert rows[0]["team"] == "B" and rows[0]["private_score"] == str(15 / 16)
    team_page = client.post("/team", data={"token": tokens["A"]}).text
    assert "25.00%" in team_page  # private score on the team's own page, now


@pytest.mark.parametrize(("rule", "counted"), [("best", 10 / 12), ("last", 3 / 12)])
def test_the_counted_submission_is_the_best_or_the_last(tmp_path, db_url, make_service, rule, counted):
    from starlette.testclient import TestClient

    from fgvc.server.app import create_app

    comp = make_comp(tmp_path, db_url, leaderboard=rule)
    service = make_service(comp)
    token = add_team(service, "A")
    other = add_team(service, "B")
    with TestClient(create_app(service)) as client:
        _submit(client, comp, token, "A", public_right=10)
        _submit(client, comp, other, "B", public_right=5)
        reply = _submit(client, comp, token, "A", public_right=3).json()
        board = client.get("/api/leaderboard").json()
    assert board["teams"][0 if rule == "best" else 1]["public_score"] == counted
    assert reply["rank"] == (1 if rule == "best" else 2)
    assert next(t for t in board["teams"] if t["team"] == "A")["submissions"] == 2


def test_the_instructor_export_has_private_scores_at_any_time(client, comp, service, capsys, tmp_path):
    token = add_team(service, "=HYPERLINK(1)")
    _submit(client, comp, token, "=HYPERLINK(1)")
    assert main(["server", "export", str(comp.directory)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["private_score"] == "0.8125" and rows[0]["team"] == "'=HYPERLINK(1)"  # no spreadsheet formula
    out = tmp_path / "board.json"
    assert main(["server", "export", str(comp.directory), "--format", "json", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["teams"][0]["overall_score"] == 19 / 28
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    capsys.readouterr()
    assert main(["server", "export", str(comp.directory), "--submissions", "--format", "json"]) == 0
    [submission] = json.loads(capsys.readouterr().out)
    assert submission["status"] == "scored" and submission["private_score"] == 0.8125


def test_rescore_after_a_labels_fix_changes_scores_and_a_running_server_uses_the_new_labels(
        client, comp, service, tmp_path, capsys):
    token = add_team(service, "alpha")
    first = _submit(client, comp, token, "alpha").json()
    fixed = dict(comp.labels)
    fixed[comp.public[0]] = "00003" if fixed[comp.public[0]] != "00003" else "00002"  # was right, now wrong
    path = tmp_path / "fixed.csv"
    path.write_text("file,class_id\n" + "".join(f"{f},{c}\n" for f, c in fixed.items()))
    assert main(["server", "rescore", str(comp.directory), "--labels", str(path)]) == 0
    assert "rescored 1 submission(s): 1 score(s) changed, 0 no longer valid" in capsys.readouterr().out
    board = client.get("/api/leaderboard").json()
    assert board["teams"][0]["public_score"] == 5 / 12 != first["accuracy"]
    second = _submit(client, comp, token, "alpha").json()  # the server reloaded the labels by itself
    assert second["accuracy"] == 5 / 12
    assert load_competition(comp.directory).labels[comp.public[0]] == fixed[comp.public[0]]


def test_a_labels_fix_must_keep_the_test_files(comp, tmp_path, capsys):
    path = tmp_path / "fewer.csv"
    path.write_text("file,class_id\n" + "".join(f"{f},{c}\n" for f, c in list(comp.labels.items())[:-1]))
    assert main(["server", "rescore", str(comp.directory), "--labels", str(path)]) == 2
    assert "must label exactly the competition's 28 test files: 1 file(s) missing" in capsys.readouterr().err
