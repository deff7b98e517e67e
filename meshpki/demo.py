"""`meshpki demo`: the main job end to end on a throw-away store.

What a new user runs first: it proves the install works and shows every
step's output, without touching a real store or a real cluster.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from meshpki import ca, push, verify
from meshpki.keys import KeyType
from meshpki.store import Store

DEMO_CLUSTERS = ("cluster1", "cluster2")


@dataclass(frozen=True)
class DemoReport:
    """Each step's result, for render.demo_text."""

    store: Path
    root: ca.RootResult
    issued: tuple[ca.IssueResult, ...]
    files: dict[str, list[str]]  # cluster -> the file names in its bundle folder
    verify: verify.VerifyReport
    pushed: str  # the cluster whose manifest is shown
    manifest: dict[str, object]
    kept: Path | None = None  # the --keep folder; None: the store was deleted at the end


def run(keep: Path | None, key_type: str, step: Callable[[str], None]) -> DemoReport:
    """Build the demo store (in `keep`, or a temporary folder removed afterwards).

    The demo's root key is never encrypted (no passphrase to ask for), so a
    kept store says plainly that it is for trying things only.
    """
    if keep is not None:
        report = _run_in(Store(keep), KeyType.parse(key_type), step,
                         "UNENCRYPTED: the kept store is for trying things only, never for a real mesh")
        return replace(report, kept=keep)
    with tempfile.TemporaryDirectory(prefix="meshpki-demo-") as tmp:
        return _run_in(Store(Path(tmp) / "store"), KeyType.parse(key_type), step,
                       "unencrypted: this store is deleted when the demo ends")


def _run_in(store: Store, key_type: KeyType, step: Callable[[str], None], about_key: str) -> DemoReport:
    step(f"init-root ({key_type.value}, {about_key})")
    root = ca.init_root(store, key_type, ca.DEFAULT_ROOT_DAYS, "Istio", "Root CA", passphrase=None)
    step(f"issue {' '.join(DEMO_CLUSTERS)}")
    issued = tuple(ca.issue(store, DEMO_CLUSTERS, ca.IssueOptions(), ca.store_issuer(store, None)))
    files = {r.cluster: sorted(p.name for p in r.path.iterdir()) for r in issued}
    step(f"verify {' '.join(DEMO_CLUSTERS)}")
    report = verify.run(store, DEMO_CLUSTERS)
    pushed = DEMO_CLUSTERS[0]
    step(f"push {pushed} --dry-run -o yaml (no cluster needed)")
    desired = push.desired_secret(push.verified_bundle(store, pushed), push.FORM_FILES)
    return DemoReport(store.path, root, issued, files, report, pushed,
                      desired.manifest(push.DEFAULT_NAMESPACE, push.DEFAULT_SECRET))
