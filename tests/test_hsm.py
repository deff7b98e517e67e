"""The root key inside a PKCS#11 token, against a real SoftHSM2 token.

Every certificate a token root signs must be indistinguishable in profile
from a file root's (the same checks as tests/test_profiles.py, pkilint
included); the key must be generated inside the token, sensitive and never
extractable; every failure is one line with nothing written.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshpki import ca, hsm, rotate, signing
from meshpki.bundle import parse_certs
from meshpki.errors import InputError
from meshpki.keys import KeyType
from meshpki.store import ROOT_KEY_FILE, ROOT_KEY_URI_FILE, Store
from tests.conftest import one_line_error, snapshot
from tests.softhsm import SoftHSM
from tests.terminal import on_a_terminal
from tests.test_profiles import assert_is_ca, expected_hash, pkilint_findings

REPO = Path(__file__).resolve().parent.parent


def labels():
    """A fresh object label per call: every test makes its own key in the shared token."""
    labels.n = getattr(labels, "n", 0) + 1
    return f"key-{os.getpid()}-{labels.n}"


def run_meshpki(args: list[str], env: dict[str, str], input: str | None = None) -> subprocess.CompletedProcess:
    """meshpki as a user runs it: its own process (its own SoftHSM2 configuration)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MESHPKI_")}
    full.update(env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "meshpki", *args], env=full, capture_output=True, text=True,
                          input=input, timeout=300)


# -- the whole workflow, per key type -----------------------------------------

@pytest.mark.parametrize("key_type", list(KeyType), ids=lambda k: k.value)
def test_token_root_signs_certificates_identical_in_profile(cli, store_path, softhsm: SoftHSM, key_type):
    uri = softhsm.uri(labels())
    made = cli("init-root", "--pkcs11", uri, "--key-type", key_type.value, env=softhsm.env())
    assert made.exit_code == 0, made.output
    assert (store_path / "root" / ROOT_KEY_URI_FILE).is_file()
    assert not (store_path / "root" / ROOT_KEY_FILE).exists(), "the root key must never exist in a file"
    issued = cli("issue", "cluster1", "cluster2", "--key-type", "ecdsa-p256", env=softhsm.env())
    assert issued.exit_code == 0, issued.output
    verified = cli("verify", env=softhsm.env())
    assert verified.exit_code == 0, verified.output

    store = Store(store_path)
    root = store.root_cert()
    assert_is_ca(root, None)
    root.verify_directly_issued_by(root)
    assert isinstance(root.signature_hash_algorithm, expected_hash(key_type))
    public = root.public_key()
    if key_type.is_rsa:
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == int(key_type.value[4:])
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
    inter = parse_certs((store.cluster_dir("cluster1") / "ca-cert.pem").read_bytes(), "ca-cert.pem")[0]
    assert_is_ca(inter, 0)
    inter.verify_directly_issued_by(root)
    assert isinstance(inter.signature_hash_algorithm, expected_hash(key_type))
    for cert in (root, inter):
        assert pkilint_findings(cert.public_bytes(_pem())) == []
    done = subprocess.run(["openssl", "verify", "-CAfile", "root-cert.pem", "-untrusted", "cert-chain.pem",
                           "ca-cert.pem"], cwd=store.cluster_dir("cluster2"), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # nothing in the store holds a private key except the clusters' own ca-key.pem
    for path in store_path.rglob("*"):
        if path.is_file() and path.name != "ca-key.pem":
            assert b"PRIVATE KEY" not in path.read_bytes(), path


def _pem():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


def test_token_key_is_sensitive_and_never_extractable(store, softhsm: SoftHSM, monkeypatch):
    monkeypatch.setenv("MESHPKI_PKCS11_MODULE", softhsm.module)
    uri = softhsm.uri(labels())
    ca.init_root(store, KeyType.ECDSA_P256, 30, "Istio", "Root CA", None, ca.TokenTarget(uri, softhsm.pin.encode()))
    key = store.load_root_key(softhsm.pin.encode())
    assert isinstance(key, hsm.TokenKey)
    for attribute, expected in (("TOKEN", True), ("PRIVATE", True), ("SENSITIVE", True), ("EXTRACTABLE", False),
                                ("ALWAYS_SENSITIVE", True), ("NEVER_EXTRACTABLE", True), ("LOCAL", True)):
        assert key.private_attribute(attribute) is expected, attribute
    import pkcs11

    with pytest.raises(pkcs11.AttributeSensitive):
        key.private_attribute("VALUE")  # the private scalar cannot be read out


def test_crl_signed_by_token_key(store, softhsm: SoftHSM, monkeypatch):
    """CRLs go through signing.sign_crl: a token key signs them too."""
    monkeypatch.setenv("MESHPKI_PKCS11_MODULE", softhsm.module)
    uri = softhsm.uri(labels())
    ca.init_root(store, KeyType.RSA_2048, 30, "Istio", "Root CA", None, ca.TokenTarget(uri, softhsm.pin.encode()))
    key = store.load_root_key(softhsm.pin.encode())
    root = store.root_cert()
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(root.subject).last_update(now)
               .next_update(now + dt.timedelta(days=7))
               .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(42).revocation_date(now).build()))
    crl = signing.sign_crl(builder, key)
    assert crl.is_signature_valid(root.public_key())
    assert crl.get_revoked_certificate_by_serial_number(42) is not None
    assert crl.signature_algorithm_oid == root.signature_algorithm_oid


def test_rotate_and_rotate_root_from_file_root_to_token_root_and_back(cli, store_path, softhsm: SoftHSM, tmp_path):
    pw = {"MESHPKI_ROOT_PASSPHRASE": "file root A passphrase"}
    assert cli("init-root", "--key-type", "ecdsa-p256", env=pw).exit_code == 0
    assert cli("issue", "cluster1", "cluster2", env=pw).exit_code == 0
    assert cli("rotate", "cluster1", "--revoke-previous", env=pw).exit_code == 0  # the mesh now has CRLs

    # root B in the token; A's passphrase still proves who may rotate
    begun = cli("rotate-root", "begin", "--pkcs11", softhsm.uri(labels()), env={**pw, **softhsm.env()})
    assert begun.exit_code == 0, begun.output
    assert (store_path / "rotation" / ROOT_KEY_URI_FILE).is_file()
    # CRLs are signed by both roots: A's passphrase and B's PIN, each to its own key
    renewed = cli("crl", "renew", env={**pw, **softhsm.env()})
    assert renewed.exit_code == 0, renewed.output
    assert cli("rotate", "cluster2", "--revoke-previous", env={**pw, **softhsm.env()}).exit_code == 0
    # during the rotation B signs intermediates: only the PIN is needed
    reissued = cli("rotate-root", "reissue", env=softhsm.env())
    assert reissued.exit_code == 0, reissued.output
    store = Store(store_path)
    new_root = rotate.new_root_cert(store)[0]
    assert rotate.issued_by(store.load_bundle("cluster1"), new_root)
    assert cli("issue", "cluster3", env=softhsm.env()).exit_code == 0
    assert rotate.issued_by(store.load_bundle("cluster3"), new_root)
    finished = cli("rotate-root", "finish", "--force", env=softhsm.env())
    assert finished.exit_code == 0, finished.output
    assert (store_path / "root" / ROOT_KEY_URI_FILE).is_file() and not (store_path / "root" / ROOT_KEY_FILE).exists()
    archived = list((store_path / "history" / "roots").iterdir())
    assert len(archived) == 1 and (archived[0] / ROOT_KEY_FILE).is_file(), "root A (a file key) kept in history"
    assert cli("rotate", "cluster2", env=softhsm.env()).exit_code == 0
    assert cli("verify", env=softhsm.env()).exit_code == 0

    # and from the token root back to a file root C with its own passphrase
    new_pw = tmp_path / "new-pw"
    new_pw.write_text("root C passphrase, long enough\n")
    back = cli("rotate-root", "begin", "--new-passphrase-file", str(new_pw), env=softhsm.env())
    assert back.exit_code == 0, back.output
    assert (store_path / "rotation" / ROOT_KEY_FILE).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    again = cli("rotate-root", "reissue", env={"MESHPKI_ROOT_PASSPHRASE": "root C passphrase, long enough"})
    assert again.exit_code == 0, again.output
    assert cli("rotate-root", "finish", "--force").exit_code == 0
    assert cli("verify").exit_code == 0


def test_token_root_to_token_root_in_the_same_token(cli, store_path, softhsm: SoftHSM):
    """A and B both in one token: one login serves both keys."""
    assert cli("init-root", "--pkcs11", softhsm.uri(labels()), "--key-type", "ecdsa-p256",
               env=softhsm.env()).exit_code == 0
    assert cli("issue", "cluster1", env=softhsm.env()).exit_code == 0
    begun = cli("rotate-root", "begin", "--pkcs11", softhsm.uri(labels()), env=softhsm.env())
    assert begun.exit_code == 0, begun.output
    assert cli("rotate-root", "reissue", env=softhsm.env()).exit_code == 0
    assert cli("rotate-root", "finish", "--force").exit_code == 0
    assert cli("verify").exit_code == 0


def test_pin_from_file_and_never_in_output(cli, store_path, softhsm: SoftHSM, tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    env = {"MESHPKI_PKCS11_MODULE": softhsm.module}
    made = cli("init-root", "--pkcs11", softhsm.uri(labels()), "--key-type", "ecdsa-p256", "--pin-file",
               str(pin_file), "-o", "json", env=env)
    assert made.exit_code == 0, made.output
    issued = cli("issue", "cluster1", "--pin-file", str(pin_file), env=env)
    assert issued.exit_code == 0, issued.output
    assert softhsm.pin not in made.output + issued.output
    assert softhsm.pin not in "".join(p.read_text(errors="replace") for p in store_path.rglob("*") if p.is_file())
    no_pin = cli("issue", "cluster2", env=env)
    assert no_pin.exit_code == 1 and "MESHPKI_PKCS11_PIN" in one_line_error(no_pin)
    on_cli = cli("issue", "cluster2", "--pin", softhsm.pin, env=env)
    assert on_cli.exit_code == 2, "there is no way to put a PIN on the command line"


# -- every refusal: one line, nothing written ------------------------------------

def test_wrong_pin_is_one_line_and_writes_nothing(cli, store_path, softhsm: SoftHSM):
    label = labels()
    wrong = cli("init-root", "--pkcs11", softhsm.uri(label), env=softhsm.env(MESHPKI_PKCS11_PIN="0000-wrong"))
    assert wrong.exit_code == 1 and "PIN" in one_line_error(wrong)
    assert not (store_path / "root").exists()
    assert cli("init-root", "--pkcs11", softhsm.uri(label), "--key-type", "ecdsa-p256",
               env=softhsm.env()).exit_code == 0
    before = snapshot(store_path)
    refused = cli("issue", "cluster1", env=softhsm.env(MESHPKI_PKCS11_PIN="0000-wrong"))
    assert refused.exit_code == 1 and "wrong PIN" in one_line_error(refused)
    assert snapshot(store_path) == before


@pytest.mark.parametrize(("uri", "needle"), [
    ("pkcs11:token=no-such-token;object=x", "no PKCS#11 token matches token=no-such-token"),
])
def test_unknown_token_is_one_line(cli, store_path, softhsm: SoftHSM, uri, needle):
    result = cli("init-root", "--pkcs11", uri, env=softhsm.env())
    assert result.exit_code == 1 and needle in one_line_error(result)
    assert not store_path.exists() or not (store_path / "root").exists()


def test_missing_key_object_is_one_line_and_writes_nothing(cli, store_path, softhsm: SoftHSM):
    assert cli("init-root", "--pkcs11", softhsm.uri(labels()), "--key-type", "ecdsa-p256",
               env=softhsm.env()).exit_code == 0
    record = store_path / "root" / ROOT_KEY_URI_FILE
    record.write_text(softhsm.uri("a-key-that-is-not-there") + "\n")
    before = snapshot(store_path)
    result = cli("issue", "cluster1", env=softhsm.env())
    assert result.exit_code == 1 and "holds no private key object 'a-key-that-is-not-there'" in one_line_error(result)
    assert snapshot(store_path) == before


def test_existing_object_is_never_reused(cli, store_path, softhsm: SoftHSM, tmp_path):
    label = labels()
    assert cli("init-root", "--pkcs11", softhsm.uri(label), "--key-type", "ecdsa-p256",
               env=softhsm.env()).exit_code == 0
    other = tmp_path / "other-store"
    again = cli("init-root", "--pkcs11", softhsm.uri(label), "--store", str(other), env=softhsm.env())
    assert again.exit_code == 1 and f"already holds object {label!r}" in one_line_error(again)
    assert not (other / "root").exists()


def test_a_token_key_the_store_could_not_record_is_destroyed_again(cli, store_path, softhsm: SoftHSM,
                                                                     monkeypatch):
    """The key is made in the token before the store writes the root: if that
    write fails, no key pair may stay behind in the token, named by no store
    (and blocking a retry with the same label)."""
    from meshpki.errors import StoreError
    from meshpki.store import Store

    def full_disk(self, *args, **kwargs):
        raise StoreError(f"cannot write {self.root_dir}: No space left on device")

    label = labels()
    with monkeypatch.context() as patched:
        patched.setattr(Store, "write_root", full_disk)
        failed = cli("init-root", "--pkcs11", softhsm.uri(label), "--key-type", "ecdsa-p256", env=softhsm.env())
    assert failed.exit_code == 1 and "No space left on device" in failed.stderr.splitlines()[-1]
    assert not (store_path / "root").exists()
    retried = cli("init-root", "--pkcs11", softhsm.uri(label), "--key-type", "ecdsa-p256", env=softhsm.env())
    assert retried.exit_code == 0, retried.output  # the label is free again: nothing was left in the token

    with monkeypatch.context() as patched:  # the same for root B of a rotation
        patched.setattr(Store, "write_rotation", full_disk)
        b_label = labels()
        failed = cli("rotate-root", "begin", "--pkcs11", softhsm.uri(b_label), "--key-type", "ecdsa-p256",
                     env=softhsm.env())
    assert failed.exit_code == 1 and not store_path.joinpath("rotation").exists()
    began = cli("rotate-root", "begin", "--pkcs11", softhsm.uri(b_label), "--key-type", "ecdsa-p256",
                env=softhsm.env())
    assert began.exit_code == 0, began.output


@pytest.mark.parametrize(("module", "needle"), [
    ("/nonexistent/libpkcs11.so", "not found"),
    ("/etc/hostname", "is not a PKCS#11 module"),
])
def test_bad_module_is_one_line(cli, store_path, softhsm: SoftHSM, module, needle):
    result = cli("init-root", "--pkcs11", softhsm.uri(labels()), env=softhsm.env(MESHPKI_PKCS11_MODULE=module))
    assert result.exit_code == 1 and needle in one_line_error(result)
    assert not (store_path / "root").exists()


def test_a_library_that_is_not_pkcs11(softhsm: SoftHSM, tmp_path):
    """A real shared library without C_GetFunctionList (its own process: the module is loaded once)."""
    import ctypes.util

    libz = ctypes.util.find_library("z")
    candidates = [p for p in ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1") if
                  os.path.isfile(p)]
    if not candidates:
        pytest.skip(f"no libz shared object found to stand in for a non-PKCS#11 library ({libz})")
    result = run_meshpki(["init-root", "--pkcs11", softhsm.uri(labels()), "--store", str(tmp_path / "s")],
                         softhsm.env(MESHPKI_PKCS11_MODULE=candidates[0], SOFTHSM2_CONF=str(softhsm.conf)))
    assert result.returncode == 1
    assert "is not a PKCS#11 module" in result.stderr and "C_GetFunctionList" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_no_module_named(cli, store_path, softhsm: SoftHSM):
    result = cli("init-root", "--pkcs11", softhsm.uri(labels()), env={"MESHPKI_PKCS11_PIN": softhsm.pin})
    assert result.exit_code == 1 and "MESHPKI_PKCS11_MODULE" in one_line_error(result)


def test_module_path_in_the_uri(cli, store_path, softhsm: SoftHSM):
    uri = softhsm.uri(labels()) + f"?module-path={softhsm.module}"
    made = cli("init-root", "--pkcs11", uri, "--key-type", "ecdsa-p256", env={"MESHPKI_PKCS11_PIN": softhsm.pin})
    assert made.exit_code == 0, made.output
    assert cli("issue", "cluster1", env={"MESHPKI_PKCS11_PIN": softhsm.pin}).exit_code == 0


def test_token_that_cannot_make_the_key_type(softhsm: SoftHSM, tmp_path):
    # an RSA-only token (SoftHSM2 2.6 honours an allow-list; its "-" deny-list form is ignored)
    conf = softhsm.conf_with(tmp_path, "slots.mechanisms = CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_RSA_PKCS,CKM_SHA256_RSA_PKCS")
    store = tmp_path / "store"
    result = run_meshpki(["init-root", "--pkcs11", softhsm.uri(labels()), "--key-type", "ecdsa-p256",
                          "--store", str(store)], softhsm.env(SOFTHSM2_CONF=str(conf)))
    assert result.returncode == 1, result.stderr
    assert "cannot make ecdsa-p256 keys" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (store / "root").exists()


def test_token_without_hash_and_sign_mechanism_signs_with_plain_rsa_pkcs(softhsm: SoftHSM, tmp_path):
    """Tokens offering only CKM_RSA_PKCS get the DigestInfo built here; the result is the same profile."""
    conf = softhsm.conf_with(tmp_path, "slots.mechanisms = CKM_RSA_PKCS_KEY_PAIR_GEN,CKM_RSA_PKCS")
    store = tmp_path / "store"
    env = softhsm.env(SOFTHSM2_CONF=str(conf), MESHPKI_STORE=str(store))
    made = run_meshpki(["init-root", "--pkcs11", softhsm.uri(labels()), "--key-type", "rsa-2048"], env)
    assert made.returncode == 0, made.stderr
    probe = ("import os, sys\nfrom meshpki import hsm\nfrom pkcs11 import Mechanism\n"
             "key = hsm.open_key(hsm.TokenURI.parse(sys.argv[1]), os.environ['MESHPKI_PKCS11_PIN'].encode())\n"
             "print(Mechanism.SHA256_RSA_PKCS in key._mechanisms, Mechanism.RSA_PKCS in key._mechanisms)\n")
    uri = (store / "root" / ROOT_KEY_URI_FILE).read_text().strip()
    seen = subprocess.run([sys.executable, "-c", probe, uri], env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True)
    assert seen.stdout.split() == ["False", "True"], seen.stdout + seen.stderr
    assert run_meshpki(["issue", "cluster1"], env).returncode == 0
    root = Store(store).root_cert()
    root.verify_directly_issued_by(root)
    assert pkilint_findings(root.public_bytes(_pem())) == []
    assert run_meshpki(["verify"], env).returncode == 0


@pytest.mark.parametrize(("uri", "needle"), [
    ("pkcs11:token=meshpki;object=k?pin-value=1234", "never goes into the URI"),
    ("pkcs11:token=meshpki;objekt=k", "'objekt' is not supported"),
    ("pkcs11:token=meshpki", "must name the key"),
    ("pkcs11:token=meshpki;object=k;type=cert", "type=cert"),
    ("token=meshpki;object=k", "not a PKCS#11 URI"),
    ("pkcs11:token=meshpki;object=k;slot-id=abc", "slot-id must be a number"),
])
def test_bad_uri_is_a_usage_error(cli, store_path, uri, needle):
    result = cli("init-root", "--pkcs11", uri, env={"MESHPKI_PKCS11_PIN": "whatever"})
    assert result.exit_code == 2 and needle in one_line_error(result)
    assert not store_path.exists() or not (store_path / "root").exists()


def test_uri_round_trip():
    uri = hsm.TokenURI.parse("pkcs11:token=My%20Token;object=mesh-root;id=%01%ff?module-path=/usr/lib/x.so")
    assert (uri.token, uri.object, uri.id, uri.module_path) == ("My Token", "mesh-root", b"\x01\xff", "/usr/lib/x.so")
    assert hsm.TokenURI.parse(str(uri)) == uri
    with pytest.raises(InputError):
        hsm.TokenURI.parse("pkcs11:object=a;object=b")


def test_file_root_never_imports_pkcs11(tmp_path):
    """File-root users pay nothing: the PKCS#11 binding is imported only for a token root."""
    code = ("import sys\nfrom meshpki.cli import cli\n"
            "for argv in (['init-root', '--insecure-no-passphrase', '--key-type', 'ecdsa-p256'],"
            " ['issue', 'cluster1'], ['verify'], ['rotate', 'cluster1']):\n"
            "    try:\n        cli.main(argv, prog_name='meshpki', standalone_mode=False)\n"
            "    except SystemExit:\n        pass\n"
            "print(sorted(m for m in sys.modules if m == 'meshpki.hsm' or m.split('.')[0] in ('pkcs11', 'asn1crypto')))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPKI_")}
    env.update(MESHPKI_STORE=str(tmp_path / "store"), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_csr_sign_complete_and_revoke_with_a_token_root(cli, store_path, softhsm: SoftHSM, tmp_path):
    """A site's key never travels, the root's never exists outside the token: sign and CRLs go through it."""
    assert cli("init-root", "--pkcs11", softhsm.uri(labels()), "--key-type", "ecdsa-p256",
               env=softhsm.env()).exit_code == 0
    assert cli("issue", "cluster1", "cluster3", env=softhsm.env()).exit_code == 0
    site, req, signed = tmp_path / "site", tmp_path / "cluster2.csr", tmp_path / "signed"
    made = cli("csr", "cluster2", "--key-type", "ecdsa-p256", "--out", str(req), env={"MESHPKI_STORE": str(site)})
    assert made.exit_code == 0, made.output
    no_pin = cli("sign", str(req), "--out", str(signed))
    assert no_pin.exit_code == 1 and "MESHPKI_PKCS11_PIN" in one_line_error(no_pin)
    assert not signed.exists()
    done = cli("sign", str(req), "--out", str(signed), env=softhsm.env())
    assert done.exit_code == 0, done.output
    completed = cli("complete", "cluster2", str(signed), env={"MESHPKI_STORE": str(site)})
    assert completed.exit_code == 0, completed.output
    cert = parse_certs((site / "clusters" / "cluster2" / "ca-cert.pem").read_bytes(), "ca-cert.pem")[0]
    cert.verify_directly_issued_by(Store(store_path).root_cert())
    assert pkilint_findings(cert.public_bytes(_pem())) == []

    revoked = cli("revoke", "cluster3", env=softhsm.env())
    assert revoked.exit_code == 0, revoked.output
    crl_pem = (store_path / "clusters" / "cluster1" / "ca-crl.pem").read_bytes()
    crls = [x509.load_pem_x509_crl(b"-----BEGIN X509 CRL-----" + block) for block in
            crl_pem.split(b"-----BEGIN X509 CRL-----")[1:]]
    root = Store(store_path).root_cert()
    by_root = [c for c in crls if c.issuer == root.subject]
    assert len(by_root) == 1 and by_root[0].is_signature_valid(root.public_key())
    assert cli("verify", env=softhsm.env()).exit_code == 0


def test_pin_prompt_on_a_terminal_is_not_echoed(store_path, softhsm: SoftHSM):
    env = {"MESHPKI_PKCS11_MODULE": softhsm.module, "SOFTHSM2_CONF": str(softhsm.conf), "MESHPKI_STORE": str(store_path)}
    code, screen = on_a_terminal(["init-root", "--pkcs11", softhsm.uri(labels()), "--key-type", "ecdsa-p256"],
                                  env, [softhsm.pin])
    assert code == 0, screen
    assert "PKCS#11 token user PIN" in screen and softhsm.pin not in screen
    code, screen = on_a_terminal(["issue", "cluster1"], env, ["not-the-pin"])
    assert code == 1 and "wrong PIN" in screen and "not-the-pin" not in screen


def test_whole_workflow_to_push_with_the_key_only_in_the_token(cli, store_path, softhsm: SoftHSM, kube_api,
                                                               kubeconfig):
    """What issue 13 promises: init-root to push and audit, the root key never in a file."""
    assert cli("init-root", "--pkcs11", softhsm.uri(labels()), "--key-type", "ecdsa-p256",
               env=softhsm.env()).exit_code == 0
    assert cli("issue", "cluster1", "cluster2", env=softhsm.env()).exit_code == 0
    for cluster in ("cluster1", "cluster2"):
        pushed = cli("push", cluster, "--context", cluster, "--kubeconfig", str(kubeconfig))
        assert pushed.exit_code == 0, pushed.output
        live = kube_api.cluster(cluster).get_secret("istio-system", "cacerts")
        assert live is not None and "root-key.pem" not in live["data"]
    verified = cli("verify", "--context", "cluster1", "--context", "cluster2", "--kubeconfig", str(kubeconfig))
    assert verified.exit_code == 0, verified.output
    assert not list(store_path.rglob("root-key.pem"))
