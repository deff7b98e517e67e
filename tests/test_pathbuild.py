"""Path building: one rule for "issued by", and a search whose work is bounded."""

from __future__ import annotations

import pytest
from cryptography import x509

from meshpki import pathbuild
from meshpki.bundle import Bundle
from meshpki.checks import check_bundle
from meshpki.keys import KeyType
from tests import factories as f


def _look_alikes(count: int) -> list[x509.Certificate]:
    """`count` self-issued CA certs sharing one name and one key: each one verifies
    as the issuer of every other, the worst case for a naive path search."""
    key = f.pooled_key(KeyType.ECDSA_P256, 120)
    authority = f.Authority(f.make_cert("Look-alike CA", key), key)
    return [f.make_cert("Look-alike CA", key, authority, days=30 + i) for i in range(count)]


def test_nine_look_alikes_need_at_most_one_check_per_pair():
    certs = _look_alikes(9)
    stranger = f.make_root("Stranger", slot=121)
    builder = pathbuild.PathBuilder()
    result = builder.build(certs[0], certs[1:], [stranger.cert])
    assert not result.ok
    # every (child, issuer) signature at most once: 9 x 8 pairs, far from 8! paths
    assert builder.signature_checks <= 9 * 8
    assert not builder.capped


def test_the_cap_stops_a_hostile_chain():
    certs = _look_alikes(30)
    builder = pathbuild.PathBuilder(max_checks=50)
    result = builder.build(certs[0], certs[1:], [f.make_root("Stranger", slot=121).cert])
    assert builder.capped and builder.signature_checks == 50
    assert not result.ok and "gave up after 50 signature checks" in result.problem


def test_verify_of_a_look_alike_bundle_reports_instead_of_hanging():
    certs = _look_alikes(9)
    key = f.pooled_key(KeyType.ECDSA_P256, 120)
    files = {"ca-cert.pem": f.pem(certs[0]), "ca-key.pem": f.Authority(certs[0], key).key_pem,
             "cert-chain.pem": f.pem(*certs), "root-cert.pem": f.pem(f.make_root("Stranger", slot=121))}
    report = check_bundle(Bundle(files, "look-alikes"))
    assert "chain-broken" in {x.code for x in report.findings}


def test_a_path_through_look_alikes_is_still_found():
    root = f.make_root("Root CA", slot=122)
    mid_key = f.pooled_key(KeyType.ECDSA_P256, 123)
    mid = f.Authority(f.make_cert("Mid CA", mid_key, root, path_length=3), mid_key)
    copies = [f.make_cert("Mid CA", mid_key, root, path_length=3, days=100 + i) for i in range(6)]
    leaf_ca = f.make_intermediate(mid, "cluster1", slot=124)
    result = pathbuild.build_path(leaf_ca.cert, [*copies, mid.cert], [root.cert])
    assert result.ok and result.path[-1] == root.cert


@pytest.mark.skipif(not f.openssl_available(), reason="openssl CLI not installed")
def test_issued_by_accepts_a_valid_sha1_signature():
    """One rule for rotate and checks: a SHA-1 signature is still the issuer's signature."""
    from meshpki import rotate

    root = f.make_root("RSA Root", KeyType.RSA_2048, slot=125)
    key = f.pooled_key(KeyType.RSA_2048, 126)
    sha1 = f.openssl_sign(key, root, cn="Old CA", digest="sha1")
    impostor = f.make_root("RSA Root", KeyType.RSA_2048, slot=127)
    assert pathbuild.signed_by(sha1, root.cert) and not pathbuild.signed_by(sha1, impostor.cert)
    bundle = Bundle(f.bundle_files(f.Authority(sha1, key), root), "old")
    assert rotate.issued_by(bundle, root.cert) and not rotate.issued_by(bundle, impostor.cert)
