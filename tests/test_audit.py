"""`meshpki audit`: grades at every boundary (freezegun), live clusters through
the local API server, exit codes, JSON, Prometheus exposition and --textfile."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from freezegun import freeze_time
from prometheus_client.parser import text_string_to_metric_families

from meshpki import audit, ca
from meshpki.audit import Grade, Observation
from meshpki.bundle import Bundle, fingerprint, serial_hex
from meshpki.keys import KeyType, to_pem
from meshpki.kube import SecretRef
from meshpki.render import AUDIT_FORMATS, AUDIT_METRICS, OutputFormat, render_audit
from meshpki.store import Store
from tests import factories as f
from tests.conftest import one_line_error
from tests.kubeapi import Context

DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


def t0() -> dt.datetime:
    """Real now to the second: frozen time stays within seconds of the clock
    OpenSSL uses for the workload handshake inside verify."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# -- building stores ------------------------------------------------------------

def seed_store(path: Path, root: f.Authority, bundles: dict[str, dict[str, bytes]]) -> Store:
    """A store holding `root` and the given cluster bundles, exactly as given."""
    store = Store(path)
    store.write_root(root.cert_pem, root.key_pem)
    for name, files in bundles.items():
        store.write_bundle(name, files)
    return store


def issued_store(path: Path, *clusters: str, days: int = 365) -> Store:
    """A store made by meshpki itself (ECDSA P-256: fast)."""
    store = Store(path)
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", None)
    if clusters:
        ca.issue(store, clusters, ca.IssueOptions(days=days), ca.store_issuer(store, None))
    return store


def files_of(store: Store, cluster: str) -> dict[str, bytes]:
    return dict(store.load_bundle(cluster).secret_data())


def as_json(result) -> dict:
    return json.loads(result.stdout)


def rows_of(data: dict, **match) -> list[dict]:
    return [r for r in data["rows"] if all(r[k] == v for k, v in match.items())]


# -- grades at every boundary (freezegun) ------------------------------------------

BOUNDARIES = [
    # time left on the intermediate, grade, code (warn 30, crit 7; "within" = fewer whole days)
    (31 * DAY, Grade.OK, ()),
    (30 * DAY, Grade.OK, ()),
    (30 * DAY - SECOND, Grade.WARNING, ("expires-soon",)),
    (7 * DAY, Grade.WARNING, ("expires-soon",)),
    (7 * DAY - SECOND, Grade.CRITICAL, ("expires-critical",)),
    (dt.timedelta(0), Grade.CRITICAL, ("expires-critical",)),  # notAfter itself is still valid
    (-SECOND, Grade.CRITICAL, ("expired",)),
]


@pytest.mark.parametrize(("left", "days", "words"), [
    (-4.5 * DAY, -5, "expired 5 days ago"), (-SECOND, -1, "expired 1 day ago"),
    (4.5 * DAY, 4, "expires in 4 days"), (SECOND, 0, "expires in less than a day"),
])
def test_the_reason_counts_days_like_the_days_column(left, days, words):
    at = t0()
    assert audit.days_left(at + left, at) == days
    assert audit.grade_expiry(at + left, at, 30, 7).reason.startswith(words)


def test_audit_text_days_column_and_reason_agree(cli, store_path):
    """An intermediate that expired 4.5 days ago: DAYS -5 and 'expired 5 days ago' on one row."""
    now = t0()
    root = f.make_root(slot=202)
    inter = f.make_intermediate(root, "cluster1", slot=203, not_before=now - 400 * DAY, not_after=now - 4.5 * DAY)
    soon = f.make_intermediate(root, "cluster2", slot=204, not_after=now + 4.5 * DAY)
    seed_store(store_path, root, {"cluster1": f.bundle_files(inter, root), "cluster2": f.bundle_files(soon, root)})
    text = cli("audit").stdout.splitlines()
    expired = next(line for line in text if line.startswith("cluster1 ") and " intermediate " in line)
    assert " -5 " in expired and "expired 5 days ago" in expired, expired
    expiring = next(line for line in text if line.startswith("cluster2 ") and " intermediate " in line)
    assert " 4 " in expiring and "expires in 4 days" in expiring, expiring


@pytest.mark.parametrize("left, grade, codes", BOUNDARIES, ids=[str(b[0]) for b in BOUNDARIES])
def test_grade_expiry_boundaries_pure(left, grade, codes):
    at = t0()
    condition = audit.grade_expiry(at + left, at, 30, 7)
    assert condition.grade is grade
    assert (condition.code,) == codes or (not codes and condition.code == "ok")
    assert audit.days_left(at + left, at) == (left // DAY)


@pytest.mark.parametrize("left, grade, codes", BOUNDARIES, ids=[str(b[0]) for b in BOUNDARIES])
def test_store_intermediate_graded_at_boundary_under_freezegun(cli, store_path, left, grade, codes):
    now = t0()
    root = f.make_root(slot=200)
    inter = f.make_intermediate(root, "cluster1", slot=201, not_before=now - 400 * DAY, not_after=now + left)
    seed_store(store_path, root, {"cluster1": f.bundle_files(inter, root)})
    with freeze_time(now):
        result = cli("audit", "-o", "json")
    data = as_json(result)
    [row] = rows_of(data, cluster="cluster1", role="intermediate")
    assert row["grade"] == grade.name and tuple(row["codes"]) == codes, row
    assert row["days_left"] == left // DAY
    assert row["serial"] == serial_hex(inter.cert) and ":" not in row["serial"]
    assert data["summary"]["at"] == now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.exit_code == int(grade), result.output  # nothing else is wrong in this store


def test_default_at_is_the_frozen_clock(store_path):
    now = t0()
    root = f.make_root(slot=200)
    inter = f.make_intermediate(root, "cluster1", slot=201, not_after=now + 7 * DAY)
    store = seed_store(store_path, root, {"cluster1": f.bundle_files(inter, root)})
    with freeze_time(now):
        report = audit.run(store, [])
    assert report.status is Grade.WARNING and report.at == report.run_at == now
    with freeze_time(now + SECOND):  # one second later, fewer than 7 days are left
        assert audit.run(store, []).status is Grade.CRITICAL


def test_at_in_the_future(cli, store_path):
    now = t0()
    store = issued_store(store_path, "cluster1", days=100)
    end = Store(store_path).load_bundle("cluster1")
    inter_end = x509.load_pem_x509_certificate(end.ca_cert).not_valid_after_utc
    for at, grade in [(inter_end - 31 * DAY, "OK"), (inter_end - 20 * DAY, "WARNING"),
                      (inter_end - 2 * DAY, "CRITICAL"), (inter_end + SECOND, "CRITICAL")]:
        result = cli("audit", "--at", at.strftime("%Y-%m-%dT%H:%M:%SZ"), "-o", "json")
        data = as_json(result)
        [row] = rows_of(data, cluster="cluster1", role="intermediate")
        assert row["grade"] == grade, (at, row)
        assert data["summary"]["at"] != data["summary"]["run_at"]
        assert result.exit_code == {"OK": 0, "WARNING": 1, "CRITICAL": 2}[grade]
    # a date alone is midnight UTC; the root (10 years) is still fine in 2 years
    later = (now + 2 * 365 * DAY).date().isoformat()
    data = as_json(cli("audit", "--at", later, "-o", "json"))
    assert data["summary"]["at"] == f"{later}T00:00:00Z"
    assert rows_of(data, role="root")[0]["grade"] == "OK"
    assert rows_of(data, cluster="cluster1", role="intermediate")[0]["codes"] == ["expired"]
    assert store.has_root()


def test_bad_at_and_thresholds_are_usage_errors(cli, store_path):
    issued_store(store_path)
    bad = cli("audit", "--at", "next june")
    assert bad.exit_code == 2 and "--at" in one_line_error(bad)
    swapped = cli("audit", "--warn-days", "5", "--crit-days", "10")
    assert swapped.exit_code == 2 and "--crit-days" in one_line_error(swapped)


# -- store-only audits -------------------------------------------------------------

def test_store_only_audit_text_and_exit_0(cli, store_path):
    issued_store(store_path, "cluster1", "cluster2")
    result = cli("audit")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CLUSTER", "SOURCE", "ROLE", "SUBJECT", "SERIAL", "NOT", "AFTER", "DAYS", "GRADE",
                                "REASON"]
    assert len([ln for ln in lines if " store " in ln]) == 3  # the root and two intermediates
    assert lines[-1].startswith("OK: 0 critical, 0 unknown, 0 warning, 3 ok; 2 cluster(s)")
    data = as_json(cli("audit", "-o", "json"))
    [root] = rows_of(data, role="root")
    assert root["cluster"] == "" and root["source"] == "store"  # the store's roots: empty cluster label


def test_what_the_store_holds_beside_its_clusters_is_said_and_not_graded(cli, store_path):
    issued_store(store_path, "cluster1")
    (store_path / "clusters" / "cluster2").write_text("a file where a cluster folder would be")
    (store_path / "signed").mkdir(mode=0o700)
    (store_path / "signed" / "Site_3").mkdir(mode=0o700)
    result = cli("audit", "-o", "json")
    assert result.exit_code == 0, result.output  # cluster1 is OK, and so is the run
    assert f"{store_path}/clusters/cluster2: left out, a file is not a cluster folder" in result.stderr
    assert f"{store_path}/signed/Site_3: left out, 'Site_3' is not a cluster name" in result.stderr
    assert json.loads(result.stdout)["summary"]["status"] == "OK"


def test_nothing_to_audit_is_a_usage_error(cli):
    result = cli("audit")
    assert result.exit_code == 2 and "nothing to audit" in one_line_error(result)


def test_store_bundle_failing_verify_is_critical(cli, store_path):
    root = f.make_root(slot=200)
    good = f.bundle_files(f.make_intermediate(root, "cluster1", slot=201), root)
    broken = dict(f.bundle_files(f.make_intermediate(root, "cluster2", slot=202), root))
    broken["ca-key.pem"] = to_pem(f.pooled_key(KeyType.ECDSA_P256, 203))  # not the intermediate's key
    seed_store(store_path, root, {"cluster1": good, "cluster2": broken})
    result = cli("audit", "-o", "json")
    assert result.exit_code == 2, result.output
    data = as_json(result)
    [row] = rows_of(data, cluster="cluster2", role="bundle")
    assert row["grade"] == "CRITICAL" and row["codes"] == ["fails-verify"] and "key-mismatch" in row["reason"]
    assert data["rows"][0] == row  # most urgent first
    assert {c["cluster"]: c["status"] for c in data["clusters"]} == {"": "OK", "cluster1": "OK",
                                                                     "cluster2": "CRITICAL"}


def test_intermediate_outliving_its_root_warns_on_both(cli, store_path):
    now = t0()
    root = f.make_root(slot=200, not_after=now + 300 * DAY)
    inter = f.make_intermediate(root, "cluster1", slot=201, not_after=now + 310 * DAY)
    seed_store(store_path, root, {"cluster1": f.bundle_files(inter, root)})
    result = cli("audit", "-o", "json")
    assert result.exit_code == 1, result.output
    data = as_json(result)
    [i] = rows_of(data, role="intermediate")
    [r] = rows_of(data, role="root")
    assert i["codes"] == ["outlives-root"] and r["codes"] == ["root-before-rotation"]
    assert "cluster1" in r["reason"] and r["cluster"] == ""


def test_root_rotation_in_progress_audits_both_roots(cli, store_path):
    from meshpki import rotate

    store = issued_store(store_path, "cluster1")
    rotate.begin(store, KeyType.ECDSA_P256, 3650, None)
    data = as_json(cli("audit", "-o", "json"))
    roots = rows_of(data, role="root", cluster="") + rows_of(data, role="root-next", cluster="")
    assert len(roots) == 2 and {r["grade"] for r in roots} == {"OK"}
    assert not [r for r in rows_of(data, cluster="cluster1") if r["role"].startswith("root")]  # the store's


def test_during_a_root_rotation_the_two_roots_are_told_apart(cli, store_path, kube_api, kubeconfig):
    """rotate-root begin: the old root is `root`, the new one `root-next` (subject
    Root CA G2), in the store's rows and in a live secret's; after finish the new one is `root`."""
    store = issued_store(store_path, "cluster1")
    begun = cli("rotate-root", "begin", "--key-type", "ecdsa-p256")
    assert begun.exit_code == 0, begun.output
    push_secret(kube_api, "cluster1", files_of(store, "cluster1"))
    args = ("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1")
    data = as_json(cli(*args, "-o", "json"))
    roots = {(r["cluster"], r["source"], r["role"], r["subject"]) for r in data["rows"] if r["role"].startswith("root")}
    assert roots == {(cluster, source, role, subject)
                     for cluster, source in (("", "store"), ("cluster1", "live"))
                     for role, subject in (("root", "CN=Root CA,O=Istio"), ("root-next", "CN=Root CA G2,O=Istio"))}
    text = cli(*args).stdout.splitlines()
    assert [line.split()[2:4] for line in text if line.startswith("-")] == [
        ["root", "CN=Root"], ["root-next", "CN=Root"]]
    assert all("G2" in line for line in text if "root-next" in line)
    assert not any("G2" in line for line in text if " root " in line)
    assert cli("rotate-root", "reissue").exit_code == 0
    assert cli("rotate-root", "finish", "--force").exit_code == 0, "finish"
    after = as_json(cli("audit", "-o", "json"))
    assert [(r["role"], r["subject"]) for r in after["rows"] if r["role"].startswith("root")] == [
        ("root", "CN=Root CA G2,O=Istio")]


# -- live clusters through the local API server -----------------------------------------

def push_secret(kube_api, vcluster: str, files: dict[str, bytes]) -> None:
    kube_api.cluster(vcluster).put_secret("istio-system", "cacerts", files)


def test_live_present_and_matching_is_ok(cli, store_path, kube_api, kubeconfig):
    store = issued_store(store_path, "cluster1", "cluster2")
    push_secret(kube_api, "cluster1", files_of(store, "cluster1"))
    push_secret(kube_api, "cluster2", f.tls_form(files_of(store, "cluster2")))  # cert-manager's shape
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "--context", "cluster2",
                 "-o", "json")
    assert result.exit_code == 0, result.output
    data = as_json(result)
    live = rows_of(data, source="live")
    assert {(r["cluster"], r["role"], r["context"]) for r in live} == {
        ("cluster1", "intermediate", "cluster1"), ("cluster1", "root", "cluster1"),
        ("cluster2", "intermediate", "cluster2"), ("cluster2", "root", "cluster2")}
    assert all(r["grade"] == "OK" for r in data["rows"])
    # reads only: the cacerts secret, and the remote secrets a primary holds (none here)
    assert kube_api.cluster("cluster1").requests == [("GET", "/api/v1/namespaces/istio-system/secrets/cacerts"),
                                                     ("GET", "/api/v1/namespaces/istio-system/secrets")]
    assert kube_api.cluster("cluster1").calls[1].query == {"labelSelector": ["istio/multiCluster=true"]}


def test_live_missing_secret_is_critical(cli, store_path, kube_api, kubeconfig):
    store = issued_store(store_path, "cluster1", "cluster2")
    push_secret(kube_api, "cluster1", files_of(store, "cluster1"))
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "--context", "cluster2")
    assert result.exit_code == 2, result.output
    first = result.stdout.splitlines()[1]
    assert first.split()[:3] == ["cluster2", "live", "bundle"] and "CRITICAL" in first
    assert "no istio-system/cacerts secret" in first and "mesh is split" in first


def test_live_drift_is_a_warning(cli, store_path, kube_api, kubeconfig):
    store = issued_store(store_path, "cluster1", "cluster2")
    push_secret(kube_api, "cluster1", files_of(store, "cluster2"))  # valid, same root, wrong cluster's bundle
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "-o", "json")
    assert result.exit_code == 1, result.output
    [row] = rows_of(as_json(result), role="bundle")
    assert (row["cluster"], row["source"], row["grade"], row["codes"]) == ("cluster1", "live", "WARNING", ["drift"])
    assert "ca-cert.pem" in row["reason"]


def test_live_bundle_failing_verify_is_critical(cli, store_path, kube_api, kubeconfig):
    store = issued_store(store_path, "cluster1")
    files = files_of(store, "cluster1")
    del files["cert-chain.pem"]  # a partial secret: istiod 1.27+ refuses it
    push_secret(kube_api, "cluster1", files)
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "-o", "json")
    assert result.exit_code == 2, result.output
    [row] = rows_of(as_json(result), role="bundle")
    assert row["codes"][0] == "fails-verify" and "missing-file" in row["reason"] and "drift" in row["codes"]


@pytest.fixture
def fault_kubeconfig(kube_api, tmp_path):
    """Contexts that cannot read the secret, each for a different reason."""
    vc = kube_api.cluster("cluster1")
    vc.add_token("ns-only", "ns-only", readonly=True, resources={"namespaces"})
    kube_api.cluster("flaky").fail_next(500, count=5)
    return kube_api.write_kubeconfig(tmp_path / "faults", {
        "badtoken": Context("cluster1", "not-a-valid-token"),
        "forbidden": Context("cluster1", "ns-only"),
        "down": Context("cluster1", down=True),
        "badca": Context("cluster1", bad_ca=True),
        "flaky": Context("flaky"),
    })


@pytest.mark.parametrize("context, needle", [("badtoken", "401"), ("forbidden", "403"), ("down", "down"),
                                             ("badca", "certificate"), ("flaky", "500")])
def test_unreadable_cluster_is_unknown(cli, store_path, kube_api, fault_kubeconfig, context, needle):
    issued_store(store_path, "cluster1")
    result = cli("audit", "--kubeconfig", str(fault_kubeconfig), "--context", context, "-o", "json")
    assert result.exit_code == 3, result.output
    data = as_json(result)
    [row] = rows_of(data, source="live")
    assert (row["cluster"], row["role"], row["grade"], row["codes"]) == (context, "bundle", "UNKNOWN", ["unreadable"])
    assert row["reason"].startswith(f"context {context}") and "\n" not in row["reason"]
    assert needle.lower() in row["reason"].lower() or context == "down"


def test_least_privilege_get_on_the_secret_is_enough(cli, store_path, kube_api, tmp_path):
    """samples/audit-cronjob.yaml's Role: get on secrets, nothing else."""
    store = issued_store(store_path, "cluster1")
    push_secret(kube_api, "cluster1", files_of(store, "cluster1"))
    kube_api.cluster("cluster1").add_token("audit-only", "audit", readonly=True, resources={"secrets"})
    cfg = kube_api.write_kubeconfig(tmp_path / "kc", {"cluster1": Context("cluster1", "audit-only")})
    result = cli("audit", "--kubeconfig", str(cfg), "--context", "cluster1")
    assert result.exit_code == 0, result.output
    assert not kube_api.cluster("cluster1").writes


def test_clusters_under_different_roots_share_no_root(cli, tmp_path, kube_api, kubeconfig):
    r1, r2 = f.make_root(slot=210), f.make_root(slot=211)
    push_secret(kube_api, "cluster1", f.bundle_files(f.make_intermediate(r1, "cluster1", slot=212), r1))
    push_secret(kube_api, "cluster2", f.bundle_files(f.make_intermediate(r2, "cluster2", slot=213), r2))
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "--context", "cluster2",
                 "-o", "json", env={"MESHPKI_STORE": str(tmp_path / "no-store")})
    assert result.exit_code == 2, result.output
    data = as_json(result)
    bad = rows_of(data, codes=["no-shared-root"])
    assert {(r["cluster"], r["grade"]) for r in bad} == {("cluster1", "CRITICAL"), ("cluster2", "CRITICAL")}
    assert "cluster2" in rows_of(data, cluster="cluster1", role="bundle")[0]["reason"]
    # the same roots during a rotation (A+B on one side) share one: fine
    push_secret(kube_api, "cluster2", f.bundle_files(f.make_intermediate(r2, "cluster2", slot=213), [r1, r2]))
    again = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "--context", "cluster2",
                "-o", "json", env={"MESHPKI_STORE": str(tmp_path / "no-store")})
    assert again.exit_code == 0, again.output
    assert len(rows_of(as_json(again), cluster="cluster2", role="root")) == 2


def test_exit_code_precedence_critical_over_unknown_over_warning(cli, store_path, kube_api, kubeconfig):
    store = issued_store(store_path, "cluster1", "cluster2")
    push_secret(kube_api, "cluster1", files_of(store, "cluster2"))  # drift: WARNING
    args = ["audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1"]
    assert cli(*args).exit_code == 1
    assert cli(*args, "--context", "badtoken").exit_code == 3  # + UNKNOWN
    assert cli(*args, "--context", "badtoken", "--context", "cluster2").exit_code == 2  # + missing: CRITICAL


def test_fleet_file_contexts_are_the_default_and_name_the_clusters(cli, store_path, kube_api, kubeconfig, tmp_path):
    store = issued_store(store_path, "east", "west")
    push_secret(kube_api, "cluster1", files_of(store, "east"))
    push_secret(kube_api, "cluster2", files_of(store, "west"))
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text(f"defaults:\n  kubeconfig: {kubeconfig}\nclusters:\n"
                     "  - {name: east, context: cluster1}\n  - {name: west, context: cluster2}\n")
    result = cli("audit", "--config", str(fleet), "-o", "json")
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert {(r["cluster"], r["context"]) for r in rows_of(data, source="live")} == {("east", "cluster1"),
                                                                                   ("west", "cluster2")}
    # --context maps through the fleet file too; drift is judged against that cluster's bundle
    one = as_json(cli("audit", "--config", str(fleet), "--context", "cluster2", "-o", "json"))
    assert {r["cluster"] for r in rows_of(one, source="live")} == {"west"}


def test_all_contexts(cli, store_path, kube_api, tmp_path):
    store = issued_store(store_path, "cluster1", "cluster2")
    push_secret(kube_api, "cluster1", files_of(store, "cluster1"))
    push_secret(kube_api, "cluster2", files_of(store, "cluster2"))
    cfg = kube_api.write_kubeconfig(tmp_path / "kc", {"cluster1": Context("cluster1"),
                                                      "cluster2": Context("cluster2")})
    result = cli("audit", "--all-contexts", "-o", "json", env={"KUBECONFIG": str(cfg)})
    assert result.exit_code == 0, result.output
    assert {r["cluster"] for r in rows_of(as_json(result), source="live")} == {"cluster1", "cluster2"}


def test_in_a_pod_the_service_account_is_used(cli, tmp_path):
    """No kubeconfig and KUBERNETES_SERVICE_HOST set: the in-cluster config is
    tried (here without a mounted token, so the cluster is UNKNOWN, named by
    MESHPKI_CLUSTER_NAME) and no store is needed."""
    result = cli("audit", "-o", "json", env={"MESHPKI_STORE": str(tmp_path / "none"),
                                             "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                                             "KUBERNETES_SERVICE_PORT": "6443",
                                             "MESHPKI_CLUSTER_NAME": "prod-eu"})
    assert result.exit_code == 3, result.output
    [row] = as_json(result)["rows"]
    assert (row["cluster"], row["context"], row["grade"]) == ("prod-eu", "in-cluster", "UNKNOWN")
    assert "service account" in row["reason"]


def test_kubeconfig_errors_stop_the_audit_as_unknown(cli, store_path):
    issued_store(store_path)
    result = cli("audit", "--all-contexts", "--kubeconfig", str(store_path / "missing.yaml"))
    assert result.exit_code == 3 and "does not exist" in one_line_error(result)


# -- scale and deadlines --------------------------------------------------------------

def test_read_all_live_keeps_order_and_reports_progress():
    targets = [SecretRef(f"c{i}", f"c{i}") for i in range(100)]
    live = threading.active_count()

    def reader(target: SecretRef) -> Observation:
        time.sleep(0.001 * (int(target.cluster[1:]) % 7))  # finish out of order
        return Observation(target.cluster, "live", target.context, missing="istio-system/cacerts")

    seen: list[tuple[int, int]] = []
    result = audit.read_all_live(targets, parallel=32, progress=lambda d, t: seen.append((d, t)), reader=reader)
    assert [o.cluster for o in result] == [t.cluster for t in targets]
    assert seen == [(i, 100) for i in range(1, 101)]
    assert threading.active_count() <= live  # no worker left behind


def test_a_hanging_cluster_is_unknown_and_the_others_are_read(cli, store_path, kube_api, tmp_path):
    """The hanging cluster's own request timeout ends its read (kube.py holds
    connect, headers and body to --timeout); it is UNKNOWN, the rest graded."""
    root = f.make_root(slot=222)
    bundles = {name: f.bundle_files(f.make_intermediate(root, name, slot=223), root) for name in ("stuck", "fine")}
    seed_store(store_path, root, bundles)
    for name, files in bundles.items():
        push_secret(kube_api, name, files)
    kube_api.cluster("stuck").delay = 5
    cfg = kube_api.write_kubeconfig(tmp_path / "kc", {n: Context(n) for n in bundles})
    result = cli("audit", "--all-contexts", "--kubeconfig", str(cfg), "--timeout", "0.3", "-o", "json")
    assert result.exit_code == 3, result.output
    statuses = {c["cluster"]: c["status"] for c in as_json(result)["clusters"]}
    assert statuses == {"": "OK", "stuck": "UNKNOWN", "fine": "OK"}
    [row] = [r for r in as_json(result)["rows"] if r["cluster"] == "stuck" and r["source"] == "live"]
    assert "did not answer within 0.3 s" in row["reason"]


def test_hundred_clusters_with_latency(cli, store_path, kube_api, tmp_path):
    """100 virtual clusters, each answering after 100 ms (speed: bench/bench_audit.py)."""
    root = f.make_root(slot=220)
    bundles = {f"c{i:03d}": f.bundle_files(f.make_intermediate(root, f"c{i:03d}", slot=221), root)
               for i in range(100)}
    seed_store(store_path, root, bundles)
    contexts = {}
    for name, files in bundles.items():
        push_secret(kube_api, name, files)
        kube_api.cluster(name).delay = 0.1
        contexts[name] = Context(name)
    kube_api.cluster("c042").put_secret("istio-system", "cacerts", bundles["c041"])  # one drifted
    cfg = kube_api.write_kubeconfig(tmp_path / "kc", contexts)
    result = cli("audit", "--all-contexts", "--kubeconfig", str(cfg), "-o", "json")
    assert result.exit_code == 1, result.output
    data = as_json(result)
    assert data["summary"]["clusters"] == 100
    assert {c["cluster"]: c["status"] for c in data["clusters"] if c["status"] != "OK"} == {"c042": "WARNING"}
    assert len(rows_of(data, source="live", role="intermediate")) == 100


# -- outputs ----------------------------------------------------------------------------

def test_json_shape(cli, store_path, kube_api, kubeconfig):
    store = issued_store(store_path, "cluster1")
    push_secret(kube_api, "cluster1", files_of(store, "cluster1"))
    data = as_json(cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "--context", "cluster2",
                       "-o", "json"))
    assert set(data) == {"summary", "clusters", "rows"}
    assert set(data["summary"]) == {"status", "exit_code", "at", "run_at", "warn_days", "crit_days", "clusters",
                                    "rows", "critical", "unknown", "warning", "ok"}
    assert data["summary"]["status"] == "CRITICAL" and data["summary"]["exit_code"] == 2
    assert data["summary"]["rows"] == len(data["rows"]) == 5  # store root + inter, live root + inter, missing
    for row in data["rows"]:
        assert set(row) == {"cluster", "context", "source", "role", "subject", "serial", "not_after", "days_left",
                            "grade", "reason", "codes", "fingerprint"}
        assert row["source"] in ("store", "live") and row["role"] in ("root", "intermediate", "bundle")
        if row["role"] != "bundle":
            assert row["not_after"].endswith("Z") and isinstance(row["days_left"], int)
            assert len(row["fingerprint"]) == 64
    for c in data["clusters"]:
        assert set(c) == {"cluster", "status", "code"}
    grades = [Grade[r["grade"]].urgency for r in data["rows"]]
    assert grades == sorted(grades, reverse=True)


def metrics(text: str) -> dict[str, list]:
    return {fam.name: fam.samples for fam in text_string_to_metric_families(text)}


def test_prometheus_exposition_parses(cli, store_path, kube_api, kubeconfig):
    store = issued_store(store_path, "cluster1", "cluster2")
    push_secret(kube_api, "cluster1", files_of(store, "cluster1"))
    before = int(time.time())  # the sample is in whole seconds
    result = cli("audit", "--kubeconfig", str(kubeconfig), "--context", "cluster1", "--context", "cluster2",
                 "--context", "badtoken", "-o", "prometheus")
    after = time.time()
    assert result.exit_code == 2, result.output
    fams = metrics(result.stdout)
    assert set(fams) == {"meshpki_cert_not_after_timestamp_seconds", "meshpki_cert_expiry_seconds",
                         "meshpki_audit_status", "meshpki_root_fingerprint_info",
                         "meshpki_remote_secret_token_expiry_timestamp_seconds",  # no remote secrets: no samples
                         "meshpki_audit_last_run_timestamp_seconds"}
    not_after = fams["meshpki_cert_not_after_timestamp_seconds"]
    assert all(set(s.labels) == {"cluster", "role", "source", "serial"} for s in not_after)
    root = store.root_cert()
    [root_sample] = [s for s in not_after if s.labels["role"] == "root" and s.labels["source"] == "store"]
    assert root_sample.labels["cluster"] == "" and root_sample.labels["serial"] == serial_hex(root)
    assert root_sample.value == root.not_valid_after_utc.timestamp()
    expiry = {tuple(s.labels.values()): s.value for s in fams["meshpki_cert_expiry_seconds"]}
    assert len(expiry) == len(not_after) == 5  # store root, 2 store intermediates, live root + intermediate
    assert all(300 * 86400 < v < 3700 * 86400 for v in expiry.values())
    status = {s.labels["cluster"]: s.value for s in fams["meshpki_audit_status"]}
    assert status == {"": 0, "cluster1": 0, "cluster2": 2, "badtoken": 3}
    fps = {(s.labels["cluster"], s.labels["source"], s.labels["fingerprint"]) for s in
           fams["meshpki_root_fingerprint_info"]}
    assert fps == {("", "store", fingerprint(root)), ("cluster1", "live", fingerprint(root))}
    [last] = fams["meshpki_audit_last_run_timestamp_seconds"]
    assert before <= last.value <= after  # when this run happened


def test_textfile_is_written_atomically_with_a_readable_mode(cli, store_path, tmp_path):
    issued_store(store_path, "cluster1")
    folder = tmp_path / "textfile"
    folder.mkdir()
    target = folder / "meshpki.prom"
    old = os.umask(0o077)  # a cron job's strict umask must not hide the file from node_exporter
    try:
        result = cli("audit", "-o", "json", "--textfile", str(target))
        again = cli("audit", "-o", "prometheus", "--textfile", str(target))
    finally:
        os.umask(old)
    assert result.exit_code == 0 and again.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["status"] == "OK"  # -o output still on stdout
    assert os.listdir(folder) == ["meshpki.prom"]  # no temp file left
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    text = target.read_text()
    assert text == again.stdout
    assert "meshpki_audit_status" in metrics(text)


def test_textfile_that_cannot_be_written_is_unknown(cli, store_path, tmp_path):
    issued_store(store_path, "cluster1")
    result = cli("audit", "--textfile", str(tmp_path / "no-such-dir" / "x.prom"))
    assert result.exit_code == 3
    assert "cannot write --textfile" in result.stderr and result.stdout.startswith("CLUSTER")


def test_every_audit_format_renders(store_path):
    store = issued_store(store_path, "cluster1")
    report = audit.run(store, [])
    for fmt in AUDIT_FORMATS:
        assert render_audit(report, fmt).strip()
    with pytest.raises(ValueError):
        render_audit(report, OutputFormat.YAML)
    assert {f.value for f in AUDIT_FORMATS} == {"text", "json", "prometheus"}


def test_urgency_order_and_exit_codes():
    assert [g.name for g in sorted(Grade, key=lambda g: g.urgency, reverse=True)] == [
        "CRITICAL", "UNKNOWN", "WARNING", "OK"]
    at = t0()
    root = f.make_root(slot=230)

    def report(*observations: Observation) -> audit.AuditReport:
        return audit.build_report(None, observations, at, errors_of=lambda b: ())

    ok = Observation("a", "live", "a", bundle=Bundle(f.bundle_files(f.make_intermediate(root, slot=231), root), "a"))
    missing = Observation("b", "live", "b", missing="istio-system/cacerts")
    unknown = Observation("c", "live", "c", error="context c: refused")
    soon = Observation("d", "live", "d", bundle=Bundle(f.bundle_files(
        f.make_intermediate(root, slot=232, not_after=at + 10 * DAY), root), "d"))
    assert report(ok).exit_code == 0
    assert report(ok, soon).exit_code == 1
    assert report(ok, soon, unknown).exit_code == 3
    assert report(ok, soon, unknown, missing).exit_code == 2
    rows = report(ok, soon, unknown, missing).rows
    assert [r.grade.name for r in rows] == ["CRITICAL", "UNKNOWN", "WARNING", "OK", "OK", "OK"]
    assert rows[2].cluster == "d" and rows[3].days_left <= rows[4].days_left <= rows[5].days_left


# -- samples -----------------------------------------------------------------------------

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def test_prometheus_rules_alert_on_the_metrics_audit_writes(store_path):
    import re

    import yaml

    rules = yaml.safe_load((SAMPLES / "prometheus-rules.yaml").read_text())["groups"][0]["rules"]
    severities = {r["labels"]["severity"] for r in rules}
    assert {"warning", "critical"} <= severities
    exprs = " ".join(r["expr"] for r in rules)
    assert "meshpki_audit_status == 2" in exprs and "meshpki_audit_status == 1" in exprs
    store = issued_store(store_path, "c1", "c2")
    from meshpki import crl

    crl.revoke(store, "c2", None)  # so the CRL metric exists too
    exposed = set(metrics(render_audit(audit.run(store, []), OutputFormat.PROMETHEUS)))
    assert exposed == set(AUDIT_METRICS)  # every family, once something is revoked
    assert set(re.findall(r"meshpki_[a-z_]+", exprs)) <= exposed

