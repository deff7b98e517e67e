"""Revocation as the fleet sees it: audit grades CRLs (store and live, --at,
the Prometheus metric and alert rule), push --all delivers ca-crl.pem and
skips evicted clusters, audit leaves them out with a note."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from meshpki import ca, crl
from meshpki.bundle import CA_CRL
from meshpki.keys import KeyType
from meshpki.store import Store
from tests.test_audit import metrics, push_secret, rows_of

ROOT_DIR = Path(__file__).resolve().parent.parent
CLUSTERS = ("cluster1", "cluster2", "cluster3")


def revoked_store(path: Path) -> Store:
    """Three clusters, cluster3 evicted: cluster1 and cluster2 carry ca-crl.pem."""
    store = Store(path)
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", None)
    ca.issue(store, list(CLUSTERS), ca.IssueOptions(), ca.store_issuer(store, None))
    crl.revoke(store, "cluster3", None)
    return store


def fleet_file(tmp_path: Path, kubeconfig: Path) -> Path:
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text(f"defaults:\n  kubeconfig: {kubeconfig}\nclusters:\n"
                     + "".join(f"  - {{name: {c}, context: {c}}}\n" for c in CLUSTERS))
    return fleet


def test_store_crls_are_graded_like_certificates_and_at_works(cli, store_path):
    store = revoked_store(store_path)
    state = crl.load_state(store)
    assert state is not None
    now = as_json(cli("audit", "-o", "json"))
    crl_rows = rows_of(now, role="crl")
    assert {(r["cluster"], r["source"]) for r in crl_rows} == {("", "store"), ("cluster1", "store"),
                                                               ("cluster2", "store")}
    assert all(r["grade"] == "OK" and r["serial"] == "1" for r in crl_rows)
    assert {r["not_after"] for r in crl_rows} == {state.next_update_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    cases = [(70, "WARNING", "crl-expires-soon"), (85, "CRITICAL", "crl-expires-critical"),
             (91, "CRITICAL", "crl-expired")]
    for days, grade, code in cases:
        at = (state.next_update_at - dt.timedelta(days=crl.DEFAULT_CRL_DAYS - days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = cli("audit", "--at", at, "-o", "json")
        assert result.exit_code == (1 if grade == "WARNING" else 2), result.output
        graded = rows_of(as_json(result), role="crl")
        assert {r["grade"] for r in graded} == {grade} and all(code in r["codes"] for r in graded)
        assert "meshpki crl renew" in graded[0]["reason"]
    text = cli("audit", "--at", (state.next_update_at + dt.timedelta(days=1)).isoformat())
    assert "CRL stale since" in text.stdout


def test_live_crls_graded_and_exported(cli, store_path, kube_api, kubeconfig):
    store = revoked_store(store_path)
    for cluster in ("cluster1", "cluster2"):
        push_secret(kube_api, cluster, dict(store.load_bundle(cluster).secret_data()))
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "--context", "cluster2",
                 "-o", "prometheus")
    assert result.exit_code == 0, result.output
    samples = metrics(result.stdout)["meshpki_crl_next_update_timestamp_seconds"]
    state = crl.load_state(store)
    assert state is not None
    by_place = {(s.labels["cluster"], s.labels["source"], s.labels["issuer"]): s.value for s in samples}
    assert ("cluster1", "live", "CN=Root CA,O=Istio") in by_place
    assert ("cluster2", "live", "CN=Intermediate CA,L=cluster2,O=Istio") in by_place
    assert ("", "store", "CN=Root CA,O=Istio") in by_place
    assert set(by_place.values()) == {state.next_update_at.timestamp()}


def test_live_crl_that_does_not_parse_is_critical(cli, store_path, kube_api, kubeconfig):
    store = revoked_store(store_path)
    files = dict(store.load_bundle("cluster1").secret_data())
    files[CA_CRL] = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    push_secret(kube_api, "cluster1", files)
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "-o", "json")
    assert result.exit_code == 2, result.output
    [row] = rows_of(as_json(result), source="live", role="bundle", cluster="cluster1")
    assert "crl-unparsable" in row["codes"]


def test_push_all_delivers_crls_and_skips_the_evicted_cluster(cli, store_path, kube_api, kubeconfig, tmp_path):
    store = revoked_store(store_path)
    fleet = fleet_file(tmp_path, kubeconfig)
    result = cli("push", "--all", "--config", str(fleet))
    assert result.exit_code == 0, result.output
    assert "cluster3: skipped, revoked on" in result.stderr and "remove it from the fleet file" in result.stderr
    for cluster in ("cluster1", "cluster2"):
        live = kube_api.cluster(cluster).get_secret("istio-system", "cacerts")
        assert live is not None and live["data"][CA_CRL] == store.load_bundle(cluster).files[CA_CRL]
    assert kube_api.cluster("cluster3").get_secret("istio-system", "cacerts") is None
    audited = cli("audit", "--config", str(fleet), "-o", "json")
    assert audited.exit_code == 0, audited.output
    assert "cluster3: skipped" in audited.stderr
    assert "cluster3" not in {r["cluster"] for r in as_json(audited)["rows"]}
    renewed = cli("crl", "renew")
    assert renewed.exit_code == 0, renewed.output
    again = cli("push", "--all", "--config", str(fleet))
    assert again.exit_code == 0, again.output
    live = kube_api.cluster("cluster1").get_secret("istio-system", "cacerts")
    assert live is not None and live["data"][CA_CRL] == store.load_bundle("cluster1").files[CA_CRL]


def as_json(result) -> dict:
    return json.loads(result.stdout)


# -- the alert rule ---------------------------------------------------------------

@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
    return found


def test_promtool_checks_the_sample_rules(promtool):
    done = subprocess.run([promtool, "check", "rules", str(ROOT_DIR / "samples" / "prometheus-rules.yaml")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_the_crl_alert(promtool):
    done = subprocess.run([promtool, "test", "rules", "prometheus-rules-test.yaml"], cwd=ROOT_DIR / "tests" / "data",
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_crl_alert_uses_the_metric_audit_exports(store_path):
    import re

    import yaml

    from meshpki import audit
    from meshpki.render import OutputFormat, render_audit

    rules = yaml.safe_load((ROOT_DIR / "samples" / "prometheus-rules.yaml").read_text())["groups"][0]["rules"]
    [rule] = [r for r in rules if r["alert"] == "MeshPKICRLStale"]
    exposed = set(metrics(render_audit(audit.run(revoked_store(store_path), []), OutputFormat.PROMETHEUS)))
    assert set(re.findall(r"meshpki_[a-z_]+", rule["expr"])) <= exposed
