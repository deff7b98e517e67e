"""The pure grader: what was read, and the moment `at`, in; rows and a
report out. No clock, no network, no store: every boundary is testable.

Verifying a bundle is the one outside call (`errors_of`, by default a
Verifier); the audit verifies every distinct bundle before it grades.
"""

from __future__ import annotations

import datetime as dt
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from meshpki import checks, crl, crlcheck, pem, profiles, public
from meshpki.audit.model import (
    DEFAULT_CRIT_DAYS,
    DEFAULT_WARN_DAYS,
    ROLE_BUNDLE,
    ROLE_CRL,
    ROLE_INTERMEDIATE,
    ROLE_REMOTE_SECRET,
    ROLE_ROOT,
    ROLE_ROOT_NEXT,
    SOURCE_LIVE,
    SOURCE_SIGNED,
    SOURCE_STORE,
    AuditReport,
    AuditRow,
    Condition,
    Grade,
    MeshLayout,
    Observation,
    StoreView,
    check_thresholds,
    worst,
)
from meshpki.audit.verifier import Verifier
from meshpki.bundle import Bundle, differing_roles, fingerprint, serial_hex, subject_text
from meshpki.dates import DAY, readable
from meshpki.errors import MeshPKIError
from meshpki.findings import first_of, shortlist
from meshpki.kube import IN_CLUSTER_CONTEXT

_MAX_NAMES = 5  # clusters named in one reason before "and N more"


def days_left(not_after: dt.datetime, at: dt.datetime) -> int:
    """Whole days left, rounded down (negative once expired): what the DAYS column shows."""
    return math.floor((not_after - at) / DAY)


def _span(delta: dt.timedelta) -> str:
    """Whole days, counted like the DAYS column: 4.5 days ago is -5 there, so "5 days ago" here."""
    days = delta // DAY if delta >= dt.timedelta(0) else -(delta // DAY)
    if days == 0:
        return "less than a day"
    return f"{days} day{'s' if days != 1 else ''}"


def grade_expiry(not_after: dt.datetime, at: dt.datetime, warn_days: int, crit_days: int) -> Condition:
    """Expired, or fewer than crit/warn days left, as of `at`.

    notAfter itself is still valid (RFC 5280 4.1.2.5: the period is
    inclusive), so "expired" starts one instant later. "Within N days" means
    fewer than N whole days left: the grade follows the DAYS column, and matches
    `verify --warn-days` (checks.py expiring-soon).
    """
    left = not_after - at
    if left < dt.timedelta(0):
        return Condition(Grade.CRITICAL, "expired", f"expired {_span(left)} ago ({readable(not_after)})")
    if left < crit_days * DAY:
        return Condition(Grade.CRITICAL, "expires-critical",
                         f"expires in {_span(left)} ({readable(not_after)}), within --crit-days {crit_days}")
    if left < warn_days * DAY:
        return Condition(Grade.WARNING, "expires-soon",
                         f"expires in {_span(left)} ({readable(not_after)}), within --warn-days {warn_days}")
    return Condition(Grade.OK, "ok", "")


def grade_next_update(next_update: dt.datetime, at: dt.datetime, warn_days: int, crit_days: int) -> Condition:
    """A CRL's nextUpdate graded like a notAfter: once it passes, proxies
    reject every peer whose chain the CRL covers (docs/revocation.md)."""
    found = grade_expiry(next_update, at, warn_days, crit_days)
    if found.grade is Grade.OK:
        return found
    reason = found.reason.replace("expired", "stale since", 1).replace("expires", "goes stale", 1)
    return Condition(found.grade, f"crl-{found.code}",
                     f"CRL {reason}; {crlcheck.RENEW}")


def _crl_id(one: x509.CertificateRevocationList) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    digest = hashes.Hash(hashes.SHA256())
    digest.update(one.public_bytes(Encoding.DER))
    return digest.finalize().hex()


def _parse(data: bytes | None) -> list[x509.Certificate]:
    """Certificates of one PEM file as istiod reads root-cert.pem: damaged blocks
    are skipped (the fails-verify row explains them)."""
    return list(pem.read_certs(data, pem.Policy.SKIP).certs) if data else []


def bundle_certificates(bundle: Bundle) -> list[tuple[str, x509.Certificate]]:
    """Every distinct certificate of a bundle with its role: ca-cert.pem and the
    issuers in cert-chain.pem are intermediates, root-cert.pem holds roots (a
    self-signed cert in the chain is a root too)."""
    roots = _parse(bundle.root_cert)
    root_fps = {fingerprint(c) for c in roots}
    found: list[tuple[str, x509.Certificate]] = []
    seen: set[str] = set()
    for cert in _parse(bundle.ca_cert) + _parse(bundle.cert_chain) + roots:
        fp = fingerprint(cert)
        if fp in seen:
            continue
        seen.add(fp)
        is_root = fp in root_fps or (cert.subject == cert.issuer and checks.is_self_signed(cert))
        found.append((ROLE_ROOT if is_root else ROLE_INTERMEDIATE, cert))
    return found


def _names(names: Sequence[str]) -> str:
    return shortlist([n or "(store)" for n in names], _MAX_NAMES)


@dataclass
class _CertEntry:
    cluster: str
    source: str
    role: str
    cert: x509.Certificate
    context: str | None
    conditions: list[Condition] = field(default_factory=list)


@dataclass
class _CrlEntry:
    cluster: str
    source: str
    crl: x509.CertificateRevocationList
    context: str | None


@dataclass
class _BundleEntry:
    cluster: str
    source: str
    context: str | None
    conditions: list[Condition] = field(default_factory=list)


class _Grader:
    """Collects certificates and conditions, then turns them into rows."""

    def __init__(self, at: dt.datetime, warn_days: int, crit_days: int,
                 errors_of: Callable[[Bundle], Sequence[checks.Finding]]) -> None:
        self.at, self.warn_days, self.crit_days, self.errors_of = at, warn_days, crit_days, errors_of
        self.certs: dict[tuple[str, str, str], _CertEntry] = {}
        self.bundles: dict[tuple[str, str], _BundleEntry] = {}
        self.store_root_fps: set[str] = set()
        self.next_root_fp: str | None = None  # a root rotation's new root: its rows say root-next
        self.due: dict[tuple[str, str, str], list[tuple[str, dt.datetime]]] = {}
        self.roots: dict[tuple[str, str, str], None] = {}
        self.crls: dict[tuple[str, str, str], _CrlEntry] = {}
        self.store_crl_ids: set[str] = set()
        self.remote_rows: list[AuditRow] = []
        self.remote_tokens: list[tuple[str, str, dt.datetime]] = []

    def cert(self, cluster: str, source: str, role: str, cert: x509.Certificate,
             context: str | None) -> tuple[str, str, str]:
        key = (cluster, source, fingerprint(cert))
        self.certs.setdefault(key, _CertEntry(cluster, source, role, cert, context))
        if role == ROLE_ROOT:
            self.roots[key] = None
        return key

    def bundle(self, cluster: str, source: str, context: str | None, condition: Condition) -> None:
        entry = self.bundles.setdefault((cluster, source), _BundleEntry(cluster, source, context))
        entry.conditions.append(condition)

    # -- sources --------------------------------------------------------------
    def store(self, view: StoreView) -> None:
        if view.next_root is not None:
            self.next_root_fp = fingerprint(view.next_root)
        for root in view.roots:
            self.store_root_fps.add(fingerprint(root))
            self.cert("", SOURCE_STORE, ROLE_ROOT, root, None)
        for one in view.crls:
            self.store_crl_ids.add(_crl_id(one))
            self.crls.setdefault(("", SOURCE_STORE, _crl_id(one)), _CrlEntry("", SOURCE_STORE, one, None))
        if view.root_error:
            self.bundle("", SOURCE_STORE, None, Condition(Grade.UNKNOWN, "unreadable", view.root_error))
        for obs in view.clusters:
            self.observation(obs)
        for cluster, cert in view.signed:
            self.cert(cluster, SOURCE_SIGNED, ROLE_INTERMEDIATE, cert, None)

    def observation(self, obs: Observation, store_bundle: Bundle | None = None) -> None:
        if obs.insecure is not None:
            self.bundle(obs.cluster, obs.source, obs.context, Condition(
                Grade.WARNING, "insecure-connection", f"read over an untrusted connection: {obs.insecure}; what it "
                "says may be forged: give the cluster an https:// server and its certificate-authority-data"))
        if obs.error is not None:
            self.bundle(obs.cluster, obs.source, obs.context, Condition(Grade.UNKNOWN, "unreadable", obs.error))
            return
        if obs.bundle is None:
            push = f"meshpki push {obs.cluster}" + (f" --context {obs.context}" if obs.context != IN_CLUSTER_CONTEXT else "")
            self.bundle(obs.cluster, obs.source, obs.context, Condition(
                Grade.CRITICAL, "missing-secret",
                f"no {obs.missing} secret: istiod falls back to a self-signed root and the mesh is split; {push}"))
            return
        bundle = obs.bundle
        for role, cert in bundle_certificates(bundle):
            fp = fingerprint(cert)
            if obs.source == SOURCE_STORE and fp in self.store_root_fps:
                continue  # the store's own roots have their row (cluster "")
            self.cert(obs.cluster, obs.source, role, cert, obs.context)
        if obs.self_signed:
            self.bundle(obs.cluster, obs.source, obs.context, Condition(
                Grade.CRITICAL, "self-signed-ca", "the live cacerts holds `istio-generated`: istiod's own "
                "self-signed CA is in use, not the mesh's shared root; "
                f"meshpki push {obs.cluster} --context {obs.context} --allow-root-change"))
            return
        self._crls(obs, bundle)
        errors = self.errors_of(bundle)
        if errors:
            what = "live secret" if obs.source == SOURCE_LIVE else "store bundle"
            self.bundle(obs.cluster, obs.source, obs.context, Condition(
                Grade.CRITICAL, "fails-verify", f"{what} fails verify: {first_of(errors)}"))
        if store_bundle is not None:
            ours = public.without_key(store_bundle) if public.is_public(bundle) else store_bundle
            differ = differing_roles(ours, bundle)
            if differ:
                self.bundle(obs.cluster, obs.source, obs.context, Condition(
                    Grade.WARNING, "drift", f"live secret differs from the store's bundle ({', '.join(differ)}); "
                    f"meshpki push {obs.cluster} --context {obs.context}, or find out who changed it"))
        self._relations(obs)

    def _crls(self, obs: Observation, bundle: Bundle) -> None:
        """Every CRL of ca-crl.pem gets a row; a store bundle's copy of a root's
        CRL is the store's own (cluster "")."""
        if bundle.ca_crl is None:
            return
        try:
            found = crl.parse_crls(bundle.ca_crl, "ca-crl.pem")
        except MeshPKIError as exc:
            self.bundle(obs.cluster, obs.source, obs.context, Condition(
                Grade.CRITICAL, "crl-unparsable", f"{exc}: istiod refuses the whole bundle"))
            return
        for one in found:
            ident = _crl_id(one)
            if obs.source == SOURCE_STORE and ident in self.store_crl_ids:
                continue
            self.crls.setdefault((obs.cluster, obs.source, ident), _CrlEntry(obs.cluster, obs.source, one, obs.context))

    def _relations(self, obs: Observation) -> None:
        """The intermediate against the root its path ends in: outliving it, or
        leaving the root too little time to be rotated after it."""
        bundle = obs.bundle
        assert bundle is not None
        leaf = _parse(bundle.ca_cert)[:1]
        roots = _parse(bundle.root_cert)
        if not leaf or not roots:
            return
        ca = leaf[0]
        path = checks.build_path(ca, _parse(bundle.cert_chain), roots)
        if not path.ok or path.path[-1] is ca:
            return
        anchor = path.path[-1]
        ca_end, root_end = ca.not_valid_after_utc, anchor.not_valid_after_utc
        ca_key = (obs.cluster, obs.source, fingerprint(ca))
        if ca_end > root_end and ca_key in self.certs:
            self.certs[ca_key].conditions.append(Condition(
                Grade.WARNING, "outlives-root",
                f"outlives its root '{subject_text(anchor)}' (root ends {readable(root_end)}); it is useless after "
                "that: plan the root rotation (meshpki rotate-root begin)"))
        # docs/design.md: a root that expires less than --warn-days after one of its
        # intermediates would be due for rotation (that is, enters --warn-days).
        due = ca_end - self.warn_days * DAY
        if root_end - due < self.warn_days * DAY:
            fp = fingerprint(anchor)
            if obs.source == SOURCE_STORE and fp in self.store_root_fps:
                root_key = ("", SOURCE_STORE, fp)
            else:
                root_key = self.cert(obs.cluster, obs.source, ROLE_ROOT, anchor, obs.context)
            self.due.setdefault(root_key, []).append((obs.cluster, due))

    def shared_roots(self, live: Sequence[Observation]) -> None:
        """Clusters whose live root sets are disjoint cannot do mTLS with each other."""
        trusted: list[tuple[Observation, frozenset[str]]] = []
        for obs in live:
            if obs.bundle is not None:
                fps = frozenset(fingerprint(c) for c in _parse(obs.bundle.root_cert))
                if fps:
                    trusted.append((obs, fps))
        for obs, fps in trusted:
            apart = sorted({other.cluster for other, theirs in trusted
                            if other.cluster != obs.cluster and not fps & theirs})
            if apart:
                self.bundle(obs.cluster, obs.source, obs.context, Condition(
                    Grade.CRITICAL, "no-shared-root",
                    f"shares no root with {_names(apart)}: cross-cluster mTLS between them fails (UNKNOWN_CA); "
                    "issue every intermediate from one root, or trust both roots everywhere"))

    def remote_secrets(self, obs: Observation, layout: MeshLayout) -> None:
        """A primary's remote secrets: each token's expiry (JWT exp), a secret for
        a cluster the fleet file does not know, a fleet remote without one."""
        found = obs.remote_secrets
        expected = layout.remotes.get(obs.cluster, ())
        if found is None:
            return
        if found.error is not None:
            if expected or found.status != 403:  # a 403 where no remote secret is expected: not a primary
                self.bundle(obs.cluster, obs.source, obs.context, Condition(
                    Grade.UNKNOWN, "remote-secrets-unreadable", f"cannot list remote secrets: {found.error}"))
            return
        for token in found.tokens:
            conditions = []
            if token.error is not None:
                conditions.append(Condition(Grade.WARNING, "unreadable-token", f"{token.error}; "
                                            + remote_secret_command(token.cluster, obs, layout, token.server, True)))
            elif token.expires is None:
                conditions.append(Condition(Grade.OK, "ok", ""))
            else:
                self.remote_tokens.append((obs.cluster, token.cluster, token.expires))
                expiry = grade_expiry(token.expires, self.at, self.warn_days, self.crit_days)
                if expiry.grade is not Grade.OK:
                    rotate = remote_secret_command(token.cluster, obs, layout, token.server, rotate=True)
                    expiry = Condition(expiry.grade, expiry.code, f"token {expiry.reason}; istiod loses "
                                       f"{token.cluster} then: {rotate}")
                conditions.append(expiry)
            if layout.clusters and token.cluster not in layout.clusters:
                conditions.append(Condition(Grade.WARNING, "remote-not-in-fleet", (
                    f"istiod reads {token.cluster}, which the fleet file does not list; add it to the fleet "
                    f"file, or delete {token.secret} if that cluster is gone")))
            end = token.expires
            self.remote_rows.append(_row(obs.cluster, obs.source, ROLE_REMOTE_SECRET,
                                         f"{token.secret} -> {token.cluster}", "", end,
                                         days_left(end, self.at) if end else None, "", conditions, obs.context))
        have = {t.cluster for t in found.tokens}
        for name in expected:
            if name not in have:
                self.bundle(obs.cluster, obs.source, obs.context, Condition(
                    Grade.WARNING, "remote-secret-missing",
                    f"the fleet file says this primary reads {name}, but it has no remote secret for it: "
                    f"{remote_secret_command(name, obs, layout)}"))

    # -- rows ----------------------------------------------------------------------
    def rows(self) -> list[AuditRow]:
        for key, dues in self.due.items():
            due_cert = self.certs.get(key)
            if due_cert is None:
                continue
            clusters = sorted({c for c, _ in dues})
            first_due = min(d for _, d in dues)
            due_cert.conditions.append(Condition(
                Grade.WARNING, "root-before-rotation",
                f"expires {readable(due_cert.cert.not_valid_after_utc)}, less than --warn-days {self.warn_days} after "
                f"the intermediate of {_names(clusters)} is due for rotation ({readable(first_due)}); rotate the "
                "root first (meshpki rotate-root begin)"))
        rows = []
        for (_, _, fp), entry in self.certs.items():
            end = entry.cert.not_valid_after_utc
            conditions = [grade_expiry(end, self.at, self.warn_days, self.crit_days), *entry.conditions]
            role = ROLE_ROOT_NEXT if entry.role == ROLE_ROOT and fp == self.next_root_fp else entry.role
            rows.append(_row(entry.cluster, entry.source, role, subject_text(entry.cert),
                             serial_hex(entry.cert), end, days_left(end, self.at), fp, conditions, entry.context))
        for (_, _, ident), listed in self.crls.items():
            next_update = listed.crl.next_update_utc
            if next_update is None:
                conditions = [Condition(Grade.CRITICAL, "crl-no-next-update",
                                        "CRL without nextUpdate: proxies treat it as stale; meshpki crl renew")]
            else:
                conditions = [grade_next_update(next_update, self.at, self.warn_days, self.crit_days)]
            number = crl.crl_number(listed.crl)
            rows.append(_row(listed.cluster, listed.source, ROLE_CRL, listed.crl.issuer.rfc4514_string(),
                             "" if number is None else format(number, "x"), next_update,
                             None if next_update is None else days_left(next_update, self.at), ident, conditions,
                             listed.context))
        for bundle in self.bundles.values():
            rows.append(_row(bundle.cluster, bundle.source, ROLE_BUNDLE, "", "", None, None, "", bundle.conditions,
                             bundle.context))
        return sorted(rows + self.remote_rows, key=AuditRow.sort_key)


def remote_secret_command(remote: str, obs: Observation, layout: MeshLayout, server: str | None = None,
                          rotate: bool = False) -> str:
    """The remote-secret command that makes (rotate: renews) `remote`'s secret on
    the primary read as `obs`, runnable as printed: the fleet file the audit
    read (it names the remote's context), else the kubeconfig context that
    reaches the remote's `server` when it is not the cluster's name; and the
    primary's context. The token's kind and lifetime need no option:
    remote-secret keeps the ones the secret has."""
    words = ["meshpki", "remote-secret", remote]
    context = None if remote in layout.contexts else layout.server_contexts.get(server or "")
    if context and context != remote:
        words += ["--context", context]
    primary = obs.context if obs.context not in (None, IN_CLUSTER_CONTEXT) else layout.contexts.get(obs.cluster)
    if primary:
        words += ["--primary-context", primary]
    if layout.config:
        words += ["--config", layout.config]
    if rotate:
        words.append("--rotate")
    return shlex.join(words)


def _row(cluster: str, source: str, role: str, subject: str, serial: str, not_after: dt.datetime | None,
         left: int | None, fp: str, conditions: Sequence[Condition], context: str | None) -> AuditRow:
    bad = sorted((c for c in conditions if c.grade is not Grade.OK), key=lambda c: -c.grade.urgency)
    return AuditRow(cluster, source, role, subject, serial, not_after, left, worst(c.grade for c in conditions),
                    "; ".join(c.reason for c in bad), fp, tuple(c.code for c in bad), context)


def build_report(store: StoreView | None, live: Sequence[Observation], at: dt.datetime,
                 warn_days: int = DEFAULT_WARN_DAYS, crit_days: int = DEFAULT_CRIT_DAYS,
                 errors_of: Callable[[Bundle], Sequence[checks.Finding]] | None = None,
                 run_at: dt.datetime | None = None, layout: MeshLayout | None = None) -> AuditReport:
    """Grade everything read, as of `at` (timezone-aware). Pure apart from
    `errors_of` (default: verify each bundle now)."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    check_thresholds(warn_days, crit_days)
    grader = _Grader(at, warn_days, crit_days, errors_of or Verifier())
    store_bundles: dict[str, Bundle] = {}
    if store is not None:
        grader.store(store)
        store_bundles = {o.cluster: o.bundle for o in store.clusters if o.bundle is not None}
    for obs in live:
        grader.observation(obs, store_bundles.get(obs.cluster))
        grader.remote_secrets(obs, layout or MeshLayout())
    grader.shared_roots(live)
    rows = grader.rows()
    clusters: dict[str, Grade] = {}
    for obs in list(store.clusters if store else ()) + list(live):
        clusters.setdefault(obs.cluster, Grade.OK)
    for row in rows:
        clusters[row.cluster] = worst([clusters.get(row.cluster, Grade.OK), row.grade])
    roots = tuple(sorted(grader.roots))
    soonest: dict[tuple[str, str], dt.datetime] = {}  # one sample per (primary, cluster)
    for primary, remote, expires in grader.remote_tokens:
        soonest[(primary, remote)] = min(expires, soonest.get((primary, remote), expires))
    return AuditReport(tuple(rows), clusters, at, run_at or profiles.utcnow(), warn_days, crit_days, roots,
                       tuple((p, r, e) for (p, r), e in sorted(soonest.items())), store.notes if store else ())
