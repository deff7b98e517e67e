"""`meshpki audit`: expiry, drift and presence of every CA certificate, for cron.

istiod reports the expiry of its own first certificate only, per cluster
(docs/istio.md); nothing compares clusters with each other or with the operator's
store. The audit reads the store (every root, every cluster's bundle) and each
named cluster's live `cacerts` secret, then grades every certificate as of
one moment (`--at`, else now) with monitoring codes: 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN, so cron, Nagios-style checks and Prometheus alerts can
all act on it.

The flow is read -> verify -> grade, one module each: `read` (the store, then
the clusters in a bounded thread pool, each held to its deadline by kube.py),
`verifier` (`checks.check_bundle`, once per distinct bundle) and `grade`
(`build_report`, a pure function of what was read and the moment `at`, so
every boundary can be tested without a clock or a cluster). `model` holds the
types they share. This module runs the three and re-exports what callers use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from meshpki import profiles
from meshpki.audit.grade import build_report, days_left, grade_expiry
from meshpki.audit.model import (
    CLUSTER_NAME_ENV,
    DEFAULT_CRIT_DAYS,
    DEFAULT_WARN_DAYS,
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
from meshpki.audit.read import (
    DEFAULT_PARALLEL,
    push_metrics,
    read_all_live,
    read_live,
    read_live_public,
    read_store,
    write_textfile,
)
from meshpki.audit.verifier import Verifier
from meshpki.errors import InputError, MeshPKIError
from meshpki.kube import SecretRef

__all__ = [
    "CLUSTER_NAME_ENV", "DEFAULT_CRIT_DAYS", "DEFAULT_PARALLEL", "DEFAULT_WARN_DAYS", "AuditReport", "AuditRow",
    "Condition", "Grade", "MeshLayout", "Observation", "StoreView", "Verifier", "build_report", "check_thresholds", "days_left",
    "exit_code", "export", "grade_expiry", "push_metrics", "read_all_live", "read_live", "read_store", "run", "worst",
    "write_textfile",
]


def run(store: Any, targets: Sequence[SecretRef], at: dt.datetime | None = None,
        warn_days: int = DEFAULT_WARN_DAYS, crit_days: int = DEFAULT_CRIT_DAYS, parallel: int = DEFAULT_PARALLEL,
        progress: Callable[[int, int], None] | None = None,
        trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN, layout: MeshLayout | None = None,
        public_only: bool = False) -> AuditReport:
    """The whole of `meshpki audit`, minus printing: read, verify, grade.

    The store is read and its bundles verified in a side thread while the
    clusters are being read: the CPU work fills the network wait.
    """
    check_thresholds(warn_days, crit_days)
    run_at = profiles.utcnow()
    verifier = Verifier(trust_domain=trust_domain)

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
        live = read_all_live(targets, parallel, progress, reader=read_live_public if public_only else read_live)
        view = store_future.result()
    verifier.verify_many(o.bundle for o in live if o.bundle is not None)
    return build_report(view, live, at or run_at, warn_days, crit_days, verifier, run_at, layout)


def export(exposition: Callable[[], str], textfile: Path | None = None,
           pushgateway: str | None = None) -> list[MeshPKIError]:
    """Deliver the metrics to node_exporter's textfile collector and/or a
    Pushgateway. Every sink is tried; what failed is returned, not raised, so
    one broken sink neither hides the report nor stops the other. The
    exposition is rendered once, and only when there is a sink."""
    sinks: list[Callable[[str], None]] = []
    if textfile is not None:
        sinks.append(lambda text: write_textfile(textfile, text))
    if pushgateway is not None:
        sinks.append(lambda text: push_metrics(pushgateway, text))
    text = exposition() if sinks else ""
    failures = []
    for sink in sinks:
        try:
            sink(text)
        except MeshPKIError as exc:
            failures.append(exc)
    return failures


def exit_code(report: AuditReport, failures: Sequence[MeshPKIError] = ()) -> int:
    """The monitoring code: the report's, and UNKNOWN at least when metrics
    could not be delivered (an alert may now rest on stale numbers)."""
    return int(worst([report.status, Grade.UNKNOWN])) if failures else report.exit_code
