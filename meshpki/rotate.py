"""Rotation: new intermediates (`rotate`) and a root change with no outage
(`rotate-root begin | reissue | finish | status`).

The root sequence is Istio's (docs/istio.md): A -> trust A+B everywhere ->
re-issue every intermediate under B (still trusting A+B) -> wait one
workload certificate lifetime -> trust B alone. istiod (up to 1.30) takes a
root change live only when the new root-cert.pem contains the old one byte
for byte, so `begin` appends B after each cluster's existing root-cert.pem
exactly as it is, and never re-encodes it.

Every step reads the facts from the bundles themselves (which root signed an
intermediate, which roots a bundle trusts) rather than trusting a progress
counter, so each step is idempotent and resumes cleanly after a kill.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from meshpki import byo, ca, crl, keys, pem, profiles
from meshpki.bundle import ROOT_CERT, Bundle, cert_to_pem, fingerprint, join_pem, parse_certs
from meshpki.credentials import RootSecret
from meshpki.errors import BundleError, InputError, MeshPKIError, StoreError
from meshpki.keys import KeyType
from meshpki.limits import MAX_NAME_LENGTH
from meshpki.pathbuild import signed_by
from meshpki.store import ROOT_CERT_FILE, ROOT_KEY_URI_FILE, Store

STATE_FILE = "state.json"
DEFAULT_GRACE = profiles.WORKLOAD_TTL  # a workload cert signed just before the reissue lives this long


class RotationError(MeshPKIError):
    """A rotate-root step is refused (wrong phase, too early, nothing to do)."""


# -- intermediate rotation ---------------------------------------------------

def issue_now(store: Store, clusters: Sequence[str], options: ca.IssueOptions, passphrase: bytes | None,
              replace: bool = False, progress: Callable[[int, int], None] | None = None,
              issuer: ca.Issuer | None = None) -> list[ca.IssueResult]:
    """`issue` and `rotate` both land here: during a root rotation new
    intermediates are signed by the new root, trust old+new, and restart the
    grace clock like a reissue does.

    The signing key is unlocked (scrypt, 0.6 s of one core) while the key
    workers run, not before them, unless the caller unlocked it already (`issuer`).
    """
    def unlock() -> ca.Issuer:
        ready = issuer or current_issuer(store, passphrase)
        if store.has_rotation():
            _note_reissue(store)  # before the first new bundle exists
        return ready

    with store.locked():
        signer = new_root_cert(store)[0] if under_way(store) else store.root_cert()
        return ca.issue(store, clusters, options, unlock, replace=replace, progress=progress, signer=signer)


def sign_now(store: Store, csr_pem: bytes, what: str, passphrase: bytes | None, out: Path,
             cluster: str | None = None, days: int = ca.DEFAULT_INTERMEDIATE_DAYS,
             san_dns: Sequence[str] = (profiles.DEFAULT_ISTIOD_SAN,)) -> byo.SignResult:
    """`sign` lands here, as `issue` does: during a root rotation a site's CA is
    signed by the new root, its root-cert.pem is old+new, and the signing
    restarts the grace clock like a reissue (its site pushes it after)."""
    issuer = current_issuer(store, passphrase)
    note = (lambda: _note_reissue(store)) if store.has_rotation() else None
    return byo.sign_csr(store, csr_pem, what, issuer, out, cluster=cluster, days=days, san_dns=san_dns,
                        before_write=note)


def rotate(store: Store, clusters: Sequence[str], options: ca.IssueOptions, passphrase: bytes | None,
           progress: Callable[[int, int], None] | None = None,
           revoke_previous: bool = False) -> list[ca.IssueResult]:
    """A new key and intermediate for existing clusters; the old bundle goes to
    history. With revoke_previous the replaced intermediates go on the root's
    CRL in the same locked step (after a suspected leak the old key must not
    stay valid for the rest of its life)."""
    if not clusters:
        raise InputError("name at least one cluster to rotate")
    for name in clusters:
        store.load_bundle(name)  # raises "no bundle ... run meshpki issue" for unknown clusters
    with store.locked():
        if not revoke_previous:
            return issue_now(store, clusters, options, passphrase, replace=True, progress=progress)
        previous = [(name, parse_certs(store.load_bundle(name).ca_cert or b"", f"{name}: ca-cert.pem")[0])
                    for name in clusters]
        # Every key is unlocked before anything changes: a wrong passphrase changes nothing.
        # Then the revocation is committed BEFORE the new bundles: killed in between, the
        # replaced intermediates are revoked already and verify flags their clusters (a CRL
        # revoking the bundle's own intermediate) until `rotate` runs again; never a rotated
        # cluster whose replaced, maybe leaked, intermediate stays valid.
        issuers = crl.root_issuers(store, passphrase)  # each root key unlocked once (scrypt)
        crl.revoke_replaced(store, previous, passphrase, signers=[(i.cert, i.key) for i in issuers])
        return issue_now(store, clusters, options, passphrase, replace=True, progress=progress,
                         issuer=issuers[-1])


# -- the root rotation's state -----------------------------------------------

@dataclass(frozen=True)
class RotationState:
    """What cannot be read off the bundles: when things happened."""

    started: str
    old_root_sha256: str
    new_root_sha256: str
    last_reissue: str | None = None
    last_push: str | None = None
    pushed_trust: list[str] = field(default_factory=list)
    """Clusters whose last push gave them a bundle that trusts the new root (push's peer guard)."""

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> RotationState:
        try:
            state = cls(**json.loads(data))
            if not isinstance(state.old_root_sha256, str) or not isinstance(state.new_root_sha256, str):
                raise TypeError("a root's sha256 is not text")
            stamps = [s for s in (state.started, state.last_reissue, state.last_push) if s is not None]
            if any(dt.datetime.fromisoformat(s).tzinfo is None for s in stamps):  # finish compares them with now
                raise ValueError("a time without its UTC offset")
            return state
        except (ValueError, TypeError) as exc:
            raise RotationError(f"rotation state is damaged ({exc}); inspect the store's rotation/ folder") from None

    def grace_starts(self) -> dt.datetime | None:
        stamps = [dt.datetime.fromisoformat(s) for s in (self.last_reissue, self.last_push) if s]
        return max(stamps) if stamps else None


def _now_text() -> str:
    return profiles.utcnow().isoformat(timespec="seconds")


def load_state(store: Store) -> RotationState:
    try:
        data = store.rotation_file(STATE_FILE)
    except MeshPKIError as exc:
        raise _damaged(str(exc)) from None
    return RotationState.from_json(data)


def _damaged(problem: str) -> StoreError:
    """One line for a rotation/ file that is missing, broken or contradicts the rest:
    the way back is the same for each (never guess which root is which)."""
    problem = problem.removesuffix("; the store is damaged")
    return StoreError(problem if "the store is damaged" in problem else
                      f"{problem}; the store is damaged: restore rotation/ from a backup")


def _save_state(store: Store, state: RotationState) -> None:
    store.write_rotation_file(STATE_FILE, state.to_json())


def under_way(store: Store) -> bool:
    """Is a root rotation under way? A rotation/ folder without its root-cert.pem is
    damage, not "none": steps would start a second rotation or skip this one."""
    if store.has_rotation():
        return True
    if store.rotation_dir.exists() or store.rotation_dir.is_symlink():
        raise _damaged(f"{store.rotation_dir / ROOT_CERT_FILE} is missing or not a file")
    return False


def _require_rotation(store: Store) -> RotationState:
    if not under_way(store):
        raise RotationError("no root rotation is under way; start one with `meshpki rotate-root begin`")
    return _checked_rotation(store)[0]


def new_root_cert(store: Store) -> tuple[x509.Certificate, bytes]:
    """Root B, proven to be the root state.json records (see _checked_rotation)."""
    _, cert, cert_pem = _checked_rotation(store)
    return cert, cert_pem


def _checked_rotation(store: Store) -> tuple[RotationState, x509.Certificate, bytes]:
    """The rotation's state and root B, refused when the files contradict state.json:
    every step takes rotation/root-cert.pem for B, so A copied over it made reissue
    call every cluster done and finish make A the root again beside B's key."""
    state = load_state(store)
    try:
        cert_pem = store.rotation_file(ROOT_CERT_FILE)
        certs = parse_certs(cert_pem, "rotation/root-cert.pem")
    except MeshPKIError as exc:
        raise _damaged(str(exc)) from None
    if len(certs) != 1 or fingerprint(certs[0]) != state.new_root_sha256:
        raise _damaged(f"rotation/root-cert.pem is not the new root rotation/state.json records "
                       f"(sha256 {state.new_root_sha256[:16]})")
    if not _is_ca(certs[0]):
        raise _damaged("rotation/root-cert.pem is not a CA certificate")
    # the store's root is A, or already B when a finish was killed after swapping it
    if state.old_root_sha256 == state.new_root_sha256 or \
            fingerprint(store.root_cert()) not in (state.old_root_sha256, state.new_root_sha256):
        raise StoreError("root/root-cert.pem is neither root rotation/state.json records; the store is damaged: "
                         "restore root/ and rotation/ from a backup")
    return state, certs[0], cert_pem


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def current_issuer(store: Store, passphrase: bytes | None) -> ca.Issuer:
    """Who signs new intermediates now: B during a rotation (trusting A+B), else the root."""
    if not under_way(store):
        return ca.store_issuer(store, passphrase)
    cert, cert_pem = new_root_cert(store)
    key = store.load_key(store.rotation_dir, passphrase, "new root key")  # proven to match cert
    return ca.Issuer(cert, cert_pem, key, join_pem(store.root_cert_pem(), cert_pem))


def issued_by(bundle: Bundle, root: x509.Certificate) -> bool:
    """True when the bundle's intermediate carries `root`'s signature (pathbuild's one rule)."""
    if bundle.ca_cert is None:
        return False
    try:
        cert = parse_certs(bundle.ca_cert, "ca-cert.pem")[0]
    except MeshPKIError:  # unparsable: not issued by root
        return False
    return signed_by(cert, root)


def trusts(bundle: Bundle, root: x509.Certificate) -> bool:
    return fingerprint(root) in _trusted(bundle)


# -- begin / reissue / finish -------------------------------------------------

@dataclass(frozen=True)
class StepResult:
    """What a rotate-root step changed, for the CLI to confirm."""

    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    notes: tuple[str, ...] = ()
    sites: tuple[ClusterRotation, ...] = ()  # clusters signed from a CSR: their sites act themselves


def require_whole(store: Store, clusters: Sequence[str]) -> None:
    """Refuse, before anything is made or written, a bundle a step would rewrite
    that is not whole: each step copies the files it keeps, so a missing or broken
    one would be dropped (a bundle istiod refuses) or end in a traceback after
    root B was made."""
    for cluster in clusters:
        try:
            store.load_bundle(cluster).whole_key()
        except MeshPKIError as exc:
            raise BundleError(f"{cluster}: {exc}; nothing was changed: restore it, or `meshpki issue {cluster} "
                              f"--force` (`meshpki verify {cluster}` shows the rest)") from None


def begin(store: Store, key_type: KeyType | None, days: int, passphrase: bytes | None,
          org: str | None = None, new_passphrase: bytes | None = None,
          token: ca.TokenTarget | None = None) -> StepResult:
    """Make root B and let every cluster trust A+B (intermediates unchanged).

    `passphrase` unlocks root A (its PIN when A is in a token). B's key is
    made in `token` when given, else in a file encrypted with
    `new_passphrase`, else with A's passphrase. Resumable: run again after a
    kill and it finishes the clusters it had not reached; the new root is
    made only once.
    """
    ca.check_days(days)
    old_root = store.root_cert()
    if store.signer_chain_pem():
        raise RotationError(
            "the store signs with an adopted intermediate under another root (init-root --import-chain); "
            "meshpki rotates only roots it holds: rotate the cluster CAs with `meshpki rotate`, and the root "
            "with the PKI that owns it")
    notes = []
    with store.locked():
        require_whole(store, store.clusters())  # before B exists: a refusal leaves no rotation behind
        crl.load_state(store)  # so is a store that lost crl/state.json (B's CRL would drop every revocation)
        if not under_way(store):
            old_key = store.load_root_key(passphrase)  # proves the passphrase before making B
            chosen = key_type or ca.key_type_of(old_key)
            with ca.recorded_root_key(chosen, new_passphrase or passphrase, token) as (key, key_name, record):
                cert = profiles.make_root(key, days, org=org or ca.organization_of(old_root),
                                          cn=_root_cn(old_root))
                state = RotationState(_now_text(), fingerprint(old_root), fingerprint(cert))
                store.write_rotation({ROOT_CERT_FILE: cert_to_pem(cert), key_name: record,
                                      STATE_FILE: state.to_json()})
            notes.append(f"created new root {fingerprint(cert)[:16]} ({chosen.value})")
            # from here on both roots sign CRLs, each unlocked by its own secret
            passphrase = RootSecret(passphrase or b"", token.pin if token else (new_passphrase or passphrase))
        else:
            notes.append("a rotation was already under way; resuming it")
        new_cert, new_pem = new_root_cert(store)
        changed, unchanged = [], []
        for cluster in store.clusters():
            bundle = store.load_bundle(cluster)
            if trusts(bundle, new_cert):
                unchanged.append(cluster)
                continue
            files = dict(bundle.secret_data())
            files[ROOT_CERT] = join_pem(files[ROOT_CERT], new_pem)
            store.write_bundle(cluster, files, replace=True)
            changed.append(cluster)
        crl.after_root_added(store, passphrase)  # B's CRL, when the mesh has revoked something
    return StepResult(tuple(changed), tuple(unchanged), tuple(notes), site_rows(store))


def _root_cn(old_root: x509.Certificate) -> str:
    """Root B's common name: A's with a generation, "Root CA" -> "Root CA G2" -> "Root CA G3",
    so the two roots of a rotation (and audit rows about them) can be told apart."""
    import re

    cns = old_root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    base = str(cns[0].value) if cns else profiles.ROOT_CN
    found = re.fullmatch(r"(.*) G(\d+)", base)
    base, generation = (found.group(1), int(found.group(2)) + 1) if found else (base, 2)
    suffix = f" G{generation}"
    return base[:MAX_NAME_LENGTH - len(suffix)] + suffix


def pending_reissue(store: Store) -> list[str]:
    """Clusters whose intermediate is not yet signed by the new root."""
    new_cert, _ = new_root_cert(store)
    return [c for c in store.clusters() if not issued_by(store.load_bundle(c), new_cert)]


def pending_sites(store: Store) -> list[str]:
    """Clusters signed from a CSR (byo.py) whose inventory certificate is not
    yet signed by the new root: only their sites can change their bundles."""
    new_cert, _ = new_root_cert(store)
    return [c for c in store.signed_clusters() if not issued_by(store.load_signed(c), new_cert)]


def reissue(store: Store, clusters: Sequence[str], options: ca.IssueOptions, passphrase: bytes | None,
            progress: Callable[[int, int], None] | None = None) -> tuple[list[ca.IssueResult], list[str]]:
    """New intermediates under B, root-cert.pem stays A+B byte for byte.

    Returns the results and the clusters skipped because they are done.
    """
    _require_rotation(store)
    pending = pending_reissue(store)
    if clusters:
        unknown = [c for c in clusters if c not in store.clusters()]
        if unknown:
            raise InputError(f"unknown cluster(s) {', '.join(unknown)}; the store has {', '.join(store.clusters())}")
        targets = [c for c in clusters if c in pending]
    else:
        targets = pending
    skipped = [c for c in (clusters or store.clusters()) if c not in targets]
    if not targets:
        return [], skipped
    require_whole(store, targets)  # each keeps its root-cert.pem as it is: a broken one is not carried on
    issuer = current_issuer(store, passphrase)
    results = []
    with store.locked():
        _note_reissue(store)  # the grace clock starts before the first new bundle exists
        for cluster in targets:
            # keep the cluster's live root-cert.pem (A+B) byte for byte
            live_roots = store.load_bundle(cluster).root_cert or issuer.trust_pem
            per_cluster = ca.Issuer(issuer.cert, issuer.cert_pem, issuer.key, live_roots)
            results.extend(ca.issue(store, [cluster], options, per_cluster, replace=True, progress=progress))
    return results, skipped


def _note_reissue(store: Store) -> None:
    state = load_state(store)
    _save_state(store, RotationState(**{**state.__dict__, "last_reissue": _now_text()}))


def record_push(store: Store, cluster: str, bundle: Bundle, wrote: bool = True) -> None:
    """push.py calls this after each push: a written reissued bundle restarts the
    grace clock (workloads only get B certs once istiod has B), and whether the
    cluster now trusts B is noted (push sends a B intermediate only once every
    other cluster trusts B), a push that wrote nothing too. The state is
    written only when this changes it."""
    if not store.has_rotation():
        return
    new_cert, _ = new_root_cert(store)

    def changes(state: RotationState) -> dict[str, object]:
        found: dict[str, object] = {"last_push": _now_text()} if wrote and issued_by(bundle, new_cert) else {}
        trusting = sorted(set(state.pushed_trust) - {cluster} | ({cluster} if trusts(bundle, new_cert) else set()))
        return {**found, "pushed_trust": trusting} if trusting != state.pushed_trust else found

    if changes(load_state(store)):
        with store.locked():
            state = load_state(store)
            _save_state(store, RotationState(**{**state.__dict__, **changes(state)}))


def finish(store: Store, grace: dt.timedelta = DEFAULT_GRACE, force: bool = False,
           now: dt.datetime | None = None) -> StepResult:
    """Trust B alone; B becomes the store's root and A goes to history."""
    _require_rotation(store)  # refused before the lock, which would make a missing store folder
    with store.locked():
        return _finish_locked(store, grace, force, now)


def _finish_locked(store: Store, grace: dt.timedelta, force: bool, now: dt.datetime | None) -> StepResult:
    state = _require_rotation(store)
    require_whole(store, store.clusters())  # a broken bundle is named as such, not as one "under the old root"
    crl.load_state(store)  # a store that lost crl/state.json is refused before the old root is retired
    pending = pending_reissue(store)
    if pending:
        raise RotationError(
            f"{', '.join(pending)} still issue under the old root; run `meshpki rotate-root reissue` "
            "and push first (finishing now would break their workloads' certificates)"
        )
    sites = pending_sites(store)
    if sites:
        raise RotationError(
            f"{', '.join(sites)} (signed from a CSR) still issue under the old root; re-sign each "
            "(`meshpki rotate-root status` lists the steps) or `meshpki revoke` one that is gone "
            "(finishing now would break their workloads' certificates)"
        )
    now = now or profiles.utcnow()
    starts = state.grace_starts()
    if not force and starts is not None and now < starts + grace:
        wait = starts + grace - now
        raise RotationError(
            f"grace period not over: workloads may still hold certificates from the old chain until "
            f"{(starts + grace):%Y-%m-%d %H:%M} UTC ({_human(wait)} from now); wait, or pass --force"
        )
    new_cert, new_pem = new_root_cert(store)
    key_name, record = _new_key_record(store)  # before the first write: B without its key cannot be the root
    changed, unchanged = [], []
    for cluster in store.clusters():
        bundle = store.load_bundle(cluster)
        files = dict(bundle.secret_data())
        if files[ROOT_CERT] == new_pem:
            unchanged.append(cluster)
            continue
        files[ROOT_CERT] = new_pem
        store.write_bundle(cluster, files, replace=True)
        changed.append(cluster)
    if fingerprint(store.root_cert()) != fingerprint(new_cert):
        store.retire_root(new_pem, record, key_name)
    archived = store.end_rotation()
    crl.reconcile(store)  # ca-crl.pem drops the old root's CRL with the old root
    return StepResult(tuple(changed), tuple(unchanged), (f"old root archived; rotation record in {archived}",),
                      site_rows(store))


def _new_key_record(store: Store) -> tuple[str, bytes]:
    """B's key record, which finish makes the root's without unlocking it (it has no
    passphrase): proven present and a key, and B's own when it is a plain PEM."""
    try:
        name, record = store.key_record(store.rotation_dir)
        if name == ROOT_KEY_URI_FILE:
            from meshpki import hsm

            hsm.TokenURI.parse(record.decode("utf-8", "replace"))
        elif not keys.is_encrypted_pem(record):
            store.load_key(store.rotation_dir, None, "new root key")
        else:
            first = pem.decode(record).first
            if first is None or not first.label.endswith("PRIVATE KEY"):
                raise StoreError(f"{store.rotation_dir / name} holds no PEM private key")
    except MeshPKIError as exc:
        raise _damaged(str(exc)) from None
    return name, record


def _human(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


# -- status --------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterRotation:
    cluster: str
    issuer: str  # "root" (no rotation), "old", "new" or "other"
    trusts: tuple[str, ...]  # the same names, or a fingerprint prefix for anything else
    next: str | None = None  # a site signed from a CSR: what it and the root holder still have to do

    def to_dict(self) -> dict[str, object]:
        return {"cluster": self.cluster, "issuer": self.issuer, "trusts": list(self.trusts)}

    def site_dict(self) -> dict[str, object]:
        return {**self.to_dict(), "next": self.next}


@dataclass(frozen=True)
class RotationStatus:
    phase: str  # none | trusting-both | reissuing | grace | ready-to-finish
    clusters: tuple[ClusterRotation, ...]
    old_root: str
    new_root: str | None
    grace_ends: str | None
    sites: tuple[ClusterRotation, ...] = ()  # signed from a CSR, read from the inventory

    def to_dict(self) -> dict[str, object]:
        return {"phase": self.phase, "old_root": self.old_root, "new_root": self.new_root,
                "grace_ends": self.grace_ends, "clusters": [c.to_dict() for c in self.clusters],
                "sites": [s.site_dict() for s in self.sites]}


class _Roots:
    """The store's root and a rotation's new one, named as status shows them."""

    def __init__(self, store: Store) -> None:
        self.old = store.root_cert()
        self.new = new_root_cert(store)[0] if under_way(store) else None
        self.names = {fingerprint(self.old): "old" if self.new is not None else "root"}
        if self.new is not None:
            self.names[fingerprint(self.new)] = "new"
        # what a bundle signed now trusts, outside a rotation (an adopted signer's is another PKI's root)
        self.shipped = {fingerprint(c) for c in parse_certs(ca.trust_pem(store), "root-cert.pem")}

    def row(self, cluster: str, bundle: Bundle) -> ClusterRotation:
        issuer = ("new" if self.new is not None and issued_by(bundle, self.new)
                  else self.names[fingerprint(self.old)] if issued_by(bundle, self.old) else "other")
        return ClusterRotation(cluster, issuer, tuple(self.names.get(f, f[:16]) for f in _trusted(bundle)))

    def site_todo(self, row: ClusterRotation, bundle: Bundle) -> str | None:
        """During a rotation a site follows it by a new certificate under the new root;
        after one, by one more that drops the retired root from its trust."""
        if self.new is not None:
            return None if row.issuer == "new" else "re-sign it under the new root (after begin's push, before reissue's)"
        if row.issuer == "root" and set(_trusted(bundle)) == self.shipped:
            return None
        return "re-sign it to trust the current root alone"


def _trusted(bundle: Bundle) -> list[str]:
    """The fingerprints of the roots in a bundle's root-cert.pem, in order ([] when unreadable)."""
    try:
        return [fingerprint(r) for r in parse_certs(bundle.root_cert or b"", "root-cert.pem")]
    except MeshPKIError:
        return []


def site_rows(store: Store) -> tuple[ClusterRotation, ...]:
    """Every cluster signed from a CSR, as its inventory copy shows it, and what
    its site must still do (its key is there, so no rotate-root step reaches it)."""
    roots = _Roots(store)
    rows = []
    for site in store.signed_clusters():
        bundle = store.load_signed(site)
        row = roots.row(site, bundle)
        todo = roots.site_todo(row, bundle)
        rows.append(ClusterRotation(row.cluster, row.issuer, row.trusts, todo and f"{todo}: {_resign_steps(site)}"))
    return tuple(rows)


def _resign_steps(site: str) -> str:
    return (f"at its site `meshpki csr {site} --out {site}.csr` (--force if one is pending), here "
            f"`meshpki sign {site}.csr --out signed-{site}`, at its site `meshpki complete {site} signed-{site}` "
            "and push it")


def status(store: Store, grace: dt.timedelta = DEFAULT_GRACE, now: dt.datetime | None = None) -> RotationStatus:
    roots = _Roots(store)
    rows = tuple(roots.row(cluster, store.load_bundle(cluster)) for cluster in store.clusters())
    sites = site_rows(store)
    if roots.new is None:
        return RotationStatus("none", rows, fingerprint(roots.old), None, None, sites)
    state = load_state(store)
    starts = state.grace_starts()
    grace_ends = starts + grace if starts else None
    every = rows + sites
    if any(r.issuer != "new" for r in every):
        phase = "reissuing" if any(r.issuer == "new" for r in every) else "trusting-both"
    elif grace_ends and (now or profiles.utcnow()) < grace_ends:
        phase = "grace"
    else:
        phase = "ready-to-finish"
    return RotationStatus(phase, rows, fingerprint(roots.old), fingerprint(roots.new),
                          grace_ends.isoformat(timespec="seconds") if grace_ends else None, sites)
