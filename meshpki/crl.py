"""Revocation: evict a cluster, revoke replaced intermediates, keep CRLs fresh.

istiod loads `ca-crl.pem` and insists on a CRL signed by EVERY certificate of
cert-chain.pem (docs/revocation.md). So once the mesh revokes anything, each
member's bundle carries: the CRL of every root its root-cert.pem trusts (the
revoked intermediates, signed with the root key through signing.py) and a CRL
signed by its own intermediate (empty: meshpki never revokes workloads).
Before the first revocation bundles carry no ca-crl.pem at all: a CRL nobody
needs is only a chance to expire.

The store's `crl/` folder is the single source of truth: state.json (what is
revoked, the CRL number, thisUpdate/nextUpdate) and the roots' signed CRLs.
Publishing that folder is a revocation's commit point; a `pending.json` in
it lists what is left to do (evict the cluster, re-make every bundle's
ca-crl.pem), which needs no passphrase, so the next command that takes the
store's lock finishes it if meshpki was killed half-way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshpki import crlcheck, pem, profiles
from meshpki.bundle import (
    CA_CERT,
    CA_CRL,
    CERT_CHAIN,
    ROOT_CERT,
    Bundle,
    fingerprint,
    openssl_serial,
    parse_certs,
)
from meshpki.errors import BundleError, InputError, MeshPKIError
from meshpki.findings import shortlist
from meshpki.keys import PrivateKey
from meshpki.pathbuild import signed_by as issued_by
from meshpki.signing import SigningKey, sign_crl
from meshpki.store import CRL_PENDING_FILE, CRL_STATE_FILE, Store, validate_cluster_name

if TYPE_CHECKING:
    from meshpki.ca import Issuer  # ca builds on crl: a type only

# nextUpdate 90 days out: `meshpki audit` warns 30 days before (its default
# --warn-days), which leaves two quiet months between renewals and a whole
# month to run `meshpki crl renew && meshpki push --all` before proxies would
# reject every peer (an expired CRL fails verification in OpenSSL/BoringSSL).
DEFAULT_CRL_DAYS = 90
MAX_CRL_DAYS = 366

REASONS: dict[str, x509.ReasonFlags] = {
    "key-compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
}
DEFAULT_REVOKE_REASON = "key-compromise"


class _NamesCluster(Protocol):
    @property
    def cluster(self) -> str: ...


T = TypeVar("T", bound=_NamesCluster)


class RevocationError(MeshPKIError):
    """A revocation is refused (already revoked, nothing revoked yet)."""


# -- the state -------------------------------------------------------------------

@dataclass(frozen=True)
class Revoked:
    """One revoked intermediate, as `meshpki crl show` lists it."""

    cluster: str
    serial: str  # lowercase hex, no colons (like audit)
    issuer: str  # SHA-256 fingerprint of the root that signed it (and signs its CRL entry)
    reason: str
    revoked_at: str  # ISO 8601 UTC
    not_after: str
    evicted: bool  # True: `revoke` took the cluster out of the mesh

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CrlState:
    """What cannot be read off the CRLs alone: the list, the counter, the window."""

    number: int
    this_update: str
    next_update: str
    days: int
    revoked: tuple[Revoked, ...] = field(default_factory=tuple)

    def to_json(self) -> bytes:
        data = {**self.__dict__, "revoked": [r.to_dict() for r in self.revoked]}
        return json.dumps(data, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> CrlState:
        try:
            raw = json.loads(data)
            return cls(int(raw["number"]), str(raw["this_update"]), str(raw["next_update"]), int(raw["days"]),
                       tuple(Revoked(**r) for r in raw["revoked"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise RevocationError(f"the store's crl/{CRL_STATE_FILE} is damaged ({exc}); restore it from "
                                  "history/crl/") from None

    @property
    def this_update_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.this_update)

    @property
    def next_update_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.next_update)

    def evicted_entry(self, cluster: str) -> Revoked | None:
        found = [r for r in self.revoked if r.cluster == cluster and r.evicted]
        return found[-1] if found else None


def load_state(store: Store) -> CrlState | None:
    """The store's revocation state; None until the first revocation. A store
    that has revoked but lost state.json is refused, never read as "nothing
    revoked": the next CRL would silently drop every earlier revocation."""
    if not store.has_crl():
        traces = _revocation_traces(store)
        if not traces:
            return None
        if not store.has_crl():  # listing the clusters settled a crl/ a killed writer had committed
            raise RevocationError(
                f"the store's crl/{CRL_STATE_FILE} is missing, but this store has revoked before (found "
                f"{shortlist(traces)}): without it every revocation would be forgotten; restore crl/{CRL_STATE_FILE} "
                "from a backup of the store (history/crl/ only keeps the states before the last change); nothing "
                "was changed")
    return CrlState.from_json(store.crl_file(CRL_STATE_FILE))


def _revocation_traces(store: Store) -> list[str]:
    """What only a store that has revoked holds: files in crl/, or bundles
    whose ca-crl.pem carries a CRL signed by one of this store's roots (a
    site's bundles carry its root holder's CRLs, and a site has no root)."""
    found = [f"crl/{name}" for name in store.crl_names()]
    carriers = [c for c in store.clusters() if (store.cluster_dir(c) / CA_CRL).is_file()]
    if not carriers or not store.has_root():
        return found
    roots = _live_roots(store)
    for cluster in carriers:
        crls, _ = pem.read_crls(store.load_bundle(cluster).files.get(CA_CRL, b""))
        if any(crlcheck.crl_signed_by(c, root) is None for c in crls for root in roots):
            found.append(f"clusters/{cluster}/{CA_CRL}")
    return found


def check_days(days: int) -> int:
    if not 1 <= days <= MAX_CRL_DAYS:
        raise InputError(f"--days must be between 1 and {MAX_CRL_DAYS} for a CRL, not {days}")
    return days


def root_crl_name(root: x509.Certificate) -> str:
    return f"root-{fingerprint(root)[:16]}.crl.pem"


def _root_crl_names(store: Store) -> list[str]:
    return [name for name in store.crl_names() if name.endswith(".crl.pem")]


def root_crls(store: Store) -> dict[str, bytes]:
    """The live roots' signed CRLs in the store, by root_crl_name(). Every
    reader (issue, reconcile, crl export, show) gets them through here, each
    proven whole and signed by the root its name claims: a truncated or
    foreign file must never reach a bundle or a site."""
    crls, problem = _sound_root_crls(store)
    if problem is not None:
        raise RevocationError(f"{problem}; re-sign the roots' CRLs with meshpki crl renew, or restore crl/ from a "
                              "backup of the store")
    return crls


def _sound_root_crls(store: Store) -> tuple[dict[str, bytes], str | None]:
    """The live roots' CRLs that are sound, and what is wrong with the first that is not."""
    names = set(_root_crl_names(store))
    if not names:
        return {}, None  # never revoked, or a site: no root needed to say so
    sound: dict[str, bytes] = {}
    problem = None
    for root in _live_roots(store):
        name = root_crl_name(root)
        if name not in names:
            continue
        data = store.crl_file(name)
        why = _not_a_crl_of(data, root)
        if why is None:
            sound[name] = data
        elif problem is None:
            problem = f"the store's crl/{name} {why}"
    return sound, problem


def _not_a_crl_of(data: bytes, root: x509.Certificate) -> str | None:
    """None when `data` holds only CRLs the root signed, else why not."""
    crls, error = pem.read_crls(data)
    if error is not None:
        return f"is damaged ({error})"
    for item in crls:
        why = "it names another issuer" if item.issuer != root.subject else crlcheck.crl_signed_by(item, root)
        if why is not None:
            return f"holds a CRL not signed by the root its name claims, '{root.subject.rfc4514_string()}' ({why})"
    return None


def evicted_clusters(store: Store) -> dict[str, Revoked]:
    """Clusters `revoke` took out of the mesh (and not issued or signed again since)."""
    state = load_state(store)
    if state is None:
        return {}
    members = set(store.clusters()) | set(store.signed_clusters())
    return {r.cluster: r for r in state.revoked if r.evicted and r.cluster not in members}


def rejoin_warnings(store: Store, clusters: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """A new intermediate for a name `revoke` evicted brings it back into the
    mesh: legitimate (a rebuilt cluster), but never silently. One read of the
    state for all of `clusters`."""
    evicted = evicted_clusters(store)
    return {cluster: (f"{cluster} was revoked on {entry.revoked_at} ({entry.reason}); this new intermediate brings "
                      "it back into the mesh: make sure that cluster is trusted again",)
            if (entry := evicted.get(cluster)) is not None else () for cluster in clusters}


def skip_evicted(store: Store, targets: Sequence[T]) -> tuple[list[T], list[str]]:
    """Fleet-wide commands (push --all, audit) leave out evicted clusters that a
    fleet file or kubeconfig still lists; the notes say why and what to do."""
    if not store.has_crl():
        return list(targets), []
    evicted = evicted_clusters(store)
    notes = [f"{t.cluster}: skipped, revoked on {evicted[t.cluster].revoked_at} and no longer a member (serial "
             f"{openssl_serial(evicted[t.cluster].serial)}); remove it from the fleet file"
             for t in targets if t.cluster in evicted]
    return [t for t in targets if t.cluster not in evicted], notes


# -- making CRLs -----------------------------------------------------------------

def make_crl(issuer: x509.Certificate, key: SigningKey, number: int, this_update: dt.datetime,
             next_update: dt.datetime, entries: Sequence[Revoked] = ()) -> x509.CertificateRevocationList:
    """One CRL as RFC 5280 wants it: v2, CRL number and AKI (non-critical),
    a reason code per entry, never a revocation date after thisUpdate."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(profiles.authority_key_id(issuer), critical=False)
    )
    for entry in entries:
        revoked_at = min(dt.datetime.fromisoformat(entry.revoked_at), this_update)
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry.serial, 16))
            .revocation_date(revoked_at)
            .add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
            .build()
        )
    return sign_crl(builder, key)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(Encoding.PEM)


def parse_crls(data: bytes, what: str) -> list[x509.CertificateRevocationList]:
    """Every CRL of a ca-crl.pem, read as istiod reads it (pem.read_crls): one
    block that is not a CRL spoils the file."""
    crls, error = pem.read_crls(data)
    if error is not None:
        raise BundleError(f"{what}: {error}; re-make it with `meshpki crl renew`")
    return list(crls)


def signed_by(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> bool:
    return crl.issuer == cert.subject and crl.is_signature_valid(cert.public_key())  # type: ignore[arg-type]


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _roots_part(files: Mapping[str, bytes], crls: Mapping[str, bytes]) -> bytes:
    """The store's CRLs for every certificate above the cluster CA in
    cert-chain.pem (istiod's rule) and every root of root-cert.pem (peers'
    chains during a root rotation), in that order, each once."""
    above = parse_certs(files[CERT_CHAIN], "cert-chain.pem")[1:] + parse_certs(files[ROOT_CERT], "root-cert.pem")
    names = dict.fromkeys(root_crl_name(c) for c in above)
    return b"".join(crls[name] for name in names if name in crls)


def bundle_crl(state: CrlState, crls: Mapping[str, bytes], files: Mapping[str, bytes], key: PrivateKey) -> bytes:
    """ca-crl.pem for one bundle: its roots' CRLs, then its intermediate's own."""
    cert = parse_certs(files[CA_CERT], "ca-cert.pem")[0]
    own = make_crl(cert, key, state.number, state.this_update_at, state.next_update_at)
    return _roots_part(files, crls) + crl_pem(own)


def files_with_crl(store: Store, files: Mapping[str, bytes], key: PrivateKey) -> dict[str, bytes]:
    """A new bundle's files plus its ca-crl.pem, once the mesh has revoked
    something (issue, rotate and rotate-root reissue all pass through here)."""
    state = load_state(store)
    result = {k: v for k, v in files.items() if k != CA_CRL}
    if state is not None:
        crls = _crls_for_chain(store, files)
        result[CA_CRL] = bundle_crl(state, crls, files, key)
    return result


def _crls_for_chain(store: Store, files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The store's root CRLs, after proving there is one for every CA above the
    cluster CA in cert-chain.pem (else istiod would refuse the bundle)."""
    crls = root_crls(store)
    for above in parse_certs(files[CERT_CHAIN], "cert-chain.pem")[1:]:
        if root_crl_name(above) not in crls:
            raise RevocationError(
                f"the store holds no CRL of {above.subject.rfc4514_string()} (sha256 "
                f"{fingerprint(above)[:16]}), which signs this bundle's chain; run `meshpki rotate-root begin` "
                "again (it resumes and makes the new root's CRL), then retry")
    return crls


def roots_part_for(store: Store, files: Mapping[str, bytes]) -> bytes | None:
    """For a cluster CA signed from a CSR (byo.py): the root CRLs its site must
    ship, or None while the mesh has revoked nothing."""
    if load_state(store) is None:
        return None
    return _roots_part(files, _crls_for_chain(store, files))


def export_for_site(store: Store, cluster: str) -> bytes:
    """The roots' current CRLs for a cluster this store signed from a CSR:
    what its site hands to `meshpki crl refresh` (byo.py) after a renewal or
    a revocation. The root holder cannot sign the site's own intermediate
    CRL, and a new csr / sign / complete round would replace its key."""
    validate_cluster_name(cluster)
    _refuse_export(store, cluster)  # before the lock, which would make a missing store's folder
    with store.locked():
        _refuse_export(store, cluster)  # again: a killed revocation is finished by now
        files = {name: store.signed_file(cluster, name) for name in (CERT_CHAIN, ROOT_CERT)}
        return _roots_part(files, _crls_for_chain(store, files))


def _refuse_export(store: Store, cluster: str) -> None:
    state = load_state(store)
    if state is None:
        raise RevocationError("this mesh has revoked nothing, so there is no CRL to export (a site's bundle "
                              "needs no ca-crl.pem until the first `meshpki revoke`)")
    if cluster in store.signed_clusters():
        return
    earlier = state.evicted_entry(cluster)
    if earlier is not None:
        raise RevocationError(f"cluster {cluster!r} was revoked on {earlier.revoked_at} (serial "
                              f"{openssl_serial(earlier.serial)}): it is out of the mesh, so it gets no CRLs")
    if store.has_cluster(cluster):
        raise InputError(f"{cluster} is a member of this store: its ca-crl.pem follows `meshpki crl renew` "
                         f"by itself; push it (meshpki push {cluster})")
    signed = store.signed_clusters()
    raise InputError(f"this store signed no cluster {cluster!r} from a CSR "
                     + (f"(signed: {', '.join(signed)}); pass one of those" if signed else
                        "(it signed none: `meshpki sign` does, for a site's request)"))


def site_bundle_crl(roots_part: bytes, cert: x509.Certificate, key: SigningKey) -> bytes:
    """ca-crl.pem made at a cluster's site: the root holder's CRLs, then one
    signed by the site's own intermediate with the same number and window,
    so it falls due together with them (and audit watches both)."""
    received = parse_crls(roots_part, "ca-crl.pem from the root holder")
    if not received:
        raise BundleError("ca-crl.pem from the root holder holds no CRL; ask for a new `meshpki sign`")
    number = max(crl_number(c) or 0 for c in received)
    this_update = max(c.last_update_utc for c in received)
    next_update = min(c.next_update_utc or this_update for c in received)
    return roots_part + crl_pem(make_crl(cert, key, number, this_update, next_update))


def _crl_is_current(bundle: Bundle, state: CrlState, crls: Mapping[str, bytes]) -> bool:
    """The bundle's ca-crl.pem is exactly its roots' current CRLs + a CRL of this
    state's number signed by its own intermediate."""
    data = bundle.files.get(CA_CRL)
    if data is None:
        return False
    try:
        head = _roots_part(bundle.files, crls)
        if not data.startswith(head):
            return False
        own = parse_crls(data[len(head):], "ca-crl.pem")
        cert = parse_certs(bundle.files[CA_CERT], "ca-cert.pem")[0]
    except (MeshPKIError, KeyError):
        return False
    return (len(own) == 1 and signed_by(own[0], cert) and crl_number(own[0]) == state.number
            and own[0].next_update_utc == state.next_update_at)


# -- bringing the bundles in line -------------------------------------------------

def member_material(store: Store, cluster: str) -> tuple[Bundle, PrivateKey]:
    """A bundle as re-making its ca-crl.pem needs it: the four files present
    and whole, and ca-key.pem the key of ca-cert.pem (the intermediate signs
    its own CRL). Else BundleError naming the file; callers name the
    cluster, say what was (not) changed and give the fix."""
    bundle = store.load_bundle(cluster)
    return bundle, bundle.whole_key(store.cluster_dir(cluster))


def _member_fix(cluster: str) -> str:
    return (f"check it with meshpki verify {cluster}, then restore the file from a backup or replace the bundle "
            f"(meshpki rotate {cluster})")


def _ready_members(store: Store, leaving: Sequence[str] = ()) -> dict[str, PrivateKey]:
    """Before a commit: every member whose ca-crl.pem reconcile will re-make
    (all but `leaving`, evicted by the same commit) is proven whole, so a
    damaged one refuses the change instead of stopping it half-way. Returns
    their keys, so reconcile does not load them twice (RSA-4096: 0.25 s each)."""
    ready = {}
    for cluster in store.clusters():
        if cluster in leaving:
            continue
        try:
            ready[cluster] = member_material(store, cluster)[1]
        except BundleError as exc:
            raise RevocationError(f"{cluster}'s bundle is damaged, so its ca-crl.pem could not follow the new CRLs: "
                                  f"{exc}; nothing was changed: {_member_fix(cluster)}, and retry") from None
    return ready


def _commit_and_reconcile(store: Store, state: CrlState, signers: Sequence[tuple[x509.Certificate, SigningKey]],
                          evict: Sequence[dict[str, str]] = ()) -> list[str]:
    """Check every member, commit, then bring the bundles in line: how every
    CRL change is made."""
    leaving = [item["cluster"] for item in evict if item.get("kind") != "signed"]
    ready = _ready_members(store, leaving)
    _commit(store, state, signers, evict)
    return reconcile(store, ready)


def reconcile(store: Store, ready: Mapping[str, PrivateKey] | None = None) -> list[str]:
    """Finish a committed revocation: evict what it names, then give every
    member the ca-crl.pem of the current state. Idempotent; needs no
    passphrase (intermediate keys are in the bundles, root CRLs are signed).
    `ready`: member keys _ready_members() already loaded under this lock.
    A damaged member is left for last and named; the work stays pending."""
    state = load_state(store)
    if state is None:
        return []
    notes = []
    damaged: list[tuple[str, str]] = []
    with store.locked():
        notes += _drop_retired_root_crls(store)
        pending = _load_pending(store)
        for item in pending.get("evict", []):
            cluster, serial = item["cluster"], item["serial"]
            if item.get("kind") == "signed":
                if cluster in store.signed_clusters() and _serial_of_pem(store.signed_file(cluster, CA_CERT)) == serial:
                    archived = store.evict_signed(cluster)
                    notes.append(f"{cluster}: evicted from the signed inventory; kept in {archived}")
            elif store.has_cluster(cluster) and _serial_of(store.load_bundle(cluster)) == serial:
                archived = store.evict(cluster)
                notes.append(f"{cluster}: evicted; its bundle is kept in {archived}")
        crls = root_crls(store)
        for cluster in store.clusters():
            bundle = store.load_bundle(cluster)
            if _crl_is_current(bundle, state, crls):
                continue
            try:
                key = ready[cluster] if ready and cluster in ready else member_material(store, cluster)[1]
            except BundleError as exc:
                damaged.append((cluster, str(exc)))
                continue
            store.replace_bundle_file(cluster, CA_CRL, bundle_crl(state, crls, bundle.files, key))
            notes.append(f"{cluster}: ca-crl.pem re-made (CRL number {state.number})")
        if damaged:
            (cluster, why), more = damaged[0], len(damaged) - 1
            raise RevocationError(f"CRL number {state.number} is committed, but {cluster}'s bundle is damaged, so it "
                                  f"keeps its old ca-crl.pem: {why}"
                                  + (f" (and {more} more damaged bundle(s))" if more else "")
                                  + f"; {_member_fix(cluster)}; the next meshpki command then finishes the revocation")
        store.clear_crl_pending()
    return notes


def _live_roots(store: Store) -> list[x509.Certificate]:
    """The roots whose CRLs the store keeps: its root, and during a root rotation the new one."""
    roots = [store.root_cert()]
    if store.has_rotation():
        from meshpki import rotate

        roots.append(rotate.new_root_cert(store)[0])
    return roots


def _drop_retired_root_crls(store: Store) -> list[str]:
    """After rotate-root finish the old root's CRL has no one left to serve and
    would only go stale: republish crl/ without it (nothing is re-signed)."""
    live = {root_crl_name(root) for root in _live_roots(store)}
    retired = [n for n in _root_crl_names(store) if n not in live]
    if not retired:
        return []
    store.write_crl({name: store.crl_file(name) for name in store.crl_names() if name not in retired})
    return [f"dropped the CRL of a retired root ({', '.join(retired)})"]


def finish_pending(store: Store) -> list[str]:
    """Store recovery calls this: a revocation was committed, then meshpki died."""
    try:
        return ["finished an interrupted revocation: " + n for n in reconcile(store)]
    except (MeshPKIError, OSError, KeyError, ValueError) as exc:  # recovery must never make a command fail
        return [f"an interrupted revocation is not finished yet ({exc})"]


def _load_pending(store: Store) -> dict[str, list[dict[str, str]]]:
    if not store.crl_pending():
        return {}
    try:
        data = json.loads(store.crl_file(CRL_PENDING_FILE))
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}


def _serial_of(bundle: Bundle) -> str | None:
    return _serial_of_pem(bundle.files.get(CA_CERT, b""))


def _serial_of_pem(cert_pem: bytes) -> str | None:
    try:
        return format(parse_certs(cert_pem, "ca-cert.pem")[0].serial_number, "x")
    except MeshPKIError:
        return None


# -- signing the roots' CRLs ------------------------------------------------------

def root_signers(store: Store, passphrase: bytes | None) -> list[tuple[x509.Certificate, SigningKey]]:
    """Every root that is trusted now, with its key (root_issuers)."""
    return [(issuer.cert, issuer.key) for issuer in root_issuers(store, passphrase)]


def root_issuers(store: Store, passphrase: bytes | None) -> list[Issuer]:
    """Every root that is trusted now, unlocked exactly as issue does: the
    store's root, and during a root rotation also the new one. The last is
    the one that signs intermediates now (rotate.current_issuer)."""
    from meshpki import ca, rotate

    above = store.signer_chain_pem()
    if above:
        top = parse_certs(above, "root/chain.pem")[-1].subject.rfc4514_string()
        raise RevocationError(
            f"the store signs as an intermediate under {top}; istiod would then need in every bundle a CRL "
            "signed by each certificate above it, which only their owner can sign: revoke through that CA, or "
            "rotate-root to a root of the store's own")
    issuers = [ca.store_issuer(store, passphrase)]
    if store.has_rotation():
        issuers.append(rotate.current_issuer(store, passphrase))
    for issuer in issuers:
        if not may_sign_crls(issuer.cert):
            raise RevocationError(
                f"the root {issuer.cert.subject.rfc4514_string()} may not sign CRLs (its keyUsage lacks cRLSign), so "
                "istiod would refuse every bundle's ca-crl.pem; nothing was changed. Replace the cluster's "
                "intermediate instead (meshpki rotate CLUSTER), or move the mesh to a root of meshpki's own "
                "(meshpki rotate-root begin), which may")
    return issuers


def may_sign_crls(cert: x509.Certificate) -> bool:
    """Go (istiod) checks a CRL against a signer whose keyUsage, when it has
    one, includes cRLSign; Istio's Makefile root has none of that bit."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.KeyUsage).value.crl_sign)
    except x509.ExtensionNotFound:
        return True


def _commit(store: Store, state: CrlState, signers: Sequence[tuple[x509.Certificate, SigningKey]],
            evict: Sequence[dict[str, str]] = ()) -> Path | None:
    """Sign every live root's CRL and publish them with the state: the commit point."""
    files = {CRL_STATE_FILE: state.to_json()}
    for root, key in signers:
        entries = [r for r in state.revoked if r.issuer == fingerprint(root)]
        files[root_crl_name(root)] = crl_pem(make_crl(root, key, state.number, state.this_update_at,
                                                       state.next_update_at, entries))
    files[CRL_PENDING_FILE] = json.dumps({"evict": list(evict)}).encode() + b"\n"
    return store.write_crl(files)


def _next_state(previous: CrlState | None, revoked: Sequence[Revoked], days: int | None,
                now: dt.datetime) -> CrlState:
    days = check_days(days if days is not None else (previous.days if previous else DEFAULT_CRL_DAYS))
    this_update = now - profiles.CLOCK_SKEW  # backdated like certificates: a cluster's clock may lag ours
    return CrlState(
        number=(previous.number if previous else 0) + 1,
        this_update=this_update.isoformat(timespec="seconds"),
        next_update=(now + dt.timedelta(days=days)).isoformat(timespec="seconds"),
        days=days,
        revoked=tuple(revoked),
    )


def _now_seconds(now: dt.datetime | None) -> dt.datetime:
    return (now or profiles.utcnow()).replace(microsecond=0)


# -- the commands ----------------------------------------------------------------

@dataclass(frozen=True)
class RevokeResult:
    revoked: tuple[Revoked, ...]
    number: int
    next_update: str
    notes: tuple[str, ...]


def _entry(cluster: str, cert: x509.Certificate, roots: Sequence[x509.Certificate], reason: str, now: dt.datetime,
           evicted: bool) -> Revoked | None:
    """The CRL entry for `cert`, under the live root that signed it (None: no live root did)."""
    for root in roots:
        if not issued_by(cert, root):
            continue
        return Revoked(cluster, format(cert.serial_number, "x"), fingerprint(root), reason,
                       now.isoformat(timespec="seconds"),
                       cert.not_valid_after_utc.isoformat(timespec="seconds"), evicted)
    return None


def _check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise InputError(f"unknown revocation reason {reason!r}; use one of {', '.join(REASONS)}")
    return reason


def revoke(store: Store, cluster: str, passphrase: bytes | None, reason: str = DEFAULT_REVOKE_REASON,
           all_history: bool = False, now: dt.datetime | None = None) -> RevokeResult:
    """Evict `cluster`: its intermediate (with all_history, every archived one
    still valid) goes on its root's CRL, its bundle leaves the members for
    history, and every remaining member gets the new ca-crl.pem."""
    validate_cluster_name(cluster)
    _check_reason(reason)
    now = _now_seconds(now)
    with store.locked():
        state = load_state(store)
        site = cluster in store.signed_clusters()  # signed from a CSR; its key lives at its site (byo.py)
        if not store.has_cluster(cluster) and not site:
            earlier = state.evicted_entry(cluster) if state else None
            if earlier is not None:
                raise RevocationError(f"cluster {cluster!r} was already revoked on {earlier.revoked_at} "
                                      f"(serial {openssl_serial(earlier.serial)}); nothing to do (`meshpki crl show` lists it)")
            if cluster in store.clusters():  # its folder, without the certificate to put on the CRL
                raise RevocationError(f"{store.cluster_dir(cluster) / CA_CERT} is missing, so which intermediate of "
                                      f"{cluster} to revoke is unknown; nothing was changed: restore the file from a "
                                      "backup (the cluster's live cacerts secret holds it too), then retry")
            known = ", ".join(store.clusters() + store.signed_clusters()) or "none"
            raise InputError(f"unknown cluster {cluster!r}: not a member of store {store.path} (members: {known})")
        signers = root_signers(store, passphrase)  # proves the passphrase before anything is written
        roots = [root for root, _ in signers]
        current_pem = store.signed_file(cluster, CA_CERT) if site else store.load_bundle(cluster).files[CA_CERT]
        certs = [parse_certs(current_pem, f"{cluster}: ca-cert.pem")[0]]
        if all_history:
            certs += _archived_valid(store, cluster, now)
        done = {r.serial for r in state.revoked} if state else set()
        new, notes = [], []
        for cert in certs:
            entry = _entry(cluster, cert, roots, reason, now, evicted=True)
            if entry is None:
                notes.append(f"{cluster}: serial {openssl_serial(cert.serial_number)} was signed by a root no cluster "
                             "trusts any more; no CRL entry needed")
            elif entry.serial not in done:
                new.append(entry)
                done.add(entry.serial)
        current = format(certs[0].serial_number, "x")
        new_state = _next_state(state, (state.revoked if state else ()) + tuple(new), None, now)
        notes += _commit_and_reconcile(
            store, new_state, signers, evict=[{"cluster": cluster, "serial": current, "kind": "signed" if site else "member"}])
        notes += site_notes(store)
    return RevokeResult(tuple(new), new_state.number, new_state.next_update, tuple(notes))


def _archived_valid(store: Store, cluster: str, now: dt.datetime) -> list[x509.Certificate]:
    found = []
    for entry in store.history(cluster):
        try:
            cert = parse_certs((entry.path / CA_CERT).read_bytes(), str(entry.path / CA_CERT))[0]
        except (OSError, MeshPKIError):
            continue
        if cert.not_valid_after_utc > now:
            found.append(cert)
    return found


def revoke_replaced(store: Store, replaced: Sequence[tuple[str, x509.Certificate]], passphrase: bytes | None,
                    reason: str = "superseded", now: dt.datetime | None = None,
                    signers: Sequence[tuple[x509.Certificate, SigningKey]] | None = None) -> RevokeResult:
    """`rotate --revoke-previous`: the intermediates a rotation just replaced go
    on the CRL; the clusters stay members with their new bundles. `signers`:
    root_signers() already unlocked by the caller, before it changed anything."""
    _check_reason(reason)
    now = _now_seconds(now)
    with store.locked():
        state = load_state(store)
        signers = list(signers) if signers is not None else root_signers(store, passphrase)
        done = {r.serial for r in state.revoked} if state else set()
        new: list[Revoked] = []
        for cluster, cert in replaced:
            entry = _entry(cluster, cert, [root for root, _ in signers], reason, now, evicted=False)
            if entry is not None and entry.serial not in done:
                new.append(entry)
                done.add(entry.serial)
        new_state = _next_state(state, (state.revoked if state else ()) + tuple(new), None, now)
        notes = _commit_and_reconcile(store, new_state, signers) + site_notes(store)
    return RevokeResult(tuple(new), new_state.number, new_state.next_update, tuple(notes))


def renew(store: Store, passphrase: bytes | None, days: int | None = None,
          now: dt.datetime | None = None) -> RevokeResult:
    """Re-sign every CRL with a new number and nextUpdate; every bundle follows."""
    now = _now_seconds(now)
    if days is not None:
        check_days(days)
    with store.locked():
        state = load_state(store)
        if state is None:
            raise RevocationError("nothing is revoked yet, so there is no CRL to renew (bundles carry no "
                                  "ca-crl.pem until the first `meshpki revoke`)")
        signers = root_signers(store, passphrase)
        new_state = _next_state(state, state.revoked, days, now)
        notes = _commit_and_reconcile(store, new_state, signers) + site_notes(store)
    return RevokeResult((), new_state.number, new_state.next_update, tuple(notes))


def site_notes(store: Store) -> list[str]:
    """After the CRLs changed: the sites this store signed from a CSR are not
    reached by reconcile (their keys are elsewhere) and need an export each."""
    sites = store.signed_clusters()
    if not sites or load_state(store) is None:
        return []
    return [f"sites signed from a CSR need these CRLs too: for each of {shortlist(sites)}, send the file of "
            "meshpki crl export SITE --out FILE to that site, which runs meshpki crl refresh SITE FILE"]


def refuse_renew_at_site(store: Store) -> None:
    """A store with bundles but no root is a site (its clusters signed from a
    CSR): `crl renew` there would only say to make a root, the wrong fix."""
    if not store.has_root() and store.clusters():
        raise InputError(f"store {store.path} holds no root: its clusters' CRLs come from the root holder; get "
                         "`meshpki crl export CLUSTER --out FILE` from there, then run meshpki crl refresh CLUSTER FILE here")


def after_root_added(store: Store, passphrase: bytes | None) -> list[str]:
    """rotate-root begin: the new root gets its own (empty) CRL at once, so
    bundles that trust it, and later chains under it, satisfy istiod."""
    with store.locked():
        state = load_state(store)
        if state is None:
            return []
        signers = root_signers(store, passphrase)
        sound, _ = _sound_root_crls(store)  # a damaged one is signed anew, like a missing one
        if all(root_crl_name(root) in sound for root, _ in signers) and not store.crl_pending():
            return reconcile(store)
        return _commit_and_reconcile(store, _next_state(state, state.revoked, None, _now_seconds(None)), signers)


# -- showing -----------------------------------------------------------------------

@dataclass(frozen=True)
class CrlInfo:
    """One signed CRL: who signed it, its number and its window."""

    issuer: str
    where: str  # "root <fingerprint16>" or a cluster name
    number: int | None
    this_update: dt.datetime
    next_update: dt.datetime | None
    entries: int


def describe(crl: x509.CertificateRevocationList, where: str) -> CrlInfo:
    return CrlInfo(crl.issuer.rfc4514_string(), where, crl_number(crl), crl.last_update_utc,
                   crl.next_update_utc, len(list(crl)))


@dataclass(frozen=True)
class CrlReport:
    state: CrlState | None
    crls: tuple[CrlInfo, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "active": self.state is not None,
            "number": self.state.number if self.state else None,
            "next_update": self.state.next_update if self.state else None,
            "revoked": [r.to_dict() for r in self.state.revoked] if self.state else [],
            "crls": [{"issuer": c.issuer, "where": c.where, "number": c.number,
                      "this_update": c.this_update.isoformat(timespec="seconds"),
                      "next_update": c.next_update.isoformat(timespec="seconds") if c.next_update else None,
                      "entries": c.entries} for c in self.crls],
        }


def show(store: Store) -> CrlReport:
    """What is revoked, and every CRL the store holds (roots' and bundles').
    A site's store (clusters signed from a CSR) has no state of its own: its
    bundles' CRLs, the root holder's included, are all it can show."""
    state = load_state(store)
    infos = []
    for name, root_pem in root_crls(store).items():
        for crl in parse_crls(root_pem, f"crl/{name}"):
            infos.append(describe(crl, "root " + name[len("root-"):-len(".crl.pem")]))
    for cluster in store.clusters():
        files = store.load_bundle(cluster).files
        data = files.get(CA_CRL)
        if data is None:
            continue
        try:
            cert: x509.Certificate | None = parse_certs(files.get(CA_CERT, b""), "ca-cert.pem")[0]
        except BundleError:
            cert = None  # a damaged bundle (verify names it): its own CRL cannot be told apart
        for crl in parse_crls(data, f"{cluster}: ca-crl.pem"):
            if cert is not None and signed_by(crl, cert):
                infos.append(describe(crl, cluster))
            elif state is None:
                infos.append(describe(crl, f"root, in {cluster}'s ca-crl.pem"))
    return CrlReport(state, tuple(infos))
