"""Atomic writes: file mode, errors of our own writes, temp files left behind, checkpoint safety."""

import errno
import os
import pickle
import stat

import pytest
import torch

from fgvc import fileio
from fgvc.engine import checkpoint
from fgvc.engine.checkpoint import load_checkpoint, save_checkpoint
from fgvc.errors import CheckpointError, FgvcError, OutputError
from fgvc.fileio import TEMP_NAME, atomic_open, atomic_write_text, remove_stale_temporaries


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if TEMP_NAME.match(p.name))


# -- mode ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o027, 0o640)])
def test_written_files_get_the_mode_of_a_plain_open(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    with atomic_open(tmp_path / "last.pt", "wb") as f:
        f.write(b"x")
    save_checkpoint(tmp_path / "best.pt", {"w": torch.zeros(3)})
    (tmp_path / "plain.txt").write_text("reference")
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == expected
    for name in ("config.yaml", "last.pt", "best.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_a_replaced_file_gets_the_mode_of_a_new_file(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "metrics.csv"
    target.write_text("old")
    target.chmod(0o600)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o644


# -- errors of our own writes -------------------------------------------------------------------

class _FailingWrites:
    """A file whose writes fail, standing in for a full disk or a revoked permission."""

    def __init__(self, f, error):
        self._f, self._error = f, error

    def write(self, data):
        raise self._error

    def __getattr__(self, name):
        return getattr(self._f, name)


def _fail_at(monkeypatch, point, error):
    if point == "open":
        real_open = os.open

        def fail_open(path, flags, mode=0o777, *, dir_fd=None):
            if TEMP_NAME.match(os.path.basename(path)):
                raise error
            return real_open(path, flags, mode, dir_fd=dir_fd)

        monkeypatch.setattr(fileio.os, "open", fail_open)
    elif point == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(fileio.os, "fdopen", lambda *a, **k: _FailingWrites(real_fdopen(*a, **k), error))
    elif point == "fsync":
        monkeypatch.setattr(fileio.os, "fsync", lambda fd: (_ for _ in ()).throw(error))
    elif point == "replace":
        monkeypatch.setattr(fileio.os, "replace", lambda a, b: (_ for _ in ()).throw(error))
    else:
        raise AssertionError(point)


ERRORS = {
    "full": (lambda: OSError(errno.ENOSPC, "No space left on device"), "no space left"),
    "denied": (lambda: PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
}


@pytest.mark.parametrize("point", ["open", "write", "fsync", "replace"])
@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_a_failed_write_is_an_output_error_and_keeps_the_old_file(tmp_path, monkeypatch, point, kind):
    make_error, reason = ERRORS[kind]
    target = tmp_path / "metrics.csv"
    target.write_text("old,content\n")
    _fail_at(monkeypatch, point, make_error())
    with pytest.raises(OutputError) as e:
        atomic_write_text(target, "new,content\n")
    monkeypatch.undo()
    assert isinstance(e.value, FgvcError) and not isinstance(e.value, OSError)  # `except OSError` misses it
    message = str(e.value)
    assert str(target) in message and reason in message and "\n" not in message
    assert e.value.errno == make_error().errno
    assert target.read_text() == "old,content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]  # no temp file left


def test_a_failed_folder_creation_is_an_output_error(tmp_path):
    (tmp_path / "run").write_text("a file where the run folder should be")
    with pytest.raises(OutputError, match="a file is in the way") as e:
        atomic_write_text(tmp_path / "run" / "sub" / "config.yaml", "a: 1\n")
    assert str(tmp_path / "run") in str(e.value)


def test_a_read_only_folder_is_an_output_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0o500 folder anyway; test_a_failed_write_... injects EACCES instead")
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "config.yaml").write_text("old")
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            atomic_write_text(folder / "config.yaml", "new")
        with pytest.raises(OutputError, match="permission denied"):
            atomic_write_text(folder / "sub" / "config.yaml", "new")
    finally:
        folder.chmod(0o700)
    assert (folder / "config.yaml").read_text() == "old" and sorted(os.listdir(folder)) == ["config.yaml"]


def test_errors_of_the_callers_block_pass_through_unchanged(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    for error in (ValueError("bad row"), KeyboardInterrupt(), FileNotFoundError(errno.ENOENT, "gone", "input.csv")):
        with pytest.raises(type(error)) as e, atomic_open(target) as f:
            f.write("half of it")
            raise error
        assert e.value is error
        assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["report.html"]


def test_a_write_error_inside_the_block_is_an_output_error(tmp_path, monkeypatch):
    _fail_at(monkeypatch, "write", OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OutputError, match="no space left"), atomic_open(tmp_path / "a.csv") as f:
        f.write("x")
    assert os.listdir(tmp_path) == []


# -- checkpoints --------------------------------------------------------------------------------

def test_a_checkpoint_that_cannot_fit_is_refused_before_writing(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"model": {"w": torch.ones(8)}})
    before = target.read_bytes()
    state = {"model": {"w": torch.zeros(1000, 1000)}, "optimizer": {"state": [{"m": torch.zeros(500, 1000)}]}}
    needed = (1000 * 1000 + 500 * 1000) * 4
    usage = type("Usage", (), {"total": 10**12, "used": 10**12 - needed // 2, "free": needed // 2})
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda folder: usage)
    with pytest.raises(OutputError) as e:
        save_checkpoint(target, state)
    message = str(e.value)
    assert str(target) in message and "needs about" in message and "3.0 MB are free" in message
    assert e.value.errno == errno.ENOSPC
    assert target.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["last.pt"]
    usage.free = 10**9
    save_checkpoint(target, state)  # with room, the same state is written
    assert load_checkpoint(target)["model"]["w"].shape == (1000, 1000)


def test_a_disk_full_inside_torch_save_is_an_output_error(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"model": {"w": torch.ones(8)}})
    before = target.read_bytes()
    _fail_at(monkeypatch, "write", OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OutputError, match="no space left"):  # torch itself would say "unexpected pos"
        save_checkpoint(target, {"model": {"w": torch.zeros(100, 100)}})
    assert target.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["last.pt"]


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_file_with_python_objects_is_refused_without_running_them(tmp_path, writer):
    marker = tmp_path / "code-ran"
    payload = {"format": checkpoint.FORMAT, "epoch": 3, "extra": _RunsCodeWhenUnpickled(marker)}
    path = tmp_path / "foreign.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert "holds Python objects" in message and "open" in message and "could run code" in message
    assert "state dict" in message and "written by fgvc" in message
    assert "weights_only" not in message and "damaged" not in message
    assert not marker.exists()


def test_a_truncated_checkpoint_is_called_damaged(tmp_path):
    whole = tmp_path / "whole.pt"
    save_checkpoint(whole, {"model": {"w": torch.randn(1000)}})
    data = whole.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(cut)
    message = str(e.value)
    assert "damaged or not a checkpoint" in message and str(cut) in message
    assert "holds Python objects" not in message and "weights_only" not in message and "\n" not in message


# -- temp files left by a kill -------------------------------------------------------------------

def test_temp_names_match_the_cleanup_pattern(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(fileio.os, "replace", lambda a, b: (seen.append(os.path.basename(a)), real_replace(a, b)))
    atomic_write_text(tmp_path / "metrics.csv", "x")
    assert len(seen) == 1 and TEMP_NAME.match(seen[0]).group("target") == "metrics.csv"


def test_remove_stale_temporaries_removes_only_fgvc_temp_files(tmp_path):
    ours = [".last.pt.k2j4_x9a.tmp", ".metrics.csv.abcdefgh.tmp", ".config.yaml.00000000.tmp"]
    theirs = ["notes.tmp", ".notes.tmp", "last.pt.abcdefgh.tmp", ".last.pt.abcdefg.tmp", ".last.pt.abcdefghi.tmp",
              ".last.pt.ABCDEFGH.tmp", ".last.pt.abcdefgh.tmp.bak", ".abcdefgh.tmp", "last.pt", ".lock"]
    for name in ours + theirs:
        (tmp_path / name).write_text(name)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".last.pt.abcdefgh.tmp").write_text("not recursive")
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()  # a folder is never one of our temp files
    removed = remove_stale_temporaries(tmp_path)
    assert removed == sorted(tmp_path / name for name in ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*theirs, "sub", ".dir.abcdefgh.tmp"])
    assert (tmp_path / "sub" / ".last.pt.abcdefgh.tmp").exists()
    assert remove_stale_temporaries(tmp_path) == []
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_a_killed_write_leaves_a_temp_file_that_the_cleanup_removes(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_open(target, "wb") as f:
        f.write(b"half")
        leftover = [p for p in tmp_path.iterdir() if p != target]  # what a SIGKILL here would leave
        assert len(leftover) == 1
        os.link(leftover[0], tmp_path / "kept")
        raise KeyboardInterrupt
    os.replace(tmp_path / "kept", leftover[0])
    assert remove_stale_temporaries(tmp_path) == leftover
    assert sorted(os.listdir(tmp_path)) == ["last.pt"] and target.read_bytes() == b"old"
