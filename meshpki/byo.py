"""Bring your own PKI: CSRs so a cluster key never travels, and adopting a CA.

Two doors into meshpki for meshes that already exist (docs/byo-pki.md):

- csr / sign / complete: the cluster's intermediate key is generated at the
  cluster's site and stays there as a *pending* bundle; only a CSR travels to
  the root holder, who signs it with meshpki's own profile (nothing is copied
  from the CSR but the public key and the cluster name) and keeps an
  inventory of what it signed; the site then completes its bundle.
- import: the store's signer becomes an existing CA (Istio's Makefile root,
  a corporate intermediate with its chain, or istiod's self-signed root read
  from a live cluster), its key kept encrypted like a new root's.

Every check runs before the first byte is written, so a refusal leaves the
store as it was.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from meshpki import ca, crl, keys, pem, profiles, publish
from meshpki.bundle import CA_CERT, CA_CRL, CA_KEY, CERT_CHAIN, ROOT_CERT, cert_to_pem, parse_certs
from meshpki.errors import BundleError, InputError, MeshPKIError, StoreError
from meshpki.keys import KeyType
from meshpki.pathbuild import signed_by
from meshpki.store import Store, is_cluster_name, validate_cluster_name

if TYPE_CHECKING:
    from meshpki.kube import SecretRef

CSR_FILE = "request.csr"
# What `sign` writes for the site: the certificate files of a bundle, never a key.
SIGNED_FILES = (CA_CERT, CERT_CHAIN, ROOT_CERT)
MAX_CSR_BYTES = 64 * 1024
# istiod's own CA secret (docs/istio.md, "The secret").
ISTIOD_CA_SECRET = "istio-ca-secret"


class AdoptError(MeshPKIError):
    """An existing CA cannot be adopted as it is."""


# -- at the site: a key that never leaves ----------------------------------------------

@dataclass(frozen=True)
class CsrResult:
    cluster: str
    pending: Path
    csr_pem: bytes
    out: Path | None  # where the request was written; None: the caller prints it


def check_request(cluster: str, org: str, san_dns: Sequence[str]) -> None:
    """What a request names, checked before any key is made (as issue does)."""
    validate_cluster_name(cluster)
    profiles.check_name(org, "--org")
    profiles.check_san_dns(san_dns)


def make_csr(store: Store, cluster: str, key_type: KeyType, org: str = profiles.DEFAULT_ORG,
             san_dns: Sequence[str] = (profiles.DEFAULT_ISTIOD_SAN,), replace: bool = False,
             out: Path | None = None) -> CsrResult:
    """Generate the intermediate key here and keep it pending; write the CSR to `out`.

    The subject and SAN are what `issue` would use, so the root holder can
    read the cluster name from the CSR; `sign` still decides the profile.
    The request is written before the key is kept: a request that cannot be
    written leaves no pending key behind (a retry would need --force).
    """
    check_request(cluster, org, san_dns)
    check_csr_out(store, out)
    made_store = not store.path.exists()
    try:
        with store.locked():
            if not replace:
                store.refuse_pending(cluster)  # before spending time on a key
            key = key_type.generate()
            builder = x509.CertificateSigningRequestBuilder().subject_name(
                profiles.ca_name(org, profiles.INTERMEDIATE_CN, cluster))
            if san_dns:
                builder = builder.add_extension(
                    x509.SubjectAlternativeName([x509.DNSName(d) for d in san_dns]), critical=False)
            csr_pem = builder.sign(key, keys.signature_hash(key)).public_bytes(serialization.Encoding.PEM)
            with _delivering(out, {out: csr_pem} if out else {}):
                path = store.write_pending(cluster, {CA_KEY: keys.to_pem(key), CSR_FILE: csr_pem}, replace=replace)
    except BaseException:
        if made_store:  # a new site store that recorded nothing is not left behind as a folder holding .lock
            store.remove_if_empty()
        raise
    return CsrResult(cluster, path, csr_pem, out)


def check_csr_out(store: Store, out: Path | None) -> None:
    """csr's --out (None: stdout): outside the store, in a folder that exists (checked before a key is made)."""
    store.refuse_output(out, "--out")
    if out is not None and not out.parent.is_dir():
        raise InputError(f"--out {out}: {out.parent} is not a folder; create it first")


def complete(store: Store, cluster: str, folder: Path) -> Path | None:
    """Join the pending key with the certificates the root holder sent back.

    The certificate must carry the pending key and chain, link by link, to a
    root in root-cert.pem; then the full bundle replaces any old one (which
    goes to history) in one atomic step, and the pending key is dropped.
    Returns where a replaced bundle was archived.
    """
    validate_cluster_name(cluster)
    store.pending_file(cluster, CA_KEY)  # refused before the lock, which would make a missing store folder
    with store.locked():
        key_pem = store.pending_file(cluster, CA_KEY)
        key = keys.load_private_key(key_pem, None, what=f"pending key of {cluster}")
        files = {name: _read_signed(folder, name) for name in SIGNED_FILES}
        cert = parse_certs(files[CA_CERT], str(folder / CA_CERT))[0]
        if not keys.public_keys_match(key, cert.public_key()):
            raise BundleError(
                f"{folder / CA_CERT} does not carry {cluster}'s pending key; it was signed for another "
                f"request (make a new one with `meshpki csr {cluster}` and have it signed)")
        chain = parse_certs(files[CERT_CHAIN], str(folder / CERT_CHAIN))
        roots = parse_certs(files[ROOT_CERT], str(folder / ROOT_CERT))
        check_chain(cert, chain, roots, str(folder))
        bundle = {CA_CERT: files[CA_CERT], CA_KEY: key_pem, CERT_CHAIN: files[CERT_CHAIN], ROOT_CERT: files[ROOT_CERT]}
        if (folder / CA_CRL).exists():  # the mesh revokes: the roots' CRLs plus one of our own (istiod's rule)
            bundle[CA_CRL] = crl.site_bundle_crl(_read_signed(folder, CA_CRL), cert, key)
        archived = store.write_bundle(cluster, bundle, replace=True)
        store.drop_pending(cluster)
    return archived


def _read_signed(folder: Path, name: str) -> bytes:
    from meshpki.bundle import read_limited

    try:
        return read_limited(folder / name)
    except FileNotFoundError:
        raise InputError(f"{folder / name} is missing; pass the folder `meshpki sign --out` wrote") from None
    except OSError as exc:
        raise InputError(f"cannot read {folder / name}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class CrlRefresh:
    cluster: str
    path: Path  # the bundle's ca-crl.pem
    changed: bool  # False: it already held exactly these CRLs
    number: int | None
    next_update: dt.datetime | None


def refresh_crl(store: Store, cluster: str, received: bytes, what: str) -> CrlRefresh:
    """At a cluster's site: ca-crl.pem becomes the root holder's current CRLs
    (`meshpki crl export`) plus a fresh one signed by this site's own
    intermediate, with no new key or certificate. The bundle must be whole,
    and the result is judged like verify judges the bundle before it is
    written; an older CRL than the one the bundle holds is refused (it could
    un-revoke a cluster). Judged now: verify's handshake runs on the system
    clock, so no other moment could be judged whole."""
    validate_cluster_name(cluster)
    _refuse_refresh(store, cluster)  # before the lock, which would make a missing store's folder
    with store.locked():
        _refuse_refresh(store, cluster)
        try:
            bundle, key = crl.member_material(store, cluster)
        except BundleError as exc:
            raise BundleError(f"{cluster}'s bundle is damaged: {exc}; nothing was changed: {_site_fix(cluster)}") from None
        files = dict(bundle.files)
        cert = parse_certs(files[CA_CERT], f"{cluster}: ca-cert.pem")[0]
        new_crls, error = pem.read_crls(received)
        if error is not None or not new_crls:
            raise BundleError(f"{what}: {error or 'no CRL in it'}; pass the file `meshpki crl export {cluster}` "
                              "wrote at the root holder")
        path = store.cluster_dir(cluster) / CA_CRL
        old = files.get(CA_CRL)
        if old is not None and old.startswith(received):
            own = crl.parse_crls(old, str(path))[-1]
            return CrlRefresh(cluster, path, False, crl.crl_number(own), own.next_update_utc)
        _refuse_older(new_crls, crl.parse_crls(old, str(path)) if old else [], what, cluster)
        files[CA_CRL] = crl.site_bundle_crl(received, cert, key)
        _refuse_failing(store, cluster, files, what)
        store.replace_bundle_file(cluster, CA_CRL, files[CA_CRL])
    own = crl.parse_crls(files[CA_CRL], str(path))[-1]
    return CrlRefresh(cluster, path, True, crl.crl_number(own), own.next_update_utc)


def _site_fix(cluster: str) -> str:
    return (f"check it with meshpki verify {cluster}, then restore the file from a backup or make a new bundle "
            f"(meshpki csr {cluster}, then sign at the root holder and complete here)")


def _refuse_failing(store: Store, cluster: str, files: dict[str, bytes], what: str) -> None:
    """The bundle with its new ca-crl.pem, judged as verify judges it: the
    bundle's own errors first (the new CRLs cannot mend them), then the CRLs'."""
    from meshpki import checks
    from meshpki.bundle import Bundle
    from meshpki.findings import Severity, first_of

    report = checks.check_bundle(Bundle(files, cluster), cluster=cluster)
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    own = [f for f in errors if f.file != CA_CRL]
    if own:
        where = store.cluster_dir(cluster) / own[0].file if own[0].file else store.cluster_dir(cluster)
        raise BundleError(f"{cluster}'s bundle fails verify ({where}): {first_of(own)}; nothing was changed: "
                          f"{own[0].fix or _site_fix(cluster)} (meshpki verify {cluster} lists every finding)")
    if errors:
        raise BundleError(f"{what} cannot serve {cluster}: {first_of(errors)}; nothing was changed (ask the "
                          f"root holder for `meshpki crl renew` if needed, then `meshpki crl export {cluster}`)")


def _refuse_refresh(store: Store, cluster: str) -> None:
    if crl.load_state(store) is not None:
        raise InputError("this store revokes and signs its own CRLs: its bundles follow `meshpki crl renew`, "
                         "then push them; crl refresh is for a site signed from a CSR")
    if cluster not in store.clusters():  # a folder with files missing is named by member_material
        known = ", ".join(store.clusters()) or "none"
        raise StoreError(f"no bundle for cluster {cluster!r} in store {store.path} (clusters: {known}); "
                         f"finish it first (meshpki complete {cluster} DIR)")


def _refuse_older(new: Sequence[x509.CertificateRevocationList], old: Sequence[x509.CertificateRevocationList],
                  what: str, cluster: str) -> None:
    """A CRL with a lower number than the one held from the same issuer is an
    older list: it may lack a revocation the bundle already enforces."""
    for received in new:
        held = [crl.crl_number(c) for c in old if c.issuer == received.issuer]
        number = crl.crl_number(received)
        if held and number is not None and any(h is not None and h > number for h in held):
            raise BundleError(f"{what}: the CRL of '{received.issuer.rfc4514_string()}' is number {number}, older "
                              f"than number {max(h for h in held if h is not None)} that {cluster} already holds; "
                              f"nothing was changed (ask the root holder for a current `meshpki crl export {cluster}`)")


def check_chain(cert: x509.Certificate, chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate],
                where: str) -> None:
    """cert-chain.pem starts with ca-cert.pem and each certificate is signed by
    the next one; the last one is, or is signed by, a root of root-cert.pem."""
    if not chain or chain[0] != cert:
        raise BundleError(f"{where}: cert-chain.pem must start with ca-cert.pem")
    if broken := _broken_link(chain):
        raise BundleError(f"{where}: cert-chain.pem is broken: {broken}")
    top = chain[-1]
    if top in roots or any(signed_by(top, r) for r in roots):
        return
    raise BundleError(f"{where}: the chain does not lead to a root in root-cert.pem "
                      f"({_cn(top)} is signed by {top.issuer.rfc4514_string()})")


def _broken_link(path: Sequence[x509.Certificate]) -> str | None:
    """Where a path ordered child first stops being signed by the next certificate."""
    for child, parent in itertools.pairwise(path):
        if not signed_by(child, parent):
            return f"{_cn(child)} is not signed by {_cn(parent)}"
    return None


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


# -- at the root holder: signing a request ------------------------------------------------

@dataclass(frozen=True)
class SignResult:
    cluster: str
    out: Path
    cert: x509.Certificate
    warnings: tuple[str, ...]


def read_csr(request: bytes, what: str) -> tuple[x509.CertificateSigningRequest, keys.PublicKey]:
    """Parse and check a CSR: one PEM request whose signature proves its key."""
    if len(request) > MAX_CSR_BYTES or b"-----BEGIN CERTIFICATE REQUEST-----" not in request:
        raise InputError(f"{what} is not a PEM certificate request (BEGIN CERTIFICATE REQUEST); "
                         "pass the file `meshpki csr` wrote")
    if problem := pem.lone_block_problem(request, "certificate request"):
        raise InputError(f"{what} {problem}; pass one request per file, as `meshpki csr` writes it")
    try:
        csr = x509.load_pem_x509_csr(request)
        valid = csr.is_signature_valid
    except Exception as exc:
        raise InputError(f"{what} is not a readable certificate request ({keys.first_line(exc)})") from None
    weak = _weak_hash_name(csr)
    if weak is not None:  # cryptography does not verify SHA-1 signatures: say why, not "altered"
        raise InputError(f"{what} is signed with {weak}, which meshpki refuses; have the site make it with "
                         "SHA-256 or stronger (meshpki csr does)")
    if not valid:
        raise InputError(f"{what}: the request's signature does not match its key; it was altered or "
                         "damaged, ask the site for a new one")
    return csr, checked_key(csr.public_key(), what)


def _weak_hash_name(csr: x509.CertificateSigningRequest) -> str | None:
    from cryptography.hazmat.primitives import hashes

    try:
        algorithm = csr.signature_hash_algorithm
    except Exception:  # an algorithm cryptography does not know: the signature check says it
        return None
    return algorithm.name.upper().replace("SHA1", "SHA-1") if isinstance(algorithm, hashes.SHA1 | hashes.MD5) else None


def checked_key(key: object, what: str) -> keys.PublicKey:
    """A CA key as strong as `issue` makes them: RSA 2048+, ECDSA P-256 or P-384."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise InputError(f"{what}: RSA-{key.key_size} is too weak for a CA; use rsa-2048 or stronger")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise InputError(f"{what}: curve {key.curve.name} is not accepted; use ecdsa-p256 or ecdsa-p384")
        return key
    raise InputError(f"{what}: a {type(key).__name__.removeprefix('_')} key is not accepted; "
                     "use RSA (2048+) or ECDSA P-256/P-384")


def cluster_from_csr(csr: x509.CertificateSigningRequest, what: str) -> str:
    """The cluster named by the request's L= (how `meshpki csr` writes it)."""
    names = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)]
    if len(names) != 1:
        raise InputError(f"{what} names no cluster (no single L= in its subject); pass --cluster NAME")
    if not is_cluster_name(names[0]):
        raise InputError(f"{what} names cluster {names[0]!r}, which is not a DNS-1123 label; "
                         "pass --cluster NAME with a valid name")
    return names[0]


def sign_csr(store: Store, csr_pem: bytes, what: str, issuer: ca.Issuer, out: Path,
             cluster: str | None = None, days: int = ca.DEFAULT_INTERMEDIATE_DAYS,
             san_dns: Sequence[str] = (profiles.DEFAULT_ISTIOD_SAN,),
             before_write: Callable[[], object] | None = None) -> SignResult:
    """Issue a cluster CA for a request with meshpki's own profile.

    Writes ca-cert.pem, cert-chain.pem and root-cert.pem into `out` and the
    same into the store's inventory of signed clusters (never a key, never
    among the members the store pushes). `before_write` runs under the lock
    once every check has passed, before the first byte is written (rotate.py
    starts a root rotation's grace clock there).
    """
    csr, public_key = read_csr(csr_pem, what)
    name = validate_cluster_name(cluster) if cluster else cluster_from_csr(csr, what)
    ca.check_days(days)
    profiles.check_san_dns(san_dns)
    if store.has_cluster(name):
        raise StoreError(f"cluster {name!r} already has a full bundle in this store; a CSR is for a cluster whose "
                         "key lives at its site (pick another name, or use `meshpki rotate`)")
    check_out(store, out)
    rejoining = crl.rejoin_warnings(store, [name])[name]
    issued = profiles.make_intermediate(
        issuer.cert, issuer.key, public_key, name, days,
        org=ca.organization_of(issuer.cert), san_dns=san_dns)
    files = ca.certificate_files(issuer, issued.cert)
    roots_part = crl.roots_part_for(store, files)  # once the mesh revokes, the site must ship its roots' CRLs
    sent = {**files, CA_CRL: roots_part} if roots_part else files
    with store.locked(), _delivering(out, {out / n: data for n, data in sent.items()}, make_parents=True):
        if before_write is not None:
            before_write()
        store.write_signed(name, files)  # recorded only once the site's copy is written
    return SignResult(name, out, issued.cert, rejoining + issued.warnings)


def check_out(store: Store, out: Path) -> None:
    """sign's --out: a new or empty folder outside the store (checked before the passphrase)."""
    store.refuse_output(out, "--out")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is not a folder")
    if out.is_dir() and any((out / n).exists() for n in (*SIGNED_FILES, CA_CRL)):
        raise InputError(f"--out {out} already holds signed files; pass an empty or new folder")


@contextmanager
def _delivering(where: Path | None, files: Mapping[Path, bytes], make_parents: bool = False) -> Iterator[None]:
    """Files meant to travel (a CSR, certificates, CRLs), 0644, that appear only if
    the store records its part in the block, and are written before it does: a
    failure on either side leaves neither."""
    try:
        with publish.written_on_success(files, 0o644, make_parents):
            yield
    except OSError as exc:
        raise StoreError(f"cannot write {where}: {exc.strerror or exc}; nothing was recorded") from None


def write_public(path: Path, data: bytes) -> None:
    """A file meant to travel (CRLs for a site): atomic, 0644."""
    try:
        publish.replace_file(path, data, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- adopting an existing CA --------------------------------------------------------------

@dataclass(frozen=True)
class Adopted:
    """A CA checked and ready to become the store's signer."""

    cert: x509.Certificate
    key: keys.PrivateKey
    chain_above: tuple[x509.Certificate, ...]  # its issuers up to and including the root; () for a root


def check_import(cert_pem: bytes, key_pem: bytes, chain_pem: bytes | None, what: str,
                 key_passphrase: bytes | None = None, now: dt.datetime | None = None) -> Adopted:
    """Everything that must hold before an existing CA signs cluster CAs:
    it is a CA allowed to sign CAs, its key matches, it is valid now, and
    (for an intermediate) its chain leads link by link to a self-signed root."""
    now = now or profiles.utcnow()
    certs = parse_certs(cert_pem, f"{what} certificate")
    if len(certs) != 1:
        raise AdoptError(f"{what} certificate file holds {len(certs)} certificates; pass only the CA's own "
                           "certificate, and its issuers with --import-chain")
    cert = certs[0]
    key = keys.load_private_key(key_pem, key_passphrase, what=f"{what} key")
    checked_key(key.public_key(), f"{what} key")
    if not keys.public_keys_match(key, cert.public_key()):
        raise AdoptError(f"{what} key does not match its certificate; pass the key of {_cn(cert)}")
    _check_ca(cert, what, levels_below=1)
    if not profiles.not_before(cert) <= now < profiles.not_after(cert):
        raise AdoptError(f"{what} certificate is not valid now (valid {profiles.not_before(cert):%Y-%m-%d} to "
                           f"{profiles.not_after(cert):%Y-%m-%d}); a cluster CA cannot outlive or predate its signer")
    self_signed = cert.issuer == cert.subject and signed_by(cert, cert)
    above: list[x509.Certificate] = parse_certs(chain_pem, f"{what} chain") if chain_pem else []
    if self_signed and above:
        raise AdoptError(f"{what} certificate is a self-signed root; it needs no --import-chain")
    if not self_signed:
        if not above:
            raise AdoptError(f"{what} certificate is not self-signed ({_cn(cert)} is issued by "
                               f"{cert.issuer.rfc4514_string()}); pass its issuers up to the root with --import-chain")
        path = [cert, *above]
        if broken := _broken_link(path):
            raise AdoptError(f"{what} chain is broken: {broken}; list the issuers in order, the root last")
        for depth, parent in enumerate(above, 2):
            _check_ca(parent, f"{what} chain", levels_below=depth)
            if profiles.not_after(parent) < now:
                raise AdoptError(f"{what} chain: {_cn(parent)} expired on {profiles.not_after(parent):%Y-%m-%d}")
        top = path[-1]
        if not (top.issuer == top.subject and signed_by(top, top)):
            raise AdoptError(f"{what} chain ends with {_cn(top)}, which is not a self-signed root; "
                               "append the root to --import-chain")
    return Adopted(cert, key, tuple(above))


def _check_ca(cert: x509.Certificate, what: str, levels_below: int) -> None:
    """A CA that may sign `levels_below` more CA levels (cluster CA, then workloads)."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise AdoptError(f"{what}: {_cn(cert)} is not a CA certificate (basicConstraints CA:TRUE missing); "
                           "istiod refuses to sign with it")
    if bc.path_length is not None and bc.path_length < levels_below:
        raise AdoptError(f"{what}: {_cn(cert)} has pathlen:{bc.path_length}, which forbids the cluster CAs "
                           f"meshpki signs below it (needs pathlen >= {levels_below} or none)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise AdoptError(f"{what}: {_cn(cert)} has a keyUsage without keyCertSign; it cannot sign CAs")


def adopt(store: Store, adopted: Adopted, passphrase: bytes | None) -> ca.RootResult:
    """Make an adopted CA the store's signer, its key encrypted like a new root's."""
    key_pem = keys.to_encrypted_pem(adopted.key, passphrase) if passphrase else keys.to_pem(adopted.key)
    chain = b"".join(cert_to_pem(c) for c in adopted.chain_above) or None
    with store.locked():
        path = store.write_root(cert_to_pem(adopted.cert), key_pem, chain_pem=chain)
    return ca.RootResult(path, adopted.cert, bool(passphrase))


def key_type_name(key: keys.PrivateKey) -> str:
    """The key type for messages, also for sizes `issue` would not generate."""
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}"
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return f"ecdsa-{key.curve.name}"


def read_istiod_ca(ref: SecretRef) -> tuple[bytes, bytes]:
    """istiod's self-signed root (certificate, key) from a live `istio-ca-secret`.

    docs/istio.md, "The secret": type istio.io/ca-root with
    ca-cert.pem and ca-key.pem. Adopting it keeps every workload certificate
    istiod already signed valid, so the mesh never loses trust.
    """
    with ref.connect() as cluster:
        secret = cluster.read_secret(ref.namespace, ref.secret_name)
    where = f"context {ref.context}: secret {ref.where}"
    if secret is None:
        raise AdoptError(f"{where} does not exist; istiod uses a plugged-in CA there (a cacerts secret), or "
                         "istiod has not started yet: nothing self-signed to adopt")
    missing = [k for k in (CA_CERT, CA_KEY) if not secret.data.get(k)]
    if missing:
        raise AdoptError(f"{where} has no {' or '.join(missing)}; it is not istiod's self-signed CA secret")
    return secret.data[CA_CERT], secret.data[CA_KEY]
