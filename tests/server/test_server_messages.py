"""What an instructor and a team read from `fgvc server` and `fgvc serve` when something is off (issue 18,
"Weaker, each worth one line of fix"): where to POST, whose token, labels the class list lacks, columns
that are ignored, a deadline already past, and a banner that lists only routes that answer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fgvc.cli import main
from fgvc.server.competition import COMPETITION_FILE, load_competition

from .conftest import add_team, bearer

API = "/api/submissions"


# -- the HTTP side ------------------------------------------------------------------------------------
def test_a_post_to_the_front_page_points_to_the_submission_address(client, comp):
    reply = client.post("/", json=comp.body("alpha"))
    assert reply.status_code == 405 and reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": "http_error", "message": f"POST is not accepted at / (only "
                            f"{reply.headers['allow']}); submissions go to POST /api/submissions (or POST /results/)"}


def test_a_token_of_another_team_is_said_plainly(client, comp, service):
    token = add_team(service, "Team Wren")
    reply = client.post(API, json=comp.body("alpha"), headers=bearer(token))
    assert reply.status_code == 403
    assert reply.json()["message"] == ("'groupname' is 'alpha' but this token belongs to team 'Team Wren': leave "
                                       "'groupname' out or set it to 'Team Wren'. Nothing was stored and no quota "
                                       "was used.")


# -- fgvc server init / set / rescore -----------------------------------------------------------------
@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "test_labels.csv"
    path.write_text("file,class_id\n" + "".join(f"img{i}.jpg,0465{i % 3}\n" for i in range(10)), encoding="utf-8")
    return path


def test_init_says_which_columns_it_ignores_and_that_a_past_deadline_closes_the_competition(tmp_path, capsys):
    labels = tmp_path / "solution.csv"  # a Kaggle solution file: its Usage column is not the server's split
    labels.write_text("file,class_id,Usage\na.jpg,01,Public\nb.jpg,02,Private\n", encoding="utf-8")
    comp = tmp_path / "comp"
    assert main(["server", "init", str(comp), "--labels", str(labels), "--deadline", "2020-01-01T00:00Z"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"fgvc: warning: {labels}: column(s) 'Usage' ignored; the server reads only file and class_id (the "
        "public/private split is drawn with --public-fraction and --seed)",
        "fgvc: warning: the deadline 2020-01-01T00:00:00Z is in the past: the competition is closed now "
        "(submissions are refused and the leaderboard shows the final, private scores)"]
    assert main(["server", "set", str(comp), "--deadline", "2019-06-01T12:00Z"]) == 0
    assert capsys.readouterr().err == ("fgvc: warning: the deadline 2019-06-01T12:00:00Z is in the past: the "
                                       "competition is closed now (submissions are refused and the leaderboard "
                                       "shows the final, private scores)\n")
    assert main(["server", "set", str(comp), "--deadline", "2999-01-01T00:00Z"]) == 0
    assert capsys.readouterr().err == ""  # a future deadline, and the plain two columns, say nothing


def test_init_reports_every_bad_label_row_at_once(tmp_path, capsys):
    labels = tmp_path / "test_labels.csv"
    labels.write_text("file,class_id\na.jpg,01\nb.jpg,\n,02\na.jpg,03\n", encoding="utf-8")
    assert main(["server", "init", str(tmp_path / "comp"), "--labels", str(labels)]) == 2
    assert capsys.readouterr().err == (
        f"fgvc: error: {labels}: 3 bad rows:\n  line 3: need a file name and a class ID, got ['b.jpg', '']\n"
        "  line 4: need a file name and a class ID, got ['', '02']\n  line 5: file 'a.jpg' is already labelled on "
        "line 2; each test file needs exactly one label\n")
    assert not (tmp_path / "comp").exists()


def test_rescore_refuses_class_ids_the_competition_does_not_have(tmp_path, labels, capsys):
    comp = tmp_path / "comp"
    assert main(["server", "init", str(comp), "--labels", str(labels)]) == 0
    fixed = tmp_path / "fixed.csv"
    rows = labels.read_text(encoding="utf-8").splitlines()
    rows[1], rows[2] = "img0.jpg,4650", "img1.jpg,99999"  # a dropped leading zero, an ID from nowhere
    fixed.write_text("\n".join(rows) + "\n", encoding="utf-8")
    before = (comp / "labels.csv").read_bytes()
    capsys.readouterr()
    assert main(["server", "rescore", str(comp), "--labels", str(fixed)]) == 2
    assert capsys.readouterr().err == (
        f"fgvc: error: {fixed} uses 2 class ID(s) that the competition's class list ({comp / COMPETITION_FILE}) "
        "does not list: 4650, 99999; a fix may move images between the competition's classes only; check these "
        "IDs' spelling\n")
    assert (comp / "labels.csv").read_bytes() == before
    assert load_competition(comp).class_ids == {"04650", "04651", "04652"}


# -- fgvc serve ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("explain_note", "routes"), [
    (None, "POST /predict, POST /explain, GET /healthz, GET /metrics"),
    ("the explanation picture needs the run", "POST /predict, GET /healthz, GET /metrics"),
])
def test_serves_banner_lists_only_the_routes_that_answer(explain_note, routes):
    from fgvc.serve.server import banner
    from fgvc.serve.settings import ServeSettings

    predictor = SimpleNamespace(description="model.onnx (ONNX Runtime)", explain_note=explain_note)
    assert banner(predictor, "127.0.0.1", 8000, ServeSettings(max_batch=4, batch_window_ms=5)) == (
        f"fgvc serve: model.onnx (ONNX Runtime)\n  http://127.0.0.1:8000/  (page; {routes}); dynamic batching up "
        "to 4 images per pass, 5 ms window")
