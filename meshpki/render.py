"""Turning results into text, JSON, YAML or Prometheus exposition.

Data goes to stdout; messages and progress go to stderr (the CLI decides
where). Every command that prints data offers the formats it can honour,
each mapped to one formatter here. This module knows the domain's result
types; no domain module imports it.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509

from meshpki.bundle import fingerprint, serial_hex, subject_text
from meshpki.bundle import openssl_serial as _openssl_serial
from meshpki.dates import format_duration, iso
from meshpki.history import HistoryRow

if TYPE_CHECKING:
    from pathlib import Path

    from meshpki.audit import AuditReport
    from meshpki.byo import Adopted, CrlRefresh, SignResult
    from meshpki.ca import IssueResult, RootResult
    from meshpki.crl import CrlReport, RevokeResult
    from meshpki.demo import DemoReport
    from meshpki.push import DryRun, Plan, PushResult
    from meshpki.remote import RemoteResult, RemoteTarget
    from meshpki.rootkey import Changed, Exported
    from meshpki.rotate import ClusterRotation, RotationStatus, StepResult
    from meshpki.store import HistoryEntry
    from meshpki.verify import VerifyReport

View = tuple[dict[str, Any], str]
"""What a command prints: its data (for -o json/yaml) and the same as text."""


class OutputFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    YAML = "yaml"
    PROMETHEUS = "prometheus"


def cert_facts(cert: x509.Certificate) -> dict[str, Any]:
    """The facts an operator asks about a certificate, JSON-ready."""
    return {
        "subject": subject_text(cert),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": serial_hex(cert),
        "not_before": iso(cert.not_valid_before_utc),
        "not_after": iso(cert.not_valid_after_utc),
        "sha256": fingerprint(cert),
    }


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text for a terminal: control characters (a certificate subject may carry
    terminal escape sequences) are shown as \\x1b and the like, never sent."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def openssl_serial(cert: x509.Certificate) -> str:
    """The serial as `openssl x509 -serial` prints it (bundle.openssl_serial)."""
    return _openssl_serial(cert.serial_number)


def history_data(rows: Sequence[HistoryRow]) -> dict[str, Any]:
    return {"history": [{"kind": r.kind, "name": r.name, "archived_at": r.archived_at,
                         "serial": serial_hex(r.cert) if r.cert else "?",
                         "not_after": iso(r.cert.not_valid_after_utc) if r.cert else "?",
                         "subject": r.cert.subject.rfc4514_string() if r.cert else "?",
                         "note": r.note, "path": str(r.path)} for r in rows]}


def pruned_view(removed: Sequence[HistoryEntry]) -> View:
    """What `history prune` deleted, one line each."""
    return ({"removed": [str(e.path) for e in removed]},
            "\n".join(f"removed {e.kind} {e.name} {e.stamp}" for e in removed) or "nothing to prune")


def history_text(rows: Sequence[HistoryRow]) -> str:
    if not rows:
        return "no archived bundles, roots or rotations"
    return table(["KIND", "NAME", "ARCHIVED", "SERIAL", "NOT AFTER", "NOTE", "PATH"],
                 [[r.kind, r.name, r.archived_at, openssl_serial(r.cert) if r.cert else "?",
                   iso(r.cert.not_valid_after_utc) if r.cert else "?", r.note, str(r.path)] for r in rows])


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def to_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table: readable in a terminal and in a cron mail."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells)


def render_data(data: Any, fmt: OutputFormat, text: str) -> str:
    """The one dispatch for commands whose data is a plain dict: text is pre-rendered."""
    formatters = {
        OutputFormat.TEXT: lambda: text,
        OutputFormat.JSON: lambda: to_json(data),
        OutputFormat.YAML: lambda: to_yaml(data),
    }
    if fmt not in formatters:
        raise ValueError(f"{fmt.value} output is not available here")
    return formatters[fmt]()


# -- init-root, issue, rotate, rotate-root -------------------------------------

def root_view(result: RootResult, key_type: str, pinned: str | None = None) -> View:
    """A new root: where its key is kept, and the trust domain it is pinned to (--constrain)."""
    facts = cert_facts(result.cert)
    data = {"path": str(result.path), "key_type": key_type, "encrypted": result.encrypted,
            "pkcs11_uri": result.token_uri, "certificate": facts, "trust_domain": pinned}
    kept = (f"in the PKCS#11 token {result.token_uri}" if result.token_uri
            else "encrypted" if result.encrypted else "NOT encrypted")
    text = (f"created root CA {facts['subject']} in {result.path}\n"
            f"  serial {openssl_serial(result.cert)}, valid until {facts['not_after']}, key {kept}\n"
            + (f"  pinned to trust domain {pinned}: only spiffe://{pinned}/... identities verify under it; pass "
               f"--trust-domain {pinned} (or set trust_domain in the fleet file) to verify, push and audit\n"
               if pinned else "")
            + "  next: meshpki issue CLUSTER...")
    return data, text


def adopted_view(result: RootResult, adopted: Adopted) -> View:
    from meshpki.byo import key_type_name

    facts = cert_facts(result.cert)
    kind = "intermediate mesh CA" if adopted.chain_above else "root CA"
    data = {"path": str(result.path), "adopted": True, "kind": kind, "key_type": key_type_name(adopted.key),
            "encrypted": result.encrypted, "certificate": facts, "chain_length": len(adopted.chain_above)}
    text = (f"adopted {kind} {facts['subject']} in {result.path}\n"
            f"  serial {openssl_serial(result.cert)}, valid until {facts['not_after']}, key "
            f"{'encrypted' if result.encrypted else 'NOT encrypted'}")
    if adopted.chain_above:
        text += f"\n  bundles will trust {adopted.chain_above[-1].subject.rfc4514_string()} as root"
    return data, text + "\n  next: meshpki issue CLUSTER..."


def issued_view(results: Sequence[IssueResult], verb: str, next_step: str | None = None,
                sites: Sequence[ClusterRotation] = ()) -> View:
    """One line per new bundle (and where the old one went), the sites signed
    from a CSR (rotate-root reissue), then what to run next."""
    clusters = [{"cluster": r.cluster, "path": str(r.path), "archived": str(r.archived) if r.archived else None,
                 "certificate": cert_facts(r.cert)} for r in results]
    lines = []
    for r, entry in zip(results, clusters, strict=True):
        facts = entry["certificate"]
        assert isinstance(facts, dict)
        lines.append(f"{verb} {r.cluster}: serial {openssl_serial(r.cert)}, valid until {facts['not_after']}, "
                     f"in {r.path}")
        if r.archived:
            lines.append(f"  previous bundle archived in {r.archived}")
    lines += site_lines(sites)
    lines.append(next_step or "next: meshpki verify " + " ".join(r.cluster for r in results))
    data: dict[str, Any] = {"clusters": clusters}
    if sites:
        data["sites"] = [s.site_dict() for s in sites]
    return data, "\n".join(lines)


def site_lines(sites: Sequence[ClusterRotation]) -> list[str]:
    """A rotate-root step's word on each site signed from a CSR, which only its site can change."""
    return [f"{s.cluster}: signed from a CSR (key at its site), issued by {s.issuer}, trusts {'+'.join(s.trusts)}; "
            + (s.next or "nothing to do") for s in sites]


def step_view(result: StepResult, changed_text: str, next_step: str) -> View:
    """A rotate-root step: which clusters it changed, which were already done."""
    lines = [f"{c}: {changed_text}" for c in result.changed]
    lines += [f"{c}: unchanged (already done)" for c in result.unchanged]
    lines += site_lines(result.sites)
    lines.append(f"next: {next_step}")
    data = {"changed": list(result.changed), "unchanged": list(result.unchanged), "notes": list(result.notes),
            "sites": [s.site_dict() for s in result.sites]}
    return data, "\n".join(lines)


def rotation_status_text(report: RotationStatus) -> str:
    if report.new_root:
        lines = [f"phase: {report.phase}", f"old root: {report.old_root}", f"new root: {report.new_root}"]
    else:
        lines = ["no rotation in progress", f"root: {report.old_root}"]
    if report.grace_ends:
        lines.append(f"grace period ends: {report.grace_ends}")
    lines.append(table(["CLUSTER", "ISSUED BY", "TRUSTS"],
                       [[c.cluster, c.issuer, "+".join(c.trusts)] for c in report.clusters]))
    if report.sites:
        lines.append(table(["SITE (signed from a CSR)", "ISSUED BY", "TRUSTS"],
                           [[s.cluster, s.issuer, "+".join(s.trusts)] for s in report.sites]))
        lines += [f"{s.cluster}: {s.next}" for s in report.sites if s.next]
    return "\n".join(lines)


def exported_key_view(result: Exported) -> View:
    data = {"path": str(result.path), "which": result.which, "kdf": "pbkdf2-hmac-sha256",
            "iterations": result.iterations, "cipher": "aes-256-cbc"}
    return data, (f"exported the {result.which} key to {result.path} (PKCS#8, PBKDF2-HMAC-SHA256 "
                  f"x{result.iterations}, AES-256-CBC, mode 0600)")


def passphrase_changed_view(result: Changed) -> View:
    return ({"changed": [str(p) for p in result.keys], "notes": list(result.notes)},
            "\n".join(f"re-encrypted {p} under the new passphrase" for p in result.keys))


# -- push -----------------------------------------------------------------------

def _plan_summary(plan: Plan) -> list[str]:
    t = plan.target
    head = f"{t.cluster}: {t.namespace}/{t.secret_name} via context {t.context}: {plan.action}"
    return [head] + [f"  {line}" for line in plan.changes]


def plan_lines(plan: Plan) -> list[str]:
    """The plan's head line, what changes, and the notes an operator must read."""
    return _plan_summary(plan) + [f"  note: {w}" for w in plan.warnings]


@dataclass
class Block:
    """What one cluster's work prints: text for stdout, messages for stderr,
    and its data for -o json/yaml. Kept whole so that clusters worked on at
    once still print one readable block each, in fleet order. With -o json|yaml,
    data["object"] is what a single cluster prints (a manifest, the stored secret)."""

    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def dry_run_block(dry: DryRun, output: str) -> Block:
    """A push --dry-run: the plan as text, or the manifest (the plan, if any, on stderr)."""
    from meshpki.push import CLEAR_KEY_WARNING

    cluster = dry.target.cluster
    done = f"{cluster}: dry run, nothing written"
    if output == "text":
        assert dry.plan is not None  # text output needs the cluster: push.dry_run raised otherwise
        return Block(out=[*plan_lines(dry.plan), done])
    block = Block(data={"action": dry.plan.action if dry.plan else None, "object": dry.manifest()})
    if dry.clear_keys:
        block.err.append(CLEAR_KEY_WARNING.format(cluster=cluster, key=", ".join(dry.clear_keys)))
    if dry.plan is None:
        block.err.append(f"{cluster}: cluster not reachable, no plan computed ({dry.unreachable})")
        return block
    block.err += [*plan_lines(dry.plan), done]
    block.data.update(changes=list(dry.plan.changes), notes=list(dry.plan.warnings))
    return block


def push_block(result: PushResult, output: str) -> Block:
    """A push: its lines on stdout, or on stderr beside the stored secret (key redacted)."""
    lines = push_result_lines(result)
    if output == "text":
        return Block(out=lines)
    plan = result.plan
    return Block(err=lines, data={"action": plan.action, "changes": list(plan.changes),
                                  "notes": list(result.notes), "object": result.stored})


def push_result_lines(result: PushResult) -> list[str]:
    """What a push did: the plan, a created namespace, the verdict, then notes."""
    from meshpki import push

    plan = result.plan
    t = plan.target
    lines = _plan_summary(plan)
    if result.namespace_created:
        lines.append(f"  created namespace {t.namespace}")
    verdicts = {push.CREATE: "created", push.UPDATE: "updated", push.ADOPT: "adopted (metadata only)",
                push.UNCHANGED: "unchanged, nothing written"}
    lines.append(f"{t.cluster}: {verdicts[plan.action]}" + (", read back and identical" if result.written else ""))
    return lines + [f"note: {n}" for n in result.notes]


# -- demo -----------------------------------------------------------------------

def demo_text(report: DemoReport) -> str:
    lines = [f"demo store: {report.store}",
             f"root: {report.root.cert.subject.rfc4514_string()} in {report.root.path}"]
    for result in report.issued:
        lines.append(f"{result.cluster}: {', '.join(report.files[result.cluster])}")
    manifest = dict(report.manifest)
    data: dict[str, str] = manifest["data"]  # type: ignore[assignment]
    manifest["data"] = {k: v[:24] + "..." for k, v in data.items()}
    # the hints must run as printed: against the kept store, or a new one once this is gone
    store = f" --store {report.kept}" if report.kept is not None else ""
    lines += ["", verify_text(report.verify),
              "", f"# the cacerts secret for {report.pushed} (data shortened; "
                  + (f"`meshpki push {report.pushed}{store} --dry-run -o yaml` prints it whole):" if store else
                     "with --keep DIR, `push --dry-run -o yaml` prints it whole):"),
              to_yaml(manifest).rstrip()]
    if report.kept is not None:
        lines += ["", f"next, with a real cluster: meshpki push {report.pushed}{store} --context <your kubeconfig context>",
                  "", f"kept the demo store in {report.kept}: its root key is NOT encrypted; use it to try "
                      "meshpki, never for a real mesh (make one with `meshpki init-root`)"]
    else:
        lines += ["", "deleted the demo store (keep one with `meshpki demo --keep DIR`)",
                  "next, for a real mesh: meshpki init-root, meshpki issue cluster1 cluster2, then "
                  f"meshpki push {report.pushed} --context <your kubeconfig context>"]
    return "\n".join(lines)


# -- meshpki verify ------------------------------------------------------------

def _finding_line(finding: Any) -> str:
    """`  error    [istiod]  key-mismatch  ca-key.pem: ...; fix: ...` (who objects, file named, fix given)."""
    text = finding.message
    if finding.file and not text.startswith(finding.file):
        text = f"{finding.file}: {text}"
    if finding.fix:
        text = f"{text}; fix: {finding.fix}"
    return f"  {finding.severity.value:<8} {'[' + finding.by.value + ']':<9} {finding.code:<21} {text}"


def verify_text(report: VerifyReport, verbose: bool = True, strict: bool = False) -> str:
    """The verify report for people: per target and per pair a header with
    OK/FAIL, one line per finding with its fix, then a summary line that
    agrees with the exit code (FAIL (strict) when only warnings fail it).
    `verbose` False leaves out info findings."""
    lines: list[str] = []
    for result in report.results:
        lines.append(f"{'OK  ' if result.ok else 'FAIL'} {result.target}")
        lines += [_finding_line(f) for f in result.findings if verbose or f.severity.value != "info"]
    if report.pairs:
        lines.append("")
        lines.append("pairs (cross-cluster mTLS):")
        for pair in report.pairs:
            lines.append(f"{'OK  ' if pair.ok else 'FAIL'} {pair.a} <-> {pair.b}")
            lines += [_finding_line(f) for f in pair.findings if verbose or f.severity.value != "info"]
    from meshpki.checks import EVERY_PEER

    pairs = [p for p in report.pairs if p.b != EVERY_PEER]  # the rest: one line per broken bundle
    failing = sum(1 for p in pairs if not p.ok)
    broken = len(report.pairs) - len(pairs)
    verdict = "FAIL" if not report.ok else ("FAIL (strict)" if report.exit_code(strict) else "OK")
    summary = (f"{verdict}: {len(report.results)} bundle(s), {len(pairs)} pair(s); "
               f"{report.errors} error(s), {report.warnings} warning(s)")
    if failing:
        summary += f"; {failing} pair(s) cannot do mTLS"
    if broken:
        summary += f"; {broken} broken bundle(s) cannot do mTLS with any peer"
    lines.append("")
    lines.append(summary)
    return "\n".join(lines)


# -- meshpki audit -------------------------------------------------------------

AUDIT_FORMATS = (OutputFormat.TEXT, OutputFormat.JSON, OutputFormat.PROMETHEUS)


def audit_text(report: AuditReport) -> str:
    """One row per certificate, most urgent first, then the verdict: what a
    cron mail should say at a glance."""
    headers = ["CLUSTER", "SOURCE", "ROLE", "SUBJECT", "SERIAL", "NOT AFTER", "DAYS", "GRADE", "REASON"]
    rows = [[r.cluster or "-", r.source, r.role, r.subject or "-",
             (_openssl_serial(r.serial) if r.is_certificate else r.serial) or "-",
             iso(r.not_after) if r.not_after else "-", "-" if r.days_left is None else r.days_left,
             r.grade.name, r.reason or "-"] for r in report.rows]
    s = report.summary
    verdict = (f"{s['status']}: {s['critical']} critical, {s['unknown']} unknown, {s['warning']} warning, "
               f"{s['ok']} ok; {s['clusters']} cluster(s) as of {s['at']} "
               f"(--warn-days {s['warn_days']}, --crit-days {s['crit_days']})")
    return (table(headers, rows) + "\n\n" if rows else "") + verdict


# Every metric family `audit -o prometheus` (and --textfile, --pushgateway) exposes, with its
# labels. The README's list is checked against it (tests/test_readme.py); a family made
# without an entry here is a KeyError.
_CERT_LABELS = ("cluster", "role", "source", "serial")
AUDIT_METRICS: dict[str, tuple[str, ...]] = {
    "meshpki_cert_not_after_timestamp_seconds": _CERT_LABELS,
    "meshpki_cert_expiry_seconds": _CERT_LABELS,
    "meshpki_crl_next_update_timestamp_seconds": ("cluster", "source", "issuer"),
    "meshpki_audit_status": ("cluster",),
    "meshpki_root_fingerprint_info": ("cluster", "source", "fingerprint"),
    "meshpki_remote_secret_token_expiry_timestamp_seconds": ("primary", "cluster"),
    "meshpki_audit_last_run_timestamp_seconds": (),
}


def _gauge(name: str, documentation: str) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, labels=list(AUDIT_METRICS[name]))


class _AuditCollector:
    """The audit as Prometheus metric families, for prometheus_client to expose."""

    def __init__(self, report: AuditReport) -> None:
        self.report = report

    def collect(self) -> Any:
        report = self.report
        at = report.at.timestamp()
        not_after = _gauge("meshpki_cert_not_after_timestamp_seconds",
                           "notAfter of each audited CA certificate, as a Unix timestamp.")
        expiry = _gauge("meshpki_cert_expiry_seconds",
                        "Seconds from the audit's reference time (--at, else the run) to notAfter; "
                        "negative once expired.")
        seen: set[tuple[str, ...]] = set()
        crl_next = _gauge("meshpki_crl_next_update_timestamp_seconds",
                          "nextUpdate of each audited CRL (ca-crl.pem, the store's crl/), as a Unix "
                          "timestamp; a CRL past it makes proxies reject peers.")
        for row in report.rows:
            if row.not_after is None or row.role == "remote-secret":  # a token, not a CA certificate
                continue
            if row.role == "crl":
                crl_key = (row.cluster, row.source, row.subject)
                if crl_key not in seen:
                    seen.add(crl_key)
                    crl_next.add_metric(list(crl_key), row.not_after.timestamp())
                continue
            key = (row.cluster, row.role, row.source, row.serial)
            if key in seen:  # one sample per label set; rows are most urgent first
                continue
            seen.add(key)
            end = row.not_after.timestamp()
            not_after.add_metric(list(key), end)
            expiry.add_metric(list(key), end - at)
        status = _gauge("meshpki_audit_status", "Audit grade per cluster (cluster=\"\": the store's "
                        "roots): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
        for cluster, grade in sorted(report.clusters.items()):
            status.add_metric([cluster], int(grade))
        roots = _gauge("meshpki_root_fingerprint_info", "A root certificate (SHA-256 fingerprint) "
                       "each cluster trusts; always 1.")
        for cluster, source, fp in report.roots:
            roots.add_metric([cluster, source, fp], 1)
        tokens = _gauge("meshpki_remote_secret_token_expiry_timestamp_seconds",
                        "exp of the token in each primary's remote secret for a cluster, as a Unix "
                        "timestamp (no sample for tokens that never expire).")
        for primary, cluster, expires in report.remote_tokens:
            tokens.add_metric([primary, cluster], expires.timestamp())
        last_run = _gauge("meshpki_audit_last_run_timestamp_seconds", "When this audit ran, as a Unix timestamp.")
        last_run.add_metric([], report.run_at.timestamp())
        crls = [crl_next] if crl_next.samples else []  # no family at all before the first revocation
        return [not_after, expiry, *crls, status, roots, tokens, last_run]


def audit_prometheus(report: AuditReport) -> str:
    """Prometheus text exposition (also what --textfile writes for node_exporter)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_AuditCollector(report))
    return generate_latest(registry).decode()


def render_audit(report: AuditReport, fmt: OutputFormat) -> str:
    """The one dispatch for `meshpki audit -o` (text made printable)."""
    formatters = {
        OutputFormat.TEXT: lambda: printable(audit_text(report)),
        OutputFormat.JSON: lambda: to_json(report.to_dict()),
        OutputFormat.PROMETHEUS: lambda: audit_prometheus(report),
    }
    if fmt not in formatters:
        raise ValueError(f"{fmt.value} output is not available for audit")
    return formatters[fmt]()


def crl_revoked_text(result: RevokeResult, next_step: str) -> str:
    """What revoke / rotate --revoke-previous / crl renew changed."""
    lines = [f"revoked {r.cluster}: serial {_openssl_serial(r.serial)} ({r.reason})" for r in result.revoked]
    lines.append(f"CRL number {result.number}, next update {result.next_update}")
    lines.append(next_step)
    return "\n".join(lines)


def crl_show_text(report: CrlReport) -> str:
    """`meshpki crl show`: the revoked intermediates, then every CRL's window."""
    crls = table(["CRL OF", "NUMBER", "THIS UPDATE", "NEXT UPDATE", "ENTRIES"],
                 [[c.where, c.number, iso(c.this_update), iso(c.next_update) if c.next_update else "-", c.entries]
                  for c in report.crls])
    if report.state is None:
        if not report.crls:
            return "nothing revoked; bundles carry no ca-crl.pem"
        return ("this store revokes nothing itself; its bundles carry the root holder's CRLs (a site: refresh them "
                f"with meshpki crl refresh CLUSTER FILE from the root holder's meshpki crl export)\n\n{crls}")
    revoked = table(["CLUSTER", "SERIAL", "REASON", "REVOKED", "EVICTED"],
                    [[r.cluster, _openssl_serial(r.serial), r.reason, r.revoked_at, "yes" if r.evicted else "no"]
                     for r in report.state.revoked]) if report.state.revoked else "no intermediate revoked"
    return f"{revoked}\n\n{crls}"


def revoked_view(cluster: str, result: RevokeResult, push_all: str) -> View:
    """`push_all`: the command(s) that push every cluster (locate.push_everything)."""
    data = {"cluster": cluster, "revoked": [r.to_dict() for r in result.revoked], "crl_number": result.number,
            "next_update": result.next_update}
    return data, crl_revoked_text(result, f"next: {push_all}, then meshpki verify and meshpki audit")


def renewed_view(result: RevokeResult, push_all: str) -> View:
    return ({"crl_number": result.number, "next_update": result.next_update},
            crl_revoked_text(result, f"next: {push_all}"))


# -- bring your own PKI ---------------------------------------------------------

def signed_view(result: SignResult) -> View:
    facts = cert_facts(result.cert)
    data = {"cluster": result.cluster, "out": str(result.out), "certificate": facts}
    return data, (f"signed {result.cluster}: serial {openssl_serial(result.cert)}, valid until {facts['not_after']}; "
                  f"certificates in {result.out} (no key)\n"
                  f"next: send {result.out} to the site, which runs meshpki complete {result.cluster} DIR")


def completed_view(cluster: str, path: Path, archived: Path | None) -> View:
    data = {"cluster": cluster, "path": str(path), "archived": str(archived) if archived else None}
    text = f"completed {cluster}: bundle in {path}"
    if archived:
        text += f"\n  previous bundle archived in {archived}"
    return data, text + f"\nnext: meshpki verify {cluster}, then meshpki push {cluster} --context CTX"


def crl_refreshed_view(result: CrlRefresh) -> View:
    due = result.next_update.isoformat(timespec="seconds") if result.next_update else None
    data = {"cluster": result.cluster, "path": str(result.path), "changed": result.changed,
            "crl_number": result.number, "next_update": due}
    if not result.changed:
        return data, (f"{result.cluster}: ca-crl.pem already holds these CRLs (number {result.number}, next update "
                       f"{due}); nothing changed")
    return data, (f"{result.cluster}: ca-crl.pem refreshed in {result.path} (CRL number {result.number}, next update "
                  f"{due})\nnext: meshpki verify {result.cluster}, then meshpki push {result.cluster} --context CTX")


# -- remote-secret --------------------------------------------------------------

def remote_secret_block(target: RemoteTarget, result: RemoteResult, output: str) -> Block:
    """A remote secret written (or, dry run, shown): warnings always on stderr."""
    block = Block(err=[f"warning: {warning}" for warning in result.warnings])
    lines = remote_secret_lines(result)
    if output == "text":
        block.out = lines + ([f"{target.label}: dry run, nothing written"] if result.dry_run else [])
        return block
    block.err += lines
    block.data["object"] = result.secret.manifest() if result.dry_run else result.summary()
    if result.dry_run:
        block.err.append(f"{target.label}: dry run, nothing written; the manifest holds a bearer token for "
                         f"{target.cluster}: keep it out of logs and git")
    return block


def remote_secret_lines(result: RemoteResult) -> list[str]:
    """Lines for the operator (stderr with -o json|yaml); warnings are separate (always stderr)."""
    from meshpki.remote import CREATE, UNCHANGED, UPDATE

    t = result.target
    verbs = {CREATE: "created", UPDATE: "updated", UNCHANGED: "unchanged, nothing written"}
    if result.dry_run:
        verbs = {CREATE: "would create", UPDATE: "would update", UNCHANGED: "unchanged"}
    expires = f", expires {iso(result.token_expires)}" if result.token_expires else ", never expires"
    lifetime = f" for {format_duration(result.token_ttl)}" if result.token_ttl else ""
    lines = [f"{t.label}: {t.namespace}/{t.secret_name} in context {t.primary_context}: {verbs[result.action]}"
             + (", read back and identical" if result.action != UNCHANGED and not result.dry_run else ""),
             f"  token: {result.token_source}{lifetime}{expires}"]
    made = "would create" if result.dry_run else "created"
    lines += [f"  {made} in context {t.context}: {what}" for what in result.created]
    if result.deleted:
        lines.append(f"  deleted the old token Secret {result.deleted} in context {t.context}")
    return lines
