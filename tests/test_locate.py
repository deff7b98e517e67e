"""Where a cluster's secret lives: one precedence for push, verify --context
and audit (flag > KUBECONFIG > fleet cluster > fleet defaults > ~/.kube),
tested in the resolver and end to end through the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from meshpki import ca
from meshpki.config import Fleet, FleetCluster
from meshpki.keys import KeyType
from meshpki.locate import Options, Resolver
from meshpki.store import Store
from tests.conftest import one_line_error

NS, NAME = "istio-system", "cacerts"
FLEET = Fleet(kubeconfig="defaults.yaml", namespace="mesh-ns",
              clusters=(FleetCluster("east", "ctx-east", "east.yaml"), FleetCluster("west", "ctx-west")))


@pytest.mark.parametrize("flag, env, cluster, expected", [
    ("flag.yaml", "env1.yaml:env2.yaml", "east", "flag.yaml"),
    (None, "env1.yaml:env2.yaml", "east", None),  # None: kube.py merges KUBECONFIG like kubectl
    (None, None, "east", "east.yaml"),
    (None, None, "west", "defaults.yaml"),
])
def test_kubeconfig_precedence(flag, env, cluster, expected):
    environ = {"KUBECONFIG": env} if env else {}
    ref = Resolver(FLEET, Options(kubeconfig=flag), environ).cluster(cluster)
    assert ref.kubeconfig == expected


def test_no_fleet_file_means_kubectls_default():
    ref = Resolver(Fleet(), Options(), {}).cluster("c1")
    assert (ref.kubeconfig, ref.context, ref.namespace, ref.secret_name) == (None, "c1", NS, NAME)


def test_a_cluster_and_its_context_resolve_alike():
    resolver = Resolver(FLEET, Options(), {})
    assert resolver.cluster("east") == resolver.context("ctx-east")
    by_name = resolver.cluster("east")
    assert (by_name.context, by_name.kubeconfig, by_name.namespace) == ("ctx-east", "east.yaml", "mesh-ns")
    # another context for east is not what the fleet entry's kubeconfig was written for
    assert resolver.cluster("east", "elsewhere").kubeconfig == "defaults.yaml"
    # a context the fleet file does not know is its own cluster
    assert resolver.context("stray").cluster == "stray"


def test_options_beat_fleet_defaults():
    ref = Resolver(FLEET, Options(namespace="other", secret_name="s", timeout=3.0), {}).cluster("west")
    assert (ref.namespace, ref.secret_name, ref.timeout) == ("other", "s", 3.0)


def test_push_all_and_audit_use_the_same_refs():
    resolver = Resolver(FLEET, Options(), {})
    assert resolver.for_push(None, None, True) == resolver.for_audit() == resolver.fleet_clusters()
    assert resolver.for_push("east", None, False) == [resolver.cluster("east")]


# -- through the command line ----------------------------------------------------------

@pytest.fixture
def two_files(kube_api, tmp_path) -> tuple[Path, Path]:
    """Context east in one kubeconfig file, west in another."""
    return (kube_api.write_kubeconfig(tmp_path / "a.yaml", {"east": ("cluster1", "admin-token")}),
            kube_api.write_kubeconfig(tmp_path / "b.yaml", {"west": ("cluster2", "admin-token")}))


@pytest.fixture
def issued(store: Store) -> Store:
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, ["east", "west"], ca.IssueOptions(), ca.store_issuer(store, None))
    return store


def test_kubeconfig_env_with_several_files_merges_for_push_verify_and_audit(cli, issued, kube_api, two_files):
    env = {"KUBECONFIG": os.pathsep.join(str(p) for p in two_files)}
    for ctx in ("east", "west"):
        result = cli("push", ctx, "--context", ctx, env=env)
        assert result.exit_code == 0, result.output
    assert kube_api.cluster("cluster2").get_secret(NS, NAME)["data"] == dict(issued.load_bundle("west").secret_data())

    result = cli("verify", "--context", "west", "-o", "json", env=env)
    assert result.exit_code == 0, result.output
    assert [r["target"] for r in json.loads(result.stdout)["results"]] == ["live:west"]

    result = cli("audit", "--all-contexts", "-o", "json", env=env)
    assert result.exit_code == 0, result.output
    clusters = {c["cluster"] for c in json.loads(result.stdout)["clusters"]}
    assert clusters == {"", "east", "west"}


def test_fleet_defaults_kubeconfig_serves_push_and_verify_too(cli, issued, kube_api, two_files, tmp_path):
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text(f"defaults:\n  kubeconfig: {two_files[1]}\nclusters:\n  - name: west\n")
    env = {"MESHPKI_CONFIG": str(fleet)}
    result = cli("push", "west", env=env)
    assert result.exit_code == 0, result.output
    result = cli("verify", "--context", "west", env=env)
    assert result.exit_code == 0, result.output
    result = cli("audit", env=env)
    assert result.exit_code == 0, result.output


def test_a_clusters_own_kubeconfig_wins_for_push_cluster_as_for_push_all(cli, issued, kube_api, two_files, tmp_path):
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text(f"defaults:\n  kubeconfig: {two_files[1]}\n"
                     f"clusters:\n  - name: east\n    kubeconfig: {two_files[0]}\n  - name: west\n")
    env = {"MESHPKI_CONFIG": str(fleet)}
    result = cli("push", "east", env=env)
    assert result.exit_code == 0, result.output
    assert kube_api.cluster("cluster1").get_secret(NS, NAME) is not None
    result = cli("push", "--all", env=env)
    assert result.exit_code == 0, result.output
    assert kube_api.cluster("cluster2").get_secret(NS, NAME) is not None


def test_the_flag_is_one_file_and_beats_kubeconfig_env(cli, issued, kube_api, two_files):
    env = {"KUBECONFIG": str(two_files[1])}
    result = cli("push", "east", "--kubeconfig", str(two_files[0]), env=env)
    assert result.exit_code == 0, result.output
    result = cli("push", "west", "--kubeconfig", str(two_files[0]), env=env)
    assert result.exit_code == 1
    assert 'context "west" not found in kubeconfig' in one_line_error(result)
