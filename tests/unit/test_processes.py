"""`ServiceProcess.stop` ends the worker's whole process group, so nothing it started is left
behind: children after a clean exit, and everything after the timeout."""

from __future__ import annotations

import os
import time
from pathlib import Path

from services.processes import ServiceProcess, stop_all

_PARENT = """
import signal, subprocess, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
child = subprocess.Popen(["sleep", "300"], start_new_session=False)
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(300)
"""


def _started(tmp_path: Path, mode: str) -> tuple[ServiceProcess, int]:
    pid_file = tmp_path / "child.pid"
    process = ServiceProcess(
        "sleeper", {}, tmp_path / "sleeper.log", argv=["-c", _PARENT, str(pid_file), mode]
    )
    process.spawn()
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, process.tail()
        time.sleep(0.05)
    return process, int(pid_file.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by its parent) counts as gone
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return status != "Z"


def _gone_soon(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_stop_leaves_no_child_behind_after_a_clean_exit(tmp_path: Path) -> None:
    process, child = _started(tmp_path, "exit-on-term")

    assert process.stop(timeout=10) == 0

    assert _gone_soon(child)


def test_stop_kills_the_whole_group_of_a_worker_that_ignores_sigterm(tmp_path: Path) -> None:
    process, child = _started(tmp_path, "ignore-term")
    began = time.monotonic()

    assert process.stop(timeout=1) is None

    assert time.monotonic() - began < 10
    assert process.process is not None and process.process.poll() is not None
    assert _gone_soon(child)


_SLOW_TO_STOP = """
import signal, sys, time
def stopping(*_):
    open(sys.argv[1], "a").write(f"term {time.time()}\\n")
    time.sleep(1)
    open(sys.argv[1], "a").write(f"exit {time.time()}\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stopping)
open(sys.argv[1], "a").write("ready\\n")
time.sleep(300)
"""


def test_stop_all_asks_every_process_to_stop_before_waiting_for_any(tmp_path: Path) -> None:
    """Two processes that take a second to shut down: the second is asked before the first has
    finished, and both exit cleanly."""
    journals = [tmp_path / f"p{i}.txt" for i in range(2)]
    processes = [
        ServiceProcess("slow", {}, tmp_path / f"p{i}.log", argv=["-c", _SLOW_TO_STOP, str(j)])
        for i, j in enumerate(journals)
    ]
    for process in processes:
        process.spawn()
    deadline = time.monotonic() + 30
    while not all(j.exists() and "ready" in j.read_text() for j in journals):
        assert time.monotonic() < deadline, [p.tail() for p in processes]
        time.sleep(0.05)

    stop_all(processes, timeout=20)

    def moment(journal: Path, what: str) -> float:
        [when] = [
            float(line.split()[1])
            for line in journal.read_text().split("\n")
            if line.startswith(what)
        ]
        return when

    assert moment(journals[1], "term") < moment(journals[0], "exit")
    assert [p.process.returncode for p in processes if p.process] == [0, 0]
