"""`meshpki remote-secret` against the local API server: service accounts,
RBAC, token Secrets filled by its token controller, TokenRequest, and a
minted token that really only reads its own cluster."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from meshpki import kube
from meshpki.errors import KubeError
from meshpki.push import MANAGED_BY_LABEL
from meshpki.remote import (
    ANN_CLUSTER,
    ANN_TOKEN_SECRET,
    ANN_TOKEN_TTL,
    LABEL_MULTICLUSTER,
    READER_ROLE,
    kubeconfig_token,
    token_expiry,
)
from meshpki.render import iso
from tests.conftest import one_line_error
from tests.kubeapi import Context

NS = "istio-system"
SA = "istio-reader-service-account"
SECRET = "istio-remote-secret-cluster2"


@pytest.fixture
def mesh(kube_api):
    """cluster1 (primary) and cluster2 (remote), both with istio-system."""
    for name in ("cluster1", "cluster2"):
        kube_api.cluster(name).add_namespace(NS)
    return kube_api


@pytest.fixture
def rs(cli, kubeconfig, mesh):
    def run(*args: str, env=None):
        return cli("remote-secret", "--kubeconfig", str(kubeconfig), "--timeout", "5", "--token-wait", "5",
                   *args, env=env)

    return run


def primary_secret(kube_api, name: str = SECRET, cluster: str = "cluster1"):
    return kube_api.cluster(cluster).get_secret(NS, name)


def test_first_run_sets_up_remote_reader_and_primary_secret(rs, mesh):
    result = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1")
    assert result.exit_code == 0, result.output
    remote = mesh.cluster("cluster2")
    assert remote.get_object("serviceaccounts", NS, SA) is not None
    role = remote.get_object("clusterroles", None, READER_ROLE)
    assert {v for rule in role["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    binding = remote.get_object("clusterrolebindings", None, f"{READER_ROLE}-{NS}-{SA}")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]
    live = primary_secret(mesh)
    assert live["metadata"]["labels"] == {LABEL_MULTICLUSTER: "true", MANAGED_BY_LABEL: "meshpki"}
    assert live["metadata"]["annotations"][ANN_CLUSTER] == "cluster2"
    assert set(live["data"]) == {"cluster2"}
    config = yaml.safe_load(live["data"]["cluster2"])
    assert config["current-context"] == "cluster2" and [c["name"] for c in config["contexts"]] == ["cluster2"]
    assert config["clusters"][0]["cluster"]["server"] == remote.url
    assert base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]) == mesh.ca_pem
    token_secret = remote.get_secret(NS, live["metadata"]["annotations"][ANN_TOKEN_SECRET])
    assert token_secret["type"] == "kubernetes.io/service-account-token"
    assert token_secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == SA
    assert kubeconfig_token(live["data"]["cluster2"]) == token_secret["data"]["token"].decode()
    assert token_expiry(token_secret["data"]["token"].decode()) is None, "a token Secret's token never expires"
    assert "loopback address" in result.stderr, "127.0.0.1 cannot be reached from another cluster"
    assert "created, read back and identical" in result.stdout


def test_minted_kubeconfig_reads_only_its_own_cluster(rs, mesh, tmp_path):
    mesh.cluster("cluster2").put_object("services", {"metadata": {"name": "reviews", "namespace": "default"}})
    mesh.cluster("cluster1").put_object("services", {"metadata": {"name": "ratings", "namespace": "default"}})
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1").exit_code == 0
    minted = tmp_path / "minted"
    minted.write_bytes(primary_secret(mesh)["data"]["cluster2"])
    services = kube.op("list", "services", None, "")
    with kube.Cluster.connect("cluster2", minted, timeout=5) as conn:  # istiod's view of the remote
        listed = conn.read_object(services, "/api/v1/services")
        assert [s["metadata"]["name"] for s in listed["items"]] == ["reviews"]
        assert conn.read_object(kube.op("list", "nodes", None, ""), "/api/v1/nodes") is not None
        for write in (lambda: conn.create_secret("default", "x", {"k": b"v"}),
                      lambda: conn.delete_secret(NS, SECRET),
                      lambda: conn.create_object(kube.op("create", "services", "default", "y"),
                                                 "/api/v1/namespaces/default/services", {"metadata": {"name": "y"}})):
            with pytest.raises(KubeError) as refused:
                write()
            assert refused.value.status == 403
    doc = yaml.safe_load(minted.read_text())
    doc["clusters"][0]["cluster"]["server"] = mesh.cluster("cluster1").url  # the same token, another cluster
    minted.write_text(yaml.safe_dump(doc))
    with kube.Cluster.connect("cluster2", minted, timeout=5) as conn, pytest.raises(KubeError) as refused:
        conn.read_object(services, "/api/v1/services")
    assert refused.value.status == 401


def test_second_run_is_unchanged_and_writes_nothing(rs, mesh):
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1").exit_code == 0
    for name in ("cluster1", "cluster2"):
        mesh.cluster(name).clear_requests()
    again = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "-o", "json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["action"] == "unchanged"
    assert mesh.cluster("cluster1").writes == [] and mesh.cluster("cluster2").writes == []


def test_rotate_updates_primary_then_deletes_old_token(rs, mesh):
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1").exit_code == 0
    old_name = primary_secret(mesh)["metadata"]["annotations"][ANN_TOKEN_SECRET]
    old_token = kubeconfig_token(primary_secret(mesh)["data"]["cluster2"])
    result = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--rotate")
    assert result.exit_code == 0, result.output
    live = primary_secret(mesh)
    new_name = live["metadata"]["annotations"][ANN_TOKEN_SECRET]
    assert new_name != old_name and kubeconfig_token(live["data"]["cluster2"]) != old_token
    remote = mesh.cluster("cluster2")
    assert remote.get_secret(NS, old_name) is None
    assert f"deleted the old token Secret {NS}/{old_name}" in result.stdout
    assert remote._token_user(old_token) is None, "the old token no longer authenticates"
    assert remote._token_user(kubeconfig_token(live["data"]["cluster2"])) is not None


def test_rotate_keeps_old_token_when_primary_write_fails(rs, mesh):
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1").exit_code == 0
    before = primary_secret(mesh)
    old_name = before["metadata"]["annotations"][ANN_TOKEN_SECRET]
    remote = mesh.cluster("cluster2")
    secrets_before = {k for k in remote._secrets}
    mesh.cluster("cluster1").fail_next(500, methods=["PUT"], skip=1)  # the dryRun=All PUT passes, the real one fails
    failed = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--rotate")
    assert failed.exit_code == 1
    assert "500" in one_line_error(failed)
    assert primary_secret(mesh)["data"] == before["data"]
    assert remote.get_secret(NS, old_name) is not None, "the old token stays while the primary holds it"
    assert {k for k in remote._secrets} == secrets_before, "the new token Secret was removed again"


def test_token_ttl_uses_an_expiring_token_request(rs, mesh):
    before = dt.datetime.now(dt.UTC)
    result = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "2h", "-o", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["token"] == "TokenRequest" and summary["action"] == "create"
    live = primary_secret(mesh)
    assert ANN_TOKEN_SECRET not in live["metadata"]["annotations"]
    expires = token_expiry(kubeconfig_token(live["data"]["cluster2"]))
    assert before + dt.timedelta(hours=2) - dt.timedelta(minutes=1) <= expires <= before + dt.timedelta(hours=2, minutes=1)
    remote = mesh.cluster("cluster2")
    assert not [k for k, o in remote._secrets.items() if o["type"] == "kubernetes.io/service-account-token"]
    assert kubeconfig_token(live["data"]["cluster2"]) not in result.output, "the summary never shows the token"
    assert live["metadata"]["annotations"][ANN_TOKEN_TTL] == "2h" and summary["token_ttl"] == "2h"
    again = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "2h", "-o", "json")
    assert json.loads(again.stdout)["action"] == "unchanged", "a valid TokenRequest token is kept"
    kept = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "-o", "json")
    assert json.loads(kept.stdout)["action"] == "unchanged", "without --token-ttl the secret keeps its kind"
    switched = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "never")
    assert switched.exit_code == 0, switched.output
    live = primary_secret(mesh)
    assert token_expiry(kubeconfig_token(live["data"]["cluster2"])) is None
    assert ANN_TOKEN_TTL not in live["metadata"]["annotations"] and ANN_TOKEN_SECRET in live["metadata"]["annotations"]
    assert "never expires" in switched.stdout


def test_short_token_ttl_is_a_usage_error(rs):
    result = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "5m")
    assert result.exit_code == 2 and "shorter than 10m" in one_line_error(result)
    typo = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "nevr")
    assert typo.exit_code == 2 and "or never for a long-lived token Secret" in one_line_error(typo)


def token_lifetime_of(mesh) -> dt.timedelta:
    token = kubeconfig_token(primary_secret(mesh)["data"]["cluster2"])
    return token_expiry(token) - dt.datetime.now(dt.UTC)


def test_rotate_keeps_a_token_request_and_its_lifetime(rs, mesh):
    first = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "40d")
    assert first.exit_code == 0, first.output
    old_token = kubeconfig_token(primary_secret(mesh)["data"]["cluster2"])
    for name in ("cluster1", "cluster2"):
        mesh.cluster(name).clear_requests()
    rotated = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--rotate")
    assert rotated.exit_code == 0, rotated.output
    live = primary_secret(mesh)
    assert kubeconfig_token(live["data"]["cluster2"]) != old_token
    assert dt.timedelta(days=40, minutes=-1) < token_lifetime_of(mesh) <= dt.timedelta(days=40)
    assert live["metadata"]["annotations"][ANN_TOKEN_TTL] == "40d" and ANN_TOKEN_SECRET not in live["metadata"]["annotations"]
    assert "token: TokenRequest for 40d, expires" in rotated.stdout
    remote = mesh.cluster("cluster2")
    assert not [k for k, o in remote._secrets.items() if o["type"] == "kubernetes.io/service-account-token"]
    assert not [w for w in remote.writes if "/secrets" in w[1]], "no token Secret, not even a dry-run one"


def test_rotate_tells_the_lifetime_from_the_token_without_meshpkis_annotation(rs, mesh):
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "3h").exit_code == 0
    primary = mesh.cluster("cluster1")
    live = primary_secret(mesh)
    annotations = {k: v for k, v in live["metadata"]["annotations"].items() if k != ANN_TOKEN_TTL}
    primary.put_secret(NS, SECRET, live["data"], live["metadata"]["labels"], annotations)  # an older meshpki's
    rotated = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--rotate")
    assert rotated.exit_code == 0, rotated.output
    assert dt.timedelta(hours=3, minutes=-1) < token_lifetime_of(mesh) <= dt.timedelta(hours=3)
    assert primary_secret(mesh)["metadata"]["annotations"][ANN_TOKEN_TTL] == "3h"


def test_a_token_whose_lifetime_cannot_be_told_is_refused_in_one_line(rs, mesh):
    from meshpki.remote import build_kubeconfig

    claims = base64.urlsafe_b64encode(json.dumps({"exp": 4102444800}).encode()).decode().rstrip("=")
    kubeconfig = build_kubeconfig("cluster2", mesh.cluster("cluster2").url, None, f"e30.{claims}.sig")
    mesh.cluster("cluster1").put_secret(NS, SECRET, {"cluster2": kubeconfig}, {LABEL_MULTICLUSTER: "true"},
                                        {ANN_CLUSTER: "cluster2"})
    before = primary_secret(mesh)
    for name in ("cluster1", "cluster2"):
        mesh.cluster(name).clear_requests()
    refused = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--rotate")
    assert refused.exit_code == 1
    line = one_line_error(refused)
    assert "cannot be told" in line and "--token-ttl DURATION" in line and "--token-ttl never" in line
    assert primary_secret(mesh) == before and mesh.cluster("cluster2").writes == []
    told = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--rotate", "--token-ttl", "1d")
    assert told.exit_code == 0, told.output
    assert dt.timedelta(hours=23, minutes=59) < token_lifetime_of(mesh) <= dt.timedelta(days=1)


def test_another_token_ttl_makes_a_new_token(rs, mesh):
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "2h").exit_code == 0
    longer = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "90d", "-o", "json")
    assert longer.exit_code == 0, longer.output
    assert json.loads(longer.stdout)["action"] == "update" and json.loads(longer.stdout)["token_ttl"] == "90d"
    assert dt.timedelta(days=90, minutes=-1) < token_lifetime_of(mesh) <= dt.timedelta(days=90)


def test_a_token_within_audits_warn_days_is_warned_about(rs):
    short = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "30d")
    assert short.exit_code == 0, short.output
    assert "tokens that live 30d are within audit's default --warn-days 30" in short.stderr
    longer = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "90d")
    assert longer.exit_code == 0 and "--warn-days" not in longer.stderr


def nothing_changed(mesh) -> None:
    remote, primary = mesh.cluster("cluster2"), mesh.cluster("cluster1")
    assert remote.get_object("serviceaccounts", NS, SA) is None
    assert remote.get_object("clusterroles", None, READER_ROLE) is None
    assert not [k for k in remote._secrets if k[0] == NS]
    assert primary.get_secret(NS, SECRET) is None


def test_remote_refusing_the_clusterrole_names_the_rule_and_changes_nothing(cli, mesh, tmp_path):
    mesh.cluster("cluster2").add_token("ops", "ops", resources={"serviceaccounts", "secrets"})
    config = mesh.write_kubeconfig(tmp_path / "kc", {"primary": Context("cluster1"), "remote": Context("cluster2", "ops")})
    result = cli("remote-secret", "cluster2", "--kubeconfig", str(config), "--context", "remote",
                 "--primary-context", "primary")
    assert result.exit_code == 1
    line = one_line_error(result)
    assert 'may not create clusterrole meshpki-istio-reader (403 Forbidden' in line
    assert 'apiGroups ["rbac.authorization.k8s.io"], resources ["clusterroles"], verbs ["create"]' in line
    assert "escalate" in line
    nothing_changed(mesh)


def test_primary_refusing_changes_nothing_in_the_remote(cli, mesh, tmp_path):
    mesh.cluster("cluster1").add_token("reader", "reader", readonly=True)
    config = mesh.write_kubeconfig(tmp_path / "kc", {"primary": Context("cluster1", "reader"),
                                                     "remote": Context("cluster2")})
    result = cli("remote-secret", "cluster2", "--kubeconfig", str(config), "--context", "remote",
                 "--primary-context", "primary")
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "context primary" in line and "may not create secret istio-system/istio-remote-secret-cluster2" in line
    nothing_changed(mesh)


def test_token_that_never_appears_is_one_line_and_leaves_no_token_secret(rs, mesh):
    mesh.cluster("cluster2").token_controller = False
    result = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-wait", "0.3")
    assert result.exit_code == 1
    assert "did not fill token Secret" in one_line_error(result) and "--token-ttl" in result.output
    assert not [k for k in mesh.cluster("cluster2")._secrets if k[0] == NS]
    assert primary_secret(mesh) is None


@pytest.mark.parametrize("option", ["--context", "--primary-context"])
def test_unknown_context_is_one_line_and_nothing_is_written(rs, mesh, option):
    args = {"--context": "cluster2", "--primary-context": "cluster1"}
    args[option] = "nowhere"
    result = rs("cluster2", *[x for kv in args.items() for x in kv])
    assert result.exit_code == 1
    assert 'context "nowhere" not found' in one_line_error(result)
    assert mesh.cluster("cluster1").requests == [] and mesh.cluster("cluster2").requests == []


def test_dry_run_writes_nowhere_and_warns_about_the_token(rs, mesh):
    first = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--dry-run", "-o", "yaml")
    assert first.exit_code == 1 and "run without --dry-run" in one_line_error(first)
    nothing_changed(mesh)
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1").exit_code == 0
    mesh.cluster("cluster1").delete_secret(NS, SECRET)
    for name in ("cluster1", "cluster2"):
        mesh.cluster(name).clear_requests()
    shown = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--dry-run", "-o", "yaml")
    assert shown.exit_code == 0, shown.output
    manifest = yaml.safe_load(shown.stdout)
    assert manifest["metadata"]["name"] == SECRET and manifest["metadata"]["labels"][LABEL_MULTICLUSTER] == "true"
    assert kubeconfig_token(base64.b64decode(manifest["data"]["cluster2"]))
    assert "holds a bearer token" in shown.stderr and "would create" in shown.stderr
    assert mesh.cluster("cluster1").writes == [] and mesh.cluster("cluster2").writes == []
    assert primary_secret(mesh) is None
    rotating = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--dry-run", "--rotate")
    assert rotating.exit_code == 1 and "--rotate asks for a new token" in one_line_error(rotating)


def test_conflicting_writer_on_the_primary_is_one_line(rs, mesh):
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1").exit_code == 0
    mesh.cluster("cluster1").conflict_next_write()
    result = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--rotate")
    assert result.exit_code == 1
    assert "409 Conflict" in one_line_error(result)


FLEET = """
clusters:
  - name: east
    context: cluster1
    remotes: [west]
  - name: west
    context: cluster2
    remotes: [east]
"""


def test_all_sets_up_every_primary_from_the_fleet_file(rs, mesh, tmp_path):
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text(FLEET)
    result = rs("--all", "--config", str(fleet), "-o", "json")
    assert result.exit_code == 0, result.output
    assert mesh.cluster("cluster1").get_secret(NS, "istio-remote-secret-west") is not None
    assert mesh.cluster("cluster2").get_secret(NS, "istio-remote-secret-east") is not None
    token_secret = mesh.cluster("cluster2").get_secret(
        NS, mesh.cluster("cluster1").get_secret(NS, "istio-remote-secret-west")["metadata"]["annotations"][ANN_TOKEN_SECRET])
    assert token_secret["metadata"]["labels"]["meshpki.io/remote-secret-for"] == "east"
    single = rs("west", "--config", str(fleet))  # contexts and primary from the fleet file
    assert single.exit_code == 0 and "unchanged" in single.stdout


@pytest.mark.parametrize("body, message", [
    ("clusters:\n  - name: a\n    remotes: [b]\n", "'b', which is not a cluster of this file"),
    ("clusters:\n  - name: a\n    remotes: [a]\n", "is the cluster itself"),
    ("clusters:\n  - name: a\n    remotes: b\n", "must be a list"),
])
def test_fleet_file_remotes_are_checked(rs, tmp_path, body, message):
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text(body)
    result = rs("--all", "--config", str(fleet))
    assert result.exit_code == 2 and message in one_line_error(result)


# -- audit on a primary ------------------------------------------------------------

def audit_rows(cli, kubeconfig, *args: str):
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", *args)
    return result, [r for r in json.loads(result.stdout)["rows"] if r["role"] == "remote-secret"]


@pytest.fixture
def primary_with_cacerts(store_path, mesh):
    from tests.test_audit import files_of, issued_store, push_secret

    store = issued_store(store_path, "cluster1")
    push_secret(mesh, "cluster1", files_of(store, "cluster1"))
    return mesh


def test_audit_grades_an_expiring_token_and_exports_its_exp(rs, cli, kubeconfig, primary_with_cacerts):
    from prometheus_client.parser import text_string_to_metric_families

    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--token-ttl", "20d").exit_code == 0
    exp = token_expiry(kubeconfig_token(primary_secret(primary_with_cacerts)["data"]["cluster2"]))
    result, rows = audit_rows(cli, kubeconfig, "-o", "json")
    assert result.exit_code == 1, result.output  # 19 days left: within --warn-days 30
    assert [(r["cluster"], r["grade"], r["codes"]) for r in rows] == [("cluster1", "WARNING", ["expires-soon"])]
    assert rows[0]["subject"] == f"{NS}/{SECRET} -> cluster2" and rows[0]["not_after"] == iso(exp)
    assert "remote-secret cluster2 --primary-context cluster1 --rotate" in rows[0]["reason"]
    critical, rows = audit_rows(cli, kubeconfig, "-o", "json", "--crit-days", "25")
    assert critical.exit_code == 2 and rows[0]["codes"] == ["expires-critical"]
    later = (exp + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    expired, rows = audit_rows(cli, kubeconfig, "-o", "json", "--at", later)
    assert expired.exit_code == 2 and rows[0]["codes"] == ["expired"]
    fine, rows = audit_rows(cli, kubeconfig, "-o", "json", "--warn-days", "10", "--crit-days", "5")
    assert fine.exit_code == 0 and rows[0]["grade"] == "OK"
    prom = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "-o", "prometheus")
    samples = {f.name: f.samples for f in text_string_to_metric_families(prom.stdout)}
    [sample] = samples["meshpki_remote_secret_token_expiry_timestamp_seconds"]
    assert sample.labels == {"primary": "cluster1", "cluster": "cluster2"} and sample.value == exp.timestamp()
    lint = subprocess.run(["promtool", "check", "metrics"], input=prom.stdout, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_audit_a_token_that_never_expires_is_ok_without_a_metric(rs, cli, kubeconfig, primary_with_cacerts):
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1").exit_code == 0
    result, rows = audit_rows(cli, kubeconfig, "-o", "json")
    assert result.exit_code == 0, result.output
    assert [(r["grade"], r["not_after"]) for r in rows] == [("OK", None)]
    prom = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "-o", "prometheus")
    assert "meshpki_remote_secret_token_expiry_timestamp_seconds{" not in prom.stdout, "no sample without exp"


def test_audit_compares_remote_secrets_with_the_fleet_file(rs, cli, kubeconfig, tmp_path, primary_with_cacerts):
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1").exit_code == 0
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("clusters:\n  - name: cluster1\n    remotes: [cluster3]\n  - name: cluster3\n")
    result, rows = audit_rows(cli, kubeconfig, "-o", "json", "--config", str(fleet))
    assert result.exit_code == 1, result.output
    assert rows[0]["codes"] == ["remote-not-in-fleet"] and "cluster2" in rows[0]["reason"]
    data = json.loads(result.stdout)
    [missing] = [r for r in data["rows"] if "remote-secret-missing" in r["codes"]]
    assert missing["cluster"] == "cluster1" and missing["grade"] == "WARNING"
    assert "meshpki remote-secret cluster3 --primary-context cluster1" in missing["reason"]


KIND = {"kind-cluster1": Context("cluster1"), "kind-cluster2": Context("cluster2"),
        "kind-cluster3": Context("cluster3")}


@pytest.fixture
def kind(mesh, tmp_path):
    """A kind-style kubeconfig (contexts kind-NAME, clusters named NAME), as KUBECONFIG for every
    command below: the audit's hints are run exactly as printed, with no --kubeconfig added."""
    mesh.cluster("cluster3").add_namespace(NS)
    return {"KUBECONFIG": str(mesh.write_kubeconfig(tmp_path / "kind", KIND))}


def hint_of(reason: str) -> list[str]:
    """The meshpki command in an audit reason, as a shell would split it (without `meshpki`)."""
    command = shlex.split(reason[reason.index("meshpki remote-secret"):])
    assert command[0] == "meshpki"
    return command[1:]


def remote_rows(result) -> list[dict]:
    assert result.exit_code in (0, 1, 2), result.output
    return [r for r in json.loads(result.stdout)["rows"] if r["role"] == "remote-secret"]


def test_audits_rotate_hint_runs_as_printed_and_keeps_the_token_ttl(cli, kind, mesh):
    made = cli("remote-secret", "cluster2", "--context", "kind-cluster2", "--primary-context", "kind-cluster1",
               "--token-ttl", "20d", "--token-wait", "5", env=kind)
    assert made.exit_code == 0, made.output
    old = kubeconfig_token(primary_secret(mesh)["data"]["cluster2"])
    [row] = remote_rows(cli("audit", "--context", "kind-cluster1", "-o", "json", env=kind))
    assert row["codes"] == ["expires-soon"]
    hint = hint_of(row["reason"])
    assert hint == ["remote-secret", "cluster2", "--context", "kind-cluster2", "--primary-context", "kind-cluster1",
                    "--rotate"], "the remote's context, found by the server its kubeconfig names"
    followed = cli(*hint, env=kind)
    assert followed.exit_code == 0, followed.output
    token = kubeconfig_token(primary_secret(mesh)["data"]["cluster2"])
    assert token != old and token_lifetime_of(mesh) > dt.timedelta(days=19, hours=23)
    assert token_lifetime_of(mesh) <= dt.timedelta(days=20), "still a 20-day TokenRequest token"
    assert "TokenRequest for 20d" in followed.stdout


@pytest.mark.parametrize("how", ["--config", "MESHPKI_CONFIG"])
def test_audits_hints_carry_the_fleet_file(cli, kind, mesh, tmp_path, how):
    fleet = tmp_path / "my fleet.yaml"  # a space: the hint quotes it
    fleet.write_text("clusters:\n  - name: cluster1\n    context: kind-cluster1\n    remotes: [cluster2, cluster3]\n"
                     "  - name: cluster2\n    context: kind-cluster2\n  - name: cluster3\n    context: kind-cluster3\n")
    env = {**kind, "MESHPKI_CONFIG": str(fleet)} if how == "MESHPKI_CONFIG" else kind
    config = ["--config", str(fleet)] if how == "--config" else []
    made = cli("remote-secret", "cluster2", "--token-ttl", "3h", *config, env=env)
    assert made.exit_code == 0, made.output
    audited = cli("audit", "--context", "kind-cluster1", "-o", "json", *config, env=env)
    [row] = remote_rows(audited)
    assert f"--config '{fleet}'" in row["reason"]
    rotate = hint_of(row["reason"])
    assert rotate == ["remote-secret", "cluster2", "--primary-context", "kind-cluster1", "--config", str(fleet),
                      "--rotate"]
    [missing] = [r for r in json.loads(audited.stdout)["rows"] if "remote-secret-missing" in r["codes"]]
    make = hint_of(missing["reason"])
    assert make == ["remote-secret", "cluster3", "--primary-context", "kind-cluster1", "--config", str(fleet)]
    for hint in (rotate, make):  # without MESHPKI_CONFIG in the shell: --config does it
        followed = cli(*hint, env=kind)
        assert followed.exit_code == 0, followed.output
    assert mesh.cluster("cluster1").get_secret(NS, "istio-remote-secret-cluster3") is not None
    assert dt.timedelta(hours=2, minutes=59) < token_lifetime_of(mesh) <= dt.timedelta(hours=3)
    again = cli("audit", "--context", "kind-cluster1", "-o", "json", *config, env=env)
    assert not [r for r in json.loads(again.stdout)["rows"] if "remote-secret-missing" in r["codes"]]


def test_audits_hint_leaves_out_a_context_it_cannot_tell(cli, kind, mesh, tmp_path):
    assert cli("remote-secret", "cluster2", "--context", "kind-cluster2", "--primary-context", "kind-cluster1",
               "--token-ttl", "20d", env=kind).exit_code == 0
    twice = {**KIND, "admin@cluster2": Context("cluster2")}  # two contexts reach cluster2: no guess
    env = {"KUBECONFIG": str(mesh.write_kubeconfig(tmp_path / "twice", twice))}
    [row] = remote_rows(cli("audit", "--context", "kind-cluster1", "-o", "json", env=env))
    assert hint_of(row["reason"]) == ["remote-secret", "cluster2", "--primary-context", "kind-cluster1", "--rotate"]


def test_a_hint_from_a_pod_names_the_primary_by_the_fleet_file():
    from meshpki.audit import MeshLayout, Observation
    from meshpki.audit.grade import remote_secret_command
    from meshpki.config import Fleet, FleetCluster
    from meshpki.kube import IN_CLUSTER_CONTEXT

    pod = Observation("east", "live", IN_CLUSTER_CONTEXT)  # audit --cluster-name east in a CronJob
    fleet = Fleet(clusters=(FleetCluster("east", "ctx-east", None, ("west",)), FleetCluster("west", "ctx-west")),
                  path=Path("/etc/meshpki/mesh.yaml"))
    assert remote_secret_command("west", pod, MeshLayout.of(fleet), "https://west:6443", rotate=True) == (
        "meshpki remote-secret west --primary-context ctx-east --config /etc/meshpki/mesh.yaml --rotate")
    alone = Observation("in-cluster", "live", IN_CLUSTER_CONTEXT)
    assert remote_secret_command("west", alone, MeshLayout(server_contexts={"https://west:6443": "w"}),
                                 "https://west:6443") == "meshpki remote-secret west --context w", \
        "no context for the pod's own cluster: remote-secret asks for --primary-context in one line"


def test_audit_listing_refused_matters_only_on_a_fleet_primary(cli, tmp_path, primary_with_cacerts):
    mesh = primary_with_cacerts
    mesh.cluster("cluster1").add_token("getter", "getter", resources={"secrets"}, verbs={"get"})
    config = mesh.write_kubeconfig(tmp_path / "kc", {"cluster1": Context("cluster1", "getter")})
    plain = cli("audit", "--kubeconfig", str(config), "--context", "cluster1", "-o", "json")
    assert plain.exit_code == 0, plain.output  # not known as a primary: nothing expected, nothing lost
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("clusters:\n  - name: cluster1\n    remotes: [cluster2]\n  - name: cluster2\n")
    primary = cli("audit", "--kubeconfig", str(config), "--context", "cluster1", "-o", "json", "--config", str(fleet))
    assert primary.exit_code == 3, primary.output
    [row] = [r for r in json.loads(primary.stdout)["rows"] if r["grade"] == "UNKNOWN"]
    assert row["codes"] == ["remote-secrets-unreadable"] and 'verbs ["list"]' in row["reason"]


# -- the least RBAC of samples/remote-secret-rbac.yaml ---------------------------------

SAMPLE = Path(__file__).parent.parent / "samples" / "remote-secret-rbac.yaml"
PRIMARY_HALF = "# --------------------------------------------------------------- PRIMARY ----"


def apply_sample(mesh, text: str, cluster: str) -> None:
    vc = mesh.cluster(cluster)
    vc.put_object("serviceaccounts", {"metadata": {"name": "meshpki-operator", "namespace": NS}})
    for doc in yaml.safe_load_all(text):
        if doc:
            vc.put_object(doc["kind"].lower() + "s", doc)


def operator_kubeconfig(mesh, kubeconfig, tmp_path):
    tokens = {}
    for name in ("cluster1", "cluster2"):
        with kube.Cluster.connect(name, kubeconfig, timeout=5) as admin:
            tokens[name] = admin.request_token(NS, "meshpki-operator", 3600)
    return mesh.write_kubeconfig(tmp_path / "operator", {"primary": Context("cluster1", tokens["cluster1"]),
                                                         "remote": Context("cluster2", tokens["cluster2"])})


def test_the_sample_rbac_is_enough_for_every_mode(cli, mesh, kubeconfig, tmp_path):
    remote_half, primary_half = SAMPLE.read_text().split(PRIMARY_HALF)
    apply_sample(mesh, remote_half, "cluster2")
    apply_sample(mesh, primary_half, "cluster1")
    config = operator_kubeconfig(mesh, kubeconfig, tmp_path)

    def run(*args: str):
        return cli("remote-secret", "cluster2", "--kubeconfig", str(config), "--context", "remote",
                   "--primary-context", "primary", "--token-wait", "5", *args)

    for args in ((), ("--rotate",), ("--token-ttl", "1h"), ("--token-ttl", "1h", "--dry-run", "-o", "json")):
        result = run(*args)
        assert result.exit_code == 0, (args, result.output)
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("clusters:\n  - name: cluster1\n    context: primary\n    remotes: [cluster2]\n"
                     "  - name: cluster2\n    context: remote\n")
    audited = cli("audit", "--kubeconfig", str(config), "--context", "primary", "--config", str(fleet), "-o", "json")
    assert "remote-secrets-unreadable" not in audited.stdout, audited.output
    assert [r["role"] for r in json.loads(audited.stdout)["rows"]].count("remote-secret") == 1


def test_without_escalate_the_role_cannot_be_created(cli, mesh, kubeconfig, tmp_path):
    remote_half, primary_half = SAMPLE.read_text().split(PRIMARY_HALF)
    apply_sample(mesh, remote_half.replace('verbs: ["escalate", "bind"]', 'verbs: ["bind"]'), "cluster2")
    apply_sample(mesh, primary_half, "cluster1")
    config = operator_kubeconfig(mesh, kubeconfig, tmp_path)
    result = cli("remote-secret", "cluster2", "--kubeconfig", str(config), "--context", "remote",
                 "--primary-context", "primary")
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "may not create clusterrole meshpki-istio-reader" in line and 'cannot escalate' in line
    assert 'or verbs ["escalate"]' in line
    assert mesh.cluster("cluster2").get_object("serviceaccounts", NS, SA) is None, "checked before any write"


def test_rotate_never_deletes_a_secret_that_is_not_its_token(rs, mesh):
    assert rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1").exit_code == 0
    remote, primary = mesh.cluster("cluster2"), mesh.cluster("cluster1")
    remote.put_secret(NS, "cacerts", {"ca-cert.pem": b"precious"})
    live = primary.get_secret(NS, SECRET)
    primary.put_secret(NS, SECRET, live["data"], live["metadata"]["labels"],
                       {**live["metadata"]["annotations"], ANN_TOKEN_SECRET: "cacerts"})  # an edited annotation
    result = rs("cluster2", "--context", "cluster2", "--primary-context", "cluster1", "--rotate")
    assert result.exit_code == 0, result.output
    assert remote.get_secret(NS, "cacerts") is not None
    assert "is not a token Secret meshpki made" in result.stderr
