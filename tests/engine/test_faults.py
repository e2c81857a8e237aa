"""Faults at every write point of a training run, provoked at an exact place (a wrapped function that
raises as a kill would stop the process), then resumed: the finished run equals an uninterrupted one."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fgvc.engine.tracking as tracking_module
import fgvc.engine.trainer as trainer_module
from fgvc.cli import main
from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.run import Run
from fgvc.engine.tracking import read_metrics_csv
from fgvc.engine.trainer import Trainer
from tests.engine.conftest import start_trainer, tiny_config
from tests.tiny import tiny_train_args

EPOCHS = 3


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of ours catches it."""


def _args(data: Path, run: Path, *extra: str) -> list[str]:
    return tiny_train_args(data, run, *extra, sets={
        "data.val_fraction": 0.2, "train.batch_size": 4, "train.eval_batch_size": 8, "train.epochs": EPOCHS,
        "optim.name": "sgd", "optim.lr": 0.01})


def _kill_at(monkeypatch, module, name: str, file_name: str, nth: int, leave_temp: bool) -> None:
    """Make the ``nth`` call of ``module.name`` that writes ``file_name`` die; with ``leave_temp`` it
    dies half-way, leaving the temp file a killed atomic write leaves behind."""
    original = getattr(module, name)
    calls = {"n": 0}

    def wrapper(path, *args, **kwargs):
        if Path(path).name == file_name:
            calls["n"] += 1
            if calls["n"] == nth:
                if leave_temp:
                    (Path(path).parent / f".{file_name}.k1ll3d00.tmp").write_bytes(b"half a file")
                raise Killed(f"killed while writing {file_name}")
        return original(path, *args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(_args(tiny_data, run)) == 0
    return run


POINTS = {
    "during split.json": (trainer_module, "save_split", "split.json", 1, True),
    "during best.pt (epoch 1)": (trainer_module, "save_checkpoint", "best.pt", 1, True),
    "between last.pt and best.pt (epoch 1)": (trainer_module, "save_checkpoint", "best.pt", 1, False),
    "during last.pt (epoch 2)": (trainer_module, "save_checkpoint", "last.pt", 2, True),
    "during metrics.csv (epoch 2)": (tracking_module, "atomic_open", "metrics.csv", 2, True),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_a_kill_at_each_write_point_then_resume_equals_the_uninterrupted_run(point, reference, tiny_data, tmp_path,
                                                                            monkeypatch):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _kill_at(m, *POINTS[point])
        with pytest.raises(Killed):
            main(_args(tiny_data, run))
    if (run / "last.pt").exists():
        assert main(["train", "--resume", str(run), "--no-progress", "--no-report"]) == 0
    else:  # died before its first epoch ended: the same command starts it again
        assert main(_args(tiny_data, run)) == 0

    assert not list(run.glob(".*.tmp")), "temp files of the killed write are removed at the next start"
    for name in ("last.pt", "best.pt"):
        ours, theirs = load_checkpoint(run / name), load_checkpoint(reference / name)
        assert ours["epoch"] == theirs["epoch"], name
        for key, value in theirs["model"].items():
            assert torch.equal(ours["model"][key], value), f"{name}: {key}"
    assert load_checkpoint(run / "last.pt")["best_top1"] == load_checkpoint(reference / "last.pt")["best_top1"]
    rows, expected = read_metrics_csv(run / "metrics.csv"), read_metrics_csv(reference / "metrics.csv")
    for key in ("step", "train/loss", "train/acc", "val/loss", "val/top1"):  # all but the timing columns
        assert [r[key] for r in rows] == [r[key] for r in expected], key
    for name in ("split.json", "config.yaml", "classes.json"):
        assert (run / name).read_text() == (reference / name).read_text().replace(str(reference), str(run)), name


def test_evaluate_says_which_checkpoint_it_uses(reference, tiny_data, capsys):
    assert main(["evaluate", str(reference), "--data", str(tiny_data), "--device", "cpu", "--no-progress",
                 "--no-report"]) == 0
    assert f"checkpoint: {reference / 'best.pt'} (the run's best validation score)" in capsys.readouterr().out


# -- Ctrl-C ------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_stop_mid_epoch_then_resume_is_bit_identical(tiny_data, tmp_path, workers):
    """A stop requested mid-epoch (as SIGINT does) at a named batch, inside a gradient-accumulation
    group: the run finishes the group, saves, and the resumed run equals the unbroken one bit for bit —
    data order, augmentation, dropout, schedule, accumulation and the epoch's logged loss."""
    overrides = {"train.epochs": 2, "train.accumulate": 2, "data.num_workers": workers, "model.options.dropout": 0.3}
    straight = start_trainer(tiny_config(tiny_data, **overrides), tmp_path / "straight", progress=False)
    straight.fit()

    broken = start_trainer(tiny_config(tiny_data, **overrides), tmp_path / "broken", progress=False)
    loader, calls = broken.train_loader, {"n": 0}
    original_prepare = loader.prepare
    batches_per_epoch = len(loader)

    def prepare(images):
        calls["n"] += 1
        if calls["n"] == batches_per_epoch + 1:  # first batch of epoch 2: half of an accumulation group
            broken._stop_requested = True
        return original_prepare(images)

    loader.prepare = prepare
    broken.fit()
    assert broken.interrupted
    state = load_checkpoint(tmp_path / "broken" / "last.pt")
    assert state["epoch"] == 1 and state["step_in_epoch"] == 2  # stopped after the group's second batch

    resumed = Trainer(Run.resume(tmp_path / "broken"), progress=False)
    resumed.fit()
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "broken" / "last.pt")
    for key, value in a["model"].items():
        assert torch.equal(b["model"][key], value), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    rows_a = read_metrics_csv(tmp_path / "straight" / "metrics.csv")
    rows_b = read_metrics_csv(tmp_path / "broken" / "metrics.csv")
    assert [r["train/loss"] for r in rows_a] == [r["train/loss"] for r in rows_b]


def test_same_training_is_bit_identical_whatever_the_worker_count(tiny_data, tmp_path):
    """Augmentation is drawn per image from (seed, epoch, index), so the worker that loads an image
    does not matter; runs repeat bit for bit."""
    weights = []
    for i, workers in enumerate((0, 2, 2)):
        config = tiny_config(tiny_data, **{"train.epochs": 1, "data.num_workers": workers,
                                           "train.deterministic": True})
        trainer = start_trainer(config, tmp_path / f"r{i}", progress=False)
        trainer.fit()
        weights.append(load_checkpoint(tmp_path / f"r{i}" / "last.pt")["model"])
    for other in weights[1:]:
        for key, value in weights[0].items():
            assert torch.equal(other[key], value), key


# -- one owner per run folder --------------------------------------------------------------------

def test_a_second_train_into_a_busy_run_folder_is_refused(reference, tiny_data, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from fgvc.engine.runlock import RunLock
        with RunLock({str(run)!r}):
            print("held", flush=True)
            sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (_args(tiny_data, run), ["train", "--resume", str(run), "--set", "train.epochs=5"]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"pid {holder.pid}" in err and "in use by another fgvc process" in err
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
        assert after == {k: v for k, v in before.items() if k != ".lock"}  # nothing of the run was touched
    finally:
        holder.communicate("\n", timeout=30)
