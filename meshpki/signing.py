"""The one place where a CA key signs: certificates and CRLs.

Every signature meshpki makes goes through here, so a key that is not a
file (a PKCS#11 token, meshpki/hsm.py) only has to be taught to this
module, and the profile of what is signed never depends on where the key
lives.

cryptography signs only with keys it holds itself. For an external key we
let cryptography build the whole object (so extensions, encodings and the
signature algorithm identifiers are byte for byte what a file key gets)
signed by a throw-away stand-in key of the same algorithm, then put the
external key's signature over the very same to-be-signed bytes in place of
the stand-in's, and check it with the external key's public key.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from meshpki.errors import MeshPKIError
from meshpki.keys import PrivateKey, signature_hash


class ExternalKey(Protocol):
    """A private key held elsewhere (a token) that can sign and show its public half."""

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey: ...

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """The X.509 signature value over `data` (DER for ECDSA, PKCS#1 v1.5 for RSA)."""
        ...


SigningKey = PrivateKey | ExternalKey
_Signed = TypeVar("_Signed", x509.Certificate, x509.CertificateRevocationList)

def sign_certificate(builder: x509.CertificateBuilder, key: SigningKey) -> x509.Certificate:
    """Sign a certificate with the hash that matches the key's strength."""
    return _sign(builder, key, lambda cert: cert.tbs_certificate_bytes, x509.load_der_x509_certificate)


def sign_crl(builder: x509.CertificateRevocationListBuilder, key: SigningKey) -> x509.CertificateRevocationList:
    """Sign a CRL exactly like a certificate: same key, same hash rule."""
    return _sign(builder, key, lambda crl: crl.tbs_certlist_bytes, x509.load_der_x509_crl)


def _sign(builder: Any, key: SigningKey, tbs_of: Callable[[_Signed], bytes], load: Callable[[bytes], _Signed]) -> _Signed:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        # verify meets Ed25519 CAs in bundles made elsewhere and signs its probe
        # workload with them: the key hashes internally and takes no hash
        ed_signed: _Signed = builder.sign(key, None)
        return ed_signed
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        signed: _Signed = builder.sign(key, signature_hash(key))
        return signed
    algorithm = signature_hash(key.public_key())
    draft: _Signed = builder.sign(_stand_in(key.public_key()), algorithm)
    return load(_resign(draft.public_bytes(serialization.Encoding.DER), tbs_of(draft), key, algorithm))


def _stand_in(public: object) -> PrivateKey:
    """A throw-away key whose signature algorithm identifier matches `public`'s.

    The identifier names only the algorithm and hash (sha256WithRSAEncryption,
    ecdsa-with-SHA384), never the size or curve, so one small key per
    algorithm serves; its signature is discarded unread.
    """
    if isinstance(public, rsa.RSAPublicKey):
        return _rsa_stand_in()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(ec.SECP256R1())
    raise MeshPKIError(f"cannot sign with a {type(public).__name__}; meshpki signs with RSA and ECDSA keys")


@functools.cache
def _rsa_stand_in() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def _resign(draft_der: bytes, tbs: bytes, key: ExternalKey, algorithm: hashes.HashAlgorithm) -> bytes:
    """`draft_der` (SEQUENCE {tbs, algorithm, signature}) with the external key's signature."""
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.type import namedtype, univ

    class SignedObject(univ.Sequence):  # RFC 5280 4.1 and 5.1 share this outer shape
        componentType = namedtype.NamedTypes(
            namedtype.NamedType("tbs", univ.Any()),
            namedtype.NamedType("signatureAlgorithm", univ.Any()),
            namedtype.NamedType("signatureValue", univ.BitString()),
        )

    signature = key.sign(tbs, algorithm)
    _check(key, signature, tbs, algorithm)
    signed, rest = decoder.decode(draft_der, asn1Spec=SignedObject())
    if rest or bytes(signed["tbs"]) != tbs:
        raise MeshPKIError("internal error: the drafted object does not have the expected shape")
    signed["signatureValue"] = univ.BitString.fromOctetString(signature)
    return bytes(encoder.encode(signed))


def _check(key: ExternalKey, signature: bytes, tbs: bytes, algorithm: hashes.HashAlgorithm) -> None:
    """Never publish a signature the key's own public half rejects (a broken token or wrong key)."""
    public = key.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, tbs, padding.PKCS1v15(), algorithm)
        else:
            public.verify(signature, tbs, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise MeshPKIError("the external key's signature does not verify with its public key; "
                           "the token or key is broken, nothing was written") from None
