"""The whole root rotation, pushed step by step to three clusters of the local
API server: every pair keeps mutual TLS at every step, mixed states included."""

from __future__ import annotations

import datetime as dt
import itertools
import signal
import subprocess
import sys
import time

import pytest
from freezegun import freeze_time

from meshpki import checks
from meshpki.bundle import Bundle
from tests.kubeapi import Context

NS, NAME = "istio-system", "cacerts"
CLUSTERS = ("cluster1", "cluster2", "cluster3")


@pytest.fixture
def fleet(cli, kube_api, tmp_path):
    """Three clusters in the store and the fleet file, each with its own context."""
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", {c: Context(c) for c in CLUSTERS})
    fleet_file = tmp_path / "mesh.yaml"
    fleet_file.write_text("clusters:\n" + "".join(f"  - name: {c}\n    context: {c}\n" for c in CLUSTERS))
    env = {"MESHPKI_CONFIG": str(fleet_file), "KUBECONFIG": str(kubeconfig)}

    def run(*args: str):
        result = cli(*args, env=env)
        assert "Traceback" not in result.output
        return result

    assert run("init-root", "--key-type", "ecdsa-p256", "--insecure-no-passphrase").exit_code == 0
    assert run("issue", *CLUSTERS).exit_code == 0
    return run


def live(kube_api, cluster: str) -> dict[str, bytes]:
    return kube_api.cluster(cluster).get_secret(NS, NAME)["data"]


def assert_live_mesh_works(kube_api) -> None:
    """Every live bundle verifies, and every pair of live clusters completes mutual TLS."""
    reports = {}
    for cluster in CLUSTERS:
        report = checks.check_bundle(Bundle.from_secret_data(live(kube_api, cluster), cluster))
        assert report.ok, [f.to_dict() for f in report.findings if f.severity == checks.Severity.ERROR]
        reports[cluster] = report
    for a, b in itertools.combinations(CLUSTERS, 2):
        pair = checks.check_pair(reports[a], reports[b])
        assert pair.ok, [f.to_dict() for f in pair.findings]
        assert any(f.code == "handshake-ok" for f in pair.findings)


def test_rotation_walk_pushed_to_three_clusters(fleet, kube_api, store):
    pushed = fleet("push", "--all")
    assert pushed.exit_code == 0, pushed.output
    old_root_pem = store.root_cert_pem()
    assert_live_mesh_works(kube_api)

    assert fleet("rotate-root", "begin").exit_code == 0
    step1 = fleet("push", "--all")
    assert step1.exit_code == 0, step1.output
    assert "ISTIO_MULTIROOT_MESH" in step1.output and "PROXY_CONFIG_XDS_AGENT" in step1.output
    for cluster in CLUSTERS:
        roots = live(kube_api, cluster)["root-cert.pem"]
        assert roots.startswith(old_root_pem) and roots != old_root_pem, "old root byte for byte, then new"
    assert fleet("verify", "--all").exit_code == 0
    assert_live_mesh_works(kube_api)

    assert fleet("rotate-root", "reissue", "cluster1").exit_code == 0
    assert fleet("push", "cluster1").exit_code == 0
    assert_live_mesh_works(kube_api)  # mixed: cluster1 under B, the others under A

    early = fleet("rotate-root", "finish")
    assert early.exit_code == 1 and "cluster2, cluster3 still issue under the old root" in early.output

    assert fleet("rotate-root", "reissue").exit_code == 0
    assert_live_mesh_works(kube_api)  # store ahead of the clusters: live is still the mixed state
    again = fleet("push", "--all")
    assert again.exit_code == 0, again.output
    assert_live_mesh_works(kube_api)

    waiting = fleet("rotate-root", "finish")
    assert waiting.exit_code == 1 and "grace period not over" in waiting.output
    with freeze_time(dt.datetime.now(dt.UTC) + dt.timedelta(hours=24, minutes=5)):
        status = fleet("rotate-root", "status")
        assert "phase: ready-to-finish" in status.output
        finished = fleet("rotate-root", "finish")
    assert finished.exit_code == 0, finished.output
    new_root_pem = store.root_cert_pem()
    assert new_root_pem != old_root_pem

    final = fleet("push", "--all")  # A+B -> B narrows: no --allow-root-change needed
    assert final.exit_code == 0, final.output
    for cluster in CLUSTERS:
        assert live(kube_api, cluster)["root-cert.pem"] == new_root_pem
    assert fleet("verify", "--all").exit_code == 0
    assert_live_mesh_works(kube_api)
    assert "no rotation in progress" in fleet("rotate-root", "status").output


REISSUE = "from meshpki.cli import main; main()"


def test_a_killed_reissue_resumes(fleet, store, tmp_path):
    """SIGKILL `rotate-root reissue` (RSA-3072: slow enough to hit mid-way);
    running it again finishes the job and every bundle is whole."""
    assert fleet("rotate-root", "begin").exit_code == 0
    env = {"MESHPKI_STORE": str(store.path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", REISSUE, "rotate-root", "reissue", "--key-type", "rsa-3072"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = fleet("rotate-root", "reissue", "--key-type", "ecdsa-p256")
    assert resumed.exit_code == 0, resumed.output
    status = fleet("rotate-root", "status", "-o", "json")
    import json

    assert {c["issuer"] for c in json.loads(status.stdout)["clusters"]} == {"new"}
    verified = fleet("verify", "--all")
    assert verified.exit_code == 0, verified.output
