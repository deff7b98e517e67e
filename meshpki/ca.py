"""Making the root and the per-cluster intermediates: `init-root` and `issue`.

Everything is decided and validated before the first byte is written, so a
refusal (bad name, wrong passphrase, existing bundle) leaves the store as it
was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from meshpki import crl, keys, profiles
from meshpki.bundle import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, cert_to_pem, join_pem, parse_certs
from meshpki.errors import InputError
from meshpki.keys import HasPublicKey, KeyType, PrivateKey
from meshpki.signing import SigningKey
from meshpki.store import Store, validate_cluster_name

DEFAULT_ROOT_DAYS = 3650
DEFAULT_INTERMEDIATE_DAYS = 730


@dataclass(frozen=True)
class RootResult:
    path: Path
    cert: x509.Certificate
    encrypted: bool
    token_uri: str | None = None  # the key stays in this PKCS#11 token


@dataclass(frozen=True)
class TokenTarget:
    """Make the key inside a PKCS#11 token: its RFC 7512 URI and PIN (hsm.py)."""

    uri: str
    pin: bytes | None = None
    # called once the token is open and able to make the key, just before it does (progress on stderr)
    announce: Callable[[], None] | None = None

    def __repr__(self) -> str:  # the PIN never reaches a log or a traceback
        return f"TokenTarget(uri={self.uri!r})"


@dataclass(frozen=True)
class IssueOptions:
    """How to make an intermediate; shared by `issue` and `rotate`."""

    key_type: KeyType | None = None  # None: the root's key type
    days: int = DEFAULT_INTERMEDIATE_DAYS
    org: str | None = None  # None: the root's organization
    san_dns: tuple[str, ...] = (profiles.DEFAULT_ISTIOD_SAN,)

    def __post_init__(self) -> None:
        """Every option is checked here, before any key is made."""
        check_days(self.days)
        if self.org is not None:
            profiles.check_name(self.org, "--org")
        profiles.check_san_dns(self.san_dns)


@dataclass(frozen=True)
class IssueResult:
    cluster: str
    path: Path
    cert: x509.Certificate
    archived: Path | None
    warnings: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Issuer:
    """The CA that signs intermediates, and the trust bundle they ship with.

    Normally the store's root and its own PEM; during a root rotation, the
    new root signs while root-cert.pem carries old + new (rotate.py).
    """

    cert: x509.Certificate
    cert_pem: bytes  # the signer and its issuers up to the root: what follows a cluster CA in cert-chain.pem
    key: SigningKey  # a key in memory, or hsm.TokenKey for a root in a PKCS#11 token
    trust_pem: bytes  # root-cert.pem: every root the bundles trust


def check_days(days: int) -> int:
    return profiles.check_days(days)


def check_root_options(days: int, org: str, cn: str) -> None:
    """Everything init-root is told, checked before a store folder or a key exists."""
    check_days(days)
    profiles.check_name(org, "--org")
    profiles.check_name(cn, "--cn")


def key_type_of(key: HasPublicKey) -> KeyType:
    """The KeyType naming an existing key (file or token), so intermediates default to the root's."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return KeyType.parse(f"rsa-{public.key_size}") if public.key_size in (2048, 3072, 4096) else KeyType.RSA_4096
    return KeyType.ECDSA_P384 if public.curve.key_size >= 384 else KeyType.ECDSA_P256


def organization_of(cert: x509.Certificate) -> str:
    orgs = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    return str(orgs[0].value) if orgs else profiles.DEFAULT_ORG


def init_root(store: Store, key_type: KeyType, days: int, org: str, cn: str,
              passphrase: bytes | None, token: TokenTarget | None = None,
              constrain_to: str | None = None) -> RootResult:
    """Create the store's root; `passphrase` None means explicitly unencrypted,
    `token` makes the key inside a PKCS#11 token instead of a file; `constrain_to`
    pins it to that trust domain (profiles.trust_domain_constraints)."""
    check_root_options(days, org, cn)
    store.refuse_existing_root()  # before spending a second on a key
    made_store = not store.path.exists()
    try:
        with store.locked():  # also proves the store is writable before the slow part
            store.refuse_existing_root()
            with recorded_root_key(key_type, passphrase, token) as (key, key_name, record):
                cert = profiles.make_root(key, days, org=org, cn=cn, constrain_to=constrain_to)
                path = store.write_root(cert_to_pem(cert), record, key_name=key_name)
    except BaseException:
        if made_store:  # no store folder holding only .lock is left behind
            store.remove_if_empty()
        raise
    return RootResult(path, cert, bool(passphrase) or token is not None,
                      record.decode().strip() if token is not None else None)


@contextmanager
def recorded_root_key(key_type: KeyType, passphrase: bytes | None,
                      token: TokenTarget | None) -> Iterator[tuple[SigningKey, str, bytes]]:
    """new_root_key for a block that must record it in the store: if the block
    fails, a key made inside a token is destroyed again (a file key was never
    written, so nothing is left either way)."""
    made = new_root_key(key_type, passphrase, token)
    try:
        yield made
    except BaseException:
        from meshpki import hsm

        if token is not None and isinstance(made[0], hsm.TokenKey):
            hsm.destroy_key(made[0], token.pin)
        raise


def new_root_key(key_type: KeyType, passphrase: bytes | None,
                 token: TokenTarget | None) -> tuple[SigningKey, str, bytes]:
    """A new root key and how the store records it: (key, file name, bytes).

    In a token the key pair is generated inside it and the record is its
    URI; otherwise a PEM, encrypted when there is a passphrase.
    """
    from meshpki.store import ROOT_KEY_FILE, ROOT_KEY_URI_FILE

    if token is not None:
        from meshpki import hsm

        token_key, recorded = hsm.generate_key(hsm.TokenURI.parse(token.uri), token.pin, key_type,
                                               token.announce)
        return token_key, ROOT_KEY_URI_FILE, f"{recorded}\n".encode()
    key = key_type.generate()
    return key, ROOT_KEY_FILE, keys.to_encrypted_pem(key, passphrase) if passphrase else keys.to_pem(key)


def store_issuer(store: Store, passphrase: bytes | None) -> Issuer:
    """The store's root as issuer (rotate.py swaps in the new root mid-rotation)."""
    pem = store.root_cert_pem()
    key = store.load_root_key(passphrase)  # proven to match root-cert.pem
    cert = store.root_cert()
    # An adopted intermediate "mesh CA" (byo.py) signs; its chain leads to someone else's root.
    above = store.signer_chain_pem()
    return Issuer(cert, join_pem(pem, above) if above else pem, key, trust_pem(store))


def trust_pem(store: Store) -> bytes:
    """root-cert.pem of what the store's signer issues: the store's root, or the
    last certificate of an adopted intermediate's chain (someone else's root)."""
    above = store.signer_chain_pem()
    return cert_to_pem(parse_certs(above, "root/chain.pem")[-1]) if above else store.root_cert_pem()


def build_bundle(issuer: Issuer, cluster: str, key: PrivateKey, options: IssueOptions,
                 now: dt.datetime | None = None) -> tuple[dict[str, bytes], profiles.Issued]:
    """The four cacerts files for one cluster, exactly as istiod mounts them."""
    issued = profiles.make_intermediate(
        issuer.cert, issuer.key, key.public_key(), cluster, options.days,
        org=options.org or organization_of(issuer.cert), san_dns=options.san_dns, now=now,
    )
    return {**certificate_files(issuer, issued.cert), CA_KEY: keys.to_pem(key)}, issued


def certificate_files(issuer: Issuer, cert: x509.Certificate) -> dict[str, bytes]:
    """A bundle's certificate files for a cluster CA `issuer` signed (no key):
    the chain runs from the cluster CA up to and including the root."""
    cert_pem = cert_to_pem(cert)
    return {CA_CERT: cert_pem, CERT_CHAIN: cert_pem + issuer.cert_pem, ROOT_CERT: issuer.trust_pem}


def issue(store: Store, clusters: Sequence[str], options: IssueOptions, issuer: Issuer | Callable[[], Issuer],
          replace: bool = False, progress: Callable[[int, int], None] | None = None,
          signer: x509.Certificate | None = None) -> list[IssueResult]:
    """One new intermediate bundle per cluster, keys made in parallel.

    All refusals happen before any key is generated; each bundle is then
    written atomically as soon as its key is ready, so an interruption
    leaves whole bundles only. `issuer` may be a function that unlocks the
    signing key: it runs while the workers make keys (scrypt takes a core
    for 0.3-0.6 s), and then `signer` (its certificate) picks the default key type.
    """
    names = _unique(clusters)
    for name in names:
        validate_cluster_name(name)
    with store.locked():
        if not replace:
            for name in names:
                store.refuse_existing_bundle(name)
        signer = issuer.cert if isinstance(issuer, Issuer) else signer
        if options.key_type is None and signer is None:
            raise ValueError("issue: pass the signer's certificate with a lazy issuer")
        key_type = options.key_type or key_type_of(signer)  # type: ignore[arg-type]
        results: dict[int, IssueResult] = {}
        rejoining = crl.rejoin_warnings(store, names)
        with keys.KeyMaker([key_type] * len(names), progress=progress) as maker:
            unlocked = issuer if isinstance(issuer, Issuer) else issuer()
            for index, key in maker:
                name = names[index]
                files, issued = build_bundle(unlocked, name, key, options)
                files = crl.files_with_crl(store, files, key)  # ca-crl.pem once the mesh has revoked something
                archived = store.write_bundle(name, files, replace=replace)
                results[index] = IssueResult(name, store.cluster_dir(name), issued.cert, archived,
                                             rejoining[name] + issued.warnings)
    return [results[i] for i in range(len(names))]


def _unique(names: Sequence[str]) -> list[str]:
    if not names:
        raise InputError("name at least one cluster")
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n, None)
    return list(seen)
