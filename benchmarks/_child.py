"""Run one measurement in a fresh process: its own peak RSS, optionally one at a time.

A method's peak memory is only its own in a process that did nothing else,
so every (method, n) of the scaling reports runs in a child.  ``os.wait4``
returns that child's resource usage alone (``RUSAGE_CHILDREN`` would be the
maximum over every child waited for so far).  ``TurnLock`` makes heavy jobs of
several people on one machine take turns instead of slowing each other down.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

RESULT_TAG = "RESULT "


class TurnLock:
    """An exclusive ``flock`` on a shared file, held across several runs but never too long.

    Taking the lock for every short run would queue behind every other job
    each time; holding it for a whole benchmark would block everyone else.
    ``turn()`` (call it between runs) gives the lock back once it has been
    held ``max_hold`` seconds, pauses ``pause`` seconds so that a waiting job
    can take it, and waits for it again.  ``path=None``: no lock.
    """

    def __init__(self, path: Path | None, max_hold: float = 480.0, pause: float = 5.0) -> None:
        self.path, self.max_hold, self.pause = path, max_hold, pause
        self._fh = None
        self._since = 0.0

    def __enter__(self) -> "TurnLock":
        self._acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def turn(self) -> None:
        if self._fh is not None and time.monotonic() - self._since > self.max_hold:
            self._release()
            # flock has no queue: re-locking at once would win the race against
            # the waiters, who must first be woken and scheduled.
            time.sleep(self.pause)
            self._acquire()

    def _acquire(self) -> None:
        if self.path is None:
            return
        self._fh = open(self.path, "a")
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        self._since = time.monotonic()

    def _release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def emit(payload: dict) -> None:
    """Child side: the one line the parent parses."""
    print(RESULT_TAG + json.dumps(payload), flush=True)


def run(argv: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run ``argv``; returns its last RESULT payload plus wall_s, child_rss_bytes, returncode.

    The child is killed after ``timeout`` seconds (``timed_out`` is then True).
    ``child_rss_bytes`` is the peak RSS of that child alone (``os.wait4``).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout and not timed_out:
                proc.kill()
                timed_out = True
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    payload: dict = {}
    for line in stdout.splitlines():
        if line.startswith(RESULT_TAG):
            payload = json.loads(line[len(RESULT_TAG):])
    payload.update(wall_s=wall, returncode=proc.returncode, timed_out=timed_out,
                   child_rss_bytes=usage.ru_maxrss * 1024,
                   stderr_tail=stderr.strip().splitlines()[-3:] if stderr.strip() else [])
    return payload
