"""meshpki run with a pseudo-terminal as its controlling terminal, for the prompts' tests."""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def on_a_terminal(args: list[str], env: dict[str, str], answers: list[str]) -> tuple[int, str]:
    """Run meshpki on a pseudo-terminal, typing `answers` at its prompts; (exit code, what the screen showed).

    Each answer is typed the moment a new prompt (output ending in a colon) shows, as an expect script
    (or a quick hand) would: a prompt must not show before the echo is off. A child
    still running after two minutes is killed, so a prompt nobody answers fails the
    test instead of hanging it.
    """
    import pty

    full = {k: v for k, v in os.environ.items() if not k.startswith("MESHPKI_")}
    full.update(env, PYTHONPATH=str(REPO))
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing else
        os.execve(sys.executable, [sys.executable, "-m", "meshpki", *args], full)
    seen, pending, deadline = b"", list(answers), time.monotonic() + 120
    answered = 0  # how much of the screen came before the last answer
    while True:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if pending and seen[answered:].rstrip().endswith(b":"):  # a new prompt, not the last one's newline
            os.write(fd, pending.pop(0).encode() + b"\n")
            answered = len(seen)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")
