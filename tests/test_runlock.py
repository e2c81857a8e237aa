"""The run-directory lock, between real processes: one holder at a time, freed when its holder dies."""

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from fgvc.engine.runlock import LOCK_NAME, RunLock
from fgvc.errors import FgvcError, UserError

# Takes the lock, says so on stdout, then holds it until its stdin is closed (or it is killed).
HOLDER = textwrap.dedent("""
    import sys
    from fgvc.engine.runlock import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()
    print("released", flush=True)
""")


def _start_holder(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), "train", "--out", str(run_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until the holder has the lock: no sleeping
    if line != "locked\n":
        proc.kill()
        pytest.fail(f"the holder did not take the lock: {line!r} {proc.communicate()[1][-2000:]}")
    return proc


@pytest.fixture
def holder(tmp_path):
    procs = []

    def start(run_dir):
        procs.append(_start_holder(run_dir))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path, holder):
    run = tmp_path / "run"
    first = holder(run)
    with pytest.raises(UserError) as e:
        RunLock(run).acquire()
    message = str(e.value)
    assert isinstance(e.value, FgvcError) and "\n" not in message
    assert message.startswith(f"{run} is in use by another fgvc process (pid {first.pid}, `")
    assert "train --out" in message and "since " in message and "pick another --out" in message

    first.stdin.close()  # let it finish normally
    assert first.stdout.read() == "released\n" and first.wait(timeout=60) == 0
    with RunLock(run) as lock:  # free again
        assert lock.held


def test_the_lock_of_a_killed_process_is_free(tmp_path, holder):
    run = tmp_path / "run"
    first = holder(run)
    with pytest.raises(UserError, match=f"pid {first.pid}"):
        RunLock(run).acquire()
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=60) == -signal.SIGKILL
    assert (run / LOCK_NAME).exists()  # the dead process's lock file stays, and does not matter
    with RunLock(run):
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("argv, command", [
    (["/home/me/.venv/bin/fgvc", "train", "--out", "my run"], "fgvc train --out 'my run'"),
    (["/src/fgvc/__main__.py", "train", "--resume", "run"], "python -m fgvc train --resume run"),
])
def test_the_lock_file_names_the_holder(tmp_path, monkeypatch, argv, command):
    monkeypatch.setattr(sys, "argv", argv)
    run = tmp_path / "new" / "run"
    before = dt.datetime.now().astimezone().replace(microsecond=0)
    with RunLock(run):
        record = json.loads((run / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["command"] == command
        assert before <= dt.datetime.fromisoformat(record["since"]) <= dt.datetime.now().astimezone()
    assert (run / LOCK_NAME).read_text() == ""  # cleared on release


def test_the_same_folder_twice_in_one_process_is_refused_not_deadlocked(tmp_path):
    with RunLock(tmp_path), pytest.raises(UserError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released by the first with
        pass


def test_a_holder_that_has_not_written_its_details_yet(tmp_path, holder):
    first = holder(tmp_path)
    # the instant between the holder's flock and its write: the file is still empty
    with open(tmp_path / LOCK_NAME, "r+") as f:
        f.truncate(0)
    with pytest.raises(UserError, match="in use by another fgvc process .it started just now"):
        RunLock(tmp_path).acquire()
    assert first.poll() is None
