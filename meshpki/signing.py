"""The one place where a CA key signs: certificates and CRLs.

Every signature meshpki makes goes through here, so a key that is not a
file (a PKCS#11 token, docs/hsm.md once it lands) only has to be taught
to this module, and the profile of what is signed never depends on where
the key lives.
"""

from __future__ import annotations

from cryptography import x509

from meshpki.keys import PrivateKey, signature_hash


def sign_certificate(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    """Sign a certificate with the hash that matches the key's strength."""
    return builder.sign(key, signature_hash(key))


def sign_crl(builder: x509.CertificateRevocationListBuilder, key: PrivateKey) -> x509.CertificateRevocationList:
    """Sign a CRL exactly like a certificate: same key, same hash rule."""
    return builder.sign(key, signature_hash(key))
