#!/usr/bin/env python3
"""Bench 3: audit fan-out over many clusters, each answering slowly.

tests/kubeapi.py's HTTPS API server runs in this process with N virtual
clusters (default 100), each holding its own meshpki `cacerts` secret and answering
every request after `delay` seconds (default 0.1). A kubeconfig with one
context per cluster points at them. The sequential floor is N x delay (10 s):
what reading one cluster after another must cost at least.

What is timed: `meshpki audit` over every context, in a fresh process (so
start-up counts), against a store holding all N bundles (both runs below
grade the whole store; only the live reads differ).
Targets: the whole run (start-up included) at most 0.3 of the sequential
floor, and the fan-out (what the other N-1 clusters add to a one-cluster run,
plus its one round trip) at most 0.06 of it: close to "one round trip plus
start-up" for the whole fleet. Each of --rounds rounds (default 3) times
the one-cluster run and then the whole fleet; the medians are graded (one
pair of runs on a shared 2-core machine varies by a third).

Runs with meshpki's runtime dependencies plus the `bench` extra (trustme,
for the test server's TLS): no pytest.

    python bench/bench_audit.py [--clusters 100] [--delay 0.1] [--rounds 3]
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
from _common import REPO, clean_env, machine, median, meshpki_cmd, table, verdict

TARGET_FRACTION = 0.3
FAN_OUT_TARGET = 0.06


def make_bundles(work: Path, names: list[str]) -> dict[str, dict[str, bytes]]:
    """A store with one real bundle per cluster (ECDSA, fast), as a fleet has:
    the audit reads and verifies each cluster's own bundle, not one copy."""
    from meshpki import ca
    from meshpki.keys import KeyType
    from meshpki.store import Store

    store = Store(work / "store")
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, names, ca.IssueOptions(), ca.store_issuer(store, None))
    return {name: dict(store.load_bundle(name).secret_data()) for name in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds each API request waits")
    parser.add_argument("--rounds", type=int, default=3, help="each round times 1 cluster, then all of them")
    args = parser.parse_args()

    from tests.kubeapi import KubeAPIServer

    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    names = [f"cluster{i}" for i in range(1, args.clusters + 1)]
    bundles = make_bundles(work, names)
    with KubeAPIServer() as server:
        for name in names:
            vc = server.cluster(name)
            vc.put_secret("istio-system", "cacerts", bundles[name])
            vc.delay = args.delay
        kubeconfig = server.write_kubeconfig(work / "kubeconfig", {n: (n, "admin-token") for n in names})
        env = clean_env(PYTHONPATH=str(REPO), MESHPKI_STORE=str(work / "store"), KUBECONFIG=str(kubeconfig))

        def command(contexts: list[str]) -> list[str]:
            fleet = work / f"mesh-{len(contexts)}.yaml"
            fleet.write_text("clusters:\n" + "".join(f"  - name: {n}\n    context: {n}\n" for n in contexts))
            return [*meshpki_cmd(), "audit", "--config", str(fleet), "--kubeconfig", str(kubeconfig)]

        def timed_run(contexts: list[str]) -> tuple[float, subprocess.CompletedProcess]:
            begin = time.perf_counter()
            proc = subprocess.run(command(contexts), env=env, capture_output=True, text=True, check=False)
            return time.perf_counter() - begin, proc

        ones, alls = [], []
        for _ in range(args.rounds):  # a shared machine's noise hits each process: medians of the rounds
            ones.append(timed_run(names[:1])[0])  # start-up, kubernetes client import, one slow read
            for name in names:
                server.cluster(name).clear_requests()
            took, proc = timed_run(names)
            alls.append(took)
            served = sum(len(server.cluster(n).requests) for n in names)
            if proc.returncode not in (0, 1, 2, 3) or "Traceback" in proc.stderr:
                break
        one, elapsed = median(ones), median(alls)
    shutil.rmtree(work, ignore_errors=True)
    label = "meshpki audit"
    if proc.returncode not in (0, 1, 2, 3) or "Traceback" in proc.stderr:
        sys.stderr.write(proc.stdout + proc.stderr)
        return verdict(False, f"{label} failed (exit {proc.returncode})")
    floor = max(args.clusters * args.delay, 1e-9)
    fan_outs = sorted(b - a + args.delay for a, b in zip(ones, alls, strict=True))
    fan_out = median(fan_outs)  # what the other N-1 clusters added to the run
    print(f"bench 3: audit fan-out, {args.clusters} clusters x {args.delay * 1000:.0f} ms per request "
          f"({machine()}; {served} requests served)")
    print(table(["", "seconds", "fraction of floor"], [
        [f"sequential floor ({args.clusters} x {args.delay} s)", floor, "1.00"],
        [f"{label}: {args.clusters} clusters, whole process", elapsed, f"{elapsed / floor:.2f}"],
        [f"{label}: 1 cluster (start-up + 1 read)", one, f"{one / floor:.2f}"],
        [f"fan-out: {args.clusters} clusters minus start-up", fan_out, f"{fan_out / floor:.2f}"],
    ]))
    if len(fan_outs) > 1:
        print(f"  median of {len(fan_outs)} rounds; fan-out per round "
              + ", ".join(f"{f / floor:.2f}" for f in fan_outs) + f" of the floor; load average {os.getloadavg()[0]:.1f}")
    # The target is graded end to end, start-up included: that is what cron pays.
    status = verdict(elapsed / floor <= TARGET_FRACTION,
                     f"{args.clusters} clusters take {elapsed:.2f} s end to end, {elapsed / floor:.2f} of the "
                     f"sequential floor (target <= {TARGET_FRACTION})")
    return status | verdict(fan_out / floor <= FAN_OUT_TARGET,
                            f"the fan-out takes {fan_out:.2f} s, {fan_out / floor:.2f} of the sequential floor "
                            f"(target <= {FAN_OUT_TARGET})")


if __name__ == "__main__":
    sys.exit(main())
