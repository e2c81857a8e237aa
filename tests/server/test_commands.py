"""The instructor's commands: `fgvc server init|team|set|export|rescore`, their files and their errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from fgvc.cli import main
from fgvc.errors import ConfigError, DataError
from fgvc.server.competition import load_competition, parse_deadline, read_class_list

from .conftest import REPO


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "test_labels.csv"
    path.write_text("file,class_id\n" + "".join(f"img{i:03d}.jpg,{'0465' + str(i % 3)}\n" for i in range(100)))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_init_stores_labels_and_a_fixed_seeded_split_in_a_private_folder(tmp_path, labels, capsys):
    comp = tmp_path / "comp"
    assert main(["server", "init", str(comp), "--labels", str(labels), "--deadline", "2027-01-15T23:59Z",
                 "--seed", "7", "--title", "Birds"]) == 0
    out = capsys.readouterr().out
    assert "100 test images (30 public, 70 private), 3 classes, 5 per team per UTC day" in out
    assert "deadline 2027-01-15T23:59:00Z" in out and f"fgvc server team add {comp} NAME" in out
    competition = load_competition(comp)
    assert competition.deadline == datetime(2027, 1, 15, 23, 59, tzinfo=timezone.utc)
    assert oct(comp.stat().st_mode & 0o777) == "0o700"
    assert oct((comp / "labels.csv").stat().st_mode & 0o777) == "0o600"
    again = tmp_path / "again"
    assert main(["server", "init", str(again), "--labels", str(labels), "--seed", "7"]) == 0
    assert load_competition(again).public_files == competition.public_files  # seeded: the same split
    other = tmp_path / "other"
    assert main(["server", "init", str(other), "--labels", str(labels)]) == 0  # random seed, stored
    assert load_competition(other).public_files != competition.public_files
    stored = json.loads((other / "competition.json").read_text())
    assert isinstance(stored["seed"], int) and len(stored["public_files"]) == 30
    assert main(["server", "init", str(comp), "--labels", str(labels)]) == 2
    assert "already holds a competition" in _one_line_error(capsys)


@pytest.mark.parametrize(("args", "message"), [
    (["--public-fraction", "0"], "must be above 0 and at most 1"),
    (["--public-fraction", "1.5"], "must be above 0 and at most 1"),
    (["--daily-limit", "-1"], "must be at least 0"),
    (["--deadline", "tomorrow"], "not an ISO 8601 time"),
    (["--deadline", "2027-01-15T23:59"], "has no time zone"),
])
def test_init_refuses_bad_settings(tmp_path, labels, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main(["server", "init", str(tmp_path / "c"), "--labels", str(labels), *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_init_checks_the_labels_against_the_class_list(tmp_path, labels, capsys):
    classes = tmp_path / "class_labels.txt"
    classes.write_text("0 04650\n1 04651\n")
    assert main(["server", "init", str(tmp_path / "c"), "--labels", str(labels), "--classes", str(classes)]) == 2
    assert "1 class ID(s) that" in _one_line_error(capsys) and not (tmp_path / "c").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx.jpg,1\n")
    assert main(["server", "init", str(tmp_path / "c"), "--labels", str(bad)]) == 2
    assert "expected the header 'file,class_id'" in _one_line_error(capsys)


def test_class_lists_come_from_classes_json_or_text(tmp_path):
    from fgvc.data.classes import ClassTable

    ClassTable(("04650", "04651"), ("A", "B")).save(tmp_path / "classes.json")
    assert read_class_list(tmp_path / "classes.json") == ["04650", "04651"]
    (tmp_path / "ids.txt").write_text("04650\n\n04651\n")
    assert read_class_list(tmp_path / "ids.txt") == ["04650", "04651"]
    (tmp_path / "bad.txt").write_text("0 04650 extra\n")
    with pytest.raises(DataError, match="line 1: expected 'index classID'"):
        read_class_list(tmp_path / "bad.txt")


def test_an_indexed_class_list_is_read_by_the_data_layers_reader_indices_checked(tmp_path):
    (tmp_path / "order.txt").write_text("1 04651\n0 04650\n")  # index order, as class_labels.txt of a dataset
    assert read_class_list(tmp_path / "order.txt") == ["04650", "04651"]
    (tmp_path / "gap.txt").write_text("0 04650\n2 04651\n")
    with pytest.raises(DataError, match=r"gap.txt: indices must be 0\.\.N-1, each once$"):
        read_class_list(tmp_path / "gap.txt")
    (tmp_path / "twice.txt").write_text("04650\n04651\n04650\n")
    with pytest.raises(DataError, match=r"twice.txt: lists class ID\(s\) 04650 more than once$"):
        read_class_list(tmp_path / "twice.txt")
    (tmp_path / "mixed.txt").write_text("0 04650\n04651\n")
    with pytest.raises(DataError, match=r"mixed.txt: line 2: expected 'index classID' or 'classID', got '04651'"):
        read_class_list(tmp_path / "mixed.txt")


def test_deadlines_take_z_or_an_offset():
    assert parse_deadline("2027-01-15T23:59Z") == datetime(2027, 1, 15, 23, 59, tzinfo=timezone.utc)
    assert parse_deadline("2027-01-16T00:59+01:00") == datetime(2027, 1, 15, 23, 59, tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="no time zone"):
        parse_deadline("2027-01-15 23:59")


def test_teams_get_tokens_once_and_can_get_new_ones(tmp_path, labels, capsys):
    comp = tmp_path / "comp"
    assert main(["server", "init", str(comp), "--labels", str(labels)]) == 0
    capsys.readouterr()
    assert main(["server", "team", "add", str(comp), "Wrens & Co"]) == 0
    token = capsys.readouterr().out.splitlines()[0]
    assert token.startswith("fgvc_") and len(token) > 40
    assert main(["server", "team", "add", str(comp), "Wrens & Co"]) == 2
    assert "already exists" in _one_line_error(capsys)
    assert main(["server", "team", "add", str(comp), " padded "]) == 2
    assert "starts or ends with spaces" in _one_line_error(capsys)
    assert main(["server", "team", "token", str(comp), "Wrens & Co"]) == 0
    assert capsys.readouterr().out.splitlines()[0] != token
    assert main(["server", "team", "token", str(comp), "nobody"]) == 2
    assert "no team named 'nobody'" in _one_line_error(capsys)
    assert main(["server", "team", "list", str(comp)]) == 0
    assert "Wrens & Co     0 submission(s)  token" in capsys.readouterr().out


def test_set_changes_settings_that_a_running_server_picks_up(tmp_path, labels, capsys):
    comp = tmp_path / "comp"
    assert main(["server", "init", str(comp), "--labels", str(labels), "--deadline", "2027-01-15T23:59Z"]) == 0
    assert main(["server", "set", str(comp), "--daily-limit", "0", "--leaderboard", "last", "--title", "B"]) == 0
    competition = load_competition(comp)
    assert (competition.daily_limit, competition.leaderboard, competition.title) == (0, "last", "B")
    assert main(["server", "set", str(comp), "--no-deadline"]) == 0
    assert load_competition(comp).deadline is None
    capsys.readouterr()
    assert main(["server", "set", str(comp)]) == 2
    assert "nothing to change" in _one_line_error(capsys)


def test_commands_on_a_folder_without_a_competition_say_how_to_make_one(tmp_path, capsys):
    assert main(["server", "team", "list", str(tmp_path)]) == 2
    assert "fgvc server init COMP_DIR --labels test_labels.csv" in _one_line_error(capsys)


def test_a_port_in_use_is_one_line(tmp_path, labels, capsys):
    import socket

    comp = tmp_path / "comp"
    assert main(["server", "init", str(comp), "--labels", str(labels)]) == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["server", "run", str(comp), "--port", str(busy.getsockname()[1])]) == 2
    assert "pass another --port" in capsys.readouterr().err


def test_a_teams_file_goes_with_open_auth(tmp_path, labels, capsys):
    comp = tmp_path / "comp"
    assert main(["server", "init", str(comp), "--labels", str(labels)]) == 0
    (tmp_path / "teams.txt").write_text("a\n")
    assert main(["server", "run", str(comp), "--teams-file", str(tmp_path / "teams.txt")]) == 2
    assert "--teams-file lists the team names accepted with --auth open" in capsys.readouterr().err


def test_the_core_toolkit_does_not_import_the_server_extra():
    extra = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "psycopg")
    code = ("import sys, fgvc, fgvc.cli, fgvc.competition.submission; fgvc.cli.build_parser(); "
            f"print(sorted(m for m in {extra!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_the_extra_a_server_command_says_what_to_install(tmp_path):
    code = f"""
import sys

class WithoutTheServerExtra:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sqlalchemy", "fastapi", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, WithoutTheServerExtra())
from fgvc.cli import main
sys.exit(main(["server", "team", "list", {str(tmp_path)!r}]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "fgvc: error: `fgvc server` needs sqlalchemy, which is not installed; install the server extra: "
        "pip install 'fgvc[server]'"]
