"""What a newcomer types first, command by command: each mistake or habit gets a clear answer, not a bug report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fgvc.cli import EXIT_STDOUT_CLOSED, main


def _fgvc_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess:
    """``fgvc ARGV | head -0``, made deterministic: the reader has closed its end before fgvc writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "fgvc", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write_end)


def test_a_closed_stdout_is_a_quiet_exit_141_and_the_team_is_still_added(tmp_path):
    pytest.importorskip("sqlalchemy", reason="the server extra is not installed: pip install 'fgvc[server]'")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_id\n" + "".join(f"img{i}.jpg,{i % 2 + 1}\n" for i in range(10)))
    comp = tmp_path / "comp"
    assert main(["server", "init", str(comp), "--labels", str(labels)]) == 0
    result = _fgvc_into_closed_pipe("server", "team", "add", str(comp), "alpha")
    assert (result.returncode, result.stderr) == (EXIT_STDOUT_CLOSED, "")
    listed = subprocess.run([sys.executable, "-m", "fgvc", "server", "team", "list", str(comp)], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and "alpha " in listed.stdout


def test_a_closed_stdout_is_quiet_for_the_core_commands_too(tmp_path):
    result = _fgvc_into_closed_pipe("data", "synth", str(tmp_path / "d"), "--classes", "2", "--per-class", "2",
                                    "--size", "32")
    assert (result.returncode, result.stderr) == (EXIT_STDOUT_CLOSED, "")
    assert len(list((tmp_path / "d").rglob("*.jpg"))) == 4  # the command did its work: 2 classes x 2


def test_another_broken_pipe_is_still_a_bug(monkeypatch, capsys):
    import fgvc.cli

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a worker's pipe, while stdout is fine

    monkeypatch.setattr(fgvc.cli, "_data_synth", broken)
    assert main(["data", "synth", "x"]) == 1
    assert "internal error: this is a bug" in capsys.readouterr().err
