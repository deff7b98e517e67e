"""push's guards against a wrong target: a bundle under another root. Each
refusal is one line and leaves the store and every cluster's secret exactly as
they were."""

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


def refused(result, store: Store, before_store, kube_api, before_live, *needles: str) -> str:
    """Exit 1, one line holding every needle, the store and every secret untouched."""
    assert result.exit_code == 1, result.output
    line = one_line_error(result)
    for needle in needles:
        assert needle in line, line
    assert snapshot(store.path) == before_store
    assert secrets(kube_api) == before_live
    return line


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
