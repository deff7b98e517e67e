"""A private folder for files that must not outlive the process.

The kubernetes client copies a kubeconfig's client-key-data (and the CA and
client certificate) into temp files, because Python's ssl only loads keys
from files, and deletes them only at a normal exit (atexit): a SIGTERM from
cron, a CI runner or `kubectl delete pod` left client keys in /tmp. kube.py
points the client at `folder()` instead: one 0700 folder per process,
removed at exit and, by `install_signal_handlers` (cli.main), on SIGTERM,
SIGINT and SIGHUP before the process goes the way the signal says.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
from types import FrameType
from typing import Any

_lock = threading.RLock()  # re-entrant: a signal handler may run while folder() holds it
_path: str | None = None
_owner: int | None = None  # the pid that made it: a forked child must not remove its parent's folder

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def folder() -> str:
    """The process's private folder (mode 0700), made on first use."""
    global _path, _owner
    with _lock:
        if _path is None or _owner != os.getpid() or not os.path.isdir(_path):
            _path = tempfile.mkdtemp(prefix="meshpki-")  # mkdtemp: 0700, owned by us, a fresh name
            if _owner is None:
                atexit.register(cleanup)
            _owner = os.getpid()
        return _path


def cleanup() -> None:
    """Remove the folder and everything in it (idempotent). It is renamed away
    first: a thread still writing into it (the kubernetes loader) can then not
    add a file while rmtree runs, which would leave the folder behind."""
    global _path
    with _lock:
        path, _path = _path, None
        if path is None or _owner != os.getpid():
            return
        doomed = f"{path}.removing"
        try:
            os.rename(path, doomed)
        except OSError:
            doomed = path
        shutil.rmtree(doomed, ignore_errors=True)


def install_signal_handlers() -> None:
    """On SIGTERM, SIGINT and SIGHUP remove the folder first, then do what the
    signal would have done (a handler that was already set, else the default:
    KeyboardInterrupt for SIGINT, death by the signal for the others, so the
    exit status still says which). Main thread only (Python's rule)."""
    for signum in HANDLED:
        previous = signal.getsignal(signum)
        signal.signal(signum, _handler(signum, previous))


def _handler(signum: int, previous: Any) -> Any:
    def handle(received: int, frame: FrameType | None) -> None:
        with _lock:  # no other thread makes a new folder between the cleanup and the end
            cleanup()
            if callable(previous):
                previous(received, frame)
                return
            if previous == signal.SIG_IGN:
                return
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handle
