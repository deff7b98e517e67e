"""Findings: the common language of verify, push and audit.

Each finding is a severity, a stable kebab-case code, a message naming the
file, a fix, and `by`: who objects. `istiod` means istiod refuses to load the
bundle or to take the update; `proxy` means istiod loads it but Envoy or
ztunnel reject what it signs or receives; `meshpki` is meshpki's own policy,
stricter than Istio (and worded so). docs/istio-compat.md lists the Istio
rule behind every `istiod` and `proxy` code. The README's table of codes is
tested against CODES, so the two cannot drift apart.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class By(enum.StrEnum):
    """Who objects to what a finding describes."""

    ISTIOD = "istiod"
    PROXY = "proxy"
    MESHPKI = "meshpki"


@dataclass(frozen=True)
class Code:
    severity: Severity
    by: By
    meaning: str


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO  # noqa: E741
ISTIOD, PROXY, MESHPKI = By.ISTIOD, By.PROXY, By.MESHPKI

# Every code with its usual severity and objector; a few are demoted or
# re-attributed per case, as the meaning says.
CODES: dict[str, Code] = {
    "missing-file": Code(E, ISTIOD, "a bundle file is absent; istiod 1.27+ refuses a partial bundle, older versions "
                                    "silently fall back to a self-signed root"),
    "unreadable": Code(E, MESHPKI, "a bundle file exists but cannot be read here"),
    "unparsable": Code(E, ISTIOD, "a PEM file istiod reads is cut off, binary, or not a certificate/key/CRL "
                                  "(proxy for a damaged cert-chain.pem block)"),
    "damaged-block": Code(W, PROXY, "root-cert.pem or cert-chain.pem holds a damaged or foreign PEM block: istiod "
                                    "skips it, proxies receive the file as it is"),
    "key-block-order": Code(E, ISTIOD, "the key file's first PEM block is not the key (EC PARAMETERS or a "
                                       "certificate first); istiod reads only the first block"),
    "encrypted-key": Code(E, ISTIOD, "ca-key.pem is encrypted; istiod cannot decrypt it"),
    "unsupported-key": Code(E, ISTIOD, "a key type or curve Go's crypto/x509 cannot use"),
    "uncommon-key": Code(W, PROXY, "an Ed25519 CA key: istiod loads and signs with it, FIPS proxies reject it"),
    "key-mismatch": Code(E, ISTIOD, "ca-key.pem is not the key of ca-cert.pem"),
    "not-a-ca": Code(E, ISTIOD, "a certificate that must sign others lacks basicConstraints CA:TRUE (proxy for "
                                "a root)"),
    "no-keycertsign": Code(E, PROXY, "keyUsage is present without keyCertSign; proxies reject what it signs"),
    "bad-eku": Code(E, ISTIOD, "an extendedKeyUsage without serverAuth on a CA; Go's verifier (istiod) fails"),
    "weak-signature": Code(E, ISTIOD, "SHA-1 or MD5 signature (a meshpki warning on a root's own "
                                      "self-signature, which nobody checks)"),
    "weak-key": Code(E, MESHPKI, "RSA key under 2048 bits or an EC key under 256 bits (meshpki's floor)"),
    "expired": Code(E, ISTIOD, "a certificate on the path is past notAfter (a meshpki warning for unused "
                               "extra roots)"),
    "not-yet-valid": Code(E, ISTIOD, "a certificate on the path is before notBefore"),
    "expiring-soon": Code(W, MESHPKI, "a certificate on the path expires within --warn-days"),
    "chain-broken": Code(E, ISTIOD, "no path from ca-cert.pem through cert-chain.pem to root-cert.pem (istiod "
                                    "refuses); or cert-chain.pem lacks ca-cert.pem (proxy: istiod starts, peers "
                                    "cannot build the chain)"),
    "pathlen-violated": Code(E, PROXY, "a pathLenConstraint on the path forbids the workload certs it must sign"),
    "name-constrained": Code(E, PROXY, "a CA's nameConstraints exclude the mesh's trust domain (--trust-domain)"),
    "bad-san": Code(W, MESHPKI, "a CA certificate's subjectAltName holds an empty or malformed DNS name"),
    "outlives-root": Code(W, MESHPKI, "the intermediate's notAfter is past its root's"),
    "chain-order": Code(W, MESHPKI, "cert-chain.pem is not leaf-first (ca-cert.pem, then each issuer)"),
    "chain-extra": Code(W, MESHPKI, "cert-chain.pem holds certificates that are not on the path, or duplicates"),
    "ca-cert-extra": Code(W, MESHPKI, "ca-cert.pem holds more than one certificate; istiod uses the first"),
    "root-not-self-signed": Code(W, MESHPKI, "the trust anchor reached in root-cert.pem is not a self-signed root"),
    "workload-outlives-ca": Code(W, PROXY, "a 24h workload cert issued now outlives the intermediate or root "
                                           "(istiod before 1.30 signs it; from 1.30 it is cut short)"),
    "workload-rejected": Code(E, PROXY, "a workload cert signed by this bundle is refused in a real TLS handshake"),
    "crl-missing": Code(E, ISTIOD, "ca-crl.pem lacks a CRL signed by one of the certificates of cert-chain.pem "
                                   "(missing, or signed by another key)"),
    "crl-expired": Code(E, PROXY, "a CRL of ca-crl.pem is past its nextUpdate; proxies fail every handshake"),
    "crl-revokes-path": Code(E, PROXY, "ca-crl.pem revokes a certificate of the bundle's own path"),
    "crl-expiring-soon": Code(W, MESHPKI, "a CRL has less than a quarter of its lifetime (thisUpdate to "
                                          "nextUpdate) left"),
    "crl-ignored": Code(I, ISTIOD, "ca-crl.pem next to the tls.* form: istiod ignores it"),
    "crl-ok": Code(I, ISTIOD, "ca-crl.pem holds a CRL signed by every certificate of cert-chain.pem"),
    "legacy-profile": Code(I, MESHPKI, "accepted by istiod but not RFC 5280's profile (no keyUsage, non-critical "
                                       "basicConstraints, PKCS#1 key)"),
    "chain-without-root": Code(I, MESHPKI, "cert-chain.pem stops below the root; fine, peers hold the root"),
    "workload-ok": Code(I, PROXY, "a workload cert signed by this bundle verified in a mutual-TLS handshake"),
    # live secrets (verify --context)
    "missing-secret": Code(E, ISTIOD, "the cluster has no cacerts secret: istiod falls back to a self-signed root "
                                      "and the mesh is split"),
    "self-signed-ca": Code(E, ISTIOD, "the live cacerts holds `istio-generated`: istiod's own self-signed CA is "
                                      "in use, not the mesh's shared root"),
    "unreadable-secret": Code(E, MESHPKI, "the live secret could not be read: the API server refused, could not be "
                                          "reached, or answered something that is not a Secret"),
    "insecure-connection": Code(W, MESHPKI, "the live secret was read over plain http:// or with "
                                            "insecure-skip-tls-verify: what it says may be forged"),
    "drift": Code(W, MESHPKI, "the live secret differs from the store's bundle for that cluster"),
    "matches-store": Code(I, MESHPKI, "the live secret is byte for byte the store's bundle"),
    # pairs
    "peer-untrusted": Code(E, PROXY, "one cluster's root-cert.pem does not hold the root of the other's chain"),
    "handshake-failed": Code(E, PROXY, "the real mutual-TLS handshake between two clusters' workloads failed"),
    "peer-revoked": Code(E, PROXY, "one cluster's ca-crl.pem revokes a certificate of the other's chain: its "
                                   "proxies reject the other's workloads"),
    "trust-domain-mismatch": Code(E, PROXY, "the peers' SPIFFE trust domains differ"),
    "peer-broken": Code(E, PROXY, "a cluster's bundle cannot sign workload certificates, so its pairs cannot "
                                  "work (one finding per broken bundle)"),
    "handshake-ok": Code(I, PROXY, "the pair's workloads completed mutual TLS"),
}


@dataclass(frozen=True)
class Finding:
    """One thing verify found. `file` is the bundle file it is about (None for a pair)."""

    severity: Severity
    code: str
    message: str
    file: str | None = None
    fix: str = ""
    by: By = By.MESHPKI

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity.value, "code": self.code, "message": self.message, "file": self.file,
                "by": self.by.value, "fix": self.fix or None}


def finding(code: str, message: str, file: str | None = None, fix: str = "",
            severity: Severity | None = None, by: By | None = None) -> Finding:
    """A finding with its code's usual severity and objector unless told otherwise."""
    known = CODES[code]
    return Finding(severity or known.severity, code, message, file, fix, by or known.by)


def first_of(errors: Sequence[Finding]) -> str:
    """The first error in full and a count of the rest: one line, however many there are."""
    first = errors[0]
    return f"{first.code}: {first.message}" + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")


def shortlist(names: Sequence[str], limit: int = 10) -> str:
    """Names for a one-line message: the first `limit`, then how many more."""
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
