"""The repository's shell scripts never pipe into a reader that may stop early while pipefail is on.

``cmd | head -n 1`` under ``set -o pipefail``: ``head`` exits after its line, and whether ``cmd`` is still
writing then (and dies of SIGPIPE, status 141, failing the pipeline) depends on pipe buffering — `make demo`
failed that way 1 run in 3. Output is captured whole (``$(cmd)``, then cut in bash) instead.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# a single `|` (not `||`), then a reader that can exit before its writer is done
_EARLY_EXIT_READER = re.compile(
    r"(?<![|])\|(?![|])\s*(?:head\b|grep\s+(?:-\S*\s+)*-[a-zA-Z]*[qlm]|grep\s+(?:\S+\s+)*--(?:quiet|silent)\b"
    r"|sed\s+(?:-\S+\s+)*'?\d*q\b)")
_PIPEFAIL = re.compile(r"^\s*set\s+(?:-\S+\s+)*(?:-o\s+)?pipefail\b|^\s*set\s+-\S*o\S*\s+pipefail\b", re.M)
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")


def _logical_lines(text: str) -> list[str]:
    """Shell lines with comments and here-document bodies dropped and backslash continuations joined."""
    lines: list[str] = []
    pending, terminator = "", None
    for raw in text.splitlines():
        if terminator is not None:  # inside a here-document: another language's text
            terminator = None if raw.strip() == terminator else terminator
            continue
        line = re.sub(r"(^|\s)#.*$", "", raw)
        heredoc = _HEREDOC.search(line)
        if heredoc:
            terminator = heredoc.group(2)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def early_exit_pipes(text: str) -> list[str]:
    """The lines of a pipefail script that pipe into ``head``, ``grep -q/-l/-m`` or ``sed q``."""
    if not _PIPEFAIL.search(text):
        return []
    return [line.strip() for line in _logical_lines(text) if _EARLY_EXIT_READER.search(line)]


def _makefile_recipes(text: str) -> str:
    """The Makefile's recipe lines as one script, with pipefail when ``.SHELLFLAGS`` turns it on."""
    flags = re.search(r"^\.SHELLFLAGS\s*[:?]?=\s*(.*)$", text, re.M)
    pipefail = "set -o pipefail\n" if flags and "pipefail" in flags.group(1) else ""
    return pipefail + "\n".join(line[1:] for line in text.splitlines() if line.startswith("\t"))


def _shell_scripts() -> dict[str, str]:
    """Every tracked shell script (by suffix or shebang) and the Makefile's recipes, by path."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    scripts = {}
    for name in tracked.splitlines():
        path = ROOT / name
        if not path.is_file():
            continue
        if name == "Makefile":
            scripts[name] = _makefile_recipes(path.read_text(encoding="utf-8"))
            continue
        with path.open("rb") as f:
            head = f.readline(200)
        if name.endswith(".sh") or re.match(rb"#!\s*\S*(?:/|env\s+)(?:ba|z|k)?sh\b", head):
            scripts[name] = path.read_text(encoding="utf-8")
    return scripts


def test_the_scan_sees_the_scripts_that_use_pipefail():
    scripts = _shell_scripts()
    assert {"scripts/demo.sh", ".ci/run", "Makefile"} <= scripts.keys()
    assert _PIPEFAIL.search(scripts["scripts/demo.sh"]) and _PIPEFAIL.search(scripts[".ci/run"])


def test_no_script_pipes_into_a_reader_that_may_exit_first():
    found = {name: lines for name, text in _shell_scripts().items() if (lines := early_exit_pipes(text))}
    assert found == {}, "capture the output whole ($(cmd)) and cut it in bash instead of piping into head/grep -q"


# The lines `make demo` and .ci/run had (the first failed `make demo` with exit 141), and safe look-alikes.
_OLD_DEMO = """#!/usr/bin/env bash
set -euo pipefail
for team in ensemble fbsd mmal; do
    TOKENS[$team]=$("$FGVC" server team add "$OUT/competition" "$team" 2>/dev/null | head -n 1)
done
test_images=$(ls "$DATA"/test/*.jpg | head -n 3)
    "$FGVC" score "$predictions/submission.json" --labels "$DATA/test_labels.csv" --classes "$OUT/fbsd/classes.json" \\
        | head -n 1
"$FGVC" evaluate "$OUT/mmal" --data "$DATA" --split test \\
    --no-report | grep -E "^(localisation_accuracy|mean_iou)" | sed 's/^/  /'
"""


def test_the_old_demo_lines_are_found_and_safe_pipes_are_not():
    assert early_exit_pipes(_OLD_DEMO) == [
        'TOKENS[$team]=$("$FGVC" server team add "$OUT/competition" "$team" 2>/dev/null | head -n 1)',
        'test_images=$(ls "$DATA"/test/*.jpg | head -n 3)',
        '"$FGVC" score "$predictions/submission.json" --labels "$DATA/test_labels.csv" --classes '
        '"$OUT/fbsd/classes.json"          | head -n 1',
    ]
    assert early_exit_pipes(_OLD_DEMO.replace("set -euo pipefail", "set -eu")) == []  # no pipefail: no race


@pytest.mark.parametrize(("line", "flagged"), [
    ("psql -tAc 'SELECT 1' | grep -q 1", True),
    ("cmd | grep --quiet x", True),
    ("cmd | grep -c x", False),
    ("cmd | grep -Eq x", True),
    ("cmd | sed q", True),
    ("cmd | sort -V | tail -n 1", False),
    ("cmd || head -n 1 f", False),
    ("x=$(cmd)  # not | head here", False),
])
def test_each_early_exit_reader_is_recognised(line, flagged):
    assert bool(early_exit_pipes(f"set -o pipefail\n{line}\n")) is flagged

