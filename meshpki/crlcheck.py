"""Judging ca-crl.pem the way istiod and the proxies do.

istiod (keycertbundle.go `Verify`, files form only, when ca-crl.pem is not
empty) parses every PEM block of cert-chain.pem as a certificate and every
block of ca-crl.pem as a CRL, then wants, for EVERY certificate of
cert-chain.pem, one CRL whose signature that certificate's key made (Go's
RevocationList.CheckSignatureFrom: the signer must be a CA and, when it has
keyUsage, carry cRLSign). Anything else and istiod refuses the whole bundle.
istiod does not look at dates or revoked serials; the proxies do: a CRL past
its nextUpdate fails every handshake through that CA, and a CRL that revokes
a certificate of the bundle's own path rejects every workload of the cluster.
docs/istio-compat.md has the versions.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from meshpki import pem
from meshpki.bundle import describe, openssl_serial
from meshpki.findings import Finding, Severity, finding

CRL_FILE = "ca-crl.pem"
# How a CRL is renewed: by the store that holds the bundle, or for a cluster
# signed from a CSR (its key at its site) in two steps (docs/revocation.md).
RENEW = ("where the root is: meshpki crl renew, then push; at a site whose cluster was signed from a CSR: "
         "meshpki crl refresh CLUSTER FILE with the file of the root holder's meshpki crl export CLUSTER, then push")


def _fmt(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def crl_signed_by(crl: x509.CertificateRevocationList, signer: x509.Certificate) -> str | None:
    """None when Go's CheckSignatureFrom(signer) would accept the CRL, else why not."""
    try:
        bc = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    except Exception:
        return "its extensions do not parse"
    if (signer.version is x509.Version.v3 and bc is None) or (bc is not None and not bc.ca):
        return "it is not a CA"
    try:
        ku = signer.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.crl_sign:
            return "its keyUsage lacks cRLSign"
    except x509.ExtensionNotFound:
        pass
    except Exception:
        return "its extensions do not parse"
    try:
        if isinstance(crl.signature_hash_algorithm, hashes.SHA1 | hashes.MD5):
            return "the CRL is signed with SHA-1/MD5, which Go refuses"
        if not crl.is_signature_valid(signer.public_key()):  # type: ignore[arg-type]
            return "its key did not sign the CRL"
    except Exception:
        return "its key did not sign the CRL"
    return None


def judge(crl_data: bytes, chain_data: bytes | None, ca: x509.Certificate | None,
          path: Sequence[x509.Certificate], now: dt.datetime, chain_file: str = "cert-chain.pem",
          cluster: str = "CLUSTER") -> Iterator[Finding]:
    """Every finding about a files-form ca-crl.pem; an empty file means no CRL (istiod's rule)."""
    if not crl_data.strip():
        return
    chain = pem.read_certs(chain_data or b"", pem.Policy.EVERY)
    if chain.error is not None or chain.skipped:
        why = chain.error or chain.skipped[0]
        yield finding("unparsable", f"{chain_file}: {why}; with a ca-crl.pem istiod parses every block of "
                      f"{chain_file} and refuses the bundle", chain_file,
                      f"rewrite {chain_file} as whole PEM certificates only")
        return
    crls, error = pem.read_crls(crl_data)
    if error is not None:
        yield finding("unparsable", f"{CRL_FILE}: {error}; istiod parses every block and refuses the whole "
                      "bundle", CRL_FILE, f"remove the damaged block from {CRL_FILE} or re-make it "
                      "(meshpki crl renew)")
        return
    found = list(_missing_signers(crls, chain.certs, chain_file))
    found += _proxy_rules(crls, ca, path, list(chain.certs), now, cluster)
    if not found:
        found.append(finding("crl-ok", f"{CRL_FILE}: {len(crls)} CRL(s), one signed by every certificate of "
                             f"{chain_file}; none revokes this bundle's path", None))
    yield from found


def _missing_signers(crls: Sequence[x509.CertificateRevocationList], chain: Sequence[x509.Certificate],
                     chain_file: str) -> Iterator[Finding]:
    # Go keys its list by subject string: certificates sharing a subject count once.
    signers = {c.subject.rfc4514_string(): c for c in chain}
    for subject, signer in signers.items():
        reasons = [crl_signed_by(crl, signer) for crl in crls]
        if any(r is None for r in reasons):
            continue
        named = [r for crl, r in zip(crls, reasons, strict=True) if crl.issuer == signer.subject]
        why = (f"the CRL naming it as issuer is not valid from it: {named[0]}" if named
               else "no CRL names it as issuer")
        yield finding("crl-missing", f"{CRL_FILE} has no CRL signed by {describe(signer)} of {chain_file} "
                      f"({why}); istiod refuses the bundle (missing CRL signed by certificates)", CRL_FILE,
                      f"add a CRL signed by '{subject}' for every certificate of {chain_file} "
                      "(meshpki crl renew), or remove ca-crl.pem")


def _proxy_rules(crls: Sequence[x509.CertificateRevocationList], ca: x509.Certificate | None,
                 path: Sequence[x509.Certificate], chain: Sequence[x509.Certificate], now: dt.datetime,
                 cluster: str) -> list[Finding]:
    issuers = list(dict.fromkeys([*chain, *path]))
    found: list[Finding] = []
    for crl in crls:
        signer = next((c for c in issuers if crl_signed_by(crl, c) is None), None)
        who = describe(signer) if signer is not None else f"'{crl.issuer.rfc4514_string()}'"
        start, end = crl.last_update_utc, crl.next_update_utc
        if end is not None and now > end:
            found.append(finding("crl-expired", f"{CRL_FILE}: the CRL of {who} expired on {_fmt(end)} (nextUpdate); "
                          "proxies fail every handshake whose chain it covers", CRL_FILE,
                          f"re-sign it now: {RENEW}"))
        elif end is not None and end - now < (end - start) / 4:
            found.append(finding("crl-expiring-soon", f"{CRL_FILE}: the CRL of {who} reaches its nextUpdate on "
                          f"{_fmt(end)}; after that proxies fail every handshake", CRL_FILE,
                          RENEW))
    below = [c for c in [ca, *path] if c is not None]
    for child, parent in itertools.pairwise(below):
        for crl in crls:
            if crl.issuer != child.issuer or crl_signed_by(crl, parent) is not None:
                continue
            if crl.get_revoked_certificate_by_serial_number(child.serial_number) is not None:
                found.append(finding("crl-revokes-path", f"{CRL_FILE}: the CRL of {describe(parent)} revokes "
                              f"{describe(child)} (serial {openssl_serial(child.serial_number)}), which is on this bundle's "
                              "own path: proxies reject every workload of the cluster", CRL_FILE,
                              f"issue a new intermediate (meshpki rotate {cluster}), or drop that entry from "
                              "the CRL"))
    return found


def first_problem(crl_data: bytes, secret_data: Mapping[str, bytes], now: dt.datetime) -> str | None:
    """Would istiod and the proxies accept this ca-crl.pem beside these files-form
    bundle files? None if so, else the first reason (push keeps a live CRL only then)."""
    from meshpki.pathbuild import build_path

    chain = pem.read_certs(secret_data.get("cert-chain.pem", b""), pem.Policy.SKIP).certs
    roots = pem.read_certs(secret_data.get("root-cert.pem", b""), pem.Policy.SKIP).certs
    first = pem.read_certs(secret_data.get("ca-cert.pem", b""), pem.Policy.FIRST).certs
    ca = first[0] if first else None
    path = build_path(ca, chain, roots).path if ca is not None else ()
    for found in judge(crl_data, secret_data.get("cert-chain.pem"), ca, path, now):
        if found.severity is Severity.ERROR:
            return f"{found.code}: {found.message}"
    return None


def revoked_on_path(below: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]
                    ) -> list[tuple[x509.Certificate, x509.Certificate]]:
    """(certificate, its issuer) for each certificate of a path (child first,
    up to its anchor) that one of `crls`, validly signed by that issuer, revokes."""
    found = []
    for child, parent in itertools.pairwise(below):
        for crl in crls:
            if crl.issuer == child.issuer and crl_signed_by(crl, parent) is None \
                    and crl.get_revoked_certificate_by_serial_number(child.serial_number) is not None:
                found.append((child, parent))
                break
    return found


def handshake_crls(*sides: Any) -> bytes | None:  # sides: checks.LoadedBundle
    """The CRLs for a pair's handshake with CRL checking on the whole chain:
    both sides' ca-crl.pem, plus a throw-away empty CRL of each side's
    intermediate that carries none (what an up-to-date bundle of it would
    carry; revocation of the intermediate itself is on its issuer's CRL).
    None (check without CRLs) when neither side has any, or when a CA above
    an intermediate has no CRL that only its key could sign."""
    crls = [c for side in sides for c in side.crls]
    if not crls:
        return None
    from meshpki import crl as crlmod
    from meshpki import profiles

    now = profiles.utcnow()
    for mat in sides:
        if mat.ca_cert is None or mat.ca_key is None:
            return None
        if not any(crl_signed_by(c, mat.ca_cert) is None for c in crls):
            crls.append(crlmod.make_crl(mat.ca_cert, mat.ca_key, 1, now - profiles.CLOCK_SKEW,
                                        now + dt.timedelta(hours=1)))
        for issuer in mat.path:
            if not any(crl_signed_by(c, issuer) is None for c in crls):
                return None
    return b"".join(crlmod.crl_pem(c) for c in crls)
