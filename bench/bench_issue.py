#!/usr/bin/env python3
"""Bench 1: a root and N clusters with RSA-4096, Istio's Makefile recipe vs meshpki.

Baseline: istio/istio tools/certs/Makefile.selfsigned.mk + common.mk, replayed
command by command with the openssl CLI as `make root-ca` then
`make cluster1-cacerts` ... run them (serially, as the Istio docs do):
  root:        openssl genrsa 4096; openssl req -new -config root-ca.conf;
               openssl x509 -req -days 3650 -signkey ... -extfile root-ca.conf
  per cluster: openssl genrsa 4096; openssl req -new -config <c>/intermediate.conf;
               openssl x509 -req -days 730 -CA root-cert.pem -CAkey root-key.pem
               -CAcreateserial -extfile <c>/intermediate.conf; cat the chain; cp root
meshpki:       meshpki init-root --insecure-no-passphrase --key-type rsa-4096
               meshpki issue c1 ... cN        (subprocesses: start-up counts)

RSA-4096 key generation time is very noisy (it hunts for primes), so both
sides run in every round, alternating which goes first, and medians are
compared. Target: meshpki at least 1.6x faster (2 cores: keys made in parallel).

    python bench/bench_issue.py [--clusters 4] [--rounds 3] [--target 1.6]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import clean_env, machine, median, meshpki_cmd, run, table, verdict

# common.mk, root-ca.conf and %/intermediate.conf, with the default variables.
ROOT_CONF = """[ req ]
encrypt_key = no
prompt = no
utf8 = yes
default_md = sha256
default_bits = 4096
req_extensions = req_ext
x509_extensions = req_ext
distinguished_name = req_dn
[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
[ req_dn ]
O = Istio
CN = Root CA
"""

INTERMEDIATE_CONF = """[ req ]
encrypt_key = no
prompt = no
utf8 = yes
default_md = sha256
default_bits = 4096
req_extensions = req_ext
x509_extensions = req_ext
distinguished_name = req_dn
[ req_ext ]
subjectKeyIdentifier = hash
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
subjectAltName=@san
[ san ]
DNS.1 = istiod.istio-system.svc
[ req_dn ]
O = Istio
CN = Intermediate CA
L = {cluster}
"""


def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")


def makefile_recipe(work: Path, clusters: list[str]) -> None:
    """What `make root-ca` and `make <c>-cacerts` run, in order, one process each."""
    (work / "root-ca.conf").write_text(ROOT_CONF)
    openssl("genrsa", "-out", "root-key.pem", "4096", cwd=work)
    openssl("req", "-new", "-key", "root-key.pem", "-config", "root-ca.conf", "-out", "root-cert.csr", cwd=work)
    openssl("x509", "-req", "-days", "3650", "-signkey", "root-key.pem", "-extensions", "req_ext",
            "-extfile", "root-ca.conf", "-in", "root-cert.csr", "-out", "root-cert.pem", cwd=work)
    for c in clusters:
        (work / c).mkdir()
        (work / c / "intermediate.conf").write_text(INTERMEDIATE_CONF.format(cluster=c))
        openssl("genrsa", "-out", f"{c}/ca-key.pem", "4096", cwd=work)
        openssl("req", "-new", "-config", f"{c}/intermediate.conf", "-key", f"{c}/ca-key.pem",
                "-out", f"{c}/cluster-ca.csr", cwd=work)
        openssl("x509", "-req", "-days", "730", "-CA", "root-cert.pem", "-CAkey", "root-key.pem",
                "-CAcreateserial", "-extensions", "req_ext", "-extfile", f"{c}/intermediate.conf",
                "-in", f"{c}/cluster-ca.csr", "-out", f"{c}/ca-cert.pem", cwd=work)
        # %/ca-cert-chain.pem: cat $^ > $@ (intermediate, then root); cp root-cert.pem $(dir $<)
        (work / c / "cert-chain.pem").write_bytes((work / c / "ca-cert.pem").read_bytes()
                                                  + (work / "root-cert.pem").read_bytes())
        shutil.copy(work / "root-cert.pem", work / c / "root-cert.pem")


def time_makefile(clusters: list[str]) -> tuple[float, Path]:
    import time

    work = Path(tempfile.mkdtemp(prefix="bench-openssl-"))
    start = time.perf_counter()
    makefile_recipe(work, clusters)
    return time.perf_counter() - start, work


def time_meshpki(clusters: list[str]) -> tuple[float, Path]:
    store = Path(tempfile.mkdtemp(prefix="bench-meshpki-")) / "store"
    env = clean_env(MESHPKI_STORE=str(store))
    elapsed = run([*meshpki_cmd(), "init-root", "--insecure-no-passphrase", "--key-type", "rsa-4096"], env)
    elapsed += run([*meshpki_cmd(), "issue", *clusters], env)
    return elapsed, store


def check_outputs(openssl_dir: Path, store: Path, clusters: list[str]) -> None:
    """Both sides made what they should: bundles istiod would accept."""
    from meshpki import checks
    from meshpki.bundle import load_folder

    for folder in (openssl_dir / clusters[0], store / "clusters" / clusters[0]):
        report = checks.check_bundle(load_folder(folder))
        errors = [f for f in report.findings if f.severity == checks.Severity.ERROR]
        if errors:
            raise SystemExit(f"{folder}: not a valid bundle: {errors}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", type=float, default=1.6, help="minimum speed-up (openssl time / meshpki time)")
    args = parser.parse_args()
    if not shutil.which("openssl"):
        print("openssl CLI not found; cannot run the baseline", file=sys.stderr)
        return 2
    clusters = [f"c{i}" for i in range(1, args.clusters + 1)]
    base, ours = [], []
    for r in range(args.rounds):
        order = ("openssl", "meshpki") if r % 2 == 0 else ("meshpki", "openssl")
        for side in order:
            if side == "openssl":
                t, openssl_dir = time_makefile(clusters)
                base.append(t)
            else:
                t, store = time_meshpki(clusters)
                ours.append(t)
        if r == 0:
            check_outputs(openssl_dir, store, clusters)
        shutil.rmtree(openssl_dir, ignore_errors=True)
        shutil.rmtree(store.parent, ignore_errors=True)
        print(f"  round {r + 1}: openssl {base[-1]:.2f} s, meshpki {ours[-1]:.2f} s", file=sys.stderr, flush=True)
    ratio = median(base) / median(ours)
    openssl_version = " ".join(subprocess.run(["openssl", "version"], capture_output=True, text=True,
                                                    check=False).stdout.split()[:2])
    print(f"bench 1: root + {args.clusters} clusters, RSA-4096 ({machine()}; {openssl_version}; "
          f"{args.rounds} rounds, medians)")
    rows = [["Istio Makefile recipe (openssl CLI)", *base, median(base)],
            ["meshpki init-root + issue", *ours, median(ours)]]
    print(table(["", *[f"round {i + 1} s" for i in range(args.rounds)], "median s"], rows))
    return verdict(ratio >= args.target, f"meshpki is {ratio:.2f}x faster than the Makefile recipe "
                                         f"(target >= {args.target}x)")


if __name__ == "__main__":
    sys.exit(main())
