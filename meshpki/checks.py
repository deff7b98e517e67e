"""Every check of a cacerts bundle, and of two bundles meant to trust each other.

Findings are the common language of verify, push and audit: each is a
severity, a stable kebab-case code, a message naming the file, and a fix.
Nothing here prints or knows about the command line.

The rule of thumb is Istio's, not the browser's: accept what istiod and the
proxies accept, reject what they reject (ISTIO.md). istiod loads a bundle with
Go's crypto/x509 (security/pkg/pki/util/keycertbundle.go `Verify`: the first
cert of ca-cert.pem verified against root-cert.pem through cert-chain.pem, for
the default serverAuth usage, then tls.X509KeyPair for the key); proxies
(Envoy, BoringSSL) then verify workload leaf + cert-chain.pem against
root-cert.pem. So a CA without keyUsage or with non-critical basicConstraints
is fine here (Go and OpenSSL accept them), though RFC 5280 says otherwise.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshpki import handshake, profiles
from meshpki.bundle import (
    CA_CERT,
    CA_KEY,
    CERT_CHAIN,
    FORM_TLS,
    ROOT_CERT,
    Bundle,
    fingerprint,
    subject_text,
)
from meshpki.keys import PrivateKey, is_encrypted_pem, public_keys_match

DEFAULT_WARN_DAYS = 30
MIN_RSA_BITS = 2048
# Go's crypto/x509 parses only these curves (crypto/x509/parser.go namedCurveFromOID)
GO_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
# Go rejects SHA-1 (since 1.18) and MD5/MD2 signatures in chains (crypto/x509 InsecureAlgorithmError)
WEAK_HASHES = (hashes.SHA1, hashes.MD5)


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """One thing verify found. `file` is the bundle file it is about (None for a pair)."""

    severity: Severity
    code: str
    message: str
    file: str | None = None
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity.value, "code": self.code, "message": self.message, "file": self.file}


# Every code with its severity and meaning; the README table is generated from
# the same words. Severity is the usual one; a few codes (weak-signature,
# expired, not-a-ca) are demoted for roots nobody checks, as noted per check.
CODES: dict[str, tuple[Severity, str]] = {
    "missing-file": (Severity.ERROR, "a bundle file is absent; istiod 1.27+ refuses a partial bundle, older "
                                     "versions silently fall back to a self-signed root"),
    "unreadable": (Severity.ERROR, "a bundle file exists but cannot be read"),
    "unparsable": (Severity.ERROR, "a PEM file is cut off, binary, or not a certificate/key"),
    "encrypted-key": (Severity.ERROR, "ca-key.pem is encrypted; istiod cannot decrypt it"),
    "unsupported-key": (Severity.ERROR, "a key type or curve Go's crypto/x509 cannot use"),
    "key-mismatch": (Severity.ERROR, "ca-key.pem is not the key of ca-cert.pem"),
    "not-a-ca": (Severity.ERROR, "a certificate that must sign others lacks basicConstraints CA:TRUE"),
    "no-keycertsign": (Severity.ERROR, "keyUsage is present without keyCertSign; proxies reject what it signs"),
    "bad-eku": (Severity.ERROR, "an extendedKeyUsage without serverAuth on a CA; Go's verifier (istiod) fails"),
    "weak-signature": (Severity.ERROR, "SHA-1 or MD5 signature (a warning on a root's own self-signature)"),
    "weak-key": (Severity.ERROR, "RSA key under 2048 bits or an EC key under 256 bits"),
    "expired": (Severity.ERROR, "a certificate on the path is past notAfter (a warning for unused extra roots)"),
    "not-yet-valid": (Severity.ERROR, "a certificate on the path is before notBefore"),
    "expiring-soon": (Severity.WARNING, "a certificate on the path expires within --warn-days"),
    "chain-broken": (Severity.ERROR, "no path from ca-cert.pem through cert-chain.pem to a root in root-cert.pem"),
    "pathlen-violated": (Severity.ERROR, "a pathLenConstraint on the path forbids the workload certs it must sign"),
    "outlives-root": (Severity.WARNING, "the intermediate's notAfter is past its root's"),
    "chain-order": (Severity.WARNING, "cert-chain.pem is not leaf-first (ca-cert.pem, then each issuer)"),
    "chain-extra": (Severity.WARNING, "cert-chain.pem holds certificates that are not on the path, or duplicates"),
    "ca-cert-extra": (Severity.WARNING, "ca-cert.pem holds more than one certificate; istiod uses the first"),
    "root-not-self-signed": (Severity.WARNING, "the trust anchor reached in root-cert.pem is not a self-signed root"),
    "workload-outlives-ca": (Severity.WARNING, "a 24h workload cert issued now outlives the intermediate or root"),
    "workload-rejected": (Severity.ERROR, "a workload cert signed by this bundle is refused in a real TLS handshake"),
    "legacy-profile": (Severity.INFO, "accepted by istiod but not RFC 5280's profile (no keyUsage, non-critical "
                                      "basicConstraints, PKCS#1 key)"),
    "chain-without-root": (Severity.INFO, "cert-chain.pem stops below the root; fine, peers hold the root"),
    "workload-ok": (Severity.INFO, "a workload cert signed by this bundle verified in a mutual-TLS handshake"),
    # live secrets (verify --context)
    "missing-secret": (Severity.ERROR, "the cluster has no cacerts secret: istiod falls back to a self-signed root "
                                       "and the mesh is split"),
    "drift": (Severity.WARNING, "the live secret differs from the store's bundle for that cluster"),
    "matches-store": (Severity.INFO, "the live secret is byte for byte the store's bundle"),
    # pairs
    "peer-untrusted": (Severity.ERROR, "one cluster's root-cert.pem does not hold the root of the other's chain"),
    "handshake-failed": (Severity.ERROR, "the real mutual-TLS handshake between two clusters' workloads failed"),
    "trust-domain-mismatch": (Severity.ERROR, "the peers' SPIFFE trust domains differ"),
    "peer-broken": (Severity.ERROR, "a cluster's bundle cannot sign workload certificates, so the pair cannot work"),
    "handshake-ok": (Severity.INFO, "the pair's workloads completed mutual TLS"),
}


def _finding(code: str, message: str, file: str | None = None, fix: str = "",
             severity: Severity | None = None) -> Finding:
    return Finding(severity or CODES[code][0], code, message, file, fix)


@dataclass
class LoadedBundle:
    """The parsed material of a bundle, kept for pair checks (None when it did not parse)."""

    ca_cert: x509.Certificate | None = None
    ca_key: PrivateKey | None = None
    chain: tuple[x509.Certificate, ...] = ()
    roots: tuple[x509.Certificate, ...] = ()
    chain_pem: bytes = b""
    root_pem: bytes = b""
    path: tuple[x509.Certificate, ...] = ()  # ca-cert.pem's issuers, up to the trust anchor
    workload: x509.Certificate | None = None
    endpoint: handshake.Endpoint | None = None

    @property
    def can_sign(self) -> bool:
        return self.endpoint is not None


class _Verdict:
    """What bundle and pair reports share: ok means no error finding."""

    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)


@dataclass(frozen=True)
class BundleReport(_Verdict):
    target: str
    findings: tuple[Finding, ...]
    material: LoadedBundle = field(repr=False, compare=False, default_factory=LoadedBundle)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ok": self.ok, "findings": [f.to_dict() for f in self.findings]}


@dataclass(frozen=True)
class PairReport(_Verdict):
    a: str
    b: str
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "ok": self.ok, "findings": [f.to_dict() for f in self.findings]}


# -- small certificate helpers -------------------------------------------------

def describe(cert: x509.Certificate) -> str:
    return f"'{subject_text(cert)}'"


def _ext(cert: x509.Certificate, cls: type) -> x509.Extension | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None
    except Exception:  # a malformed extension: treat as absent, the parse check reports the file
        return None


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and signed_by(cert, cert)


def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s key made `child`'s signature (and the names chain).

    cryptography's verify_directly_issued_by refuses SHA-1, but we must still
    build the path through a SHA-1 certificate to report it precisely, so the
    signature is checked by hand with the certificate's own parameters.
    """
    if child.issuer != issuer.subject:
        return False
    try:
        child.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        key = issuer.public_key()
        params = child.signature_algorithm_parameters
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, params, child.signature_hash_algorithm)  # type: ignore[arg-type]
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, params)  # type: ignore[arg-type]
        else:
            return False
        return True
    except Exception:
        return False


def _weak_hash(cert: x509.Certificate) -> str | None:
    try:
        alg = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return cert.signature_algorithm_oid.dotted_string
    if alg is not None and isinstance(alg, WEAK_HASHES):
        return alg.name.upper().replace("SHA1", "SHA-1")
    return None


def _fmt(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# -- parsing -------------------------------------------------------------------

def _parse_certs(data: bytes | None, file: str, findings: list[Finding]) -> list[x509.Certificate]:
    if data is None:
        return []
    fix = "re-copy the file from its source (whole PEM blocks, BEGIN to END)"
    if b"-----BEGIN CERTIFICATE-----" not in data:
        kind = "binary (DER?) data" if b"\x00" in data or data[:1] == b"\x30" else "no PEM certificate"
        findings.append(_finding("unparsable", f"{file} holds {kind}; istiod needs PEM certificates", file,
                                 fix if kind.startswith("no") else f"convert it: openssl x509 -inform DER -in "
                                 f"{file} -out {file}.pem"))
        return []
    try:
        certs = x509.load_pem_x509_certificates(data)
        for cert in certs:  # names and dates are decoded on first use: damage there is damage to the file
            cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc  # noqa: B018
        return certs
    except Exception as exc:  # ValueError for damage; never let odd input become a traceback
        findings.append(_finding("unparsable", f"{file} is not valid PEM ({_short_error(exc)}); is the file cut "
                                 "off?", file, fix))
        return []


def _short_error(exc: BaseException) -> str:
    """cryptography's message without its FAQ link: the reason a user can act on."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "See https://" in text:
        head, _, tail = text.partition("See https://")
        tail = tail.split(" ", 1)[1] if " " in tail else ""
        tail = tail.replace("for more details.", "").strip()
        text = f"{head.strip().rstrip('.')}: {tail}" if tail else head.strip()
    return text


def _load_key(data: bytes | None, file: str, findings: list[Finding]) -> PrivateKey | None:
    """Load ca-key.pem as istiod would: PKCS#8, PKCS#1 or SEC1, never encrypted.

    RSA key validation is skipped (it costs 0.25 s for 4096 bits, DESIGN.md):
    a damaged key is still caught, by the workload signature that must verify.
    """
    if data is None:
        return None
    if is_encrypted_pem(data):
        findings.append(_finding(
            "encrypted-key", f"{file} is encrypted; istiod reads it as plain PEM and cannot start", file,
            f"decrypt it (openssl pkey -in {file} -out {file}) before it goes into the cacerts secret"))
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
    except Exception as exc:
        findings.append(_finding("unparsable", f"{file} is not a readable PEM private key ({_short_error(exc)})", file,
                                 "put the CA's plain PEM key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) here"))
        return None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        findings.append(_finding("unsupported-key", f"{file} is a {type(key).__name__}; istiod's CA signs with "
                                 "RSA or ECDSA keys only", file, "issue the intermediate with an RSA or ECDSA key"))
        return None
    if b"-----BEGIN RSA PRIVATE KEY-----" in data or b"-----BEGIN EC PRIVATE KEY-----" in data:
        findings.append(_finding("legacy-profile", f"{file} is a traditional (PKCS#1/SEC1) key; istiod accepts it",
                                 file, "optional: convert to PKCS#8 with openssl pkey"))
    return key


# -- per-certificate checks ----------------------------------------------------

def _check_key_strength(cert: x509.Certificate, file: str, findings: list[Finding]) -> None:
    try:
        key = cert.public_key()
    except Exception as exc:  # an unknown curve: Go cannot parse the certificate at all
        findings.append(_finding("unsupported-key", f"{file}: {describe(cert)} has a public key Go cannot parse "
                                 f"({exc})", file, "re-issue with RSA-2048+ or ECDSA P-256/P-384"))
        return
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        findings.append(_finding("weak-key", f"{file}: {describe(cert)} has an RSA-{key.key_size} key; "
                                 f"under {MIN_RSA_BITS} bits is refused by current TLS stacks", file,
                                 "re-issue it with rsa-2048 or stronger (or ecdsa-p256)"))
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in GO_CURVES:
        findings.append(_finding("weak-key" if key.curve.key_size < 256 else "unsupported-key",
                                 f"{file}: {describe(cert)} uses curve {key.curve.name}, which Go's "
                                 "crypto/x509 (istiod) does not support", file,
                                 "re-issue with ecdsa-p256 or ecdsa-p384"))


def _check_validity(cert: x509.Certificate, file: str, now: dt.datetime, warn_days: int,
                    findings: list[Finding], role: str, on_path: bool = True) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > end:
        sev = Severity.ERROR if on_path else Severity.WARNING
        consequence = ("istiod fails to start and workloads are rejected" if on_path
                       else "it is not on this bundle's path, but it is dead weight")
        findings.append(_finding("expired", f"{file}: {role} {describe(cert)} expired on {_fmt(end)}; "
                                 f"{consequence}", file,
                                 "meshpki rotate CLUSTER (or rotate-root for a root), then push" if on_path
                                 else f"remove it from {file}", sev))
    elif now < start:
        findings.append(_finding("not-yet-valid", f"{file}: {role} {describe(cert)} is not valid before "
                                 f"{_fmt(start)}", file, "check the clock of the machine that issued it; "
                                 "re-issue with a notBefore in the past", Severity.ERROR if on_path else Severity.WARNING))
    elif on_path and end - now < dt.timedelta(days=warn_days):
        days = (end - now).days
        findings.append(_finding("expiring-soon", f"{file}: {role} {describe(cert)} expires on {_fmt(end)} "
                                 f"(in {days} day{'s' if days != 1 else ''})", file,
                                 "meshpki rotate CLUSTER (rotate-root for the root) and push before then"))


def _check_eku(cert: x509.Certificate, file: str, findings: list[Finding], role: str) -> None:
    # Go verifies every cert of the chain for ExtKeyUsageServerAuth by default
    # (crypto/x509 verify.go checkChainForKeyUsage): a CA EKU without serverAuth
    # (or anyExtendedKeyUsage) makes istiod's load fail.
    ext = _ext(cert, x509.ExtendedKeyUsage)
    if ext is None:
        return
    usages = list(ext.value)
    if ExtendedKeyUsageOID.SERVER_AUTH in usages or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
        return
    names = ", ".join(getattr(u, "_name", u.dotted_string) for u in usages)
    findings.append(_finding("bad-eku", f"{file}: {role} {describe(cert)} has extendedKeyUsage {names} without "
                             "serverAuth; istiod's Go verifier rejects the chain", file,
                             "re-issue the CA without extendedKeyUsage (best) or with serverAuth in it"))


def _check_ca(cert: x509.Certificate, file: str, findings: list[Finding], role: str, anchor: bool) -> None:
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or not bc.value.ca:
        if anchor and bc is None:
            # Go does not check a trust anchor's basicConstraints; OpenSSL treats a
            # self-signed cert without them as a CA. Accept, note.
            findings.append(_finding("legacy-profile", f"{file}: {role} {describe(cert)} has no basicConstraints; "
                                     "accepted for a root, but RFC 5280 requires CA:TRUE", file,
                                     "next root rotation: make a root with basicConstraints CA:TRUE"))
        else:
            what = "basicConstraints CA:FALSE" if bc is not None else "no basicConstraints"
            findings.append(_finding("not-a-ca", f"{file}: {role} {describe(cert)} has {what}; it is not a CA, so "
                                     "the workload certs it signs are rejected", file,
                                     "issue a real intermediate CA (meshpki issue CLUSTER); an end-entity "
                                     "certificate cannot be ca-cert.pem"))
    elif not bc.critical:
        findings.append(_finding("legacy-profile", f"{file}: {role} {describe(cert)} has non-critical "
                                 "basicConstraints; istiod accepts it (RFC 5280 wants it critical)", file,
                                 "optional: re-issue with critical basicConstraints"))
    ku = _ext(cert, x509.KeyUsage)
    if ku is None:
        findings.append(_finding("legacy-profile", f"{file}: {role} {describe(cert)} has no keyUsage; Go and "
                                 "OpenSSL accept it (RFC 5280 requires keyCertSign)", file,
                                 "optional: re-issue with keyUsage keyCertSign, cRLSign"))
    elif not ku.value.key_cert_sign:
        # Go ignores keyUsage, so istiod loads it; but the proxies' BoringSSL refuses
        # a chain whose issuer has keyUsage without keyCertSign (RFC 5280 4.2.1.3).
        findings.append(_finding("no-keycertsign", f"{file}: {role} {describe(cert)} has keyUsage without "
                                 "keyCertSign; proxies reject every certificate it signs", file,
                                 "re-issue it with keyUsage keyCertSign (meshpki issue does)"))


def _check_signature(cert: x509.Certificate, file: str, findings: list[Finding], role: str, anchor: bool) -> None:
    weak = _weak_hash(cert)
    if not weak:
        return
    if anchor and cert.subject == cert.issuer:
        # Nobody verifies a trust anchor's own signature (Go, BoringSSL, OpenSSL).
        findings.append(_finding("weak-signature", f"{file}: {role} {describe(cert)} is self-signed with {weak}; "
                                 "its own signature is not checked, but scanners will flag it", file,
                                 "at the next root rotation make a SHA-256 root", Severity.WARNING))
    else:
        findings.append(_finding("weak-signature", f"{file}: {role} {describe(cert)} is signed with {weak}; Go "
                                 "(istiod) and current TLS stacks reject it", file,
                                 "re-issue it with SHA-256 (old LibreSSL/openssl defaults: pass -sha256)"))


# -- the path ------------------------------------------------------------------

@dataclass(frozen=True)
class PathResult:
    """The issuers above a certificate up to a trust anchor, or why there are none."""

    path: tuple[x509.Certificate, ...]
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def build_path(start: x509.Certificate, intermediates: Sequence[x509.Certificate],
               anchors: Sequence[x509.Certificate], max_depth: int = 8) -> PathResult:
    """Find issuers of `start` in `intermediates` up to one of `anchors`, checking
    every signature, the way Go's and OpenSSL's path builders do (any cert of
    the root pool may be the anchor; the order of the intermediates does not matter)."""
    def search(cert: x509.Certificate, seen: tuple[x509.Certificate, ...]) -> tuple[x509.Certificate, ...] | None:
        for anchor in anchors:
            if anchor.subject == cert.issuer and signed_by(cert, anchor):
                return (anchor,)
        if len(seen) >= max_depth:
            return None
        for inter in intermediates:
            if inter in seen or inter == cert or inter.subject != cert.issuer:
                continue
            if signed_by(cert, inter):
                rest = search(inter, (*seen, inter))
                if rest is not None:
                    return (inter, *rest)
        return None

    if start in anchors:  # trusted as it is (Go: a leaf in the root pool verifies)
        return PathResult((start,))
    found = search(start, ())
    if found is not None:
        return PathResult(found)
    return PathResult((), _why_no_path(start, intermediates, anchors))


def _why_no_path(start: x509.Certificate, intermediates: Sequence[x509.Certificate],
                 anchors: Sequence[x509.Certificate]) -> str:
    """Follow the first plausible issuer to say where the path stops, in a user's words."""
    cert, seen = start, [start]
    for _ in range(8):
        same_name_roots = [a for a in anchors if a.subject == cert.issuer]
        if same_name_roots:
            return (f"{describe(cert)} names issuer '{cert.issuer.rfc4514_string()}', and the root-cert.pem cert "
                    "of that name did not sign it (a different root with the same name, e.g. regenerated)")
        parents = [i for i in intermediates if i.subject == cert.issuer and i not in seen]
        signing = [p for p in parents if signed_by(cert, p)]
        if not signing:
            if parents:
                return (f"{describe(cert)} names issuer '{cert.issuer.rfc4514_string()}', but the cert-chain.pem "
                        "cert of that name did not sign it")
            roots = ", ".join(describe(a) for a in anchors) or "none"
            return (f"{describe(cert)} was issued by '{cert.issuer.rfc4514_string()}', which is in neither "
                    f"root-cert.pem (roots: {roots}) nor cert-chain.pem")
        cert = signing[0]
        seen.append(cert)
    return "the chain is longer than 8 certificates or loops"


# -- the bundle ---------------------------------------------------------------

def check_bundle(bundle: Bundle, now: dt.datetime | None = None, warn_days: int = DEFAULT_WARN_DAYS,
                 trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN, target: str | None = None) -> BundleReport:
    """Every single-bundle check, then the real test: a workload cert signed
    with the bundle's key must pass a mutual-TLS handshake against the
    bundle's own root-cert.pem. `now` drives the explicit validity checks;
    the handshake uses the system clock (OpenSSL)."""
    now = now or profiles.utcnow()
    findings: list[Finding] = []
    mat = LoadedBundle()
    name = bundle.name_of
    ca_file, key_file, chain_file, root_file = name(CA_CERT), name(CA_KEY), name(CERT_CHAIN), name(ROOT_CERT)

    for missing in bundle.missing():
        findings.append(_finding("missing-file", f"{missing} is missing", missing,
                                 "put all files of the bundle in place: a partial cacerts secret is refused by "
                                 "istiod 1.27+ and silently replaced by a self-signed root before"))
    for file, why in bundle.unreadable.items():
        findings.append(_finding("unreadable", f"{file} cannot be read: {why}", file,
                                 "fix its permissions or replace it with the PEM file"))

    ca_certs = _parse_certs(bundle.ca_cert, ca_file, findings)
    key = _load_key(bundle.ca_key, key_file, findings)
    roots = _parse_certs(bundle.root_cert, root_file, findings)
    chain = _parse_certs(bundle.cert_chain, chain_file, findings) if bundle.cert_chain is not None else []
    ca = ca_certs[0] if ca_certs else None
    if len(ca_certs) > 1 and bundle.form != FORM_TLS:
        findings.append(_finding("ca-cert-extra", f"{ca_file} holds {len(ca_certs)} certificates; istiod uses "
                                 f"the first ({describe(ca_certs[0])}) and ignores the rest", ca_file,
                                 f"keep only the intermediate in {ca_file}; issuers belong in {chain_file}"))
    mat.ca_cert, mat.ca_key, mat.chain, mat.roots = ca, key, tuple(chain), tuple(roots)
    mat.chain_pem, mat.root_pem = bundle.cert_chain or b"", bundle.root_cert or b""

    key_ok = False
    if ca is not None and key is not None:
        try:
            ca_public = ca.public_key()
        except Exception:  # a damaged or unknown public key: _check_key_strength reports it
            ca_public = None
        key_ok = ca_public is not None and public_keys_match(key, ca_public)
        if ca_public is not None and not key_ok:
            findings.append(_finding("key-mismatch", f"{key_file} does not match {ca_file} ({describe(ca)})",
                                     key_file, f"put the key that belongs to {ca_file} in {key_file}, or re-issue "
                                     "the bundle (meshpki issue CLUSTER --force)"))

    path: tuple[x509.Certificate, ...] = ()
    if ca is not None:
        _check_ca(ca, ca_file, findings, "intermediate", anchor=False)
        _check_eku(ca, ca_file, findings, "intermediate")
        _check_key_strength(ca, ca_file, findings)
        _check_validity(ca, ca_file, now, warn_days, findings, "intermediate")
        if roots:
            result = build_path(ca, chain, roots)
            if result.ok:
                path = result.path
            else:
                findings.append(_finding("chain-broken", f"{ca_file} does not chain to {root_file}: "
                                         f"{result.problem}", ca_file,
                                         f"make {root_file} hold the root that signed the intermediate and "
                                         f"{chain_file} every certificate in between (meshpki issue does)"))
        if chain and ca not in chain:
            findings.append(_finding("chain-broken", f"{chain_file} does not contain {ca_file}; proxies present "
                                     f"workload cert + {chain_file}, so peers cannot link the workload to a root",
                                     chain_file, f"start {chain_file} with the contents of {ca_file}"))
        elif path and chain:
            _check_chain_layout(ca, path, chain, chain_file, findings)
        _check_signature(ca, ca_file, findings, "intermediate", anchor=False)
    _check_path(ca, path, now, warn_days, chain_file, root_file, findings)
    _check_roots(roots, path, now, warn_days, root_file, findings)
    mat.path = path

    # The real test only for a whole bundle: istiod (1.27+) refuses a partial one.
    if ca is not None and key is not None and key_ok and chain and not bundle.missing():
        _workload_test(bundle, ca, key, mat, path, now, trust_domain, target or bundle.source, findings,
                       ca_file, chain_file, root_file)
    return BundleReport(target or bundle.source, tuple(findings), mat)


def _check_path(ca: x509.Certificate | None, path: Sequence[x509.Certificate], now: dt.datetime, warn_days: int,
                chain_file: str, root_file: str, findings: list[Finding]) -> None:
    """Checks on every issuer above ca-cert.pem, and pathLenConstraint with the
    workload leaf at the bottom (istiod signs leaves under ca-cert.pem)."""
    if ca is None or not path:
        return
    anchor = path[-1]
    for cert in path[:-1]:
        _check_ca(cert, chain_file, findings, "chain CA", anchor=False)
        _check_eku(cert, chain_file, findings, "chain CA")
        _check_key_strength(cert, chain_file, findings)
        _check_signature(cert, chain_file, findings, "chain CA", anchor=False)
        _check_validity(cert, chain_file, now, warn_days, findings, "chain CA")
    if anchor is not ca:
        _check_ca(anchor, root_file, findings, "root", anchor=True)
        _check_eku(anchor, root_file, findings, "root")
        _check_key_strength(anchor, root_file, findings)
        _check_signature(anchor, root_file, findings, "root", anchor=True)
        _check_validity(anchor, root_file, now, warn_days, findings, "root")
    if not is_self_signed(anchor):
        findings.append(_finding("root-not-self-signed", f"{root_file}: trust anchor {describe(anchor)} is not "
                                 "self-signed; istiod and proxies accept it, but the mesh then trusts only that "
                                 "branch", root_file, "put the self-signed root in root-cert.pem"))
    # Go (crypto/x509 verify.go isValid) counts every CA below a cert, self-issued
    # or not: numIntermediates = len(chain so far) - 1, with the workload leaf at 0.
    full = [ca] + [c for c in path if c is not ca]
    for below, cert in enumerate(full):
        bc = _ext(cert, x509.BasicConstraints)
        if bc is not None and bc.value.ca and bc.value.path_length is not None and below > bc.value.path_length:
            file = root_file if cert is anchor else chain_file
            findings.append(_finding("pathlen-violated", f"{file}: {describe(cert)} has pathlen:"
                                     f"{bc.value.path_length} but {below} CA certificate(s) sit below it on the "
                                     "path to the workload certs; proxies reject every workload cert", file,
                                     "issue the intermediate directly under a root without that limit, or "
                                     "re-issue the issuer with a larger pathlen"))
    ca_end = ca.not_valid_after_utc
    if anchor is not ca and ca_end > anchor.not_valid_after_utc:
        findings.append(_finding("outlives-root", f"the intermediate {describe(ca)} (until {_fmt(ca_end)}) outlives "
                                 f"its root {describe(anchor)} (until {_fmt(anchor.not_valid_after_utc)}); it is "
                                 "useless after the root expires", root_file,
                                 "plan the root rotation before the root expires (meshpki rotate-root begin)"))


def _check_chain_layout(ca: x509.Certificate, path: Sequence[x509.Certificate], chain: Sequence[x509.Certificate],
                        chain_file: str, findings: list[Finding]) -> None:
    """cert-chain.pem should be ca-cert.pem, then each issuer, optionally the root."""
    expected = [ca, *list(path)]
    extras, seen = [], []
    for cert in chain:
        if cert in seen:
            extras.append(f"{describe(cert)} (a second copy)")
        elif cert not in expected:
            extras.append(describe(cert))
        seen.append(cert)
    if extras:
        findings.append(_finding("chain-extra", f"{chain_file} holds certificates that do not belong to this "
                                 f"chain: {', '.join(extras)}; every proxy sends them on every handshake", chain_file,
                                 f"keep only ca-cert.pem and its issuers in {chain_file}"))
    positions = [expected.index(c) for c in dict.fromkeys(chain) if c in expected]
    if (chain and chain[0] != ca) or positions != sorted(positions):
        findings.append(_finding("chain-order", f"{chain_file} is not leaf-first: it should be the intermediate, "
                                 "then each issuer up to the root", chain_file,
                                 f"rewrite {chain_file} as ca-cert.pem followed by its issuers in order"))
    if path and path[-1] not in chain and path[-1] is not ca:
        findings.append(_finding("chain-without-root", f"{chain_file} stops below the root; peers hold the root "
                                 "in their root-cert.pem, so this works", chain_file))


def _check_roots(roots: Sequence[x509.Certificate], path: Sequence[x509.Certificate], now: dt.datetime,
                 warn_days: int, root_file: str, findings: list[Finding]) -> None:
    """Roots not on this bundle's path (a second root during rotation, or a stray
    cert): only expiry and strength matter, as warnings."""
    for root in roots:
        if path and root == path[-1]:
            continue
        # with no path we cannot tell which root matters; a lone root always does
        _check_validity(root, root_file, now, warn_days, findings, "extra root" if path else "root",
                        on_path=not path and len(roots) == 1)
        if not path:
            _check_key_strength(root, root_file, findings)


def _workload_test(bundle: Bundle, ca: x509.Certificate, key: PrivateKey, mat: LoadedBundle,
                   path: Sequence[x509.Certificate], now: dt.datetime, trust_domain: str, name: str,
                   findings: list[Finding], ca_file: str, chain_file: str, root_file: str) -> None:
    """Sign a workload cert as istiod does and shake hands with itself, trusting
    only root-cert.pem: what two proxies of the same cluster do."""
    try:
        endpoint, leaf = handshake.workload_endpoint(name, ca, key, mat.chain_pem, mat.root_pem, trust_domain,
                                                     now=now)
    except Exception as exc:  # a key that cannot sign (damaged, or odd parameters)
        findings.append(_finding("workload-rejected", f"{bundle.name_of(CA_KEY)} cannot sign a workload "
                                 f"certificate: {exc}", bundle.name_of(CA_KEY), "replace the damaged key"))
        return
    mat.workload = leaf
    limit = min([ca.not_valid_after_utc] + [c.not_valid_after_utc for c in path])
    if leaf.not_valid_after_utc > limit and now < limit:
        findings.append(_finding("workload-outlives-ca", f"a {profiles.WORKLOAD_TTL.total_seconds() / 3600:.0f}h "
                                 f"workload cert issued now would outlive its CA chain (ends {_fmt(limit)}); istiod "
                                 "issues it anyway and proxies reject it after that", ca_file,
                                 "rotate the intermediate now (meshpki rotate CLUSTER) and push"))
    if not signed_by(leaf, ca):
        findings.append(_finding("workload-rejected", f"a workload cert signed with {bundle.name_of(CA_KEY)} does "
                                 f"not verify with {ca_file}'s public key: the key is damaged",
                                 bundle.name_of(CA_KEY), "replace ca-key.pem with the intact key or re-issue"))
        return
    if not mat.roots:
        return  # missing-file or unparsable already says why; nothing to trust
    result = handshake.mutual_tls(endpoint, endpoint)
    if result.ok:
        mat.endpoint = endpoint
        findings.append(_finding("workload-ok", f"a workload cert (spiffe://{trust_domain}/ns/default/sa/default, "
                                 f"24h) signed by {ca_file} passed mutual TLS against {root_file} "
                                 f"({result.version})", None))
    else:
        findings.append(_finding("workload-rejected", f"a workload cert signed by this bundle (presented with "
                                 f"{chain_file}) is refused by a proxy trusting {root_file}: {result.detail}",
                                 chain_file,
                                 "fix the errors above; every workload of this cluster would fail mTLS"))


# -- pairs --------------------------------------------------------------------

def check_pair(a: BundleReport, b: BundleReport) -> PairReport:
    """Would workloads of A and B talk? Statically (each chain against the
    other's root-cert.pem), then for real (a mutual-TLS handshake, each side
    trusting only its own root-cert.pem, and the SPIFFE trust domain check)."""
    ma, mb = a.material, b.material
    findings: list[Finding] = []
    broken = [r.target for r in (a, b) if not r.material.can_sign]
    if broken:
        findings.append(_finding(
            "peer-broken", f"{' and '.join(broken)}: bundle cannot sign working workload certificates (see its "
            f"findings), so mTLS between {a.target} and {b.target} cannot work", None,
            f"fix {' and '.join(broken)} first"))
        return PairReport(a.target, b.target, tuple(findings))
    a_in_b = _trusted_by(ma, mb)
    b_in_a = _trusted_by(mb, ma)
    if not a_in_b and not b_in_a:
        findings.append(_finding(
            "peer-untrusted", f"{a.target} and {b.target} trust different roots ({_root_names(ma)} vs "
            f"{_root_names(mb)}): cross-cluster mTLS fails with UNKNOWN_CA", None,
            "issue both intermediates from one root (meshpki issue), or put both roots in every root-cert.pem"))
    else:
        for signer, truster, ok in ((a, b, a_in_b), (b, a, b_in_a)):
            if not ok:
                findings.append(_finding(
                    "peer-untrusted", f"{truster.target}'s root-cert.pem does not hold the root that signed "
                    f"{signer.target}'s chain ({_root_names(signer.material, path_only=True)}): {truster.target}'s "
                    f"proxies reject {signer.target}'s workloads with UNKNOWN_CA", None,
                    f"add that root to {truster.target}'s root-cert.pem (meshpki rotate-root keeps them in step)"))
    assert ma.endpoint is not None and mb.endpoint is not None  # can_sign above
    result = handshake.mutual_tls(ma.endpoint, mb.endpoint)
    if result.ok:
        findings.append(_finding("handshake-ok", f"{a.target} -> {b.target}: {result.reason}", None))
    elif result.rejected_by and result.alert is None and "trust domain" in result.reason:
        findings.append(_finding("trust-domain-mismatch", result.reason, None,
                                 "use one trust domain across the mesh, or configure trustDomainAliases"))
    else:
        findings.append(_finding("handshake-failed", f"{a.target} -> {b.target}: {result.reason}", None,
                                 "see the peer-untrusted finding; every root-cert.pem must hold the other "
                                 "cluster's root" if any(f.code == "peer-untrusted" for f in findings)
                                 else "fix the certificate the message names"))
    return PairReport(a.target, b.target, tuple(findings))


def _trusted_by(signer: LoadedBundle, truster: LoadedBundle) -> bool:
    """Does a workload of `signer` (leaf + its cert-chain.pem) verify against
    `truster`'s root-cert.pem? Same path rules as the bundle check."""
    if signer.workload is None:
        return False
    return build_path(signer.workload, signer.chain, truster.roots).ok


def _root_names(mat: LoadedBundle, path_only: bool = False) -> str:
    certs = [mat.path[-1]] if path_only and mat.path else list(mat.roots)
    return ", ".join(f"{describe(c)} sha256:{fingerprint(c)[:12]}" for c in certs) or "none"
