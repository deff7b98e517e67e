"""What the audit reads and what it reports: grades, rows, the report, and
the observations the grader works from. No I/O, no clock."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from meshpki.bundle import Bundle
from meshpki.dates import iso
from meshpki.errors import InputError
from meshpki.limits import DEFAULT_CRIT_DAYS, DEFAULT_WARN_DAYS

CLUSTER_NAME_ENV = "MESHPKI_CLUSTER_NAME"

SOURCE_STORE = "store"
SOURCE_LIVE = "live"
SOURCE_SIGNED = "signed"  # a cluster CA this store signed from a CSR; its key lives at the site (byo.py)
ROLE_ROOT = "root"
ROLE_ROOT_NEXT = "root-next"  # the new root of a root rotation under way (rotate-root begin until finish)
ROLE_INTERMEDIATE = "intermediate"
ROLE_BUNDLE = "bundle"  # a row about a whole bundle or secret, not one certificate
ROLE_CRL = "crl"  # a CRL of ca-crl.pem (or the store's crl/): not_after is its nextUpdate
ROLE_REMOTE_SECRET = "remote-secret"  # a primary's kubeconfig for a remote cluster (remote.py), graded by its token


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
    """One certificate (or, with role "bundle", one secret or bundle; with role
    "crl", one CRL) and its grade.

    cluster is "" for the store's own roots and their CRLs; not_after and
    days_left are None for bundle rows, and a CRL's nextUpdate for CRL rows;
    serial is lowercase hex without colons (a CRL's: its CRL number).
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

    @property
    def is_certificate(self) -> bool:
        """A CA certificate's row: its serial is a certificate's (not a CRL number)."""
        return self.role in (ROLE_ROOT, ROLE_ROOT_NEXT, ROLE_INTERMEDIATE)

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
    remote_tokens: tuple[tuple[str, str, dt.datetime], ...] = ()  # (primary, remote cluster, token exp)
    notes: tuple[str, ...] = ()  # said on stderr, not graded: what the store holds that audit left out

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
    self_signed: bool = False  # the live cacerts holds istiod's own self-signed CA (`istio-generated`)
    remote_secrets: RemoteSecrets | None = None  # live clusters only
    insecure: str | None = None  # why the connection it was read over cannot be trusted (kube.transport_risk)


@dataclass(frozen=True)
class RemoteToken:
    """One kubeconfig in a primary's remote secret: the remote cluster it reads
    and when its token expires (None: a token that never does)."""

    cluster: str  # the data key: the remote's cluster ID
    secret: str  # namespace/name of the secret in the primary
    expires: dt.datetime | None = None
    error: str | None = None  # no token, or not a JWT
    server: str | None = None  # the remote's API server, as its kubeconfig names it


@dataclass(frozen=True)
class RemoteSecrets:
    """A live cluster's remote secrets (label istio/multiCluster=true), or why they could not be listed."""

    tokens: tuple[RemoteToken, ...] = ()
    error: str | None = None
    status: int | None = None  # the HTTP status of that error (403: may not list)


@dataclass(frozen=True)
class MeshLayout:
    """What the fleet file says about primaries: the remote clusters each one
    reads, and every cluster it knows (empty: no fleet file, nothing expected);
    and what a remote-secret command printed as a fix needs to run as printed:
    the fleet file's path and contexts, and the kubeconfig's context for each
    API server."""

    remotes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    clusters: frozenset[str] = frozenset()
    config: str | None = None  # the fleet file, as --config or MESHPKI_CONFIG named it
    contexts: Mapping[str, str] = field(default_factory=dict)  # cluster -> its context, from the fleet file
    server_contexts: Mapping[str, str] = field(default_factory=dict)  # API server -> its one kubeconfig context

    @classmethod
    def of(cls, fleet: Any, server_contexts: Mapping[str, str] | None = None) -> MeshLayout:
        """From a config.Fleet (and `locate.Resolver.contexts_by_server`)."""
        return cls({c.name: c.remotes for c in fleet.primaries}, frozenset(c.name for c in fleet.clusters),
                   str(fleet.path) if fleet.path else None, {c.name: c.context for c in fleet.clusters},
                   dict(server_contexts or {}))


@dataclass(frozen=True)
class StoreView:
    """The store's roots (current, and the new one during a rotation) and its clusters."""

    roots: tuple[x509.Certificate, ...] = ()
    clusters: tuple[Observation, ...] = ()
    root_error: str | None = None
    signed: tuple[tuple[str, x509.Certificate], ...] = ()  # (cluster, its CA) from the CSR inventory
    crls: tuple[x509.CertificateRevocationList, ...] = ()  # the roots' CRLs in crl/ (revocation)
    next_root: x509.Certificate | None = None  # during a root rotation: the new root (also in `roots`)
    notes: tuple[str, ...] = ()  # what the store holds that no cluster was made of (Store.left_out)



def check_thresholds(warn_days: int, crit_days: int) -> None:
    if warn_days < 0 or crit_days < 0:
        raise InputError("--warn-days and --crit-days must be 0 or more")
    if crit_days > warn_days:
        raise InputError(f"--crit-days ({crit_days}) must not exceed --warn-days ({warn_days})")


