"""Bring your own PKI end to end: csr / sign / complete, and adopting a CA
(Istio's Makefile root, an intermediate under a corporate root, istiod's own
self-signed root from a live cluster)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from freezegun import freeze_time

from meshpki.bundle import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, parse_certs
from meshpki.keys import KeyType, is_encrypted_pem, to_pem
from meshpki.pem import read_crls
from tests import factories as f
from tests.conftest import one_line_error, snapshot

INSECURE = "--insecure-no-passphrase"
PASSPHRASE = {"MESHPKI_ROOT_PASSPHRASE": "correct horse battery staple"}


@pytest.fixture
def root_store(cli, tmp_path):
    """The root holder: an ECDSA root and one cluster it issued itself."""
    root = tmp_path / "root-holder"
    for args in (("init-root", INSECURE, "--key-type", "ecdsa-p256"), ("issue", "cluster1")):
        result = cli(*args, env={"MESHPKI_STORE": str(root)})
        assert result.exit_code == 0, result.output
    return root


def at(path: Path) -> dict[str, str]:
    return {"MESHPKI_STORE": str(path)}


def make_request(cli, site: Path, out: Path, cluster: str = "cluster2", *extra: str) -> None:
    result = cli("csr", cluster, "--key-type", "ecdsa-p256", "--out", str(out), *extra, env=at(site))
    assert result.exit_code == 0, result.output


# -- csr / sign / complete ---------------------------------------------------------------

def test_site_key_never_travels_and_the_pair_verifies(cli, root_store, tmp_path):
    site, req, signed = tmp_path / "site", tmp_path / "cluster2.csr", tmp_path / "signed"
    make_request(cli, site, req)
    pending_key = (site / "pending" / "cluster2" / CA_KEY).read_bytes()
    assert (site / "pending" / "cluster2" / CA_KEY).stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in req.read_bytes()

    result = cli("sign", str(req), "--out", str(signed), "-o", "json", env=at(root_store))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cluster"] == "cluster2"  # read from the request's L=
    assert sorted(p.name for p in signed.iterdir()) == [CA_CERT, CERT_CHAIN, ROOT_CERT]
    # the root holder keeps an inventory, never a key, never a member bundle
    inventory = root_store / "signed" / "cluster2"
    assert sorted(p.name for p in inventory.iterdir()) == [CA_CERT, CERT_CHAIN, ROOT_CERT]
    assert not (root_store / "clusters" / "cluster2").exists()
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in root_store.rglob("*") if p.is_file()
                   and "root" not in p.parts[-2:] and p.parent.name != "cluster1")

    result = cli("complete", "cluster2", str(signed), env=at(site))
    assert result.exit_code == 0, result.output
    bundle = site / "clusters" / "cluster2"
    assert (bundle / CA_KEY).read_bytes() == pending_key
    assert (bundle / CA_KEY).stat().st_mode & 0o777 == 0o600
    assert not (site / "pending" / "cluster2").exists()

    # the profile is meshpki's: pathlen 0, the istiod SAN, signed by the root
    cert = parse_certs((bundle / CA_CERT).read_bytes(), "ca-cert")[0]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]

    # a site-completed bundle and a root-holder-issued one make a sound pair
    verify = cli("verify", str(root_store / "clusters" / "cluster1"), str(bundle))
    assert verify.exit_code == 0, verify.output
    assert "0 error(s)" in verify.output
    assert cli("verify", "cluster2", env=at(site)).exit_code == 0


def test_rotating_a_site_cluster_is_csr_sign_complete_again(cli, root_store, tmp_path):
    site = tmp_path / "site"
    for round_ in (1, 2):
        req, signed = tmp_path / f"r{round_}.csr", tmp_path / f"signed{round_}"
        make_request(cli, site, req)
        assert cli("sign", str(req), "--out", str(signed), env=at(root_store)).exit_code == 0
        result = cli("complete", "cluster2", str(signed), env=at(site))
        assert result.exit_code == 0, result.output
    assert "previous bundle archived" in result.output
    assert len(list((site / "history" / "clusters" / "cluster2").iterdir())) == 1


def test_a_pending_request_is_not_replaced_without_force(cli, tmp_path):
    site = tmp_path / "site"
    make_request(cli, site, tmp_path / "a.csr")
    first = (site / "pending" / "cluster2" / CA_KEY).read_bytes()
    result = cli("csr", "cluster2", "--key-type", "ecdsa-p256", "--out", str(tmp_path / "b.csr"), env=at(site))
    assert result.exit_code == 1
    assert "already pending" in one_line_error(result)
    assert (site / "pending" / "cluster2" / CA_KEY).read_bytes() == first
    make_request(cli, site, tmp_path / "b.csr", "cluster2", "--force")
    assert (site / "pending" / "cluster2" / CA_KEY).read_bytes() != first


def _csr(key, subject: x509.Name) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _cluster_name(cluster: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Istio"),
                      x509.NameAttribute(NameOID.LOCALITY_NAME, cluster),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Intermediate CA")])


def _tampered(pem: bytes) -> bytes:
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


BAD_REQUESTS = {
    "garbage": (lambda: b"hello\n", "not a PEM certificate request"),
    "cut-off": (lambda: _csr(f.pooled_key(), _cluster_name("cluster3"))[:200], "not a readable certificate request"),
    "bad-signature": (lambda: _tampered(_csr(f.pooled_key(), _cluster_name("cluster3"))), "signature"),
    "rsa-1024": (lambda: _csr(rsa.generate_private_key(65537, 1024), _cluster_name("cluster3")), "RSA-1024"),
    "p-521": (lambda: _csr(ec.generate_private_key(ec.SECP521R1()), _cluster_name("cluster3")), "secp521r1"),
    "not-a-label": (lambda: _csr(f.pooled_key(), _cluster_name("Cluster_3")), "DNS-1123"),
    "no-cluster": (lambda: _csr(f.pooled_key(), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])),
                   "--cluster"),
    # cryptography would read the first request alone, and sign it
    "two-requests": (lambda: _csr(f.pooled_key(), _cluster_name("cluster3"))
                     + _csr(f.pooled_key(slot=1), _cluster_name("cluster4")),
                     "holds 2 PEM blocks, not one certificate request (block 2 is a CERTIFICATE REQUEST); pass one"),
    "damaged-tail": (lambda: _csr(f.pooled_key(), _cluster_name("cluster3")) + b"-----BEGIN X-----\n!!\n-----END X-----\n",
                     "holds 1 damaged PEM block(s) beside the certificate request"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_a_bad_request_is_refused_and_nothing_is_written(cli, root_store, tmp_path, case):
    make, expected = BAD_REQUESTS[case]
    req, out = tmp_path / "bad.csr", tmp_path / "out"
    req.write_bytes(make())
    before = snapshot(root_store)
    result = cli("sign", str(req), "--out", str(out), env=at(root_store))
    assert result.exit_code == 2, result.output
    assert expected in one_line_error(result)
    assert snapshot(root_store) == before
    assert not out.exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_a_sha1_request_is_refused_for_its_hash_not_as_damaged(cli, root_store, tmp_path):
    key, req, out = tmp_path / "k.pem", tmp_path / "sha1.csr", tmp_path / "out"  # cryptography cannot sign SHA-1
    key.write_bytes(to_pem(ec.generate_private_key(ec.SECP256R1())))
    subprocess.run(["openssl", "req", "-new", "-key", str(key), "-sha1", "-subj", "/O=Istio/CN=x/L=cluster3",
                    "-out", str(req)], check=True, capture_output=True)
    before = snapshot(root_store)
    result = cli("sign", str(req), "--out", str(out), env=at(root_store))
    assert result.exit_code == 2
    assert "is signed with SHA-1, which meshpki refuses" in one_line_error(result)
    assert snapshot(root_store) == before and not out.exists()


def test_sign_refuses_a_cluster_name_given_badly(cli, root_store, tmp_path):
    req = tmp_path / "ok.csr"
    req.write_bytes(_csr(f.pooled_key(), _cluster_name("cluster3")))
    result = cli("sign", str(req), "--cluster", "Bad_Name", "--out", str(tmp_path / "o"), env=at(root_store))
    assert result.exit_code == 2 and "invalid cluster name" in one_line_error(result)


def test_complete_refuses_a_certificate_for_another_key(cli, root_store, tmp_path):
    site, other = tmp_path / "site", tmp_path / "other"
    make_request(cli, site, tmp_path / "mine.csr")
    make_request(cli, other, tmp_path / "theirs.csr")
    assert cli("sign", str(tmp_path / "theirs.csr"), "--out", str(tmp_path / "s"), env=at(root_store)).exit_code == 0
    before = snapshot(site)
    result = cli("complete", "cluster2", str(tmp_path / "s"), env=at(site))
    assert result.exit_code == 1
    assert "does not carry cluster2's pending key" in one_line_error(result)
    assert snapshot(site) == before


def test_complete_refuses_a_chain_to_another_root_and_missing_files(cli, root_store, tmp_path):
    site, signed = tmp_path / "site", tmp_path / "signed"
    make_request(cli, site, tmp_path / "r.csr")
    assert cli("sign", str(tmp_path / "r.csr"), "--out", str(signed), env=at(root_store)).exit_code == 0
    before = snapshot(site)
    good_roots = (signed / ROOT_CERT).read_bytes()
    (signed / ROOT_CERT).write_bytes(f.pem(f.make_root("Other Root", slot=5)))
    result = cli("complete", "cluster2", str(signed), env=at(site))
    assert result.exit_code == 1 and "does not lead to a root" in one_line_error(result)
    (signed / ROOT_CERT).write_bytes(good_roots)
    (signed / CERT_CHAIN).unlink()
    result = cli("complete", "cluster2", str(signed), env=at(site))
    assert result.exit_code == 2 and "cert-chain.pem is missing" in one_line_error(result)
    assert snapshot(site) == before


def test_complete_without_a_pending_request(cli, tmp_path):
    result = cli("complete", "cluster9", str(tmp_path), env=at(tmp_path / "site"))
    assert result.exit_code == 1 and "no pending request" in one_line_error(result)


# -- adopting an existing CA ----------------------------------------------------------------

def _write_ca(folder: Path, authority: f.Authority) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.pem").write_bytes(authority.cert_pem)
    (folder / "ca.key").write_bytes(to_pem(authority.key))
    return folder / "ca.pem", folder / "ca.key"


def test_adopting_istios_makefile_root_lets_both_kinds_of_cluster_trust_each_other(cli, store_path, tmp_path):
    makefile_bundle, makefile_root = f.istio_makefile_bundle("cluster1")
    cert, key = _write_ca(tmp_path / "makefile", makefile_root)
    result = cli("init-root", "--import-cert", str(cert), "--import-key", str(key), env=PASSPHRASE)
    assert result.exit_code == 0, result.output
    assert "adopted root CA" in result.output
    assert is_encrypted_pem((store_path / "root" / "root-key.pem").read_bytes())  # never kept in plaintext
    assert cli("issue", "cluster2", "--key-type", "ecdsa-p256", env=PASSPHRASE).exit_code == 0
    makefile_cluster = f.write_folder(tmp_path / "makefile-cluster1", makefile_bundle)
    verify = cli("verify", "cluster2", str(makefile_cluster))
    assert verify.exit_code == 0, verify.output


def test_a_root_that_may_not_sign_crls_is_warned_of_and_refuses_to_revoke(cli, store_path, tmp_path):
    # Istio's Makefile root has no cRLSign: istiod would refuse every CRL it signed
    _, makefile_root = f.istio_makefile_bundle("cluster1")
    cert, key = _write_ca(tmp_path / "makefile", makefile_root)
    result = cli("init-root", "--import-cert", str(cert), "--import-key", str(key), env=PASSPHRASE)
    assert result.exit_code == 0, result.output
    assert "may not sign CRLs" in result.stderr and "rotate-root begin" in result.stderr
    for name in ("cluster2", "cluster3"):
        assert cli("issue", name, "--key-type", "ecdsa-p256", env=PASSPHRASE).exit_code == 0
    before = snapshot(store_path)
    for args in (("revoke", "cluster3"), ("rotate", "cluster2", "--revoke-previous")):
        result = cli(*args, env=PASSPHRASE)
        assert result.exit_code == 1, result.output
        assert "may not sign CRLs (its keyUsage lacks cRLSign)" in one_line_error(result)
        assert snapshot(store_path) == before
    assert cli("verify", "--all").exit_code == 0  # nothing half-done: every bundle still sound


def _corporate_chain() -> tuple[f.Authority, f.Authority, f.Authority]:
    """A corporate root, an issuing CA under it, and the mesh CA meshpki adopts."""
    corp = f.make_root("Corp Root", slot=60)
    issuing = f.make_intermediate(corp, "issuing", slot=61, path_length=None, subject=f._name("Corp Issuing"))
    mesh = f.make_intermediate(issuing, "mesh", slot=62, path_length=1, subject=f._name("Mesh CA"))
    return corp, issuing, mesh


def test_adopting_an_intermediate_makes_bundles_chain_to_the_corporate_root(cli, store_path, tmp_path):
    corp, issuing, mesh = _corporate_chain()
    cert, key = _write_ca(tmp_path / "mesh", mesh)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(f.pem(issuing, corp))
    result = cli("init-root", INSECURE, "--import-cert", str(cert), "--import-key", str(key),
                 "--import-chain", str(chain), "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "intermediate mesh CA"
    assert cli("issue", "cluster1", "cluster2").exit_code == 0
    folder = store_path / "clusters" / "cluster1"
    chain_certs = parse_certs((folder / CERT_CHAIN).read_bytes(), "chain")
    assert [c.subject for c in chain_certs[1:]] == [mesh.cert.subject, issuing.cert.subject, corp.cert.subject]
    assert (folder / ROOT_CERT).read_bytes() == corp.cert_pem
    verify = cli("verify", "cluster1", "cluster2")
    assert verify.exit_code == 0, verify.output
    if f.openssl_available():  # an independent verifier agrees
        done = subprocess.run(["openssl", "verify", "-CAfile", ROOT_CERT, "-untrusted", CERT_CHAIN, CA_CERT],
                              cwd=folder, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr


def _bad_imports(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    corp, issuing, mesh = _corporate_chain()
    root = f.make_root("Root", slot=70)
    other = f.make_root("Other", slot=71)
    leaf_key = f.pooled_key(slot=72)
    pathlen0 = f.make_intermediate(corp, "x", slot=73, path_length=0)
    files = {
        "root.pem": root.cert_pem, "root.key": to_pem(root.key), "other.key": to_pem(other.key),
        "mesh.pem": mesh.cert_pem, "mesh.key": to_pem(mesh.key), "chain.pem": f.pem(issuing, corp),
        "broken-chain.pem": f.pem(corp, issuing), "no-root-chain.pem": f.pem(issuing),
        "leaf.pem": f.cert_to_pem(f.make_cert("leaf", leaf_key, root, ca=False)), "leaf.key": to_pem(leaf_key),
        "expired.pem": f.cert_to_pem(f.make_cert("Old", root.key, None, not_before=f.days_from_now(-30),
                                                 days=10)),
        "pathlen0.pem": pathlen0.cert_pem, "pathlen0.key": pathlen0.key_pem,
        "weak.pem": b"", "weak.key": b"",
    }
    weak_key = rsa.generate_private_key(65537, 1024)
    files["weak.pem"] = f.cert_to_pem(f.make_cert("Weak", weak_key, None))  # type: ignore[arg-type]
    files["weak.key"] = to_pem(weak_key)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    def args(cert: str, key: str, chain: str | None = None) -> list[str]:
        extra = ["--import-chain", str(tmp_path / chain)] if chain else []
        return ["--import-cert", str(tmp_path / cert), "--import-key", str(tmp_path / key), *extra]

    return {
        "key-mismatch": (args("root.pem", "other.key"), "does not match"),
        "not-a-ca": (args("leaf.pem", "leaf.key"), "not a CA certificate"),
        "expired": (args("expired.pem", "root.key"), "not valid now"),
        "needs-chain": (args("mesh.pem", "mesh.key"), "--import-chain"),
        "broken-chain": (args("mesh.pem", "mesh.key", "broken-chain.pem"), "chain is broken"),
        "chain-without-root": (args("mesh.pem", "mesh.key", "no-root-chain.pem"), "not a self-signed root"),
        "pathlen-0": (args("pathlen0.pem", "pathlen0.key", "chain.pem"), "pathlen:0"),
        "weak-key": (args("weak.pem", "weak.key"), "RSA-1024"),
        "root-with-chain": (args("root.pem", "root.key", "chain.pem"), "needs no --import-chain"),
        "half": (["--import-cert", str(tmp_path / "root.pem")], "both --import-cert and --import-key"),
    }


def test_bad_imports_are_refused_and_leave_no_store(cli, store_path, tmp_path):
    for case, (args, expected) in _bad_imports(tmp_path).items():
        result = cli("init-root", INSECURE, *args)
        assert result.exit_code in (1, 2), (case, result.output)
        assert expected in one_line_error(result), case
        assert not (store_path / "root").exists(), case


def test_import_refuses_an_existing_root(cli, store_path, tmp_path):
    assert cli("init-root", INSECURE, "--key-type", "ecdsa-p256").exit_code == 0
    cert, key = _write_ca(tmp_path / "ca", f.make_root("Another", slot=74))
    before = snapshot(store_path)
    result = cli("init-root", INSECURE, "--import-cert", str(cert), "--import-key", str(key))
    assert result.exit_code == 1 and "already has a root" in one_line_error(result)
    assert snapshot(store_path) == before


# -- adopting istiod's self-signed root from a live cluster ----------------------------------

def _istiod_self_signed() -> f.Authority:
    """What istiod makes for itself: O=cluster.local, CA:TRUE, keyCertSign, 10 years."""
    key = f.pooled_key(KeyType.ECDSA_P256, slot=80)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    return f.Authority(f.make_cert(name, key, None, days=3650), key)


def test_adopt_istiods_root_from_a_live_cluster(cli, store_path, kube_api, kubeconfig):
    istiod = _istiod_self_signed()
    kube_api.cluster("cluster1").put_secret(
        "istio-system", "istio-ca-secret", type="istio.io/ca-root",
        data={CA_CERT: istiod.cert_pem, CA_KEY: to_pem(istiod.key), ROOT_CERT: istiod.cert_pem,
              CERT_CHAIN: b""})
    result = cli("init-root", "--import-from-context", "cluster1", "--kubeconfig", str(kubeconfig),
                 env=PASSPHRASE)
    assert result.exit_code == 0, result.output
    assert (store_path / "root" / "root-cert.pem").read_bytes() == istiod.cert_pem
    assert cli("issue", "cluster1", "cluster2", env=PASSPHRASE).exit_code == 0
    # workloads istiod already signed stay trusted: the bundles' root is istiod's root, byte for byte
    assert (store_path / "clusters" / "cluster1" / ROOT_CERT).read_bytes() == istiod.cert_pem
    assert kube_api.cluster("cluster1").writes == []  # adopting only reads
    verify = cli("verify", "cluster1", "cluster2")
    assert verify.exit_code == 0, verify.output


@pytest.mark.parametrize(("context", "expected"), [
    ("cluster2", "istio-ca-secret does not exist"),  # no secret there
    ("badtoken", "401"),
    ("down", "context down"),
    ("nosuch", "nosuch"),
])
def test_adopt_from_context_errors_are_one_line(cli, store_path, kube_api, kubeconfig, context, expected):
    kube_api.cluster("cluster1").put_secret("istio-system", "istio-ca-secret", data={CA_CERT: b"x"})
    result = cli("init-root", INSECURE, "--import-from-context", context, "--kubeconfig", str(kubeconfig),
                 "--timeout", "3")
    assert result.exit_code in (1, 2), result.output
    assert expected in one_line_error(result)
    assert not (store_path / "root").exists()


def test_adopt_from_a_secret_that_is_not_istiods(cli, store_path, kube_api, kubeconfig):
    kube_api.cluster("cluster1").put_secret("istio-system", "istio-ca-secret", data={CA_CERT: b"x"})
    result = cli("init-root", INSECURE, "--import-from-context", "cluster1", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 1 and "has no ca-key.pem" in one_line_error(result)


def test_rotate_root_refuses_an_adopted_intermediate(cli, store_path, tmp_path):
    corp, issuing, mesh = _corporate_chain()
    cert, key = _write_ca(tmp_path / "mesh", mesh)
    (tmp_path / "chain.pem").write_bytes(f.pem(issuing, corp))
    assert cli("init-root", INSECURE, "--import-cert", str(cert), "--import-key", str(key),
               "--import-chain", str(tmp_path / "chain.pem")).exit_code == 0
    assert cli("issue", "cluster1").exit_code == 0
    before = snapshot(store_path)
    result = cli("rotate-root", "begin")
    assert result.exit_code == 1 and "adopted intermediate" in one_line_error(result)
    assert snapshot(store_path) == before
    assert cli("rotate", "cluster1").exit_code == 0  # cluster CAs still rotate under the mesh CA
    # a site it signed trusts the corporate root, as every bundle of this store does: nothing for it to do
    make_request(cli, tmp_path / "site", tmp_path / "r.csr")
    assert cli("sign", str(tmp_path / "r.csr"), "--out", str(tmp_path / "signed")).exit_code == 0
    sites = json.loads(cli("rotate-root", "status", "-o", "json").stdout)["sites"]
    assert [(s["cluster"], s["issuer"], s["next"]) for s in sites] == [("cluster2", "root", None)]


def test_a_site_completed_bundle_pushes(cli, root_store, tmp_path, kube_api, kubeconfig):
    site, signed = tmp_path / "site", tmp_path / "signed"
    make_request(cli, site, tmp_path / "r.csr")
    assert cli("sign", str(tmp_path / "r.csr"), "--out", str(signed), env=at(root_store)).exit_code == 0
    assert cli("complete", "cluster2", str(signed), env=at(site)).exit_code == 0
    result = cli("push", "cluster2", "--context", "cluster2", "--kubeconfig", str(kubeconfig), env=at(site))
    assert result.exit_code == 0, result.output
    live = kube_api.cluster("cluster2").get_secret("istio-system", "cacerts")
    assert live["data"][CA_CERT] == (site / "clusters" / "cluster2" / CA_CERT).read_bytes()


def test_the_root_holder_audits_what_it_signed(cli, root_store, tmp_path):
    req = tmp_path / "r.csr"
    make_request(cli, tmp_path / "site", req)
    assert cli("sign", str(req), "--out", str(tmp_path / "s"), "--days", "20", env=at(root_store)).exit_code == 0
    result = cli("audit", "-o", "json", env=at(root_store))
    rows = [r for r in json.loads(result.stdout)["rows"] if r["source"] == "signed"]
    assert [(r["cluster"], r["role"], r["grade"]) for r in rows] == [("cluster2", "intermediate", "WARNING")]
    assert result.exit_code == 1  # WARNING: due within --warn-days 30


def test_revocation_reaches_site_clusters_and_evicts_them(cli, root_store, tmp_path):
    # the mesh has revoked something: every bundle, a site's too, must carry CRLs istiod accepts
    assert cli("issue", "cluster4", env=at(root_store)).exit_code == 0
    assert cli("revoke", "cluster4", env=at(root_store)).exit_code == 0
    site, signed = tmp_path / "site", tmp_path / "signed"
    make_request(cli, site, tmp_path / "r.csr")
    assert cli("sign", str(tmp_path / "r.csr"), "--out", str(signed), env=at(root_store)).exit_code == 0
    assert (signed / "ca-crl.pem").is_file()
    assert cli("complete", "cluster2", str(signed), env=at(site)).exit_code == 0
    bundle = site / "clusters" / "cluster2"
    crls, error = read_crls((bundle / "ca-crl.pem").read_bytes())
    assert error is None
    chain = parse_certs((bundle / CERT_CHAIN).read_bytes(), "chain")
    # istiod's rule: a CRL signed by every certificate of cert-chain.pem
    for cert in chain:
        assert any(c.issuer == cert.subject and c.is_signature_valid(cert.public_key()) for c in crls)
    member = root_store / "clusters" / "cluster1"
    verify = cli("verify", str(member), str(bundle))
    assert verify.exit_code == 0, verify.output

    # evicting the site cluster: its CA goes on the root CRL, its inventory copy to history
    serial = parse_certs((bundle / CA_CERT).read_bytes(), "ca")[0].serial_number
    result = cli("revoke", "cluster2", env=at(root_store))
    assert result.exit_code == 0, result.output
    assert not (root_store / "signed" / "cluster2").exists()
    assert (root_store / "history" / "signed" / "cluster2").is_dir()
    member_crls, _ = read_crls((member / "ca-crl.pem").read_bytes())
    assert any(c.get_revoked_certificate_by_serial_number(serial) is not None for c in member_crls)
    verify = cli("verify", str(member), str(bundle), "-o", "json")
    assert verify.exit_code == 1
    codes = {f["code"] for p in json.loads(verify.stdout)["pairs"] for f in p["findings"]}
    assert "peer-revoked" in codes
    again = cli("revoke", "cluster2", env=at(root_store))
    assert again.exit_code == 1 and "already revoked" in one_line_error(again)


@pytest.mark.parametrize(("extra", "needle"), [
    (("--san-dns", "bad!!"), "--san-dns 'bad!!' is not a DNS name"),
    (("--san-dns", ""), "is not a DNS name"),
    (("--org", "o" * 65), "--org is 65 characters"),
    (("--org", "Acme\x1b[2J"), "control characters"),
])
def test_csr_checks_its_names_before_any_key_is_made(cli, tmp_path, extra, needle):
    site = tmp_path / "site"
    out = tmp_path / "req.csr"
    result = cli("csr", "cluster2", "--key-type", "rsa-4096", "--out", str(out), *extra, env=at(site))
    assert result.exit_code == 2 and needle in one_line_error(result)
    assert "generating" not in result.output
    assert not out.exists() and not site.exists(), "no key, no request, no store folder"


def test_sign_checks_san_dns_before_anything_is_written(cli, root_store, tmp_path):
    req, out = tmp_path / "ok.csr", tmp_path / "out"
    req.write_bytes(_csr(f.pooled_key(), _cluster_name("cluster3")))
    before = snapshot(root_store)
    result = cli("sign", str(req), "--san-dns", "not a name", "--out", str(out), env=at(root_store))
    assert result.exit_code == 2 and "is not a DNS name" in one_line_error(result)
    assert snapshot(root_store) == before and not out.exists()


# -- a site's CRLs: crl export at the root holder, crl refresh at the site -------------------

def site_cluster(cli, root_store: Path, tmp_path: Path, cluster: str = "cluster2") -> Path:
    """A cluster completed at its own site from a request the root holder signed; its bundle folder."""
    site, req, signed = tmp_path / "site", tmp_path / f"{cluster}.csr", tmp_path / f"signed-{cluster}"
    make_request(cli, site, req, cluster)
    assert cli("sign", str(req), "--out", str(signed), env=at(root_store)).exit_code == 0
    assert cli("complete", cluster, str(signed), env=at(site)).exit_code == 0
    return site / "clusters" / cluster


def crl_numbers(data: bytes) -> dict[str, int]:
    from meshpki.crl import crl_number

    crls, error = read_crls(data)
    assert error is None
    return {c.issuer.rfc4514_string(): crl_number(c) for c in crls}


def test_a_site_refreshes_its_crls_with_no_new_key(cli, root_store, tmp_path):
    bundle = site_cluster(cli, root_store, tmp_path)  # completed before the mesh revoked anything
    site, exported = bundle.parent.parent, tmp_path / "cluster2-crl.pem"
    assert not (bundle / "ca-crl.pem").exists()
    kept = {name: (bundle / name).read_bytes() for name in (CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT)}
    assert cli("issue", "cluster4", env=at(root_store)).exit_code == 0
    revoked = cli("revoke", "cluster4", env=at(root_store))
    assert revoked.exit_code == 0 and "for each of cluster2" in revoked.stderr  # the root holder is told
    member = root_store / "clusters" / "cluster1"

    older = tmp_path / "older.pem"
    for number in (1, 2):  # the first revocation, then a renewal
        if number == 2:
            older.write_bytes(exported.read_bytes())
            renewed = cli("crl", "renew", "--days", "30", env=at(root_store))
            assert renewed.exit_code == 0 and "meshpki crl export SITE" in renewed.stderr
        result = cli("crl", "export", "cluster2", "--out", str(exported), env=at(root_store))
        assert result.exit_code == 0, result.output
        assert "meshpki crl refresh cluster2" in result.output
        assert crl_numbers(exported.read_bytes()) == {"CN=Root CA,O=Istio": number}
        result = cli("crl", "refresh", "cluster2", str(exported), "-o", "json", env=at(site))
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert (data["changed"], data["crl_number"]) == (True, number)
        held = (bundle / "ca-crl.pem").read_bytes()
        assert held.startswith(exported.read_bytes())  # the roots' CRLs as signed, then the site's own
        assert crl_numbers(held) == {"CN=Root CA,O=Istio": number, "CN=Intermediate CA,L=cluster2,O=Istio": number}
        assert {n: (bundle / n).read_bytes() for n in kept} == kept  # no new key, no new certificate
        assert (bundle / "ca-crl.pem").stat().st_mode & 0o777 == 0o644
        verify = cli("verify", str(member), str(bundle))
        assert verify.exit_code == 0, verify.output

    # the site's own view of its CRLs, and the wrong tool refused with the right one named
    shown = cli("crl", "show", "-o", "json", env=at(site))
    assert shown.exit_code == 0 and not json.loads(shown.stdout)["active"]
    assert {(c["where"], c["number"]) for c in json.loads(shown.stdout)["crls"]} == {
        ("cluster2", 2), ("root, in cluster2's ca-crl.pem", 2)}
    assert "meshpki crl refresh" in cli("crl", "show", env=at(site)).stdout
    renew = cli("crl", "renew", env=at(site))
    assert renew.exit_code == 2 and "holds no root" in one_line_error(renew) and "crl export" in renew.output

    # the same file again changes nothing; an older one is refused and changes nothing
    before = snapshot(site)
    again = cli("crl", "refresh", "cluster2", str(exported), env=at(site))
    assert again.exit_code == 0 and "nothing changed" in again.output
    result = cli("crl", "refresh", "cluster2", str(older), env=at(site))
    assert result.exit_code == 1
    assert "is number 1, older than number 2 that cluster2 already holds" in one_line_error(result)
    assert snapshot(site) == before


def test_crl_refresh_refuses_what_would_break_the_bundle_and_changes_nothing(cli, root_store, tmp_path):
    bundle = site_cluster(cli, root_store, tmp_path)
    site = bundle.parent.parent
    assert cli("issue", "cluster4", env=at(root_store)).exit_code == 0
    assert cli("revoke", "cluster4", env=at(root_store)).exit_code == 0
    other = tmp_path / "other-mesh"  # another root holder, who revoked something too
    for args in (("init-root", INSECURE, "--key-type", "ecdsa-p256"), ("issue", "a"), ("issue", "b"), ("revoke", "b")):
        assert cli(*args, env=at(other)).exit_code == 0
    foreign, not_crl = tmp_path / "foreign.pem", tmp_path / "not-a-crl.pem"
    foreign.write_bytes(next((other / "crl").glob("root-*.crl.pem")).read_bytes())
    not_crl.write_bytes((bundle / CA_CERT).read_bytes())
    revoking = tmp_path / "revoking.pem"  # the root holder evicts the site: its own CRL revokes it
    assert cli("revoke", "cluster2", env=at(root_store)).exit_code == 0
    revoking.write_bytes(next((root_store / "crl").glob("root-*.crl.pem")).read_bytes())
    before = snapshot(site)
    for args, code, needle in [
        (("cluster2", str(foreign)), 1, "crl-missing"),
        (("cluster2", str(revoking)), 1, "crl-revokes-path"),
        (("cluster2", str(not_crl)), 1, "pass the file `meshpki crl export cluster2` wrote"),
        (("cluster2", str(tmp_path / "missing.pem")), 2, "cannot read"),
        (("cluster9", str(revoking)), 1, "no bundle for cluster 'cluster9'"),
        (("Bad_Name", str(revoking)), 2, "Bad_Name"),
    ]:
        result = cli("crl", "refresh", *args, env=at(site))
        assert result.exit_code == code, result.output
        assert needle in one_line_error(result)
        assert snapshot(site) == before
    # the root holder's own bundles follow crl renew, not refresh
    result = cli("crl", "refresh", "cluster1", str(revoking), env=at(root_store))
    assert result.exit_code == 2 and "meshpki crl renew" in one_line_error(result)


@pytest.mark.parametrize("how", ["rm:ca-key.pem", "dir:ca-key.pem", "rm:cert-chain.pem", "rm:ca-cert.pem",
                                 "rm:root-cert.pem", "append:cert-chain.pem", "other-key:ca-key.pem"])
def test_crl_refresh_refuses_a_damaged_bundle_and_changes_nothing(cli, root_store, tmp_path, how):
    """The reviewer's cases: a missing key was a KeyError traceback, a missing
    cert-chain.pem got a ca-crl.pem (exit 0) that verify then failed, and a
    missing ca-cert.pem read 'no bundle for cluster ... (clusters: cluster2)'."""
    bundle = site_cluster(cli, root_store, tmp_path)
    site, exported = bundle.parent.parent, tmp_path / "cluster2-crl.pem"
    assert cli("issue", "cluster4", env=at(root_store)).exit_code == 0
    assert cli("revoke", "cluster4", env=at(root_store)).exit_code == 0
    assert cli("crl", "export", "cluster2", "--out", str(exported), env=at(root_store)).exit_code == 0
    name = f.damage(bundle, how)
    before = snapshot(site)
    result = cli("crl", "refresh", "cluster2", str(exported), env=at(site))
    line = one_line_error(result)
    assert result.exit_code == 1, result.output
    assert "cluster2's bundle is damaged" in line and str(bundle / name) in line, line
    assert "meshpki verify cluster2" in line and "meshpki csr cluster2" in line and "nothing was changed" in line
    assert snapshot(site) == before


def test_crl_refresh_refuses_a_bundle_verify_fails(cli, root_store, tmp_path):
    """Whole and readable, but not a bundle istiod loads (root-cert.pem holds
    another mesh's root): verify's own error is named, not only the CRL's."""
    bundle = site_cluster(cli, root_store, tmp_path)
    site, exported, other = bundle.parent.parent, tmp_path / "cluster2-crl.pem", tmp_path / "other"
    assert cli("issue", "cluster4", env=at(root_store)).exit_code == 0
    assert cli("revoke", "cluster4", env=at(root_store)).exit_code == 0
    assert cli("crl", "export", "cluster2", "--out", str(exported), env=at(root_store)).exit_code == 0
    assert cli("init-root", INSECURE, "--key-type", "ecdsa-p256", env=at(other)).exit_code == 0
    (bundle / ROOT_CERT).write_bytes((other / "root" / ROOT_CERT).read_bytes())
    before = snapshot(site)
    result = cli("crl", "refresh", "cluster2", str(exported), env=at(site))
    line = one_line_error(result)
    assert result.exit_code == 1 and "cluster2's bundle fails verify" in line and "chain-broken" in line, line
    assert str(bundle / CA_CERT) in line and "nothing was changed" in line
    assert snapshot(site) == before


def test_a_stale_crl_is_refused_at_the_site(cli, root_store, tmp_path):
    import datetime as dt

    from meshpki import byo, crl, profiles
    from meshpki.errors import BundleError
    from meshpki.store import Store

    bundle = site_cluster(cli, root_store, tmp_path)
    assert cli("issue", "cluster4", env=at(root_store)).exit_code == 0
    assert cli("revoke", "cluster4", env=at(root_store)).exit_code == 0
    # signed three days ago for two days: past its nextUpdate now (refresh judges the present, as verify does)
    crl.renew(Store(root_store), None, days=2, now=profiles.utcnow() - dt.timedelta(days=3))
    data = cli("crl", "export", "cluster2", env=at(root_store)).stdout.encode()
    with pytest.raises(BundleError, match="crl-expired"):
        byo.refresh_crl(Store(bundle.parent.parent), "cluster2", data, "cluster2-crl.pem")
    assert not (bundle / "ca-crl.pem").exists()


def test_crl_export_says_what_it_cannot_export(cli, root_store, tmp_path):
    result = cli("crl", "export", "cluster2", env=at(root_store))
    assert result.exit_code == 1 and "has revoked nothing" in one_line_error(result)
    assert cli("issue", "cluster4", env=at(root_store)).exit_code == 0
    assert cli("revoke", "cluster4", env=at(root_store)).exit_code == 0
    for cluster, code, needle in [
        ("cluster2", 2, "it signed none"),
        ("cluster1", 2, "is a member of this store"),
        ("cluster4", 1, "was revoked on"),
    ]:
        result = cli("crl", "export", cluster, env=at(root_store))
        assert result.exit_code == code, result.output
        assert needle in one_line_error(result)
    site_cluster(cli, root_store, tmp_path, "cluster3")
    result = cli("crl", "export", "cluster2", env=at(root_store))
    assert result.exit_code == 2 and "(signed: cluster3)" in one_line_error(result)
    result = cli("crl", "export", "cluster3", env=at(root_store))
    assert result.exit_code == 0 and result.stdout.startswith("-----BEGIN X509 CRL-----")


def test_a_revoked_name_signed_again_is_said_and_audited_as_a_member(cli, root_store, tmp_path):
    assert cli("issue", "cluster3", env=at(root_store)).exit_code == 0
    assert cli("revoke", "cluster3", "--reason", "key-compromise", env=at(root_store)).exit_code == 0
    req = tmp_path / "c3.csr"
    make_request(cli, tmp_path / "site", req, "cluster3")
    signed = cli("sign", str(req), "--out", str(tmp_path / "signed"), env=at(root_store))
    assert signed.exit_code == 0, signed.output
    assert "warning: cluster3 was revoked on" in signed.stderr and "(key-compromise)" in signed.stderr
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("clusters:\n  - name: cluster3\n    context: nowhere\n")
    audit = cli("audit", "--config", str(fleet), "-o", "json", env=at(root_store))
    assert "skipped, revoked" not in audit.output  # back in the mesh: audited, not skipped
    assert any(r["cluster"] == "cluster3" and r["source"] == "signed" for r in json.loads(audit.stdout)["rows"])
    # the root holder's own issue says the same when it brings an evicted name back
    assert cli("revoke", "cluster1", env=at(root_store)).exit_code == 0
    again = cli("issue", "cluster1", env=at(root_store))
    assert again.exit_code == 0 and "warning: cluster1 was revoked on" in again.stderr


# -- a site signed from a CSR through a root rotation ----------------------------------------

def resign(cli, root_store: Path, site: Path, folder: Path, cluster: str) -> Path:
    """One csr / sign / complete round for a site that already has a bundle; its signed folder."""
    folder.mkdir()
    make_request(cli, site, folder / "req.csr", cluster, "--force")  # a request may be pending
    result = cli("sign", str(folder / "req.csr"), "--out", str(folder / "signed"), env=at(root_store))
    assert result.exit_code == 0, result.output
    result = cli("complete", cluster, str(folder / "signed"), env=at(site))
    assert result.exit_code == 0, result.output
    return folder / "signed"


def rotation_state(root_store: Path) -> dict[str, str]:
    return json.loads((root_store / "rotation" / "state.json").read_text())


def test_rotate_root_waits_for_a_site_signed_from_a_csr(cli, root_store, tmp_path):
    site_bundle = site_cluster(cli, root_store, tmp_path, "site4")
    member = root_store / "clusters" / "cluster1"
    old_root = (root_store / "root" / ROOT_CERT).read_bytes()
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    with freeze_time(earlier):  # begin and reissue two hours ago: only a later signing holds finish back below
        begun = cli("rotate-root", "begin", "-o", "json", env=at(root_store))
        assert begun.exit_code == 0, begun.output
        reissued = cli("rotate-root", "reissue", "-o", "json", env=at(root_store))
        assert reissued.exit_code == 0, reissued.output
    for step in (begun, reissued):  # both name the site and the round that brings it along
        (row,) = json.loads(step.stdout)["sites"]
        assert (row["cluster"], row["issuer"], row["trusts"]) == ("site4", "old", ["old"])
        assert "meshpki csr site4" in row["next"] and "meshpki sign site4.csr" in row["next"]
        assert "meshpki complete site4" in row["next"]
    status = cli("rotate-root", "status", env=at(root_store))
    assert "SITE (signed from a CSR)" in status.output and "site4: re-sign it under the new root" in status.output
    data = json.loads(cli("rotate-root", "status", "-o", "json", env=at(root_store)).stdout)
    assert data["phase"] == "reissuing", "every member is under the new root, the site is not"
    assert [(s["cluster"], s["issuer"]) for s in data["sites"]] == [("site4", "old")]

    # the member under the new root is now untrusted at the site, and the fix says how a site gets the root
    verify = cli("verify", str(member), str(site_bundle), "-o", "json")
    assert verify.exit_code == 1
    (untrusted,) = [x for p in json.loads(verify.stdout)["pairs"] for x in p["findings"] if x["code"] == "peer-untrusted"]
    assert "a site signed from a CSR needs a new csr, sign, complete" in untrusted["fix"]

    # finish refuses, --force or not, and changes nothing
    before = snapshot(root_store)
    for extra in ((), ("--force",)):
        refused = cli("rotate-root", "finish", *extra, env=at(root_store))
        assert refused.exit_code == 1
        line = one_line_error(refused)
        assert "site4 (signed from a CSR) still issue under the old root" in line and "meshpki revoke" in line
    assert snapshot(root_store) == before

    # a sign refused during the rotation leaves the grace clock alone too
    make_request(cli, tmp_path / "site", tmp_path / "again.csr", "site4", "--force")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / CA_CERT).write_bytes(b"taken")
    refused = cli("sign", str(tmp_path / "again.csr"), "--out", str(tmp_path / "full"), env=at(root_store))
    assert refused.exit_code == 2 and "already holds signed files" in one_line_error(refused)
    assert snapshot(root_store) == before

    # the site's new round: a certificate under the new root, trusting old + new, and the pair verifies
    signed = resign(cli, root_store, tmp_path / "site", tmp_path / "round2", "site4")
    new_root = (root_store / "rotation" / ROOT_CERT).read_bytes()
    assert (site_bundle / ROOT_CERT).read_bytes() == old_root + new_root
    cert = parse_certs((signed / CA_CERT).read_bytes(), "ca-cert")[0]
    assert cert.issuer == parse_certs(new_root, "new root")[0].subject
    assert (site_bundle / CERT_CHAIN).read_bytes().endswith(new_root)
    verify = cli("verify", str(member), str(site_bundle))
    assert verify.exit_code == 0, verify.output
    data = json.loads(cli("rotate-root", "status", "-o", "json", env=at(root_store)).stdout)
    assert data["phase"] == "grace" and data["sites"] == [
        {"cluster": "site4", "issuer": "new", "trusts": ["old", "new"], "next": None}]

    # the signing restarted the grace clock like a reissue: two hours after the reissue, finish still waits
    assert rotation_state(root_store)["last_reissue"] > earlier.isoformat(timespec="seconds")
    waiting = cli("rotate-root", "finish", "--grace", "1h", env=at(root_store))
    assert waiting.exit_code == 1 and "grace period not over" in one_line_error(waiting)
    done = cli("rotate-root", "finish", "--grace", "0s", "-o", "json", env=at(root_store))
    assert done.exit_code == 0, done.output
    (row,) = json.loads(done.stdout)["sites"]  # one more round drops the retired root at the site
    assert row["issuer"] == "root" and "re-sign it to trust the current root alone" in row["next"]
    assert cli("verify", str(member), str(site_bundle)).exit_code == 0

    resign(cli, root_store, tmp_path / "site", tmp_path / "round3", "site4")
    assert (site_bundle / ROOT_CERT).read_bytes() == new_root
    data = json.loads(cli("rotate-root", "status", "-o", "json", env=at(root_store)).stdout)
    assert data["sites"] == [{"cluster": "site4", "issuer": "root", "trusts": ["root"], "next": None}]
    assert cli("verify", str(member), str(site_bundle)).exit_code == 0
