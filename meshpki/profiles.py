"""What each certificate is: the root, a cluster's intermediate, a workload.

One common builder sets what every certificate shares (serial, validity,
subject key identifier); each role adds its own extensions on top. The rules
come from Istio (tools/certs/Makefile.selfsigned.mk, security/pkg/pki) and
RFC 5280; docs/istio-compat.md lists the Istio rules.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshpki.errors import InputError
from meshpki.keys import PrivateKey, PublicKey
from meshpki.limits import MAX_DAYS, MAX_NAME_LENGTH
from meshpki.signing import SigningKey, sign_certificate

# notBefore is backdated so a cluster whose clock runs a little behind ours
# does not see a certificate from the future.
CLOCK_SKEW = dt.timedelta(minutes=5)

DEFAULT_ORG = "Istio"
ROOT_CN = "Root CA"
INTERMEDIATE_CN = "Intermediate CA"
DEFAULT_ISTIOD_SAN = "istiod.istio-system.svc"
DEFAULT_TRUST_DOMAIN = "cluster.local"
WORKLOAD_TTL = dt.timedelta(hours=24)  # istiod's default workload certificate lifetime


_DNS_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")


def check_days(days: int, option: str = "--days") -> int:
    """A validity (or warning threshold) in days that the date arithmetic can hold."""
    if days <= 0:
        raise InputError(f"{option} must be a positive number of days, not {days}")
    if days > MAX_DAYS:
        raise InputError(f"{option} {days} is more than 30 years ({MAX_DAYS} days); that is surely a typo")
    return days


def check_name(value: str, option: str) -> str:
    """A subject attribute (O=, CN=) as RFC 5280 bounds it: 1 to 64 printable characters."""
    if not value.strip():
        raise InputError(f"{option} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InputError(f"{option} is {len(value)} characters; RFC 5280 allows at most {MAX_NAME_LENGTH}")
    if not value.isprintable():
        raise InputError(f"{option} {value!r} contains control characters")
    return value


def is_dns_name(name: str) -> bool:
    """A DNS name as a SAN dNSName must be (RFC 5280 4.2.1.6, RFC 1123 labels)."""
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(_DNS_LABEL.fullmatch(label) for label in labels)


def check_san_dns(names: Sequence[str]) -> tuple[str, ...]:
    for name in names:
        if not is_dns_name(name):
            raise InputError(f"--san-dns {name!r} is not a DNS name (letters, digits, '-' and dots, "
                             "e.g. istiod.istio-system.svc)")
    return tuple(names)


def utcnow() -> dt.datetime:
    """Timezone-aware now (freezegun-friendly)."""
    return dt.datetime.now(dt.UTC)


def not_after(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


def not_before(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc


@dataclass(frozen=True)
class Issued:
    """A freshly signed certificate, and what the caller should tell the user."""

    cert: x509.Certificate
    warnings: tuple[str, ...] = ()


def _ca_key_usage() -> x509.KeyUsage:
    # keyCertSign is what lets the CA sign workload certificates; cRLSign keeps
    # the door open for ca-crl.pem (Istio 1.27+); digitalSignature for OCSP/CRL
    # signing habits of other tooling. No keyEncipherment: a CA key never
    # encrypts anything.
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: object, start: dt.datetime, end: dt.datetime
) -> x509.CertificateBuilder:
    """What every certificate shares: a random positive serial (159 bits, well
    above RFC 5280's and CA/B's 64-bit floor), validity and SKI."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
    )


def ca_name(org: str, cn: str, locality: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if locality:
        attrs.append(x509.NameAttribute(NameOID.LOCALITY_NAME, locality))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def make_root(key: SigningKey, days: int, org: str = DEFAULT_ORG, cn: str = ROOT_CN,
              now: dt.datetime | None = None, constrain_to: str | None = None) -> x509.Certificate:
    """The mesh's self-signed root: CA:TRUE without a path length, so it can
    sit above intermediates (and one more level if an operator ever needs it).
    `constrain_to` pins it to one trust domain (trust_domain_constraints)."""
    now = now or utcnow()
    name = ca_name(org, cn)
    builder = (
        _builder(name, name, key.public_key(), now - CLOCK_SKEW, now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
    )
    if constrain_to is not None:
        builder = builder.add_extension(trust_domain_constraints(constrain_to), critical=True)
    return sign_certificate(builder, key)


def trust_domain_constraints(trust_domain: str) -> x509.NameConstraints:
    """Only SPIFFE identities of one trust domain below this root.

    RFC 5280 4.2.1.10: a URI constraint is matched against the URI's host,
    which for spiffe://TD/ns/... is the trust domain, so the permitted subtree
    is the bare trust domain (exact match, no subdomains). Only URIs are
    constrained: with no DNS subtree, DNS names stay unconstrained in Go,
    OpenSSL and BoringSSL, so istiod's DNS SAN on intermediates
    (istiod.istio-system.svc) and on its own serving certificate still
    verify. Critical, as RFC 5280 requires (docs/istio-compat.md)."""
    return x509.NameConstraints(permitted_subtrees=[x509.UniformResourceIdentifier(trust_domain)],
                                excluded_subtrees=None)


_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")


def validate_trust_domain(trust_domain: str) -> str:
    """A SPIFFE trust domain: lowercase letters, digits, dots, dashes, underscores."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain) or trust_domain.strip(".") != trust_domain:
        raise InputError(f"trust domain {trust_domain!r} is not a SPIFFE trust domain (lowercase letters, digits, "
                         "'.', '-', '_'; e.g. cluster.local)")
    return trust_domain


def make_intermediate(
    root: x509.Certificate, root_key: SigningKey, public_key: PublicKey, cluster: str, days: int,
    org: str = DEFAULT_ORG, san_dns: Sequence[str] = (DEFAULT_ISTIOD_SAN,),
    now: dt.datetime | None = None,
) -> Issued:
    """A cluster's Citadel CA: pathlen 0 (it signs workloads only), no EKU
    (Go verifies CA certs for serverAuth; an EKU without it breaks istiod),
    and never valid past its root."""
    now = now or utcnow()
    end = now + dt.timedelta(days=days)
    warnings: list[str] = []
    if end > not_after(root):
        end = not_after(root)
        warnings.append(
            f"{cluster}: --days {days} would outlive the root; intermediate capped at the root's "
            f"notAfter {end:%Y-%m-%d %H:%M} UTC"
        )
    builder = (
        _builder(ca_name(org, INTERMEDIATE_CN, cluster), root.subject, public_key,
                 max(now - CLOCK_SKEW, not_before(root)), end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(authority_key_id(root), critical=False)
    )
    if san_dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in san_dns]), critical=False
        )
    return Issued(sign_certificate(builder, root_key), tuple(warnings))


def make_workload(
    ca: x509.Certificate, ca_key: SigningKey, key: PrivateKey,
    trust_domain: str = DEFAULT_TRUST_DOMAIN, namespace: str = "default",
    service_account: str = "default", ttl: dt.timedelta = WORKLOAD_TTL,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A workload certificate the way istiod signs one: empty subject, a
    critical SPIFFE URI SAN, serverAuth+clientAuth, CA:FALSE. The lifetime is
    NOT capped at the CA's, just as istiod does not cap it, so verifying it
    shows what a proxy would see."""
    now = now or utcnow()
    spiffe = f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
    builder = (
        _builder(x509.Name([]), ca.subject, key.public_key(), now - CLOCK_SKEW, now + ttl)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]), critical=True)
        .add_extension(authority_key_id(ca), critical=False)
    )
    return sign_certificate(builder, ca_key)


def authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI = the issuer's SKI when it has one (older roots may not); certificates and CRLs alike."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
