"""`meshpki push` against the local Kubernetes API server, end to end through
the real kubernetes client and a real kubeconfig."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest
import yaml

from meshpki import ca
from meshpki.keys import KeyType
from meshpki.push import ANN_INTERMEDIATE, ANN_ROOTS, MANAGED_BY_LABEL
from meshpki.store import Store
from tests.conftest import one_line_error, snapshot

NS, NAME = "istio-system", "cacerts"
FILES = ("ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem")


@pytest.fixture
def fleet_store(store: Store) -> Store:
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, ["cluster1", "cluster2"], ca.IssueOptions(), ca.store_issuer(store, None))
    return store


@pytest.fixture
def push(cli, kubeconfig):
    def run(*args: str, env=None):
        return cli("push", "--kubeconfig", str(kubeconfig), "--timeout", "5", *args, env=env)

    return run


def store_files(store: Store, cluster: str) -> dict[str, bytes]:
    return dict(store.load_bundle(cluster).secret_data())


def other_root_bundle(tmp_path) -> dict[str, bytes]:
    """A bundle for cluster1 under a root that has nothing to do with the store's."""
    other = Store(tmp_path / "other")
    ca.init_root(other, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(other, ["cluster1"], ca.IssueOptions(), ca.store_issuer(other, None))
    return store_files(other, "cluster1")


def test_first_push_creates_namespace_and_exact_secret(fleet_store, push, kube_api):
    result = push("--context", "cluster1")
    assert result.exit_code == 0, result.output
    live = kube_api.cluster("cluster1").get_secret(NS, NAME)
    assert NS in kube_api.cluster("cluster1").namespaces
    assert live["data"] == store_files(fleet_store, "cluster1"), "data byte for byte"
    assert set(live["data"]) == set(FILES)
    assert live["type"] == "Opaque"
    assert live["metadata"]["labels"][MANAGED_BY_LABEL] == "meshpki"
    assert live["metadata"]["annotations"][ANN_INTERMEDIATE] and live["metadata"]["annotations"][ANN_ROOTS]
    root_key = (fleet_store.root_dir / "root-key.pem").read_bytes()
    assert root_key not in live["data"].values(), "the root key is never pushed"
    assert "cluster1: created, read back and identical" in result.output
    assert "rollout restart deployment/istiod" in result.output
    assert kube_api.cluster("cluster2").get_secret(NS, NAME) is None, "contexts are separate clusters"


def test_second_push_is_unchanged_and_writes_nothing(fleet_store, push, kube_api):
    assert push("--context", "cluster1").exit_code == 0
    vc = kube_api.cluster("cluster1")
    vc.clear_requests()
    again = push("--context", "cluster1")
    assert again.exit_code == 0, again.output
    assert "unchanged, nothing written" in again.output
    assert vc.writes == []


def test_update_after_rotate_shows_the_plan(fleet_store, push, kube_api, cli):
    assert push("--context", "cluster1").exit_code == 0
    old_rv = kube_api.cluster("cluster1").secret_object(NS, NAME)["metadata"]["resourceVersion"]
    assert cli("rotate", "cluster1").exit_code == 0
    result = push("cluster1", "--context", "cluster1")
    assert result.exit_code == 0, result.output
    assert "update" in result.output and "intermediate: serial" in result.output and "->" in result.output
    assert "roots: unchanged" in result.output
    live = kube_api.cluster("cluster1").secret_object(NS, NAME)
    assert live["metadata"]["resourceVersion"] != old_rv
    assert kube_api.cluster("cluster1").get_secret(NS, NAME)["data"] == store_files(fleet_store, "cluster1")


def test_update_keeps_foreign_labels(fleet_store, push, kube_api, cli):
    vc = kube_api.cluster("cluster1")
    vc.add_namespace(NS)
    vc.put_secret(NS, NAME, store_files(fleet_store, "cluster1"), labels={"team": "mesh"})
    assert cli("rotate", "cluster1").exit_code == 0
    assert push("--context", "cluster1").exit_code == 0
    live = vc.get_secret(NS, NAME)
    assert live["metadata"]["labels"] == {"team": "mesh", MANAGED_BY_LABEL: "meshpki"}


def test_hand_made_secret_with_same_data_is_adopted_by_metadata_patch(fleet_store, push, kube_api):
    vc = kube_api.cluster("cluster1")
    vc.add_namespace(NS)
    vc.put_secret(NS, NAME, store_files(fleet_store, "cluster1"))  # as `kubectl create secret generic` makes it
    vc.clear_requests()
    result = push("--context", "cluster1")
    assert result.exit_code == 0, result.output
    assert "adopted (metadata only)" in result.output
    assert [m for m, p in vc.writes if "/secrets/" in p or p.endswith("/secrets")] == ["PATCH"]
    assert vc.get_secret(NS, NAME)["metadata"]["labels"][MANAGED_BY_LABEL] == "meshpki"


def test_conflict_is_retried_once_then_fails_clearly(fleet_store, push, kube_api, cli):
    assert push("--context", "cluster1").exit_code == 0
    assert cli("rotate", "cluster1").exit_code == 0
    vc = kube_api.cluster("cluster1")
    vc.conflict_next_write(1)
    ok = push("--context", "cluster1")
    assert ok.exit_code == 0, ok.output
    assert vc.get_secret(NS, NAME)["data"] == store_files(fleet_store, "cluster1")
    assert cli("rotate", "cluster1").exit_code == 0
    before = vc.get_secret(NS, NAME)
    vc.conflict_next_write(2)
    failed = push("--context", "cluster1")
    assert failed.exit_code == 1
    assert "409 Conflict twice" in one_line_error(failed)
    assert vc.get_secret(NS, NAME)["data"] == before["data"], "nothing half-written"


def test_trust_guard_refuses_a_split_and_allows_it_when_told(fleet_store, push, kube_api, tmp_path):
    vc = kube_api.cluster("cluster1")
    vc.add_namespace(NS)
    foreign = other_root_bundle(tmp_path)
    vc.put_secret(NS, NAME, foreign)
    vc.clear_requests()
    refused = push("--context", "cluster1")
    assert refused.exit_code == 1
    line = one_line_error(refused)
    assert "split the mesh" in line and "--allow-root-change" in line
    assert vc.writes == [] and vc.get_secret(NS, NAME)["data"] == foreign
    allowed = push("--context", "cluster1", "--allow-root-change")
    assert allowed.exit_code == 0, allowed.output
    assert "ISTIO_MULTIROOT_MESH" in allowed.output
    assert vc.get_secret(NS, NAME)["data"] == store_files(fleet_store, "cluster1")


def test_unreadable_live_roots_are_foreign(fleet_store, push, kube_api):
    vc = kube_api.cluster("cluster1")
    vc.add_namespace(NS)
    vc.put_secret(NS, NAME, {"root-cert.pem": b"garbage", "ca-cert.pem": b"x"})
    refused = push("--context", "cluster1")
    assert refused.exit_code == 1 and "no readable root-cert.pem" in one_line_error(refused)
    assert push("--context", "cluster1", "--allow-root-change").exit_code == 0


def test_bundle_must_exist_and_is_checked_before_any_connection(fleet_store, push, kube_api):
    result = push("cluster9", "--context", "down")
    assert result.exit_code == 1
    assert "no bundle for cluster 'cluster9'" in one_line_error(result)


def test_a_bundle_failing_verify_is_not_pushed(fleet_store, push, kube_api):
    folder = fleet_store.cluster_dir("cluster1")
    other = fleet_store.cluster_dir("cluster2")
    (folder / "ca-key.pem").write_bytes((other / "ca-key.pem").read_bytes())  # key of another cluster
    result = push("--context", "cluster1")
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "fails verification" in line and "key-mismatch" in line
    assert kube_api.cluster("cluster1").requests == []


@pytest.mark.parametrize("context,needle", [
    ("badtoken", "401"), ("readonly", "403"), ("badca", "certificate"), ("down", "refused"), ("nosuch", "not found"),
])
def test_cluster_refusals_are_one_line_and_write_nothing(fleet_store, push, kube_api, context, needle):
    before = snapshot(fleet_store.path)
    result = push("cluster1", "--context", context)
    assert result.exit_code == 1
    assert needle in one_line_error(result).lower()
    assert kube_api.cluster("cluster1").get_secret(NS, NAME) is None
    assert snapshot(fleet_store.path) == before


def test_forbidden_names_the_verb_and_rbac_rule(fleet_store, push, kube_api):
    kube_api.cluster("cluster1").add_namespace(NS)
    result = push("cluster1", "--context", "readonly")
    line = one_line_error(result)
    assert "create" in line and "secrets" in line and "Role" in line


def test_server_errors_and_timeouts(fleet_store, push, kube_api):
    vc = kube_api.cluster("cluster1")
    vc.fail_next(503, count=5)
    failed = push("--context", "cluster1")
    assert failed.exit_code == 1 and "503" in one_line_error(failed)
    vc.clear_faults()
    vc.delay = 2.0
    slow = push("--context", "cluster1", "--timeout", "0.5")
    assert slow.exit_code == 1 and "did not answer within 0.5 s" in one_line_error(slow)
    vc.delay = 0
    assert vc.get_secret(NS, NAME) is None


def test_missing_or_broken_kubeconfig(fleet_store, cli, tmp_path):
    missing = cli("push", "--context", "cluster1", "--kubeconfig", str(tmp_path / "nope"))
    assert missing.exit_code == 1 and "kubeconfig" in one_line_error(missing)
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nclusters: [\n")
    bad = cli("push", "--context", "cluster1", "--kubeconfig", str(broken))
    assert bad.exit_code == 1 and "kubeconfig" in one_line_error(bad)


def test_usage_errors(fleet_store, cli):
    nothing = cli("push")
    assert nothing.exit_code == 2 and "--all" in one_line_error(nothing)
    bad_name = cli("push", "Bad_Name", "--context", "cluster1")
    assert bad_name.exit_code == 2


def test_tls_format(fleet_store, push, kube_api):
    result = push("--context", "cluster2", "--format", "tls")
    assert result.exit_code == 0, result.output
    live = kube_api.cluster("cluster2").get_secret(NS, NAME)["data"]
    files = store_files(fleet_store, "cluster2")
    assert live == {"tls.crt": files["ca-cert.pem"], "tls.key": files["ca-key.pem"], "ca.crt": files["root-cert.pem"]}


def test_output_yaml_prints_the_stored_object(fleet_store, push, kube_api):
    result = push("--context", "cluster1", "-o", "yaml")
    assert result.exit_code == 0, result.output
    obj = yaml.safe_load(result.stdout)
    assert obj["kind"] == "Secret" and obj["metadata"]["resourceVersion"]
    files = store_files(fleet_store, "cluster1")
    key = files.pop("ca-key.pem")
    assert obj["data"].pop("ca-key.pem") == f"REDACTED ({len(key)} bytes of private key)"
    assert {k: base64.b64decode(v) for k, v in obj["data"].items()} == files
    as_json = push("--context", "cluster1", "-o", "json")  # unchanged: prints the live secret, redacted too
    assert json.loads(as_json.stdout)["metadata"]["name"] == NAME
    for out in (result.output, as_json.output):
        assert base64.b64encode(key).decode()[:40] not in out and b"PRIVATE KEY" not in out.encode()
    tls = push("cluster2", "--context", "cluster2", "--format", "tls", "-o", "json")
    assert json.loads(tls.stdout)["data"]["tls.key"].startswith("REDACTED")


def test_dry_run_plans_and_touches_nothing(fleet_store, push, kube_api):
    result = push("--context", "cluster1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "create" in result.output and "dry run, nothing written" in result.output
    vc = kube_api.cluster("cluster1")
    assert vc.writes == [] and vc.get_secret(NS, NAME) is None


def test_dry_run_yaml_works_offline(fleet_store, push, kube_api):
    result = push("cluster1", "--context", "down", "--dry-run", "-o", "yaml")
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.stdout)
    assert manifest["metadata"] == {**manifest["metadata"], "name": NAME, "namespace": NS}
    assert "no plan computed" in result.stderr
    # still a manifest kubectl can apply: the key is there, and stderr says so and how to seal it
    assert base64.b64decode(manifest["data"]["ca-key.pem"]) == store_files(fleet_store, "cluster1")["ca-key.pem"]
    assert "private key (ca-key.pem) in clear" in result.stderr
    assert "kubeseal" in result.stderr and "sops --encrypt" in result.stderr


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_dry_run_manifest_data_equals_kubectl(fleet_store, push, kube_api, tmp_path):
    folder = fleet_store.cluster_dir("cluster1")
    done = subprocess.run(
        ["kubectl", "create", "secret", "generic", NAME, "-n", NS, *[f"--from-file={f}" for f in FILES],
         "--dry-run=client", "-o", "yaml"],
        cwd=folder, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "KUBECONFIG": "/dev/null",
                                                         "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    theirs = yaml.safe_load(done.stdout)
    ours = yaml.safe_load(push("cluster1", "--context", "down", "--dry-run", "-o", "yaml").stdout)
    assert ours["data"] == theirs["data"]
    assert (ours["kind"], ours["apiVersion"]) == (theirs["kind"], theirs["apiVersion"])
    assert (ours["metadata"]["name"], ours["metadata"]["namespace"]) == (NAME, NS)


def test_push_all_over_two_contexts(fleet_store, push, kube_api, tmp_path):
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("clusters:\n  - name: cluster1\n    context: cluster1\n  - name: cluster2\n    context: cluster2\n")
    env = {"MESHPKI_CONFIG": str(fleet)}
    result = push("--all", env=env)
    assert result.exit_code == 0, result.output
    for cluster in ("cluster1", "cluster2"):
        assert kube_api.cluster(cluster).get_secret(NS, NAME)["data"] == store_files(fleet_store, cluster)
    again = push("--all", env=env)
    assert again.output.count("unchanged, nothing written") == 2


def test_push_all_reports_each_failure_and_goes_on(fleet_store, push, kube_api, tmp_path):
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("clusters:\n  - name: cluster1\n    context: down\n  - name: cluster2\n    context: cluster2\n")
    result = push("--all", env={"MESHPKI_CONFIG": str(fleet)})
    assert result.exit_code == 1
    assert "refused" in result.output.lower() and "1 of 2 pushes failed" in result.output
    assert kube_api.cluster("cluster2").get_secret(NS, NAME) is not None
    assert "Traceback" not in result.output


def test_verify_context_reads_the_live_secret_and_reports_drift(fleet_store, push, cli, kubeconfig, kube_api):
    def verify(*args):
        return cli("verify", "--kubeconfig", str(kubeconfig), "-o", "json", *args)

    missing = verify("--context", "cluster1")
    assert missing.exit_code == 1
    data = json.loads(missing.stdout)
    assert [f["code"] for f in data["results"][0]["findings"]] == ["missing-secret"]
    assert push("--context", "cluster1").exit_code == 0
    assert push("--context", "cluster2").exit_code == 0
    same = verify("--context", "cluster1", "--context", "cluster2")
    assert same.exit_code == 0, same.output
    data = json.loads(same.stdout)
    assert [r["target"] for r in data["results"]] == ["live:cluster1", "live:cluster2"]
    assert all(any(f["code"] == "matches-store" for f in r["findings"]) for r in data["results"])
    assert data["pairs"] and data["pairs"][0]["ok"]
    assert cli("rotate", "cluster1").exit_code == 0
    drifted = verify("--context", "cluster1")
    assert drifted.exit_code == 0
    finding = next(f for f in json.loads(drifted.stdout)["results"][0]["findings"] if f["code"] == "drift")
    assert finding["severity"] == "warning" and "ca-cert.pem" in finding["message"]
    assert verify("--context", "cluster1", "--strict").exit_code == 1
    down = cli("verify", "--kubeconfig", str(kubeconfig), "--context", "down")
    assert down.exit_code == 1 and "unreadable-secret" in down.output and "refused" in down.output.lower()
    assert "Traceback" not in down.output


def test_a_secrets_only_role_can_push(fleet_store, cli, kube_api, tmp_path):
    """samples/push-rbac.yaml grants secrets in istio-system and nothing on
    namespaces: the first push must still work when the namespace exists, and
    say clearly what is missing when it does not."""
    from tests.kubeapi import Context

    vc = kube_api.cluster("cluster1")
    vc.add_token("pusher-token", "pusher", resources={"secrets"})
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kc", {"pusher": Context("cluster1", "pusher-token")})
    no_ns = cli("push", "cluster1", "--context", "pusher", "--kubeconfig", str(kubeconfig))
    assert no_ns.exit_code == 1
    assert "istio-system" in one_line_error(no_ns) and "Traceback" not in no_ns.output
    vc.add_namespace(NS)
    ok = cli("push", "cluster1", "--context", "pusher", "--kubeconfig", str(kubeconfig))
    assert ok.exit_code == 0, ok.output
    assert vc.get_secret(NS, NAME)["data"] == store_files(fleet_store, "cluster1")


def test_push_without_cluster_or_context_uses_the_current_context(fleet_store, push, kube_api, kubeconfig, tmp_path):
    result = push()
    assert result.exit_code == 0, result.output
    assert "current context cluster1" in result.stderr
    assert kube_api.cluster("cluster1").get_secret(NS, NAME)["data"] == store_files(fleet_store, "cluster1")
    assert kube_api.cluster("cluster2").get_secret(NS, NAME) is None
    # a kubeconfig without a current-context: one line that says what to name
    bare = tmp_path / "bare-kubeconfig"
    bare.write_text(kubeconfig.read_text().replace("current-context: cluster1", "current-context: ''"))
    before = kube_api.cluster("cluster1").writes
    refused = push("--kubeconfig", str(bare))
    assert refused.exit_code == 2 and "sets no current-context" in one_line_error(refused)
    assert kube_api.cluster("cluster1").writes == before
