"""One writer per output folder: a second process is refused at once naming the holder; a dead holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from stablebptt.runs import lock

HOLDER = """
import sys, time
from stablebptt.runs import lock
with lock.hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(lock.FolderLockedError) as err:
            with lock.hold(out):
                raise AssertionError("entered a folder another process holds")
        assert f"pid {child.pid}" in str(err.value) and "\n" not in str(err.value)
        assert not out.exists()  # refusing changes nothing
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert lock.lock_path(out).exists()  # the killed holder left its file behind ...
    with lock.hold(out):  # ... and its lock is free
        assert lock.lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock.lock_path(out).exists()


def test_the_lock_is_reentrant_within_a_process_and_released_after_errors(tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(KeyError):
        with lock.hold(out):
            with lock.hold(out):  # e.g. a sweep writing its runs
                pass
            assert lock.lock_path(out).exists()
            raise KeyError("boom")
    assert not lock.lock_path(out).exists()
    with lock.hold(out):
        pass
