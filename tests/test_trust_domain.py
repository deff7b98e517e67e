"""The mesh's trust domain, end to end: init-root --constrain, verify, push and
audit judging against --trust-domain, and live secrets istiod filled itself."""

from __future__ import annotations

import json

from cryptography import x509

from meshpki.bundle import ISTIO_GENERATED
from tests import factories as f
from tests.conftest import one_line_error

INSECURE = "--insecure-no-passphrase"
NS, NAME = "istio-system", "cacerts"


def pinned_mesh(cli, domain: str = "prod.example") -> None:
    result = cli("init-root", INSECURE, "--key-type", "ecdsa-p256", "--trust-domain", domain, "--constrain")
    assert result.exit_code == 0, result.output
    assert f"pinned to trust domain {domain}" in result.output
    assert cli("issue", "cluster1", "cluster2").exit_code == 0


def findings(result) -> list[dict]:
    data = json.loads(result.stdout)
    return [x for r in data["results"] + data["pairs"] for x in r["findings"]]


def test_a_constrained_root_carries_critical_name_constraints(cli, store):
    pinned_mesh(cli)
    ext = store.root_cert().extensions.get_extension_for_class(x509.NameConstraints)
    assert ext.critical
    assert ext.value.permitted_subtrees == [x509.UniformResourceIdentifier("prod.example")]
    assert not ext.value.excluded_subtrees


def test_verify_accepts_the_pinned_mesh_for_its_trust_domain(cli):
    pinned_mesh(cli)
    result = cli("verify", "--trust-domain", "prod.example", "-o", "json")
    assert result.exit_code == 0, result.output
    codes = [x["code"] for x in findings(result)]
    assert codes.count("workload-ok") == 2 and "handshake-ok" in codes, "the real handshakes accept it"


def test_verify_rejects_the_pinned_mesh_for_cluster_local(cli):
    pinned_mesh(cli)
    result = cli("verify", "-o", "json")
    assert result.exit_code == 1
    hits = [x for x in findings(result) if x["code"] == "name-constrained"]
    assert hits and all(x["by"] == "proxy" for x in hits)


def test_the_trust_domain_comes_from_env_or_fleet_file(cli, tmp_path):
    pinned_mesh(cli)
    assert cli("verify", env={"MESHPKI_TRUST_DOMAIN": "prod.example"}).exit_code == 0
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("defaults:\n  trust_domain: prod.example\n")
    assert cli("verify", "--config", str(fleet)).exit_code == 0
    assert cli("verify", "--config", str(fleet), "--trust-domain", "cluster.local").exit_code == 1


def test_a_malformed_trust_domain_is_a_usage_error(cli):
    pinned_mesh(cli)
    result = cli("verify", "--trust-domain", "Not A Domain!")
    assert result.exit_code == 2 and "not a SPIFFE trust domain" in one_line_error(result)


def test_push_judges_against_the_trust_domain(cli, kubeconfig, kube_api):
    pinned_mesh(cli)
    refused = cli("push", "--kubeconfig", str(kubeconfig), "--context", "cluster1")
    assert refused.exit_code == 1 and "name-constrained" in one_line_error(refused)
    assert kube_api.cluster("cluster1").get_secret(NS, NAME) is None
    done = cli("push", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "--trust-domain", "prod.example")
    assert done.exit_code == 0, done.output


def _istiod_self_signed(kube_api) -> None:
    """What istiod writes into cacerts with USE_CACERTS_FOR_SELF_SIGNED_CA."""
    root = f.make_root("cluster.local", slot=150)
    files = {"ca-cert.pem": root.cert_pem, "ca-key.pem": root.key_pem, "cert-chain.pem": b"",
             "root-cert.pem": root.cert_pem, ISTIO_GENERATED: b""}
    kube_api.cluster("cluster1").put_secret(NS, NAME, files)


def test_verify_context_says_istiods_self_signed_ca_is_in_use(cli, kubeconfig, kube_api):
    _istiod_self_signed(kube_api)
    result = cli("verify", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "-o", "json")
    assert result.exit_code == 1
    hit = [x for x in findings(result) if x["code"] == "self-signed-ca"]
    assert len(hit) == 1 and hit[0]["by"] == "istiod" and "self-signed CA" in hit[0]["message"]


def test_audit_grades_istiods_self_signed_ca_critical(cli, kubeconfig, kube_api):
    _istiod_self_signed(kube_api)
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "-o", "json")
    assert result.exit_code == 2, result.output
    assert "self-signed-ca" in result.stdout
