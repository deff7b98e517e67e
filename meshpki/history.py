"""`meshpki history`: what each cluster ran, retired roots, finished root rotations.

An archived bundle is listed with why it left: a new intermediate replaced
it, or only its trust changed (rotate-root begin appends root B, reissue and
finish replace the bundle again): then the same serial appears twice and the
note says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from meshpki.bundle import CA_CERT, openssl_serial, parse_certs
from meshpki.errors import InputError, MeshPKIError
from meshpki.store import HistoryEntry, Store


@dataclass(frozen=True)
class HistoryRow:
    kind: str  # cluster | root | rotation
    name: str
    archived_at: str
    cert: x509.Certificate | None  # None when the archived certificate cannot be read
    note: str
    path: Path


def rows(store: Store, cluster: str | None = None) -> list[HistoryRow]:
    """Every archived entry (of one cluster, or all), oldest first within each name."""
    if cluster is not None and cluster not in store.clusters() and cluster not in store.history_names():
        known = ", ".join(sorted(set(store.clusters()) | set(store.history_names()))) or "none yet"
        raise InputError(f"no cluster {cluster!r} in store {store.path} (clusters: {known})")
    entries = store.history(cluster)
    revoked = _revoked(store)
    result = []
    for i, entry in enumerate(entries):
        cert = _cert(entry.cert_file)
        later = entries[i + 1] if i + 1 < len(entries) and entries[i + 1].name == entry.name else None
        note = _note(store, entry, cert, later)
        when = revoked.get(format(cert.serial_number, "x")) if cert is not None and entry.kind == "cluster" else None
        if when is not None:  # on a CRL: evicted by revoke, or replaced and revoked (rotate --revoke-previous)
            note = ("revoked" if later is None and not store.has_cluster(entry.name) else f"{note}; revoked") + when
        result.append(HistoryRow(entry.kind, entry.name, entry.stamp, cert, note, entry.path))
    return result


def _revoked(store: Store) -> dict[str, str]:
    """Serial (lowercase hex) -> ' on DATE (reason)' for every intermediate on a CRL."""
    from meshpki import crl

    state = crl.load_state(store)
    return {r.serial: f" on {r.revoked_at} ({r.reason})" for r in state.revoked} if state else {}


def _note(store: Store, entry: HistoryEntry, cert: x509.Certificate | None, later: HistoryEntry | None) -> str:
    if entry.kind == "root":
        return "root retired by rotate-root finish"
    if entry.kind == "rotation":
        return "finished root rotation: state.json and the new root's first copy"
    successor = _cert(later.path / CA_CERT) if later else _live_cert(store, entry.name)
    if cert is None or successor is None:
        return "replaced" if later else "replaced; the cluster has no bundle now"
    if successor.serial_number == cert.serial_number:
        return "same intermediate, trust changed (a rotate-root step)"
    return f"replaced by intermediate {openssl_serial(successor.serial_number)}"


def _live_cert(store: Store, cluster: str) -> x509.Certificate | None:
    try:
        return _cert(store.cluster_dir(cluster) / CA_CERT) if store.has_cluster(cluster) else None
    except MeshPKIError:
        return None


def _cert(path: Path) -> x509.Certificate | None:
    try:
        return parse_certs(path.read_bytes(), str(path))[0]
    except (OSError, MeshPKIError):
        return None


def prune(store: Store, keep: int) -> list[HistoryEntry]:
    return store.prune_history(keep)
