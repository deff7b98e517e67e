"""push follows istiod: live CRLs, root changes istiod would skip, and secret types.

Against the local Kubernetes API server (tests/kubeapi.py), through the real
kubernetes client; one defect per live secret.
"""

from __future__ import annotations

import pytest

from meshpki import ca, keys
from meshpki.bundle import CA_CRL, ISTIO_GENERATED, parse_certs
from meshpki.keys import KeyType
from meshpki.store import Store
from tests import factories as f
from tests.conftest import one_line_error

NS, NAME = "istio-system", "cacerts"


@pytest.fixture
def mesh(store: Store) -> Store:
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None))
    return store


@pytest.fixture
def push(cli, kubeconfig):
    def run(*args: str):
        return cli("push", "--kubeconfig", str(kubeconfig), "--timeout", "5", "--context", "cluster1", *args)

    return run


def authorities(store: Store) -> tuple[f.Authority, f.Authority]:
    """The store's root and cluster1's intermediate, as signers of test CRLs."""
    bundle = store.load_bundle("cluster1")
    inter_cert = parse_certs(bundle.files["ca-cert.pem"], "ca-cert.pem")[0]
    root = f.Authority(store.root_cert(), store.load_root_key(None))
    return root, f.Authority(inter_cert, keys.load_private_key(bundle.files["ca-key.pem"]))


def live(kube_api) -> dict[str, bytes]:
    return kube_api.cluster("cluster1").get_secret(NS, NAME)["data"]


def test_a_live_crl_that_fits_the_new_chain_is_kept(mesh, push, kube_api):
    root, inter = authorities(mesh)
    data = dict(mesh.load_bundle("cluster1").secret_data())
    kube_api.cluster("cluster1").put_secret(NS, NAME, {**data, CA_CRL: f.make_crl(root) + f.make_crl(inter)})
    before = live(kube_api)[CA_CRL]
    result = push()
    assert result.exit_code == 0, result.output
    assert live(kube_api)[CA_CRL] == before


def test_a_live_crl_that_does_not_fit_is_refused_naming_ca_crl(mesh, push, kube_api, cli):
    root, inter = authorities(mesh)
    data = dict(mesh.load_bundle("cluster1").secret_data())
    crl = f.make_crl(root) + f.make_crl(inter)
    kube_api.cluster("cluster1").put_secret(NS, NAME, {**data, CA_CRL: crl})
    assert cli("rotate", "cluster1").exit_code == 0  # a new intermediate: the live CRL has no CRL signed by it
    vc = kube_api.cluster("cluster1")
    rv = vc.secret_object(NS, NAME)["metadata"]["resourceVersion"]
    result = push()
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "ca-crl.pem" in line and "crl-missing" in line and "crl renew" in line
    assert vc.secret_object(NS, NAME)["metadata"]["resourceVersion"] == rv, "nothing written"


def test_istio_generated_is_removed_and_said(mesh, push, kube_api):
    data = dict(mesh.load_bundle("cluster1").secret_data())
    kube_api.cluster("cluster1").put_secret(NS, NAME, {**data, ISTIO_GENERATED: b""})
    result = push()
    assert result.exit_code == 0, result.output
    assert ISTIO_GENERATED not in live(kube_api) and f"{ISTIO_GENERATED} removed" in result.output


def test_an_unknown_key_is_kept_and_said(mesh, push, kube_api):
    data = dict(mesh.load_bundle("cluster1").secret_data())
    kube_api.cluster("cluster1").put_secret(NS, NAME, {**data, "note.txt": b"hello"})
    result = push()
    assert result.exit_code == 0, result.output
    assert live(kube_api)["note.txt"] == b"hello" and "note.txt: kept" in result.output


def test_a_root_set_neither_subset_nor_superset_is_refused(mesh, push, kube_api):
    """{A, X} live -> {A} pushed is a subset (fine); {A, X} -> {A, B} is what istiod skips."""
    data = dict(mesh.load_bundle("cluster1").secret_data())
    stranger = f.make_root("Stranger", slot=160)
    vc = kube_api.cluster("cluster1")
    vc.put_secret(NS, NAME, {**data, "root-cert.pem": data["root-cert.pem"] + stranger.cert_pem})
    assert push().exit_code == 0, "A+X -> A narrows: istiod takes it"
    other = f.make_root("Other", slot=161)
    store_roots = data["root-cert.pem"]
    vc.put_secret(NS, NAME, {**data, "root-cert.pem": store_roots + other.cert_pem})
    # the store now trusts A+B where the cluster trusts A+X
    bundle_files = dict(mesh.load_bundle("cluster1").files)
    bundle_files["root-cert.pem"] = store_roots + stranger.cert_pem
    mesh.write_bundle("cluster1", bundle_files, replace=True)
    rv = vc.secret_object(NS, NAME)["metadata"]["resourceVersion"]
    refused = push()
    assert refused.exit_code == 1
    line = one_line_error(refused)
    assert "neither a subset nor a superset" in line and "skip the whole update" in line
    assert vc.secret_object(NS, NAME)["metadata"]["resourceVersion"] == rv
    assert push("--allow-root-change").exit_code == 0


def test_files_form_into_a_tls_typed_secret_points_to_format_tls(mesh, push, kube_api):
    tls = f.tls_form(dict(mesh.load_bundle("cluster1").secret_data()))
    vc = kube_api.cluster("cluster1")
    vc.put_secret(NS, NAME, tls, type="kubernetes.io/tls")
    refused = push()
    assert refused.exit_code == 1
    assert "--format tls" in one_line_error(refused) and "kubernetes.io/tls" in refused.output


def test_format_tls_into_a_tls_typed_secret_keeps_the_type(mesh, push, kube_api, cli):
    tls = f.tls_form(dict(mesh.load_bundle("cluster1").secret_data()))
    vc = kube_api.cluster("cluster1")
    vc.put_secret(NS, NAME, tls, type="kubernetes.io/tls")
    assert cli("rotate", "cluster1").exit_code == 0
    result = push("--format", "tls")
    assert result.exit_code == 0, result.output
    stored = vc.secret_object(NS, NAME)
    assert stored["type"] == "kubernetes.io/tls"
    assert live(kube_api)["tls.crt"] == mesh.load_bundle("cluster1").files["ca-cert.pem"]


def test_the_test_api_server_refuses_a_type_change_with_422(mesh, kube_api, kubeconfig):
    """Like a real API server: the type of a Secret is immutable."""
    from meshpki.errors import KubeError
    from meshpki.kube import Cluster

    vc = kube_api.cluster("cluster1")
    data = dict(mesh.load_bundle("cluster1").secret_data())
    rv = vc.put_secret(NS, NAME, f.tls_form(data), type="kubernetes.io/tls")
    with Cluster.connect("cluster1", str(kubeconfig), timeout=5) as conn, pytest.raises(KubeError) as err:
        conn.replace_secret(NS, NAME, data, None, None, rv, type="Opaque")
    assert err.value.status == 422


def test_format_tls_over_the_files_form_removes_the_files_and_says_so(mesh, push, kube_api):
    """tls.crt wins in istiod: files left beside it would only mislead a reader, so they go, said."""
    assert push().exit_code == 0
    result = push("--format", "tls")
    assert result.exit_code == 0, result.output
    data = live(kube_api)
    assert "tls.crt" in data and "ca-cert.pem" not in data
    assert "ca-cert.pem removed" in result.output


def test_the_dry_run_manifest_keeps_the_live_type_and_kept_keys(mesh, push, kube_api):
    """kubectl apply of the manifest must not hit the 422 push avoids."""
    import yaml

    tls = f.tls_form(dict(mesh.load_bundle("cluster1").secret_data()))
    kube_api.cluster("cluster1").put_secret(NS, NAME, {**tls, "note.txt": b"x"}, type="kubernetes.io/tls")
    result = push("--format", "tls", "--dry-run", "-o", "yaml")
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.stdout)
    assert manifest["type"] == "kubernetes.io/tls" and "note.txt" in manifest["data"]
