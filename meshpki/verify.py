"""`meshpki verify`: resolve targets, check each bundle, then every pair.

A target is a cluster of the store or a folder holding a bundle made by
anything. Pairs are checked whenever two or more targets are given: a mesh
is only as good as its worst pair.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from meshpki import checks, profiles
from meshpki.bundle import ISTIO_GENERATED, Bundle, differing_roles, load_folder
from meshpki.checks import BundleReport, PairReport, Severity
from meshpki.errors import ExitCode, InputError, MeshPKIError
from meshpki.findings import finding
from meshpki.kube import IN_CLUSTER_CONTEXT, SecretRef
from meshpki.limits import DEFAULT_WARN_DAYS
from meshpki.store import is_cluster_name


@dataclass(frozen=True)
class Target:
    """A resolved TARGET: its label in the report and the bundle it names."""

    label: str
    bundle: Bundle
    kind: str  # "cluster", "folder" or "live"
    cluster: str | None = None
    """The cluster fix hints name: the store's, or a live secret's fleet cluster; else the certificate's L=."""
    guess: str | None = None
    """What fix hints name when nothing better is known: a live secret's context."""


@dataclass(frozen=True)
class VerifyReport:
    results: tuple[BundleReport, ...]
    pairs: tuple[PairReport, ...]
    notes: tuple[str, ...] = ()  # what the store holds that no cluster was made of (Store.left_out)

    def _count(self, severity: Severity) -> int:
        return sum(r.count(severity) for r in self.results) + sum(p.count(severity) for p in self.pairs)

    @property
    def errors(self) -> int:
        """Error findings over bundles and pairs: a failing pair counts too."""
        return self._count(Severity.ERROR)

    @property
    def warnings(self) -> int:
        return self._count(Severity.WARNING)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def exit_code(self, strict: bool = False) -> int:
        """0 clean (warnings allowed), 1 any error, or any warning under --strict."""
        return ExitCode.FAILED if self.errors or (strict and self.warnings) else ExitCode.OK

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        """`ok` agrees with the exit code, so under --strict warnings make it false."""
        return {
            "ok": self.exit_code(strict) == ExitCode.OK,
            "strict": strict,
            "errors": self.errors,
            "warnings": self.warnings,
            "results": [r.to_dict() for r in self.results],
            "pairs": [p.to_dict() for p in self.pairs],
        }


def resolve_targets(store, names: Sequence[str], all_clusters: bool = False) -> list[Target]:
    """Store clusters by name (a bare name the store knows wins over a folder
    of the same name), else folders; anything else is a usage error naming it.
    No names and no --all means every cluster of the store."""
    targets: list[Target] = []
    seen: set[str] = set()
    wanted = list(names)
    if all_clusters or not wanted:
        clusters = store.clusters() if store is not None else []
        if not clusters and not wanted:
            where = f" {store.path}" if store is not None else ""
            left_out = store.left_out() if store is not None else []
            raise InputError(f"no clusters in store{where}: " + (left_out[0] if left_out else
                             "name a cluster or a bundle folder, or run `meshpki issue CLUSTER` first"))
        wanted = clusters + [n for n in wanted if n not in clusters]
    for name in wanted:
        if name in seen:
            continue
        seen.add(name)
        if store is not None and is_cluster_name(name) and store.has_cluster(name):
            targets.append(Target(name, store.load_bundle(name), "cluster", name))
        elif Path(name).is_dir():
            targets.append(Target(name, load_folder(Path(name), source=name), "folder"))
        else:
            where = f" in store {store.path}" if store is not None else ""
            revoked = _revoked_note(store, name)
            raise InputError(f"{name}: neither a cluster{where} nor a bundle folder{revoked}")
    return targets


def _revoked_note(store: Any, name: str) -> str:
    """Why a former member is no longer a target: `meshpki revoke` evicted it."""
    if store is None or not is_cluster_name(name):
        return ""
    from meshpki.crl import evicted_clusters

    entry = evicted_clusters(store).get(name)
    return f" (it was revoked on {entry.revoked_at} and left the mesh; its bundle is in history)" if entry else ""


def verify_targets(targets: Sequence[Target], now: dt.datetime | None = None,
                   warn_days: int = DEFAULT_WARN_DAYS,
                   trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN) -> VerifyReport:
    """Check each bundle once (one workload cert each), then every pair with them."""
    results = tuple(_scoped(t, checks.check_bundle(t.bundle, now=now, warn_days=warn_days, trust_domain=trust_domain,
                                                   target=t.label, cluster=t.cluster, guess=t.guess))
                    for t in targets)
    return VerifyReport(results, checks.check_pairs(results))


def _scoped(target: Target, report: BundleReport) -> BundleReport:
    """A folder's fix hints name store commands (for the cluster its L= names):
    say where they apply, so nobody replaces a healthy store bundle to fix a copy."""
    if target.kind != "folder":
        return report
    scoped = tuple(replace(f, fix=f"{f.fix} (in the meshpki store that made this folder's bundle; "
                                                "one made elsewhere is fixed where it was made)")
                   if "meshpki " in f.fix else f for f in report.findings)
    return replace(report, findings=scoped)


def live_label(source: SecretRef) -> str:
    return f"live:{source.label}"


def read_live(store, source: SecretRef) -> tuple[Target | None, tuple[checks.Finding, ...]]:
    """The live secret as a target, plus what comparing it with the store says.

    No secret at all is the worst case istiod has: it falls back to a
    self-signed root and the mesh splits, so it is an error, not a skip.
    """
    with source.connect() as conn:
        risk = conn.transport_risk
        secret = conn.read_secret(source.namespace, source.secret_name)
    target, findings = _judge_live(store, source, secret)
    if risk is not None:
        insecure = finding("insecure-connection", f"context {conn.context}: {risk}; what it read may be forged",
                           None, "give the cluster an https:// server and its certificate-authority-data in the kubeconfig")
        findings = (insecure, *findings)
    return target, findings


def _judge_live(store, source: SecretRef, secret) -> tuple[Target | None, tuple[checks.Finding, ...]]:
    where, label = source.where, live_label(source)
    if secret is None:
        return None, (finding("missing-secret",
                              f"context {source.context} has no {where} secret: istiod falls back to a "
                                     "self-signed root and the mesh is split", None,
                                     f"meshpki push {source.cluster} --context {source.context}"),)
    live = Bundle.from_secret_data(secret.data, label)
    target = Target(label, live, "live", *_hint_names(store, source))
    if ISTIO_GENERATED in secret.data:
        return target, (self_signed_finding(where, source.context, source.cluster),)
    if store is None or not is_cluster_name(source.cluster) or not store.has_cluster(source.cluster):
        return target, ()
    differ = differing_roles(store.load_bundle(source.cluster), live)
    if differ:
        return target, (finding("drift",
                                f"{where} differs from the store's bundle for {source.cluster} "
                                       f"({', '.join(differ)})", None,
                                       f"meshpki push {source.cluster} --context {source.context}, or find out "
                                       "who changed the secret"),)
    return target, (finding("matches-store",
                            f"{where} is byte for byte the store's bundle for {source.cluster}"),)


def _hint_names(store, source: SecretRef) -> tuple[str | None, str | None]:
    """(known, guess) cluster names for a live secret's fix hints: a cluster the fleet
    file or the store knows is known; a bare context name is only a guess."""
    if not is_cluster_name(source.cluster) or source.cluster == IN_CLUSTER_CONTEXT:
        return None, None
    known = source.cluster != source.context or (store is not None and store.has_cluster(source.cluster))
    return (source.cluster, None) if known else (None, source.cluster)


def self_signed_finding(where: str, context: str | None, cluster: str) -> checks.Finding:
    return finding("self-signed-ca", f"{where} in context {context} holds `{ISTIO_GENERATED}`: istiod's own "
                   "self-signed CA is in use there, not the mesh's shared root, so this cluster trusts only itself",
                   None, f"push the mesh's bundle (meshpki push {cluster} --context {context} "
                   "--allow-root-change), then restart istiod and the workloads")


def run(store, names: Sequence[str], all_clusters: bool = False, now: dt.datetime | None = None,
        warn_days: int = DEFAULT_WARN_DAYS, live: Sequence[SecretRef] = (),
        trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN) -> VerifyReport:
    """The whole of `meshpki verify`, minus printing. With only live sources,
    the store's clusters are not checked unless named or --all."""
    if warn_days < 0:
        raise InputError(f"--warn-days must be 0 or more, not {warn_days}")
    targets = resolve_targets(store, names, all_clusters) if (names or all_clusters or not live) else []
    extra: dict[str, tuple[checks.Finding, ...]] = {}
    absent: list[BundleReport] = []
    for source in live:
        try:
            target, findings = read_live(store, source)
        except MeshPKIError as exc:  # one cluster that cannot be read must not hide the others
            target, findings = None, (finding("unreadable-secret", str(exc)),)
        if target is None:
            absent.append(BundleReport(live_label(source), findings))
        else:
            targets.append(target)
            extra[target.label] = findings
    report = verify_targets(targets, now=now, warn_days=warn_days, trust_domain=trust_domain)
    results = tuple(replace(r, findings=r.findings + extra.get(r.target, ())) for r in report.results)
    covers_store = store is not None and (all_clusters or not (names or live))
    return VerifyReport(results + tuple(absent), report.pairs, tuple(store.left_out()) if covers_store else ())
