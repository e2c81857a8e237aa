"""The whole loop: `fgvc server init` on a synthetic competition, a real server process, a tiny trained model,
`fgvc predict` + `fgvc submit`, the same score as `fgvc score`, and the leaderboard page showing it."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from fgvc.cli import main
from tests.tiny import tiny_train_args


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic competition dataset and a tiny model trained on it for one epoch (shared by both databases)."""
    root = tmp_path_factory.mktemp("e2e")
    data, run = root / "data", root / "run"
    assert main(["data", "synth", str(data), "--classes", "3", "--per-class", "8", "--size", "64",
                 "--test-fraction", "0.25"]) == 0
    assert main(tiny_train_args(data, run, sets={"train.batch_size": 4, "train.eval_batch_size": 8,
                                                 "train.epochs": 1})) == 0
    return data, run


def test_train_predict_submit_equals_local_score_and_shows_on_the_leaderboard(trained, tmp_path, server_process,
                                                                              capsys, monkeypatch, db_url):
    data, run = trained
    comp_dir = tmp_path / "comp"
    init = ["server", "init", str(comp_dir), "--labels", str(data / "test_labels.csv"), "--classes",
            str(run / "classes.json"), "--public-fraction", "1", "--daily-limit", "3", "--deadline",
            "2099-01-01T00:00Z", "--title", "e2e"]
    assert main(init + (["--db", db_url] if db_url else [])) == 0
    assert main(["server", "team", "add", str(comp_dir), "team-e2e"]) == 0
    token = capsys.readouterr().out.splitlines()[-2]
    assert token.startswith("fgvc_")

    server = server_process(comp_dir)
    assert main(["predict", str(run), "--data", str(data), "--out", str(tmp_path / "pred"), "--group", "team-e2e",
                 "--device", "cpu", "--no-progress"]) == 0
    submission = tmp_path / "pred" / "submission.json"
    monkeypatch.setenv("FGVC_TOKEN", token)
    capsys.readouterr()
    assert main(["submit", str(submission), "--url", server.url + "/api/submissions"]) == 0
    out = capsys.readouterr().out
    served = float(out.splitlines()[0].split()[2])
    assert "submission 1: public score" in out and "rank 1 of 1 team(s)" in out
    assert "2 of 3 submission(s) left today" in out

    assert main(["score", str(submission), "--labels", str(data / "test_labels.csv"), "--classes",
                 str(run / "classes.json"), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)["accuracy"]
    assert served == local

    assert main(["submit", str(submission), "--url", server.url + "/api/submissions"]) == 0
    assert "already received this exact file" in capsys.readouterr().out  # the retry key: no double count

    with urllib.request.urlopen(server.url + "/") as response:
        page = response.read().decode()
    assert "team-e2e" in page and f"{local:.2%}" in page
