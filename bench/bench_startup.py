#!/usr/bin/env python3
"""Bench 2: start-up. Offline commands never import the kubernetes client, and
`meshpki verify CLUSTER` on a store answers well under half a second.

Measured as users see it: wall time of the installed console script in a
fresh process (median of --runs). Also reported: the interpreter's own
start-up (the floor no Python CLI can beat), what importing the kubernetes
client (as kube.py loads it) would add, and the root key's unlock cost (scrypt, README "The root key
at rest").

Checks, in a process that runs the CLI's main() in-process and then inspects
sys.modules: `--version`, `init-root`, `issue` and `verify CLUSTER` leave no
kubernetes (or urllib3) module loaded, nor python-pkcs11 (a file root never
needs the HSM extra).

    python bench/bench_startup.py [--runs 7] [--key-type rsa-4096]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, clean_env, machine, median, meshpki_cmd, run, table, verdict

VERIFY_TARGET_S = 0.5

# Runs meshpki's CLI in this process for each argv, then reports which
# Kubernetes-side modules (and the PKCS#11 binding, for a file root) got imported along the way.
IN_PROCESS = r"""
import json, sys
from meshpki.cli import cli
loaded = {}
for argv in json.loads(sys.argv[1]):
    try:
        cli.main(argv, prog_name="meshpki", standalone_mode=False)
    except SystemExit:
        pass
    loaded[" ".join(argv)] = sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes", "urllib3", "pkcs11"))
print(json.dumps(loaded))
"""


def wall(cmd: list[str], env: dict[str, str], runs: int) -> float:
    run(cmd, env)  # warm the page cache and .pyc files
    return median([run(cmd, env) for _ in range(runs)])


def unlock_cost(runs: int) -> tuple[float, str]:
    """Seconds to decrypt an encrypted root key as meshpki writes it (scrypt N=2^17)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from meshpki import keys

    key = ec.generate_private_key(ec.SECP256R1())  # the KDF dominates; the key type does not matter
    pem = keys.to_encrypted_pem(key, b"correct horse battery staple")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        keys.load_private_key(pem, b"correct horse battery staple")
        times.append(time.perf_counter() - start)
    return median(times), f"scrypt N=2^{keys.SCRYPT_LOG2_N}, r={keys.SCRYPT_R}, p={keys.SCRYPT_P}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--key-type", default="rsa-4096", help="key type of the store verify reads")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    store = work / "store"
    env = clean_env(MESHPKI_STORE=str(store))
    meshpki = meshpki_cmd()
    run([*meshpki, "init-root", "--insecure-no-passphrase", "--key-type", args.key_type], env)
    run([*meshpki, "issue", "cluster1"], env)

    floor = wall([sys.executable, "-c", "pass"], env, args.runs)
    kube_import = wall([sys.executable, "-c", "import meshpki.kube as k; k._import_kubernetes()"], env,
                       args.runs) - floor
    version = wall([*meshpki, "--version"], env, args.runs)
    verify = wall([*meshpki, "verify", "cluster1"], env, args.runs)
    unlock, kdf = unlock_cost(3)

    argvs = [["--version"], ["init-root", "--insecure-no-passphrase", "--key-type", "ecdsa-p256"],
             ["issue", "cluster1", "cluster2"], ["verify", "cluster1"], ["verify", "cluster1", "cluster2"]]
    probe_env = clean_env(MESHPKI_STORE=str(work / "probe-store"), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", IN_PROCESS, json.dumps(argvs)], env=probe_env,
                         capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    shutil.rmtree(work, ignore_errors=True)

    print(f"bench 2: start-up ({machine()}; median of {args.runs} runs; store key type {args.key_type})")
    print(table(["", "seconds", "vs 0.5 s"], [
        ["python -c pass (interpreter floor)", floor, f"{floor / VERIFY_TARGET_S:.2f}"],
        ["kubernetes client import, as kube.py does it (avoided)", kube_import, f"{kube_import / VERIFY_TARGET_S:.2f}"],
        ["meshpki --version", version, f"{version / VERIFY_TARGET_S:.2f}"],
        ["meshpki verify cluster1", verify, f"{verify / VERIFY_TARGET_S:.2f}"],
        [f"root key unlock ({kdf})", unlock, f"{unlock / VERIFY_TARGET_S:.2f}"],
    ]))
    offenders = {argv: mods for argv, mods in loaded.items() if mods}
    for argv in loaded:
        print(f"  meshpki {argv}: {'imports ' + ', '.join(loaded[argv][:3]) if loaded[argv] else 'no kubernetes import'}")
    code = verdict(not offenders, "offline commands never import the kubernetes client (nor pkcs11 for a file root)")
    code |= verdict(verify < VERIFY_TARGET_S,
                    f"meshpki verify cluster1 takes {verify:.3f} s (target < {VERIFY_TARGET_S} s; "
                    f"{verify - floor:.3f} s above the interpreter)")
    return code


if __name__ == "__main__":
    sys.exit(main())
