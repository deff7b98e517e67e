"""Key types, parallel generation and the scrypt-encrypted root key format."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pyasn1.codec.der import decoder
from pyasn1_alt_modules import rfc5208, rfc7914, rfc8018

from meshpki import keys
from meshpki.errors import BundleError, InputError, PassphraseError
from meshpki.keys import KeyType


@pytest.mark.parametrize("name,kind,size", [
    ("rsa-2048", rsa.RSAPrivateKey, 2048), ("ecdsa-p256", ec.EllipticCurvePrivateKey, 256),
    ("ecdsa-p384", ec.EllipticCurvePrivateKey, 384), ("RSA-2048", rsa.RSAPrivateKey, 2048),
])
def test_key_types_generate_what_they_name(name, kind, size):
    key = KeyType.parse(name).generate()
    assert isinstance(key, kind) and key.key_size == size


@pytest.mark.parametrize("bad", ["rsa-1024", "dsa", "ecdsa-p521", ""])
def test_unknown_or_weak_key_types_are_refused(bad):
    with pytest.raises(InputError, match="unknown key type"):
        KeyType.parse(bad)


def test_generate_many_in_a_pool_returns_usable_keys_in_order():
    types = [KeyType.RSA_3072, KeyType.RSA_3072, KeyType.ECDSA_P256]
    seen = []
    made = keys.generate_many(types, progress=lambda done, total: seen.append((done, total)))
    assert [type(k).__name__ for k in made] == [type(t.generate()).__name__ for t in types]
    assert [k.key_size for k in made] == [3072, 3072, 256]
    assert seen[-1] == (3, 3) and len(seen) == 3
    # the keys work: sign and verify with one
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig = made[0].sign(b"x", padding.PKCS1v15(), hashes.SHA256())
    made[0].public_key().verify(sig, b"x", padding.PKCS1v15(), hashes.SHA256())


def test_a_pool_delivers_one_distinct_key_per_job_and_leaves_no_worker_behind():
    """Idle workers race busy ones for the last keys: each job still gets exactly
    one key, every key is a different one, and no worker outlives the pool."""
    import multiprocessing

    seen = []
    made = keys.generate_many([KeyType.RSA_2048] * 2 + [KeyType.RSA_3072] * 3,
                              progress=lambda done, total: seen.append(done))
    assert [k.key_size for k in made] == [2048, 2048, 3072, 3072, 3072]
    assert len({k.private_numbers().p for k in made}) == 5
    assert seen == [1, 2, 3, 4, 5]
    assert multiprocessing.active_children() == []


def test_encrypted_pem_is_pkcs8_pbes2_scrypt_aes256():
    key = KeyType.ECDSA_P256.generate()
    pem = keys.to_encrypted_pem(key, b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    import base64

    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    info, _ = decoder.decode(der, asn1Spec=rfc5208.EncryptedPrivateKeyInfo())
    assert info["encryptionAlgorithm"]["algorithm"] == rfc8018.id_PBES2
    params, _ = decoder.decode(info["encryptionAlgorithm"]["parameters"], asn1Spec=rfc8018.PBES2_params())
    assert params["keyDerivationFunc"]["algorithm"] == rfc7914.id_scrypt
    scrypt, _ = decoder.decode(params["keyDerivationFunc"]["parameters"], asn1Spec=rfc7914.Scrypt_params())
    assert int(scrypt["costParameter"]) == 2**keys.SCRYPT_LOG2_N == 131072
    assert int(scrypt["blockSize"]) == 8 and len(bytes(scrypt["salt"])) == 16
    back = keys.load_private_key(pem, b"correct horse")
    assert back.private_numbers() == key.private_numbers()


def test_wrong_or_missing_passphrase_and_garbage_are_one_line_errors():
    pem = keys.to_encrypted_pem(KeyType.ECDSA_P256.generate(), b"right", log2_n=10)
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        keys.load_private_key(pem, b"wrong")
    with pytest.raises(PassphraseError, match="MESHPKI_ROOT_PASSPHRASE"):
        keys.load_private_key(pem, None)
    for garbage in (b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", b"\x00\xff" * 50):
        with pytest.raises(BundleError) as info:
            keys.load_private_key(garbage, what="ca-key.pem")
        assert "ca-key.pem" in str(info.value) and "\n" not in str(info.value)


def test_signature_hash_follows_key_strength():
    assert keys.signature_hash(KeyType.ECDSA_P384.generate()).name == "sha384"
    assert keys.signature_hash(KeyType.ECDSA_P256.generate()).name == "sha256"
    assert keys.signature_hash(KeyType.RSA_2048.generate()).name == "sha256"


def test_workers_start_on_the_keys_as_the_block_is_entered():
    """The caller's own work inside the block (the root's scrypt unlock in
    `issue`) must overlap key generation: a worker delivers a key before
    anything iterates the maker."""
    import multiprocessing
    import multiprocessing.connection

    with keys.KeyMaker([KeyType.RSA_3072] * 2) as maker:
        assert maker.workers == 2
        # a hang guard, not a timing check: without the early hand-out nothing ever arrives
        assert multiprocessing.connection.wait(maker._conns, timeout=120)
        made = dict(maker)
    assert sorted(made) == [0, 1] and {k.key_size for k in made.values()} == {3072}
    assert multiprocessing.active_children() == []
