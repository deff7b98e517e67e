"""The rules istiod and the proxies apply that verify must apply too (docs/istio-compat.md).

One defect per bundle, built by tests/factories.py; each test asserts the
code, its severity, and who objects (`by`).
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from meshpki.bundle import CA_CERT, CA_CRL, CA_KEY, CERT_CHAIN, ROOT_CERT, Bundle
from meshpki.checks import By, Severity, check_bundle
from meshpki.keys import KeyType
from tests import factories as f


@pytest.fixture(scope="module")
def root():
    return f.make_root("Root CA", slot=140)


@pytest.fixture(scope="module")
def inter(root):
    return f.make_intermediate(root, "cluster1", slot=141)


def check(files, **kwargs):
    return check_bundle(Bundle(dict(files), "cluster1"), **kwargs)


def the(report, code):
    found = [x for x in report.findings if x.code == code]
    assert found, f"no {code} in {[(x.code, x.message) for x in report.findings]}"
    return found[0]


def codes(report):
    return {x.code for x in report.findings}


def with_crl(root, inter, crl: bytes):
    files = f.bundle_files(inter, root)
    files[CA_CRL] = crl
    return files


def good_crl(root, inter, **kwargs) -> bytes:
    return f.make_crl(root, **kwargs) + f.make_crl(inter)


# -- ca-crl.pem (files form) -----------------------------------------------------

def test_a_crl_signed_by_every_chain_certificate_is_fine(root, inter):
    report = check(with_crl(root, inter, good_crl(root, inter)))
    assert report.ok and "crl-ok" in codes(report), report.findings
    assert not [x for x in report.findings if x.severity is Severity.WARNING]


def test_an_empty_crl_file_means_no_crl(root, inter):
    report = check(with_crl(root, inter, b""))
    assert report.ok and not {c for c in codes(report) if c.startswith("crl")}


def test_a_garbage_block_in_the_crl_is_an_istiod_error(root, inter):
    garbage = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    hit = the(check(with_crl(root, inter, good_crl(root, inter) + garbage)), "unparsable")
    assert hit.by is By.ISTIOD and hit.file == CA_CRL and "block 3" in hit.message


def test_a_missing_signer_is_an_istiod_error(root, inter):
    report = check(with_crl(root, inter, f.make_crl(root)))  # nothing signed by the intermediate
    hit = the(report, "crl-missing")
    assert hit.severity is Severity.ERROR and hit.by is By.ISTIOD and "cluster1" in hit.message
    assert "no CRL names it" in hit.message and not report.ok


def test_a_crl_with_the_right_name_and_the_wrong_signer_is_an_istiod_error(root, inter):
    forged = f.make_crl(root, signer_key=f.pooled_key(KeyType.ECDSA_P256, 142)) + f.make_crl(inter)
    hit = the(check(with_crl(root, inter, forged)), "crl-missing")
    assert hit.by is By.ISTIOD and "Root CA" in hit.message and "did not sign" in hit.message


def test_a_signer_without_crlsign_cannot_sign_crls_for_go(root):
    key = f.pooled_key(KeyType.ECDSA_P256, 143)
    no_crl_sign = f.Authority(f.make_cert(f.make_intermediate(root, "cluster1", slot=143).cert.subject, key, root,
                                          path_length=0, usage=f.key_usage(crl_sign=False)), key)
    hit = the(check(with_crl(root, no_crl_sign, good_crl(root, no_crl_sign))), "crl-missing")
    assert "cRLSign" in hit.message


def test_an_expired_crl_is_a_proxy_error(root, inter):
    old = f.now() - dt.timedelta(days=10)
    report = check(with_crl(root, inter, good_crl(root, inter, this_update=old, days=7)))
    hit = the(report, "crl-expired")
    assert hit.severity is Severity.ERROR and hit.by is By.PROXY and not report.ok


def test_a_crl_near_its_next_update_is_a_warning(root, inter):
    report = check(with_crl(root, inter, good_crl(root, inter, this_update=f.now() - dt.timedelta(days=6))))
    assert the(report, "crl-expiring-soon").severity is Severity.WARNING and report.ok


def test_a_crl_revoking_the_bundles_own_intermediate_is_a_proxy_error(root, inter):
    report = check(with_crl(root, inter, f.make_crl(root, [inter.cert]) + f.make_crl(inter)))
    hit = the(report, "crl-revokes-path")
    assert hit.by is By.PROXY and "cluster1" in hit.message and not report.ok


def test_revoking_another_cluster_is_fine(root, inter):
    other = f.make_intermediate(root, "cluster2", slot=144)
    assert check(with_crl(root, inter, f.make_crl(root, [other.cert]) + f.make_crl(inter))).ok


def test_a_damaged_chain_block_is_fatal_once_a_crl_is_present(root, inter):
    files = with_crl(root, inter, good_crl(root, inter))
    files[CERT_CHAIN] += b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    hit = [x for x in check(files).findings if x.code == "unparsable" and x.by is By.ISTIOD]
    assert hit and hit[0].file == CERT_CHAIN and "ca-crl.pem" in hit[0].message


def test_the_tls_form_ignores_the_crl(root, inter):
    data = f.tls_form(f.bundle_files(inter, root))
    data[CA_CRL] = b"garbage"
    report = check_bundle(Bundle.from_secret_data(data, "cm"))
    hit = the(report, "crl-ignored")
    assert hit.severity is Severity.INFO and report.ok


# -- key files: istiod reads the first PEM block -------------------------------------

def _ec_params_first(inter) -> bytes:
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    return params + inter.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption())


@pytest.mark.parametrize("shape", ["ec-parameters-first", "certificate-first"])
def test_a_key_file_whose_first_block_is_not_the_key_is_an_istiod_error(root, inter, shape):
    files = f.bundle_files(inter, root)
    files[CA_KEY] = _ec_params_first(inter) if shape == "ec-parameters-first" else inter.cert_pem + files[CA_KEY]
    report = check(files)
    hit = the(report, "key-block-order")
    assert hit.by is By.ISTIOD and hit.file == CA_KEY and "openssl pkey" in hit.fix and not report.ok


def test_the_same_in_the_tls_form(root, inter):
    data = f.tls_form(f.bundle_files(inter, root))
    data["tls.key"] = _ec_params_first(inter)
    assert the(check_bundle(Bundle.from_secret_data(data, "cm")), "key-block-order").file == "tls.key"


# -- root-cert.pem: a damaged extra block is skipped ------------------------------

def test_a_damaged_extra_root_block_is_a_warning(root, inter):
    files = f.bundle_files(inter, root)
    files[ROOT_CERT] += b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    report = check(files)
    hit = the(report, "damaged-block")
    assert hit.severity is Severity.WARNING and hit.file == ROOT_CERT
    assert report.ok and "workload-ok" in codes(report)


# -- Ed25519 intermediates load in istiod ---------------------------------------------

def test_an_ed25519_intermediate_is_not_an_istiod_error(root):
    key = ed25519.Ed25519PrivateKey.generate()
    cert = f.make_cert(f.make_intermediate(root, "cluster1", slot=145).cert.subject, key, root,  # type: ignore[arg-type]
                       path_length=0)
    report = check(f.bundle_files(f.Authority(cert, key), root))  # type: ignore[arg-type]
    hit = the(report, "uncommon-key")
    assert hit.severity is Severity.WARNING and hit.by is By.PROXY
    assert not [x for x in report.findings if x.by is By.ISTIOD and x.severity is Severity.ERROR], report.findings


# -- the trust domain and name-constrained roots ------------------------------------

def _constrained(domain: str, slot: int) -> f.Authority:
    key = f.pooled_key(KeyType.ECDSA_P256, slot)
    nc = x509.NameConstraints(permitted_subtrees=[x509.UniformResourceIdentifier(domain)], excluded_subtrees=None)
    return f.Authority(f.make_cert("Pinned Root", key, name_constraints=nc, days=3650), key)


def test_a_root_pinned_to_its_trust_domain_is_fine_for_that_domain():
    pinned = _constrained("prod.example", 146)
    files = f.bundle_files(f.make_intermediate(pinned, "cluster1", slot=147), pinned)
    report = check(files, trust_domain="prod.example")
    assert report.ok and "workload-ok" in codes(report), report.findings


def test_the_same_root_is_a_proxy_error_for_cluster_local():
    pinned = _constrained("prod.example", 146)
    report = check(f.bundle_files(f.make_intermediate(pinned, "cluster1", slot=147), pinned))
    hit = the(report, "name-constrained")
    assert hit.by is By.PROXY and hit.file == ROOT_CERT and "cluster.local" in hit.message
    assert "workload-rejected" in codes(report), "the real handshake agrees"


def test_the_probe_carries_the_trust_domain(root, inter):
    report = check(f.bundle_files(inter, root), trust_domain="mesh.example")
    assert "spiffe://mesh.example/ns/meshpki-probe/" in the(report, "workload-ok").message


def test_an_ec_key_still_needs_a_go_curve(root):
    key = ec.generate_private_key(ec.SECP256K1())
    cert = f.make_cert(f.make_intermediate(root, "cluster1", slot=148).cert.subject, key, root, path_length=0)
    hit = the(check(f.bundle_files(f.Authority(cert, key), root)), "unsupported-key")
    assert hit.by is By.ISTIOD and hit.file == CA_CERT
