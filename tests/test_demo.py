"""`make demo` end to end on a tiny configuration: both models, the ensemble, a running `fgvc server`,
pictures and reports — and the server's score equals `fgvc score` on the same file."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fgvc.data.classes import ClassTable
from fgvc.submission import load_submission, read_labels_csv, score_submission

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

    server_accuracy = float(re.search(r"^accuracy is (\S+) \(server reply", text, re.M).group(1))
    local = score_submission(load_submission(out / "predictions" / "submission.json"),
                             read_labels_csv(out / "data" / "test_labels.csv"),
                             class_ids=ClassTable.load(out / "fbsd" / "classes.json").ids)
    assert server_accuracy == pytest.approx(local.accuracy)
    assert re.search(r"public score [\d.]+%, rank 1 of 1 team", text)
    assert "leaderboard:" in text and "demo" in text.split("leaderboard:")[-1]
    # the server was stopped with the script
    port = re.search(r"leaderboard: http://127.0.0.1:(\d+)/", text).group(1)
    probe = subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"],
                           capture_output=True)
    assert probe.returncode != 0
