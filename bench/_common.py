"""Shared helpers for the benchmarks: how to run meshpki, time things, print tables.

Benchmarks measure wall time of real processes (start-up included), take
medians over rounds, print a small table and exit 1 when a target is missed.
Speed is measured here, never as timed assertions in the unit tests.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def meshpki_cmd() -> list[str]:
    """The installed `meshpki` console script of this interpreter (what a user
    runs), else `python -m meshpki`. $MESHPKI_BIN overrides. The pyenv/asdf
    shim found on PATH is skipped: it is a bash wrapper that adds ~0.1 s."""
    override = os.environ.get("MESHPKI_BIN")
    if override:
        return override.split()
    script = Path(sys.executable).parent / "meshpki"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "meshpki"]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without meshpki/Kubernetes settings that could
    point a benchmark at a real store or cluster."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MESHPKI_STORE", "MESHPKI_CONFIG", "MESHPKI_ROOT_PASSPHRASE", "KUBECONFIG")}
    env.update(extra)
    return env


def run(cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> float:
    """Run a command to completion; its wall time in seconds. Fails loudly."""
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
                          capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        raise SystemExit(f"benchmark step failed ({proc.returncode}): {' '.join(cmd)}")
    return elapsed


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    import platform

    return f"{os.cpu_count()} CPU(s), {platform.machine()}, Python {platform.python_version()}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row]
                                         for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(ok: bool, text: str) -> int:
    print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if ok else 1
