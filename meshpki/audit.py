"""`meshpki audit`: expiry, drift and presence of every CA certificate, for cron.

istiod reports the expiry of its own first certificate only, per cluster
(ISTIO.md); nothing compares clusters with each other or with the operator's
store. The audit reads the store (every root, every cluster's bundle) and each
named cluster's live `cacerts` secret, then grades every certificate as of
one moment (`--at`, else now) with monitoring codes: 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN, so cron, Nagios-style checks and Prometheus alerts can
all act on it.

The flow is read -> verify -> grade. Reading is I/O (the store, then the
clusters in a bounded thread pool, each with a deadline); verifying is
`checks.check_bundle`, once per distinct bundle; grading (`build_report`) is a
pure function of what was read and the moment `at`, so every boundary can be
tested without a clock or a cluster.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from meshpki import checks, profiles
from meshpki.bundle import (
    Bundle,
    differing_roles,
    fingerprint,
    serial_hex,
    subject_text,
)
from meshpki.errors import InputError, MeshPKIError
from meshpki.kube import DEFAULT_NAMESPACE, DEFAULT_SECRET, DEFAULT_TIMEOUT, SecretRef
from meshpki.render import iso
from meshpki.store import replace_file

DEFAULT_WARN_DAYS = 30
DEFAULT_CRIT_DAYS = 7
DEFAULT_PARALLEL = 32
IN_CLUSTER = "in-cluster"
CLUSTER_NAME_ENV = "MESHPKI_CLUSTER_NAME"

SOURCE_STORE = "store"
SOURCE_LIVE = "live"
ROLE_ROOT = "root"
ROLE_INTERMEDIATE = "intermediate"
ROLE_BUNDLE = "bundle"  # a row about a whole bundle or secret, not one certificate

DAY = dt.timedelta(days=1)
_MAX_NAMES = 5  # clusters named in one reason before "and N more"

# Verify findings that the audit grades itself, per certificate and as of --at;
# as verify errors they would double-count (and use "now" instead of --at).
_TIME_CODES = frozenset({"expired"})


class Grade(enum.IntEnum):
    """A monitoring grade; the value is the exit code (Nagios convention)."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def urgency(self) -> int:
        """Sort order: a broken certificate outranks a cluster we could not
        read, which outranks a warning."""
        return _URGENCY[self]


_URGENCY = {Grade.OK: 0, Grade.WARNING: 1, Grade.UNKNOWN: 2, Grade.CRITICAL: 3}


def worst(grades: Iterable[Grade]) -> Grade:
    """The most urgent grade (OK when there is none)."""
    return max(grades, key=lambda g: g.urgency, default=Grade.OK)


@dataclass(frozen=True)
class Condition:
    """One reason a row is graded as it is; a row may carry several."""

    grade: Grade
    code: str
    reason: str


# -- rows and the report --------------------------------------------------------

@dataclass(frozen=True)
class AuditRow:
    """One certificate (or, with role "bundle", one secret or bundle) and its grade.

    cluster is "" for the store's own roots; not_after and days_left are None
    for bundle rows; serial is lowercase hex without colons.
    """

    cluster: str
    source: str  # "store" or "live"
    role: str  # "root", "intermediate" or "bundle"
    subject: str
    serial: str
    not_after: dt.datetime | None
    days_left: int | None
    grade: Grade
    reason: str
    fingerprint: str
    codes: tuple[str, ...] = ()
    context: str | None = None

    def sort_key(self) -> tuple[Any, ...]:
        """Most urgent first, then fewest days left (rows without a date first)."""
        return (-self.grade.urgency, self.days_left is not None, self.days_left or 0,
                self.cluster, self.source, self.role, self.serial)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "context": self.context,
            "source": self.source,
            "role": self.role,
            "subject": self.subject,
            "serial": self.serial,
            "not_after": iso(self.not_after) if self.not_after else None,
            "days_left": self.days_left,
            "grade": self.grade.name,
            "reason": self.reason,
            "codes": list(self.codes),
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class AuditReport:
    """Every row, the status per cluster ("" = the store's roots) and the verdict."""

    rows: tuple[AuditRow, ...]
    clusters: Mapping[str, Grade]
    at: dt.datetime
    run_at: dt.datetime
    warn_days: int = DEFAULT_WARN_DAYS
    crit_days: int = DEFAULT_CRIT_DAYS
    roots: tuple[tuple[str, str, str], ...] = ()  # (cluster, source, fingerprint) of every trusted root

    @property
    def status(self) -> Grade:
        return worst(list(self.clusters.values()) + [r.grade for r in self.rows])

    @property
    def exit_code(self) -> int:
        """2 if anything is critical, else 3 if unknown, else 1 if a warning, else 0."""
        return int(self.status)

    @property
    def summary(self) -> dict[str, Any]:
        counts = {g.name.lower(): sum(1 for r in self.rows if r.grade is g) for g in
                  (Grade.CRITICAL, Grade.UNKNOWN, Grade.WARNING, Grade.OK)}
        return {
            "status": self.status.name,
            "exit_code": self.exit_code,
            "at": iso(self.at),
            "run_at": iso(self.run_at),
            "warn_days": self.warn_days,
            "crit_days": self.crit_days,
            "clusters": len([c for c in self.clusters if c]),
            "rows": len(self.rows),
            **counts,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "clusters": [{"cluster": name, "status": grade.name, "code": int(grade)}
                         for name, grade in sorted(self.clusters.items())],
            "rows": [r.to_dict() for r in self.rows],
        }


def _date(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- what was read ----------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    """One bundle as read, before grading: a store cluster or a live secret.

    Exactly one of bundle, error (could not read: UNKNOWN) and missing (the
    live secret does not exist, named "namespace/name") is set.
    """

    cluster: str
    source: str
    context: str | None = None
    bundle: Bundle | None = None
    error: str | None = None
    missing: str | None = None


@dataclass(frozen=True)
class StoreView:
    """The store's roots (current, and the new one during a rotation) and its clusters."""

    roots: tuple[x509.Certificate, ...] = ()
    clusters: tuple[Observation, ...] = ()
    root_error: str | None = None


class LiveTarget(SecretRef):
    """Where one cluster's live secret is read. context None: the pod's service account."""

    @property
    def label(self) -> str:
        return self.context or IN_CLUSTER


# -- time ---------------------------------------------------------------------------

def parse_at(text: str) -> dt.datetime:
    """--at: an ISO date (midnight UTC) or date-time; without an offset it is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"--at {text!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def check_thresholds(warn_days: int, crit_days: int) -> None:
    if warn_days < 0 or crit_days < 0:
        raise InputError("--warn-days and --crit-days must be 0 or more")
    if crit_days > warn_days:
        raise InputError(f"--crit-days ({crit_days}) must not exceed --warn-days ({warn_days})")


def days_left(not_after: dt.datetime, at: dt.datetime) -> int:
    """Whole days left, rounded down (negative once expired): what the DAYS column shows."""
    return math.floor((not_after - at) / DAY)


def _span(delta: dt.timedelta) -> str:
    days = abs(delta) // DAY
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
        return Condition(Grade.CRITICAL, "expired", f"expired {_span(left)} ago ({_date(not_after)})")
    if left < crit_days * DAY:
        return Condition(Grade.CRITICAL, "expires-critical",
                         f"expires in {_span(left)} ({_date(not_after)}), within --crit-days {crit_days}")
    if left < warn_days * DAY:
        return Condition(Grade.WARNING, "expires-soon",
                         f"expires in {_span(left)} ({_date(not_after)}), within --warn-days {warn_days}")
    return Condition(Grade.OK, "ok", "")


# -- reading ---------------------------------------------------------------------------

def read_store(store: Any) -> StoreView | None:
    """The store's roots and bundles; None when there is no store to audit
    (a pod, a machine that only monitors). Audit never writes or locks it."""
    if store is None or not (store.has_root() or store.clusters()):
        return None
    roots: list[x509.Certificate] = []
    root_error = None
    try:
        if store.has_root():
            from meshpki.bundle import parse_certs

            roots += parse_certs(store.root_cert_pem(), str(store.root_dir / "root-cert.pem"))
        if store.has_rotation():
            from meshpki import rotate

            roots.append(rotate.new_root_cert(store)[0])
    except MeshPKIError as exc:
        root_error = str(exc)
    clusters = []
    for name in store.clusters():
        try:
            clusters.append(Observation(name, SOURCE_STORE, bundle=store.load_bundle(name)))
        except MeshPKIError as exc:
            clusters.append(Observation(name, SOURCE_STORE, error=str(exc)))
    return StoreView(tuple(_unique_certs(roots)), tuple(clusters), root_error)


def read_live(target: LiveTarget) -> Observation:
    """One cluster's live secret; any failure to read it becomes an UNKNOWN observation."""
    try:
        with target.connect() as conn:
            secret = conn.read_secret(target.namespace, target.secret_name)
    except MeshPKIError as exc:
        return Observation(target.cluster, SOURCE_LIVE, target.label, error=str(exc))
    if secret is None:
        return Observation(target.cluster, SOURCE_LIVE, target.label, missing=target.where)
    bundle = Bundle.from_secret_data(secret.data, f"live:{target.label}")
    return Observation(target.cluster, SOURCE_LIVE, target.label, bundle=bundle)


def read_all_live(targets: Sequence[LiveTarget], parallel: int = DEFAULT_PARALLEL,
                  progress: Callable[[int, int], None] | None = None,
                  reader: Callable[[LiveTarget], Observation] = read_live) -> list[Observation]:
    """Read every cluster in a bounded pool, so 100 clusters cost about
    100/parallel times one. Each cluster gets `target.timeout` seconds from the
    moment a worker takes it; one that has not answered by then is UNKNOWN and
    no longer waited for (its request still ends by the client's own timeout)."""
    if not targets:
        return []
    total = len(targets)
    results: dict[int, Observation] = {}
    started: dict[int, float] = {}
    lock = threading.Lock()

    def run(index: int) -> Observation:
        with lock:
            started[index] = time.monotonic()
        return reader(targets[index])

    def finished(index: int, observation: Observation) -> None:
        results[index] = observation
        if progress is not None:
            progress(len(results), total)

    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, total)), thread_name_prefix="meshpki-audit")
    try:
        futures: dict[Future[Observation], int] = {pool.submit(run, i): i for i in range(total)}
        pending = set(futures)
        while pending:
            now = time.monotonic()
            with lock:
                begun = dict(started)
            deadlines = {}
            for fut in list(pending):
                index = futures[fut]
                if index not in begun or fut.done():
                    continue
                deadline = begun[index] + targets[index].timeout
                if now >= deadline:
                    pending.discard(fut)
                    finished(index, _timed_out(targets[index]))
                else:
                    deadlines[fut] = deadline
            if not pending:
                break
            wake = min(deadlines.values(), default=now + 0.25) - now
            done, pending = wait(pending, timeout=min(max(wake, 0.01), 0.25), return_when=FIRST_COMPLETED)
            for fut in done:
                finished(futures[fut], fut.result())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [results[i] for i in range(total)]


def _timed_out(target: LiveTarget) -> Observation:
    return Observation(target.cluster, SOURCE_LIVE, target.label,
                       error=f"context {target.label}: no answer within {target.timeout:g}s (the per-cluster "
                             "timeout); check the API server and the network, or raise --timeout")


# -- verifying ---------------------------------------------------------------------

def _content_key(bundle: Bundle) -> bytes:
    """Bundles with the same bytes verify the same: a live secret that matches
    the store is checked once."""
    digest = hashlib.sha256(bundle.form.encode())
    for name in sorted(bundle.files):
        digest.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(bundle.files[name]).digest())
    for name in sorted(bundle.unreadable):
        digest.update(b"\1" + name.encode())
    return digest.digest()


def structural_errors(bundle: Bundle) -> tuple[checks.Finding, ...]:
    """What makes a bundle fail verify now, apart from expiry (graded per
    certificate, as of --at). The workload handshake uses the system clock."""
    report = checks.check_bundle(bundle, warn_days=0)
    return tuple(f for f in report.findings if f.severity is checks.Severity.ERROR and f.code not in _TIME_CODES)


class Verifier:
    """Verifies each distinct bundle once (a live secret that matches the store
    is the same bytes) and remembers the answer; thread-safe."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or max(2, os.cpu_count() or 2)
        self._results: dict[bytes, tuple[checks.Finding, ...]] = {}
        self._lock = threading.Lock()

    def verify_many(self, bundles: Iterable[Bundle]) -> None:
        """Verify in parallel: the handshake and signatures release the GIL for part of their work."""
        todo: dict[bytes, Bundle] = {}
        with self._lock:
            for bundle in bundles:
                key = _content_key(bundle)
                if key not in self._results:
                    todo.setdefault(key, bundle)
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=min(self.workers, len(todo)), thread_name_prefix="meshpki-verify") as pool:
            found = dict(zip(todo, pool.map(structural_errors, todo.values()), strict=False))
        with self._lock:
            self._results.update(found)

    def __call__(self, bundle: Bundle) -> tuple[checks.Finding, ...]:
        key = _content_key(bundle)
        with self._lock:
            if key in self._results:
                return self._results[key]
        findings = structural_errors(bundle)
        with self._lock:
            return self._results.setdefault(key, findings)


# -- grading (pure) ------------------------------------------------------------------

def _parse(data: bytes | None) -> list[x509.Certificate]:
    """Certificates of one PEM file; a damaged file yields none (verify reports it)."""
    if not data or b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except Exception:  # damaged PEM: the fails-verify row explains it
        return []


def _unique_certs(certs: Iterable[x509.Certificate]) -> list[x509.Certificate]:
    seen: dict[str, x509.Certificate] = {}
    for cert in certs:
        seen.setdefault(fingerprint(cert), cert)
    return list(seen.values())


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
    shown = ", ".join(n or "(store)" for n in names[:_MAX_NAMES])
    return shown + (f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else "")


@dataclass
class _CertEntry:
    cluster: str
    source: str
    role: str
    cert: x509.Certificate
    context: str | None
    conditions: list[Condition] = field(default_factory=list)


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
        self.due: dict[tuple[str, str, str], list[tuple[str, dt.datetime]]] = {}
        self.roots: dict[tuple[str, str, str], None] = {}

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
        for root in view.roots:
            self.store_root_fps.add(fingerprint(root))
            self.cert("", SOURCE_STORE, ROLE_ROOT, root, None)
        if view.root_error:
            self.bundle("", SOURCE_STORE, None, Condition(Grade.UNKNOWN, "unreadable", view.root_error))
        for obs in view.clusters:
            self.observation(obs)

    def observation(self, obs: Observation, store_bundle: Bundle | None = None) -> None:
        if obs.error is not None:
            self.bundle(obs.cluster, obs.source, obs.context, Condition(Grade.UNKNOWN, "unreadable", obs.error))
            return
        if obs.bundle is None:
            push = f"meshpki push {obs.cluster}" + (f" --context {obs.context}" if obs.context != IN_CLUSTER else "")
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
        errors = self.errors_of(bundle)
        if errors:
            first = errors[0]
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            what = "live secret" if obs.source == SOURCE_LIVE else "store bundle"
            self.bundle(obs.cluster, obs.source, obs.context, Condition(
                Grade.CRITICAL, "fails-verify", f"{what} fails verify: {first.code}: {first.message}{more}"))
        if store_bundle is not None:
            differ = differing_roles(store_bundle, bundle)
            if differ:
                self.bundle(obs.cluster, obs.source, obs.context, Condition(
                    Grade.WARNING, "drift", f"live secret differs from the store's bundle ({', '.join(differ)}); "
                    f"meshpki push {obs.cluster} --context {obs.context}, or find out who changed it"))
        self._relations(obs)

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
                f"outlives its root '{subject_text(anchor)}' (root ends {_date(root_end)}); it is useless after "
                "that: plan the root rotation (meshpki rotate-root begin)"))
        # DESIGN.md: a root that expires less than --warn-days after one of its
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
                f"expires {_date(due_cert.cert.not_valid_after_utc)}, less than --warn-days {self.warn_days} after "
                f"the intermediate of {_names(clusters)} is due for rotation ({_date(first_due)}); rotate the "
                "root first (meshpki rotate-root begin)"))
        rows = []
        for (_, _, fp), entry in self.certs.items():
            end = entry.cert.not_valid_after_utc
            conditions = [grade_expiry(end, self.at, self.warn_days, self.crit_days), *entry.conditions]
            rows.append(_row(entry.cluster, entry.source, entry.role, subject_text(entry.cert),
                             serial_hex(entry.cert), end, days_left(end, self.at), fp, conditions, entry.context))
        for bundle in self.bundles.values():
            rows.append(_row(bundle.cluster, bundle.source, ROLE_BUNDLE, "", "", None, None, "", bundle.conditions,
                             bundle.context))
        return sorted(rows, key=AuditRow.sort_key)


def _row(cluster: str, source: str, role: str, subject: str, serial: str, not_after: dt.datetime | None,
         left: int | None, fp: str, conditions: Sequence[Condition], context: str | None) -> AuditRow:
    bad = sorted((c for c in conditions if c.grade is not Grade.OK), key=lambda c: -c.grade.urgency)
    return AuditRow(cluster, source, role, subject, serial, not_after, left, worst(c.grade for c in conditions),
                    "; ".join(c.reason for c in bad), fp, tuple(c.code for c in bad), context)


def build_report(store: StoreView | None, live: Sequence[Observation], at: dt.datetime,
                 warn_days: int = DEFAULT_WARN_DAYS, crit_days: int = DEFAULT_CRIT_DAYS,
                 errors_of: Callable[[Bundle], Sequence[checks.Finding]] | None = None,
                 run_at: dt.datetime | None = None) -> AuditReport:
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
    grader.shared_roots(live)
    rows = grader.rows()
    clusters: dict[str, Grade] = {}
    for obs in list(store.clusters if store else ()) + list(live):
        clusters.setdefault(obs.cluster, Grade.OK)
    for row in rows:
        clusters[row.cluster] = worst([clusters.get(row.cluster, Grade.OK), row.grade])
    roots = tuple(sorted(grader.roots))
    return AuditReport(tuple(rows), clusters, at, run_at or profiles.utcnow(), warn_days, crit_days, roots)


# -- the whole audit -------------------------------------------------------------------

def in_pod(kubeconfig: str | None = None) -> bool:
    """No kubeconfig file anywhere and a Kubernetes service in the environment:
    kube.Cluster.connect will use the pod's service account."""
    from meshpki.kube import kubeconfig_paths

    paths, explicit = kubeconfig_paths(kubeconfig)
    return (not explicit and not any(os.path.exists(p) for p in paths)
            and bool(os.environ.get("KUBERNETES_SERVICE_HOST")))


def resolve_targets(fleet: Any, contexts: Sequence[str] = (), all_contexts: bool = False,
                    kubeconfig: str | None = None, namespace: str | None = None, secret_name: str | None = None,
                    timeout: float = DEFAULT_TIMEOUT, cluster_name: str | None = None) -> list[LiveTarget]:
    """Which live secrets to read: --context/--all-contexts, else the fleet
    file's clusters, else (inside a pod) the pod's own cluster, else none.
    A context's cluster name comes from the fleet file, else it is the context."""
    common: dict[str, Any] = {"namespace": namespace or fleet.namespace or DEFAULT_NAMESPACE,
                              "secret_name": secret_name or fleet.secret_name or DEFAULT_SECRET, "timeout": timeout}
    default_kubeconfig = kubeconfig or fleet.kubeconfig
    names = list(dict.fromkeys(contexts))
    if all_contexts:
        from meshpki import kube

        names += [c for c in kube.list_contexts(default_kubeconfig) if c not in names]
    if names:
        targets = []
        for ctx in names:
            cluster = fleet.cluster_for_context(ctx)
            entry = fleet.cluster(cluster)
            own = entry.kubeconfig if entry is not None and entry.context == ctx else None
            targets.append(LiveTarget(cluster, ctx, own or default_kubeconfig, **common))
        return targets
    if fleet.clusters:
        return [LiveTarget(c.name, c.context, c.kubeconfig or default_kubeconfig, **common) for c in fleet.clusters]
    if in_pod(default_kubeconfig):
        return [LiveTarget(cluster_name or IN_CLUSTER, None, None, **common)]
    return []


def run(store: Any, targets: Sequence[LiveTarget], at: dt.datetime | None = None,
        warn_days: int = DEFAULT_WARN_DAYS, crit_days: int = DEFAULT_CRIT_DAYS, parallel: int = DEFAULT_PARALLEL,
        progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """The whole of `meshpki audit`, minus printing: read, verify, grade.

    The store is read and its bundles verified in a side thread while the
    clusters are being read: the CPU work fills the network wait.
    """
    check_thresholds(warn_days, crit_days)
    run_at = profiles.utcnow()
    verifier = Verifier()

    def store_side() -> StoreView | None:
        view = read_store(store)
        if view is not None:
            verifier.verify_many(o.bundle for o in view.clusters if o.bundle is not None)
        return view

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshpki-store") as side:
        store_future = side.submit(store_side)
        if not targets and store_future.result() is None:
            where = f" at {store.path}" if store is not None else ""
            raise InputError(f"nothing to audit: no store{where} and no cluster; pass --store, --context, "
                             "--all-contexts or a fleet file with clusters (--config)")
        live = read_all_live(targets, parallel, progress)
        view = store_future.result()
    verifier.verify_many(o.bundle for o in live if o.bundle is not None)
    return build_report(view, live, at or run_at, warn_days, crit_days, verifier, run_at)


def write_textfile(path: Path, text: str) -> None:
    """Write the exposition for node_exporter's textfile collector, which may
    read at any moment: atomically, and mode 0644 whatever the umask
    (node_exporter runs as another user; prometheus_client's
    write_to_textfile leaves the mode to the umask)."""
    path = Path(path)
    try:
        replace_file(path, text.encode(), 0o644)
    except OSError as exc:
        raise MeshPKIError(f"cannot write --textfile {path}: {exc.strerror or exc}") from None
