"""One training run per model directory: an advisory lock held for the run's lifetime.

The lock is ``flock`` on ``<dir>/train.lock``: the kernel releases it when the holding
process ends in any way (``kill -9`` and crashes included), so a lock never outlives its
process and needs no clean-up; the file itself stays and holds the last holder's pid, host
and start time, which a refused run prints. On NFS, Linux maps ``flock`` to POSIX locks
(NLM), which hold across machines too.
"""

import datetime
import fcntl
import json
import os
import socket

LOCK_FILE = "train.lock"


class RunLockedError(RuntimeError):
    """Another live process is training into the same directory."""


class RunLock:
    """Holds the lock on ``directory`` until ``release()`` or the process ends.

    Raises:
      RunLockedError: naming the holder (pid, host, start time) when another process has it.
    """

    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, LOCK_FILE)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(self._fd)
            os.close(self._fd)
            self._fd = None
            raise RunLockedError(
                f"{directory} is in use by another training run ({holder}); wait for it to "
                "finish, stop it, or use another --model_dir (the lock ends with its process, "
                "even after kill -9)") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }).encode())
        os.fsync(self._fd)

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _describe(fd):
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown: it has not written its details yet"
