"""`make demo` end to end on a tiny configuration: both models, the ensemble, a running `fgvc server`,
pictures and reports — and the server's score equals `fgvc score` on the same file."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fgvc.competition.submission import load_submission, read_labels_csv, score_submission
from fgvc.data.classes import ClassTable

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_script_runs_the_whole_system(tmp_path):
    pytest.importorskip("fastapi", reason="the demo starts `fgvc server`: pip install 'fgvc[server]'")
    out = tmp_path / "demo"
    env = {**os.environ, "BIN": str(Path(sys.executable).parent), "DEMO_DIR": str(out),
           "DEMO_SYNTH_ARGS": "--classes 3 --per-class 6 --size 128",
           "DEMO_TRAIN_ARGS": "--set train.epochs=1 --set data.num_workers=0 --set train.batch_size=4"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout

    for path in ("fbsd/best.pt", "mmal/best.pt", "fbsd/eval_val/metrics.json", "mmal/eval_val/metrics.json",
                 "ensemble/metrics.json", "predictions/predictions.csv", "predictions/submission.json",
                 "competition/competition.sqlite3", "fbsd/report.html", "mmal/report.html", "ensemble/report.html"):
        assert (out / path).is_file(), path
    for run, picture in (("fbsd", "strip importances"), ("mmal", "part windows")):
        report = (out / run / "report.html").read_text(encoding="utf-8")
        assert '<section id="explanations">' in report and picture in report, run
    assert "gain over each member" in (out / "ensemble" / "report.html").read_text(encoding="utf-8")
    assert len(list((out / "explain" / "fbsd").glob("*.png"))) == 3
    assert len(list((out / "explain" / "mmal").glob("*.png"))) == 3

    calibration = text.split("calibration on the validation split")[1]  # each model's ECE and the ensemble's
    for run in ("fbsd", "mmal", "ensemble"):
        before, after = re.search(rf"^  {run} +ECE +([\d.]+)% -> +([\d.]+)%", calibration, re.M).groups()
        metrics = json.loads((out / (f"{run}/eval_val" if run != "ensemble" else run) / "metrics.json").read_text())
        assert (float(before), float(after)) == pytest.approx(
            (100 * metrics["ece_uncalibrated"], 100 * metrics["ece"]), abs=5e-3), run
    assert re.search(r"^  ensemble top-1 [\d.]+% with calibrated members, [\d.]+% with their own", calibration, re.M)
    server_accuracy = float(re.search(r"^accuracy is (\S+) \(server reply", text, re.M).group(1))
    labels = read_labels_csv(out / "data" / "test_labels.csv")
    class_ids = ClassTable.load(out / "fbsd" / "classes.json").ids
    local = {team: score_submission(load_submission(out / folder / "submission.json"), labels, class_ids=class_ids)
             for team, folder in (("ensemble", "predictions"), ("fbsd", "predictions_fbsd"),
                                  ("mmal", "predictions_mmal"))}
    assert server_accuracy == pytest.approx(local["ensemble"].accuracy)
    assert re.search(r"public score [\d.]+%, rank [123] of 3 team", text)
    board = dict(re.findall(r"^  \d\. (\w+) +([\d.]+)$", text.split("leaderboard (public score):")[-1], re.M))
    assert board.keys() == local.keys()
    for team, score in board.items():  # the server's score of each team's file is fgvc score's
        assert float(score) == pytest.approx(local[team].accuracy, abs=5e-5), team
    shown = dict(re.findall(r"^  (\w+) +accuracy ([\d.]+)%", text.split("scored locally")[-1], re.M))
    assert {team: float(v) for team, v in shown.items()} == pytest.approx(
        {team: 100 * r.accuracy for team, r in local.items()}, abs=5e-3)
    # the server was stopped with the script
    port = re.search(r"leaderboard: http://127.0.0.1:(\d+)/", text).group(1)
    probe = subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"],
                           capture_output=True)
    assert probe.returncode != 0
