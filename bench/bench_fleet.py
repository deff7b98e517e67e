#!/usr/bin/env python3
"""Bench 4: fleet scale. push --all runs clusters concurrently; audit's cost
per cluster stays flat from 100 to 1,000 clusters.

tests/kubeapi.py's HTTPS API server runs in this process with one virtual
cluster per cluster of the fleet; meshpki runs as a fresh process (start-up
counts), so the two share this machine's cores like a real run would not.

1. push --all at N clusters (default 20), every API request answered after
   --delay (100 ms): with --parallel 1 (one cluster after another, the old
   behaviour) and with the default, side by side. Each run creates every
   secret (4 requests per cluster). Target: the default takes at most a third
   of --parallel 1.
2. audit over 100, 300 and 1,000 clusters, each run with a fleet file and a
   kubeconfig of its own size, answering at once (the CPU cost shows).
   Target: 1,000 clusters within 8 times the 100-cluster time, peak memory
   (max RSS of the audit process) under 300 MB.

    python bench/bench_fleet.py [--push-clusters 20] [--delay 0.1] [--sizes 100,300,1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, clean_env, machine, meshpki_cmd, table, verdict

PUSH_TARGET = 1 / 3
AUDIT_RATIO_TARGET = 8.0
MEMORY_TARGET_MB = 300
NS, NAME = "istio-system", "cacerts"


def issued_store(path: Path, clusters: list[str]) -> None:
    """A store with an ECDSA root and one bundle per cluster (fast to make)."""
    from meshpki import ca
    from meshpki.keys import KeyType
    from meshpki.store import Store

    store = Store(path)
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, clusters, ca.IssueOptions(key_type=KeyType.ECDSA_P256), ca.store_issuer(store, None))


def fleet_files(server, work: Path, names: list[str]) -> tuple[Path, Path]:
    kubeconfig = server.write_kubeconfig(work / f"kubeconfig-{len(names)}", {n: (n, "admin-token") for n in names})
    fleet = work / f"mesh-{len(names)}.yaml"
    fleet.write_text("clusters:\n" + "".join(f"  - name: {n}\n    context: {n}\n" for n in names))
    return kubeconfig, fleet


def timed(cmd: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one run of `cmd`; fails loudly."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, so the kernel's rusage is this child's
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode not in ok or b"Traceback" in stderr:
        sys.stderr.write(stdout.decode(errors="replace")[-2000:] + stderr.decode(errors="replace")[-2000:])
        raise SystemExit(f"benchmark step failed ({proc.returncode}): {' '.join(cmd[:4])} ...")
    return elapsed, usage.ru_maxrss / 1024  # KiB on Linux


def bench_push(server, work: Path, clusters: int, delay: float) -> int:
    names = [f"push{i}" for i in range(1, clusters + 1)]
    issued_store(work / "push-store", names)
    kubeconfig, fleet = fleet_files(server, work, names)
    env = clean_env(PYTHONPATH=str(REPO), MESHPKI_STORE=str(work / "push-store"), KUBECONFIG=str(kubeconfig),
                    MESHPKI_CONFIG=str(fleet))
    for name in names:
        server.cluster(name).delay = delay
    rows, times = [], {}
    for label, extra in (("--parallel 1", ["--parallel", "1"]), ("default (--parallel 16)", [])):
        for name in names:
            server.cluster(name).delete_secret(NS, NAME)
            server.cluster(name).clear_requests()
        elapsed, _ = timed([*meshpki_cmd(), "push", "--all", *extra], env)
        requests = sum(len(server.cluster(n).requests) for n in names)
        created = sum(server.cluster(n).get_secret(NS, NAME) is not None for n in names)
        if created != clusters:
            raise SystemExit(f"push --all {label}: only {created} of {clusters} secrets were written")
        times[label] = elapsed
        rows.append([f"push --all {label}", elapsed, requests])
    sequential, default = times["--parallel 1"], times["default (--parallel 16)"]
    print(f"bench 4a: push --all, {clusters} clusters x {delay * 1000:.0f} ms per request ({machine()})")
    print(table(["", "seconds", "requests"], rows))
    return verdict(default <= sequential * PUSH_TARGET,
                   f"default {default:.2f} s is {default / sequential:.2f} of --parallel 1's {sequential:.2f} s "
                   f"(target <= {PUSH_TARGET:.2f})")


def bench_audit(server, work: Path, sizes: list[int], data: dict[str, bytes]) -> int:
    rows, times, memory = [], {}, {}
    for size in sizes:
        names = [f"audit{i}" for i in range(1, size + 1)]
        for name in names:
            vc = server.cluster(name)
            vc.delay = 0.0
            vc.put_secret(NS, NAME, data)
        kubeconfig, fleet = fleet_files(server, work, names)
        env = clean_env(PYTHONPATH=str(REPO), MESHPKI_STORE=str(work / "audit-store"))
        elapsed, rss = timed([*meshpki_cmd(), "audit", "--config", str(fleet), "--kubeconfig", str(kubeconfig),
                              "-o", "json"], env, ok=(0, 1, 2, 3))
        times[size], memory[size] = elapsed, rss
        rows.append([f"audit, {size} clusters", elapsed, elapsed / size * 1000, f"{rss:.0f}"])
    print(f"bench 4b: audit at {', '.join(map(str, sizes))} clusters, no added latency ({machine()})")
    print(table(["", "seconds", "ms per cluster", "peak MB"], rows))
    small, large = min(sizes), max(sizes)
    ratio, target = times[large] / times[small], AUDIT_RATIO_TARGET * (large / small) / 10  # 8 for 100 -> 1,000
    status = verdict(ratio <= target, f"{large} clusters take {ratio:.1f} times {small} (target <= {target:.1f}, "
                                      f"{large / small:.0f} would be exactly linear)")
    return status | verdict(max(memory.values()) < MEMORY_TARGET_MB,
                            f"peak memory {max(memory.values()):.0f} MB (target < {MEMORY_TARGET_MB} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--push-clusters", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds each push request waits")
    parser.add_argument("--sizes", default="100,300,1000", help="audit fleet sizes, comma-separated")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    from bench_audit import make_bundles

    from tests.kubeapi import KubeAPIServer

    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    try:
        data = make_bundles(work / "seed", ["cluster1"])["cluster1"]  # one live bundle for every cluster
        shutil.copytree(work / "seed" / "store", work / "audit-store")
        with KubeAPIServer() as server:
            status = bench_push(server, work, args.push_clusters, args.delay)
            print()
            status |= bench_audit(server, work, sizes, data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
