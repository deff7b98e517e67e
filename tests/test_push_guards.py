"""push's guards against a wrong target: another cluster's secret, a bundle
under another root, and a new root's intermediate that the other clusters do
not trust yet. Each refusal is one line and leaves the store and every
cluster's secret exactly as they were."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from meshpki import ca, rotate
from meshpki.keys import KeyType
from meshpki.store import Store
from tests.conftest import one_line_error, snapshot
from tests.kubeapi import STANDARD_CONTEXTS, Context

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


# -- 3. a new root's intermediate that other clusters do not trust yet --------------

def rotate_with_only_cluster1_pushed(cli, push) -> None:
    """rotate-root begin, push cluster1 only (cluster2 keeps trusting A alone), reissue."""
    assert push("cluster1", "--context", "cluster1").exit_code == 0
    assert push("cluster2", "--context", "cluster2").exit_code == 0
    assert cli("rotate-root", "begin", env=PASS).exit_code == 0
    assert push("cluster1", "--context", "cluster1").exit_code == 0
    assert cli("rotate-root", "reissue", env=PASS).exit_code == 0


@pytest.mark.parametrize("with_fleet", [False, True])
def test_a_new_root_intermediate_waits_for_every_cluster_to_trust_it(base, cli, push, kube_api, store, tmp_path,
                                                                     with_fleet):
    env = fleet_file(tmp_path, {"cluster1": "cluster1", "cluster2": "cluster2"}) if with_fleet else None
    rotate_with_only_cluster1_pushed(cli, push)
    before, live = snapshot(store.path), secrets(kube_api)
    line = refused(push("cluster1", "--context", "cluster1", env=env), store, before, kube_api, live,
                   "cluster2", "new root", "meshpki push cluster2 --context cluster2", "--allow-untrusted-by-peers")
    assert ("live secret" in line) == with_fleet, line
    # the way out the line names: cluster2 gets B's trust (its own B intermediate is fine: cluster1 trusts B)
    assert push("cluster2", "--context", "cluster2", env=env).exit_code == 0
    ok = push("cluster1", "--context", "cluster1", env=env)
    assert ok.exit_code == 0, ok.output


def test_the_override_pushes_and_warns(base, cli, push, kube_api, store):
    rotate_with_only_cluster1_pushed(cli, push)
    told = push("cluster1", "--context", "cluster1", "--allow-untrusted-by-peers")
    assert told.exit_code == 0, told.output
    assert "cluster2 does not trust the new root" in told.output
    assert kube_api.cluster("cluster1").get_secret(NS, NAME)["data"] == dict(store.load_bundle("cluster1").secret_data())


def test_push_all_refuses_the_switch_when_a_cluster_was_skipped(base, cli, push, kube_api, store, tmp_path):
    """begin, then reissue with no push between: no cluster trusts B, so none may issue under it yet."""
    env = fleet_file(tmp_path, {"cluster1": "cluster1", "cluster2": "cluster2"})
    assert push("--all", env=env).exit_code == 0
    assert cli("rotate-root", "begin", env=PASS).exit_code == 0
    assert cli("rotate-root", "reissue", env=PASS).exit_code == 0
    before, live = snapshot(store.path), secrets(kube_api)
    result = push("--all", env=env)
    assert result.exit_code == 1 and "2 of 2 pushes failed" in result.output, result.output
    assert "--allow-untrusted-by-peers" in result.output
    assert snapshot(store.path) == before and secrets(kube_api) == live


def test_live_state_wins_over_the_record(base, cli, push, kube_api, store, tmp_path):
    """The record says cluster2 trusts B, but its live secret went back to A alone: refused."""
    env = fleet_file(tmp_path, {"cluster1": "cluster1", "cluster2": "cluster2"})
    assert push("--all", env=env).exit_code == 0
    a_only = kube_api.cluster("cluster2").get_secret(NS, NAME)["data"]
    assert cli("rotate-root", "begin", env=PASS).exit_code == 0
    assert push("--all", env=env).exit_code == 0
    kube_api.cluster("cluster2").put_secret(NS, NAME, a_only)  # someone restored an old copy
    assert cli("rotate-root", "reissue", "cluster1", env=PASS).exit_code == 0
    before, live = snapshot(store.path), secrets(kube_api)
    refused(push("cluster1", env=env), store, before, kube_api, live, "cluster2", "live secret")
    # without the fleet file cluster2's context is unknown: the store's record decides
    assert push("cluster1", "--context", "cluster1").exit_code == 0


def test_an_unchanged_push_records_the_trust(base, cli, push, kube_api, store):
    """A rotation state written before pushes were recorded: pushing cluster2
    again (nothing to write) records that it trusts B."""
    assert cli("rotate-root", "begin", env=PASS).exit_code == 0
    assert push("cluster1", "--context", "cluster1").exit_code == 0
    assert push("cluster2", "--context", "cluster2").exit_code == 0
    state = json.loads(store.rotation_file(rotate.STATE_FILE))
    del state["pushed_trust"]
    store.write_rotation_file(rotate.STATE_FILE, json.dumps(state).encode())
    assert cli("rotate-root", "reissue", "cluster1", env=PASS).exit_code == 0
    assert push("cluster1", "--context", "cluster1").exit_code == 1
    again = push("cluster2", "--context", "cluster2")
    assert "unchanged" in again.output
    assert push("cluster1", "--context", "cluster1").exit_code == 0


@pytest.mark.parametrize("peer_context", ["down", "skip"])
def test_a_peer_that_cannot_be_read_safely_falls_back_to_the_record(base, cli, kube_api, store, tmp_path,
                                                                    peer_context):
    """cluster2's fleet context is refused or unauthenticated (insecure-skip-tls-verify): it is never read
    (its CA key would cross that connection); the store's record of pushes decides."""
    doc = kube_api.kubeconfig_dict({**STANDARD_CONTEXTS, "skip": Context("cluster2")}, current="cluster1")
    for entry in doc["clusters"]:
        if entry["name"] == "skip-cluster":
            del entry["cluster"]["certificate-authority-data"]
            entry["cluster"]["insecure-skip-tls-verify"] = True
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(doc))
    fleet = fleet_file(tmp_path, {"cluster1": "cluster1", "cluster2": peer_context})

    def push(*args: str, env=None):
        return cli("push", "--kubeconfig", str(kubeconfig), *args, env={**PASS, **(env or {})})

    assert cli("rotate-root", "begin", env=PASS).exit_code == 0
    assert push("cluster1", "--context", "cluster1").exit_code == 0
    assert cli("rotate-root", "reissue", "cluster1", env=PASS).exit_code == 0
    before, live = snapshot(store.path), secrets(kube_api)
    refused(push("cluster1", env=fleet), store, before, kube_api, live, "cluster2: no push of a bundle")
    assert push("cluster2", "--context", "cluster2").exit_code == 0  # recorded: cluster2 trusts the new root
    kube_api.cluster("cluster2").clear_requests()
    ok = push("cluster1", env=fleet)
    assert ok.exit_code == 0, ok.output
    assert kube_api.cluster("cluster2").requests == [], "cluster2 was not read"


def test_a_push_that_writes_nothing_leaves_the_grace_clock_and_the_state_alone(base, cli, push, store, tmp_path):
    env = fleet_file(tmp_path, {"cluster1": "cluster1", "cluster2": "cluster2"})
    assert cli("rotate-root", "begin", env=PASS).exit_code == 0
    assert push("--all", env=env).exit_code == 0
    assert cli("rotate-root", "reissue", env=PASS).exit_code == 0
    assert push("--all", env=env).exit_code == 0
    state = store.rotation_file(rotate.STATE_FILE)
    assert json.loads(state)["pushed_trust"] == ["cluster1", "cluster2"]
    again = push("--all", env=env)
    assert again.output.count("unchanged, nothing written") == 2, again.output
    assert store.rotation_file(rotate.STATE_FILE) == state
