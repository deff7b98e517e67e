"""push's guards against a wrong target: another cluster's secret and a bundle
under another root. Each refusal is one line and leaves the store and every
cluster's secret exactly as they were."""

from __future__ import annotations

import shutil

import pytest

from meshpki import ca
from meshpki.keys import KeyType
from meshpki.store import Store
from tests.conftest import one_line_error, snapshot

NS, NAME = "istio-system", "cacerts"
PASS = {"MESHPKI_ROOT_PASSPHRASE": "correct horse battery"}


@pytest.fixture
def base(cli):
    """`init-root --key-type ecdsa-p256` + `issue cluster1 cluster2`, the passphrase in the environment."""
    assert cli("init-root", "--key-type", "ecdsa-p256", env=PASS).exit_code == 0
    assert cli("issue", "cluster1", "cluster2", env=PASS).exit_code == 0


@pytest.fixture
def push(cli, kubeconfig):
    def run(*args: str, env=None):
        return cli("push", "--kubeconfig", str(kubeconfig), "--timeout", "5", *args, env={**PASS, **(env or {})})

    return run


def secrets(kube_api) -> dict[str, object]:
    """Every cluster's cacerts as the API server holds it (None: absent)."""
    return {c: kube_api.cluster(c).secret_object(NS, NAME) for c in ("cluster1", "cluster2")}


def fleet_file(tmp_path, contexts: dict[str, str]) -> dict[str, str]:
    path = tmp_path / "mesh.yaml"
    path.write_text("clusters:\n" + "".join(f"  - name: {n}\n    context: {c}\n" for n, c in contexts.items()))
    return {"MESHPKI_CONFIG": str(path)}


def refused(result, store: Store, before_store, kube_api, before_live, *needles: str) -> str:
    """Exit 1, one line holding every needle, the store and every secret untouched."""
    assert result.exit_code == 1, result.output
    line = one_line_error(result)
    for needle in needles:
        assert needle in line, line
    assert snapshot(store.path) == before_store
    assert secrets(kube_api) == before_live
    return line


# -- 1. another cluster's secret ---------------------------------------------------

def test_a_push_into_another_clusters_secret_is_refused(base, push, kube_api, store):
    assert push("cluster1", "--context", "cluster1").exit_code == 0
    before, live = snapshot(store.path), secrets(kube_api)
    refused(push("cluster2", "--context", "cluster1"), store, before, kube_api, live,
            "holds cluster1's intermediate", "--replace-other-cluster")
    refused(push("cluster2", "--context", "cluster1", "--dry-run"), store, before, kube_api, live,
            "holds cluster1's intermediate")
    told = push("cluster2", "--context", "cluster1", "--replace-other-cluster")
    assert told.exit_code == 0, told.output
    assert "note: replacing cluster1's intermediate (L=cluster1) with cluster2's" in told.output
    assert kube_api.cluster("cluster1").get_secret(NS, NAME)["data"] == dict(store.load_bundle("cluster2").secret_data())


def test_a_hand_made_tls_secret_names_its_cluster_too(base, push, kube_api, store):
    """No meshpki label, tls form: the intermediate's L= still says whose it is."""
    files = store.load_bundle("cluster1").secret_data("tls")
    vc = kube_api.cluster("cluster2")
    vc.add_namespace(NS)
    vc.put_secret(NS, NAME, files, type="kubernetes.io/tls")
    before, live = snapshot(store.path), secrets(kube_api)
    refused(push("cluster2", "--context", "cluster2", "--format", "tls"), store, before, kube_api, live,
            "holds cluster1's intermediate")


def test_the_same_cluster_under_a_new_intermediate_is_not_another_cluster(base, push, kube_api, cli):
    assert push("cluster1", "--context", "cluster1").exit_code == 0
    assert cli("rotate", "cluster1", env=PASS).exit_code == 0
    again = push("cluster1", "--context", "cluster1")
    assert again.exit_code == 0 and "updated" in again.output, again.output


def test_a_fleet_file_with_two_clusters_on_one_context_is_refused(base, push, kube_api, store, tmp_path):
    env = fleet_file(tmp_path, {"cluster1": "cluster1", "cluster2": "cluster1"})
    before, live = snapshot(store.path), secrets(kube_api)
    result = push("--all", env=env)
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert "cluster1 and cluster2" in line and "istio-system/cacerts in context cluster1" in line, line
    assert snapshot(store.path) == before and secrets(kube_api) == live
    assert kube_api.cluster("cluster1").requests == []


# -- 2. a bundle under another root -----------------------------------------------

def test_a_bundle_under_another_root_is_never_pushed(base, push, kube_api, store, tmp_path):
    other = Store(tmp_path / "other")
    ca.init_root(other, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(other, ["cluster2"], ca.IssueOptions(), ca.store_issuer(other, None))
    shutil.rmtree(store.cluster_dir("cluster2"))
    shutil.copytree(other.cluster_dir("cluster2"), store.cluster_dir("cluster2"))
    before, live = snapshot(store.path), secrets(kube_api)
    for args in (("cluster2", "--context", "cluster2"), ("cluster2", "--context", "down", "--dry-run", "-o", "yaml")):
        refused(push(*args), store, before, kube_api, live, "not signed by this store's root",
                "meshpki rotate cluster2")
    assert kube_api.cluster("cluster2").requests == [], "refused before any connection"
