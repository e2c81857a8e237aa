"""`fgvc evaluate` and the report show what the run's config says its paper reports, beside the run's
own top-1, and nothing when the config has no figure (real CLI runs of a tiny model)."""

import re
import shutil

import pytest

from fgvc.cli import main
from tests.tiny import tiny_synth_args, tiny_train_args

PAPER = {"paper.top1": 89.6, "paper.dataset": "CUB-200-2011", "paper.source": "Du et al., ECCV 2020, Table 2"}
NOTE = "paper: 89.6% (CUB-200-2011; Du et al., ECCV 2020, Table 2)"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(data, a run whose config has a paper figure, a run without one): one epoch each."""
    tmp = tmp_path_factory.mktemp("figures")
    data, noted, plain = tmp / "data", tmp / "noted", tmp / "plain"
    assert main(tiny_synth_args(data)) == 0
    assert main(tiny_train_args(data, noted, sets={"train.epochs": 1, "train.calibrate": False, **PAPER})) == 0
    assert main(tiny_train_args(data, plain, sets={"train.epochs": 1, "train.calibrate": False})) == 0
    return data, noted, plain


def _top1_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("top1:")]
    assert len(lines) == 1, out
    return lines[0]


def test_evaluate_prints_the_paper_figure_beside_the_top1_and_the_report_shows_it(runs, capsys):
    data, noted, _ = runs
    capsys.readouterr()
    assert main(["evaluate", str(noted), "--data", str(data), "--device", "cpu", "--no-progress"]) == 0
    line = _top1_line(capsys.readouterr().out)
    assert re.fullmatch(rf"top1:\s+[01]\.\d{{4}}\s+{re.escape(NOTE)}", line), line
    page = (noted / "report.html").read_text(encoding="utf-8")
    row = re.search(r'<tr><th scope="row">top-1 accuracy</th><td data-key="top1"[^>]*>[^<]*</td>(.*?)</tr>', page)
    assert row is not None and row.group(1) == f'<td class="paper">{NOTE}</td>'


def test_a_checkpoint_outside_its_run_folder_carries_the_figure(runs, tmp_path, capsys):
    data, noted, _ = runs
    alone = tmp_path / "best.pt"
    shutil.copy(noted / "best.pt", alone)
    shutil.copy(noted / "split.json", tmp_path / "split.json")
    capsys.readouterr()
    assert main(["evaluate", str(alone), "--data", str(data), "--device", "cpu", "--no-progress", "--no-report"]) == 0
    assert _top1_line(capsys.readouterr().out).endswith(NOTE)


def test_a_config_without_a_paper_figure_says_nothing(runs, capsys):
    data, _, plain = runs
    capsys.readouterr()
    assert main(["evaluate", str(plain), "--data", str(data), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"top1:\s+[01]\.\d{4}", _top1_line(out)) and "paper:" not in out
    assert 'class="paper"' not in (plain / "report.html").read_text(encoding="utf-8")
