"""`meshpki demo`: the main job end to end on a throw-away store.

What a new user runs first: it proves the install works and shows every
step's output, without touching a real store or a real cluster.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from meshpki import ca
from meshpki.keys import KeyType
from meshpki.store import Store

DEMO_CLUSTERS = ("cluster1", "cluster2")


def run(keep: Path | None, key_type: str, step: Callable[[str], None]) -> str:
    """Build the demo store (in `keep`, or a temporary folder removed afterwards).

    The demo's root key is never encrypted (no passphrase to ask for), so a
    kept store says plainly that it is for trying things only.
    """
    if keep is not None:
        report = _run_in(Store(keep), KeyType.parse(key_type), step,
                         "UNENCRYPTED: the kept store is for trying things only, never for a real mesh")
        return report + (f"\n\nkept the demo store in {keep}: its root key is NOT encrypted; use it to try "
                         "meshpki, never for a real mesh (make one with `meshpki init-root`)")
    with tempfile.TemporaryDirectory(prefix="meshpki-demo-") as tmp:
        report = _run_in(Store(Path(tmp) / "store"), KeyType.parse(key_type), step,
                         "unencrypted: this store is deleted when the demo ends")
    return report + "\n\ndeleted the demo store (keep one with `meshpki demo --keep DIR`)"


def _run_in(store: Store, key_type: KeyType, step: Callable[[str], None], about_key: str) -> str:
    lines = [f"demo store: {store.path}"]
    step(f"init-root ({key_type.value}, {about_key})")
    root = ca.init_root(store, key_type, ca.DEFAULT_ROOT_DAYS, "Istio", "Root CA", passphrase=None)
    lines.append(f"root: {root.cert.subject.rfc4514_string()} in {root.path}")
    step(f"issue {' '.join(DEMO_CLUSTERS)}")
    issued = ca.issue(store, DEMO_CLUSTERS, ca.IssueOptions(), ca.store_issuer(store, None))
    for result in issued:
        files = ", ".join(sorted(p.name for p in result.path.iterdir()))
        lines.append(f"{result.cluster}: {files}")
    lines += _verify_step(store, step)
    lines += _manifest_step(store, step)
    return "\n".join(lines)


def _manifest_step(store: Store, step: Callable[[str], None]) -> list[str]:
    """What `push --dry-run -o yaml` would apply to cluster1, data shortened for the screen."""
    from meshpki import push, render

    step("push cluster1 --dry-run -o yaml (no cluster needed)")
    desired = push.desired_secret(push.verified_bundle(store, "cluster1"), push.FORM_FILES)
    manifest = desired.manifest(push.DEFAULT_NAMESPACE, push.DEFAULT_SECRET)
    data: dict[str, str] = manifest["data"]  # type: ignore[assignment]
    manifest["data"] = {k: v[:24] + "..." for k, v in data.items()}
    return ["", "# the cacerts secret for cluster1 (data shortened; "
                "`meshpki push cluster1 --dry-run -o yaml` prints it whole):",
            render.to_yaml(manifest).rstrip(),
            "", "next, with a real cluster: meshpki push cluster1 --context <your kubeconfig context>"]


def _verify_step(store: Store, step: Callable[[str], None]) -> list[str]:
    """Both bundles and the pair, checked as istiod and the proxies would."""
    from meshpki import render, verify

    step(f"verify {' '.join(DEMO_CLUSTERS)}")
    report = verify.run(store, DEMO_CLUSTERS)
    return ["", render.verify_text(report)]
