"""The keyless in-cluster audit: push writes the public ConfigMap beside the
secret; `audit --public-only` grades from it with a token that can read only
that ConfigMap; metrics go to a Pushgateway; the samples say the same."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from meshpki import ca, public
from meshpki.keys import KeyType
from meshpki.store import Store
from tests.conftest import one_line_error
from tests.kubeapi import Context, KubeAPIServer

NS = "istio-system"
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture
def issued(store: Store) -> Store:
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, ["cluster1", "cluster2"], ca.IssueOptions(), ca.store_issuer(store, None))
    return store


def configmap(kube_api: KubeAPIServer, cluster: str = "cluster1") -> dict | None:
    return kube_api.cluster(cluster).get_object("configmaps", NS, public.PUBLIC_NAME)


def test_push_writes_the_public_configmap_without_the_key(cli, kube_api, kubeconfig, issued):
    result = cli("push", "cluster1", "--context", "cluster1", "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 0, result.output
    assert "configmap istio-system/meshpki-public created: certificates and CRL, no key" in result.output
    cm = configmap(kube_api)
    files = dict(issued.load_bundle("cluster1").secret_data())
    assert cm is not None and set(cm["data"]) == {k for k in files if k != "ca-key.pem"}
    assert all(cm["data"][k].encode() == files[k] for k in cm["data"])
    assert "PRIVATE KEY" not in json.dumps(cm)
    assert cm["metadata"]["labels"] == kube_api.cluster("cluster1").get_secret(NS, "cacerts")["metadata"]["labels"]
    # unchanged: nothing written; after a rotation: updated conditionally
    vc = kube_api.cluster("cluster1")
    vc.clear_requests()
    again = cli("push", "cluster1", "--context", "cluster1", "--kubeconfig", str(kubeconfig))
    assert again.exit_code == 0 and vc.writes == [] and "meshpki-public" not in again.output
    assert cli("rotate", "cluster1").exit_code == 0
    rotated = cli("push", "cluster1", "--context", "cluster1", "--kubeconfig", str(kubeconfig))
    assert "configmap istio-system/meshpki-public updated" in rotated.output
    assert configmap(kube_api)["data"]["ca-cert.pem"].encode() == issued.load_bundle("cluster1").files["ca-cert.pem"]
    assert ("PUT", f"/api/v1/namespaces/{NS}/configmaps/{public.PUBLIC_NAME}") in vc.writes


def test_a_secrets_only_identity_pushes_and_is_told_about_the_configmap(cli, kube_api, tmp_path, issued):
    vc = kube_api.cluster("cluster1")
    vc.add_namespace(NS)
    vc.add_token("pusher", "pusher", resources={"secrets"})
    kc = kube_api.write_kubeconfig(tmp_path / "kc", {"p": Context("cluster1", "pusher")})
    result = cli("push", "cluster1", "--context", "p", "--kubeconfig", str(kc))
    assert result.exit_code == 0, result.output
    assert vc.get_secret(NS, "cacerts") is not None and configmap(kube_api) is None
    assert "warning: configmap istio-system/meshpki-public" in result.output and "403" in result.output


@pytest.fixture
def public_only_kubeconfig(cli, kube_api, kubeconfig, tmp_path, issued) -> Path:
    """cluster1 and cluster2 pushed; contexts whose token may get only the public ConfigMap."""
    for name in ("cluster1", "cluster2"):
        assert cli("push", name, "--context", name, "--kubeconfig", str(kubeconfig)).exit_code == 0
        kube_api.cluster(name).add_token("auditor", "auditor", verbs={"get"}, resources={"configmaps"},
                                         names={public.PUBLIC_NAME})
        kube_api.cluster(name).clear_requests()
    return kube_api.write_kubeconfig(tmp_path / "auditor-kc", {n: Context(n, "auditor") for n in ("cluster1", "cluster2")})


def test_audit_public_only_grades_without_reading_a_secret(cli, kube_api, public_only_kubeconfig, store_path):
    kc = str(public_only_kubeconfig)
    result = cli("audit", "--public-only", "--kubeconfig", kc, "--context", "cluster1", "--context", "cluster2",
                 "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    live = [r for r in data["rows"] if r["source"] == "live"]
    assert {r["cluster"] for r in live} == {"cluster1", "cluster2"}
    assert {r["role"] for r in live} == {"root", "intermediate"} and all(r["grade"] == "OK" for r in live)
    for name in ("cluster1", "cluster2"):
        paths = [p for _, p in kube_api.cluster(name).requests]
        assert paths == [f"/api/v1/namespaces/{NS}/configmaps/{public.PUBLIC_NAME}"]
    # the same token cannot read the secret: the restriction is real
    denied = cli("audit", "--kubeconfig", kc, "--context", "cluster1", "-o", "json")
    assert denied.exit_code == 3 and "403" in denied.stdout


def test_audit_public_only_sees_expiry_and_a_missing_configmap(cli, kube_api, public_only_kubeconfig):
    kube_api.cluster("cluster2").delete_object("configmaps", NS, public.PUBLIC_NAME)
    result = cli("audit", "--public-only", "--kubeconfig", str(public_only_kubeconfig), "--context", "cluster1",
                 "--context", "cluster2", "--at", "2099-01-01", "-o", "json")
    data = json.loads(result.stdout)
    assert result.exit_code == 2, result.output  # expired by 2099: critical outranks unknown
    live = [r for r in data["rows"] if r["source"] == "live"]
    assert any(r["cluster"] == "cluster1" and r["codes"][0] == "expired" for r in live)
    [row] = [r for r in live if r["cluster"] == "cluster2"]
    assert row["grade"] == "UNKNOWN" and "no configmap istio-system/meshpki-public" in row["reason"]
    assert "meshpki push cluster2" in row["reason"]


class _Gateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_pushgateway_gets_the_exposition(cli, kube_api, public_only_kubeconfig):
    server = HTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _Gateway.received.clear()
        result = cli("audit", "--public-only", "--kubeconfig", str(public_only_kubeconfig), "--context", "cluster1",
                     "--pushgateway", f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    [(path, content_type, body)] = _Gateway.received
    assert path == "/metrics/job/meshpki_audit" and content_type.startswith("text/plain; version=0.0.4")
    names = {m.name for m in text_string_to_metric_families(body.decode())}
    assert any(n.startswith("meshpki_") for n in names)
    down = cli("audit", "--public-only", "--kubeconfig", str(public_only_kubeconfig), "--context", "cluster1",
               "--pushgateway", KubeAPIServer.refused_url().replace("https", "http"))
    assert down.exit_code == 3 and "cannot push metrics to --pushgateway" in down.output


@pytest.mark.parametrize("url", ["", "::::", "file:///etc/hostname#", "pushgateway:9091", "http://"])
def test_a_pushgateway_that_is_no_http_url_is_a_usage_error_before_any_read(cli, kube_api, public_only_kubeconfig, url):
    calls = len(kube_api.cluster("cluster1").calls)
    result = cli("audit", "--public-only", "--kubeconfig", str(public_only_kubeconfig), "--context", "cluster1",
                 "--pushgateway", url)
    assert result.exit_code == 2
    assert "is not an http:// or https:// URL" in one_line_error(result)
    assert len(kube_api.cluster("cluster1").calls) == calls  # refused before the audit read anything


def test_cronjob_sample_reads_only_the_public_configmap_and_uses_no_host_path():
    docs = {d["kind"]: d for d in yaml.safe_load_all((SAMPLES / "audit-cronjob.yaml").read_text())}
    assert docs["Role"]["metadata"]["namespace"] == NS
    assert docs["Role"]["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                      "resourceNames": [public.PUBLIC_NAME], "verbs": ["get"]}]
    binding = docs["RoleBinding"]
    sa = docs["ServiceAccount"]["metadata"]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]
    pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert all("hostPath" not in v for v in pod["volumes"])
    [container] = pod["containers"]
    assert "--public-only" in container["args"] and any(a.startswith("--pushgateway=") for a in container["args"])
    from meshpki.cli import cli as meshpki_cli

    known = {opt for p in meshpki_cli.commands["audit"].params for opt in p.opts}
    assert {a.split("=")[0] for a in container["args"][1:]} <= known


def test_push_rbac_sample_creates_nothing_but_cacerts_and_the_configmap():
    docs = list(yaml.safe_load_all((SAMPLES / "push-rbac.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    creates = [r for r in kinds["Role"]["rules"] if "create" in r["verbs"]]
    assert all("resourceNames" not in r for r in creates)  # RBAC cannot narrow create: the policy must
    policy = kinds["ValidatingAdmissionPolicy"]
    sa = kinds["ServiceAccount"]["metadata"]
    assert f"system:serviceaccount:{sa['namespace']}:{sa['name']}" in policy["spec"]["matchConditions"][0]["expression"]
    [check] = policy["spec"]["validations"]
    assert "'cacerts'" in check["expression"] and f"'{public.PUBLIC_NAME}'" in check["expression"]
    assert {r for rule in creates for r in rule["resources"]} == set(
        policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"])
    assert kinds["ValidatingAdmissionPolicyBinding"]["spec"]["policyName"] == policy["metadata"]["name"]


def _admits(policy: dict, username: str, resource: str, name: str) -> bool:
    """Admission of one CREATE as the API server decides it for this policy: it
    applies when every matchCondition holds, and then every validation must.
    The CEL is evaluated by cel-python, not read by eye."""
    import celpy

    env = celpy.Environment()
    request = {"userInfo": {"username": username}, "operation": "CREATE",
               "resource": {"group": "", "version": "v1", "resource": resource}}
    activation = {"request": celpy.json_to_cel(request),
                  "object": celpy.json_to_cel({"metadata": {"name": name, "namespace": "istio-system"}})}

    def holds(expression: str) -> bool:
        return bool(env.program(env.compile(expression)).evaluate(activation))

    spec = policy["spec"]
    if not all(holds(c["expression"]) for c in spec["matchConditions"]):
        return True  # the policy does not apply; RBAC alone decides
    return all(holds(v["expression"]) for v in spec["validations"])


@pytest.mark.parametrize(("username", "resource", "name", "allowed"), [
    ("system:serviceaccount:istio-system:meshpki-pusher", "secrets", "cacerts", True),
    ("system:serviceaccount:istio-system:meshpki-pusher", "configmaps", "meshpki-public", True),
    # a token Secret for istiod's service account, or any other secret: refused
    ("system:serviceaccount:istio-system:meshpki-pusher", "secrets", "istiod-token", False),
    ("system:serviceaccount:istio-system:meshpki-pusher", "secrets", "meshpki-public", False),
    ("system:serviceaccount:istio-system:meshpki-pusher", "configmaps", "cacerts", False),
    # anyone else is not this policy's business
    ("system:serviceaccount:istio-system:istiod", "secrets", "istiod-token", True),
    ("kubernetes-admin", "secrets", "anything", True),
])
def test_push_policy_cel_lets_the_pusher_create_only_its_two_objects(username, resource, name, allowed):
    docs = {d["kind"]: d for d in yaml.safe_load_all((SAMPLES / "push-rbac.yaml").read_text())}
    assert _admits(docs["ValidatingAdmissionPolicy"], username, resource, name) is allowed

