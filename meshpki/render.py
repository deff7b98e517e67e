"""Turning results into text, JSON, YAML or Prometheus exposition.

Data goes to stdout; messages and progress go to stderr (cli.py decides
where). Every command that prints data offers the formats it can honour,
each mapped to one formatter here.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from meshpki.bundle import fingerprint, serial_hex, subject_text


class OutputFormat(str, enum.Enum):
    TEXT = "text"
    JSON = "json"
    YAML = "yaml"
    PROMETHEUS = "prometheus"


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def to_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table: readable in a terminal and in a cron mail."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


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


# -- meshpki verify ------------------------------------------------------------

def _finding_line(finding: Any) -> str:
    """`  error    key-mismatch  ca-key.pem: ...; fix: ...` (file named, fix given)."""
    text = finding.message
    if finding.file and not text.startswith(finding.file):
        text = f"{finding.file}: {text}"
    if finding.fix:
        text = f"{text}; fix: {finding.fix}"
    return f"  {finding.severity.value:<8} {finding.code:<21} {text}"


def verify_text(report: Any, verbose: bool = True) -> str:
    """The verify report for people: per target and per pair a header with
    OK/FAIL, one line per finding with its fix, then a summary line.
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
    failing = sum(1 for p in report.pairs if not p.ok)
    summary = (f"{'OK' if report.ok else 'FAIL'}: {len(report.results)} bundle(s), {len(report.pairs)} pair(s); "
               f"{report.errors} error(s), {report.warnings} warning(s)")
    if failing:
        summary += f"; {failing} pair(s) cannot do mTLS"
    lines.append("")
    lines.append(summary)
    return "\n".join(lines)
