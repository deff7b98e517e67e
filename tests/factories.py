"""Certificate and bundle factories for tests: build any good or broken CA bundle.

Every test that needs a bundle shape meshpki did not make itself (Istio's
Makefile recipe, Istio's older samples/certs, cert-manager's tls.* form, or a
deliberately broken one) builds it here, in memory, with explicit validity
windows, so no test depends on files checked into the repository.

The API, in the order a test usually uses it:

    key = pooled_key(KeyType.ECDSA_P256)          # cached: fast, reusable
    root = make_root()                             # an Authority (cert + key)
    inter = make_intermediate(root, "cluster1")    # signed by root, pathlen 0
    files = bundle_files(inter, root)              # the four cacerts files
    folder = write_folder(tmp_path / "c1", files)  # on disk, keys 0600
    tls = tls_form(files)                          # tls.crt / tls.key / ca.crt

`make_cert` underneath takes every knob (key usage, EKU, basic constraints and
their criticality, hash, validity) so one call makes one broken case.
`openssl_sign` makes what cryptography refuses to make (SHA-1 signatures).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshpki.bundle import (
    CA_CERT,
    CA_CRT,
    CA_KEY,
    CERT_CHAIN,
    ROOT_CERT,
    TLS_CRT,
    TLS_KEY,
    cert_to_pem,
)
from meshpki.keys import KeyType, PrivateKey, signature_hash, to_pem

__all__ = [
    "DEFAULT",
    "KU_CA",
    "KU_ISTIO_MAKEFILE",
    "Authority",
    "KeyType",
    "bundle_files",
    "codes",
    "days_from_now",
    "eku",
    "istio_makefile_bundle",
    "istio_samples_bundle",
    "key_usage",
    "make_cert",
    "make_crl",
    "make_intermediate",
    "make_root",
    "now",
    "openssl_available",
    "openssl_sign",
    "pem",
    "pooled_key",
    "tls_form",
    "write_folder",
]


class _Default:
    """Sentinel: 'use the profile's default' (None means 'leave the extension out')."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


def now() -> dt.datetime:
    """Real wall-clock UTC now: OpenSSL handshakes use the system clock, not freezegun's."""
    return dt.datetime.now(dt.UTC)


@functools.cache
def pooled_key(key_type: KeyType = KeyType.ECDSA_P256, slot: int = 0) -> PrivateKey:
    """A key cached per (type, slot): RSA generation is slow, and most tests only
    need distinct keys, not fresh ones. Use a new slot for a key that must differ."""
    return key_type.generate()


def key_usage(cert_sign: bool = True, crl_sign: bool = True, digital_signature: bool = True,
              key_encipherment: bool = False, non_repudiation: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=non_repudiation,
        key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
        key_cert_sign=cert_sign, crl_sign=crl_sign, encipher_only=False, decipher_only=False,
    )


KU_CA = key_usage()
# tools/certs/Makefile.selfsigned.mk: digitalSignature, nonRepudiation, keyEncipherment, keyCertSign
KU_ISTIO_MAKEFILE = key_usage(crl_sign=False, key_encipherment=True, non_repudiation=True)


@dataclass(frozen=True)
class Authority:
    """A certificate and its private key: something that can sign, or be put in a bundle."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return to_pem(self.key)


def _name(cn: str, org: str | None = "Istio", locality: str | None = None) -> x509.Name:
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if locality:
        attrs.append(x509.NameAttribute(NameOID.LOCALITY_NAME, locality))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_cert(
    subject: str | x509.Name,
    key: PrivateKey,
    issuer: Authority | None = None,
    *,
    ca: bool | None = True,
    path_length: int | None = None,
    bc_critical: bool = True,
    usage: x509.KeyUsage | _Default | None = DEFAULT,
    ku_critical: bool = True,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: float = 365,
    hash_alg: hashes.HashAlgorithm | None = None,
    san_dns: Sequence[str] = (),
    ski: bool = True,
    aki: bool = True,
    name_constraints: x509.NameConstraints | None = None,
) -> x509.Certificate:
    """One certificate with every knob exposed. `issuer` None means self-signed.

    `ca` None leaves basicConstraints out entirely; `usage` None leaves
    keyUsage out, DEFAULT gives a CA's digitalSignature+keyCertSign+cRLSign.
    Validity: `not_before` (default now - 5 min) to `not_after` (default
    not_before + `days`).
    """
    name = subject if isinstance(subject, x509.Name) else _name(subject)
    start = not_before or (now() - dt.timedelta(minutes=5))
    end = not_after or (start + dt.timedelta(days=days))
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                                        critical=bc_critical)
    if usage is DEFAULT:
        usage = KU_CA if ca else key_usage(cert_sign=False, crl_sign=False, key_encipherment=True)
    if usage is not None:
        builder = builder.add_extension(usage, critical=ku_critical)  # type: ignore[arg-type]
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if san_dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in san_dns]),
                                        critical=False)
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, critical=True)
    if ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if aki and issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)  # type: ignore[arg-type]
    if isinstance(signer_key, ed25519.Ed25519PrivateKey):
        return builder.sign(signer_key, None)
    return builder.sign(signer_key, hash_alg or signature_hash(signer_key))


def make_crl(issuer: Authority, revoked: Sequence[x509.Certificate] = (), *, this_update: dt.datetime | None = None,
             next_update: dt.datetime | None = None, days: float = 7, signer_key: PrivateKey | None = None
             ) -> bytes:
    """One PEM CRL in `issuer`'s name listing `revoked`. `signer_key` signs it
    instead of the issuer's key (a CRL with the right name and the wrong signature)."""
    start = this_update or (now() - dt.timedelta(minutes=5))
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject).last_update(start)
               .next_update(next_update or start + dt.timedelta(days=days))
               .add_extension(x509.CRLNumber(1), critical=False))
    for cert in revoked:
        builder = builder.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                                                  .revocation_date(start).build())
    key = signer_key or issuer.key
    return builder.sign(key, signature_hash(key)).public_bytes(serialization.Encoding.PEM)


def make_root(cn: str = "Root CA", key_type: KeyType = KeyType.ECDSA_P256, slot: int = 0, **kwargs) -> Authority:
    """A self-signed root (CA:TRUE, no pathlen unless given, 10 years unless
    given), key from the pool."""
    key = pooled_key(key_type, slot)
    if "not_after" not in kwargs:
        kwargs.setdefault("days", 3650)
    return Authority(make_cert(cn, key, None, **kwargs), key)


def make_intermediate(root: Authority, cluster: str = "cluster1", key_type: KeyType = KeyType.ECDSA_P256,
                      slot: int = 1, path_length: int | None = 0, **kwargs) -> Authority:
    """A cluster intermediate like meshpki's and Istio's recipe: CA:TRUE pathlen 0,
    O=Istio, CN=Intermediate CA, L=<cluster>, 1 year (or the knobs given)."""
    key = pooled_key(key_type, slot)
    kwargs.setdefault("san_dns", ("istiod.istio-system.svc",))
    subject = kwargs.pop("subject", None) or _name("Intermediate CA", locality=cluster)
    return Authority(make_cert(subject, key, root, path_length=path_length, **kwargs), key)


def pem(*certs: x509.Certificate | Authority) -> bytes:
    """Concatenated PEM of certificates (or authorities' certificates), in order."""
    return b"".join(cert_to_pem(c.cert if isinstance(c, Authority) else c) for c in certs)


def bundle_files(
    ca: Authority,
    root: Authority | Sequence[Authority],
    *,
    chain: Sequence[x509.Certificate | Authority] | None = None,
    key_format: str = "pkcs8",
    passphrase: bytes = b"secret",
) -> dict[str, bytes]:
    """The four cacerts files. `root` may be several roots (all go into
    root-cert.pem; the one whose name issued `ca` ends cert-chain.pem by default).
    `chain` overrides cert-chain.pem's certs. `key_format`: pkcs8, pkcs1
    (traditional 'RSA/EC PRIVATE KEY'), or encrypted (PKCS#8 with `passphrase`)."""
    roots = [root] if isinstance(root, Authority) else list(root)
    if chain is None:
        signer = next((r for r in roots if r.cert.subject == ca.cert.issuer), roots[0])
        chain = [ca, signer]
    chain_certs = list(chain)
    if key_format == "pkcs8":
        key_pem = to_pem(ca.key)
    elif key_format == "pkcs1":
        key_pem = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption())
    elif key_format == "encrypted":
        key_pem = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(passphrase))
    else:
        raise ValueError(f"unknown key_format {key_format!r}")
    return {
        CA_CERT: ca.cert_pem,
        CA_KEY: key_pem,
        CERT_CHAIN: pem(*chain_certs),
        ROOT_CERT: pem(*roots),
    }


def tls_form(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The same bundle in cert-manager's shape: tls.crt = ca-cert.pem, tls.key, ca.crt = roots."""
    return {TLS_CRT: files[CA_CERT], TLS_KEY: files[CA_KEY], CA_CRT: files[ROOT_CERT]}


def write_folder(folder: Path, files: Mapping[str, bytes]) -> Path:
    """Write bundle files into `folder` (created 0700; key files 0600)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        path.chmod(0o600 if name.endswith("key.pem") or name == TLS_KEY else 0o644)
    return folder


# What a reviewer did to a store bundle's files; `damage` applies one ("rm:ca-key.pem").
DAMAGES = ("rm:ca-cert.pem", "rm:ca-key.pem", "rm:cert-chain.pem", "rm:root-cert.pem", "dir:ca-key.pem",
           "append:ca-cert.pem", "append:cert-chain.pem", "append:root-cert.pem", "other-key:ca-key.pem")
GARBAGE_BLOCK = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def damage(folder: Path, how: str) -> str:
    """Damage one file of a bundle folder: removed, a folder in its place, a
    garbage PEM block appended, or another key; returns the file's name."""
    kind, name = how.split(":", 1)
    path = Path(folder) / name
    if kind == "append":
        path.write_bytes(path.read_bytes() + GARBAGE_BLOCK)
    elif kind == "other-key":
        path.write_bytes(to_pem(pooled_key(KeyType.ECDSA_P256, slot=99)))
    else:
        path.unlink()
        if kind == "dir":
            path.mkdir()
    return name


def istio_makefile_bundle(cluster: str = "cluster1", key_type: KeyType = KeyType.RSA_2048,
                          root: Authority | None = None) -> tuple[dict[str, bytes], Authority]:
    """What tools/certs/Makefile.selfsigned.mk makes (RSA; 2048 here instead of
    4096 for speed): root and intermediate keyUsage digitalSignature,
    nonRepudiation, keyEncipherment, keyCertSign (critical); intermediate
    pathlen:0 with SAN DNS:istiod.istio-system.svc; chain = intermediate + root."""
    root = root or make_root("Root CA", key_type, slot=10, usage=KU_ISTIO_MAKEFILE, days=3650)
    inter = make_intermediate(root, cluster, key_type, slot=11, usage=KU_ISTIO_MAKEFILE, days=730)
    return bundle_files(inter, root), root


def istio_samples_bundle() -> dict[str, bytes]:
    """Istio's older samples/certs style, which istiod accepts: RSA-2048, a root
    with no keyUsage and non-critical basicConstraints, cert-chain.pem holding
    only the intermediate, and a PKCS#1 ('RSA PRIVATE KEY') key."""
    root_key, inter_key = pooled_key(KeyType.RSA_2048, 20), pooled_key(KeyType.RSA_2048, 21)
    root = Authority(make_cert("Root CA", root_key, None, usage=None, bc_critical=False, days=3650, ski=False),
                     root_key)
    inter = Authority(
        make_cert("Intermediate CA", inter_key, root, path_length=None, bc_critical=False,
                  usage=key_usage(crl_sign=False), ku_critical=False, days=3000, aki=False),
        inter_key)
    return bundle_files(inter, root, chain=[inter], key_format="pkcs1")


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def openssl_sign(subject_key: PrivateKey, issuer: Authority | None, *, cn: str = "Intermediate CA",
                 digest: str = "sha1", days: int = 365, ca: bool = True, path_length: int | None = 0) -> x509.Certificate:
    """A certificate signed by the openssl CLI with `digest` (e.g. sha1), which
    cryptography refuses to produce. `issuer` None makes a self-signed root."""
    ext_lines = [f"basicConstraints=critical,CA:{'TRUE' if ca else 'FALSE'}"
                 + (f",pathlen:{path_length}" if ca and path_length is not None and issuer else ""),
                 "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" if ca else "keyUsage=digitalSignature",
                 "subjectKeyIdentifier=hash"]
    with tempfile.TemporaryDirectory(prefix="meshpki-test-openssl-") as tmp:
        d = Path(tmp)
        (d / "subject.key").write_bytes(to_pem(subject_key))
        (d / "ext.cnf").write_text("[v3]\n" + "\n".join(ext_lines) + "\n")
        os.chmod(d / "subject.key", 0o600)
        if issuer is None:
            cmd = ["openssl", "req", "-x509", "-new", "-key", str(d / "subject.key"), "-subj", f"/O=Istio/CN={cn}",
                   f"-{digest}", "-days", str(days), "-extensions", "v3", "-config", str(d / "ext.cnf"),
                   "-out", str(d / "out.pem")]
            (d / "ext.cnf").write_text("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n" + "\n".join(ext_lines) + "\n")
        else:
            (d / "issuer.pem").write_bytes(cert_to_pem(issuer.cert))
            (d / "issuer.key").write_bytes(to_pem(issuer.key))
            (d / "req.cnf").write_text("[req]\ndistinguished_name=dn\n[dn]\n")
            subprocess.run(["openssl", "req", "-new", "-key", str(d / "subject.key"), "-subj",
                            f"/O=Istio/CN={cn}", "-config", str(d / "req.cnf"), "-out", str(d / "req.csr")],
                           check=True, capture_output=True)
            cmd = ["openssl", "x509", "-req", "-in", str(d / "req.csr"), "-CA", str(d / "issuer.pem"),
                   "-CAkey", str(d / "issuer.key"), "-CAcreateserial", f"-{digest}", "-days", str(days),
                   "-extfile", str(d / "ext.cnf"), "-extensions", "v3", "-out", str(d / "out.pem")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"openssl failed: {done.stderr.strip()}")
        return x509.load_pem_x509_certificate((d / "out.pem").read_bytes())


def eku(*names: str) -> list[x509.ObjectIdentifier]:
    """EKU OIDs by short name: serverAuth, clientAuth, codeSigning."""
    table = {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
             "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING}
    return [table[n] for n in names]


def days_from_now(days: float) -> dt.datetime:
    return now() + dt.timedelta(days=days)


def codes(findings: Iterable[object]) -> set[str]:
    """The set of finding codes, for compact assertions."""
    return {f.code for f in findings}  # type: ignore[attr-defined]
