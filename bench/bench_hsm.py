#!/usr/bin/env python3
"""Bench 5: what a root key in a PKCS#11 token costs per signature.

Signs the same intermediate profile N times with a key in memory and with the
same key type inside a SoftHSM2 token (made in a temporary folder), in one
run, and reports the ratio. The token path adds a throw-away stand-in
signature, the token round trip and a verification of the token's signature
(meshpki/signing.py). Target: under 50 ms per certificate above the in-memory
path, so a 100-cluster issue stays dominated by key generation.

Skips (exit 0, saying why) without softhsm2 or python-pkcs11.

    python bench/bench_hsm.py [--count 50] [--key-type ecdsa-p256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine, table, timed, verdict

sys.path.insert(0, str(REPO))

TARGET_EXTRA_S = 0.050
PIN = "bench-pin-2468"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--key-type", default="ecdsa-p256")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "tests"))
    from softhsm import find_module, skip_reason

    reason = skip_reason()
    if reason:
        print(f"bench 5: skipped: {reason}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-hsm-"))
    (work / "tokens").mkdir()
    conf = work / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {work / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", PIN],
                   check=True, capture_output=True)

    from meshpki import hsm, profiles
    from meshpki.keys import KeyType

    key_type = KeyType.parse(args.key_type)
    uri = hsm.TokenURI.parse(f"pkcs11:token=bench;object=root?module-path={find_module()}")
    token_key, _ = hsm.generate_key(uri, PIN.encode(), key_type)
    file_key = key_type.generate()
    subject_key = KeyType.ECDSA_P256.generate().public_key()
    token_root = profiles.make_root(token_key, 30)
    file_root = profiles.make_root(file_key, 30)

    def sign_all(root, key) -> None:
        for i in range(args.count):
            profiles.make_intermediate(root, key, subject_key, f"c{i}", 30)

    sign_all(file_root, file_key)  # warm up both paths
    sign_all(token_root, token_key)
    in_memory = timed(lambda: sign_all(file_root, file_key)) / args.count
    in_token = timed(lambda: sign_all(token_root, token_key)) / args.count
    shutil.rmtree(work, ignore_errors=True)

    print(f"bench 5: signing through a PKCS#11 token ({machine()}; SoftHSM2; {args.count} intermediates, "
          f"{key_type.value} root)")
    print(table(["", "ms per certificate", "ratio"], [
        ["root key in memory", in_memory * 1000, "1.00"],
        ["root key in the token", in_token * 1000, f"{in_token / in_memory:.2f}"],
    ]))
    return verdict(in_token - in_memory < TARGET_EXTRA_S,
                   f"the token adds {1000 * (in_token - in_memory):.1f} ms per certificate "
                   f"(target < {TARGET_EXTRA_S * 1000:.0f} ms)")


if __name__ == "__main__":
    sys.exit(main())
