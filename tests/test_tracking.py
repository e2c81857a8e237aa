"""Tracking as the trainer uses it: CSV always, optional W&B / TensorBoard that never stop a run."""

import math
import os
import sys
import types
import warnings

import pytest

from fgvc import fileio
from fgvc.engine import tracking
from fgvc.engine.tracking import TrackerWarning, create_tracker, read_metrics_csv

CONFIG = {"model": "fbsd", "lr": 0.01, "epochs": 3}


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """W&B never reaches the network or the home folder, whatever the test does."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def train(tracker, epochs=range(5)):
    """A training loop's calls, as the trainer makes them."""
    for epoch in epochs:
        tracker.log({"train/loss": 1.0 / (epoch + 1), "val/acc": epoch / 10}, step=epoch)
    tracker.close()


def tracker_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, TrackerWarning)]


def train_with_failing_backend(run_dir, **options):
    """Train through a tracker whose optional backend fails; returns (the backends it started with, its
    warnings), after checking that the CSV log still holds every epoch."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tracker = create_tracker(run_dir, CONFIG, **options)
        names = tracker.names
        train(tracker)
    assert len(read_metrics_csv(run_dir / "metrics.csv")) == 5
    return names, tracker_warnings(record)


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_values_round_trip_exactly(tmp_path):
    values = [0.1, 1 / 3, 1e-300, 123456789.123456789, -2.5e17, 5e-324, 0.0, math.inf]
    tracker = create_tracker(tmp_path, CONFIG)
    for step, value in enumerate(values):
        tracker.log({"v": value, "nan": math.nan}, step=step)
    tracker.close()
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [row["step"] for row in rows] == list(range(len(values)))
    assert [row["v"] for row in rows] == values
    assert all(math.isnan(row["nan"]) for row in rows)


def test_csv_accepts_tensors_and_numpy_and_skips_none(tmp_path):
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    tracker = create_tracker(tmp_path, CONFIG)
    tracker.log({"a": torch.tensor(0.25), "b": np.float32(0.1), "c": None, "d": 3}, step=0)
    with pytest.raises(TypeError, match="'e'"):
        tracker.log({"e": "high"}, step=1)
    tracker.close()
    assert read_metrics_csv(tmp_path / "metrics.csv") == [{"step": 0.0, "a": 0.25, "b": float(np.float32(0.1)),
                                                           "d": 3.0}]


def test_new_keys_mid_run_widen_the_file(tmp_path):
    tracker = create_tracker(tmp_path, CONFIG)
    tracker.log({"train/loss": 2.0}, step=0)
    tracker.log({"train/loss": 1.5, "val/acc_object": 0.25}, step=1)
    tracker.log({"lr/new": 0.01}, step=2)
    tracker.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "step,train/loss,val/acc_object,lr/new"
    assert read_metrics_csv(tmp_path / "metrics.csv") == [
        {"step": 0.0, "train/loss": 2.0, "val/acc_object": None, "lr/new": None},
        {"step": 1.0, "train/loss": 1.5, "val/acc_object": 0.25, "lr/new": None},
        {"step": 2.0, "train/loss": None, "val/acc_object": None, "lr/new": 0.01},
    ]


def test_resume_drops_rows_at_and_after_the_resumed_step(tmp_path):
    first = create_tracker(tmp_path, CONFIG)
    for epoch in range(5):
        first.log({"train/loss": float(epoch), "old/only": 1.0}, step=epoch)
    first.close()  # killed after epoch 4; resumed from the epoch-2 checkpoint

    resumed = create_tracker(tmp_path, CONFIG)
    resumed.log({"train/loss": 20.0, "val/acc": 0.5}, step=2)
    resumed.log({"train/loss": 30.0}, step=3)
    resumed.close()
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [(row["step"], row["train/loss"]) for row in rows] == [(0, 0.0), (1, 1.0), (2, 20.0), (3, 30.0)]
    assert rows[0]["old/only"] == 1.0 and rows[0]["val/acc"] is None and rows[2]["val/acc"] == 0.5


def test_csv_is_written_atomically(tmp_path, monkeypatch):
    tracker = create_tracker(tmp_path, CONFIG)
    tracker.log({"train/loss": 1.0}, step=0)
    tracker.log({"train/loss": 0.5, "val/acc": 0.1}, step=1)  # widening rewrites the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
    before = (tmp_path / "metrics.csv").read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", disk_full)  # fails after the new content is written
    with pytest.warns(TrackerWarning, match="csv tracking failed in log.step=2. with (OSError|OutputError)"):
        tracker.log({"train/loss": 0.25, "new/key": 1.0}, step=2)
    monkeypatch.undo()
    assert (tmp_path / "metrics.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
    assert tracker.names == ()
    tracker.log({"train/loss": 0.1}, step=3)  # a switched-off backend is not called again
    tracker.close()


def test_read_metrics_csv_names_a_foreign_file(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(ValueError, match="no 'step' column"):
        read_metrics_csv(tmp_path / "metrics.csv")


# --- failing backends ----------------------------------------------------------------------------


def test_wandb_not_installed_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    _, messages = train_with_failing_backend(tmp_path, wandb=True)
    assert len(messages) == 1
    assert "wandb tracking is off" in messages[0] and "pip install 'fgvc[wandb]'" in messages[0]


def test_wandb_init_error_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    def init(**kwargs):
        raise RuntimeError("could not reach api.wandb.ai")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    names, messages = train_with_failing_backend(tmp_path, wandb=True, wandb_mode="online")
    assert names == ("csv",)
    assert len(messages) == 1
    assert "RuntimeError: could not reach api.wandb.ai" in messages[0] and "wandb login" in messages[0]
    assert not (tmp_path / "wandb_run_id.txt").exists()


def test_backend_failing_mid_run_warns_once_and_is_switched_off(tmp_path, monkeypatch):
    calls = {"log": 0, "finish": 0}

    class FlakyRun:
        id = "abcd1234"

        def log(self, metrics, step):
            calls["log"] += 1
            if step >= 2:
                raise ConnectionError("wandb-core died")

        def finish(self):
            calls["finish"] += 1

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kwargs: FlakyRun()))
    _, messages = train_with_failing_backend(tmp_path, wandb=True)
    assert len(messages) == 1
    assert "wandb tracking failed in log(step=2) with ConnectionError" in messages[0]
    assert calls == {"log": 3, "finish": 1}


def test_tensorboard_not_installed_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    _, messages = train_with_failing_backend(tmp_path, tensorboard=True)
    assert len(messages) == 1 and "pip install 'fgvc[tensorboard]'" in messages[0]


def test_disabled_tracker_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # would warn if it were tried
    run_dir = tmp_path / "run"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tracker = create_tracker(run_dir, CONFIG, wandb=True, tensorboard=True, enabled=False)
        train(tracker)
    assert tracker.names == ()
    assert tracker_warnings(record) == []
    assert not run_dir.exists()


# --- real backends, when installed ------------------------------------------------------------------


def test_wandb_offline_writes_under_run_dir_and_resume_keeps_the_run_id(tmp_path):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tracker = create_tracker(run_dir, CONFIG, wandb=True, run_name="fbsd-cub")
        assert tracker.names == ("csv", "wandb")
        train(tracker, epochs=range(3))
        run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
        resumed = create_tracker(run_dir, CONFIG, wandb=True)
        train(resumed, epochs=range(2, 4))
    assert tracker_warnings(record) == []
    assert (run_dir / "wandb_run_id.txt").read_text().strip() == run_id
    offline_runs = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}*"))  # "-1" when in the same second
    assert len(offline_runs) == 2, sorted(p.name for p in (run_dir / "wandb").iterdir())
    for offline_run in offline_runs:
        history = b"".join(p.read_bytes() for p in offline_run.glob(f"run-{run_id}*.wandb"))
        assert b"train/loss" in history and b"val/acc" in history
    assert [row["step"] for row in read_metrics_csv(run_dir / "metrics.csv")] == [0, 1, 2, 3]


def test_tensorboard_events_hold_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run_dir = tmp_path / "run"

    def scalars(tag):
        events = event_accumulator.EventAccumulator(os.fspath(run_dir / "tensorboard"))
        events.Reload()
        return [(e.step, e.value) for e in events.Scalars(tag)]

    first = create_tracker(run_dir, CONFIG, tensorboard=True)
    assert first.names == ("csv", "tensorboard")
    train(first, epochs=range(4))
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())
    assert scalars("train/loss") == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3)), (3, 0.25)]  # stored as float32

    resumed = create_tracker(run_dir, CONFIG, tensorboard=True)  # from the epoch-2 checkpoint
    resumed.log({"train/loss": 7.0}, step=2)
    resumed.log({"train/loss": 8.0}, step=3)
    resumed.close()
    assert scalars("train/loss") == [(0, 1.0), (1, 0.5), (2, 7.0), (3, 8.0)]  # resumed epochs replace, not repeat
    assert scalars("val/acc") == [(0, 0.0), (1, pytest.approx(0.1))]  # purged from step 2 on, all tags


def test_tracker_is_a_context_manager(tmp_path):
    with create_tracker(tmp_path, CONFIG) as tracker:
        tracker.log({"train/loss": 1.0}, step=0)
    assert tracker.names == ()
    assert tracking.read_metrics_csv(tmp_path / "metrics.csv") == [{"step": 0.0, "train/loss": 1.0}]
