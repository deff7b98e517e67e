"""Every check of a cacerts bundle, and of two bundles meant to trust each other.

The rule of thumb is Istio's, not the browser's: accept what istiod and the
proxies accept, reject what they reject, and say which of them objects
(findings.py, docs/istio-compat.md). istiod loads a bundle with Go's
crypto/x509 (security/pkg/pki/util/keycertbundle.go `Verify`: the first cert
of ca-cert.pem verified against root-cert.pem through cert-chain.pem, for the
default serverAuth usage; the first PEM block of ca-key.pem; ca-crl.pem when
present); proxies (Envoy, BoringSSL) then verify workload leaf +
cert-chain.pem against root-cert.pem. So a CA without keyUsage or with
non-critical basicConstraints is fine here (Go and OpenSSL accept them),
though RFC 5280 says otherwise.

A `BundleChecker` reads each file the way istiod does, then runs one method
per concern; every method yields Findings, and nothing here prints.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import re
import secrets
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshpki import crlcheck, handshake, pem, profiles
from meshpki.bundle import (
    CA_CERT,
    CA_CRL,
    CA_KEY,
    CERT_CHAIN,
    FORM_TLS,
    ROOT_CERT,
    Bundle,
    cert_to_pem,
    describe,
    fingerprint,
    named_cluster,
    openssl_serial,
)
from meshpki.findings import CODES, By, Finding, Severity, finding
from meshpki.keys import PrivateKey, public_keys_match
from meshpki.limits import DEFAULT_WARN_DAYS
from meshpki.pathbuild import PathBuilder, PathResult, build_path, is_self_signed, signed_by

__all__ = ["CODES", "BundleReport", "By", "Finding", "PairReport", "PathResult", "Severity", "build_path",
           "check_bundle", "check_pair", "check_pairs", "is_self_signed", "signed_by"]

MIN_RSA_BITS = 2048
UNKNOWN_CLUSTER = "CLUSTER"
"""What a fix hint says when nothing names the bundle's cluster (a folder whose intermediate has no L=)."""
# Go's crypto/x509 parses only these curves (crypto/x509/parser.go namedCurveFromOID)
GO_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
# Go rejects SHA-1 (since 1.18) and MD5/MD2 signatures in chains (crypto/x509 InsecureAlgorithmError)
WEAK_HASHES = (hashes.SHA1, hashes.MD5)
# crypto.go ParsePemEncodedKey: the PEM block types istiod decodes as a key
KEY_BLOCKS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")
# The workload identity verify signs: obviously not a real one, and short-lived.
PROBE_NAMESPACE = "meshpki-probe"
PROBE_TTL = dt.timedelta(minutes=10)
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


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
    crls: tuple[x509.CertificateRevocationList, ...] = ()  # ca-crl.pem, files form, when it parses

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

def _ext(cert: x509.Certificate, cls: type) -> x509.Extension | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None
    except Exception:  # a malformed extension: treat as absent, the parse check reports the file
        return None


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


# -- per-certificate checks: each yields what is wrong with one certificate ----

def check_key_strength(cert: x509.Certificate, file: str) -> Iterator[Finding]:
    try:
        key = cert.public_key()
    except Exception as exc:  # an unknown curve: Go cannot parse the certificate at all
        yield finding("unsupported-key", f"{file}: {describe(cert)} has a public key Go cannot parse ({exc})",
                      file, "re-issue with RSA-2048+ or ECDSA P-256/P-384")
        return
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        yield finding("weak-key", f"{file}: {describe(cert)} has an RSA-{key.key_size} key; meshpki refuses "
                      f"RSA under {MIN_RSA_BITS} bits (NIST and current TLS stacks' floor)", file,
                      "re-issue it with rsa-2048 or stronger (or ecdsa-p256)")
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in GO_CURVES:
        yield finding("weak-key" if key.curve.key_size < 256 else "unsupported-key",
                      f"{file}: {describe(cert)} uses curve {key.curve.name}, which Go's crypto/x509 (istiod) "
                      "does not support", file, "re-issue with ecdsa-p256 or ecdsa-p384",
                      by=By.ISTIOD)


def renew_hint(role: str, cluster: str) -> str:
    """The command that replaces a certificate of this role: the root has its own rotation."""
    if role == "root":
        return "meshpki rotate-root begin (then follow the runbook it prints)"
    return f"meshpki rotate {cluster}, then meshpki push {cluster}"


def check_validity(cert: x509.Certificate, file: str, now: dt.datetime, warn_days: int, role: str,
                   on_path: bool = True, cluster: str = UNKNOWN_CLUSTER) -> Iterator[Finding]:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > end:
        consequence = ("istiod refuses to load the bundle and proxies reject the workloads" if on_path
                       else "it is not on this bundle's path, but it is dead weight")
        yield finding("expired", f"{file}: {role} {describe(cert)} expired on {_fmt(end)}; {consequence}", file,
                      renew_hint(role, cluster) if on_path else f"remove it from {file}",
                      None if on_path else Severity.WARNING, None if on_path else By.MESHPKI)
    elif now < start:
        yield finding("not-yet-valid", f"{file}: {role} {describe(cert)} is not valid before {_fmt(start)}", file,
                      "check the clock of the machine that issued it; re-issue with a notBefore in the past",
                      None if on_path else Severity.WARNING, None if on_path else By.MESHPKI)
    elif on_path and end - now < dt.timedelta(days=warn_days):
        days = (end - now).days
        yield finding("expiring-soon", f"{file}: {role} {describe(cert)} expires on {_fmt(end)} "
                      f"(in {days} day{'s' if days != 1 else ''})", file,
                      f"before then: {renew_hint(role, cluster)}")


def check_eku(cert: x509.Certificate, file: str, role: str) -> Iterator[Finding]:
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
    yield finding("bad-eku", f"{file}: {role} {describe(cert)} has extendedKeyUsage {names} without serverAuth; "
                  "istiod's Go verifier rejects the chain", file,
                  "re-issue the CA without extendedKeyUsage (best) or with serverAuth in it")


def check_ca(cert: x509.Certificate, file: str, role: str, anchor: bool,
             cluster: str = UNKNOWN_CLUSTER) -> Iterator[Finding]:
    bc = _ext(cert, x509.BasicConstraints)
    if bc is None or not bc.value.ca:
        if anchor and bc is None:
            # Go does not check a trust anchor's basicConstraints; OpenSSL treats a
            # self-signed cert without them as a CA. Accept, note.
            yield finding("legacy-profile", f"{file}: {role} {describe(cert)} has no basicConstraints; accepted "
                          "for a root, but RFC 5280 requires CA:TRUE", file,
                          "next root rotation: make a root with basicConstraints CA:TRUE")
        else:
            what = "basicConstraints CA:FALSE" if bc is not None else "no basicConstraints"
            who = ("istiod refuses it (not authorized to sign other certificates)" if not anchor
                   else "proxies reject the workload certs below it")
            fix = ("make a real root (meshpki rotate-root begin); a trust anchor must be a CA" if role == "root"
                   else f"issue a real intermediate CA (meshpki issue {cluster} --force); an end-entity "
                   f"certificate cannot be {file}")
            yield finding("not-a-ca", f"{file}: {role} {describe(cert)} has {what}; it is not a CA: {who}", file,
                          fix, by=By.PROXY if anchor else By.ISTIOD)
    elif not bc.critical:
        yield finding("legacy-profile", f"{file}: {role} {describe(cert)} has non-critical basicConstraints; "
                      "istiod accepts it (RFC 5280 wants it critical)", file,
                      "optional: re-issue with critical basicConstraints")
    ku = _ext(cert, x509.KeyUsage)
    if ku is None:
        yield finding("legacy-profile", f"{file}: {role} {describe(cert)} has no keyUsage; Go and OpenSSL accept "
                      "it (RFC 5280 requires keyCertSign)", file,
                      "optional: re-issue with keyUsage keyCertSign, cRLSign")
    elif not ku.value.key_cert_sign:
        # Go ignores keyUsage, so istiod loads it; but the proxies' BoringSSL refuses
        # a chain whose issuer has keyUsage without keyCertSign (RFC 5280 4.2.1.3).
        yield finding("no-keycertsign", f"{file}: {role} {describe(cert)} has keyUsage without keyCertSign; "
                      "istiod loads it, but proxies reject every certificate it signs", file,
                      "re-issue it with keyUsage keyCertSign (meshpki issue does)")


def check_signature(cert: x509.Certificate, file: str, role: str, anchor: bool) -> Iterator[Finding]:
    weak = _weak_hash(cert)
    if not weak:
        return
    if anchor and cert.subject == cert.issuer:
        # Nobody verifies a trust anchor's own signature (Go, BoringSSL, OpenSSL).
        yield finding("weak-signature", f"{file}: {role} {describe(cert)} is self-signed with {weak}; its own "
                      "signature is not checked, but scanners will flag it", file,
                      "at the next root rotation make a SHA-256 root", Severity.WARNING, By.MESHPKI)
    else:
        yield finding("weak-signature", f"{file}: {role} {describe(cert)} is signed with {weak}; Go (istiod) and "
                      "current TLS stacks reject it", file,
                      "re-issue it with SHA-256 (old LibreSSL/openssl defaults: pass -sha256)")


def check_sans(cert: x509.Certificate, file: str, role: str, cluster: str = UNKNOWN_CLUSTER) -> Iterator[Finding]:
    """A DNS SAN that is empty or not a DNS name: made by a tool that did not check
    (meshpki issue refuses such names)."""
    ext = _ext(cert, x509.SubjectAlternativeName)
    if ext is None:
        return
    bad = [name for name in ext.value.get_values_for_type(x509.DNSName) if not _is_dns_name(name)]
    if bad:
        shown = ", ".join(repr(b) for b in bad)
        yield finding("bad-san", f"{file}: {role} {describe(cert)} has subjectAltName DNS {shown}, not a DNS "
                      "name; Go and OpenSSL carry it, but a name-constrained root or a strict client refuses it",
                      file, f"re-issue with valid names (meshpki issue {cluster} --force --san-dns NAME checks them)")


def _is_dns_name(name: str) -> bool:
    text = name[2:] if name.startswith("*.") else name
    if not text or len(text) > 253 or text.endswith("."):
        return False
    try:
        ipaddress.ip_address(text)
        return False  # an IP address belongs in an iPAddress SAN
    except ValueError:
        pass
    return all(_DNS_LABEL.fullmatch(label) for label in text.split("."))


def uri_host_allowed(host: str, cert: x509.Certificate) -> bool:
    """Does `cert`'s nameConstraints extension allow a URI with this host?
    RFC 5280 4.2.1.10 (and Go, OpenSSL, BoringSSL): a URI constraint is a host
    name, exact, or a domain when it starts with a period; no URI subtree in
    `permitted` means URIs are not constrained."""
    ext = _ext(cert, x509.NameConstraints)
    if ext is None:
        return True

    def matches(constraint: str) -> bool:
        constraint = constraint.lower()
        if constraint.startswith("."):
            return host.lower().endswith(constraint)
        return host.lower() == constraint

    permitted = [g.value for g in (ext.value.permitted_subtrees or []) if isinstance(g, x509.UniformResourceIdentifier)]
    excluded = [g.value for g in (ext.value.excluded_subtrees or []) if isinstance(g, x509.UniformResourceIdentifier)]
    if any(matches(c) for c in excluded):
        return False
    return not permitted or any(matches(c) for c in permitted)


# -- the bundle ---------------------------------------------------------------

class BundleChecker:
    """One bundle's judgement: reads each file as istiod does, then one method per
    concern, each yielding Findings. `run` collects them into a BundleReport."""

    def __init__(self, bundle: Bundle, now: dt.datetime, warn_days: int, trust_domain: str, target: str,
                 cluster: str | None = None, guess: str | None = None) -> None:
        self.bundle, self.now, self.warn_days, self.trust_domain, self.target = (
            bundle, now, warn_days, trust_domain, target)
        self._cluster, self._guess = cluster, guess
        name = bundle.name_of
        self.ca_file, self.key_file, self.chain_file, self.root_file = (
            name(CA_CERT), name(CA_KEY), name(CERT_CHAIN), name(ROOT_CERT))
        self.mat = LoadedBundle()
        self.paths = PathBuilder()
        self.ca: x509.Certificate | None = None
        self.key: PrivateKey | None = None
        self.key_ok = False
        self.chain: list[x509.Certificate] = []
        self.roots: list[x509.Certificate] = []
        self.path: tuple[x509.Certificate, ...] = ()

    @property
    def cluster(self) -> str:
        """The cluster a fix hint names: the one the caller knows (a store cluster, a live
        secret's fleet cluster), else the L= meshpki and Istio's tools put in the
        intermediate's subject, else the caller's guess (a context's name), else the placeholder."""
        if self._cluster:
            return self._cluster
        named = named_cluster(self.ca) if self.ca is not None else None
        return named or self._guess or UNKNOWN_CLUSTER

    def run(self) -> BundleReport:
        findings: list[Finding] = []
        for step in (self.presence, self.read_files, self.key_match, self.intermediate, self.issuers,
                     self.other_roots, self.crls, self.workload):
            findings.extend(step())
        self.mat.path = self.path
        return BundleReport(self.target, tuple(findings), self.mat)

    # -- reading the files --------------------------------------------------

    def presence(self) -> Iterator[Finding]:
        for missing in self.bundle.missing():
            yield finding("missing-file", f"{missing} is missing", missing,
                          "put all files of the bundle in place: a partial cacerts secret is refused by istiod "
                          "1.27+ and silently replaced by a self-signed root before")
        for file, why in self.bundle.unreadable.items():
            yield finding("unreadable", f"{file} cannot be read: {why}", file,
                          "fix its permissions or replace it with the PEM file")

    def read_files(self) -> Iterator[Finding]:
        b = self.bundle
        ca_certs: list[x509.Certificate] = []
        if b.ca_cert is not None:
            # ParsePemEncodedCertificate: only the first block counts
            ca_certs = list((yield from self._certs(b.ca_cert, self.ca_file, pem.Policy.FIRST)))
            extra = len([x for x in pem.decode(b.ca_cert).blocks if x.label == pem.CERTIFICATE]) - 1
            if ca_certs and extra > 0 and b.form != FORM_TLS:
                yield finding("ca-cert-extra", f"{self.ca_file} holds {extra + 1} certificates; istiod uses the "
                              f"first ({describe(ca_certs[0])}) and ignores the rest", self.ca_file,
                              f"keep only the intermediate in {self.ca_file}; issuers belong in {self.chain_file}")
        self.key = yield from self._key()
        if b.root_cert is not None:  # AppendCertsFromPEM: damaged blocks are skipped
            self.roots = list((yield from self._certs(b.root_cert, self.root_file, pem.Policy.SKIP)))
        if b.cert_chain is not None:
            self.chain = list((yield from self._certs(b.cert_chain, self.chain_file, pem.Policy.SKIP)))
        self.ca = ca_certs[0] if ca_certs else None
        m = self.mat
        m.ca_cert, m.ca_key, m.chain, m.roots = self.ca, self.key, tuple(self.chain), tuple(self.roots)
        m.chain_pem = b.cert_chain or b""
        # proxies get root-cert.pem as it is; the handshake trusts what parses
        m.root_pem = b"".join(cert_to_pem(c) for c in self.roots) if self.roots else (b.root_cert or b"")

    def _certs(self, data: bytes, file: str, policy: pem.Policy
               ) -> Generator[Finding, None, tuple[x509.Certificate, ...]]:
        """Read a certificate file under istiod's policy for it; returns the certificates."""
        fix = "re-copy the file from its source (whole PEM blocks, BEGIN to END)"
        if b"-----BEGIN " not in data:
            kind = "binary (DER?) data" if b"\x00" in data or data[:1] == b"\x30" else "no PEM certificate"
            yield finding("unparsable", f"{file} holds {kind}; istiod needs PEM certificates", file,
                          fix if kind.startswith("no") else f"convert it: openssl x509 -inform DER -in {file} "
                          f"-out {file}.pem")
            return ()
        result = pem.read_certs(data, policy)
        if result.error is not None:
            yield finding("unparsable", f"{file} is not valid PEM ({result.error}); is the file cut off?", file, fix)
            return ()
        if result.skipped:
            skipped = "; ".join(result.skipped)
            if file == self.chain_file:
                yield finding("unparsable", f"{file}: {skipped}; istiod skips it, but proxies present "
                              f"{file} as it is and cannot load it", file, fix, by=By.PROXY)
            else:
                yield finding("damaged-block", f"{file}: {skipped}; istiod skips it and trusts the rest, but "
                              "proxies receive the file as it is and some refuse a damaged trust bundle", file,
                              f"remove the damaged block from {file}")
        return result.certs

    def _key(self) -> Generator[Finding, None, PrivateKey | None]:
        """ca-key.pem as istiod reads it (crypto.go ParsePemEncodedKey): the FIRST PEM
        block, PKCS#8, PKCS#1 or SEC1, never encrypted. RSA key validation is
        skipped (0.25 s for 4096 bits): a damaged key is still caught, by the
        workload signature that must verify."""
        data, file = self.bundle.ca_key, self.key_file
        if data is None:
            return None
        blocks = pem.decode(data).blocks
        first = blocks[0] if blocks else None
        encrypted = first is not None and (first.label == "ENCRYPTED PRIVATE KEY" or "ENCRYPTED" in
                                           pem.headers(data).get("Proc-Type", ""))
        if encrypted:
            yield finding("encrypted-key", f"{file} is encrypted; istiod reads it as plain PEM and cannot start",
                          file, f"decrypt it (openssl pkey -in {file} -out {file}) before it goes into the cacerts "
                          "secret")
            return None
        if first is None:
            yield finding("unparsable", f"{file} holds no PEM block; istiod needs a PEM private key", file,
                          "put the CA's plain PEM key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) here")
            return None
        if first.label not in KEY_BLOCKS:
            if any(b.label in KEY_BLOCKS for b in blocks[1:]):
                yield finding("key-block-order", f"{file} starts with a {first.label} block; istiod decodes only "
                              "the first PEM block and refuses the bundle (what `openssl ecparam -genkey` "
                              "writes)", file, f"keep only the key: openssl pkey -in {file} -out {file}.new && "
                              f"mv {file}.new {file}")
            else:
                yield finding("unparsable", f"{file} starts with a {first.label} block, not a private key", file,
                              "put the CA's plain PEM key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) here")
            return None
        try:
            key = serialization.load_der_private_key(first.der, password=None, unsafe_skip_rsa_key_validation=True)
        except Exception as exc:
            yield finding("unparsable", f"{file} is not a readable PEM private key ({pem.short_error(exc)})",
                          file, "put the CA's plain PEM key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) here")
            return None
        if isinstance(key, ed25519.Ed25519PrivateKey):
            # Go's PKCS#8 parser and x509.CreateCertificate take Ed25519: istiod loads and signs.
            yield finding("uncommon-key", f"{file} is an Ed25519 key; istiod loads it and signs with it, and "
                          "Envoy (BoringSSL) verifies it, but FIPS builds of the proxies refuse Ed25519 and Istio "
                          "does not test it", file, "prefer ecdsa-p256 at the next rotation")
            return key  # type: ignore[return-value]
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            yield finding("unsupported-key", f"{file} is a {type(key).__name__}; istiod's CA signs with RSA, "
                          "ECDSA or Ed25519 keys only", file, "issue the intermediate with an RSA or ECDSA key")
            return None
        if first.label != "PRIVATE KEY":
            yield finding("legacy-profile", f"{file} is a traditional (PKCS#1/SEC1) key; istiod accepts it", file,
                          "optional: convert to PKCS#8 with openssl pkey")
        return key

    # -- the intermediate and its path --------------------------------------

    def key_match(self) -> Iterator[Finding]:
        ca, key = self.ca, self.key
        if ca is None or key is None:
            return
        try:
            ca_public = ca.public_key()
        except Exception:  # a damaged or unknown public key: check_key_strength reports it
            return
        self.key_ok = public_keys_match(key, ca_public)
        if not self.key_ok:
            yield finding("key-mismatch", f"{self.key_file} does not match {self.ca_file} ({describe(ca)})",
                          self.key_file, f"put the key that belongs to {self.ca_file} in {self.key_file}, or "
                          f"re-issue the bundle (meshpki issue {self.cluster} --force)")

    def intermediate(self) -> Iterator[Finding]:
        ca, f = self.ca, self.ca_file
        if ca is None:
            return
        yield from check_ca(ca, f, "intermediate", anchor=False, cluster=self.cluster)
        yield from check_eku(ca, f, "intermediate")
        yield from check_key_strength(ca, f)
        yield from check_validity(ca, f, self.now, self.warn_days, "intermediate", cluster=self.cluster)
        yield from check_sans(ca, f, "intermediate", self.cluster)
        if self.roots:
            result = self.paths.build(ca, self.chain, self.roots)
            if result.ok:
                self.path = result.path
            else:
                yield finding("chain-broken", f"{f} does not chain to {self.root_file}: {result.problem}; istiod "
                              "refuses the bundle", f, f"make {self.root_file} hold the root that signed the "
                              f"intermediate and {self.chain_file} every certificate in between (meshpki issue does)")
        if self.chain and ca not in self.chain:
            yield finding("chain-broken", f"{self.chain_file} does not contain {f}: istiod starts, but proxies "
                          f"present workload cert + {self.chain_file}, so peers cannot build the chain to a root",
                          self.chain_file, f"start {self.chain_file} with the contents of {f}", by=By.PROXY)
        elif self.path and self.chain:
            yield from self._chain_layout()
        yield from check_signature(ca, f, "intermediate", anchor=False)

    def issuers(self) -> Iterator[Finding]:
        """Checks on every issuer above ca-cert.pem, and pathLenConstraint with the
        workload leaf at the bottom (istiod signs leaves under ca-cert.pem)."""
        ca, path = self.ca, self.path
        if ca is None or not path:
            return
        anchor = path[-1]
        for cert in path[:-1]:
            yield from check_ca(cert, self.chain_file, "chain CA", anchor=False, cluster=self.cluster)
            yield from check_eku(cert, self.chain_file, "chain CA")
            yield from check_key_strength(cert, self.chain_file)
            yield from check_signature(cert, self.chain_file, "chain CA", anchor=False)
            yield from check_validity(cert, self.chain_file, self.now, self.warn_days, "chain CA",
                                      cluster=self.cluster)
        if anchor is not ca:
            yield from check_ca(anchor, self.root_file, "root", anchor=True)
            yield from check_eku(anchor, self.root_file, "root")
            yield from check_key_strength(anchor, self.root_file)
            yield from check_signature(anchor, self.root_file, "root", anchor=True)
            yield from check_validity(anchor, self.root_file, self.now, self.warn_days, "root")
        if not is_self_signed(anchor):
            yield finding("root-not-self-signed", f"{self.root_file}: trust anchor {describe(anchor)} is not "
                          "self-signed; istiod and proxies accept it, but the mesh then trusts only that branch",
                          self.root_file, "put the self-signed root in root-cert.pem")
        yield from self._pathlen(ca, anchor)
        yield from self._name_constraints(ca)
        ca_end = ca.not_valid_after_utc
        if anchor is not ca and ca_end > anchor.not_valid_after_utc:
            yield finding("outlives-root", f"the intermediate {describe(ca)} (until {_fmt(ca_end)}) outlives its "
                          f"root {describe(anchor)} (until {_fmt(anchor.not_valid_after_utc)}); it is useless "
                          "after the root expires", self.root_file,
                          "plan the root rotation before the root expires (meshpki rotate-root begin)")

    def _pathlen(self, ca: x509.Certificate, anchor: x509.Certificate) -> Iterator[Finding]:
        # Go (crypto/x509 verify.go isValid) counts every CA below a cert, self-issued
        # or not: numIntermediates = len(chain so far) - 1, with the workload leaf at 0.
        full = [ca] + [c for c in self.path if c is not ca]
        for below, cert in enumerate(full):
            bc = _ext(cert, x509.BasicConstraints)
            if bc is not None and bc.value.ca and bc.value.path_length is not None and below > bc.value.path_length:
                file = self.root_file if cert is anchor else self.chain_file
                yield finding("pathlen-violated", f"{file}: {describe(cert)} has pathlen:{bc.value.path_length} "
                              f"but {below} CA certificate(s) sit below it on the path to the workload certs; "
                              "istiod loads it, proxies reject every workload cert", file,
                              "issue the intermediate directly under a root without that limit, or re-issue the "
                              "issuer with a larger pathlen")

    def _name_constraints(self, ca: x509.Certificate) -> Iterator[Finding]:
        """Go, OpenSSL and BoringSSL apply every CA's nameConstraints (the root's
        too) to the workload's SPIFFE URI, whose host is the trust domain."""
        for cert in [ca, *[c for c in self.path if c is not ca]]:
            if not uri_host_allowed(self.trust_domain, cert):
                file = self.ca_file if cert is ca else (self.root_file if cert is self.path[-1] else self.chain_file)
                yield finding("name-constrained", f"{file}: {describe(cert)} has nameConstraints that do not "
                              f"permit trust domain {self.trust_domain}: proxies reject every workload "
                              f"(spiffe://{self.trust_domain}/...) this bundle signs", file,
                              "pass the mesh's --trust-domain (or trust_domain in the fleet file), or make a root "
                              f"for it (meshpki init-root --trust-domain {self.trust_domain} --constrain)")

    def _chain_layout(self) -> Iterator[Finding]:
        """cert-chain.pem should be ca-cert.pem, then each issuer, optionally the root."""
        ca, path, chain, chain_file = self.ca, self.path, self.chain, self.chain_file
        expected = [ca, *list(path)]
        extras, seen = [], []
        for cert in chain:
            if cert in seen:
                extras.append(f"{describe(cert)} (a second copy)")
            elif cert not in expected:
                extras.append(describe(cert))
            seen.append(cert)
        if extras:
            yield finding("chain-extra", f"{chain_file} holds certificates that do not belong to this chain: "
                          f"{', '.join(extras)}; every proxy sends them on every handshake", chain_file,
                          f"keep only ca-cert.pem and its issuers in {chain_file}")
        positions = [expected.index(c) for c in dict.fromkeys(chain) if c in expected]
        if (chain and chain[0] != ca) or positions != sorted(positions):
            yield finding("chain-order", f"{chain_file} is not leaf-first: it should be the intermediate, then each "
                          "issuer up to the root", chain_file,
                          f"rewrite {chain_file} as ca-cert.pem followed by its issuers in order")
        if path and path[-1] not in chain and path[-1] is not ca:
            yield finding("chain-without-root", f"{chain_file} stops below the root; peers hold the root in their "
                          "root-cert.pem, so this works", chain_file)

    def other_roots(self) -> Iterator[Finding]:
        """Roots not on this bundle's path (a second root during rotation, or a stray
        cert): only expiry and strength matter, as warnings."""
        path, roots = self.path, self.roots
        for root in roots:
            if path and root == path[-1]:
                continue
            # with no path we cannot tell which root matters; a lone root always does
            yield from check_validity(root, self.root_file, self.now, self.warn_days,
                                      "extra root" if path else "root", on_path=not path and len(roots) == 1)
            if not path:
                yield from check_key_strength(root, self.root_file)

    def crls(self) -> Iterator[Finding]:
        crl = self.bundle.files.get(CA_CRL)
        if crl is None:
            return
        if self.bundle.form == FORM_TLS:
            yield finding("crl-ignored", f"{CA_CRL} sits beside the tls.* form; istiod reads CRLs only in the "
                          "files form, so it revokes nothing here", CA_CRL)
            return
        yield from crlcheck.judge(crl, self.bundle.cert_chain, self.ca, self.path, self.now, self.chain_file,
                                  cluster=self.cluster)
        parsed, error = pem.read_crls(crl)
        if error is None:
            self.mat.crls = parsed

    # -- the real test -------------------------------------------------------

    def workload(self) -> Iterator[Finding]:
        """Sign a workload cert as istiod does and shake hands with itself, trusting
        only root-cert.pem: what two proxies of the same cluster do. Only for a
        whole bundle: istiod (1.27+) refuses a partial one. The identity is a
        throw-away one and lives minutes: nothing real could ever use it."""
        ca, key, mat = self.ca, self.key, self.mat
        if ca is None or key is None or not self.key_ok or not self.chain or self.bundle.missing():
            return
        limit = min([ca.not_valid_after_utc] + [c.not_valid_after_utc for c in self.path])
        if self.now + profiles.WORKLOAD_TTL > limit and self.now < limit:
            yield finding("workload-outlives-ca", f"a {profiles.WORKLOAD_TTL.total_seconds() / 3600:.0f}h workload "
                          f"cert issued now would outlive its CA chain (ends {_fmt(limit)}); istiod before 1.30 "
                          "issues it anyway and proxies reject it after that (1.30+ cuts it short)", self.ca_file,
                          f"rotate the intermediate now: {renew_hint('intermediate', self.cluster)}")
        account = f"verify-{secrets.token_hex(4)}"
        try:
            endpoint, leaf = handshake.workload_endpoint(
                self.target, ca, key, mat.chain_pem, mat.root_pem, self.trust_domain, now=self.now,
                namespace=PROBE_NAMESPACE, service_account=account, ttl=PROBE_TTL)
        except Exception as exc:  # a key that cannot sign (damaged, or odd parameters)
            yield finding("workload-rejected", f"{self.key_file} cannot sign a workload certificate: {exc}",
                          self.key_file, "replace the damaged key")
            return
        mat.workload = leaf
        if not signed_by(leaf, ca):
            yield finding("workload-rejected", f"a workload cert signed with {self.key_file} does not verify with "
                          f"{self.ca_file}'s public key: the key is damaged", self.key_file,
                          "replace ca-key.pem with the intact key or re-issue")
            return
        if not mat.roots:
            return  # missing-file or unparsable already says why; nothing to trust
        result = handshake.mutual_tls(endpoint, endpoint)
        if result.ok:
            mat.endpoint = endpoint
            yield finding("workload-ok", f"a throw-away workload cert (spiffe://{self.trust_domain}/ns/"
                          f"{PROBE_NAMESPACE}/sa/{account}, {PROBE_TTL.total_seconds() / 60:.0f} min) signed by "
                          f"{self.ca_file} passed mutual TLS against {self.root_file} ({result.version})")
        else:
            yield finding("workload-rejected", f"a workload cert signed by this bundle (presented with "
                          f"{self.chain_file}) is refused by a proxy trusting {self.root_file}: {result.detail}",
                          self.chain_file, "fix the errors above; every workload of this cluster would fail mTLS")


def check_bundle(bundle: Bundle, now: dt.datetime | None = None, warn_days: int = DEFAULT_WARN_DAYS,
                 trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN, target: str | None = None,
                 cluster: str | None = None, guess: str | None = None) -> BundleReport:
    """Every single-bundle check, then the real test: a workload cert signed
    with the bundle's key must pass a mutual-TLS handshake against the
    bundle's own root-cert.pem. `now` drives the explicit validity checks;
    the handshake uses the system clock (OpenSSL). `cluster` (known) and `guess` (a
    last resort) are the names fix hints give (see BundleChecker.cluster)."""
    return BundleChecker(bundle, now or profiles.utcnow(), warn_days, trust_domain, target or bundle.source,
                         cluster, guess).run()


# -- pairs --------------------------------------------------------------------

def check_pair(a: BundleReport, b: BundleReport) -> PairReport:
    """Would workloads of A and B talk? Statically (each chain against the
    other's root-cert.pem), then for real (a mutual-TLS handshake, each side
    trusting only its own root-cert.pem, and the SPIFFE trust domain check).
    A pair with a broken bundle is not judged further (verify reports one
    peer-broken line per broken bundle instead, see broken_peer)."""
    ma, mb = a.material, b.material
    findings: list[Finding] = []
    broken = [r for r in (a, b) if not r.material.can_sign]
    if broken:
        other = b if broken[0] is a else a
        return PairReport(a.target, b.target, (broken_peer(broken[0], [other.target]),))
    a_in_b = _trusted_by(ma, mb)
    b_in_a = _trusted_by(mb, ma)
    if not a_in_b and not b_in_a:
        findings.append(finding(
            "peer-untrusted", f"{a.target} and {b.target} trust different roots ({_root_names(ma)} vs "
            f"{_root_names(mb)}): cross-cluster mTLS fails with UNKNOWN_CA", None,
            "issue both intermediates from one root (meshpki issue), or put both roots in every root-cert.pem"))
    else:
        for signer, truster, ok in ((a, b, a_in_b), (b, a, b_in_a)):
            if not ok:
                findings.append(finding(
                    "peer-untrusted", f"{truster.target}'s root-cert.pem does not hold the root that signed "
                    f"{signer.target}'s chain ({_root_names(signer.material, path_only=True)}): {truster.target}'s "
                    f"proxies reject {signer.target}'s workloads with UNKNOWN_CA", None,
                    f"add that root to {truster.target}'s root-cert.pem (meshpki rotate-root does this for the root "
                    "holder's own clusters; a site signed from a CSR needs a new csr, sign, complete)"))
    for signer, truster in ((a, b), (b, a)):
        findings.extend(_revoked_by_peer(signer, truster))
    assert ma.endpoint is not None and mb.endpoint is not None  # can_sign above
    result = handshake.mutual_tls(ma.endpoint, mb.endpoint, crlcheck.handshake_crls(ma, mb))
    if result.ok:
        findings.append(finding("handshake-ok", f"{a.target} -> {b.target}: {result.reason}", None))
    elif result.rejected_by and result.alert is None and "trust domain" in result.reason:
        findings.append(finding("trust-domain-mismatch", result.reason, None,
                                "use one trust domain across the mesh, or configure trustDomainAliases"))
    else:
        findings.append(finding("handshake-failed", f"{a.target} -> {b.target}: {result.reason}", None,
                                "see the peer-untrusted finding; every root-cert.pem must hold the other "
                                "cluster's root" if any(f.code == "peer-untrusted" for f in findings)
                                else "fix the certificate the message names"))
    return PairReport(a.target, b.target, tuple(findings))


def _revoked_by_peer(signer: BundleReport, truster: BundleReport) -> Iterator[Finding]:
    """The truster's CRLs against the signer's chain, as its proxies will judge
    the signer's workloads (revocation: docs/revocation.md)."""
    mat = signer.material
    below = [c for c in (mat.ca_cert, *mat.path) if c is not None]
    for cert, issuer in crlcheck.revoked_on_path(below, truster.material.crls):
        yield finding("peer-revoked", f"{truster.target}'s ca-crl.pem revokes {describe(cert)} (serial "
                      f"{openssl_serial(cert.serial_number)}, signed by {describe(issuer)}) on {signer.target}'s chain: "
                      f"{truster.target}'s proxies reject {signer.target}'s workloads", None,
                      f"if {signer.target} was revoked on purpose, take it out of the mesh; else give it a new "
                      f"intermediate (meshpki rotate {signer.target}) and push")


def broken_peer(report: BundleReport, others: Sequence[str]) -> Finding:
    """One line for a bundle that cannot sign working workloads, instead of one per pair."""
    peers = ", ".join(others) if len(others) <= 3 else f"{', '.join(others[:3])} and {len(others) - 3} more"
    return finding("peer-broken", f"{report.target}: bundle cannot sign working workload certificates (see its "
                   f"findings), so mTLS with {peers} cannot work", None, f"fix {report.target} first")


EVERY_PEER = "(every peer)"


def check_pairs(reports: Sequence[BundleReport]) -> tuple[PairReport, ...]:
    """Every pair of working bundles, then one report per broken bundle: five
    broken bundles make five peer-broken lines, not one per pair."""
    working = [r for r in reports if r.material.can_sign]
    pairs = [check_pair(a, b) for a, b in itertools.combinations(working, 2)]
    if len(reports) > 1:
        for r in reports:
            if not r.material.can_sign:
                others = [o.target for o in reports if o is not r]
                pairs.append(PairReport(r.target, EVERY_PEER, (broken_peer(r, others),)))
    return tuple(pairs)


def _trusted_by(signer: LoadedBundle, truster: LoadedBundle) -> bool:
    """Does a workload of `signer` (leaf + its cert-chain.pem) verify against
    `truster`'s root-cert.pem? Same path rules as the bundle check."""
    if signer.workload is None:
        return False
    return build_path(signer.workload, signer.chain, truster.roots).ok


def _root_names(mat: LoadedBundle, path_only: bool = False) -> str:
    certs = [mat.path[-1]] if path_only and mat.path else list(mat.roots)
    return ", ".join(f"{describe(c)} sha256:{fingerprint(c)[:12]}" for c in certs) or "none"
