from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from themes.errors import RunLockedError
from themes.lock import RunLock


def test_second_lock_fails_with_a_clear_message(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match="Another run is in progress") as info:
            with RunLock(tmp_path):
                pass
        assert str(os.getpid()) in str(info.value)
    with RunLock(tmp_path):  # released after the first run ends
        pass


def test_waiting_run_gets_the_lock_when_the_first_ends(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from themes.lock import RunLock\n"
            f"with RunLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(1.5)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with RunLock(tmp_path, wait_s=30):
        waited = time.monotonic() - start
    holder.wait(timeout=30)
    assert waited > 0.2  # it really waited for the holder


def test_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from themes.lock import RunLock\n"
            f"with RunLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError):
        with RunLock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with RunLock(tmp_path):
        pass
