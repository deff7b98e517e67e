"""The root and intermediate profiles, for every key type, judged three ways:
istiod's load-time checks (docs/istio.md), `openssl verify`, and pkilint (RFC 5280)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import PolicyBuilder
from cryptography.x509.verification import Store as TrustStore

from meshpki import ca, keys, profiles
from meshpki.bundle import parse_certs
from meshpki.keys import KeyType
from meshpki.store import Store

ALL_KEY_TYPES = list(KeyType)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[KeyType, Store]:
    """One store per key type with cluster1 and cluster2: RSA-4096 keys are made once."""
    made = {}
    for key_type in ALL_KEY_TYPES:
        store = Store(tmp_path_factory.mktemp(key_type.value) / "store")
        ca.init_root(store, key_type, 3650, "Istio", "Root CA", passphrase=None)
        ca.issue(store, ["cluster1", "cluster2"], ca.IssueOptions(), ca.store_issuer(store, None))
        made[key_type] = store
    return made


def assert_is_ca(cert: x509.Certificate, path_length: int | None) -> None:
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == path_length
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
    # Go verifies CA certs for serverAuth: the safest CA has no EKU at all (docs/istio.md)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def expected_hash(key_type: KeyType) -> type:
    return hashes.SHA384 if key_type is KeyType.ECDSA_P384 else hashes.SHA256


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES, ids=lambda k: k.value)
def test_root_profile(stores, key_type):
    store = stores[key_type]
    root = store.root_cert()
    assert_is_ca(root, None)
    assert root.subject == root.issuer
    assert root.subject.rfc4514_string() == "CN=Root CA,O=Istio"
    assert isinstance(root.signature_hash_algorithm, expected_hash(key_type))
    assert root.serial_number > 2**63, "serial must be random and at least 64 bits"
    assert root.not_valid_before_utc < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4), "backdated for skew"
    key = store.load_root_key(None)
    assert keys.public_keys_match(key, root.public_key())
    if key_type.is_rsa:
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == int(key_type.value[4:])
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES, ids=lambda k: k.value)
def test_intermediate_passes_istiod_load_checks(stores, key_type):
    store = stores[key_type]
    folder = store.cluster_dir("cluster1")
    assert sorted(p.name for p in folder.iterdir()) == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]
    cert = parse_certs((folder / "ca-cert.pem").read_bytes(), "ca-cert.pem")[0]
    chain = parse_certs((folder / "cert-chain.pem").read_bytes(), "cert-chain.pem")
    roots = parse_certs((folder / "root-cert.pem").read_bytes(), "root-cert.pem")
    assert_is_ca(cert, 0)
    assert isinstance(cert.signature_hash_algorithm, expected_hash(key_type))
    assert chain == [cert, store.root_cert()], "cert-chain.pem = intermediate, then root"
    assert roots == [store.root_cert()]
    assert (folder / "root-cert.pem").read_bytes() == store.root_cert_pem()
    names = cert.subject.rfc4514_string()
    assert names == "CN=Intermediate CA,L=cluster1,O=Istio"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    root_ski = store.root_cert().extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    key_pem = (folder / "ca-key.pem").read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----"), "istiod needs a plaintext PKCS#8 key"
    assert keys.public_keys_match(keys.load_private_key(key_pem), cert.public_key())
    cert.verify_directly_issued_by(store.root_cert())
    assert cert.not_valid_after_utc <= store.root_cert().not_valid_after_utc


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
@pytest.mark.parametrize("key_type", ALL_KEY_TYPES, ids=lambda k: k.value)
def test_openssl_verify_accepts_bundle(stores, key_type):
    folder = stores[key_type].cluster_dir("cluster2")
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", "root-cert.pem", "-untrusted", "cert-chain.pem", "ca-cert.pem"],
        cwd=folder, capture_output=True, text=True,
    )
    assert done.returncode == 0 and "ca-cert.pem: OK" in done.stdout, done.stdout + done.stderr


def pkilint_findings(pem: bytes) -> list[str]:
    """pkilint's RFC 5280 certificate linter (as `lint_pkix_cert`), WARNING and above."""
    from pkilint import loader
    from pkilint.pkix import certificate, extension, name
    from pkilint.validation import ValidationFindingSeverity as Severity

    validator = certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )
    doc = loader.load_pem_certificate(pem.decode(), "cert")
    serious = {Severity.WARNING, Severity.ERROR, Severity.FATAL}
    return [f"{fd.finding.code} ({fd.finding.severity.name})"
            for result in validator.validate(doc.root) for fd in result.finding_descriptions
            if fd.finding.severity in serious]


def test_pkilint_helper_does_flag_a_bad_certificate():
    """Guard against a linter call that can never fail: a workload cert with a
    NON-critical SAN and an empty subject breaks RFC 5280 4.2.1.6."""
    from cryptography.hazmat.primitives.serialization import Encoding

    root_key = KeyType.ECDSA_P256.generate()
    root = profiles.make_root(root_key, 10)
    leaf_key = KeyType.ECDSA_P256.generate()
    bad = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(root.subject)
           .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(root.not_valid_before_utc).not_valid_after(root.not_valid_after_utc)
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://x/y")]), critical=False)
           .sign(root_key, hashes.SHA256()))
    assert pkilint_findings(bad.public_bytes(Encoding.PEM))


@pytest.mark.parametrize("key_type", ALL_KEY_TYPES, ids=lambda k: k.value)
def test_pkilint_finds_no_warnings(stores, key_type):
    store = stores[key_type]
    assert pkilint_findings(store.root_cert_pem()) == []
    assert pkilint_findings((store.cluster_dir("cluster1") / "ca-cert.pem").read_bytes()) == []


def _workload(folder, trust_domain="cluster.local"):
    cert = parse_certs((folder / "ca-cert.pem").read_bytes(), "ca")[0]
    key = keys.load_private_key((folder / "ca-key.pem").read_bytes())
    leaf_key = KeyType.ECDSA_P256.generate()
    return profiles.make_workload(cert, key, leaf_key, trust_domain=trust_domain)


@pytest.mark.parametrize("key_type", [KeyType.ECDSA_P256, KeyType.RSA_2048, KeyType.ECDSA_P384], ids=lambda k: k.value)
def test_workload_of_one_cluster_verifies_under_the_other(stores, key_type):
    """What a proxy does: peer leaf + its cert-chain.pem against its OWN root-cert.pem."""
    store = stores[key_type]
    one, two = store.cluster_dir("cluster1"), store.cluster_dir("cluster2")
    for mine, peer in ((one, two), (two, one)):
        leaf = _workload(peer)
        intermediates = parse_certs((peer / "cert-chain.pem").read_bytes(), "chain")
        roots = parse_certs((mine / "root-cert.pem").read_bytes(), "roots")
        verifier = PolicyBuilder().store(TrustStore(roots)).build_client_verifier()
        verified = verifier.verify(leaf, intermediates)
        assert verified.chain[-1] == roots[0]
        sans = verified.subjects or []
        assert any(getattr(s, "value", "") == "spiffe://cluster.local/ns/default/sa/default" for s in sans)


def test_workload_profile_matches_istiod():
    root_key = KeyType.ECDSA_P256.generate()
    root = profiles.make_root(root_key, 10)
    leaf = profiles.make_workload(root, root_key, KeyType.ECDSA_P256.generate(), namespace="ns1", service_account="sa1")
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical, "empty subject means the SAN must be critical (RFC 5280 4.2.1.6)"
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/ns1/sa/sa1"]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == profiles.WORKLOAD_TTL + profiles.CLOCK_SKEW


def test_intermediate_is_capped_at_root_expiry():
    root_key = KeyType.ECDSA_P256.generate()
    root = profiles.make_root(root_key, 100)
    issued = profiles.make_intermediate(root, root_key, KeyType.ECDSA_P256.generate().public_key(), "cluster1", days=730)
    assert issued.cert.not_valid_after_utc == root.not_valid_after_utc
    assert len(issued.warnings) == 1 and "capped" in issued.warnings[0]
    fine = profiles.make_intermediate(root, root_key, KeyType.ECDSA_P256.generate().public_key(), "cluster1", days=30)
    assert fine.warnings == ()


def test_custom_san_and_org():
    root_key = KeyType.ECDSA_P256.generate()
    root = profiles.make_root(root_key, 100, org="Acme", cn="Acme Mesh Root")
    issued = profiles.make_intermediate(root, root_key, KeyType.ECDSA_P256.generate().public_key(), "east", days=30,
                                        org="Acme", san_dns=("istiod.istio-system.svc", "istiod-east.example"))
    san = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc", "istiod-east.example"]
    assert issued.cert.issuer == root.subject
