"""`fgvc.train` from Python keeps the invariants `fgvc train` keeps: one process per run folder, a folder that
holds a run is never written over, and the library prints nothing (it logs; the command line shows the log)."""

import os

import pytest

import fgvc
from fgvc.engine.runlock import RunLock
from fgvc.errors import UserError
from tests.engine.conftest import tiny_config


def _contents(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_second_train_while_another_holds_the_folder_is_refused_untouched(tiny_data, tmp_path):
    run = tmp_path / "run"
    with RunLock(run):  # held by this test as a first `fgvc.train` would hold it
        before = _contents(run)
        with pytest.raises(UserError) as refused:
            fgvc.train(tiny_config(tiny_data, **{"train.epochs": 1}), run)
        assert str(refused.value).startswith(f"{run} is in use by another fgvc process (pid {os.getpid()}, `")
        assert str(refused.value).endswith("); wait for it to finish or pick another --out")
        assert _contents(run) == before  # only the holder's .lock: no split.json, config.yaml or checkpoint


def test_a_second_train_into_a_finished_run_is_refused_untouched(tiny_data, tmp_path):
    run = tmp_path / "run"
    fgvc.train(tiny_config(tiny_data, **{"train.epochs": 1}), run)
    before = _contents(run)
    assert "last.pt" in before
    with pytest.raises(UserError) as refused:
        fgvc.train(tiny_config(tiny_data, **{"train.epochs": 1, "train.seed": 7}), run)
    assert str(refused.value) == f"{run} already holds a run; continue it with --resume {run} or pick another --out"
    assert _contents(run) == before


def test_train_from_python_with_logging_off_writes_nothing_to_the_console(tiny_data, tmp_path, capfd):
    trainer = fgvc.train(tiny_config(tiny_data, **{"train.epochs": 1}), tmp_path / "run")
    assert trainer.epoch == 1 and (tmp_path / "run" / "last.pt").is_file()
    captured = capfd.readouterr()
    assert captured.out == ""  # the epoch line, the temperature line, ... went to the `fgvc.engine` logger
    assert captured.err == ""  # and no progress bar: the library's default is progress=False


def test_the_lines_a_run_logs_are_the_ones_the_command_line_prints(tiny_data, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="fgvc")
    fgvc.train(tiny_config(tiny_data, **{"train.epochs": 1}), tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if r.name == "fgvc.engine.trainer"]
    assert lines[0].startswith(f"run {tmp_path / 'run'}: baseline/resnet18 on ")
    assert lines[1].startswith("epoch 1/1: train loss ")
