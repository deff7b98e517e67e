"""check_bundle and check_pair: every broken case built here, judged with its code.

Each broken bundle is made by tests/factories.py with one thing wrong; the
test asserts the verdict (ok or not) and the exact finding code. Good cases
(Istio's Makefile style, the older samples style, the tls.* form, two roots)
must pass with warnings at most, because istiod accepts them.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshpki.bundle import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, Bundle
from meshpki.checks import CODES, By, Severity, build_path, check_bundle, check_pair
from meshpki.keys import KeyType
from tests import factories as f

KEY_TYPES = [KeyType.ECDSA_P256, KeyType.RSA_2048]


def check(files, name="cluster1", **kwargs):
    return check_bundle(Bundle(dict(files), name), **kwargs)


def codes_of(report, severity: Severity | None = None) -> set[str]:
    return {x.code for x in report.findings if severity is None or x.severity is severity}


def finding(report, code):
    found = [x for x in report.findings if x.code == code]
    assert found, f"no {code} in {[(x.code, x.message) for x in report.findings]}"
    return found[0]


@pytest.fixture(scope="module")
def root():
    return f.make_root("Root CA")


@pytest.fixture(scope="module")
def inter(root):
    return f.make_intermediate(root, "cluster1")


# -- good bundles -------------------------------------------------------------

@pytest.mark.parametrize("key_type", KEY_TYPES, ids=lambda k: k.value)
def test_good_bundle_passes_with_workload_handshake(key_type):
    root = f.make_root("Root CA", key_type, slot=30)
    inter = f.make_intermediate(root, "cluster1", key_type, slot=31)
    report = check(f.bundle_files(inter, root))
    assert report.ok, report.findings
    assert codes_of(report, Severity.WARNING) == set()
    assert "workload-ok" in codes_of(report)
    assert report.material.workload is not None
    assert report.material.path[-1] == root.cert


def test_istio_makefile_style_is_clean():
    files, _ = f.istio_makefile_bundle()
    report = check(files)
    assert report.ok and codes_of(report, Severity.WARNING) == set(), report.findings
    assert "workload-ok" in codes_of(report)


def test_istio_older_samples_style_is_accepted_with_notes_only():
    report = check(f.istio_samples_bundle())
    assert report.ok, report.findings
    assert codes_of(report, Severity.WARNING) == set()
    assert {"legacy-profile", "chain-without-root", "workload-ok"} <= codes_of(report, Severity.INFO)


def test_tls_form_is_checked_under_its_own_file_names(root, inter):
    bundle = Bundle.from_secret_data(f.tls_form(f.bundle_files(inter, root)), "cm")
    report = check_bundle(bundle)
    assert report.ok, report.findings
    assert "signed by tls.crt" in finding(report, "workload-ok").message


def test_root_cert_holding_two_roots():
    old, new = f.make_root("Root A", slot=40), f.make_root("Root B", slot=41)
    inter = f.make_intermediate(new, "cluster1", slot=42)
    report = check(f.bundle_files(inter, [old, new]))
    assert report.ok and not codes_of(report, Severity.WARNING), report.findings
    assert report.material.path == (new.cert,)


def test_multi_level_chain_builds_in_any_order(root):
    mid = f.make_intermediate(root, "mid", slot=43, path_length=1)
    leaf_ca = f.make_intermediate(mid, "cluster1", slot=44)
    good = check(f.bundle_files(leaf_ca, root, chain=[leaf_ca, mid, root]))
    assert good.ok and not codes_of(good, Severity.WARNING), good.findings
    shuffled = check(f.bundle_files(leaf_ca, root, chain=[leaf_ca, root, mid]))
    assert shuffled.ok and "chain-order" in codes_of(shuffled, Severity.WARNING)


# -- broken bundles: one defect each --------------------------------------------

def _key_mismatch(root, inter):
    files = f.bundle_files(inter, root)
    files[CA_KEY] = f.Authority(inter.cert, f.pooled_key(KeyType.ECDSA_P256, 50)).key_pem
    return files


def _not_a_ca(root, inter):
    ee = f.Authority(f.make_cert("cluster1 leaf", f.pooled_key(KeyType.ECDSA_P256, 51), root, ca=False),
                     f.pooled_key(KeyType.ECDSA_P256, 51))
    return f.bundle_files(ee, root)


def _expired(root, inter):
    old = f.make_intermediate(root, "cluster1", slot=52, not_before=f.days_from_now(-30),
                              not_after=f.days_from_now(-1))
    return f.bundle_files(old, root)


def _not_yet_valid(root, inter):
    later = f.make_intermediate(root, "cluster1", slot=53, not_before=f.days_from_now(2), days=30)
    return f.bundle_files(later, root)


def _client_auth_eku(root, inter):
    bad = f.make_intermediate(root, "cluster1", slot=54, eku=f.eku("clientAuth"))
    return f.bundle_files(bad, root)


def _wrong_root(root, inter):
    other = f.make_root("Root CA", slot=55)  # same name, different key: a regenerated root
    files = f.bundle_files(inter, root)
    files[ROOT_CERT] = other.cert_pem
    files[CERT_CHAIN] = f.pem(inter, other)
    return files


def _root_pathlen_zero(root, inter):
    limited = f.make_root("Limited Root", slot=56, path_length=0)
    mid = f.make_intermediate(limited, "mid", slot=57, path_length=None)
    leaf_ca = f.make_intermediate(mid, "cluster1", slot=58)
    return f.bundle_files(leaf_ca, limited, chain=[leaf_ca, mid, limited])


def _no_keycertsign(root, inter):
    bad = f.make_intermediate(root, "cluster1", slot=59, usage=f.key_usage(cert_sign=False))
    return f.bundle_files(bad, root)


def _truncated_pem(root, inter):
    files = f.bundle_files(inter, root)
    files[CA_CERT] = files[CA_CERT][: len(files[CA_CERT]) // 2]
    return files


def _missing_file(root, inter):
    files = f.bundle_files(inter, root)
    del files[CERT_CHAIN]
    return files


def _garbage_key(root, inter):
    files = f.bundle_files(inter, root)
    files[CA_KEY] = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    return files


def _binary_root(root, inter):
    files = f.bundle_files(inter, root)
    files[ROOT_CERT] = root.cert.public_bytes(Encoding.DER)
    return files


def _encrypted_key(root, inter):
    return f.bundle_files(inter, root, key_format="encrypted")


def _weak_rsa(root, inter):
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = f.Authority(f.make_cert(f.make_intermediate(root, "x", slot=60).cert.subject, small, root,
                                   path_length=0), small)
    return f.bundle_files(weak, root)


def _intermediate_missing_from_chain(root, inter):
    return f.bundle_files(inter, root, chain=[root])


BROKEN = {
    "key-mismatch": (_key_mismatch, CA_KEY),
    "not-a-ca": (_not_a_ca, CA_CERT),
    "expired": (_expired, CA_CERT),
    "not-yet-valid": (_not_yet_valid, CA_CERT),
    "bad-eku": (_client_auth_eku, CA_CERT),
    "chain-broken": (_wrong_root, CA_CERT),
    "pathlen-violated": (_root_pathlen_zero, ROOT_CERT),
    "no-keycertsign": (_no_keycertsign, CA_CERT),
    "unparsable": (_truncated_pem, CA_CERT),
    "missing-file": (_missing_file, CERT_CHAIN),
    "encrypted-key": (_encrypted_key, CA_KEY),
    "weak-key": (_weak_rsa, CA_CERT),
}


@pytest.mark.parametrize("code", list(BROKEN))
def test_broken_bundle_fails_with_code(code, root, inter):
    make, file = BROKEN[code]
    report = check(make(root, inter))
    assert not report.ok
    hit = finding(report, code)
    assert hit.severity is Severity.ERROR
    assert hit.file == file
    assert hit.fix, "every error must say how to fix it"
    assert file in hit.message or hit.file == file


@pytest.mark.parametrize("code", ["expired", "not-a-ca", "bad-eku", "chain-broken", "pathlen-violated",
                                  "no-keycertsign"])
def test_broken_bundle_cannot_sign_working_workloads(code, root, inter):
    """The real test agrees with the explicit check: the handshake fails too."""
    report = check(BROKEN[code][0](root, inter))
    assert "workload-rejected" in codes_of(report, Severity.ERROR), report.findings
    assert not report.material.can_sign


def test_garbage_key_and_binary_file_are_named_never_raised(root, inter):
    garbage = check(_garbage_key(root, inter))
    assert finding(garbage, "unparsable").file == CA_KEY and not garbage.ok
    binary = check(_binary_root(root, inter))
    assert finding(binary, "unparsable").file == ROOT_CERT
    assert "root-cert.pem" in finding(binary, "unparsable").message


def test_cert_chain_without_the_intermediate_is_broken(root, inter):
    report = check(_intermediate_missing_from_chain(root, inter))
    hit = finding(report, "chain-broken")
    assert hit.file == CERT_CHAIN and "does not contain ca-cert.pem" in hit.message
    assert "workload-rejected" in codes_of(report)


def test_every_file_missing_is_named(root, inter):
    report = check({})
    assert {x.file for x in report.findings if x.code == "missing-file"} == {CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT}


def test_wrong_root_message_explains_same_name(root, inter):
    assert "did not sign it" in finding(check(_wrong_root(root, inter)), "chain-broken").message


# -- SHA-1, made by the openssl CLI ----------------------------------------------

needs_openssl = pytest.mark.skipif(not f.openssl_available(), reason="openssl CLI not installed")


@needs_openssl
def test_sha1_signed_intermediate_is_an_error(root):
    key = f.pooled_key(KeyType.RSA_2048, 61)
    rsa_root = f.make_root("RSA Root", KeyType.RSA_2048, slot=62)
    cert = f.openssl_sign(key, rsa_root, cn="Intermediate CA", digest="sha1")
    report = check(f.bundle_files(f.Authority(cert, key), rsa_root))
    assert not report.ok
    hit = finding(report, "weak-signature")
    assert hit.severity is Severity.ERROR and hit.file == CA_CERT and "SHA-1" in hit.message
    assert report.material.path == (rsa_root.cert,), "the path is still built through a SHA-1 signature"


@needs_openssl
def test_sha1_self_signed_root_is_a_warning_only():
    key = f.pooled_key(KeyType.RSA_2048, 63)
    root_cert = f.openssl_sign(key, None, cn="Old Root", digest="sha1", days=3650)
    sha1_root = f.Authority(root_cert, key)
    inter = f.make_intermediate(sha1_root, "cluster1", KeyType.RSA_2048, slot=64)
    report = check(f.bundle_files(inter, sha1_root))
    hit = finding(report, "weak-signature")
    assert hit.severity is Severity.WARNING and hit.file == ROOT_CERT
    assert report.ok, report.findings


# -- warnings --------------------------------------------------------------------

def test_expiring_soon_follows_warn_days(root):
    short = f.make_intermediate(root, "cluster1", slot=65, days=10)
    files = f.bundle_files(short, root)
    assert "expiring-soon" in codes_of(check(files), Severity.WARNING)
    assert "expiring-soon" not in codes_of(check(files, warn_days=5))
    assert check(files).ok


def test_explicit_now_drives_validity(root, inter):
    later = f.now() + dt.timedelta(days=400)
    report = check(f.bundle_files(inter, root), now=later)
    assert finding(report, "expired").severity is Severity.ERROR


def test_default_now_follows_a_frozen_clock(root, inter):
    """check_bundle reads the clock through profiles.utcnow, so freezegun works
    for the explicit checks (the OpenSSL handshake keeps the real clock)."""
    from freezegun import freeze_time

    files = f.bundle_files(inter, root)
    with freeze_time(f.now() + dt.timedelta(days=400)):
        report = check(files)
    assert finding(report, "expired").severity is Severity.ERROR and not report.ok


def test_workload_outliving_the_intermediate_warns(root):
    dying = f.make_intermediate(root, "cluster1", slot=66, days=0.5)
    report = check(f.bundle_files(dying, root))
    assert "workload-outlives-ca" in codes_of(report, Severity.WARNING)
    assert report.ok


def test_intermediate_outliving_root_warns():
    short_root = f.make_root("Short Root", slot=67, days=100)
    inter = f.make_intermediate(short_root, "cluster1", slot=68, days=200)
    report = check(f.bundle_files(inter, short_root))
    assert "outlives-root" in codes_of(report, Severity.WARNING) and report.ok


def test_chain_extra_and_duplicate_root(root, inter):
    stranger = f.make_root("Stranger", slot=69)
    report = check(f.bundle_files(inter, root, chain=[inter, root, root, stranger]))
    hit = finding(report, "chain-extra")
    assert "second copy" in hit.message and "Stranger" in hit.message
    assert report.ok


def test_chain_not_leaf_first(root, inter):
    report = check(f.bundle_files(inter, root, chain=[root, inter]))
    assert "chain-order" in codes_of(report, Severity.WARNING) and report.ok


def test_extra_expired_root_is_a_warning(root, inter):
    dead = f.make_root("Dead Root", slot=70, not_before=f.days_from_now(-20), not_after=f.days_from_now(-1))
    report = check(f.bundle_files(inter, [root, dead]))
    assert finding(report, "expired").severity is Severity.WARNING
    assert report.ok


# -- pairs ------------------------------------------------------------------------

def test_pair_under_one_root_shakes_hands(root, inter):
    other = f.make_intermediate(root, "cluster2", slot=71)
    a, b = check(f.bundle_files(inter, root)), check(f.bundle_files(other, root), "cluster2")
    pair = check_pair(a, b)
    assert pair.ok and "handshake-ok" in {x.code for x in pair.findings}


def test_pair_under_different_roots_fails_with_unknown_ca(root, inter):
    root2 = f.make_root("Root CA", slot=72)
    other = f.make_intermediate(root2, "cluster2", slot=73)
    a, b = check(f.bundle_files(inter, root)), check(f.bundle_files(other, root2), "cluster2")
    assert a.ok and b.ok
    pair = check_pair(a, b)
    assert not pair.ok
    untrusted = [x for x in pair.findings if x.code == "peer-untrusted"]
    assert len(untrusted) == 1 and "trust different roots" in untrusted[0].message
    assert "UNKNOWN_CA" in untrusted[0].message
    failed = [x for x in pair.findings if x.code == "handshake-failed"]
    assert failed and "UNKNOWN_CA" in failed[0].message


def test_pair_one_way_trust_names_the_direction():
    old, new = f.make_root("Root A", slot=74), f.make_root("Root B", slot=75)
    a = check(f.bundle_files(f.make_intermediate(old, "cluster1", slot=76), [old, new]))
    b = check(f.bundle_files(f.make_intermediate(new, "cluster2", slot=77), [new]), "cluster2")
    pair = check_pair(a, b)
    assert not pair.ok
    hit = [x for x in pair.findings if x.code == "peer-untrusted"]
    assert len(hit) == 1 and hit[0].message.startswith("cluster2's root-cert.pem does not hold")


def test_pair_with_a_broken_bundle(root, inter):
    a, b = check(f.bundle_files(inter, root)), check(_key_mismatch(root, inter), "cluster2")
    pair = check_pair(a, b)
    assert not pair.ok and [x.code for x in pair.findings] == ["peer-broken"]


# -- the path builder and the code table ----------------------------------------------

def test_build_path_ignores_order_and_needs_signatures(root, inter):
    assert build_path(inter.cert, [root.cert], [root.cert]).path == (root.cert,)
    impostor = f.make_root("Root CA", slot=78)
    result = build_path(inter.cert, [], [impostor.cert])
    assert not result.ok and "did not sign it" in result.problem


def test_every_emitted_code_is_documented_and_kebab_case():
    for code, known in CODES.items():
        assert code == code.lower() and " " not in code and "_" not in code
        assert isinstance(known.severity, Severity) and isinstance(known.by, By) and known.meaning


def test_readme_code_table_is_the_code_table():
    """The README's table of finding codes says exactly what CODES says: code,
    severity, who objects, meaning (the same words)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \| (\w+) \| (\w+) \| (.*) \|$", readme, re.M)
    table = {code: (severity, by, meaning.replace("(`--context`) ", "")) for code, severity, by, meaning in rows}
    assert table == {code: (c.severity.value, c.by.value, c.meaning) for code, c in CODES.items()}


def test_findings_serialise_to_the_contract(root, inter):
    report = check(_key_mismatch(root, inter))
    data = report.to_dict()
    assert set(data) == {"target", "ok", "findings"} and data["ok"] is False
    for item in data["findings"]:
        assert set(item) == {"severity", "code", "message", "file", "by", "fix"}
        assert item["severity"] in {"error", "warning", "info"} and item["by"] in {"istiod", "proxy", "meshpki"}
        assert item["fix"] is None or item["fix"].strip()
        assert item["code"] in CODES


def test_checks_take_a_live_secrets_data(root, inter):
    """push and audit call check_bundle on Bundle.from_secret_data: both forms."""
    files = f.bundle_files(inter, root)
    assert check_bundle(Bundle.from_secret_data(files, "live/cluster1")).ok
    assert check_bundle(Bundle.from_secret_data(f.tls_form(files), "live/cluster1")).ok


# -- the workload probe and SANs ---------------------------------------------------

def test_workload_probe_is_a_throw_away_identity_of_minutes(root, inter):
    report = check(f.bundle_files(inter, root))
    leaf = report.material.workload
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uri = san.get_values_for_type(x509.UniformResourceIdentifier)[0]
    assert uri.startswith("spiffe://cluster.local/ns/meshpki-probe/sa/verify-")
    assert uri != "spiffe://cluster.local/ns/default/sa/default"
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(minutes=20)


@pytest.mark.parametrize("bad", ["", "not a dns!!", "-leading.example", "10.0.0.1"])
def test_malformed_san_on_the_intermediate_is_flagged(root, bad):
    key = f.pooled_key(KeyType.ECDSA_P256, 31)
    odd = f.Authority(f.make_cert(f.make_intermediate(root, "cluster1", slot=31).cert.subject, key, root,
                                  path_length=0, san_dns=[bad]), key)
    report = check(f.bundle_files(odd, root))
    hit = finding(report, "bad-san")
    assert hit.severity is Severity.WARNING and hit.by is By.MESHPKI and hit.file == CA_CERT
    assert repr(bad) in hit.message and report.ok


def test_good_sans_are_not_flagged(root, inter):
    assert "bad-san" not in codes_of(check(f.bundle_files(inter, root)))
