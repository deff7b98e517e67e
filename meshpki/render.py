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
